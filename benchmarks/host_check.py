"""Host input check: can one host feed its chips for a sweep's most input-hungry run?

`python benchmarks/input_pipeline.py --host_check --target TARGET --sweep SPEC` runs `main`:

1. Vocabulary: a SentencePiece model of `--vocab_pieces` (>= 32k) pieces trained on the embedded
   corpus with atlas-train-vocab's defaults (temperature-sampled train splits, unigram, byte
   fallback), cached as `<cache>/vocabs/corpus_spm_<pieces>.model` (trained once, minutes on 2
   cores; later runs load it).
2. Need: for every run of SPEC on TARGET, the tokens/s one host must deliver,

       need = MFU × peak FLOP/s per chip × chips of the run on one host / models.flops_per_token

   with the run's scale, sequence length and embedding rows (`vocab_size`). Placement: a run uses
   the whole slice (`launch.plan_flags` plans every run on `target.devices`), so each host has
   min(devices_per_host, devices) of its chips; peak: the data-sheet dense bf16 figure of the
   slice's chip (`trainer.lookup_peak_flops`, or `--peak_flops`); MFU: `--mfu` (default 0.5,
   the low end of the 50-60% MaxText reports on TPU v5e / H100). The most input-hungry run is
   the one with the largest need (the smallest FLOPs per token).
3. Rate: this host's packed tokens/s through the real train pipeline (`make_train_pipeline`, the
   twelve-language uniform mixture of the embedded corpus, that run's seq_len, 16 rows per batch)
   with that vocabulary, on one thread as the trainer's prefetch thread runs it, over
   `--host_batches` batches after the first: streamed (JSON + SentencePiece + packing) and from a
   seqio cache of the same Tasks (built once under `<cache>/seqio/<vocab>/`; Beam DirectRunner).

The last line compares the faster mode with the need:
`host input rate X tok/s (vocab V, S pieces); needs Y tok/s per host (RUN on SLICE): ratio R`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
K12 = ("bg", "de", "el", "en", "es", "fr", "hi", "ja", "ko", "ru", "uk", "zh")
ROWS = 16  # rows per timed batch (the rate hardly depends on it)
# Chip names in target names/descriptions → trainer.lookup_peak_flops device kinds.
_CHIP_KINDS = (("v6e", "TPU v6e"), ("v5p", "TPU v5p"), ("v5e", "TPU v5e"), ("v5lite", "TPU v5 lite"),
               ("v4", "TPU v4"), ("h200", "H200"), ("h100", "H100"), ("b200", "B200"), ("a100", "A100"))


def cache_root(arg: str | None) -> Path:
    """The folder holding the trained vocabulary and its seqio cache."""
    if arg:
        return Path(arg)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "atlas_t5x"


def ensure_vocab(cache: Path, pieces: int) -> Path:
    """`<cache>/vocabs/corpus_spm_<pieces>.model`, trained on the embedded corpus when absent."""
    path = cache / "vocabs" / f"corpus_spm_{pieces}.model"
    if not path.exists():
        from atlas_t5x.cli import train_vocab

        print(f"training a {pieces}-piece SentencePiece vocabulary on the embedded corpus -> {path}", flush=True)
        start = time.perf_counter()
        code = train_vocab.main(["--vocab_size", str(pieces), "--out", str(path)])
        if code or not path.exists():
            raise SystemExit(f"atlas-train-vocab failed (exit {code}) for {pieces} pieces")
        print(f"vocabulary trained in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def chip_peak(target, override: float | None) -> tuple[float, str]:
    """(dense bf16 peak FLOP/s per chip, where it came from) for a plans.Target."""
    from atlas_t5x.trainer import lookup_peak_flops

    if override:
        return override, "--peak_flops"
    text = f"{target.name} {target.description}".lower().replace("-", "").replace(" ", "")
    for token, kind in _CHIP_KINDS:
        if token in text:
            return lookup_peak_flops(kind), f"data sheet, {kind}"
    raise SystemExit(f"--target {target.name}: no known chip in {target.description!r}; pass --peak_flops")


def hungriest_run(sweep_path: str, target, mfu: float, peak: float) -> dict:
    """The run of the sweep whose hosts need the most tokens/s, with that need and its inputs."""
    from atlas_t5x import models, sweeps

    sweep = sweeps.load_sweep(sweep_path)
    if not sweep.runs:
        raise SystemExit(f"--sweep {sweep_path}: the sweep has no runs")
    chips_per_host = min(target.devices_per_host, target.devices)
    best = None
    for run in sweep.runs:
        rows = run.settings.get("vocab_size")
        cfg = sweeps.scale_config(run.scale, **({"vocab_size": int(rows)} if rows else {}))
        flops = models.flops_per_token(cfg, run.seq_len)
        need = mfu * peak * chips_per_host / flops
        if best is None or need > best["need"]:
            best = {"need": need, "run": run, "flops_per_token": flops, "chips_per_host": chips_per_host,
                    "vocab_size": cfg.vocab_size}
    return best


def ensure_seqio_cache(cache: Path, vocab_path: Path) -> str:
    """A seqio cache of the K12 languages' train splits for this vocabulary (built once)."""
    from atlas_t5x.preprocess import seqio_cache

    folder = cache / "seqio" / vocab_path.stem
    start = time.perf_counter()
    built = seqio_cache.cache_madlad_tasks(list(K12), str(folder), None, str(vocab_path), None, splits=["train"])
    if any(built.values()):
        print(f"seqio cache of {len(K12)} languages built in {time.perf_counter() - start:.0f} s -> {folder}",
              flush=True)
    return str(folder)


