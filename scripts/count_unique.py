r"""Count U (unique training tokens) per language of a MADLAD root with a vocabulary, and cache it.

  python scripts/count_unique.py                                   # embedded corpus, corpus_spm
  python scripts/count_unique.py --root=/data/madlad --languages=en,fr,yo --vocab=byte \
      --cache=~/.cache/atlas_t5x/unique_counts.json

U_l = tokens of language l's training split (atlas_t5x.data.madlad.load_split) encoded with the
vocabulary, one EOS per document included — the same function (atlas_t5x.data.accounting) the
train pipeline uses. Counts are cached in a JSON file keyed by the root, the language, the
vocabulary fingerprint, every shard's size and mtime and the split rule, so a changed corpus or
vocabulary is recounted and a stale count is never served.

Prints a table (language, U, documents, seconds) and writes --json if given.
Exit codes: 0 ok, 2 bad input (unknown language, missing root or language folder, bad vocabulary,
unreadable corpus file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_CACHE = os.path.join("~", ".cache", "atlas_t5x", "unique_counts.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None,
                        help="MADLAD-layout folder (default: $MADLAD_DIR, else the embedded corpus)")
    parser.add_argument("--languages", default="",
                        help="comma-separated codes (default: every language under the root)")
    parser.add_argument("--vocab", default="corpus_spm",
                        help='"corpus_spm", "byte" or a SentencePiece .model path')
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="JSON cache file ('' disables)")
    parser.add_argument("--json", default="", help="also write {lang: U} to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from atlas_t5x import logio  # noqa: PLC0415
    from atlas_t5x.data import accounting, madlad  # noqa: PLC0415
    from atlas_t5x.data import vocab as vocab_lib  # noqa: PLC0415

    try:
        root = madlad.resolve_madlad_dir(args.root)
        languages = ([code.strip() for code in args.languages.split(",") if code.strip()]
                     or madlad.available_languages(root))
        languages = [madlad.check_language_code(lang) for lang in languages]
        vocabulary = vocab_lib.get_vocabulary(args.vocab)
        cache = os.path.expanduser(args.cache) if args.cache else None
        timings: dict[str, float] = {}

        def timed_counter(root_, lang, vocab_):
            start = time.perf_counter()
            count = accounting.count_unique_tokens(root_, lang, vocab_)
            timings[lang] = time.perf_counter() - start
            return count

        counts = accounting.cached_unique_counts(root, languages, vocabulary, cache,
                                                 counter=timed_counter)
    except (ValueError, FileNotFoundError) as err:  # CorpusError is a ValueError
        print(f"count_unique: error: {err}", file=sys.stderr)
        return 2

    print(f"root: {root}\nvocabulary: {args.vocab} ({accounting.vocab_fingerprint(vocabulary)})")
    print(f"{'language':<10} {'U (tokens)':>12}  source")
    for lang in languages:
        source = f"counted in {timings[lang]:.2f}s" if lang in timings else "cache"
        print(f"{lang:<10} {counts[lang]:>12,}  {source}")
    print(f"{'total':<10} {sum(counts.values()):>12,}")
    if cache:
        print(f"cache: {cache}")
    if args.json:
        logio.write_atomic(args.json, json.dumps(counts, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
