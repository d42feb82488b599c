"""Model selection by extrapolation: choose among variants of a law by how well each predicts the
largest model sizes it was not fitted on, and switch away from the requested variant only when the
data say so beyond their noise.

A law is fitted to predict bigger runs than it was fitted on, so in-sample error (which always
favours the most flexible variant) is the wrong yardstick. Variants of the requested law:
tied vs untied exponents (α = β or not) and the Huber vs Gaussian-likelihood objective. Each is
scored by forward-chaining cross-validation over model sizes: fold k fits on every point with
N below the k-th largest size and predicts the points at that size (CV_FOLDS folds, largest
sizes first). The CV error is the mean over folds of the mean absolute relative error of the
raw loss (%), with every target of the points table fitted separately.

Noise. Every variant predicts the same held-out points, so two variants' CV errors are compared
pairwise: the held-out points are resampled by unit (whole trunks — a WSD trunk with its cooldown
branches — when every fold holds two or more of them, else whole runs), within each fold, and the
standard error of the difference is the spread of the resampled differences (SE_REPLICATES).

Rule. The requested variant is kept unless another one's CV error is lower by more than
Z_SWITCH standard errors of the difference AND by more than MIN_RELATIVE_GAIN of the requested
error (a floor for differences too small to matter even when measured exactly). Among the variants
that pass, those the same rule cannot separate from the best count as equivalent and the one
closest to the request is chosen (same exponent tying, then same objective).

Tied exponents answer the compute-allocation question by construction: with α = β, N_opt ∝ C^0.5.
So a tied variant replaces an untied request only when the untied fit's bootstrap-by-run 95%
interval of a = β/(α+β) contains 0.5 for every target (the data cannot tell a from 0.5); the
selection says which way this check went.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from atlas_t5x.scaling import bootstrap, engine, table_fit

CV_FOLDS = 2
MIN_TRAIN_SIZES = 2
Z_SWITCH = 2.0               # standard errors a gain must exceed [issue 21: ~2 SE]
MIN_RELATIVE_GAIN = 0.02     # and at least 2% of the requested CV error [our choice]
SE_REPLICATES = 400          # resamples of the held-out units for the standard errors
TIED_CHECK_REPLICATES = 100  # bootstrap replicates of the untied fit for the a = 0.5 check
OBJECTIVE_VARIANTS = ("huber", "likelihood")


@dataclasses.dataclass
class HeldOutErrors:
    """One variant's absolute relative errors (%) on the held-out points, in a fixed point order."""

    errors: np.ndarray          # (n,) |pred − y| / y × 100
    fold: np.ndarray            # (n,) fold index of each point
    point_id: np.ndarray        # (n,) index of the point in the points table

    def cv_error(self, weights: np.ndarray | None = None) -> np.ndarray | float:
        """Mean over folds of the (weighted) mean error in each fold; `weights` (B, n) → (B,)."""
        if weights is None:
            return float(np.mean([self.errors[self.fold == k].mean() for k in np.unique(self.fold)]))
        per_fold = []
        for k in np.unique(self.fold):
            sel = self.fold == k
            w = weights[:, sel]
            per_fold.append((w * self.errors[sel]).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-300))
        return np.mean(per_fold, axis=0)


