"""Safe resume (atlas_t5x/resume.py): a restart with another schedule, mixture, vocabulary or
init_from is refused listing every change, unless allowed (then logged and recorded); extending a
WSD run continues its stable phase; every start is kept in config_history/.

Runs are gin/runs/smoke.gin shortened by tests/_short_run.py (8 steps, a checkpoint every 3).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atlas_t5x import checkpoints, logio, resume, trainer
from _short_run import SHORT_RUN_BINDINGS, TOTAL_STEPS, snapshot, train_smoke_run

REPO = Path(__file__).resolve().parents[1]
PEAK_LR = 3e-3  # gin/runs/smoke.gin


class _Crash(Exception):
    pass


class CrashAtStep:
    """Test callback: raises at `step` (after the checkpoints before it were written)."""

    every_steps = 1

    def __init__(self, step: int):
        self.step = step

    def __call__(self, ctx):
        if ctx.step == self.step:
            raise _Crash(f"crash at step {ctx.step}")


class RecordLr:
    """Test callback: the learning rate and phase of the last update, per step."""

    every_steps = 1

    def __init__(self):
        self.seen: dict[int, tuple[float, str]] = {}

    def __call__(self, ctx):
        self.seen[ctx.step] = (ctx.lr, ctx.schedule_phase)


def _train(model_dir: Path, extra: list[str] = (), **kwargs) -> trainer.TrainResult:
    return train_smoke_run(model_dir, SHORT_RUN_BINDINGS + list(extra), **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A run that completed its 8 steps (checkpoints 6 and 8)."""
    model_dir = tmp_path_factory.mktemp("finished")
    _train(model_dir)
    return model_dir


def test_checkpoint_records_the_resume_settings(finished):
    meta = checkpoints.read_metadata(finished / "checkpoints", TOTAL_STEPS)
    settings = meta["resume_settings"]
    assert settings["schedule.kind"] == "wsd" and settings["schedule.peak_lr"] == PEAK_LR
    assert (settings["schedule.total_steps"], settings["schedule.warmup_steps"]) == (TOTAL_STEPS, 2)
    assert settings["schedule.decay_fraction"] == 0.1
    assert settings["mixture.weights"] == pytest.approx({"en": 0.5, "fr": 0.3, "sw": 0.2})
    assert settings["mixture.languages"] == ["en", "fr", "sw"]
    assert (settings["vocab.name"], settings["vocab.size"], settings["init_from"]) == ("synthetic", 256, None)
    assert meta["config_changes"] == []


def test_changed_schedule_mixture_and_vocabulary_are_refused_listing_each(finished, tmp_path):
    model_dir = tmp_path / finished.name   # a copy under the run's own name (another name is refused)
    shutil.copytree(finished, model_dir)
    before = snapshot(model_dir)
    changes = ["train.total_steps = 16", "make_schedule.kind = 'cosine'", "make_schedule.peak_lr = 1e-3",
               "make_schedule.warmup_steps = 3", "make_schedule.decay_fraction = 0.2",
               "make_synthetic_pipeline.languages = ('en', 'fr')", "make_synthetic_pipeline.weights = (0.5, 0.5)",
               "make_synthetic_pipeline.vocab_size = 200"]
    with pytest.raises(resume.ConfigChangedError) as err:
        _train(model_dir, changes)
    message = str(err.value)
    for line in ("schedule.kind (make_schedule.kind): 'wsd' -> 'cosine'",
                 "schedule.peak_lr (make_schedule.peak_lr): 0.003 -> 0.001",
                 "schedule.total_steps (train.total_steps): 8 -> 16",
                 "schedule.warmup_steps (make_schedule.warmup_steps): 2 -> 3",
                 "schedule.decay_fraction (make_schedule.decay_fraction): 0.1 -> 0.2",
                 "mixture.languages: ['en', 'fr', 'sw'] -> ['en', 'fr']",
                 "mixture.weights: {en: 0.5, fr: 0.3, sw: 0.2} -> {en: 0.5, fr: 0.5}",
                 "vocab.size: 256 -> 200"):
        assert line in message, message
    assert "train.allow_config_change" in message and "checkpoints/8" in message
    assert snapshot(model_dir) == before  # nothing written: no log trimmed, no config, no history entry

    # One setting alone is named alone; unchanged ones are not listed.
    with pytest.raises(resume.ConfigChangedError) as err:
        _train(model_dir, ["make_schedule.final_lr_fraction = 0.1"])
    assert [l for l in str(err.value).splitlines() if " -> " in l] == [
        "  schedule.final_lr_fraction (make_schedule.final_lr_fraction): 0 -> 0.1"]

    # Fewer total steps than the checkpoint's are refused even when changes are allowed.
    with pytest.raises(resume.ConfigChangedError, match=r"total_steps = 6 is below the step of checkpoint .*8"):
        _train(model_dir, ["train.total_steps = 6", "train.allow_config_change = True"])
    assert snapshot(model_dir) == before

    # The same settings resume (a finished run: nothing to train) and add a history entry.
    result = _train(model_dir)
    assert result.step == TOTAL_STEPS
    names = [p.name for p in resume.history(model_dir)]
    assert len(names) == 2 and names[0].endswith("-step0.gin") and names[1].endswith("-step8.gin"), names


