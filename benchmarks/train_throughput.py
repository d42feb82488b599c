"""Training-step throughput and MFU of the DecoderLM on the local device.

Builds a full training step (forward, backward, global-norm clipping, AdamW update,
donated state), times it after warm-up, and reports MFU against a FIXED, stated peak:

    MFU = (tokens/s · models.flops_per_token) / peak FLOP/s

* GPU/TPU: the data-sheet dense bf16 peak of the device (`trainer.lookup_peak_flops`);
* CPU: the theoretical peak cores × SIMD lanes × FMA units × 2 × clock (`trainer.cpu_peak`,
  inputs read from /proc/cpuinfo and printed; override with --cpu_clock_ghz / --fma_units).

A matmul peak sampled in the same process (right after each timed step) is printed as a
second line; on a shared CPU it swings by 2x within an hour, which is why it is not the
headline figure. `--baseline` also times the unfused/unrolled configuration (reference
einsum attention, unrolled blocks, materialised logits) in the same process.

Examples (the CPU target configuration, and the GPU one):

    python benchmarks/train_throughput.py --scale=scale0 --batch=8 --seq=512 --dtype=float32
    python benchmarks/train_throughput.py --scale=scale34 --batch=8 --seq=2048 --dtype=bfloat16 \
        --remat_policy=dots_with_no_batch_dims_saveable --baseline
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from atlas_t5x import losses, models, optim
from atlas_t5x.trainer import cpu_peak, lookup_peak_flops


class MatmulPeak:
    """FLOP/s of a square ``size``×``size`` matmul in ``dtype`` (float32 accumulation).

    The CPU here is shared, so the peak is sampled right after every timed step and each
    step is compared with its neighbouring sample, as well as best with best. The default size
    is 2048 on CPU and 8192 on accelerators, where a 2048 matmul takes tens of microseconds and
    the dispatch overhead would understate the peak.
    """

    def __init__(self, dtype: str, size: int | None = None):
        if size is None:
            size = 2048 if jax.devices()[0].platform == "cpu" else 8192
        key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
        self.a = jax.random.normal(key_a, (size, size), jnp.dtype(dtype))
        self.b = jax.random.normal(key_b, (size, size), jnp.dtype(dtype))
        self.flops = 2 * size ** 3
        self._matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
        self._matmul(self.a, self.b).block_until_ready()

    def sample(self, repeats: int = 3) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            self._matmul(self.a, self.b).block_until_ready()
            best = min(best, time.perf_counter() - start)
        return self.flops / best


def make_train_step(model: models.DecoderLM, optimizer: optax.GradientTransformation,
                    loss: str = "fused", chunk_size: int = 128):
    """A jitted (params, opt_state, batch, rng) -> (params, opt_state, loss) with donated state.

    ``loss="fused"`` uses ``DecoderLM.token_loss`` (no [B, T, V] logits buffer);
    ``loss="logits"`` materialises the logits and calls ``losses.token_cross_entropy``.
    """

    def loss_fn(params, batch, rng):
        inputs = dict(positions=batch["positions"], segment_ids=batch["segments"], deterministic=False,
                      rngs={"dropout": rng})
        if loss == "fused":
            sum_nll, n_tokens = model.apply({"params": params}, batch["inputs"], batch["targets"],
                                            batch["weights"], chunk_size=chunk_size,
                                            method=models.DecoderLM.token_loss, **inputs)
        else:
            logits = model.apply({"params": params}, batch["inputs"], **inputs)
            sum_nll, n_tokens = losses.token_cross_entropy(logits, batch["targets"], batch["weights"])
        return sum_nll / n_tokens

    def step(params, opt_state, batch, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def synthetic_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
    """Random tokens, two packed segments per row, all weights 1."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (batch, seq + 1)).astype(np.int32)
    half = seq // 2
    segments = np.where(np.arange(seq) < half, 1, 2)[None].repeat(batch, 0).astype(np.int32)
    positions = np.where(segments == 1, np.arange(seq), np.arange(seq) - half).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segments": segments,
            "positions": positions, "weights": np.ones((batch, seq), np.float32)}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="scale0", help="model scale name (scale0..46, tiny0..3)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    parser.add_argument("--vocab_size", type=int, default=models.VOCAB_SIZE)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--remat_policy", default="none", help=f"one of {', '.join(models.REMAT_POLICIES)}")
    parser.add_argument("--attention", default="auto", help=f"one of {', '.join(models.ATTENTION_IMPLEMENTATIONS)}")
    parser.add_argument("--unrolled", action="store_true", help="unrolled blocks (scan_layers=False)")
    parser.add_argument("--baseline", action="store_true",
                        help="also time the unfused/unrolled step (reference attention, unrolled, logits loss)")
    parser.add_argument("--cpu_clock_ghz", type=float, default=None, help="CPU peak: clock (default /proc/cpuinfo)")
    parser.add_argument("--fma_units", type=int, default=2, help="CPU peak: vector FMA units per core")
    parser.add_argument("--loss", default="fused", choices=["fused", "logits"],
                        help="fused projection+loss (DecoderLM.token_loss) or materialised logits")
    parser.add_argument("--chunk_size", type=int, default=128, help="positions per fused-loss chunk")
    parser.add_argument("--profile", nargs="?", const="/tmp/atlas_train_profile", default=None, metavar="DIR",
                        help="after timing, trace --profile_steps more steps with jax.profiler into DIR "
                             "(default /tmp/atlas_train_profile; TensorBoard's profile plugin reads it) and "
                             "print the most expensive XLA operations")
    parser.add_argument("--profile_steps", type=int, default=2, help="steps traced by --profile")
    args = parser.parse_args(argv)
    if min(args.batch, args.seq, args.steps, args.vocab_size) <= 0 or args.warmup < 0:
        parser.error("batch, seq, steps and vocab_size must be positive, warmup >= 0")
    try:
        models.get_model_config(args.scale, remat_policy=args.remat_policy, attention=args.attention)
    except ValueError as err:
        parser.error(str(err))
    return args


