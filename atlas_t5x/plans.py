"""Sharding plans: a mesh, remat policy and micro-batch count per (scale, devices, chip memory).

A plan is what a paper run needs on top of its model and recipe to fit an accelerator slice:

* mesh ``(data, fsdp, tensor)``: parameters and optimizer state sharded over ``fsdp`` (the
  ``embed`` dimension, ZeRO-3 / MaxText style), heads, MLP units and vocabulary over
  ``tensor``, the batch over ``data × fsdp``;
* ``ModelConfig.remat_policy`` (what each scanned block keeps for the backward pass);
* ``train.num_microbatches`` (gradient accumulation inside the step).

``estimate_memory`` is an analytic per-device byte count (parameters, gradients and Adam
moments in float32 sharded like the parameters; the transient gathered weights of FSDP; saved
activations by remat policy; the fused loss's logits chunk). ``select_plan`` walks the
candidates from cheapest to most expensive — first more remat, then micro-batches, then
tensor parallelism — and returns the first whose estimate fits. ``benchmarks/aot_plan.py``
checks plans against XLA's own ``compiled.memory_analysis()``; ``scripts/mesh_plan.py``
prints them and writes ``gin/plans/<target>/<scale>.gin``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable, Iterator, Optional

import gin

from atlas_t5x import models, optim

GiB = 1 << 30

# Remat policies in the order the planner tries them (cheapest recomputation first).
REMAT_ORDER = ("none", "dots_with_no_batch_dims_saveable", "full")
MAX_TENSOR = 8  # tensor parallelism stays inside one host's fast interconnect [our choice]


@dataclasses.dataclass(frozen=True)
class Target:
    """A fleet of one accelerator kind: slice sizes it offers, memory per chip (bytes), chips per host.

    ``devices`` is the largest slice. A TPU target names the libtpu topology of each slice size
    (``topologies``, for deviceless compiles: atlas_t5x.aot) and its GKE / xpk names; a GPU
    target's slices are whole nodes of ``devices_per_host`` GPUs.
    """

    name: str
    devices: int
    chip_bytes: float
    devices_per_host: int
    description: str
    slice_chips: tuple[int, ...] = ()  # offered slice sizes, ascending (default: just `devices`)
    platform: str = "gpu"  # "tpu" or "gpu"
    topologies: tuple[tuple[int, str], ...] = ()  # (chips, libtpu topology name), e.g. (16, "v5e:4x4")
    single_host_chips: int = 0  # slices up to this many chips are one host (v5e: 8-chip hosts)
    peak_flops: float = 0.0  # dense bf16 peak FLOP/s per chip (data sheet)
    gke_accelerator: str = ""  # GKE node label cloud.google.com/gke-tpu-accelerator
    xpk_prefix: str = ""  # xpk --tpu-type is f"{xpk_prefix}-{chips}"

    @property
    def slices(self) -> tuple[int, ...]:
        return self.slice_chips or (self.devices,)

    def topology(self, chips: int) -> str:
        """The libtpu topology name of a `chips`-chip slice ('' when unknown: no compile)."""
        return dict(self.topologies).get(chips, "")

    def hosts(self, chips: int) -> int:
        """Hosts (VMs / nodes) of a `chips`-chip slice."""
        if chips <= max(self.single_host_chips, self.devices_per_host):
            return 1
        return chips // self.devices_per_host

    def chips_per_host(self, chips: int) -> int:
        return chips // self.hosts(chips)


_V5E_TOPOLOGIES = ((4, "v5e:2x2"), (8, "v5e:2x4"), (16, "v5e:4x4"), (32, "v5e:4x8"), (64, "v5e:8x8"),
                   (128, "v5e:8x16"), (256, "v5e:16x16"))
_V5E = dict(chip_bytes=16 * GiB, devices_per_host=4, platform="tpu", topologies=_V5E_TOPOLOGIES,
            single_host_chips=8, peak_flops=197e12, gke_accelerator="tpu-v5-lite-podslice", xpk_prefix="v5litepod")

_V6E_TOPOLOGIES = ((4, "v6e:2x2"), (8, "v6e:2x4"), (16, "v6e:4x4"), (32, "v6e:4x8"), (64, "v6e:8x8"),
                   (128, "v6e:8x16"), (256, "v6e:16x16"))
_V6E = dict(chip_bytes=32 * GiB, devices_per_host=4, platform="tpu", topologies=_V6E_TOPOLOGIES,
            single_host_chips=8, peak_flops=918e12, gke_accelerator="tpu-v6e-slice", xpk_prefix="v6e")

# Targets; gin/plans/<name>/<scale>.gin are shipped for the single-slice ones (gpu_8x80gb, tpu_256x16gib).
TARGETS = {
    "gpu_8x80gb": Target("gpu_8x80gb", 8, 80e9, 8, "one node of 8 x 80 GB GPUs (H100/A100 80GB)", peak_flops=989e12),
    "tpu_256x16gib": Target("tpu_256x16gib", 256, description="a 256-chip TPU slice with 16 GiB per chip (v5e-256)",
                            slice_chips=(256,), **_V5E),
    "tpu_v5e_256": Target("tpu_v5e_256", 256, description="TPU v5e slices of 8 to 256 chips, 16 GiB per chip",
                          slice_chips=(8, 16, 32, 64, 128, 256), **_V5E),
    "tpu_v6e_256": Target("tpu_v6e_256", 256, description="TPU v6e (Trillium) slices of 8 to 256 chips, 32 GiB per chip",
                          slice_chips=(8, 16, 32, 64, 128, 256), **_V6E),
    "gpu_h100_64": Target("gpu_h100_64", 64, 80e9, 8, "SLURM nodes of 8 x H100 80GB, runs on 1 to 8 nodes",
                          slice_chips=(8, 16, 32, 64), peak_flops=989e12),
}


class PlanError(ValueError):
    """A plan that cannot run: indivisible mesh, or more memory than the chip has."""


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one training step (analytic; see module docstring)."""

    params: float
    gradients: float
    optimizer: float
    gathered_weights: float
    activations: float
    loss: float

    @property
    def total(self) -> float:
        return sum(dataclasses.astuple(self))

    def lines(self) -> list[str]:
        rows = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)] + [("total", self.total)]
        return [f"  {name:<17} {value / GiB:9.2f} GiB" for name, value in rows]


