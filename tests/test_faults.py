"""The trainer's fault matrix: killed runs, a second trainer, damaged checkpoints, stale locks.

Every fault is checked against one uninterrupted reference run (tiny0 on the synthetic stream,
8 steps, checkpoints every 3 keeping 2, a fake per-language evaluation every 2 steps): after the
fault and a restart the run must log exactly the reference's rows — train.jsonl losses and
eval.jsonl values bit-identical, each step (and (step, target)) once: no row lost, none doubled.

Killed runs go through scripts/train.py in a subprocess (SIGKILL sent by the run to itself from a
gin-configured test callback); restarts and checkpoint damage run in-process. The default
(fast) sample covers each kind of fault once; `@pytest.mark.slow` marks the costlier variants.
"""

from __future__ import annotations

import errno
import json
import logging
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

from _reliability_tally import record
from _short_run import SHORT_RUN_BINDINGS, TOTAL_STEPS
from atlas_t5x import checkpoints, logio, run_lock, trainer
from atlas_t5x.data import synthetic  # noqa: F401  registers make_synthetic_pipeline

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("aa", "bb", "cc")
BINDINGS = [*SHORT_RUN_BINDINGS, "train.callbacks = [@atlas_fault_tests.FakeEval()]"]


@gin.configurable(module="atlas_fault_tests")
class FakeEval:
    """Stands in for PerLanguageEval: every 2 steps one eval.jsonl row per target, skipping rows
    already logged (as EvalLogWriter does), the value a deterministic function of the parameters.

    Fault hooks: at `kill_at`, after `kill_after_targets` rows (and once checkpoint
    `after_checkpoint` has committed) the process SIGKILLs itself; with `kill_in_save`, the
    checkpoint save of step `kill_at` is started and the process killed while it writes. With
    `full_disk_from_save = k`, the k-th checkpoint save and every later one fail in orbax's
    background thread with OSError(ENOSPC), as on a full disk.
    """

    def __init__(self, every_steps: int = 2, kill_at: int | None = None, kill_after_targets: int = 0,
                 after_checkpoint: int | None = None, kill_in_save: bool = False,
                 full_disk_from_save: int | None = None):
        self.every_steps = every_steps
        self.kill_at, self.kill_after_targets = kill_at, kill_after_targets
        self.after_checkpoint, self.kill_in_save = after_checkpoint, kill_in_save
        if full_disk_from_save is not None:
            _fill_disk_from_save(full_disk_from_save)

    def __call__(self, ctx):
        model_dir = Path(ctx.run_info.model_dir)
        path = model_dir / "logs" / "eval.jsonl"
        if self.kill_at == ctx.step and self.after_checkpoint is not None:
            deadline = time.time() + 60
            while self.after_checkpoint not in checkpoints.complete_steps(model_dir / "checkpoints"):
                assert time.time() < deadline, "checkpoint never committed"
                time.sleep(0.05)
        if self.kill_at == ctx.step and self.kill_in_save:
            original = checkpoints.TrainCheckpointer.save

            def save_then_die(ckpt, *args, **kwargs):
                original(ckpt, *args, **kwargs)  # async: the write is under way in the background
                os.kill(os.getpid(), signal.SIGKILL)

            checkpoints.TrainCheckpointer.save = save_then_die
        done = {(r["step"], r["target"]) for r in logio.read_jsonl(path)} if path.exists() else set()
        value = float(sum(float(np.sum(np.asarray(jax.device_get(x), np.float64)))
                          for x in jax.tree.leaves(ctx.state.params)))
        for i, target in enumerate(TARGETS):
            if self.kill_at == ctx.step and not self.kill_in_save and i == self.kill_after_targets:
                os.kill(os.getpid(), signal.SIGKILL)
            if (ctx.step, target) not in done:
                logio.append_jsonl(path, [{"run": ctx.run_info.run, "step": ctx.step, "target": target,
                                           "loss": value + i}])