def time_steps(cfg: models.ModelConfig, args, loss: str, peak: "MatmulPeak") -> dict:
    """Compile, warm up and time `args.steps` steps of `cfg`; step seconds and adjacent peak samples."""
    model = models.DecoderLM(cfg)
    optimizer = optim.make_optimizer(optim.make_schedule("constant", total_steps=1, warmup_steps=0))
    batch = jax.device_put(synthetic_batch(args.batch, args.seq, cfg.vocab_size))
    params = jax.jit(lambda k: model.init(k, batch["inputs"])["params"])(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, params,
                          is_leaf=lambda x: hasattr(x, "unbox"))
    opt_state = optimizer.init(params)
    step = make_train_step(model, optimizer, loss, args.chunk_size)
    rng = jax.random.PRNGKey(1)
    start = time.perf_counter()
    params, opt_state, loss_value = step(params, opt_state, batch, rng)
    loss_value.block_until_ready()
    compile_s = time.perf_counter() - start
    for i in range(args.warmup):
        params, opt_state, loss_value = step(params, opt_state, batch, jax.random.fold_in(rng, i))
    loss_value.block_until_ready()
    times, peaks = [], [peak.sample()]
    for i in range(args.steps):
        start = time.perf_counter()
        params, opt_state, loss_value = step(params, opt_state, batch, jax.random.fold_in(rng, 100 + i))
        loss_value.block_until_ready()
        times.append(time.perf_counter() - start)
        peaks.append(peak.sample())
    result = {"times": times, "peaks": peaks, "compile_s": compile_s, "loss": float(loss_value)}
    if args.profile:
        log_dir = f"{args.profile}/{cfg.name}-{loss}"
        with jax.profiler.trace(log_dir):
            for i in range(args.profile_steps):
                with jax.profiler.StepTraceAnnotation("train", step_num=i):
                    params, opt_state, loss_value = step(params, opt_state, batch, jax.random.fold_in(rng, 200 + i))
                    loss_value.block_until_ready()
        result["profile_dir"] = log_dir
    return result


