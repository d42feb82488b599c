"""Checks a run makes before step 0 that would otherwise fail later, on the cluster's time.

`check_eval_batches`: every evaluation callback's batch must split over the mesh's batch axes
(data x fsdp) exactly as the train batch does; otherwise the first evaluation, after
`every_steps` steps of training and before any checkpoint, dies inside JAX's sharding code.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

BATCH_AXES = ("data", "fsdp")


def valid_eval_batch(batch_size: int, ways: int) -> int:
    """The smallest multiple of `ways` (devices the batch is split over) that is >= `batch_size`."""
    return max(ways, -(-batch_size // ways) * ways)


def eval_batch_problem(batch_size: int, mesh_shape: Mapping[str, int],
                       binding: str = "PerLanguageEval.batch_size") -> str | None:
    """A one-line reason why `batch_size` eval rows cannot be split over the mesh, or None.

    The rows are sharded over data x fsdp (atlas_t5x.partitioning.batch_sharding; every process
    holds the whole eval batch, so the process count does not matter); the message names
    `binding` and a valid value.
    """
    ways = math.prod(int(mesh_shape.get(a, 1)) for a in BATCH_AXES)
    if batch_size >= 1 and batch_size % ways == 0:
        return None
    return (f"{binding} = {batch_size} is not a multiple of the mesh's batch axes data*fsdp = {ways}: "
            f"bind {binding} = {valid_eval_batch(batch_size, ways)} (or another multiple of {ways})")


def check_eval_batches(callbacks: Sequence[Any], mesh_shape: Mapping[str, int], global_batch: int) -> None:
    """Raises ValueError (the trainer's CLI exits 2) when an eval callback's batch cannot run on the mesh.

    A callback takes part when it has a `batch_size` attribute; None there means the run's
    `global_batch` (already checked against the mesh). The binding named is
    `<ClassName>.batch_size`, e.g. PerLanguageEval.batch_size.
    """
    for cb in callbacks:
        if not hasattr(cb, "batch_size"):
            continue
        batch_size = cb.batch_size if cb.batch_size is not None else global_batch
        problem = eval_batch_problem(int(batch_size), mesh_shape, f"{type(cb).__name__}.batch_size")
        if problem:
            raise ValueError(f"{problem} (checked before step 0; the first evaluation would fail)")