def _fill_disk_from_save(first: int, monkeypatch=None) -> None:
    """Makes the `first`-th checkpoint save and all later ones fail with ENOSPC (orbax writes each
    save's JSON items in its background threads; the meta item is written once per save). With
    `monkeypatch` the change is undone after the test."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    handler = json_checkpoint_handler.JsonCheckpointHandler
    original, saves = handler._save_fn, []

    async def full_disk(self, x, directory):
        if isinstance(x, dict) and "format" in x:
            saves.append(directory)
        if len(saves) >= first:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / self._filename))
        return await original(self, x, directory)

    if monkeypatch is not None:
        monkeypatch.setattr(handler, "_save_fn", full_disk)
    else:
        handler._save_fn = full_disk


def _train_in_process(model_dir: Path, extra: list[str] = ()) -> trainer.TrainResult:
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO))
    try:
        gin.parse_config_files_and_bindings([str(REPO / "gin/runs/smoke.gin")], BINDINGS + list(extra))
        return trainer.train(str(model_dir))
    finally:
        gin.clear_config()


def _train_cli(model_dir: Path, extra: list[str] = (), wait: bool = True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    bindings = [f"--gin_bindings={b}" for b in ["import test_faults", *BINDINGS, *extra]]
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts/train.py"), "--gin_file=gin/runs/smoke.gin",
                             f"--model_dir={model_dir}", *bindings],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_bindings(step: int, after_targets: int = 0, after_checkpoint: int | None = None,
                   in_save: bool = False) -> list[str]:
    return [f"atlas_fault_tests.FakeEval.kill_at = {step}",
            f"atlas_fault_tests.FakeEval.kill_after_targets = {after_targets}",
            f"atlas_fault_tests.FakeEval.after_checkpoint = {after_checkpoint}",
            f"atlas_fault_tests.FakeEval.kill_in_save = {in_save}"]


def _logs(model_dir: Path) -> tuple[dict[int, float], dict[tuple[int, str], float], list[str]]:
    """(train loss by step, eval value by (step, target), problems: repeated keys)."""
    problems = []
    train_rows = logio.read_jsonl(model_dir / "logs" / "train.jsonl")
    steps = [r["step"] for r in train_rows]
    if len(steps) != len(set(steps)):
        problems.append(f"train.jsonl repeats steps: {steps}")
    eval_path = model_dir / "logs" / "eval.jsonl"
    eval_rows = logio.read_jsonl(eval_path) if eval_path.exists() else []
    keys = [(r["step"], r["target"]) for r in eval_rows]
    if len(keys) != len(set(keys)):
        problems.append(f"eval.jsonl repeats (step, target): {keys}")
    return ({r["step"]: r["loss"] for r in train_rows}, {(r["step"], r["target"]): r["loss"] for r in eval_rows},
            problems)


def _assert_matches_reference(model_dir: Path, reference: Path, fault: str) -> None:
    """Every reference row present with its exact value, nothing repeated; tallies the fault."""
    train, evals, problems = _logs(model_dir)
    ref_train, ref_evals, _ = _logs(reference)
    lost = len(set(ref_train) - set(train)) + len(set(ref_evals) - set(evals))
    survived = not problems and train == ref_train and evals == ref_evals
    record("fault", fault, tried=1, ok=int(survived), rows_lost=lost)
    assert not problems, problems
    assert train == ref_train, f"{fault}: train losses differ: {train} vs {ref_train}"
    assert evals == ref_evals, f"{fault}: eval rows differ"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("reference")
    result = _train_in_process(model_dir)
    assert result.step == TOTAL_STEPS
    assert checkpoints.complete_steps(model_dir / "checkpoints") == [6, 8]
    train, evals, problems = _logs(model_dir)
    assert not problems and sorted(train) == list(range(1, TOTAL_STEPS + 1))
    assert sorted({s for s, _ in evals}) == [2, 4, 6, 8]
    return model_dir


# ------------------------------------------------------------------------------- killed runs


def test_killed_before_the_first_checkpoint_restarts_with_exactly_its_own_rows(reference, tmp_path):
    model_dir = tmp_path / "run"
    # Killed at step 2's evaluation, after 2 of 3 rows: no checkpoint yet (the first is at 3).
    proc = _train_cli(model_dir, _kill_bindings(2, after_targets=2))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoints.complete_steps(model_dir / "checkpoints") == []
    train, evals, _ = _logs(model_dir)
    assert sorted(train) == [1, 2] and len(evals) == 2
    # A stale prediction log of the dead attempt goes too.
    logio.append_jsonl(model_dir / "logs" / "live_prediction.jsonl", [{"run": "run", "step": 2, "target": "aa"}])

    _train_in_process(model_dir)  # a fresh start: the dead attempt's rows are not kept
    _assert_matches_reference(model_dir, reference, "kill before first checkpoint")
    assert logio.read_jsonl(model_dir / "logs" / "live_prediction.jsonl") == []


def test_killed_during_evaluation_resumes_without_losing_or_repeating_rows(reference, tmp_path):
    model_dir = tmp_path / "run"
    # Killed at step 4's evaluation after 1 of 3 rows, once checkpoint 3 has committed.
    proc = _train_cli(model_dir, _kill_bindings(4, after_targets=1, after_checkpoint=3))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoints.complete_steps(model_dir / "checkpoints") == [3]
    _train_in_process(model_dir)
    _assert_matches_reference(model_dir, reference, "kill during eval")


@pytest.mark.slow
def test_killed_while_a_checkpoint_is_being_written_resumes_exactly(reference, tmp_path):
    model_dir = tmp_path / "run"
    proc = _train_cli(model_dir, _kill_bindings(6, after_checkpoint=3, in_save=True))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoints.complete_steps(model_dir / "checkpoints")[0] == 3  # 6 may or may not have committed
    _train_in_process(model_dir)
    _assert_matches_reference(model_dir, reference, "kill during save")


def test_a_full_disk_during_a_checkpoint_stops_cleanly_and_loses_only_the_steps_since_the_last(
        reference, tmp_path, monkeypatch, caplog):
    model_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        _fill_disk_from_save(2, patch)   # checkpoint 3 commits, checkpoint 6 finds the disk full
        with caplog.at_level(logging.INFO), pytest.raises(checkpoints.CheckpointWriteError) as err:
            _train_in_process(model_dir)
    assert str(err.value).startswith(f"checkpoint 6 could not be written under {model_dir / 'checkpoints'}: "
                                     "No space left on device")
    assert "last complete checkpoint is step 3" in str(err.value)
    assert isinstance(err.value, OSError)   # atlas-train: one "error:" line and exit 2
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]   # orbax's per-thread tracebacks are dropped
    assert checkpoints.complete_steps(model_dir / "checkpoints") == [3]
    _train_in_process(model_dir)  # space again: resumes from checkpoint 3, nothing lost or doubled
    _assert_matches_reference(model_dir, reference, "disk full during a checkpoint (in process)")


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_prints_one_message_from_the_command_line(reference, tmp_path):
    model_dir = tmp_path / "run"
    # The second checkpoint (step 6) finds the disk full; checkpoint 3 has committed.
    proc = _train_cli(model_dir, ["atlas_fault_tests.FakeEval.full_disk_from_save = 2"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    other = [l for l in proc.stderr.splitlines() if "train_progress.py" not in l and "trainer.py" not in l]
    message = (f"checkpoint 6 could not be written under {model_dir / 'checkpoints'}: No space left on device "
               f"({model_dir / 'checkpoints'}/6.orbax-checkpoint-tmp/meta")
    ok = ("Traceback" not in proc.stderr and proc.stderr.count("No space left on device") == 1
          and message in proc.stderr and f"last complete checkpoint is step 3 ({model_dir / 'checkpoints' / '3'})"
          in proc.stderr and len(other) <= 3)
    record("fault", "disk full during a checkpoint: one message, exit 2", tried=1, ok=int(ok))
    assert ok, proc.stderr[-3000:]
    assert checkpoints.complete_steps(model_dir / "checkpoints") == [3]

    _train_in_process(model_dir)  # space again: resumes from checkpoint 3, nothing lost or doubled
    _assert_matches_reference(model_dir, reference, "disk full during a checkpoint")


def test_a_checkpoint_write_error_is_found_behind_orbax_wrappers():


    full = OSError(errno.ENOSPC, "No space left on device", "/ckpt/6/meta")
    try:
        try:
            raise full
        except OSError as err:
            raise RuntimeError("Save Finalize thread failed") from err
    except RuntimeError as wrapped:
        assert checkpoints.disk_error(wrapped) is full
    assert checkpoints.disk_error(RuntimeError("cannot schedule new futures after shutdown")) is None
    assert checkpoints.disk_error(checkpoints.CheckpointCorruptError("truncated")) is None


# ------------------------------------------------------------------------------- one writer


def test_a_second_trainer_is_refused_naming_the_owner_and_writes_nothing(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    with run_lock.ModelDirLock(model_dir) as held:  # another trainer, as far as the CLI can tell
        before = _snapshot(model_dir)
        proc = _train_cli(model_dir)
        assert _snapshot(model_dir) == before
    ok = proc.returncode == 2 and f"pid {os.getpid()}" in proc.stderr and "Traceback" not in proc.stderr
    record("fault", "second trainer on a held model_dir", tried=1, ok=int(ok))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"in use by another trainer (pid {os.getpid()} on host {held.host!r}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (model_dir / "RUN_LOCK.json").exists()


@pytest.mark.slow
def test_two_trainers_started_together_one_runs_one_is_refused(reference, tmp_path):
    model_dir = tmp_path / "run"
    procs = [_train_cli(model_dir, wait=False) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(rc for _, _, rc in results)
    assert codes == [0, 2], [err[-1500:] for _, err, _ in results]
    refused = next(err for _, err, rc in results if rc == 2)
    assert "in use by another trainer" in refused
    _assert_matches_reference(model_dir, reference, "concurrent start")


@pytest.mark.slow
def test_a_held_model_dir_stops_every_process_of_a_multi_host_job(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    with run_lock.ModelDirLock(model_dir):
        procs = [subprocess.Popen(
            [sys.executable, str(REPO / "scripts/train.py"), "--gin_file=gin/runs/smoke.gin",
             f"--model_dir={model_dir}", "--gin.MeshConfig.data=2", "--gin.MeshConfig.fsdp=2",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        try:
            results = [p.communicate(timeout=300) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    ok = all(p.returncode == 2 and f"pid {os.getpid()}" in err for p, (_, err) in zip(procs, results))
    record("fault", "multi-host job on a held model_dir", tried=1, ok=int(ok))
    assert ok, [err[-1500:] for _, err in results]
    assert not (model_dir / "logs").exists()


def test_a_lock_file_of_a_dead_pid_is_taken_over(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    now = time.time()
    stale = run_lock.LockOwner(host=run_lock.socket.gethostname(), pid=int(dead.stdout), started=now, renewed=now,
                               lease_s=3600, token="dead")
    (tmp_path / run_lock.LOCK_NAME).write_text(stale.to_json())
    with caplog.at_level(logging.WARNING), run_lock.ModelDirLock(tmp_path) as lock:
        assert lock.owner.pid == os.getpid()
    assert f"pid {int(dead.stdout)} no longer runs" in caplog.text
    assert not (tmp_path / run_lock.LOCK_NAME).exists()


@pytest.mark.slow
def test_a_lock_left_by_a_dead_process_is_taken_over(reference, tmp_path, caplog):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    now = time.time()
    stale = run_lock.LockOwner(host=run_lock.socket.gethostname(), pid=dead_pid, started=now, renewed=now,
                               lease_s=3600, token="dead")
    (model_dir / run_lock.LOCK_NAME).write_text(stale.to_json())
    with caplog.at_level(logging.WARNING):
        _train_in_process(model_dir)
    assert f"pid {dead_pid} no longer runs" in caplog.text
    assert not (model_dir / run_lock.LOCK_NAME).exists()  # released at the end
    _assert_matches_reference(model_dir, reference, "stale lock of a killed trainer")


def test_stale_lock_detection_by_pid_liveness_reuse_and_lease():
    host, now = run_lock.socket.gethostname(), time.time()
    mine = run_lock.LockOwner(host=host, pid=os.getpid(), started=now, renewed=now, lease_s=60, token="t")
    assert run_lock.stale_reason(mine, now, host) is None
    # Our pid, but the lock predates this process: the pid was reused by a newer process.
    started = run_lock.process_start_time(os.getpid())
    reused = run_lock.dataclasses.replace(mine, started=started - 100, renewed=now)
    assert "newer process" in run_lock.stale_reason(reused, now, host)
    # Another host: its pid cannot be checked here, only its lease.
    remote = run_lock.dataclasses.replace(mine, host="elsewhere", pid=999_999_999)
    assert run_lock.stale_reason(remote, now + 59, host) is None
    assert "lease ran out" in run_lock.stale_reason(remote, now + 61, host)


def test_an_unreadable_lock_record_is_live_briefly_then_stale(tmp_path):
    lock_file = tmp_path / run_lock.LOCK_NAME
    lock_file.write_text('{"host": "a", "pi')  # a trainer died (or is) writing its record
    with pytest.raises(run_lock.RunLockedError, match="unreadable record"):
        run_lock.ModelDirLock(tmp_path).acquire()
    old = time.time() - 60
    os.utime(lock_file, (old, old))
    with run_lock.ModelDirLock(tmp_path) as lock:
        assert run_lock.LockOwner.from_json(lock_file.read_text()).token == lock.owner.token
    assert not lock_file.exists()


def test_lease_protocol_on_an_object_store_stand_in(tmp_path):
    # gs:// has no exclusive create: the lease protocol, exercised on a local folder.
    folder = tmp_path / "bucket_run"
    first = run_lock.ModelDirLock(folder, lease_s=0.6, lease_mode=True, settle_s=0.01).acquire()
    owner = json.loads((folder / run_lock.LOCK_NAME).read_text())
    assert {"host", "pid", "started", "started_utc", "renewed", "lease_s", "token"} <= set(owner)
    with pytest.raises(run_lock.RunLockedError, match=f"pid {os.getpid()} on host"):
        run_lock.ModelDirLock(folder, lease_s=0.6, lease_mode=True, settle_s=0.01).acquire()
    time.sleep(0.5)  # the holder renews every lease_s / 3
    assert json.loads((folder / run_lock.LOCK_NAME).read_text())["renewed"] > owner["renewed"]

    # A holder that stopped renewing (another host, say) loses the lease once it runs out.
    first._stop.set()
    first._renewer.join()
    held = run_lock.LockOwner.from_json((folder / run_lock.LOCK_NAME).read_text())
    (folder / run_lock.LOCK_NAME).write_text(run_lock.dataclasses.replace(held, host="elsewhere").to_json())
    with pytest.raises(run_lock.RunLockedError):
        run_lock.ModelDirLock(folder, lease_s=0.6, lease_mode=True, settle_s=0.01).acquire()
    time.sleep(0.7)
    second = run_lock.ModelDirLock(folder, lease_s=60, lease_mode=True, settle_s=0.01).acquire()
    first.release()  # the old holder's release must not remove the new holder's lease
    assert run_lock.LockOwner.from_json((folder / run_lock.LOCK_NAME).read_text()).token == second.owner.token
    second.release()
    assert not (folder / run_lock.LOCK_NAME).exists()


def test_lock_of_a_fresh_model_dir_that_fails_early_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="train.total_steps must be an integer, got 'abc'"):
        _train_in_process(tmp_path / "new", ["train.total_steps = 'abc'"])
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------- damaged checkpoints


def _truncate_largest_array_file(step_dir: Path) -> Path:
    arrays = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    victim = max(arrays, key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:100])
    return victim


def _truncate_every_file(step_dir: Path) -> Path:
    for p in step_dir.rglob("*"):
        if p.is_file():
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return step_dir / "_CHECKPOINT_METADATA"


def _truncate_array_file_unrecorded(step_dir: Path) -> Path:
    """A checkpoint without atlas_files.json (killed before recording it): orbax's read fails."""
    (step_dir / checkpoints.FILES_MANIFEST).unlink()
    _truncate_largest_array_file(step_dir)
    return step_dir  # the error names the array, not the file


