"""A `jax.profiler` trace of a range of train steps (gin `train.profile_steps = (first, last)`).

Steps are numbered as train.jsonl counts them: step n is the update that takes the run from n - 1
to n steps done. The trace starts before step `first` is dispatched and stops once step `last`
has finished on the device, and is written under `<log_dir>/plugins/profile/<timestamp>/` as
`*.xplane.pb` (with a `*.trace.json.gz`), the layout TensorBoard's profile plugin reads:
`tensorboard --logdir MODEL_DIR/profile`. Each step is a `StepTraceAnnotation` ("train", n), so
the plugin's step view splits the trace by step. A run resumed after `first` traces the steps of
the range it still has; one that ends inside the range stops the trace at its end (`close`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Sequence

import jax


def check_profile_steps(profile_steps: Sequence[int] | None) -> tuple[int, int] | None:
    """(first, last) from the gin value; ValueError naming `train.profile_steps` if it is not 1 <= first <= last."""
    if profile_steps is None:
        return None
    try:
        first, last = (int(v) for v in profile_steps)
        ok = all(not isinstance(v, bool) and float(v) == int(v) for v in profile_steps)
    except (TypeError, ValueError):
        ok = False
    if not ok or not 1 <= first <= last:
        raise ValueError(f"train.profile_steps must be (first, last) with 1 <= first <= last, got {profile_steps!r}")
    return first, last


class StepProfiler:
    """Starts and stops a jax.profiler trace around steps first..last (inclusive); inert when `steps` is None."""

    def __init__(self, steps: tuple[int, int] | None, log_dir: str):
        self._steps = steps
        self._log_dir = log_dir
        self.active = False
        self.done = steps is None

    def step(self, number: int) -> contextlib.AbstractContextManager:
        """Context around dispatching step `number`: starts the trace at the range's first step it sees."""
        if not self.done and not self.active and self._steps[0] <= number <= self._steps[1]:
            logging.info("profiling train steps %d-%d into %s", number, self._steps[1], self._log_dir)
            jax.profiler.start_trace(self._log_dir)
            self.active = True
        if self.active:
            return jax.profiler.StepTraceAnnotation("train", step_num=number)
        return contextlib.nullcontext()

    def after(self, number: int, outputs: Any) -> None:
        """After dispatching step `number`: at the range's last step, waits for `outputs` and stops."""
        if self.active and number >= self._steps[1]:
            jax.block_until_ready(outputs)
            self.close()

    def close(self) -> None:
        """Stops a running trace (writes it); later steps are not traced."""
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
        self.done = True
