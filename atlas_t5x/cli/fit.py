"""atlas-fit: fits a scaling law to exported eval logs or a CSV table; writes OUT/fit.json and plots.

  atlas-fit --logs out/demo/logs.csv --law atlas --holdout random N M --out fit/
  atlas-fit --table examples/demo_ru_runs.csv \\
      --map "N=Model Size,C=Training FLOP,loss=loss" --law csl --bootstrap 1000 --out fit/
  atlas-fit --table runs.csv --map N=params,D=tokens,U=unique_tokens,loss=val_loss --law dcsl --tied \\
      --fix E=1.8691 --fix A=520.82 --fix B=1487.72 --fix alpha=0.35266 --profile --out fit/

`--compare csl,dcsl,atlas` adds a law × split table (R² per target averaged over targets — the
headline — then pooled R², MAE, MAPE) scored on the same --holdout splits (each compared law with
its default options). One law per target language.

Points (`--points`, logs only): by default only completed schedules — the end of each WSD cooldown
branch and each run's final evaluation; `stable`, `stable_offset` (stable points lowered by a
fitted offset for the missing cooldown, plus the end points) and `all` on request.
Model selection: by default the requested law is fitted in its variants (tied/untied exponents,
Huber/likelihood objective) and the one that best predicts the largest sizes from the smaller ones
is used (`selection` in fit.json and stdout); `--no_select` fits exactly what was asked.
Held-out splits are grouped by run (random) and chosen per target (D, C); one that cannot be made
is recorded with its reason (`heldout.<split>.error`) instead of failing the fit.
Flags (`per_target.*.flags`): parameters at or next to a bound, and with --profile those whose
profile is flat; `converged` states its test (`convergence_criteria`).
`--bound alpha=0.1:0.5` narrows a parameter's range (defaults: E, A, B > 0, τ ≥ 0 unless
--allow_negative_tau); parameters that end on a bound are listed in `per_target.*.at_bounds`.
Logs are fitted on the token cross-entropy `loss` by default (`--loss_field`).
Compute-optimal allocation (`compute_optimal` in fit.json, a line per approach): `--approach
parametric` (default) reads a = β/(α+β), b = α/(α+β) off the fitted law (intervals with
--bootstrap); `isoflop` fits each FLOP budget's loss profile over log N near its minimum (budgets:
a C column or C = 6·N·D grouped within ±10%, or runs read at common budgets) and regresses log N*
on log C; `envelope` takes the lowest loss per budget; `all` runs the three (the law's interval from
200 bootstrap replicates when --bootstrap is not given) and flags intervals that do not overlap. isoflop/envelope that cannot be computed exit 2.
fit.json (format: `atlas_t5x.scaling.fit_run`) holds {"law", "params", "objective", "converged", "n_points",
"heldout": {split: {"r2", "mae", "mape", "n"}}, "r2_in_sample"} plus runner-up
optima, bootstrap intervals and profiles when asked ("params" maps target → parameters when
several targets are fitted). With every parameter fixed it only evaluates. Bad input exits
with code 2 and writes nothing; files are written atomically.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from atlas_t5x import logio, logs, schema
from atlas_t5x.cli import common
from atlas_t5x.scaling import compute_optimal, engine, fit_run, heldout
from atlas_t5x.scaling import points as points_lib
from atlas_t5x.scaling.laws import LAW_NAMES
from atlas_t5x.scaling.objectives import OBJECTIVES

# for callers of the old scripts/fit_atlas.py module
input_warnings = fit_run.input_warnings
summary = fit_run.summary


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog="atlas-fit", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--logs", help="eval.jsonl file, run/study folder, glob, or exported CSV/Parquet")
    src.add_argument("--table", help="CSV/Parquet table (with --map), or a table from atlas-export")
    p.add_argument("--map", help="N=col,D=col,U=col,loss=col[,C=col,run=col,target=col,mixture=col,p=col,K=col]")
    p.add_argument("--law", default="atlas", help=f"one of {', '.join(LAW_NAMES)} (default atlas)")
    p.add_argument("--target", action="append", help="target language(s) to fit (repeatable or a,b); default all")
    p.add_argument("--objective", default="huber", help=f"one of {', '.join(OBJECTIVES)} (default huber)")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help="hold a parameter fixed")
    p.add_argument("--tied", action="store_true", help="tie the exponents (alpha = beta)")
    p.add_argument("--bound", action="append", default=[], metavar="NAME=LO:HI",
                   help="bounds of a parameter in natural units (default: E, A, B > 0, tau ≥ 0, ...)")
    p.add_argument("--holdout", nargs="+", default=[], help=f"held-out splits: {' '.join(heldout.SPLITS)}")
    p.add_argument("--bootstrap", type=int, default=0, metavar="K", help="bootstrap replicates (by run)")
    p.add_argument("--profile", action="store_true", help="objective profiles along each parameter")
    p.add_argument("--compare", help="comma-separated laws scored on the same --holdout splits "
                                     "(a law x split table of R², MAE, MAPE)")
    p.add_argument("--out", required=True, help="output folder (fit.json, fit_curves.png, residuals.png)")
    p.add_argument("--loss_field", default="loss", choices=list(points_lib.LOSS_FIELDS),
                   help="which logged loss to fit (logs only; default loss = token cross-entropy, "
                        "nats/token). loss_unigram_norm turns negative once a model beats a unigram "
                        "model and then cannot be fitted in log-loss")
    p.add_argument("--drop_highest", type=int, default=0, help="drop this many highest-loss rows (tables)")
    p.add_argument("--final_only", action="store_true", help="only each run's last evaluation (logs)")
    p.add_argument("--points", default="default", choices=list(points_lib.POINT_SETS),
                   help="which evaluations are points (logs): default = cooldown ends + final "
                        "evaluations; stable; stable_offset; all")
    p.add_argument("--no_select", action="store_true",
                   help="fit exactly the requested variant (no tied/untied, Huber/likelihood selection)")
    p.add_argument("--include_finetunes", action="store_true",
                   help="also fit runs started from a checkpoint (init != scratch; logs)")
    p.add_argument("--dcsl_stage", default="one", choices=["one", "two"])
    p.add_argument("--n_transfer", type=int, default=3, help="|K_t| transfer languages for atlas")
    p.add_argument("--transfer_rule", default="cosampling", choices=["cosampling", "matrix"])
    p.add_argument("--transfer_matrix", help="BTS CSV (rows target, columns source) for tau initialisation")
    p.add_argument("--allow_negative_tau", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_plots", action="store_true")
    p.add_argument("--approach", default="parametric", choices=list(compute_optimal.APPROACH_CHOICES),
                   help="compute-optimal exponents N* ∝ C^a, D* ∝ C^b: parametric (the law's "
                        "β/(α+β), default), isoflop (per-budget profiles), envelope, or all side by side")
    return p



def main(argv: list[str] | None = None) -> int:
    """atlas-fit: exit 0 after writing OUT/fit.json, 2 on bad input (nothing written)."""
    args = build_parser().parse_args(argv)
    try:
        options = fit_run.FitOptions(**vars(args))
        fit_run.check_out_dir(options.out)  # before the (slow) fit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = fit_run.run_fit(options, status=common.status)
    except (points_lib.DataError, engine.FitError, compute_optimal.FrontierError, schema.SchemaError, logio.LogFormatError, logs.LogError,
            ValueError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return common.EXIT_USAGE
    print(fit_run.summary(out))
    print(f"wrote {Path(options.out) / fit_run.FIT_JSON_NAME}")
    return common.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