def _garble_metadata(step_dir: Path) -> Path:
    path = step_dir / "meta" / "metadata"
    path.write_text("{garbage")
    return path


@pytest.mark.parametrize("damage", [_truncate_largest_array_file, _truncate_every_file, _garble_metadata,
                                    pytest.param(_truncate_array_file_unrecorded, marks=pytest.mark.slow)],
                         ids=["truncated_array_file", "all_files_truncated", "garbage_metadata",
                              "truncated_array_file_unrecorded"])
def test_damaged_newest_checkpoint_is_moved_aside_and_the_previous_one_restored(reference, tmp_path, caplog,
                                                                                 damage):
    model_dir = tmp_path / reference.name   # the run's own name: a copy under another is refused (resume.py)
    shutil.copytree(reference, model_dir)
    folder = model_dir / "checkpoints"
    bad_file = damage(folder / "8")
    damaged = _snapshot(folder / "8")
    logio.write_atomic(model_dir / "logs" / "train.jsonl",  # as if killed right after checkpoint 8
                       logio.to_jsonl(logio.read_jsonl(reference / "logs" / "train.jsonl")))

    with caplog.at_level(logging.WARNING):
        result = _train_in_process(model_dir)
    assert result.step == TOTAL_STEPS
    assert str(bad_file) in caplog.text  # the log names the damaged file
    moved = [p for p in folder.iterdir() if p.name.startswith("8.corrupt-")]
    assert len(moved) == 1 and _snapshot(moved[0]) == damaged  # kept as it was, not deleted
    assert checkpoints.complete_steps(folder) == [6, 8]  # resumed from 6, wrote 8 again
    _assert_matches_reference(model_dir, reference, f"corrupt newest checkpoint ({damage.__name__})")


