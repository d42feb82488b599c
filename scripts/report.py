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
    print(f"wrote {path}")
    for title, body in _sections(text):
        note = next((line.strip("_") for line in body if line.startswith(("_Skipped:", "_Not computed:",
                                                                           "_Failed:"))), "")
        figures = [line[line.index("](") + 2:-1] for line in body if line.startswith("![")]
        status = note or ("ok" + (f"; figures: {', '.join(figures)}" if figures else ""))
        print(f"  {title}: {status}")
    return 0


def _sections(text: str):
    """(title, lines) of each '## ' section of the report."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            out.append((line[3:], []))
        elif out:
            out[-1][1].append(line)
    return out


if __name__ == "__main__":
    sys.exit(main())
