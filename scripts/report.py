#!/usr/bin/env python
"""Turns a folder of exported logs into one Markdown report (fits, held-out R², transfer, curse,
pretrain-vs-finetune crossover), with its plots beside it.

  python scripts/report.py out/demo/runs --out out/demo/report
  python scripts/report.py logs.csv --out report --laws csl atlas --loss-field loss_unigram_norm

LOGS may be a folder of runs (searched for eval.jsonl), one eval.jsonl, or a table written by
scripts/export_logs.py. Sections whose runs are missing say so in the report. Exits with code 2
on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atlas_t5x import logio, schema  # noqa: E402
from atlas_t5x.scaling import curves as cv  # noqa: E402
from atlas_t5x.scaling import report  # noqa: E402
from atlas_t5x.scaling.laws import LAW_NAMES  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", help="folder of runs, eval.jsonl, or exported CSV/Parquet table")
    parser.add_argument("--out", required=True, help="output folder (report.md and plots)")
    parser.add_argument("--laws", nargs="*", default=list(report.DEFAULT_LAWS), choices=LAW_NAMES,
                        help="laws fitted per target")
    parser.add_argument("--loss-field", default="loss", choices=("loss", "loss_unigram_norm", "bits_per_byte"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        path = report.build_report(args.logs, args.out, laws=args.laws, loss_field=args.loss_field,
                                   seed=args.seed)
    except (cv.CurveError, schema.SchemaError, logio.LogFormatError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = path.read_text(encoding="utf-8")
    sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    skipped = text.count("_Skipped:") + text.count("_Failed:")
    print(f"wrote {path} ({len(sections)} sections, {skipped} skipped or failed): {', '.join(sections)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
