#!/usr/bin/env python
"""Writes examples/demo_ru_runs.csv: the demo's completed Russian schedules as a plain table.

  python examples/make_plain_table.py                 # reads examples/demo_logs.csv

One row per completed schedule (a cooldown-branch end or a run's final evaluation) of the
monolingual ru runs, evaluated on ru, under foreign column names, the way a published table of runs
looks: "Model Size" (parameters N), "Training FLOP" (C = 6·N·D, FLOPs) and "loss" (nats/token).
The README fits it with `--table ... --map "N=Model Size,C=Training FLOP,loss=loss"`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
COMPLETED_PHASES = ("cooldown_end", "final")


def plain_table(logs: pd.DataFrame, target: str = "ru") -> pd.DataFrame:
    """Completed monolingual `target` schedules evaluated on `target`, sorted by size then FLOPs."""
    rows = logs[(logs["target"] == target)
                & (logs["mixture.name"] == f"monolingual_{target}")
                & logs["schedule_phase"].isin(COMPLETED_PHASES)]
    table = pd.DataFrame({"Model Size": rows["params"].astype(int),
                          "Training FLOP": rows["flops"].astype(float),
                          "loss": rows["loss"].astype(float)})
    return table.sort_values(["Model Size", "Training FLOP"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", default=str(HERE / "demo_logs.csv"), help="an exported logs CSV")
    parser.add_argument("--out", default=str(HERE / "demo_ru_runs.csv"), help="the plain table to write")
    args = parser.parse_args(argv)
    table = plain_table(pd.read_csv(args.logs))
    if table.empty:
        print(f"error: {args.logs}: no completed monolingual ru schedule evaluated on ru", file=sys.stderr)
        return 2
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    table.to_csv(tmp, index=False, float_format="%.10g")
    tmp.replace(out)
    print(f"wrote {out}: {len(table)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