@dataclasses.dataclass(frozen=True)
class Plan:
    """A mesh, remat policy and micro-batch count for one model, batch and slice."""

    scale: str
    devices: int
    chip_bytes: float
    seq_len: int
    global_batch: int
    data: int
    fsdp: int
    tensor: int
    remat_policy: str
    microbatches: int
    memory: MemoryEstimate
    usable_fraction: float = 0.9

    @property
    def usable_bytes(self) -> float:
        return self.usable_fraction * self.chip_bytes

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.usable_bytes

    def gin_bindings(self) -> list[str]:
        """The gin lines that apply this plan to a run (mesh, remat policy, micro-batches)."""
        return [
            f"MeshConfig.data = {self.data}",
            f"MeshConfig.fsdp = {self.fsdp}",
            f"MeshConfig.tensor = {self.tensor}",
            f'ModelConfig.remat_policy = "{self.remat_policy}"',
            f"train.num_microbatches = {self.microbatches}",
        ]

    def describe(self) -> str:
        rows_per_device = self.global_batch // (self.data * self.fsdp * self.microbatches)
        head = (f"plan for {self.scale} (N = {models.param_count(models.get_model_config(self.scale)):,}) "
                f"on {self.devices} devices x {self.chip_bytes / GiB:.1f} GiB, seq {self.seq_len}, "
                f"batch {self.global_batch}:\n"
                f"  mesh data={self.data} fsdp={self.fsdp} tensor={self.tensor}, remat_policy="
                f"{self.remat_policy}, num_microbatches={self.microbatches} "
                f"({rows_per_device} sequences per device per micro-batch)\n"
                f"  per-device memory estimate (fits if total <= {self.usable_fraction:.0%} of the chip = "
                f"{self.usable_bytes / GiB:.2f} GiB: {'yes' if self.fits else 'NO'}):")
        return "\n".join([head, *self.memory.lines()])


