"""Training-step throughput and MFU of the DecoderLM on the local device.

Builds a full training step (forward, backward, global-norm clipping, AdamW update,
donated state), times it after warm-up, and compares the achieved model FLOP/s with
the same process's measured matmul peak for the compute dtype:

    MFU = (tokens/s · models.flops_per_token) / measured matmul FLOP/s

On a known accelerator (H100, A100, TPU; `trainer.lookup_peak_flops`) it also prints MFU
against the data-sheet dense bf16 peak, the usual definition for GPU/TPU targets.

Examples (the CPU target configuration, and the H100 one; scale34 needs --remat to fit 80 GB):

    python benchmarks/train_throughput.py --scale=scale0 --batch=8 --seq=512 --dtype=float32
    python benchmarks/train_throughput.py --scale=scale34 --batch=8 --seq=2048 --dtype=bfloat16 --remat
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from atlas_t5x import losses, models, optim
from atlas_t5x.trainer import lookup_peak_flops


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
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--loss", default="fused", choices=["fused", "logits"],
                        help="fused projection+loss (DecoderLM.token_loss) or materialised logits")
    parser.add_argument("--chunk_size", type=int, default=128, help="positions per fused-loss chunk")
    args = parser.parse_args(argv)
    if min(args.batch, args.seq, args.steps, args.vocab_size) <= 0 or args.warmup < 0:
        parser.error("batch, seq, steps and vocab_size must be positive, warmup >= 0")
    try:
        models.get_model_config(args.scale)
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = models.get_model_config(args.scale, vocab_size=args.vocab_size, dtype=args.dtype,
                                  dropout_rate=args.dropout, remat=args.remat)
    model = models.DecoderLM(cfg)
    optimizer = optim.make_optimizer(optim.make_schedule("constant", total_steps=1, warmup_steps=0))
    batch = jax.device_put(synthetic_batch(args.batch, args.seq, cfg.vocab_size))
    params = jax.jit(lambda k: model.init(k, batch["inputs"])["params"])(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, params,
                          is_leaf=lambda x: hasattr(x, "unbox"))
    opt_state = optimizer.init(params)
    step = make_train_step(model, optimizer, args.loss, args.chunk_size)

    peak = MatmulPeak(args.dtype)
    rng = jax.random.PRNGKey(1)
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, batch, rng)
    loss.block_until_ready()
    compile_s = time.perf_counter() - start
    for i in range(args.warmup):
        params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(rng, i))
    loss.block_until_ready()
    times, peaks = [], [peak.sample()]
    for i in range(args.steps):
        start = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(rng, 100 + i))
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
        peaks.append(peak.sample())

    tokens = args.batch * args.seq
    flops_token = models.flops_per_token(cfg, args.seq)
    step_flops = tokens * flops_token
    # Each step against the better of the peak samples taken just before and after it.
    mfus = [step_flops / t / max(peaks[i], peaks[i + 1]) for i, t in enumerate(times)]
    best_peak = max(peaks)
    print(f"scale={cfg.name} N={models.param_count(cfg):,} V={cfg.vocab_size} batch={args.batch} "
          f"seq={args.seq} dtype={args.dtype} device={jax.devices()[0].device_kind} "
          f"x{jax.device_count()} loss={args.loss} steps={args.steps} compile={compile_s:.1f}s "
          f"final_loss={float(loss):.3f}")
    print(f"model FLOPs/token        {flops_token:.4e}")
    print(f"matmul peak ({args.dtype})  best {best_peak / 1e9:.1f} GFLOP/s, "
          f"median {statistics.median(peaks) / 1e9:.1f} GFLOP/s")
    for label, t in (("best", min(times)), ("median", statistics.median(times))):
        achieved = step_flops / t
        print(f"{label:6s} step {t * 1e3:8.1f} ms  tokens/s {tokens / t:9.1f}  "
              f"achieved {achieved / 1e9:6.1f} GFLOP/s  MFU vs best peak {achieved / best_peak:6.1%}")
    print(f"MFU per step vs adjacent peak: best {max(mfus):.1%}  median {statistics.median(mfus):.1%}")
    sheet_peak = lookup_peak_flops(jax.devices()[0].device_kind)
    if sheet_peak:
        print(f"MFU vs data-sheet dense bf16 peak ({sheet_peak / 1e12:.0f} TFLOP/s): best "
              f"{step_flops / min(times) / sheet_peak:.1%}  median {step_flops / statistics.median(times) / sheet_peak:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
