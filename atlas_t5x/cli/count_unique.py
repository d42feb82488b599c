r"""atlas-count-unique: build the per-language statistics file of a MADLAD root (documents, bytes, tokens per split, U).

  atlas-count-unique                                   # embedded corpus, corpus_spm
  atlas-count-unique --root=/data/madlad --languages=en,fr,yo --vocab=byte \
      --stats=/data/madlad_stats_byte.json --workers=8

(`python scripts/count_unique.py ...` is the same command.)

Two streaming passes per language (atlas_t5x/data/stats.py: sizes -> split thresholds, then
documents / bytes / tokens per split with the vocabulary), in parallel over languages
(--workers processes), with a progress bar in a terminal (a line per language otherwise). Resumable: the file is rewritten atomically after
every language, and a rerun keeps every language whose shard list and sizes are unchanged
(changed ones are recounted). The file is what the train pipeline, the mixture planners and the
split thresholds read (`make_train_pipeline.stats_path`, gin `resolve_stats_path.path` or
$MADLAD_STATS). U_l = tokens of language l's training split, one EOS per document included.

Prints a table (language, documents, U, test tokens, source) and writes --json {lang: U} if given.
Exit codes: 0 ok, 2 bad input (unknown language, missing root or language folder, bad vocabulary,
unreadable corpus file, statistics file for another root or vocabulary).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

from atlas_t5x.cli import common
from atlas_t5x.data import stats as stats_flags  # light: no TensorFlow

COMMAND = "atlas-count-unique"

DEFAULT_STATS_DIR = os.path.join("~", ".cache", "atlas_t5x", "stats")


def default_stats_path(root: str, vocab: str) -> str:
    """~/.cache/atlas_t5x/stats/<hash of root and vocabulary>.json (one file per pair)."""
    from atlas_t5x.data import stats  # noqa: PLC0415

    key = hashlib.sha256(f"{stats.normalize_root(root)}\0{vocab}".encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser(DEFAULT_STATS_DIR), f"{key}.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.ArgumentParser(prog=COMMAND, description=__doc__, allow_abbrev=False)
    stats_flags.add_corpus_flags(parser)
    parser.add_argument("--stats", dest="stats", default=None, deprecated=("--cache",),
                        help=f"statistics file (default: one per root and vocabulary under {DEFAULT_STATS_DIR}; "
                             "'' keeps nothing)")
    parser.add_argument("--workers", type=int, default=1, help="languages counted in parallel")
    parser.add_argument("--skip_bad_records", action="store_true",
                        help="skip (and count) bad corpus records instead of failing")
    parser.add_argument("--json", default="", help="also write {lang: U} to this file")
    return parser.parse_args(argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    common.require_training_stack(COMMAND)
    from atlas_t5x import train_progress  # noqa: PLC0415

    train_progress.quiet_library_logs()  # before TensorFlow loads: no C++ INFO chatter
    if not sys.stderr.isatty():
        common.status(f"{COMMAND}: loading the vocabulary and the corpus (TensorFlow, seqio)")
    from atlas_t5x import logio  # noqa: PLC0415
    from atlas_t5x.data import madlad, stats  # noqa: PLC0415
    from atlas_t5x.data import vocab as vocab_lib  # noqa: PLC0415

    if args.workers < 1:
        raise common.UsageError(f"--workers must be >= 1, got {args.workers}")
    counted: dict[str, float] = {}

    def on_language(lang: str, seconds: float) -> None:
        counted.setdefault(lang, seconds)
        if not sys.stderr.isatty():  # the bar's place in logs
            common.status(f"{COMMAND}: {lang} counted at {seconds:.1f} s")

    try:
        root = madlad.resolve_madlad_dir(args.root)
        languages = ([code.strip() for code in args.languages.split(",") if code.strip()]
                     or madlad.available_languages(root))
        languages = [madlad.check_language_code(lang) for lang in languages]
        vocab_lib.get_vocabulary(args.vocab)
        path = default_stats_path(root, args.vocab) if args.stats is None else (args.stats or None)
        start = time.perf_counter()
        result = stats.compute_stats(
            root, languages, args.vocab, path=path, workers=args.workers,
            skip_bad_records=args.skip_bad_records, progress=sys.stderr.isatty(),
            on_language=lambda lang, _entry: on_language(lang, time.perf_counter() - start))
    except (ValueError, FileNotFoundError) as err:  # CorpusError and StatsError are ValueErrors
        raise common.UsageError(str(err)) from err

    print(f"root: {root}\nvocabulary: {args.vocab} ({result['vocab']})")
    print(f"{'language':<10} {'documents':>10} {'U (tokens)':>12} {'test tokens':>12} {'bad':>5}  source")
    total = 0
    for lang in languages:
        entry = result["languages"][lang]
        total += entry["unique_tokens"]
        source = f"counted (done at {counted[lang]:.1f}s)" if lang in counted else "cache"
        print(f"{lang:<10} {entry['documents']:>10,} {entry['unique_tokens']:>12,} "
              f"{entry['splits']['test']['tokens']:>12,} {entry['bad_records']:>5}  {source}")
    print(f"{'total':<10} {'':>10} {total:>12,}")
    if path:
        print(f"statistics: {path}")
    if args.json:
        logio.write_atomic(args.json, json.dumps({lang: result["languages"][lang]["unique_tokens"]
                                                  for lang in languages}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """atlas-count-unique; `argv` without the program name (default sys.argv[1:]). Returns the exit code."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