def test_no_restorable_checkpoint_stops_naming_each_one_and_changes_nothing(reference, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(reference, model_dir)
    _truncate_largest_array_file(model_dir / "checkpoints" / "8")
    _garble_metadata(model_dir / "checkpoints" / "6")
    before = _snapshot(model_dir)
    with pytest.raises(checkpoints.NoRestorableCheckpointError) as err:
        _train_in_process(model_dir)
    message = str(err.value)
    ok = all(s in message for s in ("checkpoints/8: ", "checkpoints/6: ", "truncated", "metadata"))
    record("fault", "every checkpoint damaged: exit 2 naming each", tried=1, ok=int(ok and _snapshot(model_dir) == before))
    assert "checkpoints/8: " in message and "truncated" in message
    assert str(model_dir / "checkpoints" / "6" / "meta" / "metadata") in message
    assert _snapshot(model_dir) == before

    proc = _train_cli(model_dir)  # the command line: exit 2, each checkpoint named, no traceback
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "no checkpoint under" in proc.stderr and "checkpoints/8: " in proc.stderr and "checkpoints/6: " in proc.stderr
    assert _snapshot(model_dir) == before


def test_a_damaged_finetune_source_is_named(reference, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(reference, source)
    bad = _truncate_largest_array_file(source / "checkpoints" / "8")
    with pytest.raises(checkpoints.CheckpointCorruptError, match="truncated") as err:
        _train_in_process(tmp_path / "finetune", [f"train.init_from = '{source}'"])
    assert str(bad) in str(err.value)


def test_checkpoint_files_are_recorded_and_verified(reference, tmp_path):
    step_dir = tmp_path / "8"
    shutil.copytree(reference / "checkpoints" / "8", step_dir)
    recorded = json.loads((step_dir / checkpoints.FILES_MANIFEST).read_text())
    assert "state/_METADATA" in recorded and "meta/metadata" in recorded
    checkpoints.verify_checkpoint(step_dir)
    (step_dir / "pipeline" / "metadata").unlink()
    with pytest.raises(checkpoints.CheckpointCorruptError, match=r"pipeline/metadata: missing"):
        checkpoints.verify_checkpoint(step_dir)


# ------------------------------------------------------------------------------- inputs checked at start


class _BadEvalData:
    every_steps = 2

    def check_inputs(self, run_info, model_config):
        raise ValueError(f"eval shard of 'cy' is corrupt (run {run_info.run}, V={model_config.vocab_size})")

    def __call__(self, ctx):
        raise AssertionError("evaluated although its data failed the start check")


def test_evaluation_data_is_checked_before_step_0(tmp_path):
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO))
    try:
        gin.parse_config_files_and_bindings([str(REPO / "gin/runs/smoke.gin")], BINDINGS[:-1])
        with pytest.raises(ValueError, match="eval shard of 'cy' is corrupt"):
            trainer.train(str(tmp_path / "run"), callbacks=[_BadEvalData()])
    finally:
        gin.clear_config()
    assert not (tmp_path / "run" / "logs").exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_per_language_eval_start_check_reads_eval_only_languages(tmp_path):
    from atlas_t5x.callbacks import RunInfo
    from atlas_t5x.data import madlad
    from atlas_t5x.eval.callback import PerLanguageEval

    corpus = tmp_path / "corpus"
    shutil.copytree(madlad.resolve_madlad_dir(None), corpus)
    shard = sorted((corpus / "cy").glob("*.jsonl.gz"))[0]
    shard.write_bytes(shard.read_bytes()[:200])  # a truncated gzip shard of an eval-only language
    from atlas_t5x.data import vocab as vocab_lib

    vocab_size = vocab_lib.model_vocab_size("corpus_spm")
    info = RunInfo(run="r", mixture_name="monolingual_en", mixture_weights={"en": 1.0}, init="scratch",
                   vocab="corpus_spm", vocab_size=vocab_size, seq_len=32, global_batch=8, scale="tiny0",
                   model_dir=str(tmp_path / "run"))

    class Config:
        pass

    Config.vocab_size = vocab_size
    def evaluator(languages):
        return PerLanguageEval(every_steps=5, languages=languages, token_budget=256, corpus_root=str(corpus),
                               tensorboard=False)

    evaluator(["en"]).check_inputs(info, Config())  # the training language alone is fine
    with pytest.raises((ValueError, OSError)) as err:  # what train.py reports as bad input (exit 2)
        evaluator(["en", "cy"]).check_inputs(info, Config())
    assert "cy" in str(err.value)
