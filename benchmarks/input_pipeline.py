"""Input-pipeline throughput vs. what the trainer consumes, on the embedded corpus.

Measures, in one process:
  1. build: the pipeline's construction (split thresholds and U counted by streaming, in-process
     statistics for the embedded corpus);
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

Streaming at MADLAD scale (`--synthetic=30,300`): for each size (MB of UTF-8 text) it writes a
synthetic MADLAD-layout root (benchmarks/preprocess.py `write_synthetic_root`: 32 languages over
8 scripts, Zipf-skewed sizes, ~1 MiB-of-text gzip shards), builds its statistics file once
(`stats.compute_stats`, timed separately: a one-off, cached), then in a FRESH process builds the
streaming pipeline over a temperature (T = 3.33) mixture of all its languages and prints: time to
the first batch (pipeline construction included), tokens/s per host over `--synthetic_batches`
batches, and the process's peak RSS. The RSS should not grow with the corpus.

    python benchmarks/input_pipeline.py --synthetic=30,300 --seq_len=512 --global_batch=16

`--cached` also builds the seqio cache of each synthetic root's train splits
(`atlas_t5x.preprocess.seqio_cache`, Beam DirectRunner, timed, bytes per token) and measures the
same pipeline reading it (`make_train_pipeline.use_cached=True`) in another fresh process: the
"cached" rows. The batches are the same; only where the token ids come from differs.

Host input check (`--host_check --target TARGET --sweep SPEC`): can one host of TARGET feed its
chips for the sweep's most input-hungry run? (`host_check.py` next to this file.)

    python benchmarks/input_pipeline.py --host_check --target tpu_256x16gib --sweep gin/sweeps/paper.yaml
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
    parser.add_argument("--synthetic", default="",
                        help="comma-separated synthetic MADLAD root sizes in MB of text (streaming mode)")
    parser.add_argument("--synthetic_batches", type=int, default=1500,
                        help="batches timed per size (enough to encode many blocks per language)")
    parser.add_argument("--cached", action="store_true",
                        help="with --synthetic: also build the seqio cache and measure the cached pipeline")
    parser.add_argument("--measure", nargs=2, metavar=("ROOT", "STATS"), help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--mixture", default="uniform12",
                        help='"uniform12" (the K=12 languages above) or any get_mixture name')
    parser.add_argument("--host_check", action="store_true",
                        help="this host's packed tokens/s with a >= 32k SentencePiece vocabulary vs the rate "
                             "the sweep's most input-hungry run needs per host of --target (host_check.py)")
    parser.add_argument("--target", default=None, help="--host_check: accelerator slice (atlas_t5x.plans.TARGETS)")
    parser.add_argument("--mfu", type=float, default=0.5,
                        help="--host_check: model FLOPs utilisation assumed for the chips (default 0.5)")
    parser.add_argument("--peak_flops", type=float, default=None,
                        help="--host_check: dense bf16 peak FLOP/s per chip (default: the target's data sheet)")
    parser.add_argument("--vocab_pieces", type=int, default=32768,
                        help="--host_check: SentencePiece pieces of the vocabulary trained on the embedded corpus")
    parser.add_argument("--vocab_cache", default=None,
                        help="--host_check: folder of the trained vocabulary and its seqio cache "
                             "(default $XDG_CACHE_HOME/atlas_t5x, else ~/.cache/atlas_t5x)")
    parser.add_argument("--host_batches", type=int, default=200, help="--host_check: batches timed per mode")
    args = parser.parse_args(argv)
    if args.host_check:
        if not args.target:
            parser.error("--host_check needs --target (one of atlas_t5x.plans.TARGETS)")
        if not 0 < args.mfu <= 1 or args.vocab_pieces < 32000 or args.host_batches <= 0:
            parser.error("--mfu must be in (0, 1], --vocab_pieces >= 32000, --host_batches > 0")
        return args
    if args.synthetic or args.measure:
        args.vocab = args.vocab or "corpus_spm"
        args.seq_len = args.seq_len or 512
        args.global_batch = args.global_batch or 16
        return args
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
    return max(sweep.runs, key=lambda r: (models.param_count(sweeps.scale_config(r.scale)),
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

    from atlas_t5x import models, optim, sweeps, trainer

    cfg = sweeps.scale_config(scale, vocab_size=vocab_size)   # gin-file-only sizes too (the demo's demo0..)
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


def measure_streaming(args) -> dict:
    """In this (fresh) process: time to first batch, tokens/s and peak RSS of the streaming pipeline."""
    import json
    import resource

    start = time.perf_counter()
    from atlas_t5x.data import mixtures, pipeline, stats

    root, stats_path = args.measure
    table = stats.load_stats(stats_path, root)
    unique = {lang: entry["unique_tokens"] for lang, entry in table["languages"].items()}
    mixture = mixtures.temperature(unique, 3.33)
    pipe = pipeline.make_train_pipeline(mixture, vocab=args.vocab, seq_len=args.seq_len,
                                        global_batch=args.global_batch, root=root, stats_path=stats_path,
                                        process_index=0, process_count=1, use_cached=bool(args.cache_dir),
                                        cache_dirs=[args.cache_dir] if args.cache_dir else [])
    first = next(pipe)
    first_batch_s = time.perf_counter() - start
    tokens = int(first["decoder_loss_weights"].sum())
    start = time.perf_counter()
    tokens = 0
    for _ in range(args.synthetic_batches):
        tokens += int(next(pipe)["decoder_loss_weights"].sum())
    elapsed = time.perf_counter() - start
    return {"first_batch_s": first_batch_s, "tokens_per_s": tokens / elapsed, "languages": len(pipe.languages),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tokens_by_lang_min": min(pipe.accounting().tokens_by_lang.values())}


def synthetic_benchmark(args) -> int:
    """Writes each synthetic root, builds its statistics, measures the pipeline in a child process."""
    import json
    import subprocess
    import tempfile

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from preprocess import write_synthetic_root  # the shared synthetic MADLAD root generator

    from atlas_t5x.data import madlad, stats

    print(f"vocab {args.vocab}, seq_len {args.seq_len}, global batch {args.global_batch}, "
          f"{args.synthetic_batches} batches timed; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'text MB':>8} {'gzip MB':>8} {'langs':>5} {'shards':>6} {'stats s':>8} {'first batch s':>13} "
          f"{'tokens/s':>10} {'peak RSS MB':>11} {'mode':>6}")
    for size in [float(x) for x in args.synthetic.split(",")]:
        with tempfile.TemporaryDirectory(prefix="atlas_stream_bench_") as tmp:
            root = os.path.join(tmp, "madlad")
            sizes = write_synthetic_root(root, size)
            paths = [p for lang in sizes for p in madlad.shard_paths(root, lang)]
            gzip_mb = sum(os.path.getsize(p) for p in paths) / 1e6
            stats_path = os.path.join(tmp, "stats.json")
            start = time.perf_counter()
            stats.compute_stats(root, sorted(sizes), args.vocab, path=stats_path, workers=2, progress=False)
            stats_s = time.perf_counter() - start
            modes = {"stream": ""}
            if args.cached:
                modes["cached"] = os.path.join(tmp, "seqio_cache")
                cache_s, cache_bytes, cache_tokens = build_cache(root, sorted(sizes), args.vocab, stats_path,
                                                                 modes["cached"])
                print(f"seqio cache of the train splits: built in {cache_s:.1f} s (Beam DirectRunner, in "
                      f"process), {cache_bytes / 1e6:.1f} MB for {cache_tokens:,} tokens = "
                      f"{cache_bytes / cache_tokens:.2f} bytes/token", flush=True)
            for mode, cache_dir in modes.items():
                child = subprocess.run(
                    [sys.executable, __file__, "--measure", root, stats_path, f"--vocab={args.vocab}",
                     f"--seq_len={args.seq_len}", f"--global_batch={args.global_batch}",
                     f"--synthetic_batches={args.synthetic_batches}", f"--cache_dir={cache_dir}"],
                    capture_output=True, text=True, check=True)
                result = json.loads(child.stdout.strip().splitlines()[-1])
                print(f"{size:8.0f} {gzip_mb:8.1f} {result['languages']:5d} {len(paths):6d} {stats_s:8.1f} "
                      f"{result['first_batch_s']:13.2f} {result['tokens_per_s']:10,.0f} "
                      f"{result['peak_rss_mb']:11.0f} {mode:>6}", flush=True)
    return 0


def build_cache(root: str, languages: list[str], vocab: str, stats_path: str,
                cache_dir: str) -> tuple[float, int, int]:
    """(seconds, bytes, tokens) of the seqio cache of the languages' train splits."""
    import glob
    import json

    from atlas_t5x.preprocess import seqio_cache

    start = time.perf_counter()
    seqio_cache.cache_madlad_tasks(languages, cache_dir, root, vocab, stats_path, splits=["train"])
    seconds = time.perf_counter() - start
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(cache_dir, "*", "train.tfrecord-*")))
    tokens = 0
    for path in glob.glob(os.path.join(cache_dir, "*", "stats.train.json")):
        with open(path, encoding="utf-8") as f:
            counts = json.load(f)
        tokens += counts["targets_tokens"] + counts["examples"]
    return seconds, size, tokens


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.measure:
        import json

        print(json.dumps(measure_streaming(args)))
        return 0
    if args.synthetic:
        return synthetic_benchmark(args)
    if args.host_check:
        sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
        import host_check

        return host_check.main(args)
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
    print(f"build (statistics, sources)  {build_s:8.2f} s")

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