def _shard(size: int, ways: int) -> float:
    """Elements per device of a dimension split `ways` ways (replicated when indivisible)."""
    return size / ways if size % ways == 0 else size


def _param_bytes_per_device(cfg: models.ModelConfig, fsdp: int, tensor: int) -> tuple[float, float, float]:
    """(parameter elements per device, one layer's elements gathered over fsdp, embedding gathered).

    Mirrors partitioning.LOGICAL_AXIS_RULES: embed→fsdp; heads, mlp, vocab→tensor; a dimension
    its mesh axes do not divide is replicated (partitioning._drop_indivisible).
    """
    d, h, kv, f, v = cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.d_ff, cfg.vocab_size
    d_local = _shard(d, fsdp)
    attention = 4 * d_local * _shard(h, tensor) * kv
    mlp = 3 * d_local * _shard(f, tensor)
    layer_local = attention + mlp + d_local
    embedding_local = _shard(v, tensor) * d_local
    layer_gathered = 4 * d * _shard(h, tensor) * kv + 3 * d * _shard(f, tensor) + d
    embedding_gathered = _shard(v, tensor) * d
    return cfg.num_layers * layer_local + embedding_local, layer_gathered, embedding_gathered


def _activation_bytes_per_token(cfg: models.ModelConfig, tensor: int, seq_len: int, policy: str,
                                attention: str) -> tuple[float, float]:
    """(bytes saved per token per layer for the backward pass, bytes per token of one layer's working set)."""
    c = 4 if cfg.dtype == "float32" else 2
    d = cfg.d_model
    hkv = _shard(cfg.num_heads, tensor) * cfg.d_kv
    f = _shard(cfg.d_ff, tensor)
    heads = _shard(cfg.num_heads, tensor)
    flash = attention in ("cudnn", "splash")
    scores = heads * 4 if flash else heads * seq_len * (4 + 4 + c)  # fp32 scores, fp32 probs, cast probs
    dropout = 2 * d if cfg.dropout_rate > 0 else 0  # two boolean masks
    everything = (4 * d + 8 * hkv + 4 * f) * c + dropout + scores
    carry = d * c
    saved = {
        "none": everything,
        "full": carry,
        "dots_with_no_batch_dims_saveable": carry + (2 * d + 3 * hkv + 2 * f) * c,
        "dots_saveable": carry + (2 * d + 4 * hkv + 2 * f) * c + (0 if flash else heads * seq_len * 4),
        "save_qkv_proj": carry + 3 * hkv * c,
    }[policy]
    # Working set of the layer being differentiated: its activations, their gradients and the
    # float32 temporaries around them; the factor 3 is calibrated against XLA's memory_analysis
    # of the compiled step (benchmarks/aot_plan.py: scale0/34/46 on 8 and 256 devices).
    return saved, 3 * everything


