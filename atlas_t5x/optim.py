"""Learning-rate schedules and the AdamW optimiser (spec §3 recipe).

The paper gives AdamW, peak LR 2e-4, 1000 warmup steps and a warmup-stable-decay (WSD)
schedule that decays over the last 10% of steps. Everything else here is
**[our choice, documented]**: linear warmup from 0, linear decay to
``final_lr_fraction·peak_lr`` (0 by default), Adam β1 = 0.9, β2 = 0.95, ε = 1e-8,
decoupled weight decay 0.1 (optax convention: multiplied by the current LR) applied
to matrices only (not to norm scales), global-norm gradient clipping at 1.0.

Step numbers count optimiser updates starting at 0. Gradient accumulation in training runs is
``train.num_microbatches``: the trainer splits each global batch into micro-batches inside its
step (exact token weighting, one update per step; see ``trainer.make_train_step``) and rejects
``make_optimizer.accumulation_steps``. That option is for code that feeds the optimizer one
micro-batch per ``update`` call (``optax.MultiSteps``: the mean of the micro-batch gradients,
the schedule advancing once per ``accumulation_steps`` calls).
"""

from __future__ import annotations

from typing import Union

import gin
import jax
import jax.numpy as jnp
import optax

SCHEDULE_KINDS = ("wsd", "cosine", "constant")


def _check_kind(kind: str) -> None:
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; valid: {', '.join(SCHEDULE_KINDS)}")


DEFAULT_DECAY_FRACTION = 0.1   # the WSD decay spans the last 10% of the steps [paper]


def decay_start_step(total_steps: int, decay_fraction: float = DEFAULT_DECAY_FRACTION) -> int:
    """First step of the WSD decay phase: total_steps − round(decay_fraction·total_steps)."""
    if not 0.0 <= decay_fraction <= 1.0:
        raise ValueError(f"decay_fraction must be in [0, 1], got {decay_fraction}")
    return total_steps - int(round(decay_fraction * total_steps))


