#!/usr/bin/env python
"""Fits a scaling law to exported eval logs or a CSV table; writes DIR/fit.json and plots.

  python scripts/fit_atlas.py --logs out/demo/logs.csv --law atlas --holdout random N M --out fit/
  python scripts/fit_atlas.py --table ../shared/data/epoch_chinchilla_fig4.csv \\
      --map "N=Model Size,C=Training FLOP,loss=loss" --drop_highest 5 --law csl --bootstrap 1000 --out fit/
  python scripts/fit_atlas.py --table ../shared/data/datablations_182runs.csv \\
      --map N=params,D=tokens,U=unique_tokens,loss=val_loss --law dcsl --tied \\
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
fit.json holds {"law", "params", "objective", "converged", "n_points",
"heldout": {split: {"r2", "mae", "mape", "n"}}, "r2_in_sample"} plus runner-up
optima, bootstrap intervals and profiles when asked ("params" maps target → parameters when
several targets are fitted). With every parameter fixed it only evaluates. Bad input exits
with code 2 and writes nothing; files are written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from atlas_t5x import logio, schema  # noqa: E402
from atlas_t5x.scaling import data as data_lib  # noqa: E402
from atlas_t5x.scaling import engine, heldout  # noqa: E402
from atlas_t5x.scaling.laws import LAW_NAMES  # noqa: E402
from atlas_t5x.scaling.objectives import OBJECTIVES  # noqa: E402


class UsageError(ValueError):
    pass


# Magnitudes no real run produces [our choice]: flagged (with counts), not fitted silently.
PLAUSIBLE_LOSS = 100.0  # |loss| in nats/token (the unigram-normalised loss may be negative)
PLAUSIBLE_MAX_COUNT = 1e18  # parameters N or tokens D, U


def check_out_dir(path: str) -> None:
    """UsageError before any fitting when --out cannot become the output folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {path}: exists and is not a folder")
    existing = next(p for p in [out, *out.parents] if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--out {path}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path}: {existing} is not writable")


