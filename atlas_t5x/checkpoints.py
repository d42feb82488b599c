"""Checkpoints: an orbax CheckpointManager over (train state, pipeline position, run metadata).

Layout: `MODEL_DIR/checkpoints/<step>/{state,pipeline,meta}` written by orbax (async where the
backend supports it; orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames when the
checkpoint is committed, so a crash leaves no directory that looks complete).

A step directory counts as complete only if orbax's `_CHECKPOINT_METADATA` in it records a commit
time. Anything else under `checkpoints/` (an interrupted write, a folder copied by hand) is skipped
with a warning, and removed before this run writes a checkpoint at the same step.

The `meta` item holds the model config, every parameter's shape and the parameter layout
(`param_layout`: "scanned" blocks under `layers/` or "unrolled" `layer_<i>/`), so a restart
against a checkpoint of a different model or layout fails with an error naming the parameter or
both layouts, before anything is written. It also holds the run's resume settings (schedule,
mixture, vocabulary, init_from), which a restart compares with its own (atlas_t5x/resume.py).
Finetuning (`load_params`) restores the parameters only. The state is an
atlas_t5x.train_state.TrainState.

Corrupt checkpoints heal (`TrainCheckpointer.restore_latest`): once a checkpoint has committed,
process 0 records the size of each of its files in `atlas_files.json`. A restart verifies the
newest checkpoint (file sizes, the JSON records, then the restore itself); if it fails, the bad
file is logged, the folder is moved aside to `<step>.corrupt-<time>` (kept for inspection, never
deleted) and the previous complete checkpoint is tried. Only if none restores does the run stop
(NoRestorableCheckpointError, naming each checkpoint tried and why). A step folder whose commit
record exists but is not readable is moved aside the same way.

A checkpoint that cannot be written (a full disk, a quota, a read-only or vanished folder: an
OSError in orbax's background save threads) stops the run with one CheckpointWriteError naming the
checkpoint, the reason and the last complete checkpoint, from which rerunning the same command
resumes (so at most the steps since that checkpoint are trained again). orbax logs such an error
from each of its threads with a traceback; `_QuietWriteFailures` drops those records (their
exception is reported once, by CheckpointWriteError).

Paths are `etils.epath` paths, so a model_dir may be a local folder (relative ones are made
absolute, as orbax requires) or a cloud URL such as `gs://bucket/run` (kept as given).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import zlib
from typing import TYPE_CHECKING, Any, Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

if TYPE_CHECKING:  # flax/optax: for the annotations only (the sweep launcher imports this module)
    from atlas_t5x.train_state import TrainState

STATE, PIPELINE, META = "state", "pipeline", "meta"
CHECKPOINT_SUBDIR = "checkpoints"
_COMMIT_FILE = "_CHECKPOINT_METADATA"
META_FORMAT = 1


FILES_MANIFEST = "atlas_files.json"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model of this run."""


class CheckpointCorruptError(OSError):
    """A committed checkpoint whose files are damaged (the message names the file)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, quota, permissions); the message says which,
    why, and the checkpoint a rerun resumes from. `errno`: the cause's."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]" prefix
        return str(self.strerror if self.strerror is not None else (self.args[0] if self.args else ""))


def disk_error(err: BaseException) -> OSError | None:
    """The OSError behind `err` (itself, or in its cause/context chain), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and not isinstance(err, CheckpointCorruptError):
            return err
        err = err.__cause__ or err.__context__
    return None


class _QuietWriteFailures(logging.Filter):
    """Drops orbax's error records about a failed checkpoint write (each of its threads logs the same
    OSError with a traceback; TrainCheckpointer reports it once), and, after such a failure, orbax's
    records of the threads that then find the executor shut down."""

    failed = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or "/orbax/" not in record.pathname.replace(os.sep, "/"):
            return True
        if disk_error(exc) is not None:
            _QuietWriteFailures.failed = True
            return False
        # after such a failure: the threads that then find orbax's executor shut down
        return not _QuietWriteFailures.failed


