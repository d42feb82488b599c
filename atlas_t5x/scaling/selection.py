"""Model selection by extrapolation: choose among variants of a law by how well each predicts the
largest model sizes it was not fitted on.

A law is fitted to predict bigger runs than it was fitted on, so in-sample error (which always
favours the most flexible variant) is the wrong yardstick. Variants of the requested law:
tied vs untied exponents (α = β or not) and the Huber vs Gaussian-likelihood objective. Each is
scored by forward-chaining cross-validation over model sizes: fold k fits on every point with
N below the k-th largest size and predicts the points at that size (CV_FOLDS folds, largest
sizes first). The CV error is the mean over folds of the mean absolute relative error of the
raw loss (%), with every target of the points table fitted separately.

The requested variant is kept unless another one's CV error is lower by more than
REQUIRED_GAIN (relative) [our choice: a 2% margin, so noise does not swap equivalent variants];
among the variants that are, those within REQUIRED_GAIN of the best count as equivalent and the
one closest to the request is chosen (same objective before a changed one).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from atlas_t5x.scaling import engine, table_fit

CV_FOLDS = 2
MIN_TRAIN_SIZES = 2
REQUIRED_GAIN = 0.02
OBJECTIVE_VARIANTS = ("huber", "likelihood")


@dataclasses.dataclass
class Selection:
    """The chosen spec, every variant's CV error (%), and why (or why nothing was chosen)."""

    chosen: table_fit.FitSpec
    requested: table_fit.FitSpec
    cv_error: dict[str, float]           # variant label → mean CV error (%), NaN where it failed
    reason: str
    folds: list[float] = dataclasses.field(default_factory=list)  # held-out sizes N, largest first

    @property
    def changed(self) -> bool:
        return variant_label(self.chosen) != variant_label(self.requested)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": variant_label(self.chosen), "requested": variant_label(self.requested),
                "changed": self.changed, "cv_error_percent": dict(self.cv_error),
                "held_out_sizes": list(self.folds), "reason": self.reason,
                "method": f"forward-chaining CV over model sizes ({CV_FOLDS} largest sizes held out in "
                          f"turn; mean absolute relative error of the loss, %); another variant "
                          f"replaces the requested one only when its error is lower by > "
                          f"{100 * REQUIRED_GAIN:.0f}%"}


def variant_label(spec: table_fit.FitSpec) -> str:
    return f"{spec.law} {'tied' if spec.tied else 'untied'} {spec.objective}"


def variants(spec: table_fit.FitSpec) -> list[table_fit.FitSpec]:
    """The requested spec first, then the other tied/untied × Huber/likelihood combinations.

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


def cv_error(spec: table_fit.FitSpec, points: pd.DataFrame, folds: Sequence[float]) -> float:
    """Mean over folds of the mean absolute relative error (%) of predicting size N_k from the
    points with N < N_k. Raises engine.FitError when a fold cannot be fitted."""
    errors = []
    for size in folds:
        train = points[points["N"] < size]
        test = points[points["N"] == size]
        targets = [t for t in test["target"].unique() if (train["target"] == t).any()]
        if not targets:
            continue
        fit = table_fit.fit_points(spec, train, targets)
        test = test[test["target"].isin(targets)]
        pred = fit.predict(test)
        y = test["loss"].to_numpy(float)
        errors.append(float(100.0 * np.mean(np.abs(pred - y) / y)))
    if not errors:
        raise engine.FitError("no fold has a held-out target that also has smaller-size points")
    return float(np.mean(errors))


def select(spec: table_fit.FitSpec, points: pd.DataFrame, folds: int = CV_FOLDS) -> Selection:
    """Chooses among `variants(spec)` by CV error on the largest sizes (module docstring)."""
    if len(variants(spec)) == 1:
        return Selection(spec, spec, {}, "not selected: the requested law has no other variant "
                         "(exponents fixed or bounded, or an objective other than Huber/likelihood)")
    if not [n for n in make_free_names(spec, points)]:
        return Selection(spec, spec, {}, "not selected: every parameter is fixed")
    held = size_folds(points, folds)
    if not held:
        n_sizes = points["N"].nunique()
        return Selection(spec, spec, {}, f"not selected: {n_sizes} model size(s); selection by "
                         f"extrapolation needs ≥ {MIN_TRAIN_SIZES + 1} (fit on {MIN_TRAIN_SIZES}, predict a larger one)")
    errors: dict[str, float] = {}
    notes = []
    for variant in variants(spec):
        label = variant_label(variant)
        try:
            errors[label] = cv_error(variant, points, held)
        except (engine.FitError, ValueError, FloatingPointError) as err:
            errors[label] = math.nan
            notes.append(f"{label}: {err}")
    requested = errors.get(variant_label(spec), math.nan)
    finite = {k: v for k, v in errors.items() if math.isfinite(v)}
    if not finite:
        return Selection(spec, spec, errors, "not selected: no variant could be cross-validated ("
                         + "; ".join(notes) + ")", held)
    best = min(finite.values())
    if math.isfinite(requested) and best >= (1.0 - REQUIRED_GAIN) * requested:
        chosen = spec
    else:
        # among the variants that beat the request and are within REQUIRED_GAIN of the best, the
        # first in `variants` order (closest to the request): noise does not pick the objective
        chosen = next(v for v in variants(spec) if variant_label(v) in finite
                      and finite[variant_label(v)] <= (1.0 + REQUIRED_GAIN) * best
                      and not finite[variant_label(v)] >= (1.0 - REQUIRED_GAIN) * requested)
    reason = (f"{variant_label(chosen)}: CV error {errors[variant_label(chosen)]:.3g}% predicting sizes "
              + ", ".join(f"{n:.3g}" for n in held) + " from the smaller ones"
              + (f" (requested {variant_label(spec)}: {requested:.3g}%)" if chosen is not spec else ""))
    if notes:
        reason += "; failed: " + "; ".join(notes)
    return Selection(chosen, spec, errors, reason, held)
