"""Gathers many runs' MODEL_DIR/logs/eval.jsonl into one table for the fitter.

  atlas-export out/demo/runs --out out/demo/logs      # logs.csv + logs.parquet
  atlas-export 'runs/*/logs/eval.jsonl' --csv t.csv   # CSV only

Sources may be eval.jsonl files, run folders, study folders (searched recursively) or globs.
Every row is checked against docs/log_schema.md; mixed schema versions are refused; repeated
(run, step, target) rows follow the rule of `atlas_t5x.logs` (identical rows are one row; in one
file the last write wins, with a warning; different rows in two files are an error); a truncated last line (a crash mid-write) is
dropped with a warning and every complete row kept. A NaN, ±inf or negative loss is refused
(or, with --drop_bad_values, dropped and counted); so is a file that is not UTF-8. Exits with
code 2 on bad input; nothing is written then.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from atlas_t5x import logio, logs, schema
from atlas_t5x.cli import common


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.ArgumentParser(prog="atlas-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="eval.jsonl files, run/study folders or globs")
    parser.add_argument("--out", help="output prefix: writes PREFIX.csv and PREFIX.parquet")
    parser.add_argument("--csv", help="CSV output path (dict fields as dotted columns)")
    parser.add_argument("--parquet", help="Parquet output path (per-language fields as native map/struct columns)")
    parser.add_argument("--drop_bad_values", deprecated=("--drop-bad-values",), action="store_true",
                        help="drop rows with NaN/inf numbers or negative losses (counted) instead of failing")
    args = parser.parse_args(argv)
    if args.out:
        args.csv = args.csv or f"{args.out}.csv"
        args.parquet = args.parquet or f"{args.out}.parquet"
    if not (args.csv or args.parquet):
        parser.error("give --out, --csv or --parquet")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            files = logs.find_eval_logs(args.sources)
            common.status(f"reading {len(files)} eval log(s)")
            rows = logs.export_logs(files, csv_path=args.csv, parquet_path=args.parquet,
                                      drop_bad_values=args.drop_bad_values)
        except (logs.LogError, schema.SchemaError, logio.LogFormatError, OSError) as err:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
            print(f"error: {err}", file=sys.stderr)
            return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    runs = sorted({r["run"] for r in rows})
    targets = sorted({r["target"] for r in rows})
    print(f"exported {len(rows)} rows from {len(files)} log file(s): {len(runs)} runs, "
          f"{len(targets)} targets ({', '.join(targets)})")
    for path in (args.csv, args.parquet):
        if path:
            print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