def _install_quiet_write_failures() -> None:
    for name in ("absl", "orbax"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _QuietWriteFailures) for f in target.filters):
            target.addFilter(_QuietWriteFailures())


class NoRestorableCheckpointError(RuntimeError):
    """No complete checkpoint of a run restores (the message names each one tried and why)."""


def param_shapes(params: Any) -> dict[str, list[int]]:
    """{"layer_0/mlp/wi_0/kernel": [d_model, d_ff], ...} for a pytree of (abstract) arrays."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): list(leaf.shape)
        for path, leaf in flat
    }


def param_layout(shapes: Mapping[str, list[int]]) -> str:
    """"scanned" (blocks stacked under ``layers/``), "unrolled" (``layer_0/`` ...) or "none"."""
    if any(name.startswith("layers/") for name in shapes):
        return "scanned"
    if any(name.startswith("layer_") for name in shapes):
        return "unrolled"
    return "none"


def check_param_shapes(expected: Mapping[str, list[int]], found: Mapping[str, list[int]], where: str) -> None:
    """Raises CheckpointMismatchError naming the first differing parameters (missing, extra, shape).

    A checkpoint whose blocks are laid out differently (scanned vs unrolled, see
    ``models.ModelConfig.scan_layers``) gets its own message naming both layouts.
    """
    want_layout, got_layout = param_layout(expected), param_layout(found)
    if "none" not in (want_layout, got_layout) and want_layout != got_layout:
        raise CheckpointMismatchError(
            f"checkpoint {where} holds the {got_layout} parameter layout but this model is {want_layout} "
            f"(ModelConfig.scan_layers = {want_layout == 'scanned'}); set ModelConfig.scan_layers = "
            f"{got_layout == 'scanned'} to use it, or convert the parameters with "
            f"models.{'stack_layers' if want_layout == 'scanned' else 'unstack_layers'}")
    problems = []
    for name in sorted(set(expected) | set(found)):
        want, got = expected.get(name), found.get(name)
        if want is None:
            problems.append(f"parameter {name!r} (shape {got}) is in the checkpoint but not in this model")
        elif got is None:
            problems.append(f"parameter {name!r} (shape {want}) of this model is missing from the checkpoint")
        elif list(want) != list(got):
            problems.append(f"parameter {name!r} has shape {list(got)} in the checkpoint, {list(want)} in this model")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else "")
        raise CheckpointMismatchError(f"checkpoint {where} was written for a different model: {shown}")


def as_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: local paths made absolute (orbax rejects relative ones), URLs
    (`gs://bucket/run`) kept as they are."""
    path = epath.Path(path)
    return path if path.is_absolute() else path.absolute()


def _commit_state(step_dir: epath.Path) -> str:
    """"committed", "absent" (never committed: an interrupted write) or "garbled" (a commit record
    that exists but cannot be read: the folder was damaged after it committed)."""
    record = step_dir / _COMMIT_FILE
    if not record.exists():  # checked first: cloud backends raise their own not-found errors
        return "absent"
    try:
        meta = json.loads(record.read_text())
    except (OSError, ValueError):
        return "garbled"
    if not isinstance(meta, dict):
        return "garbled"
    return "committed" if meta.get("commit_timestamp_nsecs") else "absent"


def _is_committed(step_dir: epath.Path) -> bool:
    return _commit_state(step_dir) == "committed"


def _relative_files(step_dir: epath.Path) -> dict[str, int]:
    """{path relative to step_dir: bytes} of every file below it (iterdir: works on gs:// too)."""
    found: dict[str, int] = {}
    pending = [(step_dir, "")]
    while pending:
        folder, prefix = pending.pop()
        for p in folder.iterdir():
            if p.is_dir():
                pending.append((p, f"{prefix}{p.name}/"))
            elif p.name != FILES_MANIFEST:
                found[f"{prefix}{p.name}"] = p.stat().length
    return found