def input_warnings(points) -> list[str]:
    """Counts of duplicate points and implausible magnitudes (each also printed as a warning)."""
    found = []
    # Same target, size, tokens and loss: one measurement entered twice (run names may differ).
    key = [c for c in ("target", "N", "D", "U", "loss") if c in points]
    duplicates = int(points[key].astype(str).duplicated().sum())
    if duplicates:
        found.append(f"{duplicates} duplicate point(s) (same {', '.join(key)}) in the input: each counts twice "
                     "in the fit")
    loss = points["loss"].to_numpy(float)
    bad_loss = int(np.sum(~np.isfinite(loss) | (np.abs(loss) > PLAUSIBLE_LOSS)))
    if bad_loss:
        found.append(f"{bad_loss} point(s) with |loss| above {PLAUSIBLE_LOSS:g} nats/token (or not finite)")
    for column in ("N", "D", "U"):
        if column in points:
            values = points[column].to_numpy(float)
            huge = int(np.sum(~np.isfinite(values) | (np.abs(values) > PLAUSIBLE_MAX_COUNT)))
            if huge:
                found.append(f"{huge} point(s) with {column} beyond {PLAUSIBLE_MAX_COUNT:g} (or not finite)")
    for message in found:
        print(f"warning: {message}", file=sys.stderr)
    return found


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--logs", help="eval.jsonl file, run/study folder, glob, or exported CSV/Parquet")
    src.add_argument("--table", help="CSV/Parquet table (with --map), or a table from export_logs.py")
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
    p.add_argument("--loss_field", default="loss", choices=list(data_lib.LOSS_FIELDS),
                   help="which logged loss to fit (logs only; default loss = token cross-entropy, "
                        "nats/token). loss_unigram_norm turns negative once a model beats a unigram "
                        "model and then cannot be fitted in log-loss")
    p.add_argument("--drop_highest", type=int, default=0, help="drop this many highest-loss rows (tables)")
    p.add_argument("--final_only", action="store_true", help="only each run's last evaluation (logs)")
    p.add_argument("--points", default="default", choices=list(data_lib.POINT_SETS),
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
    return p.parse_args(argv)


def parse_fixed(items) -> dict[str, float]:
    fixed = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--fix {item!r} is not NAME=VALUE")
        name, value = (s.strip() for s in item.split("=", 1))
        try:
            v = float(value)
        except ValueError:
            raise UsageError(f"--fix {name}: value {value!r} is not a number") from None
        if not math.isfinite(v):
            raise UsageError(f"--fix {name}: value {value!r} is not finite")
        fixed[name] = v
    return fixed


def parse_bounds(items) -> tuple[tuple[str, float, float], ...]:
    bounds = []
    for item in items:
        name, sep, rng = item.partition("=")
        lo, sep2, hi = rng.partition(":")
        if not (sep and sep2 and name.strip()):
            raise UsageError(f"--bound {item!r} is not NAME=LO:HI")
        try:
            lo_v, hi_v = float(lo), float(hi)
        except ValueError:
            raise UsageError(f"--bound {item!r}: LO and HI must be numbers") from None
        if math.isnan(lo_v) or math.isnan(hi_v) or not lo_v < hi_v:
            raise UsageError(f"--bound {name.strip()}: LO {lo!r} must be below HI {hi!r}")
        bounds.append((name.strip(), lo_v, hi_v))
    return tuple(bounds)


def load_points(args):
    if args.logs:
        return data_lib.load_logs(args.logs, loss_field=args.loss_field, final_only=args.final_only,
                                  include_finetunes=args.include_finetunes, points=args.points)
    if args.map:
        return data_lib.load_table(args.table, data_lib.parse_map(args.map), args.drop_highest)
    if data_lib.is_exported_table(args.table):
        return data_lib.rows_to_points(data_lib.read_table_rows(args.table), loss_field=args.loss_field,
                                       final_only=args.final_only, include_finetunes=args.include_finetunes,
                                       points=args.points)
    raise UsageError(f"{args.table}: not an exported-log table; give --map N=col,D=col,U=col,loss=col")


def run(args) -> dict:
    if args.law not in LAW_NAMES:
        raise UsageError(f"unknown law {args.law!r}; known laws: {', '.join(LAW_NAMES)}")
    if args.objective not in OBJECTIVES:
        raise UsageError(f"unknown objective {args.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    for split in args.holdout:
        if split not in heldout.SPLITS:
            raise UsageError(f"unknown held-out split {split!r}; choose from {', '.join(heldout.SPLITS)}")
    if args.bootstrap < 0:
        raise UsageError("--bootstrap must be ≥ 0")
    if args.n_transfer < 0:
        raise UsageError("--n_transfer must be ≥ 0")
    if args.drop_highest < 0:
        raise UsageError("--drop_highest must be ≥ 0")
    compare = [c.strip() for c in (args.compare or "").split(",") if c.strip()]
    for name in compare:
        if name not in LAW_NAMES:
            raise UsageError(f"--compare: unknown law {name!r}; known laws: {', '.join(LAW_NAMES)}")
    fixed = parse_fixed(args.fix)
    bounds = parse_bounds(args.bound)
    if args.transfer_matrix:
        data_lib.load_transfer_matrix(args.transfer_matrix)   # fails early, naming the file
    if args.table and args.map:
        mapped = data_lib.parse_map(args.map)
        for law, key, meaning in (("msl", "p", "the target's sampling ratio"),
                                  ("curse", "K", "the number of languages in the mixture")):
            if law in [args.law] + compare and key not in mapped:
                raise UsageError(f"law {law!r} reads {key} ({meaning}): give --map {key}=column")
    points = load_points(args)
    targets = [t.strip() for item in (args.target or []) for t in item.split(",") if t.strip()] or None
    if targets:
        present = sorted(points["target"].unique())
        missing = [t for t in targets if t not in present]
        if missing:
            raise UsageError(f"--target {missing} not in the data; targets present: {present}")
        points = points[points["target"].isin(targets)].reset_index(drop=True)
    notes = input_warnings(points)
    own_data_laws = [law for law in [args.law] + compare if law != "atlas"]
    if own_data_laws:
        # Only ATLAS explains a target the run never trained on (through transfer terms); compared
        # laws must see the same points, so those points go for every law here.
        points, n_dropped = data_lib.drop_untrained_targets(points)
        if n_dropped:
            notes.append(f"dropped {n_dropped} point(s) whose target had no training tokens "
                         f"(law {own_data_laws[0]} reads the target's own tokens D_t)")
            if points.empty:
                raise UsageError("no points left: no target was trained on in these runs")
    spec = engine.FitSpec(
        law=args.law, objective=args.objective, tied=args.tied, fixed=tuple(sorted(fixed.items())),
        n_transfer=args.n_transfer, transfer_rule=args.transfer_rule, transfer_matrix=args.transfer_matrix,
        allow_negative_tau=args.allow_negative_tau, dcsl_stage=args.dcsl_stage, bounds=bounds)

    selected = None
    if not args.no_select:
        from atlas_t5x.scaling import selection

        selected = selection.select(spec, points)
        spec = selected.chosen
    if "stable_offset" in points.attrs:
        notes.append("stable points lowered by the fitted offset for the missing cooldown: "
                     + ", ".join(f"{t} {v:.4f}" for t, v in points.attrs["stable_offset"].items()) + " nats/token")

    t0 = time.perf_counter()
    table_fit = engine.fit_points(spec, points)
    fit_seconds = time.perf_counter() - t0
    pred = table_fit.predict(points)
    y = points["loss"].to_numpy(float)

    held = {}
    splits = {}
    for split in args.holdout:
        try:
            res = heldout.evaluate_split(spec, points, split, args.seed)
        except heldout.SplitError as err:
            held[split] = {"error": str(err)}
            continue
        held[split] = res.to_dict()
        splits[split] = res

    comparison = []
    if compare:
        # every compared law with its default options (no --fix / --bound, which name one law's parameters)
        specs = {name: dataclasses.replace(spec, law=name, fixed=(), bounds=()) for name in compare}
        table = heldout.compare_laws(specs, points, splits=args.holdout, seed=args.seed)
        comparison = table.to_dict(orient="records")

    per_target = {}
    for target, res in table_fit.fits.items():
        sub = points[points["target"] == target]
        X = data_lib.law_inputs(res.law, sub)
        entry = res.to_dict()
        entry["params"] = {k: float(v) for k, v in res.law.full_params(res.params).items()}   # tied: beta = alpha
        entry["tied"] = bool(res.law.tied)
        entry["r2_in_sample"] = engine.r2_score(sub["loss"], res.predict(X))
        # the fitted range (scripts/plan.py warns when a plan leaves it): N, D = D_t, epochs = D_t/U_t
        epochs = (sub["D"] / sub["U"]).to_numpy(float)
        entry["fit_range"] = {"N": [float(sub["N"].min()), float(sub["N"].max())],
                              "D": [float(sub["D"].min()), float(sub["D"].max())],
                              "epochs": [float(epochs.min()), float(epochs.max())]}
        entry["flags"] = {k: [f"at or next to its {side} bound"] for k, side in res.at_bounds.items()}
        if args.bootstrap and res.free_names:
            from atlas_t5x.scaling import bootstrap

            boot = bootstrap.bootstrap(res, X, sub["loss"].to_numpy(float), heldout.groups_of(sub),
                                       n_boot=args.bootstrap, seed=args.seed)
            entry["bootstrap"] = boot.to_dict()
            # converged parameter samples: scripts/plan.py compute turns them into a bootstrap band
            # (every law parameter: fixed ones, which get no interval, at their fixed value)
            # (a tied law's samples carry beta = alpha, like its params)
            entry["bootstrap"]["samples"] = [
                {k: float(v) for k, v in res.law.full_params(
                    {k: float(boot.samples[k][i]) if k in boot.samples else float(res.params[k])
                     for k in res.law.param_names}).items()}
                for i in np.flatnonzero(boot.converged)]
        if args.profile and res.free_names:
            from atlas_t5x.scaling import profiles

            prof = profiles.profile(res, X, sub["loss"].to_numpy(float))
            entry["profiles"] = {k: v.to_dict() for k, v in prof.items()}
            for k, v in prof.items():
                if v.weakly_identified:
                    entry["flags"].setdefault(k, []).append(
                        f"flat profile (objective rises < {100 * profiles.FLAT_TOLERANCE:g}% over the profile range)")
        per_target[target] = entry

    single = len(per_target) == 1
    only = next(iter(per_target.values()))
    out = {
        "law": args.law,
        "objective_name": spec.objective,
        "targets": sorted(per_target),
        "params": only["params"] if single else {t: e["params"] for t, e in per_target.items()},
        "objective": table_fit.objective,
        "converged": table_fit.converged,
        "n_points": int(len(points)),
        "r2_in_sample": engine.r2_score(y, pred),
        "r2_in_sample_mean_over_targets": float(np.mean([e["r2_in_sample"] for e in per_target.values()])),
        "heldout": held,
        "heldout_headline": heldout.HEADLINE,
        "convergence_criteria": engine.CONVERGENCE_CRITERIA,
        "selection": selected.to_dict() if selected else {"chosen": None, "reason": "--no_select"},
        "points": args.points if (args.logs or not args.map) else "table",
        "runner_ups": only["runner_ups"] if single else {t: e["runner_ups"] for t, e in per_target.items()},
        "per_target": per_target,
        "fit_seconds": fit_seconds,
        "notes": notes,
        "comparison": comparison,
        "options": {"tied": spec.tied, "objective": spec.objective, "requested_tied": args.tied, "fixed": fixed, "dcsl_stage": args.dcsl_stage,
                    "n_transfer": args.n_transfer, "transfer_rule": args.transfer_rule,
                    "bounds": {name: [lo, hi] for name, lo, hi in bounds},
                    "loss_field": args.loss_field if (args.logs or not args.map) else "table",
                    "source": args.logs or args.table},
    }
    for scope in [out, *per_target.values()]:  # NaN/inf R² or objective: not a converged fit
        if scope.get("converged") and not all(
                isinstance(scope.get(k), (int, float)) and math.isfinite(scope[k]) for k in ("objective", "r2_in_sample")):
            scope["converged"] = False
            scope["convergence_message"] = "objective or in-sample R² is not finite"
    if single and "bootstrap" in only:
        out["bootstrap"] = only["bootstrap"]
    if single and "profiles" in only:
        out["profiles"] = only["profiles"]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_plots:
        from atlas_t5x.scaling import plots

        marked = next((splits[s] for s in args.holdout if s in splits and s != "lolo"), None)
        out["plots"] = plots.write_plots(
            points, pred, out_dir, marked.held_out if marked else None, args.law,
            [marked.split] if marked else (), _curve_fn(table_fit, points),
            heldout_pred=marked.predictions if marked else None)
    logio.write_atomic(out_dir / "fit.json", json.dumps(_jsonable(out), indent=2, sort_keys=True) + "\n")
    return out


def _curve_fn(table_fit, points):
    """Law curves over (N, D) for one-point-per-run tables whose law needs only N, D (and U = D)."""
    laws = [r.law for r in table_fit.fits.values()]
    if not all(set(l.inputs) <= {"N", "D", "U"} for l in laws):
        return None
    if not np.allclose(points["U"], points["D"]):
        return None

    def fn(target, N, D):
        return table_fit.fits[target].predict({"N": N, "D": D, "U": D})

    return fn


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def summary(out: dict) -> str:
    lines = [f"law {out['law']} ({out['objective_name']}), {out['n_points']} points, "
             f"targets: {', '.join(out['targets'])}"]
    for target, e in out["per_target"].items():
        params = ", ".join(f"{k}={v:.6g}" for k, v in e["params"].items())
        lines.append(f"  [{target}] {params}")
        lines.append(f"  [{target}] objective {e['objective']:.10g}, converged={e['converged']} "
                     f"({e['convergence_message']}), R² in sample {e['r2_in_sample']:.4f}, "
                     f"{len(e['runner_ups'])} runner-up basin(s)")
        if "bootstrap" in e:
            ci = e["bootstrap"]["intervals"]
            lines.append(f"  [{target}] bootstrap ({e['bootstrap']['n_boot']} by run, "
                         f"{100 * e['bootstrap']['converged_fraction']:.0f}% converged) 95% CI: "
                         + ", ".join(f"{k} {v['lo']:.4g}–{v['hi']:.4g}" for k, v in ci.items()))
        if "profiles" in e:
            weak = [k for k, v in e["profiles"].items() if v["weakly_identified"]]
            lines.append(f"  [{target}] weakly identified: {', '.join(weak) or 'none'}")
        if e.get("flags"):
            lines.append(f"  [{target}] FLAGGED: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in e["flags"].items()))
    sel = out.get("selection") or {}
    if sel.get("cv_error_percent"):
        lines.append("model selection (" + sel["method"] + "):")
        for label, err in sel["cv_error_percent"].items():
            mark = "  <- chosen" if label == sel["chosen"] else ""
            lines.append(f"  {label:<28} CV error {_num(err, '.4g')}%{mark}")
    if sel.get("reason"):
        lines.append(f"selection: {sel['reason']}")
    if out["comparison"]:
        lines.append("comparison on the same splits (R² mean over targets first, then pooled):")
        lines.append(f"  {'law':>8} {'split':>10} {'R² mean':>9} {'R² pool':>9} {'MAE':>8} {'MAPE%':>7} {'n':>5}")
        for row in out["comparison"]:
            lines.append(f"  {row['law']:>8} {row['split']:>10} {_num(row.get('r2_mean_over_targets'))} "
                         f"{_num(row['r2'])} {_num(row['mae'], '8.4f')} {_num(row['mape'], '7.2f')} {row['n']:5d}"
                         + (f"  ({row['note']})" if row.get("note") else ""))
    lines.extend(f"note: {n}" for n in out["notes"])
    lines.append(f"R² in sample: mean over targets {out['r2_in_sample_mean_over_targets']:.4f}, "
                 f"pooled {out['r2_in_sample']:.4f}")
    for split, m in out["heldout"].items():
        if "error" in m:
            lines.append(f"held out {split:>6}: not scored: {m['error']}")
            continue
        skipped = (f"  (not scored, too few points left to fit: {', '.join(m['skipped_targets'])})"
                   if m.get("skipped_targets") else "")
        lines.append(f"held out {split:>6}: R² mean over targets {_num(m.get('r2_mean_over_targets'), '.4f')}  "
                     f"pooled {_num(m['r2'], '.4f')}  MAE {m['mae']:.4f}  MAPE {m['mape']:.2f}%  "
                     f"n={m['n']}{skipped}")
    return "\n".join(lines)


def _num(value, fmt: str = "9.4f") -> str:
    """A number for the summary; None/NaN (a split that could not be scored) as '–'."""
    if value is None or not math.isfinite(float(value)):
        width = "".join(ch for ch in fmt.split(".")[0] if ch.isdigit())
        return "–".rjust(int(width)) if width else "–"
    return format(float(value), fmt)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_out_dir(args.out)  # before the (slow) fit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = run(args)
    except (UsageError, data_lib.DataError, engine.FitError, schema.SchemaError, logio.LogFormatError,
            ValueError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(out))
    print(f"wrote {Path(args.out) / 'fit.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
