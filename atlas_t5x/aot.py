"""Deviceless ahead-of-time compiles of the train and eval steps on the real accelerator compiler.

`jax.experimental.topologies.get_topology_desc` describes a TPU slice (``platform="tpu"``,
a libtpu topology name such as ``"v5e:16x16"``) without any TPU attached: libtpu (the ``tpu``
extra) runs XLA:TPU and Mosaic (the Pallas splash-attention kernel) on the host. Every input of
the step is abstract (``jax.ShapeDtypeStruct`` with its sharding: `trainer.state_layout`, the
batch, the dropout key), so nothing is allocated; ``compiled.memory_analysis()`` then gives the
bytes one chip needs. This is how MaxText's ``train_compile`` checks configurations.

    from atlas_t5x import aot, models
    result = aot.compile_steps(models.get_model_config("tiny0"), "tpu", "v5e:2x2",
                               data=1, fsdp=4, tensor=1, global_batch=8, seq_len=128,
                               remat_policy="full", microbatches=1, eval_batch=8)
    result.bytes_per_chip, result.eval_bytes_per_chip, result.device_kind

`TopologyError` is raised when the platform's compiler is not installed or does not know the
topology (the message names both). GPU (``platform="cuda"``) needs jax's CUDA plugin, which this
project does not install (see docs/architecture.md); plans for GPU targets stay analytic.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Optional, Sequence

GiB = 1 << 30


class TopologyError(RuntimeError):
    """The compiler for a topology is missing or does not know it."""


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """XLA's per-chip memory_analysis of one compiled step (bytes)."""

    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    generated_code: int

    @property
    def total(self) -> int:
        """Bytes a chip holds while the step runs: arguments + outputs - aliased (donated) + temporaries."""
        return self.arguments + self.outputs - self.aliased + self.temporaries

    @classmethod
    def from_analysis(cls, mem) -> "StepMemory":
        return cls(int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes), int(mem.alias_size_in_bytes),
                   int(mem.temp_size_in_bytes), int(getattr(mem, "generated_code_size_in_bytes", 0)))


@dataclasses.dataclass(frozen=True)
class CompileResult:
    """What one deviceless compile of a (model, mesh, plan) reports."""

    device_kind: str
    platform: str
    topology: str
    chips: int
    train: StepMemory
    eval: Optional[StepMemory]
    compile_s: float  # wall seconds: lowering + compiling both steps
    eval_batch: Optional[int] = None  # eval rows compiled (the first of `eval_batches` that compiled and fit)
    eval_error: Optional[str] = None  # why no eval batch was compiled (the last try's reason)

    @property
    def bytes_per_chip(self) -> int:
        """The train step's per-chip bytes (the eval step runs with the state resident; see eval_bytes_per_chip)."""
        return self.train.total

    @property
    def eval_bytes_per_chip(self) -> Optional[int]:
        return None if self.eval is None else self.eval.total


