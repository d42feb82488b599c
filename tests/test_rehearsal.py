"""Deviceless TPU compiles (atlas_t5x.aot), right-sized placement (plans.place) and
`atlas-sweep --rehearse` (atlas_t5x.rehearsal). One real compile: tiny0 on a v5e 2x2 slice."""

import json
import math
from pathlib import Path

import pytest
import yaml

from atlas_t5x import aot, models, plans, rehearsal, sweeps
from atlas_t5x.cli import sweep as sweep_cli

REPO = Path(__file__).resolve().parents[1]
V5E = plans.TARGETS["tpu_v5e_256"]
# A 4-chip v5e fleet, small enough to compile tiny0 in seconds on the host.
TINY_TPU = plans.Target("tiny_v5e", 4, 16 * plans.GiB, 4, "one v5e 2x2 slice", slice_chips=(4,), platform="tpu",
                        topologies=((4, "v5e:2x2"),), peak_flops=197e12)


def _spec(tmp_path: Path, families: list, **defaults) -> str:
    path = tmp_path / "spec.yaml"
    base = {"seq_len": 128, "batch": 8, "tokens": 8 * 128 * 3, "vocab": "corpus_spm", "vocab_size": 512,
            "eval_languages": ["en"], "gin_files": ["gin/paper.gin"]}
    path.write_text(yaml.safe_dump({"name": "rehearse-test", "defaults": {**base, **defaults}, "families": families}))
    return str(path)


@pytest.fixture(scope="module")
def tiny_record(tmp_path_factory):
    """One rehearsal that compiles tiny0's train and eval steps for TPU v5e (2x2), shared by the tests."""
    tmp = tmp_path_factory.mktemp("tiny")
    spec = _spec(tmp, [{"family": "monolingual", "languages": ["en", "fr"], "scales": ["tiny0"]}])
    runs = sweeps.load_sweep(spec).runs
    lines = []
    return rehearsal.rehearse(runs, TINY_TPU, progress=lines.append), lines


def test_tiny0_compiles_train_and_eval_for_a_tpu_device_kind(tiny_record):
    record, progress = tiny_record
    assert [r["run"] for r in record["runs"]] == ["mono-en-tiny0", "mono-fr-tiny0"] and not record["problems"]
    row = record["runs"][0]
    assert row["device_kind"] == "TPU v5 lite" and row["memory_source"] == "compiled"
    assert row["slice_chips"] == 4 and row["topology"] == "v5e:2x2" and math.prod(row["mesh"]) == 4
    assert row["fits"] and row["eval_compiled"] and row["eval_bytes_per_chip"] > 0
    assert row["eval_batch"] == 8 and not row["eval_batch_bound"]  # the global batch: its logits are small here
    # Arguments hold the float32 state (params + two Adam moments = 12 bytes per parameter) sharded
    # over fsdp, plus the batch; the compiled total is bounded below by that.
    cfg = sweeps.scale_config("tiny0", dtype="bfloat16", vocab_size=512)
    state = 12 * models.param_count(cfg) / row["mesh"][1]
    assert row["bytes_per_chip"] >= state and row["bytes_per_chip"] < TINY_TPU.chip_bytes
    # The two runs share one (model, slice, plan) key: compiled once.
    assert record["totals"]["compiles"] == 1 and sum("compiling" in line for line in progress) == 1
    assert record["runs"][1]["bytes_per_chip"] == row["bytes_per_chip"]
    assert row["est_step_s"] == pytest.approx(models.flops_per_token(cfg, 128) * 8 * 128 / (4 * 197e12 * 0.4))
    assert row["chip_hours"] == pytest.approx(row["est_step_s"] * row["total_steps"] * 4 / 3600)


def test_step_memory_total_counts_donated_buffers_once():
    mem = aot.StepMemory(arguments=100, outputs=90, aliased=80, temporaries=50, generated_code=7)
    assert mem.total == 160


