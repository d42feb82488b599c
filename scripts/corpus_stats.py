r"""Per-language statistics of a MADLAD-layout root on Apache Beam (needs `pip install atlas_t5x[beam]`).

Writes the statistics file the data layer uses for splits, mixtures and U (documents, UTF-8
bytes, tokens per split under a vocabulary; format in atlas_t5x/data/stats.py): the same file
`scripts/count_unique.py` writes on one host, computed by atlas_t5x.preprocess.statistics.

  # local, in-process DirectRunner (embedded corpus, shipped vocabulary)
  python scripts/corpus_stats.py --out=/tmp/stats.json
  # local, two worker processes
  python scripts/corpus_stats.py --root=/data/madlad --out=/data/madlad_stats.json \
      --direct_num_workers=2 --direct_running_mode=multi_processing
  # Dataflow (same code; workers install this package from setup.py)
  python scripts/corpus_stats.py --root=gs://BUCKET/madlad --vocab=gs://BUCKET/spm64k.model \
      --out=gs://BUCKET/madlad_stats.json --runner=DataflowRunner --project=PROJECT \
      --region=REGION --temp_location=gs://BUCKET/tmp --setup_file=./setup.py

Every flag this script does not define is a Beam pipeline option. A language already in --out with
unchanged shards (names and sizes) is reused, not recounted.
Exit codes: 0 ok, 2 bad input (no language folders under the root, unknown language or vocabulary,
corrupt shard, --out holding statistics for another root, vocabulary or split rule; nothing is
written then).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

from atlas_t5x.data import stats as stats_flags  # noqa: E402  (light: no TensorFlow)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    stats_flags.add_corpus_flags(parser)
    parser.add_argument("--out", required=True, help="statistics file to write (JSON, local or gs://)")
    parser.add_argument("--skip_bad_records", action="store_true",
                        help="skip (and count per language) bad JSON lines / corrupt gzip tails")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, beam_args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from atlas_t5x.preprocess import statistics  # noqa: PLC0415
    except ImportError as err:
        print(f"corpus_stats: error: {err}; install the extra: pip install 'atlas_t5x[beam]'",
              file=sys.stderr)
        return 2
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    start = time.perf_counter()
    try:
        plan = statistics.run_statistics(args.root, languages or None, args.vocab, args.out,
                                         beam_args, args.skip_bad_records)
    except (ValueError, FileNotFoundError) as err:  # CorpusError, StatsError, PreprocessError
        print(f"corpus_stats: error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    from atlas_t5x.data import stats as stats_lib  # noqa: PLC0415

    doc = stats_lib.read_stats(args.out)
    print(f"root: {plan.root}\nvocabulary: {args.vocab} ({doc['vocab']})")
    print(f"{'language':<10} {'documents':>10} {'bytes':>13} {'U (tokens)':>13}  source")
    for lang in sorted([*plan.todo, *plan.reused]):
        entry = doc["languages"][lang]
        source = "reused" if lang in plan.reused else "counted"
        print(f"{lang:<10} {entry['documents']:>10,} {entry['bytes']:>13,} "
              f"{entry['unique_tokens']:>13,}  {source}")
    print(f"counted {len(plan.todo)} language(s), reused {len(plan.reused)}, in {seconds:.1f}s; "
          f"wrote {args.out}" if plan.todo else
          f"all {len(plan.reused)} language(s) unchanged: reused {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