def estimate_memory(cfg: models.ModelConfig, seq_len: int, global_batch: int, data: int, fsdp: int, tensor: int,
                    remat_policy: str, microbatches: int, attention: Optional[str] = None,
                    loss_chunk_size: int = 128) -> MemoryEstimate:
    """Per-device bytes of one train step of `cfg` on a (data, fsdp, tensor) mesh.

    float32 parameters, gradients and two Adam moments are sharded like the parameters
    (4 + 4 + 8 bytes per local parameter; an extra gradient buffer with micro-batches);
    FSDP gathers two layers' weights in the compute dtype plus one layer's float32 gradient
    at a time (scanned blocks) and the embedding once. Activations are the saved values of
    every layer under `remat_policy` plus one layer's working set; attention scores count
    only for non-flash implementations (`attention`, default: the accelerator's flash kernel).
    """
    c = 4 if cfg.dtype == "float32" else 2
    attention = attention or ("xla" if cfg.attention in ("xla", "reference") else "cudnn")
    local, layer_gathered, embedding_gathered = _param_bytes_per_device(cfg, fsdp, tensor)
    gathered = 0.0
    if fsdp > 1:
        gathered = (2 * layer_gathered + embedding_gathered) * c + (layer_gathered + embedding_gathered) * 4
    tokens = global_batch * seq_len / (data * fsdp * microbatches)
    saved, working = _activation_bytes_per_token(cfg, tensor, seq_len, remat_policy, attention)
    rows = global_batch / (data * fsdp * microbatches)
    loss = rows * min(loss_chunk_size, seq_len) * _shard(cfg.vocab_size, tensor) * 4 * 3
    return MemoryEstimate(
        params=4 * local,
        gradients=4 * local * (2 if microbatches > 1 else 1),
        optimizer=8 * local,
        gathered_weights=gathered,
        activations=tokens * (cfg.num_layers * saved + working),
        loss=loss,
    )


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def check_mesh(cfg: models.ModelConfig, devices: int, global_batch: int, data: int, fsdp: int, tensor: int,
               microbatches: int = 1) -> None:
    """Raises PlanError naming every number when the mesh does not divide devices, heads or batch."""
    problems = []
    if data * fsdp * tensor != devices:
        problems.append(f"mesh data*fsdp*tensor = {data}*{fsdp}*{tensor} = {data * fsdp * tensor} "
                        f"but there are {devices} devices")
    if tensor > 1 and (cfg.num_heads % tensor or cfg.d_ff % tensor):
        problems.append(f"tensor = {tensor} does not divide num_heads = {cfg.num_heads} and d_ff = {cfg.d_ff} "
                        f"of {cfg.name} (divisors of num_heads: {_divisors(cfg.num_heads)})")
    ways = data * fsdp * microbatches
    if global_batch % ways:
        problems.append(f"global batch {global_batch} is not a multiple of data*fsdp*num_microbatches = "
                        f"{data}*{fsdp}*{microbatches} = {ways}")
    if problems:
        raise PlanError(f"mesh for {cfg.name} on {devices} devices: " + "; ".join(problems))


def _candidates(cfg: models.ModelConfig, devices: int, global_batch: int,
                devices_per_host: int) -> Iterator[tuple[int, int, int, int, str]]:
    """(data, fsdp, tensor, microbatches, remat) from cheapest to most expensive."""
    tensors = [t for t in _divisors(devices)
               if t <= min(MAX_TENSOR, devices_per_host) and cfg.num_heads % t == 0 and cfg.d_ff % t == 0]
    for tensor in tensors:
        batch_ways = devices // tensor
        # FSDP over as many devices as the embed dimension allows; data parallel over the rest.
        fsdp = max(k for k in _divisors(batch_ways) if cfg.d_model % k == 0)
        data = batch_ways // fsdp
        microbatches = 1
        while global_batch % (data * fsdp * microbatches) == 0:
            for remat in REMAT_ORDER:
                yield data, fsdp, tensor, microbatches, remat
            microbatches *= 2


