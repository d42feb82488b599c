"""WSD cooldown branches: several completed (N, D) points from one stable trunk.

Intermediate evaluations of one schedule are not scaling-law points: at a stable learning rate the
loss sits above what a finished run of the same length reaches. With a warmup-stable-decay
schedule a finished run of D' < D tokens is cheap to get: take the trunk at D' tokens, decay the
learning rate over a short cooldown and evaluate (Hägele et al. 2024). The trunk continues as if
nothing happened, so one trunk per model size gives a point per branch at ~(1 + fraction)× cost.

In the trainer (`train.cooldown_at_tokens`, `train.cooldown_fraction`): when the trunk reaches a
branch point it (1) keeps the trunk state and the pipeline position, (2) trains a copy for
`optim.cooldown_steps(branch_step, fraction)` updates on the trunk's own data stream with
`optim.cooldown_schedule`, (3) calls the callbacks that evaluate branches (`evaluates_branches`)
with a StepContext whose run is `<trunk run>-cd<tokens at the branch point>`, step and token
counts are the branch's own, `schedule_phase` is "cooldown_end" and `branch` names the trunk,
then (4) restores the pipeline position and lets the trunk continue from its untouched state.
The branch runs before the trunk's checkpoint at that step is written, so a run that dies inside
a branch resumes from an earlier checkpoint and redoes it (evaluation rows are never duplicated).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from atlas_t5x import optim

BRANCH_PHASE = "cooldown_end"


def branch_name(run: str, branch_tokens: int) -> str:
    """The run name of a cooldown branch: `<trunk run>-cd<tokens at the branch point>`."""
    return f"{run}-cd{int(branch_tokens)}"


def branch_steps(cooldown_at_tokens: Sequence[int], tokens_per_step: int, total_steps: int,
                 warmup_steps: int, decay_start: int, cooldown_fraction: float) -> list[int]:
    """Trunk steps at which branches leave, from token counts (rounded to whole steps).

    Raises ValueError naming the token count when a branch would leave during warmup or after the
    trunk's own decay has started (it must leave the stable phase), or when two round to one step.
    """
    out: list[int] = []
    for tokens in cooldown_at_tokens:
        if isinstance(tokens, bool) or not isinstance(tokens, (int, float)) or not tokens > 0:
            raise ValueError(f"train.cooldown_at_tokens: {tokens!r} is not a positive token count")
        step = int(round(float(tokens) / tokens_per_step))
        if not warmup_steps <= step < decay_start:
            raise ValueError(
                f"train.cooldown_at_tokens: {tokens} tokens = step {step} lies outside the trunk's stable "
                f"phase (steps {warmup_steps}…{decay_start - 1} of {total_steps}; {tokens_per_step} tokens/step)")
        if step in out:
            raise ValueError(f"train.cooldown_at_tokens: {tokens} tokens rounds to step {step}, as another branch does")
        optim.cooldown_steps(step, cooldown_fraction)  # validates the fraction
        out.append(step)
    return sorted(out)


@dataclasses.dataclass
class BranchRunner:
    """Runs one cooldown branch off the trunk (see the module docstring).

    make_step: () → compiled (state, batch, dropout_key, lr) → (state, metrics) with the trunk's
      shardings, the learning rate an argument (compiled once per runner, whatever the branch
      schedule); next_batch: () → the next global batch; copy_state: state → a copy whose buffers
      the donated branch step may consume; check_losses: [metrics] → raises on a non-finite loss;
      context: (step, state, lr, phase, run_info, branch) → StepContext.
    """

    make_step: Callable[[Any], Callable]
    next_batch: Callable[[], Any]
    copy_state: Callable[[Any], Any]
    check_losses: Callable[[list], None]
    context: Callable[..., Any]
    pipeline: Any
    run_info: Any
    peak_lr: float
    final_lr_fraction: float
    cooldown_fraction: float
    tokens_per_step: int
    _compiled: Any = None

    def run(self, step: int, state, dropout_key, callbacks: Sequence[Any]) -> int:
        """Branches at trunk step `step`; returns the branch's last step. The trunk's `state` and
        the pipeline position are left as they were."""
        n = optim.cooldown_steps(step, self.cooldown_fraction)
        import numpy as np

        schedule = optim.cooldown_schedule(self.peak_lr, step, n, self.final_lr_fraction)
        if self._compiled is None:
            self._compiled = self.make_step()
        position = self.pipeline.get_state()
        branch_state = self.copy_state(state)
        metrics = []
        try:
            for i in range(n):
                lr = np.float32(schedule(step + i))   # the update that takes the branch to step + i + 1
                branch_state, m = self._compiled(branch_state, self.next_batch(), dropout_key, lr)
                metrics.append(m)
            self.check_losses(metrics)
            tokens = step * self.tokens_per_step
            trunk_id = getattr(self.run_info, "run_id", "")  # a branch's id follows its trunk's (kept on rename)
            info = dataclasses.replace(self.run_info, run=branch_name(self.run_info.run, tokens),
                                       **({"run_id": branch_name(trunk_id, tokens)} if trunk_id else {}))
            ctx = self.context(step + n, branch_state, float(schedule(step + n - 1)), BRANCH_PHASE, info,
                               {"trunk": self.run_info.run, "branch_tokens": int(tokens)})
            for cb in callbacks:
                if getattr(cb, "evaluates_branches", False):
                    cb(ctx)
        finally:
            self.pipeline.set_state(position)
        return step + n