def pipeline_rate(vocab_path: Path, seq_len: int, batches: int, cache_dir: str | None) -> tuple[float, float]:
    """(packed tokens/s, seconds to the first batch) of the train pipeline on this thread."""
    from atlas_t5x.data import mixtures, pipeline

    start = time.perf_counter()
    pipe = pipeline.make_train_pipeline(
        mixtures.uniform(K12, name="uniform12"), vocab=str(vocab_path), seq_len=seq_len, global_batch=ROWS,
        seed=0, process_index=0, process_count=1, use_cached=bool(cache_dir),
        cache_dirs=[cache_dir] if cache_dir else [])
    next(pipe)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    tokens = 0
    for _ in range(batches):
        tokens += int(next(pipe)["decoder_loss_weights"].sum())
    return tokens / (time.perf_counter() - start), first_s


def main(args) -> int:
    import sentencepiece as spm

    from atlas_t5x import plans
    from atlas_t5x.data import vocab as vocab_lib

    if args.target not in plans.TARGETS:
        raise SystemExit(f"unknown --target {args.target!r}; valid: {', '.join(plans.TARGETS)}")
    target = plans.TARGETS[args.target]
    cache = cache_root(args.vocab_cache)
    vocab_path = ensure_vocab(cache, args.vocab_pieces)
    pieces = spm.SentencePieceProcessor(model_file=str(vocab_path)).get_piece_size()
    rows = vocab_lib.padded_vocab_size(pieces)
    peak, peak_source = chip_peak(target, args.peak_flops)
    hungry = hungriest_run(args.sweep, target, args.mfu, peak)
    run = hungry["run"]
    print(f"target {target.name}: {target.description}; {target.devices} chips, {target.devices_per_host} per host; "
          f"peak {peak / 1e12:.0f} TFLOP/s per chip ({peak_source}); MFU assumed {args.mfu:.0%}")
    print(f"most input-hungry run of {args.sweep}: {run.name} ({run.scale}, seq {run.seq_len}, "
          f"V={hungry['vocab_size']}, {hungry['flops_per_token']:.3e} FLOPs/token, on all {target.devices} chips: "
          f"{hungry['chips_per_host']} per host) needs {hungry['need']:,.0f} tok/s per host")
    print(f"vocabulary {vocab_path} ({pieces} pieces, {rows} rows); load average {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} CPUs", flush=True)

    rates = {}
    rate, first = pipeline_rate(vocab_path, run.seq_len, args.host_batches, None)
    rates["streamed"] = rate
    print(f"streamed: {rate:12,.0f} tok/s (first batch after {first:.1f} s)", flush=True)
    try:
        cache_dir = ensure_seqio_cache(cache, vocab_path)
        rate, first = pipeline_rate(vocab_path, run.seq_len, args.host_batches, cache_dir)
        rates["seqio-cached"] = rate
        print(f"seqio-cached: {rate:12,.0f} tok/s (first batch after {first:.1f} s)", flush=True)
    except Exception as err:  # noqa: BLE001  (the streamed figure still stands; say why the other is missing)
        print(f"seqio-cached: not measured ({type(err).__name__}: {err})", flush=True)
    mode = max(rates, key=rates.get)
    ratio = rates[mode] / hungry["need"]
    print(f"best mode: {mode}")
    print(f"host input rate {rates[mode]:,.0f} tok/s (vocab {rows}, {pieces} pieces); needs {hungry['need']:,.0f} "
          f"tok/s per host ({run.name} on {target.name}): ratio {ratio:.2f}")
    return 0

