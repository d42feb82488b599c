"""The seam between the train loop and evaluation hooks.

The trainer builds one `RunInfo` per run and, at every step where a callback is due, one
`StepContext`. A callback is any object with an integer `every_steps` attribute and a
`__call__(ctx)` method; the trainer calls it when `step % every_steps == 0` and once more at the
final step (if that step was not already a multiple). Callbacks run on every process of a
multi-host job (they see the same globally sharded `state`); writing files is up to the callback
(typically only on `jax.process_index() == 0`).

The callbacks due at step s run before checkpoint s is written, so a run that dies inside a
callback resumes from an earlier checkpoint and calls it again at s: callbacks should be
idempotent per step (a callback that logs skips rows it has already written, as atlas_t5x.eval
does).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # imported for type hints only; the trainer imports this module.
    import jax

    from atlas_t5x.models import ModelConfig
    from atlas_t5x.train_state import TrainState

# (params, batch) -> (sum_nll [B] float32 nats, n_tokens [B] float32), per example of the batch.
EvalStep = Callable[[Any, Mapping[str, Any]], tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Facts about a run that every exported log row repeats (see docs/log_schema.md).

    Attributes:
      run: run name, unique within a study (defaults to the model_dir's basename).
      mixture_name: name of the training mixture ("" when the pipeline has none).
      mixture_weights: sampling rate per training language (sums to 1).
      init: "scratch", or the checkpoint path a finetune started from.
      vocab: vocabulary name or path.
      vocab_size: vocabulary rows V of the model.
      seq_len: training sequence length, tokens.
      global_batch: sequences per optimizer step, all hosts together.
      scale: model scale name (`scale0` … `scale46`, `tiny*`).
      model_dir: the run's output folder (logs/, checkpoints/, tb/ live under it).
      run_id: the run's identity, drawn at its first start and kept in its checkpoints; the same
        under a renamed folder (atlas_t5x/resume.py). "" when unknown.
    """

    run: str
    mixture_name: str
    mixture_weights: dict[str, float]
    init: str
    vocab: str
    vocab_size: int
    seq_len: int
    global_batch: int
    scale: str
    model_dir: str
    run_id: str = ""


@dataclasses.dataclass
class StepContext:
    """What a callback sees at a step boundary.

    Attributes:
      step: optimizer steps completed (the state's step).
      state: the current TrainState (globally sharded jax arrays; `state.params` for evaluation).
      model: the Flax module (`DecoderLM`).
      model_config: its ModelConfig.
      mesh: the device mesh the state is sharded over.
      pipeline: the train pipeline (`languages`, `accounting()` give the tokens seen so far).
      lr: learning rate applied at the last update.
      schedule_phase: "warmup", "stable" or "decay"; "final" at a run's last step, "cooldown_end"
        at the end of a cooldown branch.
      run_info: the run's RunInfo.
      eval_step: jitted `(params, batch) -> (sum_nll[B], n_tokens[B])`; `batch` is a dict of
        numpy arrays [B, seq_len] with the train-batch keys (B divisible by the mesh's batch axes);
        sum_nll in nats over the example's weighted target tokens.
      branch: None on the trunk; at the end of a WSD cooldown branch (atlas_t5x/cooldown.py),
        {"trunk": trunk run name, "branch_tokens": tokens at the branch point}. Only callbacks with
        a true `evaluates_branches` attribute are called there.
    """

    step: int
    state: "TrainState"
    model: Any
    model_config: "ModelConfig"
    mesh: "jax.sharding.Mesh"
    pipeline: Any
    lr: float
    schedule_phase: str
    run_info: RunInfo
    eval_step: EvalStep
    branch: Mapping[str, Any] | None = None


@runtime_checkable
class Callback(Protocol):
    """Called by the train loop when `step % every_steps == 0` and at the final step."""

    every_steps: int

    def __call__(self, ctx: StepContext) -> None: ...


def due_callbacks(callbacks: Sequence[Callback], step: int, final_step: int) -> list[Callback]:
    """The callbacks to run after `step`: those whose period divides it, all of them at the end."""
    return [cb for cb in callbacks if step == final_step or step % cb.every_steps == 0]


def validate_callbacks(callbacks: Sequence[Any]) -> list[Callback]:
    """Checks each callback has a positive integer `every_steps` and is callable."""
    checked = []
    for cb in callbacks:
        every = getattr(cb, "every_steps", None)
        if not callable(cb) or not isinstance(every, int) or every <= 0:
            raise ValueError(
                f"callback {cb!r} must be callable with a positive int every_steps (got {every!r})"
            )
        checked.append(cb)
    return checked
