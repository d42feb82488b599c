"""Training progress a researcher sees: a bar in a terminal, absl INFO lines everywhere else.

On an interactive terminal (the chief's stderr is a TTY) the trainer keeps its tqdm bar. Outside
one (SLURM/TPU job logs, a pipe) process 0 logs one INFO line per train.jsonl row, t5x style:

  I1202 14:05:10.118 ... train_progress.py:88] step 40/200 (20.0%): loss 5.4821 nats/token,
      lr 3.00e-03 (stable), 84,980 tokens/s, MFU 4.3%, ETA 0:02:11

and one at the start saying what was restored (`describe_start`). ETA is the remaining steps at
this process's average step rate since it started (checkpoints and evaluations included).

`quiet_library_logs` is for the command line: it keeps INFO lines of atlas_t5x and drops those of
libraries (orbax's per-checkpoint lines, jax's backend probing) and TensorFlow's C++ log, unless
asked for (`atlas-train --verbose_libraries`).
"""

from __future__ import annotations

import datetime as dt
import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile
import time
from typing import Any, Mapping

log = logging.getLogger(__name__)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def progress_bar(total: int, initial: int, is_chief: bool):
    """A tqdm bar over steps, shown only on the chief when its stderr is a terminal."""
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=total, initial=initial, unit="step", disable=not (is_chief and sys.stderr.isatty()))


def format_eta(seconds: float | None) -> str:
    """`1:02:03` (hours:minutes:seconds), `?` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    return str(dt.timedelta(seconds=int(round(max(seconds, 0.0)))))


def format_progress(row: Mapping[str, Any], total_steps: int, eta_s: float | None) -> str:
    """One progress line from a train.jsonl row (step, loss, lr, tokens/s, MFU) and an ETA."""
    step = int(row["step"])
    mfu = f", MFU {row['mfu']:.1%}" if "mfu" in row else ""
    phase = f" ({row['schedule_phase']})" if row.get("schedule_phase") else ""
    return (f"step {step}/{total_steps} ({step / total_steps:.1%}): loss {row['loss']:.4f} nats/token, "
            f"lr {row['lr']:.2e}{phase}, {row['tokens_per_s']:,.0f} tokens/s{mfu}, ETA {format_eta(eta_s)}")


def describe_start(how: str, step: int, total_steps: int, tokens: int, source: str | None) -> str:
    """The line logged when a run starts: `how` is "scratch", "resumed" or "finetune"."""
    if how == "resumed":
        return (f"resumed from checkpoint {source} at step {step}/{total_steps}: {tokens:,} training tokens "
                "seen, optimizer state and data position restored")
    if how == "finetune":
        return (f"finetuning from {source}: parameters restored; fresh optimizer, schedule from step 0 "
                f"of {total_steps}")
    return f"starting from scratch: step 0 of {total_steps}"


class ProgressReporter:
    """The bar on a terminal or INFO lines elsewhere (process 0 only).

    Args:
      total_steps: the run's last step.
      start_step: the step it starts (or resumes) from.
      is_chief: this is process 0.
    """

    def __init__(self, total_steps: int, start_step: int, is_chief: bool):
        self.total_steps = total_steps
        self._start_step = start_step
        self._is_chief = is_chief
        self.bar = progress_bar(total_steps, start_step, is_chief)
        self._start_time = time.perf_counter()

    @property
    def logs_lines(self) -> bool:
        """INFO lines instead of the bar (the chief, not on a terminal)."""
        return self._is_chief and self.bar.disable

    def start(self) -> None:
        """Starts the ETA clock (call when the first step is dispatched)."""
        self._start_time = time.perf_counter()

    def update(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def eta_s(self, step: int, now: float | None = None) -> float | None:
        """Seconds to the last step at the average rate since `start`; None before any step."""
        done = step - self._start_step
        if done <= 0:
            return None
        elapsed = (time.perf_counter() if now is None else now) - self._start_time
        return elapsed / done * (self.total_steps - step)

    def report(self, row: Mapping[str, Any]) -> None:
        """After a train.jsonl row: the bar's loss, or one INFO line."""
        if self.logs_lines:
            log.info("%s", format_progress(row, self.total_steps, self.eta_s(int(row["step"]))))
        else:
            self.bar.set_postfix(loss=f"{row['loss']:.4f}")

    def close(self) -> None:
        self.bar.close()


def _from_atlas(record: logging.LogRecord) -> bool:
    return record.name.startswith("atlas_t5x") or os.path.abspath(record.pathname).startswith(_PACKAGE_DIR)


# What TensorFlow's shared libraries print while they load, before its C++ logging is set up:
# TF_CPP_MIN_LOG_LEVEL does not reach these ("I0000 00:00:..." oneDNN and CUDA-probe lines).
_PRE_INIT_LINES = ("I0000 00:00:", "WARNING: All log messages before absl::InitializeLog() is called")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """On the first `import tensorflow`, holds the process's stderr (file descriptor 2) while the
    package loads, then writes back every line except TensorFlow's pre-initialisation INFO lines."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; also lets the search below skip this finder
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def quiet_exec(module):
            with _held_stderr():
                exec_module(module)

        loader.exec_module = quiet_exec
        return spec


class _held_stderr:
    """Redirects file descriptor 2 to a temporary file; on exit restores it and replays the
    captured lines other than _PRE_INIT_LINES."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        try:
            sys.stderr.flush()
        finally:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        self._file.seek(0)
        kept = [line for line in self._file.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not line.startswith(_PRE_INIT_LINES)]
        self._file.close()
        if kept:
            os.write(2, "".join(kept).encode("utf-8"))
        return False


def quiet_library_logs(verbose_libraries: bool = False) -> None:
    """Command-line logging: libraries' INFO lines and TensorFlow's C++ INFO/WARNING log off.

    Call before TensorFlow is imported and after absl has installed its handler (absl.app.run /
    `absl.logging.use_absl_handler`). Sets TF_CPP_MIN_LOG_LEVEL=2 unless the environment has one,
    drops the INFO lines TensorFlow prints while its libraries load (`_QuietTensorFlowImport`) and
    libraries' Python INFO records (orbax, jax); WARNINGs and errors always pass. With
    `verbose_libraries` nothing is filtered.
    """
    if verbose_libraries:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    from absl import logging as absl_logging  # noqa: PLC0415

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or _from_atlas(record)

    handler = absl_logging.get_absl_handler().python_handler  # ABSLHandler.handle skips its own filters
    if not any(getattr(f, "__name__", "") == "keep_atlas_info" for f in handler.filters):
        keep.__name__ = "keep_atlas_info"
        handler.addFilter(keep)