def write_files_manifest(step_dir: str | os.PathLike) -> None:
    """Records {relative path: bytes} of a committed checkpoint's files (for `verify_checkpoint`)."""
    step_dir = as_path(step_dir)
    (step_dir / FILES_MANIFEST).write_text(json.dumps(_relative_files(step_dir), sort_keys=True, indent=0))


def verify_checkpoint(step_dir: str | os.PathLike) -> None:
    """Cheap integrity checks of one committed checkpoint, before orbax reads it.

    Every file recorded in its `atlas_files.json` must exist with the recorded size, and the
    JSON records orbax and this module wrote must parse.

    Raises:
      CheckpointCorruptError naming the first bad file.
    """
    step_dir = as_path(step_dir)
    manifest = step_dir / FILES_MANIFEST
    if manifest.exists():
        try:
            expected = json.loads(manifest.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointCorruptError(f"{manifest}: file list is not readable ({err})") from err
        found = _relative_files(step_dir)
        for rel, size in sorted(expected.items()):
            if rel not in found:
                raise CheckpointCorruptError(f"{step_dir / rel}: missing (recorded {size} bytes)")
            if found[rel] != size:
                raise CheckpointCorruptError(
                    f"{step_dir / rel}: {found[rel]} bytes, {size} when written (truncated or overwritten)")
    for rel in (f"{META}/metadata", f"{PIPELINE}/metadata", f"{STATE}/_METADATA"):
        path = step_dir / rel
        if not path.exists():
            raise CheckpointCorruptError(f"{path}: missing")
        try:
            doc = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as err:  # ValueError: JSON and UTF-8 decoding errors
            raise CheckpointCorruptError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(doc, dict):
            raise CheckpointCorruptError(f"{path}: expected a JSON object, got {type(doc).__name__}")


def quarantine(step_dir: epath.Path, why: str) -> epath.Path:
    """Moves a damaged step folder aside (`<step>.corrupt-<UTC time>`), keeping its files."""
    import time

    target = step_dir.parent / f"{step_dir.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    try:
        step_dir.rename(target)
    except Exception as err:  # some object stores cannot rename a folder
        raise CheckpointCorruptError(
            f"checkpoint {step_dir} is damaged ({why}) and could not be moved aside ({err}); move it away "
            "by hand (nothing was deleted) and restart") from err
    logging.error("checkpoint %s is damaged (%s); moved it to %s (kept for inspection)", step_dir, why, target)
    return target


def _step_dirs(directory: epath.Path) -> dict[int, epath.Path]:
    if not directory.is_dir():
        return {}
    return {int(p.name): p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()}


def complete_steps(directory: str | os.PathLike) -> list[int]:
    """Steps under `directory` whose checkpoint was committed, ascending."""
    return sorted(s for s, p in _step_dirs(as_path(directory)).items() if _is_committed(p))


def resolve_checkpoint(path: str | os.PathLike) -> tuple[epath.Path, int]:
    """(checkpoints folder, step) for a model_dir, a checkpoints folder, or one step folder.

    Raises:
      FileNotFoundError: no committed checkpoint at `path`.
    """
    path = as_path(path)
    if path.name.isdigit() and _is_committed(path):
        return path.parent, int(path.name)
    for folder in (path / CHECKPOINT_SUBDIR, path):
        steps = complete_steps(folder)
        if steps:
            return folder, steps[-1]
    raise FileNotFoundError(f"no complete checkpoint under {path} (looked in {path / CHECKPOINT_SUBDIR} and {path})")


# Replicated arrays smaller than this are written whole by one replica instead of being sliced
# across replicas [our choice]: slicing pays off for large arrays on pods, while for small ones
# the per-slice device ops cost more than the write.
MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL = 8 << 20


def _handlers() -> dict[str, ocp.CheckpointHandler]:
    arrays = ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES_FOR_REPLICA_PARALLEL)
    registry = ocp.type_handlers.create_type_handler_registry((jax.Array, arrays))
    return {
        STATE: ocp.PyTreeCheckpointHandler(type_handler_registry=registry),
        PIPELINE: ocp.JsonCheckpointHandler(),
        META: ocp.JsonCheckpointHandler(),
    }


