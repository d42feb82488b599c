"""The train loop: sharded jitted train step, logging, checkpoints, callbacks (gin entry `train`).

One step, top to bottom (`make_train_step`): forward with a dropout key derived from the step,
weighted token cross-entropy (mean over the batch's weighted tokens, nats), gradients, optimizer
update. The step is jitted pjit-style with explicit in/out shardings from `partitioning` and the
state donated, so the same code runs on one CPU device and on a pod. With gradient accumulation
(`train.num_microbatches = M`, as in t5x) the step splits its global batch into M micro-batches
and sums their gradients before the one update: the update is the full-batch one and a step is
still one optimizer update on one global batch.

Host work per step is: take the next batch, already read and placed as a global array by the
prefetch thread (atlas_t5x/data/prefetch.py, `prefetch_batches` ahead), dispatch the compiled
step (asynchronously), keep the metric arrays. The host waits for the device only at
"flush" points — every `log_every_steps`, before a checkpoint, before callbacks and at the end —
where the kept losses are checked for NaN/Inf and logged. A non-finite loss stops the run naming
the step; because every checkpoint is preceded by a flush, no checkpoint ever holds a state that
came from a non-finite loss or gradient.

MODEL_DIR is a local folder (relative or absolute) or a cloud URL such as `gs://bucket/run`
(paths go through etils.epath). Outputs under it: `logs/train.jsonl`, TensorBoard scalars in
`tb/`, `checkpoints/` (see atlas_t5x/checkpoints.py), `config.gin` (the operative gin config of
the latest start, written once the run has started) and `config_history/` (one entry per start;
atlas_t5x/resume.py, which also refuses a restart with another schedule, mixture or vocabulary).
Progress: a bar on a terminal, else an absl INFO line per row (atlas_t5x/train_progress.py).
One train.jsonl row per flush:

  run, step (train steps done), loss (mean over the steps since the last row of the per-step
  token-mean cross-entropy, nats/token), grad_norm (last step, before clipping), lr (applied at
  the last step), schedule_phase (of the last step: warmup|stable|decay), tokens (non-padding
  training tokens so far, all languages), tokens_by_lang, tokens_per_s (non-padding tokens per
  second of train steps since the last row), steps_per_s, flops_per_s (model FLOPs per second:
  models.flops_per_token × global_batch × seq_len per step, padding positions included), mfu
  (flops_per_s / (peak FLOP/s per device × devices): the data-sheet dense bf16 peak of a known
  accelerator; on CPU the theoretical peak cores × SIMD lanes × FMA units × 2 × clock, `cpu_peak`;
  else a matmul peak measured once per process at start, `measure_peak_flops`), step_time_s (wall
  seconds per train step since the last row: 1 / steps_per_s), input_wait_s (seconds the loop
  waited for input batches since the last row; near 0 while the prefetch thread keeps ahead).

A restarted run drops the rows logged after its checkpoint, and a run that starts without one
empties train.jsonl, eval.jsonl and live_prediction.jsonl, so each step appears once. One trainer
owns a model_dir at a time (atlas_t5x.run_lock); a damaged newest checkpoint is moved aside and the
previous one restored (atlas_t5x.checkpoints).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
import os
import signal
import time
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from jax.experimental import multihost_utils

from atlas_t5x import (checkpoints, cooldown, logio, losses, models, optim, partitioning, plans, preflight,
                       profiling, resume, run_lock, train_progress)
from atlas_t5x.data import prefetch
from atlas_t5x.callbacks import Callback, RunInfo, StepContext, due_callbacks, validate_callbacks
from atlas_t5x.train_state import TrainState  # also importable as trainer.TrainState (older code)

# Batch keys the model consumes on device; decoder_lang_ids stay on the host (accounting).
MODEL_INPUT_KEYS = (
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_segment_ids",
    "decoder_positions",
    "decoder_loss_weights",
)

# Dense bf16 peak FLOP/s per device by `device_kind` substring (vendor data sheets); first match wins.
_PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),
    ("TPU v6e", 918e12),
)


class NonFiniteLossError(FloatingPointError):
    """The training loss or gradient norm became NaN or Inf."""


@functools.lru_cache(maxsize=None)
def measure_peak_flops(devices: tuple[jax.Device, ...], dtype: str, repeats: int = 3) -> float:
    """Matmul FLOP/s per device, measured with every device of `devices` multiplying at once.

    The MFU reference where no data sheet applies (CPU): best of `repeats` batched square
    matmuls in `dtype` (float32 accumulation), 1024 wide on CPU and 8192 on accelerators.
    All devices run together so that devices sharing cores (a forced host device count) are
    not each credited with the whole machine. A quick, load-sensitive figure (about a second
    on this CPU; cached per process); benchmarks/train_throughput.py measures carefully.
    """
    n, size = len(devices), (1024 if devices[0].platform == "cpu" else 8192)
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(devices), ("d",)),
                                          jax.sharding.PartitionSpec("d"))
    ones = jax.jit(lambda: jnp.ones((n, size, size), jnp.dtype(dtype)), out_shardings=sharding)()
    matmul = jax.jit(lambda x: jnp.einsum("nij,njk->nik", x, x, preferred_element_type=jnp.float32),
                     out_shardings=sharding)
    matmul(ones).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(ones).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def lookup_peak_flops(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s per device for a known accelerator `device_kind`, else None (CPU)."""
    kind = device_kind.lower()
    for name, flops in _PEAK_BF16_FLOPS:
        if name.lower() in kind:
            return flops
    return None


@dataclasses.dataclass(frozen=True)
class CpuPeak:
    """Theoretical float32 FLOP/s of this machine's CPU cores: cores × SIMD lanes × FMA units × 2 × clock.

    XLA's CPU backend runs bfloat16 matmuls through float32 vector units, so this is the peak
    for both compute dtypes. `source` says where each input came from.
    """

    cores: int
    simd_lanes: int  # float32 lanes per vector register: 16 (AVX-512), 8 (AVX2), 4 (SSE/NEON)
    fma_units: int  # vector FMA pipes per core (2 on server Xeons with AVX-512, Zen 4 and later)
    clock_hz: float
    source: str

    @property
    def flops(self) -> float:
        return self.cores * self.simd_lanes * self.fma_units * 2.0 * self.clock_hz

    def describe(self) -> str:
        return (f"{self.cores} cores x {self.simd_lanes} fp32 lanes x {self.fma_units} FMA units x 2 FLOPs x "
                f"{self.clock_hz / 1e9:.2f} GHz = {self.flops / 1e9:.1f} GFLOP/s ({self.source})")


