"""Statistics-pipeline throughput on the Apache Beam DirectRunner, and the projection to MADLAD-400.

On a synthetic MADLAD-layout root (32 languages over 8 scripts, Zipf-skewed sizes like the real
release, ~1 MiB shards; text resampled from the embedded corpus) this measures, with one vocabulary:
  1. the single-process reference, `atlas_t5x.data.stats.compute_stats` (tokens/s);
  2. the Beam statistics pipeline (atlas_t5x.preprocess.statistics) on the DirectRunner with 1
     worker and with 2 workers (`--direct_running_mode=multi_processing`): tokens/s, the speed-up
     1 -> 2, and that all three files are identical;
and prints the projected wall time for the whole MADLAD-400 clean split on N workers:

    wall(N) = D / (N · r1 · η)   with D = 3e12 tokens (MADLAD-400 clean, ~3T per issue 15),
                                 r1 = measured 1-worker rate, η = measured 2-worker efficiency
                                 (speed-up / 2, capped at 1), both without the runner's start-up
                                 (timed on a one-shard root and subtracted: a cluster amortises
                                 it); per-worker throughput on a cluster is taken as here.

    python benchmarks/preprocess.py                     # 40 MB of text, corpus_spm (~4 min)
    python benchmarks/preprocess.py --text_mb=50 --vocab=byte --workers_list=1,2

"tokens" are the statistics file's tokens (vocabulary ids + 1 EOS per document) over all splits.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MADLAD_CLEAN_TOKENS = 3e12   # issue 15: the MADLAD-400 clean split, ~3T tokens
# 32 MADLAD-400 codes over 8 scripts, ordered as the release roughly is by size (largest first).
LANGUAGES = ("en", "ru", "es", "de", "fr", "ja", "it", "pt", "pl", "nl", "zh", "tr", "vi", "id",
             "cs", "ko", "ar", "uk", "el", "hi", "th", "bg", "fa", "he", "bn", "ta", "ka", "hy",
             "mr", "ne", "am", "yo")
# Where each synthetic language takes its text: itself if the embedded corpus has it, else an
# embedded language of the same script (so the shipped vocabulary segments it like real text).
TEXT_FROM = {"pl": "ca", "nl": "de", "tr": "es", "vi": "fr", "id": "pt", "cs": "it", "ar": "yi",
             "fa": "yi", "he": "yi", "th": "hi", "bn": "mr", "ta": "hi", "ka": "el", "hy": "el",
             "ne": "mr", "am": "mr", "yo": "cy"}
SHARD_TEXT_BYTES = 1 << 20   # [our choice] ~1 MiB of text per synthetic shard


def write_synthetic_root(root: str, text_mb: float, seed: int = 0, zipf: float = 1.1) -> dict[str, int]:
    """A MADLAD-layout root: language i of LANGUAGES gets ∝ 1/(i+1)^zipf of `text_mb` MB of text
    (at least 20 kB), in ~1 MiB shards; returns UTF-8 text bytes per language. The project's one
    synthetic-root generator (benchmarks/input_pipeline.py imports it too).

    Documents are real sentences: documents of the embedded corpus (the language's own, else one
    of the same script, `TEXT_FROM`) drawn at random, each suffixed with a unique number so the
    hash split sees distinct documents.
    """
    from atlas_t5x.data import madlad  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    embedded = set(madlad.available_languages(madlad.EMBEDDED_CORPUS_DIR))
    weights = 1.0 / np.arange(1, len(LANGUAGES) + 1) ** zipf
    targets = np.maximum(weights / weights.sum() * text_mb * 1e6, 20_000).astype(int)
    written = {}
    for lang, target in zip(LANGUAGES, targets):
        source = lang if lang in embedded else TEXT_FROM[lang]
        docs = [text for path in madlad.shard_paths(madlad.EMBEDDED_CORPUS_DIR, source)
                for text in madlad.read_shard(path)]
        folder = os.path.join(root, lang)
        os.makedirs(folder, exist_ok=True)
        total, shard, serial = 0, 0, 0
        while total < target:
            path = os.path.join(folder, f"{lang}_clean_{shard:04d}.jsonl.gz")
            shard_bytes = 0
            with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
                while shard_bytes < SHARD_TEXT_BYTES and total + shard_bytes < target:
                    text = f"{docs[int(rng.integers(len(docs)))]} {serial}"
                    serial += 1
                    f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                    shard_bytes += len(text.encode("utf-8"))
            total += shard_bytes
            shard += 1
        written[lang] = total
    return written


def total_tokens(stats_path: str) -> int:
    doc = json.loads(Path(stats_path).read_text())
    return sum(split["tokens"] for entry in doc["languages"].values() for split in entry["splits"].values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text_mb", type=float, default=40.0, help="synthetic root size (MB of UTF-8 text)")
    parser.add_argument("--vocab", default="corpus_spm")
    parser.add_argument("--workers_list", default="1,2", help="DirectRunner worker counts to time")
    parser.add_argument("--project", default="1,10,100,1000", help="worker counts N to project for")
    parser.add_argument("--keep", default="", help="write the root here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)

    from atlas_t5x.data import madlad  # noqa: PLC0415
    from atlas_t5x.data import stats as stats_lib  # noqa: PLC0415
    from atlas_t5x.preprocess import statistics  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="atlas_preprocess_bench_") as tmp:
        root = args.keep or os.path.join(tmp, "madlad")
        start = time.perf_counter()
        sizes = write_synthetic_root(root, args.text_mb)
        shards = sum(len(madlad.shard_paths(root, lang)) for lang in sizes)
        print(f"synthetic root: {len(sizes)} languages, {shards} shards, {sum(sizes.values()) / 1e6:.1f} MB "
              f"of text (largest {max(sizes.values()) / 1e6:.2f} MB, smallest "
              f"{min(sizes.values()) / 1e6:.3f} MB), written in {time.perf_counter() - start:.1f}s")
        print(f"vocabulary: {args.vocab}; machine: {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} at start")

        reference = os.path.join(tmp, "single.json")
        start = time.perf_counter()
        stats_lib.compute_stats(root, list(sizes), args.vocab, path=reference, progress=False)
        single_s = time.perf_counter() - start
        tokens = total_tokens(reference)
        print(f"{'path':<34} {'wall s':>8} {'tokens/s':>12}  same file")
        print(f"{'single process (compute_stats)':<34} {single_s:8.1f} {tokens / single_s:12,.0f}  (reference)")

        # Start-up of each runner configuration, timed on a one-language, one-shard root.
        tiny = os.path.join(tmp, "tiny")
        os.makedirs(os.path.join(tiny, "yo"))
        shutil.copy(madlad.shard_paths(root, "yo")[0], os.path.join(tiny, "yo"))

        rates, steady = {}, {}
        for workers in [int(w) for w in args.workers_list.split(",")]:
            flags = ([f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
                     if workers > 1 else ["--direct_num_workers=1"])
            start = time.perf_counter()
            statistics.run_statistics(tiny, None, args.vocab, os.path.join(tmp, f"tiny_{workers}.json"), flags)
            startup = time.perf_counter() - start
            out = os.path.join(tmp, f"beam_{workers}.json")
            start = time.perf_counter()
            statistics.run_statistics(root, None, args.vocab, out, flags)
            seconds = time.perf_counter() - start
            rates[workers] = tokens / seconds
            # Start-up (worker processes importing TensorFlow, pipeline setup) is a constant per
            # run that a cluster amortises over days; it is subtracted for the projection.
            steady[workers] = tokens / (seconds - startup) if seconds > startup else float("nan")
            same = Path(out).read_bytes() == Path(reference).read_bytes()
            print(f"{'Beam DirectRunner, ' + str(workers) + ' worker(s)':<34} {seconds:8.1f} "
                  f"{rates[workers]:12,.0f}  {same}   (start-up {startup:.1f}s; without it "
                  f"{steady[workers]:,.0f} tokens/s" + ("" if seconds > 2 * startup else
                                                        "; start-up dominates: raise --text_mb") + ")")
            if not same:
                print("ERROR: the Beam file differs from the single-process file", file=sys.stderr)
                return 1

        efficiency = 1.0
        if 1 in rates and 2 in rates:
            speedup, speedup_steady = rates[2] / rates[1], steady[2] / steady[1]
            efficiency = min(1.0, speedup_steady / 2) if speedup_steady == speedup_steady else 1.0
            print(f"speed-up 1 -> 2 workers: {speedup:.2f}x wall, {speedup_steady:.2f}x without start-up "
                  f"(efficiency η = {efficiency:.2f})")
        if 1 in steady:
            r1 = steady[1]
            print(f"\nprojection for the MADLAD-400 clean split: wall(N) = D / (N · r1 · η), "
                  f"D = {MADLAD_CLEAN_TOKENS:.0e} tokens, r1 = {r1:,.0f} tokens/s (1 worker, without "
                  f"start-up), η = {efficiency:.2f}")
            for n in [int(x) for x in args.project.split(",")]:
                seconds = MADLAD_CLEAN_TOKENS / (n * r1 * efficiency)
                print(f"  N = {n:>5} workers: {seconds / 3600:12,.1f} h  ({seconds / 86400:,.2f} days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
