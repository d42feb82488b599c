"""The benchmark commands documented in benchmarks/README.md run (issue 21): each script once, as a
user runs it, with tiny settings (few steps, a tiny model or corpus), checking only that it
finishes and prints its figures; the figures themselves are the README's business.

Subprocesses without this test process's XLA_FLAGS (a user's shell has none), on the CPU. Scripts
whose optional dependencies are missing (Apache Beam, TensorFlow/seqio) or whose reference data
(../shared/data) is absent are skipped. On the shared 2-core machine under load 12-14 the runs
took: aot_plan 18 s, input_pipeline 51 s (TensorFlow import and the demo3 compile), preprocess 22 s,
train_throughput 28 s, fit_speed 46 s; input_pipeline --synthetic (50-87 s, with --cached 203 s) is
left out, as its script runs in the default case; all but the first two are marked slow
(input_pipeline's default is the command issue 21 found broken).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

# script, tiny arguments, modules it needs, lines its output must hold
CASES = [
    pytest.param("aot_plan.py", ["--scale=tiny0", "--devices=2", "--chip_gib=16", "--seq=32", "--batch=2",
                                 "--dtype=float32", "--attention=xla"], (),
                 ("XLA memory_analysis per device", "scanned  lowered StableHLO"), id="aot_plan"),
    pytest.param("train_throughput.py", ["--scale=tiny0", "--batch=2", "--seq=32", "--steps=1", "--warmup=0",
                                         "--vocab_size=256", "--dropout=0"], (),
                 ("model FLOPs/token", "[fast] best   step"), id="train_throughput", marks=pytest.mark.slow),
    # the documented default: trainer size from gin/sweeps/demo.yaml's largest run (a gin-file-only size)
    pytest.param("input_pipeline.py", ["--stream_batches=2", "--train_steps=1", "--seq_len=32", "--global_batch=2"],
                 ("tensorflow", "seqio"),
                 ("trainer size from gin/sweeps/demo.yaml: largest run", "ratio stream/trainer"),
                 id="input_pipeline"),
    pytest.param("preprocess.py", ["--text_mb=0.3", "--workers_list=1", "--project=1"], ("apache_beam", "tensorflow"),
                 ("single process (compute_stats)", "Beam DirectRunner, 1 worker(s)"), id="preprocess",
                 marks=pytest.mark.slow),
    pytest.param("fit_speed.py", ["--data", str(SHARED_DATA), "--reference_starts", "3", "--repeats", "1",
                                  "--n_boot", "20", "--atlas_points", "30"], (),
                 ("[1] Epoch Chinchilla CSL", "[2] bootstrap by run, 20 replicates", "[3] multilingual ATLAS"),
                 id="fit_speed", marks=pytest.mark.slow),
    pytest.param("isoflop_accuracy.py", ["--seeds", "1"], (), ("synthetic sweeps", "95% interval holds the truth"),
                 id="isoflop_accuracy", marks=pytest.mark.slow),
    pytest.param("torch_peer.py", ["--scale=tiny0", "--batch=2", "--seq=32", "--vocab_size=256", "--dropout=0",
                                   "--rounds=1", "--steps=1", "--warmup=0", "--no_compile"], ("torch",),
                 ("median tok/s: atlas_t5x",), id="torch_peer", marks=pytest.mark.slow),
    pytest.param("demo_stability.py", ["--replicates=1", "--bootstrap=20", "--logs", "examples/demo_logs.csv",
                                       "benchmarks/data/demo_more_seeds.csv"], (),
                 ("mono-ru-demo0 (6 seeds), mono-ru-demo1 (6 seeds)", "1 random trunk-bootstrap replicates of 213444",
                  "probability that each sanity check passes", "[Monte Carlo, 1 replicates, Wilson 95% interval]"),
                 id="demo_stability"),
    # input_pipeline.py --synthetic (the MADLAD-scale streaming check) is not run here: the script is
    # covered by its default case above, and the suite stays under 10 minutes
]


def _documented_scripts() -> set[str]:
    return set(re.findall(r"python benchmarks/(\w+\.py)", (BENCHMARKS / "README.md").read_text(encoding="utf-8")))


def test_every_documented_benchmark_script_is_run_here():
    documented = _documented_scripts()
    assert {"fit_speed.py", "train_throughput.py", "aot_plan.py", "input_pipeline.py", "preprocess.py",
            "demo_stability.py", "isoflop_accuracy.py", "torch_peer.py"} <= documented
    assert documented <= {p.values[0] for p in CASES} <= {p.name for p in BENCHMARKS.glob("*.py")}


@pytest.mark.parametrize("script,args,needs,expect", CASES)
def test_documented_benchmark_runs_with_tiny_settings(script, args, needs, expect):
    for module in needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{script} needs {module}, which is not installed")
    if script == "fit_speed.py" and not SHARED_DATA.is_dir():
        pytest.skip(f"{script} needs the reference data folder {SHARED_DATA}, which is absent")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for line in expect:
        assert line in proc.stdout, proc.stdout[-3000:]


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_input_pipeline_sizes_come_from_every_shipped_sweep():
    # the defect: `python benchmarks/input_pipeline.py` stopped at "unknown model scale 'demo0'"
    bench = _load_benchmark("input_pipeline")
    from atlas_t5x import models, sweeps

    for sweep in sorted((REPO / "gin" / "sweeps").glob("*.yaml")):
        run = bench.largest_run(str(sweep))
        size = models.param_count(sweeps.scale_config(run.scale))
        assert size == max(models.param_count(sweeps.scale_config(r.scale)) for r in sweeps.load_sweep(sweep).runs)
    assert bench.largest_run(str(REPO / "gin" / "sweeps" / "demo.yaml")).scale.startswith("demo")


def test_demo_stability_enumerates_every_trunk_draw_with_its_probability():
    bench = _load_benchmark("demo_stability")
    assert bench.multiset_probability(("a", "a"), ("a", "b")) == pytest.approx(0.25)
    assert bench.multiset_probability(("a", "b"), ("a", "b")) == pytest.approx(0.5)
    assert bench.multiset_probability(("a", "a", "b"), ("a", "b", "c")) == pytest.approx(3 / 27)
    assert bench.multiset_probability(("a", "b", "c"), ("a", "b", "c")) == pytest.approx(6 / 27)
    families = {"x": ["x", "x-s1"], "y": ["y", "y-s1", "y-s2"], "z": ["z"]}
    draws = bench.all_draws(families)
    assert len(draws) == bench.count_draws(families) == 3 * 10 * 1
    assert sum(p for _, p in draws) == pytest.approx(1.0)
    assert len({tuple(sorted(d.items())) for d, _ in draws}) == len(draws)
    # the random draws follow the same law: the frequency of each multiset over 20000 draws
    import random
    from collections import Counter

    rng = random.Random(0)
    seen = Counter(tuple(sorted(bench.draw(families, rng).items())) for _ in range(20000))
    for d, p in draws:
        assert seen[tuple(sorted(d.items()))] / 20000 == pytest.approx(p, abs=0.015)


def test_demo_stability_copies_a_trunk_drawn_twice_under_new_names():
    bench = _load_benchmark("demo_stability")
    rows = [{"run": "t", "trunk": "", "run_id": "a", "step": 1},
            {"run": "t-cd1", "trunk": "t", "run_id": "b", "step": 1},
            {"run": "u", "trunk": "", "run_id": "c", "step": 1}]
    out = bench.resample(rows, {"t": ("t", "t")})
    assert sorted(r["run"] for r in out) == ["t", "t-cd1", "t-cd1~1", "t~1"]
    assert {r["run_id"] for r in out} == {"a", "b", "a~1", "b~1"}
    assert next(r for r in out if r["run"] == "t-cd1~1")["trunk"] == "t~1"


def test_demo_stability_rate_interval_is_sound_at_the_ends():
    bench = _load_benchmark("demo_stability")
    lo, hi = bench.wilson_interval(40, 40)
    assert hi == 1.0 and 0.90 < lo < 0.93            # 40 of 40: the rate is not known to be 100%
    lo, hi = bench.wilson_interval(0, 40)
    assert lo == 0.0 and 0.07 < hi < 0.10
    lo, hi = bench.wilson_interval(34, 40)
    assert lo < 0.85 < hi and hi - lo < 0.25