def select_plan(scale: str | models.ModelConfig, devices: int, chip_bytes: float, seq_len: int = 2048,
                global_batch: Optional[int] = None, dtype: str = "bfloat16", devices_per_host: int = 8,
                usable_fraction: float = 0.9, attention: Optional[str] = None) -> Plan:
    """The cheapest plan whose per-device estimate fits `usable_fraction` of `chip_bytes`.

    Args:
      scale: model scale name, or a ModelConfig (sizes defined only by a gin file, e.g. demo0).
      devices: accelerator count; chip_bytes: memory per device (bytes).
      seq_len: tokens per sequence; global_batch: sequences per step (default: the paper's
        batch for the scale, ``optim.paper_batch_size``).
      dtype: compute dtype (parameters stay float32).
      devices_per_host: tensor parallelism is kept within a host.
      attention: implementation assumed for the scores' memory (default: a flash kernel).

    Raises:
      PlanError: nothing fits (the message gives the least memory any candidate needs and the
        device count that would fit) or no mesh divides the batch.
    """
    cfg = (dataclasses.replace(scale, dtype=dtype) if isinstance(scale, models.ModelConfig)
           else models.get_model_config(scale, dtype=dtype))
    scale = cfg.name
    if global_batch is None:
        global_batch = optim.paper_batch_size(models.param_count(cfg))
    best: Optional[Plan] = None
    for data, fsdp, tensor, micro, remat in _candidates(cfg, devices, global_batch, devices_per_host):
        memory = estimate_memory(cfg, seq_len, global_batch, data, fsdp, tensor, remat, micro, attention)
        plan = Plan(scale, devices, chip_bytes, seq_len, global_batch, data, fsdp, tensor, remat, micro, memory,
                    usable_fraction)
        if plan.fits:
            return plan
        if best is None or memory.total < best.memory.total:
            best = plan
    if best is None:
        raise PlanError(f"no mesh of {devices} devices splits global batch {global_batch} of {scale}: "
                        f"the batch axes data*fsdp must divide {global_batch}")
    needed = devices * 2
    hint = ""
    while needed <= 65536:
        try:
            more = select_plan(cfg, needed, chip_bytes, seq_len, global_batch, dtype, devices_per_host,
                               usable_fraction, attention)
            hint = f"; {needed} devices would fit ({more.memory.total / GiB:.2f} GiB per device)"
            break
        except PlanError:
            needed *= 2
    raise PlanError(
        f"no plan for {scale} fits {devices} devices x {chip_bytes / GiB:.1f} GiB (usable "
        f"{usable_fraction:.0%}): the smallest estimate is {best.memory.total / GiB:.2f} GiB per device "
        f"(mesh data={best.data} fsdp={best.fsdp} tensor={best.tensor}, remat {best.remat_policy}, "
        f"{best.microbatches} micro-batches){hint}")


def evaluate_plan(scale: str, devices: int, chip_bytes: float, seq_len: int, global_batch: int, data: int,
                  fsdp: int, tensor: int, remat_policy: str, microbatches: int, dtype: str = "bfloat16",
                  devices_per_host: int = 8, usable_fraction: float = 0.9) -> Plan:
    """A given plan with its estimate; raises PlanError when it cannot run or does not fit.

    The error carries the memory figures and the nearest plan that fits (``select_plan``), so
    a bad plan is refused before anything is allocated.
    """
    cfg = models.get_model_config(scale, dtype=dtype, remat_policy=remat_policy)
    check_mesh(cfg, devices, global_batch, data, fsdp, tensor, microbatches)
    memory = estimate_memory(cfg, seq_len, global_batch, data, fsdp, tensor, remat_policy, microbatches)
    plan = Plan(scale, devices, chip_bytes, seq_len, global_batch, data, fsdp, tensor, remat_policy, microbatches,
                memory, usable_fraction)
    if not plan.fits:
        try:
            nearest = select_plan(scale, devices, chip_bytes, seq_len, global_batch, dtype, devices_per_host,
                                  usable_fraction).describe()
        except PlanError as err:
            nearest = str(err)
        raise PlanError(f"this plan does not fit:\n{plan.describe()}\nnearest plan that fits:\n{nearest}")
    return plan


def gin_plan_text(plan: Plan, target: Target) -> str:
    """The contents of gin/plans/<target>/<scale>.gin for `plan`."""
    vocab_size = models.get_model_config(plan.scale).vocab_size
    lines = [
        f"# Sharding plan for {plan.scale} on {target.description}: {plan.devices} devices x "
        f"{plan.chip_bytes / GiB:.1f} GiB, seq {plan.seq_len}, batch {plan.global_batch} (the paper's).",
        "# Generated by `python scripts/mesh_plan.py --write_gin` (atlas_t5x.plans.select_plan); per-device",
        f"# estimate {plan.memory.total / GiB:.2f} GiB. Use after gin/models/{plan.scale}.gin and gin/paper.gin.",
        "# Eval rows sized to the slice: a multiple of data x fsdp whose float32 logits fit (plans.eval_rows).",
        "import atlas_t5x.eval.callback",
        "",
        *plan.gin_bindings(),
        f"PerLanguageEval.batch_size = {eval_rows(plan, vocab_size, plan.global_batch)}",
    ]
    return "\n".join(lines) + "\n"


