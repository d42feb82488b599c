"""Device mesh, logical axis rules and shardings (pjit style, t5x naming).

The model annotates every parameter and the main activations with logical axis names
(``batch, length, embed, vocab, heads, kv, mlp, layers``). The rules below map those
names onto a 3-axis device mesh ``("data", "fsdp", "tensor")``:

* ``data``: pure data parallelism (parameters replicated);
* ``fsdp``: data parallelism with parameters and optimiser state sharded over ``embed``
  (ZeRO-3 style; XLA inserts the all-gathers and reduce-scatters);
* ``tensor``: Megatron-style model parallelism over heads, MLP hidden units and vocabulary.

The same code runs on 1 CPU device (all axes of size 1) and on a pod; only the
``MeshConfig`` changes. Multi-host runs call ``maybe_initialize_distributed`` first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterator, Optional, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Rule order matters: a mesh axis is used at most once per array, first rule wins. So an
# activation [batch, length, embed] puts batch on (data, fsdp) and leaves embed unsharded,
# while a parameter [vocab, embed] gets vocab→tensor and embed→fsdp.
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("layers", None),
)


@gin.configurable
def get_logical_rules(rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES) -> tuple[tuple[str, Any], ...]:
    """The logical→mesh axis rules in force (bind ``get_logical_rules.rules`` in gin to change them)."""
    out = []
    for rule in rules:
        if len(rule) != 2:
            raise ValueError(f"logical axis rule {rule!r} must be a (logical_name, mesh_axes) pair")
        logical, mesh_axes = rule
        names = mesh_axes if isinstance(mesh_axes, (tuple, list)) else (mesh_axes,)
        for name in names:
            if name is not None and name not in MESH_AXES:
                raise ValueError(f"logical axis rule {rule!r} names mesh axis {name!r}; valid: {MESH_AXES}")
        out.append((logical, tuple(mesh_axes) if isinstance(mesh_axes, list) else mesh_axes))
    return tuple(out)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; ``-1`` on one axis means "all remaining devices"."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


def _resolve_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, int, int]:
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    if sum(s == -1 for s in sizes) > 1:
        raise ValueError(f"MeshConfig {cfg}: at most one axis may be -1")
    for axis, size in zip(MESH_AXES, sizes):
        if size == 0 or size < -1:
            raise ValueError(f"MeshConfig.{axis} must be a positive int or -1, got {size}")
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % fixed:
            raise ValueError(
                f"mesh {cfg} does not divide the devices: {n_devices} devices is not a multiple of "
                f"the fixed axes' product {fixed}")
        sizes = [n_devices // fixed if s == -1 else s for s in sizes]
    if math.prod(sizes) != n_devices:
        raise ValueError(
            f"mesh {cfg} does not match the devices: mesh product data*fsdp*tensor = "
            f"{math.prod(sizes)} but there are {n_devices} devices")
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A ``Mesh`` with axes ("data", "fsdp", "tensor") over ``devices`` (default: all devices).

    Raises:
      ValueError: the mesh product does not equal (or, with -1, divide) the device count;
        the message states both numbers.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = _resolve_shape(cfg, len(devices))
    try:  # topology-aware device order on TPU/GPU; plain reshape elsewhere
        device_array = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError, AssertionError):
        device_array = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def _drop_indivisible(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Replicate dimensions whose size the assigned mesh axes do not divide (e.g. 7 heads on tensor=2)."""
    entries = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = entry if isinstance(entry, tuple) else (entry,)
        ways = math.prod(mesh.shape[n] for n in names if n is not None)
        entries.append(entry if dim % ways == 0 else None)
    return PartitionSpec(*entries)


