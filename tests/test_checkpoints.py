"""Checkpoints: exact resume after SIGKILL, SIGTERM, half-written folders, shape mismatch, finetune.

Runs use gin/runs/smoke.gin (tiny0 on the synthetic stream) shortened to a few steps. The killed
and preempted runs go through scripts/train.py in a subprocess (same 8 CPU devices as this
process, via XLA_FLAGS from conftest), the rest call `trainer.train` in-process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gin
import jax
import numpy as np
import pytest

from atlas_t5x import checkpoints, logio, trainer
from _short_run import SHORT_RUN_BINDINGS, TOTAL_STEPS
from atlas_t5x.data import synthetic  # noqa: F401  registers make_synthetic_pipeline

REPO = Path(__file__).resolve().parents[1]
BINDINGS = [*SHORT_RUN_BINDINGS, "ModelConfig.dropout_rate = 0.1"]  # dropout: the per-step key on resume


@gin.configurable(module="atlas_tests")
class SignalAtStep:
    """Test callback: at `step`, waits until checkpoint `after_checkpoint` is committed, then sends
    `signum` to its own process (only to process `process` of a multi-process run, if given)."""

    def __init__(self, step: int, signum: int, after_checkpoint: int | None = None, process: int | None = None):
        self.every_steps = 1
        self.step, self.signum, self.after_checkpoint, self.process = step, signum, after_checkpoint, process

    def __call__(self, ctx):
        if ctx.step != self.step or self.process not in (None, jax.process_index()):
            return
        folder = Path(ctx.run_info.model_dir) / "checkpoints"
        deadline = time.time() + 60
        while self.after_checkpoint is not None and self.after_checkpoint not in checkpoints.complete_steps(folder):
            assert time.time() < deadline, "checkpoint never committed"
            time.sleep(0.05)
        os.kill(os.getpid(), self.signum)
        time.sleep(1.0)  # a multi-host preemption notice reaches the other processes before the next step


def _train_in_process(model_dir: Path, extra: list[str] = (), **kwargs) -> trainer.TrainResult:
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO))
    try:
        gin.parse_config_files_and_bindings([str(REPO / "gin/runs/smoke.gin")], BINDINGS + list(extra))
        return trainer.train(str(model_dir), **kwargs)
    finally:
        gin.clear_config()


def _train_subprocess(model_dir: Path, extra: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    bindings = [f"--gin_bindings={b}" for b in ["import test_checkpoints", *BINDINGS, *extra]]
    return subprocess.run(
        [sys.executable, str(REPO / "scripts/train.py"), "--gin_file=gin/runs/smoke.gin",
         f"--model_dir={model_dir}", *bindings],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )


def _signal_bindings(step: int, signum: int, after_checkpoint: int | None = None) -> list[str]:
    return [
        "train.callbacks = [@atlas_tests.SignalAtStep()]",
        f"atlas_tests.SignalAtStep.step = {step}",
        f"atlas_tests.SignalAtStep.signum = {int(signum)}",
        f"atlas_tests.SignalAtStep.after_checkpoint = {after_checkpoint}",
    ]


def _losses(model_dir: Path) -> dict[int, float]:
    rows = logio.read_jsonl(model_dir / "logs" / "train.jsonl")
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"duplicate steps logged: {steps}"
    return {r["step"]: r["loss"] for r in rows}


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, trainer.TrainResult]:
    model_dir = tmp_path_factory.mktemp("uninterrupted")
    return model_dir, _train_in_process(model_dir)


def test_uninterrupted_run_checkpoints_every_k_and_at_the_end(uninterrupted):
    model_dir, result = uninterrupted
    assert result.step == TOTAL_STEPS and not result.preempted
    assert checkpoints.complete_steps(model_dir / "checkpoints") == [6, 8]  # keep 2 of 3, 6, 8
    meta = checkpoints.read_metadata(model_dir / "checkpoints", 8)
    assert meta["model_config"]["name"] == "tiny0"
    assert meta["param_shapes"]["embedding"] == [256, 32]
    assert sorted(_losses(model_dir)) == list(range(1, TOTAL_STEPS + 1))
    # No data-sheet peak on CPU: MFU is against the matmul peak measured at start (tiny0 uses little of it).
    assert all(0 < r["mfu"] < 1 for r in logio.read_jsonl(model_dir / "logs" / "train.jsonl"))


def test_sigkill_after_checkpoint_then_restart_logs_identical_losses(uninterrupted, tmp_path):
    reference = _losses(uninterrupted[0])
    model_dir = tmp_path / "killed"
    # Killed during step 5's callbacks, once checkpoint 3 is committed: steps 4, 5 are redone.
    proc = _train_subprocess(model_dir, _signal_bindings(5, signal.SIGKILL, after_checkpoint=3))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoints.complete_steps(model_dir / "checkpoints") == [3]
    assert max(_losses(model_dir)) == 5

    result = _train_in_process(model_dir)
    assert result.step == TOTAL_STEPS
    resumed = _losses(model_dir)  # rows 4, 5 of the killed run were dropped and relogged
    assert sorted(resumed) == list(range(1, TOTAL_STEPS + 1))
    for step in range(4, TOTAL_STEPS + 1):
        assert resumed[step] == reference[step], f"step {step}: {resumed[step]} != {reference[step]}"
    rows = logio.read_jsonl(model_dir / "logs" / "train.jsonl")
    ref_rows = logio.read_jsonl(uninterrupted[0] / "logs" / "train.jsonl")
    assert rows[-1]["tokens_by_lang"] == ref_rows[-1]["tokens_by_lang"]  # pipeline resumed exactly


def test_sigterm_checkpoints_at_next_step_and_exits_0(uninterrupted, tmp_path, monkeypatch):
    model_dir = tmp_path / "preempted"
    proc = _train_subprocess(model_dir, _signal_bindings(4, signal.SIGTERM))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "preempted" in proc.stdout
    # The signal arrives during step 4's callbacks; the loop stops after step 5 with a checkpoint.
    assert checkpoints.complete_steps(model_dir / "checkpoints")[-1] == 5
    assert max(_losses(model_dir)) == 5

    # The checkpoint restores and the run finishes, here given a relative model_dir.
    monkeypatch.chdir(tmp_path)
    result = _train_in_process(Path("preempted"))
    assert result.step == TOTAL_STEPS
    reference = _losses(uninterrupted[0])
    assert _losses(model_dir) == reference
    assert checkpoints.read_metadata(model_dir / "checkpoints", TOTAL_STEPS)["run_info"]["model_dir"] == str(model_dir)


def test_model_dir_urls_are_kept_and_local_paths_made_absolute(tmp_path, monkeypatch):
    # gs:// (or any URL) must not collapse to "gs:/bucket" as pathlib does; nothing is contacted here.
    ckpt = checkpoints.TrainCheckpointer("gs://bucket/runs/scale0")
    assert str(ckpt.directory) == "gs://bucket/runs/scale0/checkpoints"
    assert str(checkpoints.as_path("gs://bucket/runs/scale0") / "logs") == "gs://bucket/runs/scale0/logs"
    monkeypatch.chdir(tmp_path)
    assert str(checkpoints.TrainCheckpointer("run").directory) == str(tmp_path / "run" / "checkpoints")


def test_half_written_checkpoint_is_skipped_and_restore_reshards_to_the_current_mesh(uninterrupted, tmp_path):
    model_dir = tmp_path / uninterrupted[0].name   # the run's own name: a copy under another is refused
    shutil.copytree(uninterrupted[0], model_dir)
    folder = model_dir / "checkpoints"
    (folder / "9.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)  # orbax's in-progress name
    (folder / "10" / "state").mkdir(parents=True)  # a folder without a commit record
    (folder / "10" / "state" / "garbage").write_bytes(b"\x00" * 10)
    assert checkpoints.complete_steps(folder) == [6, 8]

    # Also restores onto another mesh: written with data=8, resumed with data=2 x fsdp=4.
    called = []

    class EveryFour:
        every_steps = 4

        def __call__(self, ctx):
            called.append(ctx.step)

    # 10 steps where the run had 8: a schedule change, so it is allowed explicitly (atlas_t5x/resume.py).
    result = _train_in_process(model_dir, ["train.total_steps = 10", "train.allow_config_change = True",
                                           "MeshConfig.fsdp = 4"], callbacks=[EveryFour()])
    assert result.step == 10
    assert called == [10]  # the final step (8's callbacks ran before checkpoint 8 was written)
    embedding = result.state.params["embedding"]
    assert dict(embedding.sharding.mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert embedding.sharding.spec[1] == "fsdp"  # [vocab, embed]: embed sharded over fsdp
    rows = logio.read_jsonl(model_dir / "logs" / "train.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 11))  # resumed from 8, not from the garbage
    assert checkpoints.complete_steps(folder) == [9, 10]
    assert not (folder / "10" / "state" / "garbage").exists()


def test_checkpoint_of_another_model_shape_is_a_clear_error_and_nothing_is_overwritten(uninterrupted, tmp_path):
    model_dir = tmp_path / "other"
    shutil.copytree(uninterrupted[0], model_dir)
    before = _snapshot(model_dir)
    with pytest.raises(checkpoints.CheckpointMismatchError) as err:
        _train_in_process(model_dir, ["ModelConfig.d_ff = 96"])
    message = str(err.value)
    assert "'layer_0/mlp/wi_0'" in message and "[32, 64]" in message and "[32, 96]" in message
    assert str(model_dir / "checkpoints" / "8") in message
    assert _snapshot(model_dir) == before

    # Same shapes, another optimizer chain (no clipping): named as such, still nothing written.
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"checkpoints/8 does not fit .*optimizer"):
        _train_in_process(model_dir, ["make_optimizer.clip_norm = None"])
    assert _snapshot(model_dir) == before


def test_checkpoint_of_the_other_layer_layout_is_a_clear_error(uninterrupted, tmp_path):
    meta = checkpoints.read_metadata(uninterrupted[0] / "checkpoints", 8)
    assert meta["param_layout"] == "unrolled"  # tiny0 keeps the unrolled layout
    assert meta["param_shapes"]["layer_0/mlp/wi_0"] == [32, 64]
    model_dir = tmp_path / "scanned"
    shutil.copytree(uninterrupted[0], model_dir)
    before = _snapshot(model_dir)
    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=r"holds the unrolled parameter layout but this model is scanned.*scan_layers = False"):
        _train_in_process(model_dir, ["ModelConfig.scan_layers = True"])
    with pytest.raises(checkpoints.CheckpointMismatchError, match="unrolled parameter layout"):
        _train_in_process(tmp_path / "ft_scanned", ["ModelConfig.scan_layers = True"],
                          init_from=str(uninterrupted[0]))
    assert _snapshot(model_dir) == before


def test_finetune_init_loads_params_only_with_fresh_optimizer_and_schedule(uninterrupted, tmp_path):
    source_dir, source = uninterrupted
    seen = {}

    class Capture:
        every_steps = 1

        def __call__(self, ctx):
            seen[ctx.step] = (jax.device_get(ctx.state.params), jax.device_get(ctx.state.opt_state),
                              ctx.lr, ctx.run_info.init)

    model_dir = tmp_path / "finetune"
    result = _train_in_process(model_dir, ["train.total_steps = 2", "train.checkpoint_every_steps = 100"],
                               callbacks=[Capture()], init_from=str(source_dir))
    assert result.step == 2
    params, opt_state, lr, init = seen[1]
    assert init == str(source_dir / "checkpoints" / "8")
    # Schedule reset: the first update runs at warmup step 0 (LR 0), so the params are the source's.
    assert lr == 0.0
    source_params = jax.device_get(source.state.params)
    jax.tree.map(np.testing.assert_array_equal, params, source_params)
    # Fresh optimizer: Adam has counted one update here, eight in the source run.
    counts = [int(x) for x in jax.tree.leaves(opt_state) if np.ndim(x) == 0]
    source_counts = [int(x) for x in jax.tree.leaves(jax.device_get(source.state.opt_state)) if np.ndim(x) == 0]
    assert counts and set(counts) == {1} and set(source_counts) == {TOTAL_STEPS}
    meta = checkpoints.read_metadata(model_dir / "checkpoints", 2)
    assert meta["run_info"]["init"] == init

    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        _train_in_process(tmp_path / "ft2", callbacks=[], init_from=str(tmp_path / "nothing_here"))