def test_unknown_topology_is_named():
    with pytest.raises(aot.TopologyError, match=r"v5e:3x5"):
        aot.topology_devices("tpu", "v5e:3x5")


def test_placement_right_sizes_slices_on_v5e():
    sweep = sweeps.load_sweep(REPO / "gin/sweeps/paper.yaml")
    placed = {}
    for name in ("mono-en-scale0", "mono-en-scale34"):
        run = sweep.run(name)
        cfg = sweeps.scale_config(run.scale, dtype="bfloat16")
        placed[name] = plans.place(cfg, V5E, run.seq_len, run.batch, run.total_steps)
    small, big = placed["mono-en-scale0"], placed["mono-en-scale34"]
    assert small.slice_chips <= 32 and small.slice_chips < big.slice_chips
    for p in placed.values():
        assert p.plan.data * p.plan.fsdp * p.plan.tensor == p.slice_chips and p.plan.fits
    # Without a wall-clock bound scale34 takes the smallest slice it fits; a refusing check moves it up.
    cfg = sweeps.scale_config("scale34", dtype="bfloat16")
    loose = plans.place(cfg, V5E, 2048, 2048, max_days=None)
    assert loose.slice_chips == 8
    moved = plans.place(cfg, V5E, 2048, 2048, max_days=None, check=lambda plan: "no" if plan.devices < 64 else None)
    assert moved.slice_chips == 64 and len(moved.tried) == 6  # two plans per smaller slice, the second cheaper
    assert moved.tried[0].startswith("8 chips, mesh 1x8x1 remat full 32 micro") and "64 micro" in moved.tried[1]
    with pytest.raises(plans.PlanError, match="one sequence per chip"):
        plans.place(cfg, V5E, 2048, 4, max_days=None)  # 4 sequences: no v5e slice (8+ chips)
    with pytest.raises(plans.PlanError, match="no mesh of 8 devices splits global batch 12"):
        plans.place(cfg, V5E, 2048, 12, max_days=None)  # 12 rows split over no power-of-two mesh


def test_eval_batch_follows_gin_files_includes_and_bindings(tmp_path):
    spec = _spec(tmp_path, [{"family": "monolingual", "languages": ["en"], "scales": ["tiny0"]},
                            {"family": "monolingual", "languages": ["fr"], "scales": ["tiny0"],
                             "gin_bindings": ["PerLanguageEval.batch_size = 24"]}],
                 gin_files=["gin/runs/paper_base.gin"])
    en, fr = sweeps.load_sweep(spec).runs
    assert rehearsal.eval_batch(en) == 256  # gin/runs/paper_base.gin
    assert rehearsal.eval_batch(fr) == 24  # the spec's binding wins


def test_rehearse_cli_writes_json_and_exits_2_listing_every_run_that_cannot_run(tmp_path, capsys):
    spec = _spec(tmp_path, [
        {"family": "monolingual", "languages": ["en"], "scales": ["scale0"]},
        {"family": "monolingual", "languages": ["fr"], "scales": ["scale0"],
         "gin_bindings": ["PerLanguageEval.batch_size = 12"]},
        {"family": "monolingual", "languages": ["de"], "scales": ["scale0"], "batch": 4}],
        seq_len=2048, batch=256, tokens=256 * 2048 * 10)
    code = sweep_cli.main([spec, "--rehearse", "--target", "tpu_v5e_256", "--no_compile", "--out",
                           str(tmp_path / "out"), "--no_progress"])
    captured = capsys.readouterr()
    assert code == 2
    assert "2 run(s) cannot run" in captured.err
    assert "mono-fr-scale0" in captured.err and "PerLanguageEval.batch_size = 12" in captured.err
    assert "mono-de-scale0" in captured.err and "one sequence per chip" in captured.err
    record = json.loads((tmp_path / "out" / "rehearsal.json").read_text())
    row = next(r for r in record["runs"] if r["run"] == "mono-en-scale0")
    for key in ("run", "scale", "slice_chips", "mesh", "remat_policy", "microbatches", "device_kind",
                "bytes_per_chip", "chip_bytes", "fits", "eval_compiled", "compile_s", "est_step_s", "chip_hours"):
        assert key in row
    assert row["slice_chips"] == 8 and row["memory_source"] == "analytic" and not row["eval_compiled"]
    assert record["totals"]["cannot_run"] == 2 and record["assumptions"]["mfu"] == 0.4
    assert "mono-en-scale0" in captured.out and "CANNOT RUN" in captured.out


