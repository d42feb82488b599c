"""The console scripts (setup.py entry_points → atlas_t5x/cli/<command>.py): --help, one real
invocation each in a subprocess, deprecated spellings, unknown flags, the fitter-only message, and
that --help / sweep --print / mesh-plan load no TensorFlow."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atlas_t5x.cli import common

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
           XLA_FLAGS="--xla_force_host_platform_device_count=1")

# console script → (module under atlas_t5x.cli, flags its --help must name)
TRAINING_COMMANDS = {
    "atlas-train": ("train", ["--gin_file", "--gin_bindings", "--model_dir", "--gin.NAME=VALUE"]),
    "atlas-sweep": ("sweep", ["--out", "--print", "--only", "--no_progress", "--target", "--corpus", "--rehearse",
                             "--rehearsal", "--max_days", "--mfu", "--launch_dir"]),
    "atlas-mesh-plan": ("mesh_plan", ["--scale", "--target", "--devices", "--chip_gib", "--mesh", "--write_gin"]),
    "atlas-count-unique": ("count_unique", ["--root", "--languages", "--vocab", "--stats", "--workers"]),
    "atlas-corpus-stats": ("corpus_stats", ["--root", "--languages", "--vocab", "--out", "--skip_bad_records"]),
    "atlas-train-vocab": ("train_vocab", ["--root", "--vocab_size", "--temperature", "--sample_dir", "--out"]),
    "atlas-build-corpus": ("build_corpus", ["--out", "--check"]),
}
# Other engineers' commands (issue 14): checked for --help when installed.
OTHER_COMMANDS = {"atlas-demo": ["--out"], "atlas-fit": ["--law"], "atlas-plan": [], "atlas-transfer": [],
                  "atlas-report": ["--out"], "atlas-export": ["--out"]}
HEAVY = ("tensorflow", "seqio", "jax", "flax", "orbax", "apache_beam")


def console_script(name: str) -> Path:
    path = BIN / name
    assert path.is_file(), f"{path} missing: install the package (pip install -e .) so setup.py's entry points exist"
    return path


def run(name: str, *args: str, cwd: Path = REPO, timeout: float = 300,
        importtime: bool = False) -> subprocess.CompletedProcess:
    """The console script `name` with `args` in a subprocess (optionally under -X importtime)."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), str(console_script(name)), *args]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def imported_top_level(importtime_stderr: str) -> set[str]:
    """Top-level packages a `python -X importtime` run imported."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", importtime_stderr, flags=re.MULTILINE)
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("name", sorted(TRAINING_COMMANDS))
def test_help_names_the_main_flags_and_loads_no_heavy_library(name):
    proc = run(name, "--help", importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for flag in TRAINING_COMMANDS[name][1]:
        assert flag in proc.stdout, f"{name} --help does not mention {flag}"
    assert name in proc.stdout  # the usage names the console script, not scripts/<x>.py
    assert not imported_top_level(proc.stderr) & set(HEAVY), sorted(imported_top_level(proc.stderr) & set(HEAVY))


@pytest.mark.parametrize("name", sorted(OTHER_COMMANDS))
def test_help_of_the_other_console_scripts(name):
    if not (BIN / name).is_file():
        pytest.skip(f"{name} is not installed yet")
    proc = run(name, "--help", importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(flag in proc.stdout for flag in OTHER_COMMANDS[name])
    assert "tensorflow" not in imported_top_level(proc.stderr)


def test_scripts_are_thin_wrappers_without_path_edits():
    for name, (module, _) in TRAINING_COMMANDS.items():
        text = (REPO / "scripts" / f"{module}.py").read_text()
        assert f"from atlas_t5x.cli.{module} import main" in text and "sys.path" not in text, module
        assert len(text.splitlines()) <= 15, f"scripts/{module}.py should only call atlas_t5x.cli.{module}.main"


def test_importing_the_training_cli_modules_loads_no_heavy_library():
    modules = [f"atlas_t5x.cli.{module}" for module, _ in TRAINING_COMMANDS.values()]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            f"print(sorted(n for n in {HEAVY!r} if n in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_the_tasks_folder_installs_as_atlas_t5x_tasks(tmp_path):
    """Outside the checkout, `tasks` is not importable (no generic name in site-packages);
    `atlas_t5x_tasks` is the repository's tasks/ folder."""
    code = ("import importlib.util, json; print(json.dumps([importlib.util.find_spec('tasks') is None, "
            "importlib.util.find_spec('atlas_t5x_tasks').origin]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    no_tasks, origin = json.loads(proc.stdout)
    assert no_tasks and Path(origin) == REPO / "tasks" / "__init__.py"


# ------------------------------------------------------------------ one real invocation each

def test_atlas_train_trains_the_smoke_config(tmp_path):
    model_dir = tmp_path / "run"
    proc = run("atlas-train", "--gin_file=gin/runs/smoke.gin", f"--model_dir={model_dir}",
               "--gin.train.total_steps=3", "--gin.make_schedule.warmup_steps=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finished at step 3" in proc.stdout
    rows = [json.loads(line) for line in (model_dir / "logs" / "train.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows][-1] == 3 and all(row["loss"] > 0 for row in rows)
    assert (model_dir / "config.gin").is_file()


def test_atlas_sweep_print_writes_one_command_per_run_without_tensorflow(tmp_path):
    from atlas_t5x import sweeps

    import yaml

    # the demo's design at batch 8: every size splits it over the 8 devices of the default --print
    # target by data alone (an unsplittable batch is refused, naming it: tests/test_plans.py)
    demo = yaml.safe_load((REPO / "gin" / "sweeps" / "demo.yaml").read_text())
    demo["defaults"]["batch"] = 8
    spec = tmp_path / "demo_batch8.yaml"
    spec.write_text(yaml.safe_dump(demo))
    proc = run("atlas-sweep", str(spec), "--out", str(tmp_path / "out"), "--print", cwd=tmp_path, importtime=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [line for line in proc.stdout.splitlines() if line.strip()]
    runs = sweeps.load_sweep(str(spec)).runs
    assert len(commands) == len(runs)
    for run_spec in runs:
        model_dir = (tmp_path / "out").resolve() / "runs" / run_spec.name
        assert any(f"--model_dir={model_dir}" in c for c in commands), run_spec.name
        assert (model_dir / sweeps.RUN_GIN).is_file()
    assert not {"tensorflow", "seqio"} & imported_top_level(proc.stderr)


def test_atlas_mesh_plan_prints_a_plan_that_divides_the_slice_without_tensorflow():
    proc = run("atlas-mesh-plan", "--scale=scale34", "--target=gpu_8x80gb", importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    flags = dict(re.findall(r"--gin\.MeshConfig\.(\w+)=(\d+)", proc.stdout))
    assert int(flags["data"]) * int(flags["fsdp"]) * int(flags["tensor"]) == 8
    assert not {"tensorflow", "seqio"} & imported_top_level(proc.stderr)


def test_mesh_plan_help_lists_every_remat_policy():
    from atlas_t5x import models
    from atlas_t5x.cli import mesh_plan

    assert set(mesh_plan.REMAT_HELP.split(", ")) == set(models.REMAT_POLICIES)


def test_atlas_count_unique_counts_the_embedded_corpus(tmp_path):
    """Byte vocabulary: U = UTF-8 bytes of the train split + one EOS per train document."""
    import gzip

    stats_path = tmp_path / "stats.json"
    proc = run("atlas-count-unique", "--languages=yi", "--vocab=byte", f"--cache={stats_path}",
               f"--json={tmp_path / 'u.json'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--cache is deprecated" in proc.stderr and "use --stats" in proc.stderr  # and it still works
    entry = json.loads(stats_path.read_text())["languages"]["yi"]
    texts = [json.loads(line)["text"] for f in sorted((REPO / "atlas_t5x/data/corpus/yi").glob("*.jsonl.gz"))
             for line in gzip.open(f, "rt", encoding="utf-8")]
    splits = entry["splits"]
    assert sum(s["documents"] for s in splits.values()) == len(texts) == entry["documents"]
    assert sum(s["bytes"] for s in splits.values()) == sum(len(t.encode("utf-8")) for t in texts)
    assert entry["unique_tokens"] == splits["train"]["bytes"] + splits["train"]["documents"] > 0
    assert json.loads((tmp_path / "u.json").read_text()) == {"yi": entry["unique_tokens"]}
    assert re.search(rf"^yi\s+{entry['documents']:,}\s+{entry['unique_tokens']:,}", proc.stdout, flags=re.MULTILINE)


@pytest.mark.slow   # ~20 s each (TensorFlow + Beam start-up); the fast sample is the count above
def test_atlas_corpus_stats_agrees_with_count_unique(tmp_path):
    """Two implementations (one host; Beam) of the same statistics file."""
    single, beam = tmp_path / "single.json", tmp_path / "beam.json"
    counted = run("atlas-count-unique", "--languages=yi,cy", "--vocab=byte", f"--stats={single}")
    assert counted.returncode == 0, counted.stderr[-3000:]
    streamed = run("atlas-corpus-stats", "--languages=yi,cy", "--vocab=byte", f"--out={beam}")
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    single_doc, beam_doc = json.loads(single.read_text()), json.loads(beam.read_text())
    for lang in ("yi", "cy"):
        assert single_doc["languages"][lang]["unique_tokens"] == beam_doc["languages"][lang]["unique_tokens"] > 0
        assert single_doc["languages"][lang]["splits"] == beam_doc["languages"][lang]["splits"]


@pytest.mark.slow   # ~20 s (TensorFlow start-up, SentencePiece training)
def test_atlas_train_vocab_trains_a_small_vocabulary(tmp_path):
    out = tmp_path / "spm.model"
    proc = run("atlas-train-vocab", "--languages=yi,cy", "--vocab_size=400", "--threads=1", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["vocab_size"] == 400 and set(card["train_bytes"]) == {"yi", "cy"}
    import sentencepiece as spm

    assert spm.SentencePieceProcessor(model_file=str(out)).get_piece_size() == 400


def test_atlas_build_corpus_check_refuses_a_folder_without_manifest(tmp_path):
    proc = run("atlas-build-corpus", "--check", f"--out={tmp_path}")
    assert proc.returncode == 2 and "no manifest to check against" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ flags

def test_deprecated_spelling_works_and_names_the_new_flag(capsys):
    from atlas_t5x.cli import sweep

    args = sweep.parse_args(["spec.yaml", "--out", "o", "--no-progress"])
    assert args.no_progress is True
    assert "--no-progress is deprecated" in capsys.readouterr().err
    args = sweep.parse_args(["spec.yaml", "--out", "o", "--no_progress"])
    assert args.no_progress is True and "deprecated" not in capsys.readouterr().err


@pytest.mark.parametrize("name,bad,closest", [
    ("atlas-train", "--gin_fil=gin/runs/smoke.gin", "gin_file"),
    ("atlas-train", "--model-dir=/tmp/x", "model_dir"),
    ("atlas-sweep", "--only_runs=a", "--only"),
    ("atlas-mesh-plan", "--chip-gib=16", "--chip_gib"),
    ("atlas-count-unique", "--worker=2", "--workers"),
    ("atlas-corpus-stats", "--skip_bad_record", "--skip_bad_records"),
    ("atlas-train-vocab", "--vocab-size=300", "--vocab_size"),
    ("atlas-build-corpus", "--chek", "--check"),
])
def test_unknown_flag_exits_2_naming_the_closest(name, bad, closest, tmp_path):
    args = [bad] + ([str(REPO / "gin/sweeps/demo.yaml"), "--out", "o"] if name == "atlas-sweep" else [])
    if name == "atlas-corpus-stats":
        args.append("--out=o.json")
    proc = run(name, *args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert closest in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_corpus_stats_passes_beam_options_through():
    from atlas_t5x.cli import corpus_stats

    parser = corpus_stats.build_parser()
    corpus_stats.check_beam_args(parser, ["--direct_num_workers=2", "--runner", "DirectRunner"])  # no error


def test_train_main_runs_twice_in_one_process(tmp_path, capsys):
    """Flags and the gin config are reset per call: a second call sees only its own flags."""
    from atlas_t5x.cli import train

    for _ in range(2):
        code = train.main(["--gin_file=gin/runs/smoke.gin", f"--model_dir={tmp_path / 'run'}",
                           "--gin.train.total_steps='abc'"])
        assert code == 2
        err = capsys.readouterr().err
        assert "train.total_steps must be an integer, got 'abc'" in err and "locked" not in err
    flags = train.parse_flags(["--gin_file=a.gin", "--model_dir=m"])
    assert flags.gin_file == ["a.gin"] and flags.gin_bindings == []
    assert not (tmp_path / "run").exists()


# atlas-build-corpus reads gettext catalogs only: it needs no training stack.
@pytest.mark.parametrize("name", sorted(set(TRAINING_COMMANDS) - {"atlas-build-corpus"}))
def test_fitter_only_install_gets_one_line_naming_the_extra(name, monkeypatch, capsys, tmp_path):
    import importlib

    module = importlib.import_module(f"atlas_t5x.cli.{TRAINING_COMMANDS[name][0]}")
    monkeypatch.setattr(common, "missing_modules", lambda modules: ["tensorflow"])
    args = {"atlas-sweep": ["gin/sweeps/demo.yaml", "--out", str(tmp_path)],
            "atlas-mesh-plan": ["--scale=scale0", "--target=gpu_8x80gb"],
            "atlas-corpus-stats": [f"--out={tmp_path / 's.json'}"],
            "atlas-train": ["--gin_file=gin/runs/smoke.gin", f"--model_dir={tmp_path}"]}.get(name, [])
    assert module.main(args) == common.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'atlas_t5x[train]'" in err[0], err


def test_atlas_demo_refuses_a_missing_spec_and_bad_workers_naming_them(tmp_path):
    """atlas-demo's real run is `make demo` (minutes); here its bad-input paths, as a process."""
    exe = shutil.which("atlas-demo", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("atlas-demo is not installed in this environment")
    missing = subprocess.run([exe, "--spec", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
    workers = subprocess.run([exe, "--workers", "0", "--out", str(tmp_path / "o")],
                             capture_output=True, text=True, timeout=300)
    assert workers.returncode == 2 and "--workers" in workers.stderr
    assert not (tmp_path / "o" / "report").exists()