def params_shardings(abstract_params: Any, mesh: Mesh, rules: Optional[Sequence] = None) -> Any:
    """NamedShardings for a pytree of logically annotated (boxed) abstract params.

    Args:
      abstract_params: e.g. ``jax.eval_shape(model.init, ...)`` output (any subtree),
        whose leaves are ``nn.LogicallyPartitioned`` boxes or plain arrays (replicated).
      mesh: from ``make_mesh``.
      rules: logical axis rules (default ``get_logical_rules()``).

    Returns:
      The same tree structure with the boxes removed and a ``NamedSharding`` per leaf.
      A dimension not divisible by its mesh axes is replicated instead [our choice], so
      every scale runs on every mesh.
    """
    rules = get_logical_rules() if rules is None else rules
    logical_specs = nn.get_partition_spec(abstract_params)
    shapes = nn.meta.unbox(abstract_params)

    def to_sharding(logical_spec, leaf):
        mesh_spec = nn.logical_to_mesh_axes(tuple(logical_spec), rules)
        return NamedSharding(mesh, _drop_indivisible(mesh_spec, leaf.shape, mesh))

    return jax.tree.map(to_sharding, logical_specs, shapes,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of [batch, length] input arrays: batch over ("data", "fsdp")."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding (scalars, step counters)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_divisible(global_batch: int, mesh: Mesh, microbatches: int = 1) -> None:
    """Raise ValueError unless the global batch splits evenly over the batch axes and hosts.

    With ``microbatches`` > 1 (gradient accumulation) each micro-batch must split evenly too,
    i.e. the batch must be a multiple of microbatches × data × fsdp.
    """
    ways = math.prod(mesh.shape[a] for a in BATCH_AXES)
    if global_batch <= 0 or global_batch % ways:
        raise ValueError(
            f"global batch {global_batch} is not divisible by the mesh's batch axes data*fsdp = {ways}")
    if global_batch % (microbatches * ways):
        raise ValueError(
            f"global batch {global_batch} does not split into {microbatches} micro-batches "
            f"(train.num_microbatches) divisible by the mesh's batch axes data*fsdp = {ways}: "
            f"it must be a multiple of {microbatches * ways}")
    if global_batch % jax.process_count():
        raise ValueError(
            f"global batch {global_batch} is not divisible by the process count {jax.process_count()}")


@contextlib.contextmanager
def axis_rules(mesh: Mesh, rules: Optional[Sequence] = None) -> Iterator[None]:
    """Context in which the model's ``nn.with_logical_constraint`` calls take effect.

    Trace (first call / ``.lower``) jitted functions that apply the model inside it:
    ``with axis_rules(mesh): step = jax.jit(...); step(...)``. Outside it the
    activation constraints are no-ops and XLA propagates shardings on its own.
    """
    rules = get_logical_rules() if rules is None else rules
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


@gin.configurable
def maybe_initialize_distributed(coordinator_address: Optional[str] = None,
                                 num_processes: Optional[int] = None,
                                 process_id: Optional[int] = None,
                                 auto_detect: bool = False,
                                 cpu_collectives: Optional[str] = "gloo") -> bool:
    """Start multi-host JAX when configured; a no-op for single-process runs.

    Args:
      coordinator_address: ``host:port`` of process 0 (GPU/CPU clusters).
      num_processes: total processes.
      process_id: this process's index.
      auto_detect: call ``jax.distributed.initialize()`` without arguments (TPU pods,
        SLURM, Open MPI set everything up through the environment).
      cpu_collectives: cross-process collectives for CPU devices ("gloo" or "mpi"); set
        before the backend starts, ignored by TPU/GPU.

    Returns:
      True when ``jax.distributed`` was initialised by this call.
    """
    configured = coordinator_address is not None or num_processes is not None or process_id is not None
    if not (configured or auto_detect):
        return False
    if jax.distributed.is_initialized():
        return False
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if configured:
        if None in (coordinator_address, num_processes, process_id):
            raise ValueError(
                "maybe_initialize_distributed needs coordinator_address, num_processes and process_id "
                f"together; got {coordinator_address!r}, {num_processes!r}, {process_id!r}")
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    else:
        jax.distributed.initialize()
    return True