@gin.configurable(allowlist=["check_memory"])
def check_run(cfg: models.ModelConfig, mesh_shape: dict, seq_len: int, global_batch: int, microbatches: int,
              chip_bytes: Optional[float] = None, check_memory: bool = True) -> Optional[MemoryEstimate]:
    """The trainer's pre-flight check, before anything is allocated.

    Raises PlanError when `tensor` does not divide the heads or MLP width (they would be
    silently replicated), or — on a device that reports its memory (`bytes_limit`; not CPU) or
    with `chip_bytes` given — when the estimate exceeds it: the message has the figures and
    the nearest plan that fits. Returns the estimate (None when no chip size is known).
    """
    data, fsdp, tensor = (int(mesh_shape.get(a, 1)) for a in ("data", "fsdp", "tensor"))
    if tensor > 1 and (cfg.num_heads % tensor or cfg.d_ff % tensor):
        raise PlanError(f"MeshConfig.tensor = {tensor} does not divide {cfg.name}'s num_heads = {cfg.num_heads} "
                        f"and d_ff = {cfg.d_ff} (divisors of num_heads: {_divisors(cfg.num_heads)}); "
                        f"the mesh has data*fsdp*tensor = {data}*{fsdp}*{tensor} devices")
    if chip_bytes is None:
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        chip_bytes = stats.get("bytes_limit")
    if not chip_bytes or not check_memory:
        return None
    memory = estimate_memory(cfg, seq_len, global_batch, data, fsdp, tensor, cfg.remat_policy, microbatches)
    if memory.total > chip_bytes:
        devices = data * fsdp * tensor
        plan = Plan(cfg.name, devices, chip_bytes, seq_len, global_batch, data, fsdp, tensor, cfg.remat_policy,
                    microbatches, memory, usable_fraction=1.0)
        nearest = "(no spec scale: no suggestion)"
        if cfg.name in models.SCALES:
            try:
                nearest = select_plan(cfg.name, devices, chip_bytes, seq_len, global_batch, cfg.dtype).describe()
            except PlanError as err:
                nearest = str(err)
        raise PlanError(f"this run does not fit the device memory ({chip_bytes / GiB:.1f} GiB; bind "
                        f"check_run.check_memory = False to try anyway):\n{plan.describe()}\n"
                        f"nearest plan that fits:\n{nearest}")
    return memory


# ------------------------------------------------------------------------------------------
# Placement on a fleet: the smallest slice whose step fits.

DEFAULT_MFU = 0.4  # assumed model FLOPs utilisation for step-time estimates [our assumption]


@dataclasses.dataclass(frozen=True)
class Placement:
    """A run's slice and plan, with what the slice was chosen on."""

    plan: Plan
    slice_chips: int
    hosts: int
    tried: tuple[str, ...]  # why other slices were passed over, one line each
    within_deadline: bool = True  # the estimated wall-clock is within `max_days` (or none was set)


DEFAULT_MAX_DAYS = 3.0  # a run's wall-clock bound when choosing its slice [our choice]