def top_operations(log_dir: str, top: int = 15) -> list[tuple[str, float, int]]:
    """(name, total ms summed over the trace, count) of the longest trace events.

    Reads the newest `*.trace.json.gz` under `log_dir` (Chrome trace format, written next to the
    xplane.pb) and sums the durations of complete events by name, skipping the step annotations
    and the Python/host wrappers that contain them, so what remains are XLA operations (fusions,
    dots, custom calls) as the runtime executed them.
    """
    import glob
    import gzip
    import json
    import os

    paths = sorted(glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "*.trace.json.gz")))
    if not paths:
        return []
    with gzip.open(paths[-1], "rt") as f:
        events = json.load(f).get("traceEvents", [])
    totals: dict[str, list[float]] = {}
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        name = str(e.get("name", ""))
        if name.startswith(("train", "PjitFunction", "$", "ThunkExecutor", "TfrtCpuExecutable")):
            continue
        entry = totals.setdefault(name, [0.0, 0])
        entry[0] += float(e["dur"]) / 1e3
        entry[1] += 1
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
    return [(name, ms, int(count)) for name, (ms, count) in ranked]


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = jax.devices()[0]
    fixed_peak, peak_source = lookup_peak_flops(device.device_kind), "data-sheet dense bf16"
    if fixed_peak is None and device.platform == "cpu":
        theoretical = cpu_peak(clock_hz=args.cpu_clock_ghz * 1e9 if args.cpu_clock_ghz else None,
                               fma_units=args.fma_units)
        if theoretical is not None:
            fixed_peak, peak_source = theoretical.flops / jax.local_device_count(), theoretical.describe()
    peak = MatmulPeak(args.dtype)
    cfg = models.get_model_config(args.scale, vocab_size=args.vocab_size, dtype=args.dtype,
                                  dropout_rate=args.dropout, remat_policy=args.remat_policy,
                                  attention=args.attention, scan_layers=not args.unrolled)
    configs = [("fast", cfg, args.loss)]
    if args.baseline:
        configs.append(("baseline", dataclasses.replace(cfg, attention="reference", scan_layers=False), "logits"))

    tokens = args.batch * args.seq
    flops_token = models.flops_per_token(cfg, args.seq)
    step_flops = tokens * flops_token
    print(f"scale={cfg.name} N={models.param_count(cfg):,} V={cfg.vocab_size} batch={args.batch} "
          f"seq={args.seq} dtype={args.dtype} device={device.device_kind} x{jax.device_count()} "
          f"remat_policy={cfg.remat_policy} attention={models.resolve_attention(cfg.attention, cfg.dtype, args.seq)} "
          f"steps={args.steps}")
    print(f"model FLOPs/token        {flops_token:.4e}")
    if fixed_peak:
        print(f"fixed peak               {fixed_peak / 1e9:.1f} GFLOP/s per device: {peak_source}")
    else:
        print("fixed peak               unknown for this device (no data sheet, no /proc/cpuinfo)")
    for label, config, loss in configs:
        result = time_steps(config, args, loss, peak)
        times, peaks = result["times"], result["peaks"]
        print(f"[{label}] scan_layers={config.scan_layers} attention={config.attention} loss={loss} "
              f"compile={result['compile_s']:.1f}s final_loss={result['loss']:.3f}")
        for name, t in (("best", min(times)), ("median", statistics.median(times))):
            achieved = step_flops / t
            mfu = f"MFU vs fixed peak {achieved / fixed_peak:6.1%}" if fixed_peak else ""
            print(f"[{label}] {name:6s} step {t * 1e3:8.1f} ms  tokens/s {tokens / t:9.1f}  "
                  f"achieved {achieved / 1e9:7.1f} GFLOP/s  {mfu}")
        # Second line: each step against the better of the peak samples taken just before and after it.
        mfus = [step_flops / t / max(peaks[i], peaks[i + 1]) for i, t in enumerate(times)]
        print(f"[{label}] sampled matmul peak ({args.dtype}) best {max(peaks) / 1e9:.1f}, median "
              f"{statistics.median(peaks) / 1e9:.1f} GFLOP/s; MFU vs adjacent sample: best {max(mfus):.1%} "
              f"median {statistics.median(mfus):.1%}")
        if "profile_dir" in result:
            print(f"[{label}] profile of {args.profile_steps} steps in {result['profile_dir']}; "
                  f"top operations (ms over the traced steps, count):")
            for name, ms, count in top_operations(result["profile_dir"]):
                print(f"[{label}]   {ms:10.1f} ms  {count:5d}  {name[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