def test_rehearse_to_a_bucket_creates_no_local_gs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = {}
    monkeypatch.setattr("atlas_t5x.logio.write_atomic", lambda path, text: written.update({str(path): text}))
    spec = _spec(tmp_path, [{"family": "monolingual", "languages": ["en"], "scales": ["scale0"]}],
                 seq_len=2048, batch=256, tokens=256 * 2048 * 10)
    assert sweep_cli.main([spec, "--rehearse", "--no_compile", "--out", "gs://bucket/x", "--no_progress"]) == 0
    assert list(written) == ["gs://bucket/x/rehearsal.json"]
    assert not any(p.name.startswith("gs") for p in tmp_path.iterdir())


def test_cpu_only_host_detection_reads_pci_vendors_and_nvidia_nodes(tmp_path, monkeypatch):
    import atlas_t5x

    devices = tmp_path / "sys" / "bus" / "pci" / "devices"
    for name, vendor in (("0000:00:01.0", "0x1af4"), ("0000:00:02.0", "0x8086")):
        (devices / name).mkdir(parents=True)
        (devices / name / "vendor").write_text(vendor + "\n")
    real_glob = atlas_t5x._glob.glob

    def fake_glob(pattern):
        if pattern.startswith("/sys/bus/pci/devices"):
            return real_glob(str(devices / "*" / "vendor"))
        return real_glob(str(tmp_path / "dev" / "nvidia*"))

    monkeypatch.setattr(atlas_t5x._glob, "glob", fake_glob)
    assert atlas_t5x._host_has_no_accelerator()
    (devices / "0000:00:04.0").mkdir()
    (devices / "0000:00:04.0" / "vendor").write_text("0x1ae0\n")  # a Google device (TPU or gVNIC): leave JAX alone
    assert not atlas_t5x._host_has_no_accelerator()
    (devices / "0000:00:04.0" / "vendor").write_text("0x10de\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidia0").write_text("")
    assert not atlas_t5x._host_has_no_accelerator()


def test_gpu_fleet_is_placed_on_the_labelled_analytic_estimate():
    sweep = sweeps.load_sweep(REPO / "gin/sweeps/paper.yaml")
    runs = [sweep.run("mono-en-scale0"), sweep.run("mono-en-scale46")]
    record = rehearsal.rehearse(runs, plans.TARGETS["gpu_h100_64"])
    assert record["assumptions"]["memory"] == "analytic (no compiler for this target here)"
    small, big = record["runs"]
    assert small["memory_source"] == big["memory_source"] == "analytic" and not small["eval_compiled"]
    assert small["device_kind"].startswith("analytic") and small["slice_chips"] == 8 and small["hosts"] == 1
    assert big["slice_chips"] > 8 and big["hosts"] == big["slice_chips"] // 8
    assert big["bytes_per_chip"] == big["analytic_bytes_per_chip"] <= 0.9 * 80e9


@pytest.mark.parametrize("name", [n for n, t in plans.TARGETS.items() if t.platform == "tpu"])
def test_every_tpu_slice_names_a_topology_libtpu_knows(name):
    target = plans.TARGETS[name]
    for chips in target.slices:
        devices = aot.topology_devices("tpu", target.topology(chips))
        assert len(devices) == chips and devices[0].device_kind.startswith("TPU v")
        assert target.hosts(chips) * target.chips_per_host(chips) == chips