@functools.lru_cache(maxsize=None)
def topology_devices(platform: str, topology: str) -> tuple:
    """The devices of a topology description (not attached; for compiling only).

    Raises:
      TopologyError: the platform's compiler is not installed, or it does not know `topology`.
    """
    # Compiling uses no chip, so libtpu's one-process-per-host lock (/tmp/libtpu_lockfile) does not
    # apply; without this a second compile (or any JAX process that tried the TPU runtime) blocks it.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    import atlas_t5x

    if platform == "tpu" and atlas_t5x._host_has_no_accelerator():
        # No TPU VM here: tell libtpu so, instead of its warnings about metadata it cannot find.
        for name, value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
                            ("TPU_ACCELERATOR_TYPE", "v5litepod-1")):
            os.environ.setdefault(name, value)
    from jax.experimental import topologies

    try:
        if platform == "tpu":
            desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
        else:
            desc = topologies.get_topology_desc(platform=platform, topology_name=topology)
    except Exception as err:  # jax raises RuntimeError / JaxRuntimeError / ValueError / ImportError here
        hint = (" (install the tpu extra: pip install 'atlas_t5x[tpu]', i.e. libtpu matching jax)"
                if platform == "tpu" else "")
        raise TopologyError(f"no {platform} compiler for topology {topology!r}{hint}: "
                            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    return tuple(desc.devices)


def compile_steps(cfg, platform: str, topology: str, data: int, fsdp: int, tensor: int, global_batch: int,
                  seq_len: int, remat_policy: str, microbatches: int, eval_batch: Optional[int] = None,
                  loss_chunk_size: int = 128, attention: Optional[str] = None,
                  eval_batches: Sequence[int] = (), eval_limit_bytes: Optional[float] = None) -> CompileResult:
    """Compiles the train step (and the eval step when `eval_batch` is given) for a topology.

    `eval_batches` instead of `eval_batch`: eval row counts tried in order until one compiles
    with at most `eval_limit_bytes` per chip (the result's `eval_batch`; XLA refuses programs
    larger than the chip at compile time, reported in `eval_error`).

    Args:
      cfg: models.ModelConfig (its remat policy and attention are replaced by the arguments, its
        scan unroll limit by the target platform's).
      platform, topology: e.g. "tpu", "v5e:4x4" (`topology_devices`).
      data, fsdp, tensor: mesh axis sizes; their product must be the topology's chip count.
      global_batch, seq_len: sequences per step and tokens per sequence.
      remat_policy, microbatches: the plan's (`atlas_t5x.plans`).
      eval_batch: rows of one eval batch (`PerLanguageEval.batch_size`, else the global batch).
      attention: implementation compiled (default: "splash" on TPU, else the config's).

    Raises:
      TopologyError: see `topology_devices`. ValueError: the mesh does not match the chips or
        the batch does not divide the batch axes (message names the numbers).
    """
    import jax
    import jax.numpy as jnp

    from atlas_t5x import models, optim, partitioning, trainer

    devices = topology_devices(platform, topology)
    attention = attention or ("splash" if platform == "tpu" else cfg.attention)
    cfg = dataclasses.replace(cfg, remat_policy=remat_policy, attention=attention,
                              scan_unroll_max_layers=models.scan_unroll_max_layers(cfg, platform))
    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=data, fsdp=fsdp, tensor=tensor), devices)
    ways = data * fsdp
    if global_batch % (ways * microbatches):
        raise ValueError(f"global batch {global_batch} does not split into {microbatches} micro-batch(es) over "
                         f"data*fsdp = {ways}: it must be a multiple of {ways * microbatches}")
    model = models.DecoderLM(cfg)
    schedule = optim.make_schedule("wsd", total_steps=10_000, warmup_steps=1000)
    optimizer = optim.make_optimizer(schedule)
    start = time.perf_counter()
    abstract_state, state_sh = trainer.state_layout(model, optimizer, mesh,
                                                    jax.ShapeDtypeStruct((1, seq_len), jnp.int32))
    batch_sh = partitioning.batch_sharding(mesh)
    replicated = partitioning.replicated(mesh)

    def abstract_batch(rows: int) -> dict:
        return {k: jax.ShapeDtypeStruct((rows, seq_len), jnp.float32 if k == "decoder_loss_weights" else jnp.int32,
                                        sharding=batch_sh) for k in trainer.MODEL_INPUT_KEYS}

    key = jax.eval_shape(jax.random.PRNGKey, 0)
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated)
    step = jax.jit(trainer.make_train_step(model, optimizer, schedule, microbatches, loss_chunk_size),
                   in_shardings=(state_sh, {k: batch_sh for k in trainer.MODEL_INPUT_KEYS}, replicated),
                   out_shardings=(state_sh, {k: replicated for k in ("loss", "n_tokens", "grad_norm", "lr")}),
                   donate_argnums=(0,))
    with partitioning.axis_rules(mesh):
        train_mem = StepMemory.from_analysis(
            step.lower(abstract_state, abstract_batch(global_batch), key).compile().memory_analysis())
        eval_mem, eval_used, eval_error = None, None, None
        tries = list(eval_batches) or ([eval_batch] if eval_batch is not None else [])
        for rows in tries:
            if rows % ways:
                raise ValueError(f"eval batch {rows} is not a multiple of data*fsdp = {ways}")
            eval_step = jax.jit(trainer.make_eval_fn(model), in_shardings=(state_sh.params, batch_sh),
                                out_shardings=(replicated, replicated))
            try:
                mem = StepMemory.from_analysis(
                    eval_step.lower(abstract_state.params, abstract_batch(rows)).compile().memory_analysis())
            except Exception as err:  # XLA: the program does not fit the chip (RESOURCE_EXHAUSTED) and the like
                if not eval_batches:
                    raise
                eval_error = f"eval batch {rows}: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
                continue
            if eval_limit_bytes is not None and mem.total > eval_limit_bytes:
                eval_error = f"eval batch {rows}: {mem.total / GiB:.2f} GiB per chip"
                continue
            eval_mem, eval_used, eval_error = mem, rows, None
            break
    return CompileResult(device_kind=str(devices[0].device_kind), platform=platform, topology=topology,
                         chips=len(devices), train=train_mem, eval=eval_mem,
                         compile_s=time.perf_counter() - start, eval_batch=eval_used, eval_error=eval_error)
