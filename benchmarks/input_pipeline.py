"""Input-pipeline throughput vs. what the trainer consumes, on the embedded corpus.

Measures, in one process:
  1. build: encoding the mixture's training splits once (vocabulary + EOS per document);
  2. stream: tokens/s of the packed train stream (host-local batches as the trainer receives
     them) for a K = 12 mixture;
  3. trainer: tokens/s of the real jitted train step (atlas_t5x.trainer.make_train_step: forward,
     backward, AdamW) of a tiny model on batches from the same stream, after compilation;
and prints the ratio stream / trainer, which must be >= 10 at the largest size the demo trains.

The trainer size, sequence length, batch and vocabulary default to the largest model (by
parameter count) of the demo sweep, gin/sweeps/demo.yaml (`make demo`); any flag overrides.

    python benchmarks/input_pipeline.py                                  # make demo's largest run
    python benchmarks/input_pipeline.py --sweep=gin/sweeps/study.yaml    # make study's largest run
    python benchmarks/input_pipeline.py --scale=tiny1 --seq_len=128 --global_batch=8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Twelve embedded-corpus languages over five scripts (Latin, Cyrillic, Greek, Devanagari, CJK/Hangul).
K12 = ("bg", "de", "el", "en", "es", "fr", "hi", "ja", "ko", "ru", "uk", "zh")
REQUIRED_RATIO = 10.0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default=str(REPO_ROOT / "gin" / "sweeps" / "demo.yaml"),
                        help="sweep spec whose largest run sets the defaults below")
    parser.add_argument("--scale", default=None,
                        help="model size for the trainer rate (tiny0..3, scale0..); default: sweep's largest")
    parser.add_argument("--vocab", default=None, help="default: the sweep's vocabulary")
    parser.add_argument("--seq_len", type=int, default=None, help="default: that run's seq_len")
    parser.add_argument("--global_batch", type=int, default=None, help="default: that run's batch")
    parser.add_argument("--stream_batches", type=int, default=300, help="batches timed for the stream")
    parser.add_argument("--train_steps", type=int, default=5, help="train steps timed (after warm-up)")
    parser.add_argument("--mixture", default="uniform12",
                        help='"uniform12" (the K=12 languages above) or any get_mixture name')
    args = parser.parse_args(argv)
    if None in (args.scale, args.vocab, args.seq_len, args.global_batch):
        try:
            largest = largest_run(args.sweep)
        except (OSError, ValueError) as err:
            parser.error(f"--sweep {args.sweep}: {err}")
        args.sweep_run = largest.name
        args.scale = args.scale or largest.scale
        args.vocab = args.vocab or largest.settings.get("vocab", "corpus_spm")
        args.seq_len = args.seq_len or largest.seq_len
        args.global_batch = args.global_batch or largest.batch
    else:
        args.sweep_run = None
    if min(args.seq_len, args.global_batch, args.stream_batches, args.train_steps) <= 0:
        parser.error("seq_len, global_batch, stream_batches and train_steps must be positive")
    return args


def largest_run(sweep_path: str):
    """The run of a sweep spec with the most model parameters (ties: the longest rows)."""
    from atlas_t5x import models, sweeps

    sweep = sweeps.load_sweep(sweep_path)
    if not sweep.runs:
        raise ValueError("the sweep has no runs")
    return max(sweep.runs, key=lambda r: (models.param_count(models.get_model_config(r.scale)),
                                          r.seq_len * r.batch))


def stream_rate(pipe, n_batches: int) -> tuple[float, float]:
    """(tokens/s, seconds per batch) over n_batches, best of 3 passes."""
    best = float("inf")
    tokens = 0
    for _ in range(3):
        start = time.perf_counter()
        tokens = 0
        for _ in range(n_batches):
            tokens += int(next(pipe)["decoder_loss_weights"].sum())
        best = min(best, time.perf_counter() - start)
    return tokens / best, best / n_batches


def trainer_rate(scale: str, vocab_size: int, batches: list[dict], steps: int) -> tuple[float, float]:
    """(tokens/s, seconds per step) of the trainer's jitted step on one device, median of steps."""
    import jax
    import numpy as np

    from atlas_t5x import models, optim, trainer

    cfg = models.get_model_config(scale, vocab_size=vocab_size)
    model = models.DecoderLM(cfg)
    schedule = optim.make_schedule("constant", peak_lr=1e-3, total_steps=steps + 10, warmup_steps=0)
    optimizer = optim.make_optimizer(schedule)
    first = batches[0]
    params = model.init(jax.random.PRNGKey(0), first["decoder_input_tokens"])["params"]
    params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, params,
                          is_leaf=lambda x: hasattr(x, "unbox"))
    state = trainer.TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                               opt_state=optimizer.init(params))
    step = jax.jit(trainer.make_train_step(model, optimizer, schedule), donate_argnums=(0,))
    key = jax.random.PRNGKey(1)
    device_batches = [{k: jax.device_put(v) for k, v in b.items()} for b in batches]
    for b in device_batches[:2]:  # compile + one warm step
        state, metrics = step(state, b, key)
    jax.block_until_ready(metrics)
    times = []
    for i in range(steps):
        b = device_batches[(2 + i) % len(device_batches)]
        start = time.perf_counter()
        state, metrics = step(state, b, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    per_step = statistics.median(times)
    tokens = float(np.sum(first["decoder_loss_weights"]))
    return tokens / per_step, per_step


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from atlas_t5x.data import mixtures, pipeline
    from atlas_t5x.data import vocab as vocab_lib

    mixture = mixtures.uniform(K12, name="uniform12") if args.mixture == "uniform12" else args.mixture
    start = time.perf_counter()
    pipe = pipeline.make_train_pipeline(mixture, vocab=args.vocab, seq_len=args.seq_len,
                                        global_batch=args.global_batch, seed=0,
                                        process_index=0, process_count=1)
    build_s = time.perf_counter() - start
    unique = pipe.unique_by_lang
    if args.sweep_run:
        print(f"trainer size from {os.path.relpath(args.sweep, REPO_ROOT)}: largest run "
              f"{args.sweep_run} ({args.scale}, seq {args.seq_len}, batch {args.global_batch})")
    print(f"mixture {pipe.mixture_name}: K={len(pipe.languages)} languages {' '.join(pipe.languages)}")
    print(f"vocab {args.vocab} (V={pipe.vocab_size}); U total {sum(unique.values()):,} tokens "
          f"(min {min(unique.values()):,}, max {max(unique.values()):,})")
    print(f"build (encode splits once)   {build_s:8.2f} s")

    rate, per_batch = stream_rate(pipe, args.stream_batches)
    print(f"stream  seq={args.seq_len} batch={args.global_batch}: {rate:14,.0f} tokens/s "
          f"({per_batch * 1e3:.2f} ms/batch)")

    batches = [next(pipe) for _ in range(4)]
    model_vocab = vocab_lib.padded_vocab_size(pipe.vocab_size)
    train_rate, per_step = trainer_rate(args.scale, model_vocab, batches, args.train_steps)
    print(f"trainer {args.scale} (V={model_vocab}) train step: {train_rate:14,.0f} tokens/s "
          f"({per_step * 1e3:.1f} ms/step)")
    ratio = rate / train_rate
    verdict = "OK" if ratio >= REQUIRED_RATIO else "BELOW TARGET"
    print(f"ratio stream/trainer: {ratio:,.1f}x  (target >= {REQUIRED_RATIO:.0f}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