@dataclasses.dataclass
class Selection:
    """The chosen spec, every variant's CV error (%) with its standard error, and why."""

    chosen: table_fit.FitSpec
    requested: table_fit.FitSpec
    cv_error: dict[str, float]           # variant label → mean CV error (%), NaN where it failed
    reason: str
    folds: list[float] = dataclasses.field(default_factory=list)  # held-out sizes N, largest first
    cv_se: dict[str, float] = dataclasses.field(default_factory=dict)    # SE of each CV error (%)
    diff_se: dict[str, float] = dataclasses.field(default_factory=dict)  # SE of (requested − variant)
    unit: str = ""                       # what the standard errors resample: "trunk" or "run"
    tied_check: dict[str, Any] | None = None   # the a = 0.5 check when a tied variant was a candidate

    @property
    def changed(self) -> bool:
        return variant_label(self.chosen) != variant_label(self.requested)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": variant_label(self.chosen), "requested": variant_label(self.requested),
                "changed": self.changed, "cv_error_percent": dict(self.cv_error),
                "cv_error_se_percent": dict(self.cv_se), "gain_se_percent": dict(self.diff_se),
                "se_unit": self.unit, "held_out_sizes": list(self.folds), "reason": self.reason,
                "tied_check": self.tied_check,
                "method": f"forward-chaining CV over model sizes ({CV_FOLDS} largest sizes held out in "
                          f"turn; mean absolute relative error of the loss, %); another variant "
                          f"replaces the requested one only when its error is lower by > {Z_SWITCH:g} "
                          f"standard errors of the paired difference (held-out {self.unit or 'unit'}s "
                          f"resampled) and by > {100 * MIN_RELATIVE_GAIN:.0f}%; a tied variant only "
                          f"when the untied fit's 95% interval of a = β/(α+β) contains 0.5"}


def variant_label(spec: table_fit.FitSpec) -> str:
    return f"{spec.law} {'tied' if spec.tied else 'untied'} {spec.objective}"


def variants(spec: table_fit.FitSpec) -> list[table_fit.FitSpec]:
    """The requested spec first, then the other tied/untied × Huber/likelihood combinations
    (same tying before changed tying, same objective before a changed one).

    Tying is offered only when neither exponent is fixed or bounded by the user (a fixed β has no
    tied counterpart); objectives other than Huber/likelihood (lsq) stay as asked.
    """
    user_named = {n for n, _ in spec.fixed} | {b[0] for b in spec.bounds}
    ties = [spec.tied] if {"alpha", "beta"} & user_named else [spec.tied, not spec.tied]
    objectives = ([spec.objective] + [o for o in OBJECTIVE_VARIANTS if o != spec.objective]
                  if spec.objective in OBJECTIVE_VARIANTS else [spec.objective])
    out = []
    for tied in ties:
        for objective in objectives:
            out.append(dataclasses.replace(spec, tied=tied, objective=objective))
    return out


def make_free_names(spec: table_fit.FitSpec, points: pd.DataFrame) -> list[str]:
    """The free parameters of the requested law on the first target."""
    law, _ = table_fit.build_law(spec, points, str(points["target"].iloc[0]))
    return [n for n in law.param_names if n not in dict(spec.fixed)]


def size_folds(points: pd.DataFrame, folds: int = CV_FOLDS) -> list[float]:
    """The held-out sizes of the CV folds: the `folds` largest N that leave ≥ MIN_TRAIN_SIZES
    smaller sizes to fit on."""
    sizes = np.unique(points["N"].to_numpy(float))
    usable = sizes[MIN_TRAIN_SIZES:]
    return [float(n) for n in usable[::-1][:folds]]


def heldout_errors(spec: table_fit.FitSpec, points: pd.DataFrame, folds: Sequence[float]) -> HeldOutErrors:
    """The absolute relative errors (%) of predicting each size N_k from the points with N < N_k.
    Raises engine.FitError when no fold can be fitted."""
    errors, fold_ids, ids = [], [], []
    n_values = points["N"].to_numpy(float)
    for k, size in enumerate(folds):
        train = points[n_values < size]
        test = points[n_values == size]
        targets = [t for t in test["target"].unique() if (train["target"] == t).any()]
        if not targets:
            continue
        fit = table_fit.fit_points(spec, train, targets)
        test = test[test["target"].isin(targets)]
        pred = fit.predict(test)
        y = test["loss"].to_numpy(float)
        errors.append(100.0 * np.abs(pred - y) / y)
        fold_ids.append(np.full(len(test), k))
        ids.append(test.index.to_numpy())
    if not errors:
        raise engine.FitError("no fold has a held-out target that also has smaller-size points")
    return HeldOutErrors(np.concatenate(errors), np.concatenate(fold_ids), np.concatenate(ids))