@gin.configurable
def make_schedule(kind: str = "wsd", peak_lr: float = 2e-4, total_steps: int | None = None,
                  warmup_steps: int = 1000, decay_fraction: float = DEFAULT_DECAY_FRACTION,
                  final_lr_fraction: float = 0.0) -> optax.Schedule:
    """Learning rate (per update) as a function of the update step.

    All kinds warm up linearly from 0 to ``peak_lr`` over ``warmup_steps``; then
      * ``wsd``: constant ``peak_lr`` until ``decay_start_step(total_steps, decay_fraction)``,
        then linear decay to ``final_lr_fraction·peak_lr`` at ``total_steps``;
      * ``cosine``: cosine decay to ``final_lr_fraction·peak_lr`` at ``total_steps``;
      * ``constant``: ``peak_lr`` forever.

    Raises:
      ValueError: unknown kind, missing/invalid ``total_steps``, or warmup longer than
        the steps before the decay.
    """
    _check_kind(kind)
    if total_steps is None or total_steps <= 0:
        raise ValueError(f"make_schedule needs total_steps > 0, got {total_steps!r}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    final_lr = final_lr_fraction * peak_lr
    warmup = optax.linear_schedule(0.0, peak_lr, max(warmup_steps, 1))
    if kind == "constant":
        main, boundary = optax.constant_schedule(peak_lr), warmup_steps
        return optax.join_schedules([warmup, main], [boundary])
    if kind == "cosine":
        if warmup_steps >= total_steps:
            raise ValueError(f"warmup_steps {warmup_steps} must be < total_steps {total_steps}")
        main = optax.cosine_decay_schedule(peak_lr, total_steps - warmup_steps,
                                           alpha=final_lr_fraction)
        return optax.join_schedules([warmup, main], [warmup_steps])
    decay_start = decay_start_step(total_steps, decay_fraction)
    if warmup_steps > decay_start:
        raise ValueError(
            f"warmup_steps {warmup_steps} exceeds the {decay_start} steps before the WSD decay "
            f"(total_steps {total_steps}, decay_fraction {decay_fraction})")
    stable = optax.constant_schedule(peak_lr)
    decay = optax.linear_schedule(peak_lr, final_lr, max(total_steps - decay_start, 1))
    return optax.join_schedules([warmup, stable, decay], [warmup_steps, decay_start])


def schedule_phase(step: int, total_steps: int, warmup_steps: int, kind: str = "wsd",
                   decay_fraction: float = DEFAULT_DECAY_FRACTION) -> str:
    """``"warmup"``, ``"stable"`` or ``"decay"`` for the given update step.

    What an evaluation point is, in the logs, adds two labels (atlas_t5x.schema): the trainer
    marks a run's last evaluation ``"final"`` and a cooldown branch's ``"cooldown_end"``.

    Cosine has no stable phase (everything after warmup is decay); constant never decays.
    For WSD, evaluations in ``warmup``/``stable`` are the pre-decay points.
    """
    _check_kind(kind)
    if step < warmup_steps:
        return "warmup"
    if kind == "constant":
        return "stable"
    if kind == "cosine":
        return "decay"
    return "decay" if step >= decay_start_step(total_steps, decay_fraction) else "stable"


def cooldown_schedule(peak_lr: float, branch_step: int, decay_steps: int,
                      final_lr_fraction: float = 0.0) -> optax.Schedule:
    """The learning rate of a WSD cooldown branch that leaves a stable trunk after `branch_step`
    updates: ``peak_lr`` before it, then linear decay to ``final_lr_fraction·peak_lr`` over
    `decay_steps` updates (the same shape as the trunk's own WSD decay; Hägele et al. 2024)."""
    if decay_steps < 1 or branch_step < 0:
        raise ValueError(f"cooldown branch needs decay_steps >= 1 and branch_step >= 0, got "
                         f"{decay_steps}, {branch_step}")
    decay = optax.linear_schedule(peak_lr, final_lr_fraction * peak_lr, decay_steps)
    return optax.join_schedules([optax.constant_schedule(peak_lr), decay], [branch_step])


def cooldown_steps(branch_step: int, cooldown_fraction: float) -> int:
    """Length of a cooldown branch in updates: round(cooldown_fraction · branch_step), at least 1
    [our choice: the same fraction of the trunk's steps as the trunk's own decay]."""
    if not 0.0 < cooldown_fraction <= 1.0:
        raise ValueError(f"cooldown_fraction must be in (0, 1], got {cooldown_fraction}")
    return max(1, int(round(cooldown_fraction * branch_step)))


def _decay_mask(params):
    """Weight decay on matrices (ndim >= 2: embedding, projections), not on norm scales."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


@gin.configurable
def make_optimizer(schedule: optax.Schedule, b1: float = 0.9, b2: float = 0.95, eps: float = 1e-8,
                   weight_decay: float = 0.1, clip_norm: float | None = 1.0,
                   accumulation_steps: int = 1) -> optax.GradientTransformation:
    """AdamW with global-norm clipping and optional gradient accumulation.

    Args:
      schedule: learning rate per update (``make_schedule``).
      b1, b2, eps: Adam moments' decay rates and denominator epsilon.
      weight_decay: decoupled weight decay coefficient (scaled by the LR, matrices only).
      clip_norm: clip the (accumulated) gradient to this global L2 norm; None disables.
      accumulation_steps: wrap the chain in ``optax.MultiSteps`` for callers that pass one
        micro-batch gradient per ``update`` call (mean of the micro-batch gradients per update;
        the schedule counts updates). The trainer uses ``train.num_microbatches`` instead.
    """
    if accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
    parts = []
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                             mask=_decay_mask))
    optimizer = optax.chain(*parts)
    if accumulation_steps > 1:
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=accumulation_steps)
    return optimizer


# Spec §3: batch size in sequences by model size N (parameters).
_PAPER_BATCH = ((150e6, 256), (1e9, 512), (2e9, 1024), (float("inf"), 2048))


@gin.configurable
def paper_batch_size(params: Union[int, str, "ModelConfig"]) -> int:  # noqa: F821
    """Global batch in sequences: 256 for N < 150M, 512 for < 1B, 1024 for < 2B, 2048 from 2B.

    ``params`` is a parameter count N, a ``ModelConfig`` or a scale name (``"scale34"``);
    configs and names are counted at their own vocabulary size.
    """
    if isinstance(params, str) or hasattr(params, "vocab_size"):
        from atlas_t5x import models  # local import: keep optim importable on its own

        cfg = models.get_model_config(params) if isinstance(params, str) else params
        params = models.param_count(cfg)
    if int(params) <= 0:
        raise ValueError(f"paper_batch_size needs a positive parameter count, got {params}")
    return next(batch for limit, batch in _PAPER_BATCH if params < limit)