class RecordRun:
    """Test callback: the run name and run id the trainer gives its callbacks."""

    every_steps = 1

    def __init__(self):
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, ctx):
        self.seen.add((ctx.run_info.run, ctx.run_info.run_id))


def test_a_copied_run_folder_resumes_under_another_name_only_when_allowed(finished, tmp_path):
    meta = checkpoints.read_metadata(finished / "checkpoints", TOTAL_STEPS)
    run_id = meta["run_info"]["run_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", run_id) and meta["run_info"]["run"] == finished.name

    copy = tmp_path / "renamed"
    shutil.copytree(finished, copy)
    before = snapshot(copy)
    with pytest.raises(resume.RunRenamedError) as err:
        _train(copy)
    message = str(err.value)
    for part in (f"run {finished.name!r}", "names the run 'renamed'", "train.allow_run_rename = True",
                 run_id, str(copy / "checkpoints" / str(TOTAL_STEPS)), "Nothing was written"):
        assert part in message, message
    assert isinstance(err.value, resume.ConfigChangedError)   # a ValueError: exit 2 from atlas-train
    assert snapshot(copy) == before

    # Allowed: the run continues under the new name and keeps its run id (checkpoint and callbacks).
    record = RecordRun()
    result = _train(copy, ["train.allow_run_rename = True", "train.total_steps = 10",
                           "train.allow_config_change = True"], callbacks=[record])
    assert result.step == 10 and record.seen == {("renamed", run_id)}
    meta = checkpoints.read_metadata(copy / "checkpoints", 10)["run_info"]
    assert (meta["run"], meta["run_id"]) == ("renamed", run_id)

    # The copy under the run's own name resumes without the binding; a fresh start draws a new id.
    same = tmp_path / "elsewhere" / finished.name
    shutil.copytree(finished, same)
    assert _train(same).step == TOTAL_STEPS
    fresh = RecordRun()
    _train(tmp_path / "fresh", ["train.total_steps = 4"], callbacks=[fresh])
    (name, fresh_id), = fresh.seen
    assert name == "fresh" and re.fullmatch(r"[0-9a-f]{16}", fresh_id) and fresh_id != run_id


def test_run_ids_of_checkpoints_written_before_them_are_derived_and_shared_by_copies():
    meta = {"run_info": {"run": "mono-en"}, "total_steps": 8, "resume_settings": {"schedule.total_steps": 8}}
    first = resume.run_id_for_start(meta, "mono-en")
    assert first.startswith("legacy-") and first == resume.run_id_for_start(dict(meta), "mono-en")
    assert resume.run_id_for_start(meta, "mono-en-copy", allow_run_rename=True) == first   # a copy: the same id
    other = {**meta, "run_info": {"run": "mono-fr"}}
    assert resume.run_id_for_start(other, "mono-fr") != first
    with pytest.raises(resume.RunRenamedError, match="'mono-en'.*'mono-en-copy'"):
        resume.run_id_for_start(meta, "mono-en-copy")
    assert resume.run_id_for_start({**meta, "run_info": {"run": "mono-en", "run_id": "00ff"}}, "mono-en") == "00ff"
    assert resume.new_run_id() != resume.new_run_id()


