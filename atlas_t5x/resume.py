"""Safe resume: the settings a run was started with, compared when it restarts; its config history.

Every checkpoint's metadata holds the run's *resume settings* (`resume_settings`): the learning
rate schedule (kind, peak LR, total steps, warmup, decay fraction, final LR fraction), the mixture
(name, languages, sampling weights), the vocabulary (name or path, pieces) and the finetune source
(`init_from`). Restarting a model_dir compares those structured values with the new ones
(`changed_settings`); any difference stops the run before anything is written
(`ConfigChangedError`, listing every changed setting with its old and new value; exit code 2 from
the command line) unless `train.allow_config_change = True`, in which case each change is logged
as a WARNING and recorded: in the checkpoint metadata (`config_changes`) and in the header of this
start's entry in the config history.

Extending a WSD run (`extension_note`): with `train.total_steps` raised and
`train.allow_config_change = True`, a run resumed inside its warmup or stable phase keeps its
learning rate (the schedule is a function of the update step, and the optimizer's update count is
restored with the state): it stays at the peak LR until the new decay start, then decays to the
new total. Resuming a run that had already started decaying makes the learning rate jump back
up; that is logged with both values.

Run identity (`run_id_for_start`): a fresh start draws a run id (`new_run_id`) which the checkpoint
metadata (`run_info.run_id`) and every eval row (`run_id`, docs/log_schema.md) carry; a resume keeps
it. A model_dir whose checkpoint was written under another run name (a copied or renamed run
folder: the run name defaults to the folder's name) is refused (`RunRenamedError`, exit 2 naming
both names) unless `train.allow_run_rename = True`; the renamed run keeps its run id, so the
fitter recognises the steps it logs again under the new name as the same points
(`atlas_t5x.logs.collapse_renamed_copies`).

Config history: every start writes its operative gin config to
`MODEL_DIR/config_history/<n>-<UTC time>-step<k>.gin` (n counts the starts; written atomically; a
header says how the run started and which changes were allowed), while `MODEL_DIR/config.gin` is
always the latest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import uuid
from typing import Any, Mapping, Sequence

from atlas_t5x import logio

HISTORY_DIR = "config_history"

# The settings compared on resume, in the order a refusal lists them.
SCHEDULE_KEYS = ("kind", "peak_lr", "total_steps", "warmup_steps", "decay_fraction", "final_lr_fraction")
SETTING_NAMES = (
    *(f"schedule.{k}" for k in SCHEDULE_KEYS),
    "mixture.name", "mixture.languages", "mixture.weights",
    "vocab.name", "vocab.size",
    "init_from",
)
# Where each setting is bound in gin, for the messages.
GIN_NAMES = {
    **{f"schedule.{k}": f"make_schedule.{k}" for k in SCHEDULE_KEYS},
    "schedule.total_steps": "train.total_steps",
    "init_from": "train.init_from",
}


class ConfigChangedError(ValueError):
    """A restart of a model_dir with settings that differ from its checkpoint's (message lists each)."""


class RunRenamedError(ConfigChangedError):
    """A model_dir's checkpoint was written under another run name (a copied or renamed run folder)."""


RUN_ID_HEX_DIGITS = 16


def new_run_id() -> str:
    """A fresh run id: 16 random hex digits, the same on every process of a multi-host run."""
    run_id = uuid.uuid4().hex[:RUN_ID_HEX_DIGITS]
    try:
        import jax  # noqa: PLC0415  (only the trainer calls this; the fitter never imports resume)
    except ImportError:
        return run_id
    if jax.process_count() > 1:  # process 0's id for everyone
        import numpy as np  # noqa: PLC0415
        from jax.experimental import multihost_utils  # noqa: PLC0415

        digits = np.frombuffer(bytes.fromhex(run_id), dtype=np.uint8).astype(np.int32)
        digits = np.asarray(multihost_utils.broadcast_one_to_all(digits))
        run_id = bytes(digits.astype(np.uint8).tolist()).hex()
    return run_id


def legacy_run_id(meta: Mapping[str, Any]) -> str:
    """The run id of a checkpoint written before run ids were recorded: derived from what it holds
    (its run name, model and resume settings), so two copies of one such run get the same id."""
    info = meta.get("run_info") or {}
    basis = json.dumps({"run": info.get("run"), "model": meta.get("model_config"),
                        "settings": meta.get("resume_settings"), "total_steps": meta.get("total_steps")},
                       sort_keys=True, default=str)
    return "legacy-" + hashlib.sha256(basis.encode()).hexdigest()[:RUN_ID_HEX_DIGITS]