def cpu_peak(cpuinfo: str | None = None, cores: int | None = None, clock_hz: float | None = None,
             fma_units: int = 2) -> CpuPeak | None:
    """The theoretical CPU peak from /proc/cpuinfo (SIMD width from the avx512f/avx2 flags, clock
    from "cpu MHz") and the cores this process may use; None where /proc/cpuinfo is unreadable."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    lanes, isa = (16, "avx512f") if "avx512f" in flags else (8, "avx2") if "avx2" in flags else (4, "sse/neon")
    if clock_hz is None:
        if "cpu MHz" not in fields:
            return None
        clock_hz, clock_source = float(fields["cpu MHz"]) * 1e6, "clock: /proc/cpuinfo cpu MHz"
    else:
        clock_source = "clock: given"
    cores = cores or len(os.sched_getaffinity(0))
    return CpuPeak(cores, lanes, fma_units, clock_hz,
                   f"{fields.get('model name', 'cpu')}; lanes: {isa} flag; {clock_source}; FMA units assumed")


def _model_inputs(batch: Mapping[str, Any]) -> dict:
    return dict(
        positions=batch["decoder_positions"],
        segment_ids=batch["decoder_segment_ids"],
    )


def split_microbatches(batch: Mapping[str, jax.Array], microbatches: int) -> dict:
    """[B, T] arrays → [microbatches, B / microbatches, T]; micro-batch m holds rows m, m + M, ...

    Interleaving keeps every micro-batch spread over all devices of the batch axes (each
    device's contiguous block of rows splits evenly when B / devices is a multiple of M).
    """

    def split(x):
        x = x.reshape((x.shape[0] // microbatches, microbatches) + x.shape[1:]).swapaxes(0, 1)
        return nn.with_logical_constraint(x, (None, "batch", "length"))

    return {k: split(v) for k, v in batch.items()}


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    microbatches: int = 1, loss_chunk_size: int | None = None,
                    lr_argument: bool = False) -> Callable:
    """(state, batch, dropout_key) -> (new state, metrics); metrics are scalars (loss in nats/token).

    lr_argument: the step takes the learning rate as a fourth argument, (state, batch,
      dropout_key, lr), and multiplies the optimizer's update by it; `optimizer` must then use a
      unit learning rate (AdamW's update, weight decay included, is proportional to it). One
      compiled step then serves any schedule (the cooldown branches, atlas_t5x/cooldown.py).

    microbatches: gradient accumulation. The batch is split into this many equal micro-batches
      (`split_microbatches`) whose forward/backward passes run one after another; the gradients
      of their summed token NLL are added up and divided by the batch's weighted token count,
      so loss, gradient and update equal those of the whole batch at once (up to float
      rounding), whatever the padding of each micro-batch. Dropout uses a key per micro-batch.
    loss_chunk_size: None computes the [B, T, V] logits and `losses.token_cross_entropy`; an int
      uses the model's fused projection + cross-entropy (`DecoderLM.token_loss`), that many
      positions at a time, which never holds the full logits (same loss, less memory at V = 64512).
    """
    if microbatches < 1:
        raise ValueError(f"microbatches must be >= 1, got {microbatches}")

    def summed_loss(params, batch, key):
        """(sum_nll nats, n_tokens) of one (micro-)batch."""
        variables, rngs = {"params": params}, {"dropout": key}
        tokens, targets, weights = (batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                                    batch["decoder_loss_weights"])
        if loss_chunk_size is None:
            logits = model.apply(variables, tokens, **_model_inputs(batch), deterministic=False, rngs=rngs)
            return losses.token_cross_entropy(logits, targets, weights)
        return model.apply(variables, tokens, targets, weights, **_model_inputs(batch), deterministic=False,
                           chunk_size=loss_chunk_size, rngs=rngs, method=models.DecoderLM.token_loss)

    grad_fn = jax.value_and_grad(summed_loss, has_aux=True)

    def train_step(state: TrainState, batch: Mapping[str, jax.Array], dropout_key: jax.Array, lr=None):
        step_key = jax.random.fold_in(dropout_key, state.step)
        if microbatches == 1:
            (sum_nll, n_tokens), grads = grad_fn(state.params, batch, step_key)
        else:
            def accumulate(carry, micro):
                index, micro_batch = micro
                (micro_nll, micro_tokens), micro_grads = grad_fn(
                    state.params, micro_batch, jax.random.fold_in(step_key, index))
                grads, sum_nll, n_tokens = carry
                return (jax.tree.map(jnp.add, grads, micro_grads), sum_nll + micro_nll, n_tokens + micro_tokens), None

            zero = jnp.zeros((), jnp.float32)
            carry = (jax.tree.map(jnp.zeros_like, state.params), zero, zero)
            micro = (jnp.arange(microbatches), split_microbatches(batch, microbatches))
            (grads, sum_nll, n_tokens), _ = jax.lax.scan(accumulate, carry, micro)
        per_token = 1.0 / jnp.maximum(n_tokens, 1.0)
        grads = jax.tree.map(lambda g: g * per_token.astype(g.dtype), grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        if lr is not None:
            updates = jax.tree.map(lambda u: u * lr.astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": sum_nll * per_token,
            "n_tokens": n_tokens,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state.step) if lr is None else lr,
        }
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if lr_argument:
        return train_step
    return lambda state, batch, dropout_key: train_step(state, batch, dropout_key)


def make_eval_fn(model: nn.Module) -> Callable:
    """(params, batch) -> (sum_nll [B] nats, n_tokens [B]) with dropout off."""

    def eval_fn(params, batch):
        logits = model.apply({"params": params}, batch["decoder_input_tokens"], **_model_inputs(batch),
                             deterministic=True)
        return losses.token_cross_entropy_per_example(
            logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"]
        )

    return eval_fn


def global_batch_from_host_rows(host_batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict:
    """Host-local rows (this process's slice of the global batch) → global jax arrays."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(host_batch[k])) for k in MODEL_INPUT_KEYS}


def _global_batch_from_full(batch: Mapping[str, Any], sharding: jax.sharding.Sharding) -> dict:
    """A batch every process holds in full (eval sets) → global jax arrays."""
    out = {}
    for k in MODEL_INPUT_KEYS:
        x = np.asarray(batch[k])
        out[k] = jax.make_array_from_callback(x.shape, sharding, lambda idx, x=x: x[idx])
    return out


class _EvalStep:
    """The `StepContext.eval_step` callable: numpy batch in, replicated per-example sums out."""

    def __init__(self, model, mesh, params_sharding):
        self._mesh = mesh
        self._batch_sharding = partitioning.batch_sharding(mesh)
        replicated = partitioning.replicated(mesh)
        batch_sh = {k: self._batch_sharding for k in MODEL_INPUT_KEYS}
        self._jitted = jax.jit(make_eval_fn(model), in_shardings=(params_sharding, batch_sh),
                               out_shardings=(replicated, replicated))

    def __call__(self, params, batch):
        with partitioning.axis_rules(self._mesh):
            return self._jitted(params, _global_batch_from_full(batch, self._batch_sharding))


def _configured_args(fn: Callable) -> dict[str, Any]:
    """`fn`'s defaults overlaid with its gin bindings (to keep schedule and phase consistent)."""
    values = {k: p.default for k, p in inspect.signature(fn).parameters.items()
              if p.default is not inspect.Parameter.empty}
    values.update(gin.get_bindings(fn))
    return values


# Logs whose rows carry the step they describe; a resumed run trims them to its checkpoint (train
# log) and a fresh start empties them (all three), so each step of this run appears exactly once.
RUN_LOGS = ("train.jsonl", "eval.jsonl", "live_prediction.jsonl")


def _clear_stale_logs(logs_dir: epath.Path) -> None:
    """A fresh start (no checkpoint): rows left by an earlier attempt that died before its first
    checkpoint describe steps this run will train again; drop them."""
    for name in RUN_LOGS:
        _truncate_log(logs_dir / name, -1)


def _holding_model_dir_lock(train_fn: Callable) -> Callable:
    """Runs `train_fn(model_dir, ...)` holding model_dir's lock (atlas_t5x.run_lock): a second
    trainer on the same folder stops with RunLockedError naming the owner, before writing."""

    @functools.wraps(train_fn)  # gin follows __wrapped__ to train's own signature
    def locked(model_dir, *args, **kwargs):
        lock = run_lock.acquire_for_job(checkpoints.as_path(model_dir))
        try:
            return train_fn(model_dir, *args, **kwargs)
        finally:
            lock.release()

    return locked


def _truncate_log(path: epath.Path, last_step: int) -> None:
    """Drops rows logged after `last_step` (a run that died after its last checkpoint)."""
    if logio.exists(path):
        rows = logio.read_jsonl(path)
        kept = [r for r in rows if int(r.get("step", 0)) <= last_step]
        if len(kept) != len(rows):
            logio.write_atomic(path, logio.to_jsonl(kept))


class _StopFlag:
    """SIGTERM → stop at the next step boundary (single process); multi-host uses JAX's sync point."""

    def __init__(self):
        self.requested = False
        self._installed = False
        self._previous = None

    def install(self) -> None:
        if jax.process_count() > 1:
            return  # jax.distributed's preemption notifier owns SIGTERM; see should_stop.
        try:
            previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no preemption handling
            return
        self._installed = True
        self._previous = signal.SIG_DFL if previous is None else previous  # None: set outside Python

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: checkpointing at the next step boundary and exiting")
        self.requested = True

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def state_layout(model: nn.Module, optimizer: optax.GradientTransformation, mesh: jax.sharding.Mesh,
                 example_tokens: jax.Array | jax.ShapeDtypeStruct) -> tuple[TrainState, TrainState]:
    """(abstract TrainState of ShapeDtypeStructs carrying their shardings, TrainState of shardings).

    Parameter shardings follow the model's logical axis names (partitioning rules); optimizer
    slots shaped like the parameters (Adam moments) share them; scalars (counts, step) are
    replicated. Nothing is allocated and no device is touched (`example_tokens` may be a
    ShapeDtypeStruct), so the mesh may be of devices that are not attached (atlas_t5x.aot).
    """
    with partitioning.axis_rules(mesh):
        # Abstract key and tokens: no array is placed on a device (works for deviceless AOT meshes).
        boxed = jax.eval_shape(lambda k, t: model.init(k, t)["params"], jax.eval_shape(jax.random.PRNGKey, 0),
                               jax.ShapeDtypeStruct(example_tokens.shape, example_tokens.dtype))
    params_sh = partitioning.params_shardings(boxed, mesh)
    abstract_params = nn.meta.unbox(boxed)
    replicated = partitioning.replicated(mesh)
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    opt_sh = optax.tree_map_params(optimizer, lambda _, sharding: sharding, abstract_opt, params_sh,
                                   transform_non_params=lambda _: replicated)
    state_sh = TrainState(step=replicated, params=params_sh, opt_state=opt_sh)
    abstract_state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
                                opt_state=abstract_opt)
    abstract_state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                  abstract_state, state_sh)
    return abstract_state, state_sh


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final state, the step reached, and whether it was preempted."""

    state: TrainState
    step: int
    preempted: bool
    last_log: dict | None = None  # the last train.jsonl row this call wrote


@gin.configurable(denylist=["model_dir"])
@_holding_model_dir_lock
def train(
    model_dir: str,
    model_config: models.ModelConfig = gin.REQUIRED,
    mesh_config: partitioning.MeshConfig | None = None,
    pipeline_factory: Callable[[], Any] = gin.REQUIRED,
    total_steps: int = gin.REQUIRED,
    seed: int = 0,
    log_every_steps: int = 10,
    checkpoint_every_steps: int = 1000,
    keep_checkpoints: int = 3,
    async_checkpointing: bool = True,
    callbacks: Sequence[Callback] = (),
    init_from: str | None = None,
    run_name: str | None = None,
    peak_flops_per_device: float | None = None,
    tensorboard: bool = True,
    loss_chunk_size: int | None = 128,
    num_microbatches: int = 1,
    cooldown_at_tokens: Sequence[int] = (),
    cooldown_fraction: float | None = None,
    allow_config_change: bool = False,
    allow_run_rename: bool = False,
    prefetch_batches: int = 2,
    profile_steps: Sequence[int] | None = None,
) -> TrainResult:
    """Trains `model_config` on `pipeline_factory()` for `total_steps`, resuming from model_dir.

    Args:
      model_dir: run folder (logs/, tb/, checkpoints/, config.gin): a local path (relative to the
        working directory or absolute) or a URL such as `gs://bucket/run`. If it holds a
        checkpoint, the run resumes from the newest complete one (state, step and pipeline
        position).
      model_config: the decoder (`@ModelConfig()` in gin).
      mesh_config: device mesh axis sizes; None = `MeshConfig()` with its gin bindings.
      pipeline_factory: zero-argument callable returning the train pipeline
        (`@make_train_pipeline` or `@make_synthetic_pipeline`); its `seq_len` and `global_batch`
        are the run's: each step consumes one global batch.
      total_steps: optimizer updates; the schedule spans them. With
        `num_microbatches = M` each step still takes one global batch, split into M
        micro-batches inside the step (less activation memory, same update).
      seed: parameter init and dropout keys (dropout key of step s = fold_in(key, s), so a resumed
        run draws the same masks).
      log_every_steps: flush period (host sync, NaN check, one train.jsonl row).
      checkpoint_every_steps: checkpoint period; the final step is always saved.
      keep_checkpoints: newest checkpoints kept.
      async_checkpointing: write checkpoints in the background.
      callbacks: called when step % cb.every_steps == 0 and at the final step.
      init_from: finetune: load params only from this model_dir / checkpoint folder (fresh
        optimizer, schedule from step 0). When model_dir already has a checkpoint the run resumes
        from it, but `init_from` must still hold a checkpoint (and be the one the run started from).
      run_name: RunInfo.run (default: model_dir's basename).
      peak_flops_per_device: peak FLOP/s per device for MFU; None = the data-sheet dense bf16
        peak of a known accelerator (`lookup_peak_flops`), on CPU the theoretical peak of the
        cores shared by the local devices (`cpu_peak`), else measured at start in the compute
        dtype (`measure_peak_flops`).
      tensorboard: also write scalars to MODEL_DIR/tb.
      loss_chunk_size: positions per chunk of the model's fused tied-projection cross-entropy
        (default 128: never holds the [B, T, V] float32 logits; 1.2x faster steps at V = 64512,
        see benchmarks/README.md); None = full logits + losses.token_cross_entropy.
      num_microbatches: gradient accumulation (t5x's name): each global batch is split into this
        many micro-batches whose gradients are summed inside the step, for activation memory of
        global_batch / num_microbatches rows. The update equals the whole batch's (the loss is
        token-weighted over the batch), so steps, schedule, logs and checkpoints are unchanged.
      cooldown_at_tokens: WSD cooldown branches (atlas_t5x/cooldown.py): at each of these trunk
        token counts (rounded to whole steps; inside the stable phase) a copy of the state decays
        its learning rate and is evaluated by the callbacks that evaluate branches, logged as run
        `<run>-cd<tokens>` with schedule_phase "cooldown_end"; the trunk then continues unchanged.
      cooldown_fraction: branch length as a fraction of the branch point's steps; None = the
        trunk's own `make_schedule.decay_fraction`.
      allow_config_change: resume even though the schedule, mixture, vocabulary or init_from
        differ from the checkpoint's (atlas_t5x/resume.py); each change is logged as a WARNING
        and recorded in the checkpoint metadata and the config history. Off: such a resume stops
        with ConfigChangedError listing every change.
      allow_run_rename: resume a checkpoint written under another run name (a copied or renamed
        model_dir); off: RunRenamedError naming both (atlas_t5x/resume.py). The run keeps its run id.
      prefetch_batches: batches read and placed on the devices ahead of the step in a background
        thread (atlas_t5x/data/prefetch.py); checkpoints and token counts are those of the batches
        trained. 0 reads each batch on the loop's thread.
      profile_steps: (first, last): a jax.profiler trace of train steps first..last (numbered like
        train.jsonl's step) in MODEL_DIR/profile/ (atlas_t5x/profiling.py; TensorBoard's profile
        plugin reads it). None: no trace.

    Returns:
      TrainResult(state, step, preempted). On SIGTERM the run checkpoints at the next step
      boundary, waits for the write and returns with preempted=True.

    Raises:
      NonFiniteLossError: the loss or gradient norm was NaN/Inf at a step (named in the message).
      CheckpointMismatchError: model_dir holds a checkpoint of a different model.
      ConfigChangedError: model_dir's checkpoint was written with another schedule, mixture,
        vocabulary or init_from (each listed, old and new) and allow_config_change is off.
      FileNotFoundError: init_from holds no checkpoint (also when resuming).
      NoRestorableCheckpointError: model_dir's checkpoints are all damaged (each named with why).
      RunLockedError: another trainer holds model_dir (atlas_t5x.run_lock; named in the message).
      ValueError: mesh/batch mismatch and other bad settings.
    """
    _check_counts(total_steps=total_steps, log_every_steps=log_every_steps,
                  checkpoint_every_steps=checkpoint_every_steps, keep_checkpoints=keep_checkpoints, seed=seed,
                  num_microbatches=num_microbatches, prefetch_batches=prefetch_batches)
    profile_range = profiling.check_profile_steps(profile_steps)
    run = _setup(model_dir, model_config, mesh_config, pipeline_factory, total_steps, seed, callbacks,
                 num_microbatches, cooldown_at_tokens, cooldown_fraction)
    start = _restore(run, init_from, keep_checkpoints, async_checkpointing, allow_config_change, run_name,
                     allow_run_rename)
    run_info, metadata = _announce_start(run, start, run_name)
    loop = _prepare_loop(run, start, run_info, metadata, num_microbatches=num_microbatches,
                         loss_chunk_size=loss_chunk_size, log_every_steps=log_every_steps,
                         checkpoint_every_steps=checkpoint_every_steps, tensorboard=tensorboard,
                         peak_flops_per_device=peak_flops_per_device, prefetch_batches=prefetch_batches,
                         profile_steps=profile_range)
    try:
        outcome = _step_loop(run, loop, start.state, start.start_step)
    finally:
        _shutdown(loop)
    return outcome


def _check_counts(**counts: Any) -> None:
    """Integer settings of `train` are integers (not a gin string like 'abc'); periods are positive."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"train.{name} must be an integer, got {value!r} ({type(value).__name__})")
    if counts["prefetch_batches"] < 0:
        raise ValueError(f"train.prefetch_batches must be >= 0, got {counts['prefetch_batches']}")
    if counts["total_steps"] <= 0 or counts["log_every_steps"] <= 0 or counts["checkpoint_every_steps"] <= 0:
        raise ValueError(
            f"total_steps ({counts['total_steps']}), log_every_steps ({counts['log_every_steps']}) and "
            f"checkpoint_every_steps ({counts['checkpoint_every_steps']}) must be positive"
        )


@dataclasses.dataclass
class _RunSetup:
    """What `train` builds before touching model_dir: mesh, pipeline, model, schedule, state layout."""

    model_dir: epath.Path
    is_chief: bool
    callbacks: tuple
    mesh: jax.sharding.Mesh
    pipeline: Any
    seq_len: int
    global_batch: int
    model_config: models.ModelConfig
    model: nn.Module
    total_steps: int
    schedule: optax.Schedule
    optimizer: optax.GradientTransformation
    schedule_args: dict
    cooldown_fraction: float
    branch_at: list
    init_key: jax.Array
    dropout_key: jax.Array
    dummy_tokens: jax.Array
    abstract_state: TrainState
    state_sh: TrainState

    def last_update(self, step: int) -> int:
        """Index of the optimizer update that produced step `step` (>= 1), as the schedule counts."""
        return max(step - 1, 0)

    def phase_of(self, step: int) -> str:
        args = self.schedule_args
        return optim.schedule_phase(self.last_update(step), self.total_steps, args["warmup_steps"], args["kind"],
                                    args["decay_fraction"])


def _setup(model_dir, model_config, mesh_config, pipeline_factory, total_steps, seed, callbacks,
           num_microbatches, cooldown_at_tokens, cooldown_fraction) -> _RunSetup:
    """Checks the settings and builds mesh, pipeline, model, schedule, optimizer and state layout."""
    model_dir_path = checkpoints.as_path(model_dir)
    callbacks = validate_callbacks(callbacks)
    is_chief = jax.process_index() == 0

    mesh = partitioning.make_mesh(mesh_config or partitioning.MeshConfig())
    pipeline = pipeline_factory()
    seq_len, global_batch = int(pipeline.seq_len), int(pipeline.global_batch)
    pipeline_vocab = getattr(pipeline, "vocab_size", None)
    if pipeline_vocab is not None and pipeline_vocab > model_config.vocab_size:
        raise ValueError(
            f"pipeline vocabulary has {pipeline_vocab} rows but ModelConfig.vocab_size is {model_config.vocab_size}"
        )

    model = models.DecoderLM(model_config)
    # Gradient accumulation happens inside the step (exact token weighting over the whole batch),
    # so the optimizer gets one gradient per step; optax.MultiSteps would count micro-batches.
    if num_microbatches < 1:
        raise ValueError(f"train.num_microbatches must be >= 1, got {num_microbatches}")
    if _configured_args(optim.make_optimizer).get("accumulation_steps", 1) != 1:
        raise ValueError(
            "make_optimizer.accumulation_steps is for code that calls the optimizer once per micro-batch; "
            "the trainer accumulates inside its step: bind train.num_microbatches instead")
    partitioning.check_batch_divisible(global_batch, mesh, num_microbatches)
    plans.check_run(model_config, dict(mesh.shape), seq_len, global_batch, num_microbatches)  # tensor | heads; memory
    preflight.check_eval_batches(callbacks, dict(mesh.shape), global_batch)  # eval rows | mesh
    # The schedule's other settings come from gin (make_schedule.*); the phase reads the same ones.
    schedule = optim.make_schedule(total_steps=total_steps)
    optimizer = optim.make_optimizer(schedule)
    schedule_args = _configured_args(optim.make_schedule)

    if cooldown_fraction is None:
        cooldown_fraction = schedule_args["decay_fraction"]
    branch_at = cooldown.branch_steps(
        cooldown_at_tokens, global_batch * seq_len, total_steps, schedule_args["warmup_steps"],
        optim.decay_start_step(total_steps, schedule_args["decay_fraction"])
        if schedule_args["kind"] == "wsd" else total_steps, cooldown_fraction) if cooldown_at_tokens else []
    if branch_at and schedule_args["kind"] != "wsd":
        raise ValueError(f"train.cooldown_at_tokens needs a WSD schedule (make_schedule.kind = 'wsd'), "
                         f"got {schedule_args['kind']!r}")

    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    dummy_tokens = jnp.zeros((1, seq_len), jnp.int32)
    abstract_state, state_sh = state_layout(model, optimizer, mesh, dummy_tokens)
    return _RunSetup(
        model_dir=model_dir_path, is_chief=is_chief, callbacks=tuple(callbacks), mesh=mesh, pipeline=pipeline,
        seq_len=seq_len, global_batch=global_batch, model_config=model_config, model=model,
        total_steps=total_steps, schedule=schedule, optimizer=optimizer, schedule_args=schedule_args,
        cooldown_fraction=cooldown_fraction, branch_at=branch_at, init_key=init_key, dropout_key=dropout_key,
        dummy_tokens=dummy_tokens, abstract_state=abstract_state, state_sh=state_sh)


@dataclasses.dataclass
class _Start:
    """Where the run starts: its state (restored, finetuned or fresh) and how it got there."""

    state: TrainState
    start_step: int
    resume_step: int | None  # the restored checkpoint's step; None on a fresh start
    how: str  # train_progress.describe_start's line
    init: str  # RunInfo.init: "scratch", or the finetune source
    settings: dict  # resume.resume_settings of this start
    config_changes: list  # (setting, old, new) accepted with train.allow_config_change
    change_log: list  # every recorded config change, for the checkpoint metadata
    shapes: dict  # checkpoints.param_shapes
    ckpt: checkpoints.TrainCheckpointer
    run_id: str = ""  # drawn at the run's first start, kept in its checkpoints (resume.run_id_for_start)


def _restore(run: _RunSetup, init_from, keep_checkpoints, async_checkpointing, allow_config_change,
             run_name: str | None = None, allow_run_rename: bool = False) -> _Start:
    """The newest good checkpoint of model_dir (state and pipeline position), else init_from's
    params with a fresh optimizer, else a fresh init; checks a resume against the recorded settings."""
    pipeline, optimizer = run.pipeline, run.optimizer
    params_sh = run.state_sh.params
    # Everything that can fail on a bad model_dir fails here, before anything is written.
    settings = resume.resume_settings(run.schedule_args, run.total_steps, pipeline, init_from)
    if init_from:  # on resume too: a finetune whose source has gone is named, not silently resumed
        checkpoints.resolve_checkpoint(init_from)
    ckpt = checkpoints.TrainCheckpointer(run.model_dir, keep=keep_checkpoints, async_save=async_checkpointing)
    shapes = checkpoints.param_shapes(run.abstract_state.params)
    # The newest checkpoint that verifies; damaged newer ones are logged and moved aside.
    restored = ckpt.restore_latest(run.abstract_state, shapes)
    resume_step = None if restored is None else restored[0]

    def fresh_state(params):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

    init, config_changes, change_log = "scratch", [], []
    if restored is not None:
        _, state, pipeline_state, meta = restored
        where = str(ckpt.directory / str(resume_step))
        recorded = resume.settings_from_metadata(meta)
        config_changes = resume.check_resume(recorded, settings, resume_step, where, allow_config_change)
        run_id = resume.run_id_for_start(meta, run_name or run.model_dir.name, where, allow_run_rename)
        if config_changes:
            note = resume.extension_note(recorded, settings, resume_step)
            if note:
                logging.warning("%s", note)
        change_log = list(meta.get("config_changes", [])) + [
            {"step": resume_step, "setting": name, "old": old, "new": new} for name, old, new in config_changes]
        pipeline.set_state(pipeline_state)
        init = meta.get("run_info", {}).get("init", init)
        tokens_seen = int(pipeline.accounting().total)  # on every process: a pipeline may gather
        how = train_progress.describe_start("resumed", resume_step, run.total_steps, tokens_seen, where)
        if run.is_chief:
            _truncate_log(run.model_dir / "logs" / "train.jsonl", resume_step)
    elif init_from:
        params, init = checkpoints.load_params(init_from, run.abstract_state.params)
        state = jax.jit(fresh_state, in_shardings=(params_sh,), out_shardings=run.state_sh)(params)
        how = train_progress.describe_start("finetune", 0, run.total_steps, 0, init)
    else:
        how = train_progress.describe_start("scratch", 0, run.total_steps, 0, None)
        with partitioning.axis_rules(run.mesh):
            state = jax.jit(lambda k: fresh_state(nn.meta.unbox(run.model.init(k, run.dummy_tokens)["params"])),
                            out_shardings=run.state_sh)(run.init_key)
    if restored is None:
        run_id = resume.new_run_id()
    start_step = int(jax.device_get(state.step))
    if run.is_chief:
        train_progress.log.info("%s", how)
    return _Start(state=state, start_step=start_step, resume_step=resume_step, how=how, init=init,
                  settings=settings, config_changes=config_changes, change_log=change_log, shapes=shapes, ckpt=ckpt,
                  run_id=run_id)


def _announce_start(run: _RunSetup, start: _Start, run_name: str | None) -> tuple[RunInfo, dict]:
    """(RunInfo, checkpoint metadata); checks the callbacks' inputs before step 0 and writes
    config.gin and the config history (and, on a fresh start, empties stale logs)."""
    model_config = run.model_config
    run_info = RunInfo(
        run=run_name or run.model_dir.name,
        mixture_name=str(getattr(run.pipeline, "mixture_name", "")),
        mixture_weights={str(k): float(v)
                         for k, v in dict(getattr(run.pipeline, "mixture_weights", {}) or {}).items()},
        init=start.init,
        vocab=str(getattr(run.pipeline, "vocab_name", "")),
        vocab_size=model_config.vocab_size,
        seq_len=run.seq_len,
        global_batch=run.global_batch,
        scale=model_config.name,
        model_dir=str(run.model_dir),
        run_id=start.run_id,
    )
    metadata = {
        "model_config": dataclasses.asdict(model_config),
        "param_shapes": start.shapes,
        "param_layout": checkpoints.param_layout(start.shapes),
        "run_info": dataclasses.asdict(run_info),
        "total_steps": run.total_steps,
        "resume_settings": start.settings,  # compared when the run restarts (atlas_t5x/resume.py)
        "config_changes": start.change_log,  # settings changed on resume with train.allow_config_change
    }
    for cb in run.callbacks:  # every data source the run will read (eval-only languages too), before step 0
        check_inputs = getattr(cb, "check_inputs", None)
        if callable(check_inputs):
            check_inputs(run_info, model_config)
    if run.is_chief:
        if start.resume_step is None:
            _clear_stale_logs(run.model_dir / "logs")
        config_text = gin.operative_config_str()
        logio.write_atomic(run.model_dir / "config.gin", config_text)
        resume.write_history(run.model_dir, config_text, start.start_step, start.how, start.config_changes)
    return run_info, metadata


@dataclasses.dataclass
class _Loop:
    """What the step loop uses besides the state: compiled steps, logger, checkpointer, stop flag."""

    compiled_step: Any
    batches: Any  # prefetch.Prefetcher (or its synchronous twin): placed batches, consumed position
    profiler: profiling.StepProfiler
    eval_step: _EvalStep
    run_info: RunInfo
    metadata: dict
    ckpt: checkpoints.TrainCheckpointer
    logger: "_TrainLogger"
    stop: "_StopFlag"
    progress: train_progress.ProgressReporter
    branches: cooldown.BranchRunner
    log_every_steps: int
    checkpoint_every_steps: int

    def context(self, run: _RunSetup, step: int, state: TrainState) -> StepContext:
        """The callbacks' view of step `step` (a run's last evaluation is its completed schedule: "final")."""
        return StepContext(step=step, state=state, model=run.model, model_config=run.model_config, mesh=run.mesh,
                           pipeline=self.batches, lr=float(run.schedule(run.last_update(step))),
                           schedule_phase="final" if step == run.total_steps else run.phase_of(step),
                           run_info=self.run_info, eval_step=self.eval_step)


def _prepare_loop(run: _RunSetup, start: _Start, run_info: RunInfo, metadata: dict, *, num_microbatches: int,
                  loss_chunk_size: int | None, log_every_steps: int, checkpoint_every_steps: int,
                  tensorboard: bool, peak_flops_per_device: float | None, prefetch_batches: int,
                  profile_steps: tuple[int, int] | None) -> _Loop:
    """Compiles the train step (and, lazily, the branch step), sets up input prefetch, the profiler,
    logging, progress and SIGTERM."""
    mesh, model, model_config = run.mesh, run.model, run.model_config
    replicated = partitioning.replicated(mesh)
    batch_sh = partitioning.batch_sharding(mesh)
    metric_sh = {k: replicated for k in ("loss", "n_tokens", "grad_norm", "lr")}
    step_fn = jax.jit(
        make_train_step(model, run.optimizer, run.schedule, num_microbatches, loss_chunk_size),
        in_shardings=(run.state_sh, {k: batch_sh for k in MODEL_INPUT_KEYS}, replicated),
        out_shardings=(run.state_sh, metric_sh),
        donate_argnums=(0,),
    )
    abstract_batch = {
        k: jax.ShapeDtypeStruct((run.global_batch, run.seq_len),
                                jnp.float32 if k == "decoder_loss_weights" else jnp.int32, sharding=batch_sh)
        for k in MODEL_INPUT_KEYS
    }
    with partitioning.axis_rules(mesh):
        compiled_step = step_fn.lower(run.abstract_state, abstract_batch, run.dropout_key).compile()
    eval_step = _EvalStep(model, mesh, run.state_sh.params)

    theoretical_cpu = cpu_peak() if jax.devices()[0].platform == "cpu" else None
    peak = (peak_flops_per_device or lookup_peak_flops(jax.devices()[0].device_kind)
            or (theoretical_cpu.flops / jax.local_device_count() if theoretical_cpu else None)
            or measure_peak_flops(tuple(jax.local_devices()), model_config.dtype))
    model_flops_per_step = models.flops_per_token(model_config, run.seq_len) * run.global_batch * run.seq_len
    logger = _TrainLogger(run.model_dir, run_info.run, tensorboard and run.is_chief, run.is_chief,
                          peak * jax.device_count(), model_flops_per_step)

    def make_branch_step():
        """One compiled step for every branch: the learning rate is an argument (unit-LR AdamW)."""
        unit = lambda count: jnp.ones((), jnp.float32)  # noqa: E731  (same optimizer state as the trunk's)
        jitted = jax.jit(
            make_train_step(model, optim.make_optimizer(unit), unit, num_microbatches, loss_chunk_size,
                            lr_argument=True),
            in_shardings=(run.state_sh, {k: batch_sh for k in MODEL_INPUT_KEYS}, replicated, replicated),
            out_shardings=(run.state_sh, metric_sh), donate_argnums=(0,))
        with partitioning.axis_rules(mesh):
            return jitted.lower(run.abstract_state, abstract_batch, run.dropout_key,
                                jax.ShapeDtypeStruct((), jnp.float32)).compile()

    def check_branch_losses(metrics) -> None:
        for m in jax.device_get(metrics):
            if not (math.isfinite(float(m["loss"])) and math.isfinite(float(m["grad_norm"]))):
                raise NonFiniteLossError(f"non-finite training loss in a cooldown branch: loss={float(m['loss'])}")

    schedule_args = run.schedule_args
    batches = prefetch.wrap(run.pipeline, lambda rows: global_batch_from_host_rows(rows, batch_sh), prefetch_batches)
    branches = cooldown.BranchRunner(
        make_step=make_branch_step,
        next_batch=lambda: next(batches),
        copy_state=lambda s: jax.tree.map(jnp.copy, s), check_losses=check_branch_losses,
        context=lambda s, st, lr, phase, info, branch: StepContext(
            step=s, state=st, model=model, model_config=model_config, mesh=mesh, pipeline=batches, lr=lr,
            schedule_phase=phase, run_info=info, eval_step=eval_step, branch=branch),
        pipeline=batches, run_info=run_info, peak_lr=float(schedule_args["peak_lr"]),
        final_lr_fraction=float(schedule_args["final_lr_fraction"]), cooldown_fraction=float(run.cooldown_fraction),
        tokens_per_step=run.global_batch * run.seq_len)

    stop = _StopFlag()
    stop.install()
    progress = train_progress.ProgressReporter(run.total_steps, start.start_step, run.is_chief)
    profiler = profiling.StepProfiler(profile_steps, str(run.model_dir / "profile"))
    return _Loop(compiled_step=compiled_step, batches=batches, profiler=profiler, eval_step=eval_step,
                 run_info=run_info, metadata=metadata, ckpt=start.ckpt, logger=logger, stop=stop,
                 progress=progress, branches=branches, log_every_steps=log_every_steps,
                 checkpoint_every_steps=checkpoint_every_steps)


def _step_loop(run: _RunSetup, loop: _Loop, state: TrainState, step: int) -> TrainResult:
    """Trains from `step` to total_steps (or a SIGTERM): step, flush/log, callbacks, branches, checkpoint."""
    batches, ckpt, logger, callbacks = loop.batches, loop.ckpt, loop.logger, run.callbacks
    pending: list[tuple[int, dict]] = []
    row, preempted = None, False
    logger.start(step, batches.accounting(), batches.wait_s)
    loop.progress.start()
    with partitioning.axis_rules(run.mesh):
        while step < run.total_steps:
            with loop.profiler.step(step + 1):
                batch = next(batches)
                state, metrics = loop.compiled_step(state, batch, run.dropout_key)
            step += 1
            loop.profiler.after(step, metrics)
            pending.append((step, metrics))
            loop.progress.update(1)

            preempted = loop.stop.should_stop(step)
            final = step == run.total_steps or preempted
            save_now = final or step % loop.checkpoint_every_steps == 0
            run_callbacks = due_callbacks(callbacks, step, run.total_steps)
            if final or save_now or run_callbacks or step % loop.log_every_steps == 0:
                row = logger.flush(pending, batches.accounting(), batches.wait_s, run.phase_of(step), ckpt)
                pending = []
                loop.progress.report(row)
            # Callbacks before the checkpoint: a run killed inside a callback resumes from an
            # earlier checkpoint and repeats this step's callbacks (eval rows are never lost).
            for cb in run_callbacks:
                cb(loop.context(run, step, state))
            if step in run.branch_at:
                loop.branches.run(step, state, run.dropout_key, callbacks)
            if save_now:
                ckpt.save(step, state, batches.get_state(), loop.metadata)
            if save_now or run_callbacks or step in run.branch_at:
                logger.restart_clock(batches.wait_s)  # throughput and input wait count train steps only
            if preempted:
                logging.warning("preempted: saved checkpoint at step %d, exiting", step)
                break
    return TrainResult(state=state, step=step, preempted=preempted, last_log=row)


def _shutdown(loop: _Loop) -> None:
    """Stops the trace and the prefetch thread, closes the progress bar, waits for the last
    checkpoint, closes the logs, then gives SIGTERM back."""
    try:
        loop.profiler.close()
        loop.batches.close()
        loop.progress.close()
        loop.ckpt.close()  # waits for the last (good) checkpoint to commit
        loop.logger.close()
    finally:
        loop.stop.uninstall()  # only now: a SIGTERM during the final wait must not kill the write


class _TrainLogger:
    """Turns kept per-step metrics into train.jsonl rows and TensorBoard scalars at flush points."""

    def __init__(self, model_dir: epath.Path, run: str, tensorboard: bool, is_chief: bool,
                 peak_flops: float, model_flops_per_step: float):
        self._path = model_dir / "logs" / "train.jsonl"
        self._run = run
        self._is_chief = is_chief
        self._peak = peak_flops
        self._flops_per_step = model_flops_per_step
        self._writer = None
        if tensorboard:
            from clu import metric_writers  # imports TensorFlow: only when asked for

            self._writer = metric_writers.create_default_writer(str(model_dir / "tb"), asynchronous=True)
        self._last_time = 0.0
        self._last_tokens = 0
        self._last_step = 0
        self._last_wait = 0.0

    def start(self, step: int, accounting, input_wait_total: float) -> None:
        self._last_time = time.perf_counter()
        self._last_tokens = int(accounting.total)
        self._last_step = step
        self._last_wait = input_wait_total

    def restart_clock(self, input_wait_total: float) -> None:
        self._last_time = time.perf_counter()
        self._last_wait = input_wait_total

    def flush(self, pending: list[tuple[int, dict]], accounting, input_wait_total: float, phase: str, ckpt) -> dict:
        """Waits for the pending steps, checks them, writes one row; returns it.

        input_wait_total: seconds the loop has waited for input batches so far (the prefetcher's
        running total); the row's input_wait_s is its growth since the previous row."""
        fetched = jax.device_get([m for _, m in pending])
        for (step, _), m in zip(pending, fetched):
            if not (math.isfinite(float(m["loss"])) and math.isfinite(float(m["grad_norm"]))):
                ckpt.wait_until_finished()
                last_good = ckpt.latest_step()
                raise NonFiniteLossError(
                    f"non-finite training loss at step {step}: loss={float(m['loss'])}, "
                    f"grad_norm={float(m['grad_norm'])}; stopping without saving this state. Last good "
                    f"checkpoint: {'none' if last_good is None else f'step {last_good} in {ckpt.directory}'}"
                )
        now = time.perf_counter()
        step = pending[-1][0]
        elapsed = max(now - self._last_time, 1e-9)
        tokens = int(accounting.total)
        steps_done = step - self._last_step
        flops_per_s = self._flops_per_step * steps_done / elapsed
        row = {
            "run": self._run,
            "step": step,
            "loss": float(np.mean([float(m["loss"]) for m in fetched])),
            "grad_norm": float(fetched[-1]["grad_norm"]),
            "lr": float(fetched[-1]["lr"]),
            "schedule_phase": phase,
            "tokens": tokens,
            "tokens_by_lang": {str(k): int(v) for k, v in accounting.tokens_by_lang.items()},
            "tokens_per_s": (tokens - self._last_tokens) / elapsed,
            "steps_per_s": steps_done / elapsed,
            "flops_per_s": flops_per_s,
            "mfu": flops_per_s / self._peak,
            "step_time_s": elapsed / max(steps_done, 1),
            "input_wait_s": max(input_wait_total - self._last_wait, 0.0),
        }
        if self._is_chief:
            logio.append_jsonl(self._path, [row])
        if self._writer is not None:
            scalars = {k: row[k] for k in
                       ("loss", "grad_norm", "lr", "tokens", "tokens_per_s", "flops_per_s", "mfu")}
            scalars.update({f"tokens_by_lang/{k}": v for k, v in row["tokens_by_lang"].items()})
            self._writer.write_scalars(step, scalars)
        self._last_time, self._last_tokens, self._last_step = time.perf_counter(), tokens, step
        self._last_wait = input_wait_total
        return row

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
