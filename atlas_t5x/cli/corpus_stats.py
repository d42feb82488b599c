r"""atlas-corpus-stats: per-language statistics of a MADLAD-layout root on Apache Beam (needs `pip install 'atlas_t5x[beam]'`).

Writes the statistics file the data layer uses for splits, mixtures and U (documents, UTF-8
bytes, tokens per split under a vocabulary; format in atlas_t5x/data/stats.py): the same file
`atlas-count-unique` writes on one host, computed by atlas_t5x.preprocess.statistics.

  # local, in-process DirectRunner (embedded corpus, shipped vocabulary)
  atlas-corpus-stats --out=/tmp/stats.json
  # local, two worker processes
  atlas-corpus-stats --root=/data/madlad --out=/data/madlad_stats.json \
      --direct_num_workers=2 --direct_running_mode=multi_processing
  # Dataflow (same code; workers install this package from setup.py)
  atlas-corpus-stats --root=gs://BUCKET/madlad --vocab=gs://BUCKET/spm64k.model \
      --out=gs://BUCKET/madlad_stats.json --runner=DataflowRunner --project=PROJECT \
      --region=REGION --temp_location=gs://BUCKET/tmp --setup_file=./setup.py

(`python scripts/corpus_stats.py ...` is the same command.)

Every flag this command does not define must be a Beam pipeline option (anything else: exit 2
naming the closest flag). A language already in --out with
unchanged shards (names and sizes) is reused, not recounted.
Exit codes: 0 ok, 2 bad input (no language folders under the root, unknown language or vocabulary,
corrupt shard, --out holding statistics for another root, vocabulary or split rule; nothing is
written then).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time

from atlas_t5x.cli import common
from atlas_t5x.data import stats as stats_flags  # light: no TensorFlow

COMMAND = "atlas-corpus-stats"


def build_parser() -> common.ArgumentParser:
    parser = common.ArgumentParser(prog=COMMAND, description=__doc__, allow_abbrev=False)
    stats_flags.add_corpus_flags(parser)
    parser.add_argument("--out", required=True, help="statistics file to write (JSON, local or gs://)")
    parser.add_argument("--skip_bad_records", action="store_true",
                        help="skip (and count per language) bad JSON lines / corrupt gzip tails")
    return parser


def beam_option_names() -> list[str]:
    """Every `--flag` some Beam PipelineOptions class defines (what Beam itself parses)."""
    from apache_beam.options import pipeline_options  # noqa: PLC0415

    parser = pipeline_options._BeamArgumentParser(allow_abbrev=False)  # the parser Beam builds the same way
    for cls in {str(c): c for c in pipeline_options.PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return sorted({s for action in parser._actions for s in action.option_strings if s.startswith("--")})


def check_beam_args(parser: common.ArgumentParser, beam_args: list[str]) -> None:
    """parser.error (exit 2) naming each flag that is neither this command's nor a Beam option."""
    flags = [a.split("=", 1)[0] for a in beam_args if a.startswith("--")]
    if not flags:
        return
    beam_names = set(beam_option_names())
    unknown = [f for f in flags if f not in beam_names]
    if unknown:
        known = [*parser.known_flags(), *sorted(beam_names)]
        hints = [f"{f}: did you mean {' or '.join(close)}?" for f in unknown
                 if (close := difflib.get_close_matches(f.replace("-", "_").replace("__", "--", 1), known, n=2))]
        parser.error(f"unrecognized arguments (neither {COMMAND} flags nor Beam pipeline options): "
                     + " ".join(unknown) + "".join(f"\n  {h}" for h in hints))


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    common.require_training_stack(COMMAND)
    if common.missing_modules(["apache_beam"]):
        raise common.UsageError(f"{COMMAND} runs on Apache Beam (not installed): pip install 'atlas_t5x[beam]'")
    check_beam_args(parser, beam_args)
    return args, beam_args


def _main(argv: list[str] | None) -> int:
    args, beam_args = parse_args(argv)
    from atlas_t5x import train_progress  # noqa: PLC0415

    train_progress.quiet_library_logs()  # before TensorFlow loads: no C++ INFO chatter
    common.status(f"{COMMAND}: loading Beam, TensorFlow and the vocabulary")
    from atlas_t5x.preprocess import statistics  # noqa: PLC0415
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    start = time.perf_counter()
    try:
        plan = statistics.run_statistics(args.root, languages or None, args.vocab, args.out,
                                         beam_args, args.skip_bad_records)
    except (ValueError, FileNotFoundError) as err:  # CorpusError, StatsError, PreprocessError
        raise common.UsageError(str(err)) from err
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


def main(argv: list[str] | None = None) -> int:
    """atlas-corpus-stats; `argv` without the program name (default sys.argv[1:]). Returns the exit code."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