def test_extending_a_wsd_run_in_its_stable_phase_continues_at_the_stable_lr_then_decays(tmp_path, caplog):
    model_dir = tmp_path / "wsd"
    # 8 steps with the decay over the last quarter (steps 6..8); stopped at step 5, checkpoint 3.
    schedule = ["make_schedule.decay_fraction = 0.25"]
    with pytest.raises(_Crash):
        _train(model_dir, schedule, callbacks=[CrashAtStep(5)])
    assert checkpoints.complete_steps(model_dir / "checkpoints") == [3]

    with pytest.raises(resume.ConfigChangedError, match=r"schedule.total_steps \(train.total_steps\): 8 -> 16"):
        _train(model_dir, schedule + ["train.total_steps = 16"])

    lrs = RecordLr()
    with caplog.at_level(logging.INFO):
        result = _train(model_dir, schedule + ["train.total_steps = 16", "train.allow_config_change = True"],
                        callbacks=[lrs])
    assert result.step == 16
    # Right after the resume the LR is the stable one (no re-warm: the warmup would start near 0).
    assert lrs.seen[4] == (pytest.approx(PEAK_LR), "stable")
    # Stable until the new decay start (16 - 4 = 12), then a linear decay to 0 at step 16.
    assert all(lrs.seen[s] == (pytest.approx(PEAK_LR), "stable") for s in range(4, 13))
    assert [round(lrs.seen[s][0] / PEAK_LR, 6) for s in range(13, 17)] == [1.0, 0.75, 0.5, 0.25]
    assert lrs.seen[16][1] == "final" and lrs.seen[15][1] == "decay"
    logged = caplog.text
    assert "changed setting (train.allow_config_change): schedule.total_steps (train.total_steps): 8 -> 16" in logged
    assert "the learning rate continues at 0.003" in logged and "until step 12, then decay to step 16" in logged
    assert "resumed from checkpoint" in logged and "at step 3/16" in logged

    # Recorded: in the checkpoint metadata and the history entry of this start.
    meta = checkpoints.read_metadata(model_dir / "checkpoints", 16)
    assert meta["config_changes"] == [{"step": 3, "setting": "schedule.total_steps", "old": 8, "new": 16}]
    assert meta["resume_settings"]["schedule.total_steps"] == 16
    entries = resume.history(model_dir)
    assert [p.name[:5] for p in entries] == ["0001-", "0002-"]  # the refused start left no entry
    assert entries[0].name.endswith("-step0.gin") and entries[1].name.endswith("-step3.gin")
    latest = entries[1].read_text()
    assert "step 3: resumed from " in latest.splitlines()[0]
    assert "# changed by train.allow_config_change: schedule.total_steps (train.total_steps): 8 -> 16" in latest
    assert "train.total_steps = 16" in latest and "train.total_steps = 8" in entries[0].read_text()
    assert (model_dir / "config.gin").read_text() in latest  # config.gin: the latest start's config

    # Another restart of the extended run: the settings it now records (16 steps) are the reference.
    with pytest.raises(resume.ConfigChangedError) as err:
        _train(model_dir, schedule + ["train.total_steps = 16", "make_schedule.peak_lr = 1e-3"])
    assert [l for l in str(err.value).splitlines() if " -> " in l] == [
        "  schedule.peak_lr (make_schedule.peak_lr): 0.003 -> 0.001"]


def test_init_from_must_exist_and_match_on_resume(finished, tmp_path):
    source, other = tmp_path / "source", tmp_path / "other"
    shutil.copytree(finished, source)
    shutil.copytree(finished, other)
    model_dir = tmp_path / "finetune"
    finetune = ["train.total_steps = 2", "train.checkpoint_every_steps = 100"]
    _train(model_dir, finetune + [f"train.init_from = '{source}'"])
    meta = checkpoints.read_metadata(model_dir / "checkpoints", 2)
    assert meta["resume_settings"]["init_from"] == str(source)

    with pytest.raises(resume.ConfigChangedError,
                       match=re.escape(f"init_from (train.init_from): '{source}' -> '{other}'")):
        _train(model_dir, finetune + [f"train.init_from = '{other}'"])
    shutil.rmtree(source)
    before = snapshot(model_dir)
    with pytest.raises(FileNotFoundError, match=re.escape(f"no complete checkpoint under {source} ")):
        _train(model_dir, finetune + [f"train.init_from = '{source}'"])
    assert snapshot(model_dir) == before