def run_id_for_start(meta: Mapping[str, Any] | None, run_name: str, where: str = "",
                     allow_run_rename: bool = False) -> str:
    """The run id of this start: the restored checkpoint's (`meta`), else a new one.

    Args:
      meta: the restored checkpoint's metadata, or None on a fresh start or a finetune.
      run_name: this start's run name (train.run_name, default the model_dir's basename).
      where: the checkpoint folder, for the messages.
      allow_run_rename: train.allow_run_rename: resume a checkpoint written under another run
        name (logged as a WARNING); the run keeps its run id.

    Raises:
      RunRenamedError: the checkpoint names another run and renaming is not allowed (nothing has
        been written yet).
    """
    if meta is None:
        return new_run_id()
    info = meta.get("run_info") or {}
    old_name = info.get("run")
    run_id = str(info.get("run_id") or legacy_run_id(meta))
    if old_name is not None and str(old_name) != run_name:
        if not allow_run_rename:
            raise RunRenamedError(
                f"model_dir holds checkpoint {where} of run {str(old_name)!r} (run id {run_id}), but this start "
                f"names the run {run_name!r} (train.run_name defaults to the model_dir's folder name: was the "
                "folder copied or renamed?). Resuming would log the same steps under a second run name. Nothing "
                f"was written. Resume it as {str(old_name)!r} (its own folder name, or "
                f"--gin.train.run_name=\"'{old_name}'\"), or bind train.allow_run_rename = True "
                "(--gin.train.allow_run_rename=True) to continue under the new name (it keeps run id "
                f"{run_id}, so the fitter counts a step logged under both names once)")
        logging.warning("resuming checkpoint %s of run %r under the new name %r (train.allow_run_rename); "
                        "run id %s kept", where, old_name, run_name, run_id)
    return run_id


def resume_settings(schedule_args: Mapping[str, Any], total_steps: int, pipeline: Any,
                    init_from: str | None) -> dict[str, Any]:
    """The settings a resume must not change silently, as JSON-able values keyed by SETTING_NAMES.

    Args:
      schedule_args: make_schedule's arguments (defaults overlaid with gin bindings).
      total_steps: train.total_steps (optimizer updates).
      pipeline: the train pipeline (`mixture_name`, `mixture_weights`, `vocab_name`, `vocab_size`
        where it has them).
      init_from: train.init_from as given (made absolute here), or None.
    """
    weights = {str(k): float(v) for k, v in dict(getattr(pipeline, "mixture_weights", {}) or {}).items()}
    vocab_size = getattr(pipeline, "vocab_size", None)
    settings: dict[str, Any] = {f"schedule.{k}": schedule_args.get(k) for k in SCHEDULE_KEYS}
    settings["schedule.total_steps"] = int(total_steps)
    settings.update({
        "mixture.name": str(getattr(pipeline, "mixture_name", "")),
        "mixture.languages": sorted(weights),
        "mixture.weights": weights,
        "vocab.name": str(getattr(pipeline, "vocab_name", "")),
        "vocab.size": None if vocab_size is None else int(vocab_size),
        "init_from": None if init_from is None else _absolute(init_from),
    })
    return settings


def _absolute(path: str) -> str:
    return path if logio.is_url(path) else os.path.abspath(path)


def settings_from_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The resume settings a checkpoint recorded. Checkpoints written before they were recorded
    give what their run info and step count tell (mixture, vocabulary name, total steps)."""
    if isinstance(meta.get("resume_settings"), Mapping):
        return dict(meta["resume_settings"])
    known: dict[str, Any] = {}
    if "total_steps" in meta:
        known["schedule.total_steps"] = int(meta["total_steps"])
    info = meta.get("run_info") or {}
    if "mixture_name" in info:
        known["mixture.name"] = str(info["mixture_name"])
    if isinstance(info.get("mixture_weights"), Mapping):
        weights = {str(k): float(v) for k, v in info["mixture_weights"].items()}
        known.update({"mixture.weights": weights, "mixture.languages": sorted(weights)})
    if "vocab" in info:
        known["vocab.name"] = str(info["vocab"])
    return known


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return set(old) == set(new) and all(_same(old[k], new[k]) for k in old)
    if isinstance(old, bool) or isinstance(new, bool):
        return old == new
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return math.isclose(float(old), float(new), rel_tol=1e-9, abs_tol=0.0)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new))
    return old == new


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(setting, old value, new value) for each setting of SETTING_NAMES both know and that differs."""
    return [(name, old[name], new[name]) for name in SETTING_NAMES
            if name in old and name in new and not _same(old[name], new[name])]


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def describe_change(name: str, old: Any, new: Any) -> str:
    """`schedule.total_steps (train.total_steps): 8 -> 16`."""
    gin_name = GIN_NAMES.get(name)
    return f"{name}{f' ({gin_name})' if gin_name else ''}: {_show(old)} -> {_show(new)}"