def resampling_unit(points: pd.DataFrame, held: HeldOutErrors) -> tuple[str, np.ndarray]:
    """("trunk" | "run", the unit of each held-out point): trunks (a run and its cooldown
    branches, the `group` column) when every fold holds ≥ 2 of them, else runs."""
    rows = points.loc[held.point_id]
    for name, column in (("trunk", "group"), ("run", "run")):
        if column not in rows:
            continue
        units = rows[column].astype(str).to_numpy()
        if all(len(set(units[held.fold == k])) >= 2 for k in np.unique(held.fold)):
            return name, units
    return "point", np.asarray([f"p{i}" for i in held.point_id])


def untied_exponent_check(spec: table_fit.FitSpec, points: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """Whether the data can tell a = β/(α+β) from 0.5: the untied (Huber) fit per target with a
    bootstrap-by-run 95% interval of a. Returns {"contains_half": bool, "targets": {t: {a, lo, hi}}}
    (contains_half is True only when every target's interval contains 0.5)."""
    from atlas_t5x.scaling import points as points_lib

    untied = dataclasses.replace(spec, tied=False, objective="huber")
    fit = table_fit.fit_points(untied, points)
    out: dict[str, Any] = {"targets": {}, "contains_half": True}
    for target, res in sorted(fit.fits.items()):
        if not {"alpha", "beta"} <= set(res.free_names):
            continue
        sub = points[points["target"] == target]
        groups, strata = bootstrap.resampling_units(sub)
        boot = bootstrap.bootstrap(res, points_lib.law_inputs(res.law, sub), sub["loss"].to_numpy(float),
                                   groups, n_boot=TIED_CHECK_REPLICATES, seed=seed, strata=strata)
        ci = boot.intervals().get("N_opt_exponent")
        a = res.params["beta"] / (res.params["alpha"] + res.params["beta"])
        if ci is None:   # no converged replicate: the data cannot be said to tell a from 0.5
            entry = {"a": float(a), "lo": None, "hi": None}
        else:
            entry = {"a": float(a), "lo": ci["lo"], "hi": ci["hi"]}
            if not ci["lo"] <= 0.5 <= ci["hi"]:
                out["contains_half"] = False
        out["targets"][target] = entry
    return out


def _closest(candidates: Sequence[table_fit.FitSpec], spec: table_fit.FitSpec) -> table_fit.FitSpec:
    order = [variant_label(v) for v in variants(spec)]
    return min(candidates, key=lambda v: order.index(variant_label(v)))


def select(spec: table_fit.FitSpec, points: pd.DataFrame, folds: int = CV_FOLDS, seed: int = 0) -> Selection:
    """Chooses among `variants(spec)` by CV error on the largest sizes (module docstring)."""
    if len(variants(spec)) == 1:
        return Selection(spec, spec, {}, "not selected: the requested law has no other variant "
                         "(exponents fixed or bounded, or an objective other than Huber/likelihood)")
    if not make_free_names(spec, points):
        return Selection(spec, spec, {}, "not selected: every parameter is fixed")
    points = points.reset_index(drop=True)
    held_sizes = size_folds(points, folds)
    if not held_sizes:
        n_sizes = points["N"].nunique()
        return Selection(spec, spec, {}, f"not selected: {n_sizes} model size(s); selection by "
                         f"extrapolation needs ≥ {MIN_TRAIN_SIZES + 1} (fit on {MIN_TRAIN_SIZES}, predict a larger one)")
    scores: dict[str, HeldOutErrors] = {}
    errors: dict[str, float] = {}
    notes = []
    for variant in variants(spec):
        label = variant_label(variant)
        try:
            scores[label] = heldout_errors(variant, points, held_sizes)
        except (engine.FitError, ValueError, FloatingPointError) as err:
            errors[label] = math.nan
            notes.append(f"{label}: {err}")
    if not scores:
        return Selection(spec, spec, errors, "not selected: no variant could be cross-validated ("
                         + "; ".join(notes) + ")", held_sizes)
    # every variant predicts the same held-out points (the same folds and targets) unless one
    # failed on a target: compare only on the points all scored variants share
    common = set.intersection(*(set(s.point_id.tolist()) for s in scores.values()))
    for label, s in scores.items():
        keep = np.isin(s.point_id, sorted(common))
        order = np.argsort(s.point_id[keep], kind="stable")
        scores[label] = HeldOutErrors(s.errors[keep][order], s.fold[keep][order], s.point_id[keep][order])
        errors[label] = float(scores[label].cv_error())
    ref = next(iter(scores.values()))
    unit, units = resampling_unit(points, ref)
    weights = bootstrap.run_weights(units, SE_REPLICATES, seed=seed, strata=ref.fold)
    boot = {label: s.cv_error(weights) for label, s in scores.items()}
    cv_se = {label: float(np.std(v)) for label, v in boot.items()}

    requested_label = variant_label(spec)
    by_label = {variant_label(v): v for v in variants(spec)}
    if requested_label in boot:
        requested = errors[requested_label]
        diff_se = {label: float(np.std(boot[requested_label] - v)) for label, v in boot.items()
                   if label != requested_label}
        winners = [by_label[label] for label in boot if label != requested_label
                   and requested - errors[label] > max(Z_SWITCH * diff_se[label], MIN_RELATIVE_GAIN * requested)]
    else:   # the request itself failed: any scored variant will do
        requested = math.nan
        diff_se = {}
        winners = [by_label[label] for label in boot]

    tied_check = None
    if winners and not spec.tied and any(v.tied for v in winners):
        try:
            tied_check = untied_exponent_check(spec, points, seed)
        except (engine.FitError, ValueError, FloatingPointError) as err:
            tied_check = {"contains_half": False, "targets": {}, "error": str(err)}
        if not tied_check["contains_half"]:
            winners = [v for v in winners if not v.tied]

    if not winners:
        chosen = spec
    else:
        best = min(winners, key=lambda v: errors[variant_label(v)])
        best_label = variant_label(best)
        equivalent = [v for v in winners if errors[variant_label(v)] - errors[best_label]
                      <= max(Z_SWITCH * float(np.std(boot[variant_label(v)] - boot[best_label])),
                             MIN_RELATIVE_GAIN * errors[best_label])]
        chosen = _closest(equivalent, spec)

    label = variant_label(chosen)
    reason = (f"{label}: CV error {errors[label]:.3g}% ± {cv_se.get(label, math.nan):.3f} (SE, {unit}s "
              f"resampled) predicting sizes " + ", ".join(f"{n:.3g}" for n in held_sizes) + " from the smaller ones")
    if label != requested_label:
        reason += (f"; requested {requested_label}: {requested:.3g}%, gain {requested - errors[label]:.3g} "
                   f"points > {Z_SWITCH:g} × SE {diff_se.get(label, math.nan):.3f}")
    elif math.isfinite(requested) and len(boot) > 1:
        reason += f"; no other variant beats it by > {Z_SWITCH:g} SE and > {100 * MIN_RELATIVE_GAIN:.0f}%"
    if tied_check is not None:
        spans = ", ".join(f"{t} a = {v['a']:.3f} " + (f"[{v['lo']:.3f}, {v['hi']:.3f}]" if v["lo"] is not None
                                                      else "(no interval)")
                          for t, v in tied_check["targets"].items())
        if tied_check["contains_half"]:
            reason += (f"; tied exponents allowed: the untied fit's 95% interval of a = β/(α+β) contains "
                       f"0.5 ({spans}), so the data cannot tell a from 0.5")
        else:
            reason += ("; tied exponents NOT allowed (they would impose a = 0.5): the untied fit's 95% "
                       f"interval of a excludes 0.5 ({spans or tied_check.get('error', '')})")
    if notes:
        reason += "; failed: " + "; ".join(notes)
    return Selection(chosen, spec, errors, reason, held_sizes, cv_se, diff_se, unit, tied_check)