def _restore_args(abstract: Any) -> Any:
    """orbax restore args placing each array with the `sharding` of its ShapeDtypeStruct."""
    return ocp.checkpoint_utils.construct_restore_args(abstract)


def read_metadata(directory: str | os.PathLike, step: int) -> dict:
    """The `meta` item (model config, parameter shapes, run info) of one checkpoint."""
    return json.loads((as_path(directory) / str(step) / META / "metadata").read_text())


class TrainCheckpointer:
    """Saves and restores (TrainState, pipeline state, metadata) under MODEL_DIR/checkpoints.

    Args:
      model_dir: the run folder.
      keep: number of newest checkpoints kept (older ones are deleted after a save commits).
      async_save: write in a background thread (device→host copy stays synchronous, so the
        state may be donated to the next step right after `save` returns).
    """

    def __init__(self, model_dir: str | os.PathLike, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = as_path(model_dir) / CHECKPOINT_SUBDIR
        self._keep = keep
        self._async = async_save
        self._manager: ocp.CheckpointManager | None = None
        self._unrecorded: set[int] = set()  # saved by this object, file list not yet written
        self._write_error: CheckpointWriteError | None = None  # raised once; close() then stays quiet
        _install_quiet_write_failures()
        _QuietWriteFailures.failed = False

    def latest_step(self) -> int | None:
        """Newest committed step, or None."""
        steps = complete_steps(self.directory)
        return steps[-1] if steps else None

    def _open(self) -> ocp.CheckpointManager:
        if self._manager is None:
            self._discard_incomplete()
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self._keep, create=True, enable_async_checkpointing=self._async
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=_handlers())
        return self._manager

    def _discard_incomplete(self) -> None:
        """Removes step folders without a commit record (process 0), so their steps can be rewritten;
        moves aside (never deletes) those whose commit record is damaged."""
        states = {p: _commit_state(p) for p in _step_dirs(self.directory).values()}
        if jax.process_index() == 0:
            for p, state in states.items():
                if state == "absent":
                    logging.warning("removing incomplete checkpoint folder %s (never committed)", p)
                    p.rmtree()
                elif state == "garbled":
                    quarantine(p, f"its commit record {p / _COMMIT_FILE} is not readable")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("atlas_t5x.checkpoints.discard_incomplete")

    def save(self, step: int, state: "TrainState", pipeline_state: Mapping, metadata: Mapping) -> None:
        """Starts writing checkpoint `step` (returns once the device→host copy is done).

        The pipeline state must be the same on every process (a global stream position); this is
        checked on multi-host runs.
        """
        if jax.process_count() > 1:
            multihost_utils.assert_equal(
                zlib.crc32(json.dumps(pipeline_state, sort_keys=True).encode()) % (2**31),  # int32-safe
                "pipeline state differs between processes; it must be a global position",
            )
        self._record_committed()
        with self._write_errors(step):  # orbax first waits for the previous save: its failure surfaces here
            self._open().save(
                step,
                args=ocp.args.Composite(
                    **{
                        STATE: ocp.args.PyTreeSave(state),
                        PIPELINE: ocp.args.JsonSave(dict(pipeline_state)),
                        META: ocp.args.JsonSave({"format": META_FORMAT, **metadata}),
                    }
                ),
                force=True,
            )
        self._unrecorded.add(int(step))

    def _write_errors(self, saving: int | None = None):
        """Context: an OSError from orbax's writing → one CheckpointWriteError (module doc).
        `saving`: the step being saved now, blamed when no earlier started save is pending."""
        @contextlib.contextmanager
        def translate():
            try:
                yield
            except CheckpointWriteError:
                raise
            except Exception as err:  # orbax re-raises a background thread's error, possibly wrapped
                cause = disk_error(err)
                if cause is None:
                    raise
                self._write_error = self._describe_write_error(cause, saving)
                raise self._write_error from None

        return translate()

    def _describe_write_error(self, cause: OSError, saving: int | None) -> CheckpointWriteError:
        committed = complete_steps(self.directory)
        failed = sorted(self._unrecorded - set(committed)) or ([int(saving)] if saving is not None else [])
        reason = cause.strerror or str(cause)
        where = f" ({cause.filename})" if cause.filename else ""
        full = " Free some space, then" if cause.errno in (errno.ENOSPC, errno.EDQUOT) else " Fix it, then"
        last = (f"the last complete checkpoint is step {committed[-1]} ({self.directory / str(committed[-1])})"
                if committed else "no checkpoint has completed yet")
        message = (f"checkpoint{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed)) or '?'} could not be "
                   f"written under {self.directory}: {reason}{where}. The run stopped; {last}.{full} rerun the same "
                   "command: it resumes from that checkpoint (the steps after it are trained again)")
        return CheckpointWriteError(cause.errno, message)  # errno: the cause's; strerror: the message

    def restore(self, step: int, abstract_state: "TrainState") -> tuple["TrainState", dict, dict]:
        """(state placed with `abstract_state`'s shardings, pipeline state, metadata) of `step`.

        Raises:
          CheckpointMismatchError: the saved train state has another structure (e.g. optimizer
            settings such as clipping changed since the run that wrote it).
        """
        args = ocp.args.Composite(
            **{
                STATE: ocp.args.PyTreeRestore(item=abstract_state, restore_args=_restore_args(abstract_state)),
                PIPELINE: ocp.args.JsonRestore(),
                META: ocp.args.JsonRestore(),
            }
        )
        try:
            restored = self._open().restore(step, args=args)
        except ValueError as err:  # orbax: tree structure or shape mismatch
            detail = str(err).split("If this mismatch is intentional")[0].strip()  # drop orbax's API hint
            raise CheckpointMismatchError(
                f"checkpoint {self.directory / str(step)} does not fit this run's train state (were the "
                f"optimizer settings changed?): {detail}\nNothing was written; resume with the settings that "
                f"wrote it, or start a new model_dir (init_from= takes its parameters only)"
            ) from err
        return restored[STATE], dict(restored[PIPELINE]), dict(restored[META])

    def wait_until_finished(self) -> None:
        """Blocks until every started save has committed (CheckpointWriteError if one failed)."""
        if self._manager is not None:
            with self._write_errors():
                self._manager.wait_until_finished()
            self._record_committed()

    def _record_committed(self) -> None:
        """Writes the file list of the checkpoints this object saved once they have committed
        (process 0); never of checkpoints it found, whose files may already be damaged."""
        committed = set(complete_steps(self.directory)) & self._unrecorded
        for step in sorted(committed):
            self._unrecorded.discard(step)
            step_dir = self.directory / str(step)
            if jax.process_index() != 0 or (step_dir / FILES_MANIFEST).exists():
                continue
            try:
                write_files_manifest(step_dir)
            except OSError as err:  # best effort: verification then relies on the JSON checks
                logging.warning("could not record the files of %s: %s", step_dir, err)

    def close(self) -> None:
        """Waits for the started saves and closes orbax's manager. A failed write raises
        CheckpointWriteError, once: after it was raised (by save), close only shuts down."""
        if self._manager is None:
            return
        try:
            if self._write_error is None:
                self.wait_until_finished()
        finally:
            manager, self._manager = self._manager, None
            try:
                manager.close()
            except Exception:  # noqa: BLE001  (after a failed write the manager's threads may fail again)
                if self._write_error is None:
                    raise

    def restore_latest(self, abstract_state: "TrainState", expected_shapes: Mapping[str, list[int]]
                       ) -> tuple[int, Any, dict, dict] | None:
        """(step, state, pipeline state, metadata) of the newest checkpoint that verifies and
        restores; None when there is no complete checkpoint.

        Newer checkpoints that fail are logged with the bad file and moved aside (never deleted),
        once an older one has restored.

        Raises:
          CheckpointMismatchError: the checkpoints hold another model (parameter shapes) or another
            train-state structure (optimizer settings) — nothing is changed on disk.
          NoRestorableCheckpointError: no checkpoint restores; names each one tried and why.
        """
        tried: list[tuple[epath.Path, str, Exception]] = []
        for step in reversed(complete_steps(self.directory)):
            where = self.directory / str(step)
            try:
                verify_checkpoint(where)
                check_param_shapes(expected_shapes, read_metadata(self.directory, step)["param_shapes"], str(where))
            except CheckpointMismatchError as err:
                raise CheckpointMismatchError(f"{err}. Nothing was written; give this model its own model_dir") from None
            except (CheckpointCorruptError, KeyError, TypeError, ValueError, OSError) as err:
                reason = str(err) if isinstance(err, CheckpointCorruptError) else f"{where / META / 'metadata'}: {err!r}"
                logging.error("checkpoint %s fails verification: %s", where, reason)
                tried.append((where, reason, err))
                continue
            try:
                state, pipeline_state, meta = self.restore(step, abstract_state)
            except CheckpointMismatchError as err:
                tried.append((where, str(err), err))
                logging.error("checkpoint %s does not restore: %s", where, err)
                continue
            except Exception as err:  # orbax / TensorStore read errors name the array, not the file
                reason = f"restoring it failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
                logging.error("checkpoint %s: %s", where, reason)
                tried.append((where, reason, err))
                continue
            if tried:
                self.close()  # the manager listed the damaged folders: reopen without them
                if jax.process_index() == 0:
                    for bad, why, _ in tried:
                        quarantine(bad, why)
                if jax.process_count() > 1:
                    multihost_utils.sync_global_devices("atlas_t5x.checkpoints.quarantine")
                logging.warning("resumed from the older checkpoint %s", where)
            return step, state, pipeline_state, meta
        if not tried:
            return None
        if all(isinstance(err, CheckpointMismatchError) for _, _, err in tried):
            raise tried[0][2]  # every checkpoint disagrees with this run's settings: not damage
        raise NoRestorableCheckpointError(
            f"no checkpoint under {self.directory} restores; tried, newest first:\n"
            + "\n".join(f"  {where}: {why}" for where, why, _ in tried)
            + "\nNothing was changed; move the damaged folders away to start over from scratch")


def load_params(source: str | os.PathLike, abstract_params: Any) -> tuple[Any, str]:
    """Parameters only, from the newest checkpoint at `source` (finetune init).

    Args:
      source: a model_dir, its checkpoints folder, or one step folder.
      abstract_params: ShapeDtypeStructs with shardings for this run's parameters.

    Returns:
      (params, the step folder they came from).

    Raises:
      FileNotFoundError: no complete checkpoint at `source`.
      CheckpointCorruptError: its newest checkpoint fails `verify_checkpoint` (names the file).
      CheckpointMismatchError: the checkpoint's parameters differ from this model's.
    """
    directory, step = resolve_checkpoint(source)
    where = directory / str(step)
    verify_checkpoint(where)  # a damaged source is named (CheckpointCorruptError), not an orbax traceback
    check_param_shapes(param_shapes(abstract_params), read_metadata(directory, step)["param_shapes"], str(where))
    item = {"params": abstract_params}
    manager = ocp.CheckpointManager(directory, item_handlers=_handlers())
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                **{STATE: ocp.args.PyTreeRestore(item=item, restore_args=_restore_args(item), partial_restore=True)}
            ),
        )
    finally:
        manager.close()
    return restored[STATE]["params"], str(where)
