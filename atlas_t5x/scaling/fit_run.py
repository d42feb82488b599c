"""One fit, end to end: what `atlas-fit` does, and the fit.json it writes (writer and reader).

`run_fit(FitOptions(...))` loads points (eval logs, an exported table, or a plain table with a
column map), fits one law per target language (`table_fit.fit_points`) after model selection
(`selection`: tied/untied exponents, Huber/likelihood; off with `no_select`), scores held-out
splits (`heldout`), optionally compares laws on the same splits, bootstraps by run, profiles the
objective, writes OUT/fit.json (`write_fit_json`) and the plots (`plots`).

fit.json (read back by `read_fit_json`; `planner.load_fitted_laws` builds `FittedLaw`s from it):
  {"law", "objective_name", "targets", "params" (one target: its parameters; several: target →
  parameters), "objective", "converged", "n_points", "r2_in_sample",
  "r2_in_sample_mean_over_targets", "heldout": {split: {"r2", "r2_mean_over_targets", "mae",
  "mape", "n"} or {"error"}}, "heldout_headline", "convergence_criteria", "selection", "points",
  "runner_ups", "comparison", "notes", "options", "fit_seconds", "plots",
  "per_target": {target: {"law", "params", "tied", "objective", "converged", "convergence_message",
  "r2_in_sample", "fit_range": {"N": [lo, hi] (parameters), "D": [lo, hi] (target tokens D_t),
  "epochs": [lo, hi] (D_t / U_t)}, "flags", "at_bounds", "runner_ups", "bootstrap" (with
  "samples": converged parameter sets), "profiles", "compute_optimal"}},
  "compute_optimal" (one target: its dict; several: target → dict): {approach: {"a", "a_ci",
  "b", "b_ci", "n_budgets", "notes", ...} or {"error"}, "disagreements": [...] (several
  approaches)}, N* ∝ C^a, D* ∝ C^b (`atlas_t5x.scaling.compute_optimal`)}
Non-finite numbers are written as null. The file is written atomically.

Nothing here imports the trainer, Flax, TensorFlow, seqio or gin.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from atlas_t5x import logio, logs
from atlas_t5x.scaling import compute_optimal, engine, heldout, table_fit
from atlas_t5x.scaling import points as points_lib
from atlas_t5x.scaling.laws import LAW_NAMES
from atlas_t5x.scaling.objectives import OBJECTIVES

FIT_JSON_NAME = "fit.json"
# [our choice] bootstrap replicates for the law's exponent interval under --approach all without --bootstrap
PARAMETRIC_BOOT = 200


class FitOptionError(ValueError):
    """Options that cannot make a fit (names the option and value); the CLI exits with code 2."""


@dataclasses.dataclass
class FitOptions:
    """What to fit and how (the `atlas-fit` flags; see `atlas-fit --help`).

    Exactly one of `logs` (eval.jsonl file, run/study folder, glob, or exported CSV/Parquet) and
    `table` (a CSV/Parquet table with `map`, or an exported table) names the input.
    """

    out: str
    logs: str | None = None
    table: str | None = None
    map: str | None = None
    law: str = "atlas"
    target: list[str] | None = None
    objective: str = "huber"
    fix: list[str] = dataclasses.field(default_factory=list)
    tied: bool = False
    bound: list[str] = dataclasses.field(default_factory=list)
    holdout: list[str] = dataclasses.field(default_factory=list)
    bootstrap: int = 0
    profile: bool = False
    compare: str | None = None
    loss_field: str = "loss"
    drop_highest: int = 0
    final_only: bool = False
    points: str = "default"
    no_select: bool = False
    include_finetunes: bool = False
    dcsl_stage: str = "one"
    n_transfer: int = 3
    transfer_rule: str = "cosampling"
    transfer_matrix: str | None = None
    allow_negative_tau: bool = False
    seed: int = 0
    no_plots: bool = False
    approach: str = "parametric"

    def __post_init__(self):
        if (self.logs is None) == (self.table is None):
            raise FitOptionError("give exactly one of --logs and --table")


# Magnitudes no real run produces [our choice]: flagged (with counts), not fitted silently.
PLAUSIBLE_LOSS = 100.0  # |loss| in nats/token (the unigram-normalised loss may be negative)
PLAUSIBLE_MAX_COUNT = 1e18  # parameters N or tokens D, U


def check_out_dir(path: str | os.PathLike) -> None:
    """FitOptionError before any fitting when --out cannot become the output folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FitOptionError(f"--out {path}: exists and is not a folder")
    existing = next(p for p in [out, *out.parents] if p.exists())
    if not existing.is_dir():
        raise FitOptionError(f"--out {path}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FitOptionError(f"--out {path}: {existing} is not writable")


def input_warnings(points) -> list[str]:
    """Counts of duplicate points and implausible magnitudes (each also printed as a warning)."""
    found = []
    # Same target, size, tokens and loss: one measurement entered twice (run names may differ).
    key = [c for c in ("target", "N", "D", "U", "loss") if c in points]
    repeated = points[key].astype(str).duplicated(keep=False).to_numpy()
    duplicates = int(points[key].astype(str).duplicated().sum())
    if duplicates:
        names = ""
        if "run" in points:   # which runs: logs of a copied run folder without run ids, or a table's rows
            groups = points[repeated].astype({c: str for c in key}).groupby(key, sort=False)["run"]
            pairs = list(dict.fromkeys(" and ".join(repr(str(r)) for r in dict.fromkeys(g)) for _, g in groups))
            names = f"; runs {'; '.join(pairs[:3])}" + (" ..." if len(pairs) > 3 else "")
        found.append(f"{duplicates} duplicate point(s) (same {', '.join(key)}) in the input: each counts twice "
                     f"in the fit{names}")
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


def parse_fixed(items) -> dict[str, float]:
    """`--fix NAME=VALUE` items → {name: value}; FitOptionError naming a malformed or non-finite one."""
    fixed = {}
    for item in items:
        if "=" not in item:
            raise FitOptionError(f"--fix {item!r} is not NAME=VALUE")
        name, value = (s.strip() for s in item.split("=", 1))
        try:
            v = float(value)
        except ValueError:
            raise FitOptionError(f"--fix {name}: value {value!r} is not a number") from None
        if not math.isfinite(v):
            raise FitOptionError(f"--fix {name}: value {value!r} is not finite")
        fixed[name] = v
    return fixed


def parse_bounds(items) -> tuple[tuple[str, float, float], ...]:
    """`--bound NAME=LO:HI` items → ((name, low, high), ...) in natural units; FitOptionError when LO ≥ HI."""
    bounds = []
    for item in items:
        name, sep, rng = item.partition("=")
        lo, sep2, hi = rng.partition(":")
        if not (sep and sep2 and name.strip()):
            raise FitOptionError(f"--bound {item!r} is not NAME=LO:HI")
        try:
            lo_v, hi_v = float(lo), float(hi)
        except ValueError:
            raise FitOptionError(f"--bound {item!r}: LO and HI must be numbers") from None
        if math.isnan(lo_v) or math.isnan(hi_v) or not lo_v < hi_v:
            raise FitOptionError(f"--bound {name.strip()}: LO {lo!r} must be below HI {hi!r}")
        bounds.append((name.strip(), lo_v, hi_v))
    return tuple(bounds)


def is_exported_table(path: str | os.PathLike) -> bool:
    """True when a table has the exported-log columns (run, step, target, params, schema_version)."""
    path = Path(path)
    if not path.is_file():
        raise points_lib.DataError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            columns = set(pq.read_schema(path).names)
        else:
            import pandas as pd

            columns = set(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError) as err:
        raise points_lib.DataError(f"{path}: cannot read table: {err}") from err
    return {"run", "step", "target", "params", "schema_version"} <= columns


def load_points(opts: FitOptions):
    """The points table `opts` names (see FitOptions)."""
    kwargs = dict(loss_field=opts.loss_field, final_only=opts.final_only,
                  include_finetunes=opts.include_finetunes, points=opts.points)
    source = str(opts.logs or opts.table)
    try:
        if opts.logs:
            return points_lib.load_points(opts.logs, **kwargs)
        if opts.map:
            return points_lib.load_table(opts.table, points_lib.parse_map(opts.map), opts.drop_highest)
        if is_exported_table(opts.table):
            return points_lib.rows_to_points(logs.read_table(opts.table), **kwargs)
    except points_lib.DataError as err:   # "no usable points" and the like: say which input
        if source in str(err):
            raise
        raise points_lib.DataError(f"{source}: {err}") from None
    raise FitOptionError(f"{opts.table}: not an exported-log table; give --map N=col,D=col,U=col,loss=col")


def run_fit(opts: FitOptions, status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Loads the points, fits (with model selection, held-out splits, bootstrap and profiles as
    `opts` asks), writes OUT/fit.json (`write_fit_json`) and the plots; returns the fit.json dict.

    `status` receives a line before each slow phase (the CLI prints them on stderr).
    Raises FitOptionError (bad options), points.DataError / logs.LogError / SchemaError (bad
    input) or engine.FitError before anything is written.
    """
    say = status or (lambda message: None)
    if opts.law not in LAW_NAMES:
        raise FitOptionError(f"unknown law {opts.law!r}; known laws: {', '.join(LAW_NAMES)}")
    if opts.objective not in OBJECTIVES:
        raise FitOptionError(f"unknown objective {opts.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    for split in opts.holdout:
        if split not in heldout.SPLITS:
            raise FitOptionError(f"unknown held-out split {split!r}; choose from {', '.join(heldout.SPLITS)}")
    if opts.bootstrap < 0:
        raise FitOptionError("--bootstrap must be ≥ 0")
    if opts.approach not in compute_optimal.APPROACH_CHOICES:
        raise FitOptionError(f"--approach {opts.approach!r} unknown; choose one of "
                             f"{', '.join(compute_optimal.APPROACH_CHOICES)}")
    if opts.n_transfer < 0:
        raise FitOptionError("--n_transfer must be ≥ 0")
    if opts.drop_highest < 0:
        raise FitOptionError("--drop_highest must be ≥ 0")
    compare = [c.strip() for c in (opts.compare or "").split(",") if c.strip()]
    for name in compare:
        if name not in LAW_NAMES:
            raise FitOptionError(f"--compare: unknown law {name!r}; known laws: {', '.join(LAW_NAMES)}")
    fixed = parse_fixed(opts.fix)
    bounds = parse_bounds(opts.bound)
    if opts.transfer_matrix:
        points_lib.load_transfer_matrix(opts.transfer_matrix)   # fails early, naming the file
    if opts.table and opts.map:
        mapped = points_lib.parse_map(opts.map)
        for law, key, meaning in (("msl", "p", "the target's sampling ratio"),
                                  ("curse", "K", "the number of languages in the mixture")):
            if law in [opts.law] + compare and key not in mapped:
                raise FitOptionError(f"law {law!r} reads {key} ({meaning}): give --map {key}=column")
    say(f"reading points from {opts.logs or opts.table}")
    points = load_points(opts)
    targets = [t.strip() for item in (opts.target or []) for t in item.split(",") if t.strip()] or None
    if targets:
        present = sorted(points["target"].unique())
        missing = [t for t in targets if t not in present]
        if missing:
            raise FitOptionError(f"--target {missing} not in the data; targets present: {present}")
        points = points[points["target"].isin(targets)].reset_index(drop=True)
    notes = input_warnings(points)
    own_data_laws = [law for law in [opts.law] + compare if law != "atlas"]
    if own_data_laws:
        # Only ATLAS explains a target the run never trained on (through transfer terms); compared
        # laws must see the same points, so those points go for every law here.
        points, n_dropped = points_lib.drop_untrained_targets(points)
        if n_dropped:
            notes.append(f"dropped {n_dropped} point(s) whose target had no training tokens "
                         f"(law {own_data_laws[0]} reads the target's own tokens D_t)")
            if points.empty:
                raise FitOptionError("no points left: no target was trained on in these runs")
    spec = table_fit.FitSpec(
        law=opts.law, objective=opts.objective, tied=opts.tied, fixed=tuple(sorted(fixed.items())),
        n_transfer=opts.n_transfer, transfer_rule=opts.transfer_rule, transfer_matrix=opts.transfer_matrix,
        allow_negative_tau=opts.allow_negative_tau, dcsl_stage=opts.dcsl_stage, bounds=bounds)

    # the allocation question from the data alone (isoflop, envelope), before the slow law fit:
    # alone they must succeed (exit 2 otherwise); with `all`, what cannot be computed is recorded
    frontiers = {}
    data_approaches = [a for a in compute_optimal.approaches_for(opts.approach) if a != "parametric"]
    for target in sorted(points["target"].unique()) if data_approaches else ():
        say(f"[{target}] compute-optimal frontier: {', '.join(data_approaches)}")
        frontiers[target] = compute_optimal.compute_optimal(
            points[points["target"] == target], data_approaches, seed=opts.seed, strict=opts.approach != "all")
        frontiers[target].pop("disagreements", None)

    selected = None
    if not opts.no_select:
        from atlas_t5x.scaling import selection

        say(f"model selection for {spec.law}: fitting its variants on {len(points)} points")
        selected = selection.select(spec, points)
        spec = selected.chosen
    if "stable_offset" in points.attrs:
        notes.append("stable points lowered by the fitted offset for the missing cooldown: "
                     + ", ".join(f"{t} {v:.4f}" for t, v in points.attrs["stable_offset"].items()) + " nats/token")

    say(f"fitting {spec.law} ({spec.objective}) per target on {len(points)} points")
    t0 = time.perf_counter()
    fitted = table_fit.fit_points(spec, points)
    fit_seconds = time.perf_counter() - t0
    pred = fitted.predict(points)
    y = points["loss"].to_numpy(float)

    held = {}
    splits = {}
    for split in opts.holdout:
        say(f"held-out split {split}")
        try:
            res = heldout.evaluate_split(spec, points, split, opts.seed)
        except heldout.SplitError as err:
            held[split] = {"error": str(err)}
            continue
        held[split] = res.to_dict()
        splits[split] = res

    comparison = []
    if compare:
        # every compared law with its default options (no --fix / --bound, which name one law's parameters)
        specs = {name: dataclasses.replace(spec, law=name, fixed=(), bounds=()) for name in compare}
        say(f"comparing laws {', '.join(compare)} on the same splits")
        table = heldout.compare_laws(specs, points, splits=opts.holdout, seed=opts.seed)
        comparison = table.to_dict(orient="records")

    per_target = {}
    for target, res in fitted.fits.items():
        sub = points[points["target"] == target]
        X = points_lib.law_inputs(res.law, sub)
        entry = res.to_dict()
        entry["params"] = {k: float(v) for k, v in res.law.full_params(res.params).items()}   # tied: beta = alpha
        entry["tied"] = bool(res.law.tied)
        entry["r2_in_sample"] = engine.r2_score(sub["loss"], res.predict(X))
        # the fitted range (atlas-plan warns when a plan leaves it): N, D = D_t, epochs = D_t/U_t
        epochs = (sub["D"] / sub["U"]).to_numpy(float)
        entry["fit_range"] = {"N": [float(sub["N"].min()), float(sub["N"].max())],
                              "D": [float(sub["D"].min()), float(sub["D"].max())],
                              "epochs": [float(epochs.min()), float(epochs.max())]}
        entry["flags"] = {k: [f"at or next to its {side} bound"] for k, side in res.at_bounds.items()}
        if opts.bootstrap and res.free_names:
            from atlas_t5x.scaling import bootstrap

            groups, strata = bootstrap.resampling_units(sub)
            say(f"[{target}] bootstrap: {opts.bootstrap} replicates by run"
                + (" within each model size" if strata is not None else ""))
            boot = bootstrap.bootstrap(res, X, sub["loss"].to_numpy(float), groups,
                                       n_boot=opts.bootstrap, seed=opts.seed, strata=strata)
            entry["bootstrap"] = boot.to_dict()
            entry["bootstrap"]["stratified_by_size"] = strata is not None
            # converged parameter samples: atlas-plan compute turns them into a bootstrap band
            # (every law parameter: fixed ones, which get no interval, at their fixed value)
            # (a tied law's samples carry beta = alpha, like its params)
            entry["bootstrap"]["samples"] = [
                {k: float(v) for k, v in res.law.full_params(
                    {k: float(boot.samples[k][i]) if k in boot.samples else float(res.params[k])
                     for k in res.law.param_names}).items()}
                for i in np.flatnonzero(boot.converged)]
        if opts.profile and res.free_names:
            from atlas_t5x.scaling import profiles

            say(f"[{target}] profiles of {len(res.free_names)} parameter(s)")
            prof = profiles.profile(res, X, sub["loss"].to_numpy(float))
            entry["profiles"] = {k: v.to_dict() for k, v in prof.items()}
            for k, v in prof.items():
                if v.weakly_identified:
                    entry["flags"].setdefault(k, []).append(
                        f"flat profile (objective rises < {100 * profiles.FLAT_TOLERANCE:g}% over the profile range)")
        # the allocation question N*(C), D*(C): the requested approaches (isoflop/envelope alone
        # must succeed, exit 2 otherwise; the default and `all` record what cannot be computed)
        approaches = compute_optimal.approaches_for(opts.approach)
        samples = entry.get("bootstrap", {}).get("samples", ())
        quick = opts.approach == "all" and not samples and res.free_names
        if quick:
            # side by side needs the law's interval too: a short bootstrap by run when none was asked
            from atlas_t5x.scaling import bootstrap

            groups, strata = bootstrap.resampling_units(sub)
            say(f"[{target}] bootstrap for the law's exponent interval: {PARAMETRIC_BOOT} replicates by run")
            boot = bootstrap.bootstrap(res, X, sub["loss"].to_numpy(float), groups, n_boot=PARAMETRIC_BOOT,
                                       seed=opts.seed, strata=strata)
            samples = [res.law.full_params({k: float(boot.samples[k][i]) if k in boot.samples else float(res.params[k])
                                            for k in res.law.param_names}) for i in np.flatnonzero(boot.converged)]
        entry["compute_optimal"] = {
            **(compute_optimal.compute_optimal(
                sub, ["parametric"], params=entry["params"], samples=samples,
                tied=entry["tied"], strict=False) if "parametric" in approaches else {}),
            **frontiers.get(target, {})}
        if quick and "parametric" in entry["compute_optimal"]:
            entry["compute_optimal"]["parametric"].setdefault("notes", []).append(
                f"interval from {PARAMETRIC_BOOT} bootstrap replicates by run (--bootstrap K for more)")
        if len(approaches) > 1:
            entry["compute_optimal"]["disagreements"] = compute_optimal.disagreements(entry["compute_optimal"])
        per_target[target] = entry

    single = len(per_target) == 1
    only = next(iter(per_target.values()))
    out = {
        "law": opts.law,
        "objective_name": spec.objective,
        "targets": sorted(per_target),
        "params": only["params"] if single else {t: e["params"] for t, e in per_target.items()},
        "objective": fitted.objective,
        "converged": fitted.converged,
        "n_points": int(len(points)),
        "r2_in_sample": engine.r2_score(y, pred),
        "r2_in_sample_mean_over_targets": float(np.mean([e["r2_in_sample"] for e in per_target.values()])),
        "heldout": held,
        "heldout_headline": heldout.HEADLINE,
        "convergence_criteria": engine.CONVERGENCE_CRITERIA,
        "selection": selected.to_dict() if selected else {"chosen": None, "reason": "--no_select"},
        "points": opts.points if (opts.logs or not opts.map) else "table",
        "runner_ups": only["runner_ups"] if single else {t: e["runner_ups"] for t, e in per_target.items()},
        "per_target": per_target,
        "fit_seconds": fit_seconds,
        "notes": notes,
        "comparison": comparison,
        "options": {"tied": spec.tied, "objective": spec.objective, "requested_tied": opts.tied, "fixed": fixed, "dcsl_stage": opts.dcsl_stage,
                    "n_transfer": opts.n_transfer, "transfer_rule": opts.transfer_rule,
                    "bounds": {name: [lo, hi] for name, lo, hi in bounds},
                    "loss_field": opts.loss_field if (opts.logs or not opts.map) else "table",
                    "source": opts.logs or opts.table},
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
    out["compute_optimal"] = (only["compute_optimal"] if single
                              else {t: e["compute_optimal"] for t, e in per_target.items()})
    out["options"]["approach"] = opts.approach
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not opts.no_plots:
        from atlas_t5x.scaling import plots

        marked = next((splits[s] for s in opts.holdout if s in splits and s != "lolo"), None)
        out["plots"] = plots.write_plots(
            points, pred, out_dir, marked.held_out if marked else None, opts.law,
            [marked.split] if marked else (), _curve_fn(fitted, points),
            heldout_pred=marked.predictions if marked else None)
    write_fit_json(out_dir, out)
    return out


def _curve_fn(fitted, points):
    """Law curves over (N, D) for one-point-per-run tables whose law needs only N, D (and U = D)."""
    laws = [r.law for r in fitted.fits.values()]
    if not all(set(l.inputs) <= {"N", "D", "U"} for l in laws):
        return None
    if not np.allclose(points["U"], points["D"]):
        return None

    def fn(target, N, D):
        return fitted.fits[target].predict({"N": N, "D": D, "U": D})

    return fn


def write_fit_json(out_dir: str | os.PathLike, fit: Mapping[str, Any]) -> Path:
    """Writes OUT/fit.json atomically (non-finite numbers as null); returns its path."""
    path = Path(out_dir) / FIT_JSON_NAME
    logio.write_json(path, fit)
    return path


def read_fit_json(path: str | os.PathLike) -> dict[str, Any]:
    """A fit.json (or a folder holding one) as a dict; ValueError naming the file when it is
    missing, not JSON or not a JSON object."""
    path = Path(path)
    if path.is_dir():
        path = path / FIT_JSON_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read fitted laws: {err}") from err
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object of fitted laws, got {type(doc).__name__}")
    return doc


def summary(out: Mapping[str, Any]) -> str:
    """The fit as readable lines (what `atlas-fit` prints)."""
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
        if e.get("compute_optimal"):
            lines.extend(compute_optimal.summary_lines(target, e["compute_optimal"]))
        if e.get("flags"):
            lines.append(f"  [{target}] FLAGGED: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in e["flags"].items()))
    sel = out.get("selection") or {}
    if sel.get("cv_error_percent"):
        lines.append("model selection (" + sel["method"] + "):")
        for label, err in sel["cv_error_percent"].items():
            mark = "  <- chosen" if label == sel["chosen"] else ""
            se = (sel.get("cv_error_se_percent") or {}).get(label)
            spread = f" ± {_num(se, '.2g')} SE" if se is not None else ""
            lines.append(f"  {label:<28} CV error {_num(err, '.4g')}%{spread}{mark}")
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
