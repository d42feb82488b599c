"""Turns a folder of exported logs into one Markdown report (fits, held-out R², transfer, curse,
pretrain-vs-finetune crossover), with its plots beside it.

  atlas-report out/demo/runs --out out/demo/report
  atlas-report logs.csv --out report --laws csl atlas --loss_field loss_unigram_norm

LOGS may be a folder of runs (searched for eval.jsonl), one eval.jsonl, or a table written by
atlas-export. Sections whose runs are missing say so in the report. Also writes
OUT/report.json (each section's status, tables with raw values, figures). Exits with code 2 on
bad input, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys

from atlas_t5x import logio, schema
from atlas_t5x.scaling import curves as cv
from atlas_t5x.scaling import report
from atlas_t5x.scaling.laws import LAW_NAMES
from atlas_t5x.cli import common


def parse_args(argv):
    parser = common.ArgumentParser(prog="atlas-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", help="folder of runs, eval.jsonl, or exported CSV/Parquet table")
    parser.add_argument("--out", required=True, help="output folder (report.md and plots)")
    parser.add_argument("--laws", nargs="*", default=list(report.DEFAULT_LAWS), choices=LAW_NAMES,
                        help="laws fitted per target")
    parser.add_argument("--loss_field", deprecated=("--loss-field",), default="loss", choices=("loss", "loss_unigram_norm", "bits_per_byte"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    parser.add_argument("--points", default="default", choices=["default", "stable", "stable_offset", "all"],
                        help="which evaluations are fitted points (default: cooldown-branch ends and final "
                             "evaluations, i.e. completed schedules)")
    parser.add_argument("--no_select", action="store_true",
                        help="fit exactly the laws named (default: each law's variant chosen by "
                             "extrapolation CV over the largest sizes, as atlas-fit does)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    common.status(f"building the report from {args.logs} (fits, held-out splits, transfer, curse, crossover)")
    try:
        path = report.build_report(args.logs, args.out, laws=args.laws, loss_field=args.loss_field,
                                   seed=args.seed, points=args.points, select=not args.no_select)
    except (cv.CurveError, schema.SchemaError, logio.LogFormatError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    doc = json.loads((path.parent / "report.json").read_text(encoding="utf-8"))
    print(f"wrote {path} and {path.parent / 'report.json'}")
    for title, section in doc["sections"].items():
        figures = f"; figures: {', '.join(section['figures'])}" if section["figures"] else ""
        print(f"  {title}: {section['status']}{figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