def check_resume(old: Mapping[str, Any], new: Mapping[str, Any], step: int, where: str,
                 allow_config_change: bool) -> list[tuple[str, Any, Any]]:
    """Compares a checkpoint's resume settings with this start's; returns the changes allowed.

    Args:
      old: settings_from_metadata of the checkpoint restored.
      new: resume_settings of this start.
      step: the checkpoint's step (optimizer updates done).
      where: the checkpoint folder, for the messages.
      allow_config_change: train.allow_config_change; the changes are then logged as WARNINGs.

    Raises:
      ConfigChangedError: a setting differs and changes are not allowed (every one is listed), or
        the new total steps are fewer than the checkpoint's step (never allowed).
    """
    changes = changed_settings(old, new)
    total = new.get("schedule.total_steps")
    if total is not None and total < step:
        raise ConfigChangedError(
            f"train.total_steps = {total} is below the step of checkpoint {where} ({step}); a finished "
            f"schedule cannot be shortened (start a new model_dir with train.init_from = '{where}')")
    if not changes:
        return []
    listed = "\n".join(f"  {describe_change(*c)}" for c in changes)
    if not allow_config_change:
        raise ConfigChangedError(
            f"model_dir holds checkpoint {where} (step {step}) written with other settings; this start changes:\n"
            f"{listed}\nNothing was written. Restart with the checkpoint's settings, use a new model_dir, or "
            "bind train.allow_config_change = True (--gin.train.allow_config_change=True) to continue with "
            "the new ones (see README, Training: extending a WSD run)")
    for change in changes:
        logging.warning("resuming %s at step %d with a changed setting (train.allow_config_change): %s",
                        where, step, describe_change(*change))
    return changes


def _schedule_lr(settings: Mapping[str, Any], step: int) -> float | None:
    """Learning rate of update `step` under the schedule in `settings`, None if not all known."""
    from atlas_t5x import optim  # noqa: PLC0415  (optax/jax: only when a schedule changed)

    args = {k: settings.get(f"schedule.{k}") for k in SCHEDULE_KEYS}
    if any(v is None for v in args.values()):
        return None
    return float(optim.make_schedule(**args)(step))


def extension_note(old: Mapping[str, Any], new: Mapping[str, Any], step: int) -> str | None:
    """What an allowed schedule change does to the learning rate from update `step` on (logged),
    or None when no schedule setting changed."""
    if not any(name.startswith("schedule.") for name, _, _ in changed_settings(old, new)):
        return None
    from atlas_t5x import optim  # noqa: PLC0415

    old_lr, new_lr = _schedule_lr(old, step), _schedule_lr(new, step)
    total, kind = new["schedule.total_steps"], new["schedule.kind"]
    if kind == "wsd":
        decay_start = optim.decay_start_step(total, new["schedule.decay_fraction"])
        plan = (f"WSD schedule: stable (peak LR {new['schedule.peak_lr']:g}) until step {decay_start}, then decay "
                f"to step {total}")
    else:
        plan = f"{kind} schedule to step {total}"
    if old_lr is None or new_lr is None:
        return f"schedule changed at step {step}; {plan}"
    if math.isclose(old_lr, new_lr, rel_tol=1e-6, abs_tol=1e-12):
        return f"schedule changed at step {step}: the learning rate continues at {new_lr:.4g}; {plan}"
    return (f"schedule changed at step {step}: the learning rate jumps from {old_lr:.4g} (old schedule) to "
            f"{new_lr:.4g}; {plan}")


def history_header(step: int, how: str, changes: Sequence[tuple[str, Any, Any]], now: dt.datetime) -> str:
    """Comment lines heading one config history entry."""
    lines = [f"# atlas_t5x start at {now.strftime('%Y-%m-%dT%H:%M:%SZ')}, step {step}: {how}"]
    lines += [f"# changed by train.allow_config_change: {describe_change(*c)}" for c in changes]
    return "\n".join(lines) + "\n\n"


def write_history(model_dir: Any, config_text: str, step: int, how: str,
                  changes: Sequence[tuple[str, Any, Any]] = (), now: dt.datetime | None = None) -> Any:
    """Writes this start's operative config to MODEL_DIR/config_history/<n>-<UTC time>-step<k>.gin
    (n = 1, 2, ... in start order; written atomically) and returns its path."""
    now = now or dt.datetime.now(dt.timezone.utc)
    number = len(history(model_dir)) + 1
    path = model_dir / HISTORY_DIR / f"{number:04d}-{now.strftime('%Y%m%dT%H%M%SZ')}-step{step}.gin"
    logio.write_atomic(path, history_header(step, how, changes, now) + config_text)
    return path


def history(model_dir: Any) -> list[Any]:
    """The config history entries of a model_dir (epath/pathlib folder), oldest first."""
    folder = model_dir / HISTORY_DIR
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.endswith(".gin") and p.name[:4].isdigit()),
                  key=lambda p: p.name)
