"""The train state: what one optimizer step reads and writes, and what a checkpoint holds.

Kept apart from the train loop (atlas_t5x/trainer.py) so that checkpoints, callbacks and tools
that only restore or inspect a state do not import the loop.
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import struct


@struct.dataclass
class TrainState:
    """Everything a step updates.

    Attributes:
      step: optimizer updates done (int32 scalar); the schedule and the dropout key follow it.
      params: the model parameters (a pytree of arrays).
      opt_state: the optimizer's state (AdamW moments and its own update count).
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