def place(cfg: models.ModelConfig, target: Target, seq_len: int, global_batch: int, steps: Optional[int] = None,
          check: Optional[Callable[[Plan], Optional[str]]] = None, usable_fraction: float = 0.9,
          max_days: Optional[float] = DEFAULT_MAX_DAYS, mfu: float = DEFAULT_MFU,
          plans_per_slice: int = 2) -> Placement:
    """The smallest slice of `target` whose plan fits and that finishes the run within `max_days`.

    Slices need at least one sequence per chip (`global_batch` >= chips). On each slice size
    (ascending) the plans are those whose estimate fits, cheapest first (`fitting_plans`: the
    first is `select_plan`'s); `check(plan)` may refuse one with a reason (e.g. the compiled step
    does not fit), then the next (at most `plans_per_slice` per slice) and the next slice are tried. With `steps` and `max_days`, slices whose estimated wall-clock
    (`step_seconds` at `mfu` x steps) exceeds `max_days` come last, largest first
    (`within_deadline` False): a run too long for any slice gets the fastest slice it fits.

    Raises:
      PlanError: no slice fits; the message lists every slice and why.
    """
    tried: list[str] = []
    sized = []
    for chips in target.slices:
        if global_batch < chips:
            tried.append(f"{chips} chips: batch {global_batch} < one sequence per chip")
        else:
            sized.append(chips)
    fast, slow = sized, []
    if steps and max_days and target.peak_flops:
        days = {c: steps * step_seconds(cfg, seq_len, global_batch, c, target.peak_flops, mfu) / 86400 for c in sized}
        fast = [c for c in sized if days[c] <= max_days]
        slow = sorted((c for c in sized if days[c] > max_days), reverse=True)
        tried += [f"{c} chips: {days[c]:.1f} days > {max_days:g} at MFU {mfu:.0%}" for c in sized if c in slow]
    for chips in fast + slow:
        candidates = fitting_plans(cfg, chips, target.chip_bytes, seq_len, global_batch,
                                   min(target.devices_per_host, target.chips_per_host(chips)), usable_fraction)
        for plan in itertools.islice(candidates, plans_per_slice):
            reason = check(plan) if check is not None else None
            if not reason:
                return Placement(plan, chips, target.hosts(chips), tuple(tried), chips in fast)
            tried.append(f"{chips} chips, mesh {plan.data}x{plan.fsdp}x{plan.tensor} remat {plan.remat_policy} "
                         f"{plan.microbatches} micro-batch(es): {reason}")
        if not any(t.startswith(f"{chips} chips") for t in tried):
            try:  # why nothing was tried: an indivisible batch, or no estimate fits (select_plan says which)
                select_plan(cfg, chips, target.chip_bytes, seq_len, global_batch, cfg.dtype,
                            min(target.devices_per_host, target.chips_per_host(chips)), usable_fraction)
                tried.append(f"{chips} chips: no plan's estimate fits")
            except PlanError as err:
                tried.append(f"{chips} chips: {str(err).split(';')[0]}")
    raise PlanError(f"{cfg.name} (batch {global_batch} x {seq_len}) fits no slice of {target.name} "
                    f"({', '.join(map(str, target.slices))} chips): " + "; ".join(tried))


def fitting_plans(cfg: models.ModelConfig, devices: int, chip_bytes: float, seq_len: int, global_batch: int,
                  devices_per_host: int = 8, usable_fraction: float = 0.9) -> Iterator[Plan]:
    """Plans whose estimate fits, in `select_plan`'s order (cheapest recomputation first)."""
    for data, fsdp, tensor, micro, remat in _candidates(cfg, devices, global_batch, devices_per_host):
        memory = estimate_memory(cfg, seq_len, global_batch, data, fsdp, tensor, remat, micro)
        plan = Plan(cfg.name, devices, chip_bytes, seq_len, global_batch, data, fsdp, tensor, remat, micro, memory,
                    usable_fraction)
        if plan.fits:
            yield plan


def eval_rows(plan: Plan, vocab_size: int, configured: int, fraction: float = 0.3) -> int:
    """Eval batch rows for `plan`'s mesh: `configured` if its per-chip logits fit, else smaller.

    The eval step holds float32 logits, their softmax and log-probabilities of its rows
    (3 x 4 bytes x seq_len x vocab / tensor per row per chip); the result is the largest
    multiple of data x fsdp, at most `configured`, whose rows keep that within `fraction` of
    the chip (at least one row per batch shard). Estimate only: the rehearsal compiles it.
    """
    ways = plan.data * plan.fsdp
    per_row = 3 * 4 * plan.seq_len * _shard(vocab_size, plan.tensor)
    rows_per_chip = max(1, min(configured // ways, int(fraction * plan.chip_bytes // per_row)))
    return rows_per_chip * ways


def step_seconds(cfg: models.ModelConfig, seq_len: int, global_batch: int, chips: int, peak_flops: float,
                 mfu: float = DEFAULT_MFU) -> float:
    """Estimated seconds per step: model FLOPs (models.flops_per_token) / (chips x peak x MFU)."""
    if peak_flops <= 0 or not 0 < mfu <= 1:
        raise ValueError(f"peak_flops ({peak_flops}) must be positive and mfu ({mfu}) in (0, 1]")
    return models.flops_per_token(cfg, seq_len) * global_batch * seq_len / (chips * peak_flops * mfu)