def test_checkpoints_without_recorded_settings_compare_what_they_have():
    old_meta = {"total_steps": 100, "run_info": {"mixture_name": "12v0", "mixture_weights": {"en": 0.5, "de": 0.5},
                                                 "vocab": "corpus_spm", "init": "scratch"}}
    known = resume.settings_from_metadata(old_meta)
    assert known == {"schedule.total_steps": 100, "mixture.name": "12v0", "mixture.weights": {"en": 0.5, "de": 0.5},
                     "mixture.languages": ["de", "en"], "vocab.name": "corpus_spm"}

    class Pipeline:
        mixture_name, mixture_weights, vocab_name, vocab_size = "12v0", {"de": 0.5, "en": 0.5}, "corpus_spm", 64000

    schedule = {"kind": "wsd", "peak_lr": 2e-4, "warmup_steps": 10, "decay_fraction": 0.1, "final_lr_fraction": 0.0}
    same = resume.resume_settings(schedule, 100, Pipeline(), None)
    assert resume.changed_settings(known, same) == []  # unknown settings (peak LR, ...) are not compared
    longer = resume.resume_settings(schedule, 200, Pipeline(), None)
    assert resume.changed_settings(known, longer) == [("schedule.total_steps", 100, 200)]
    assert resume.check_resume(known, longer, 50, "ckpt/50", allow_config_change=True) == [
        ("schedule.total_steps", 100, 200)]
    # The learning rate under each schedule is known only with every schedule setting recorded.
    assert resume.extension_note(known, longer, 50).startswith("schedule changed at step 50; WSD schedule")
    decayed = resume.extension_note(same, longer, 95)  # step 95 of 100 is in the old decay phase
    assert "jumps from 0.0001 (old schedule) to 0.0002" in decayed


def test_cli_refuses_a_changed_restart_with_exit_2_and_logs_progress_lines(tmp_path):
    model_dir = tmp_path / "cli"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    base = [sys.executable, str(REPO / "scripts/train.py"), "--gin_file=gin/runs/smoke.gin", f"--model_dir={model_dir}",
            *(f"--gin_bindings={b}" for b in SHORT_RUN_BINDINGS), "--gin.train.log_every_steps=2",
            "--gin.train.checkpoint_every_steps=2"]

    def run(*extra):
        return subprocess.run([*base, *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)

    first = run("--gin.train.total_steps=4")  # stdout and stderr are pipes, not a terminal
    assert first.returncode == 0, first.stderr[-3000:]
    lines = [l for l in first.stderr.splitlines() if "train_progress.py" in l]
    assert [l.split("] ", 1)[1].split(":")[0] for l in lines] == ["step 2/4 (50.0%)", "step 4/4 (100.0%)"]
    for line in lines:
        assert line.startswith("I") and all(f in line for f in ("loss ", "nats/token", "lr ", "tokens/s", "MFU ",
                                                                "ETA "))
    assert "starting from scratch: step 0 of 4" in first.stderr
    assert "checkpoint_manager.py" not in first.stderr and "xla_bridge.py" not in first.stderr  # library chatter

    refused = run("--gin.train.total_steps=8", "--gin.make_schedule.peak_lr=1e-3")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert "schedule.total_steps (train.total_steps): 4 -> 8" in refused.stderr
    assert "schedule.peak_lr (make_schedule.peak_lr): 0.003 -> 0.001" in refused.stderr

    allowed = run("--gin.train.total_steps=6", "--gin.train.allow_config_change=True", "--verbose_libraries")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    tokens = {r["step"]: r["tokens"] for r in logio.read_jsonl(model_dir / "logs" / "train.jsonl")}[4]
    assert f"at step 4/6: {tokens:,} training tokens seen" in allowed.stderr
    warned = [l for l in allowed.stderr.splitlines() if "changed setting (train.allow_config_change)" in l]
    assert len(warned) == 1 and warned[0].startswith("W") and "4 -> 6" in warned[0]
    assert "checkpoint_manager.py" in allowed.stderr  # --verbose_libraries: orbax's lines are back
    assert len(resume.history(model_dir)) == 2  # the refused start left no entry
    assert [r["step"] for r in logio.read_jsonl(model_dir / "logs" / "train.jsonl")] == [2, 4, 6]

    # A copy of the folder under another name: exit 2 naming both names and the binding.
    copy = tmp_path / "cli-copy"
    shutil.copytree(model_dir, copy)
    renamed = subprocess.run([*[a.replace(f"--model_dir={model_dir}", f"--model_dir={copy}") for a in base],
                              "--gin.train.total_steps=6"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=240)
    assert renamed.returncode == 2 and "Traceback" not in renamed.stderr, renamed.stderr[-3000:]
    assert "of run 'cli'" in renamed.stderr and "names the run 'cli-copy'" in renamed.stderr
    assert "train.allow_run_rename = True" in renamed.stderr
