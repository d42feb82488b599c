"""Held-out evaluation (spec §5): split, refit on the rest, score on raw loss.

Splits (each returns a boolean "held out" mask over the points table):
  random  a random 20% of the runs (seeded), every point of a held-out run held out: points of one
          run (a trunk and its cooldown branches) share a trajectory, so a point-level split would
          score points whose neighbours were fitted [grouped by the points' `group`, else `run`]
  N       the largest model sizes: distinct sizes from the top until ≥ 10% of points [our choice]
  D       per target, the top 20% of that target's points by its training tokens D_t
  C       per target, the top 20% of that target's points by compute C = 6·N·D_total
  M       unseen mixtures: every mixture other than monolingual, bilingual and Unimax
  lolo    leave-one-language-out: for each target, one pooled law (shared parameters, no K_t
          transfer terms) fitted on the other targets predicts it [our choice]

Metrics on raw loss: R² (may be negative), MAE (nats/token), MAPE (%). The headline is R² per
target averaged over targets (`r2_mean_over_targets`, the paper's convention, spec §1.4); the
pooled R² over all held-out points (`r2`) comes second. A split that holds out nothing or
everything, or leaves a target too few points, raises `SplitError` explaining why (callers record
the explanation instead of a score).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from atlas_t5x.scaling import points as data_lib
from atlas_t5x.scaling import engine, table_fit

SPLITS = ("random", "N", "D", "C", "M", "lolo")
HEADLINE = "r2_mean_over_targets"


class SplitError(engine.FitError):
    """A held-out split cannot be made or scored on these points (the message says why)."""
HOLDOUT_FRACTION = 0.2
MIN_N_FRACTION = 0.1


def metrics(y, pred) -> dict[str, float]:
    """R², MAE (nats/token) and MAPE (%) of predictions on raw loss."""
    y = np.asarray(y, float)
    pred = np.asarray(pred, float)
    return {
        "r2": engine.r2_score(y, pred),
        "mae": float(np.mean(np.abs(pred - y))),
        "mape": float(100.0 * np.mean(np.abs(pred - y) / np.abs(y))),
        "n": int(y.size),
    }


def mixture_kind(name: str, weights: Mapping[str, float]) -> str:
    """monolingual / bilingual / unimax / other, by the number of languages with positive weight,
    or by name (mono*, bi*, *unimax*) when the composition is unknown (plain tables)."""
    k = sum(1 for w in weights.values() if w > 0)
    lower = str(name).lower()
    if k == 0:
        if lower.startswith("mono"):
            return "monolingual"
        if lower.startswith("bi"):
            return "bilingual"
        return "unimax" if "unimax" in lower else "other"
    if k == 1:
        return "monolingual"
    if k == 2:
        return "bilingual"
    if "unimax" in lower:
        return "unimax"
    return "other"


def _top_fraction(values: np.ndarray, fraction: float) -> np.ndarray:
    threshold = np.quantile(values, 1.0 - fraction, method="higher")
    return values >= threshold


def _per_target_top(points: pd.DataFrame, column: str, fraction: float) -> np.ndarray:
    """The top `fraction` of each target's points by `column` (chosen separately per target)."""
    mask = np.zeros(len(points), bool)
    values = points[column].to_numpy(float)
    for t in points["target"].unique():
        sel = (points["target"] == t).to_numpy()
        mask[sel] = _top_fraction(values[sel], fraction)
    return mask


def groups_of(points: pd.DataFrame) -> np.ndarray:
    """The run group of every point: `group` (trunk of a cooldown branch) when present, else `run`."""
    column = "group" if "group" in points.columns else "run"
    return points[column].astype(str).to_numpy()


def holdout_mask(points: pd.DataFrame, split: str, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out points for a split (not lolo, which is per language)."""
    n = len(points)
    if split == "random":
        groups = groups_of(points)
        names = np.unique(groups)
        if names.size < 2:
            raise SplitError(f"held-out split 'random' holds out whole runs and the points come from "
                             f"{names.size} run: nothing would be left to fit")
        rng = np.random.default_rng(seed)
        k = min(max(1, int(round(HOLDOUT_FRACTION * names.size))), names.size - 1)
        return np.isin(groups, rng.choice(names, size=k, replace=False))
    if split == "N":
        N = points["N"].to_numpy(float)
        mask = np.zeros(n, bool)
        for size in np.unique(N)[::-1]:
            mask |= N == size
            if mask.mean() >= MIN_N_FRACTION:
                break
        return mask
    if split == "D":
        return _per_target_top(points, "D", HOLDOUT_FRACTION)
    if split == "C":
        return _per_target_top(points, "C", HOLDOUT_FRACTION)
    if split == "M":
        kinds = [mixture_kind(m, w) for m, w in zip(points["mixture"], points["weights"])]
        return np.array([k == "other" for k in kinds])
    raise engine.FitError(f"unknown held-out split {split!r}; choose from {', '.join(SPLITS)}")


@dataclasses.dataclass
class SplitResult:
    split: str
    metrics: dict[str, float]
    n_train: int
    held_out: np.ndarray          # mask over the points table
    predictions: np.ndarray       # NaN where not held out or skipped
    skipped_targets: list[str]

    def to_dict(self) -> dict:
        return {**self.metrics, "n_train": self.n_train, "skipped_targets": self.skipped_targets}


def evaluate_split(spec: table_fit.FitSpec, points: pd.DataFrame, split: str, seed: int = 0,
                   targets: Sequence[str] | None = None) -> SplitResult:
    """Fits `spec` on the points outside the split and scores the held-out ones."""
    if targets:
        points = points[points["target"].isin(list(targets))].reset_index(drop=True)
    if split == "lolo":
        return _leave_one_language_out(spec, points)
    mask = holdout_mask(points, split, seed)
    if mask.all():
        raise SplitError(f"held-out split {split!r} holds out every point: nothing left to fit"
                         + (f" (every point has N = {points['N'].iloc[0]:.3g})" if split == "N" else ""))
    if not mask.any():
        raise SplitError(f"held-out split {split!r} holds out no point: nothing to score"
                         + (" (no point comes from a mixture other than monolingual, bilingual or "
                            "Unimax)" if split == "M" else ""))
    train, test = points[~mask], points[mask]
    n_needed = len(table_fit.build_law(spec, train, train["target"].iloc[0])[0].param_names) - len(spec.fixed)
    fit_targets, skipped = [], []
    for t in sorted(test["target"].unique()):
        (fit_targets if (train["target"] == t).sum() >= max(n_needed, 1) else skipped).append(t)
    if not fit_targets:
        raise SplitError(
            f"held-out split {split!r} leaves too few points to fit any held-out target "
            f"({', '.join(skipped)})")
    fitted = table_fit.fit_points(spec, train, fit_targets)
    scored = test["target"].isin(fit_targets).to_numpy()
    pred = np.full(len(points), np.nan)
    idx = np.flatnonzero(mask)[scored]
    pred[idx] = fitted.predict(test[scored])
    m = metrics(points["loss"].to_numpy(float)[idx], pred[idx])
    m["r2_mean_over_targets"] = mean_target_r2(points.iloc[idx], pred[idx])
    return SplitResult(split, m, int(len(train)), mask, pred, skipped)


def mean_target_r2(points: pd.DataFrame, pred: np.ndarray) -> float:
    """R² of each target's points (targets with two or more), averaged over targets (spec §1.4)."""
    values = []
    for t in points["target"].unique():
        sel = (points["target"] == t).to_numpy()
        if sel.sum() >= 2:
            values.append(engine.r2_score(points["loss"].to_numpy(float)[sel], pred[sel]))
    return float(np.nanmean(values)) if values else float("nan")


def _leave_one_language_out(spec: table_fit.FitSpec, points: pd.DataFrame) -> SplitResult:
    targets = sorted(points["target"].unique())
    if len(targets) < 2:
        raise engine.FitError("held-out split 'lolo' needs at least two target languages")
    pooled_spec = dataclasses.replace(spec, n_transfer=0)
    pred = np.full(len(points), np.nan)
    for t in targets:
        held = (points["target"] == t).to_numpy()
        train, test = points[~held], points[held]
        law, _ = table_fit.build_law(pooled_spec, train, train["target"].iloc[0])
        res = engine.fit(law, data_lib.law_inputs(law, train), train["loss"].to_numpy(float),
                         spec.objective, dict(spec.fixed), bounds=spec.bounds_for(law.param_names),
                         allow_negative_tau=spec.allow_negative_tau,
                         grid_budget=spec.grid_budget, n_polish=spec.n_polish)
        pred[held] = res.predict(data_lib.law_inputs(law, test))
    m = metrics(points["loss"].to_numpy(float), pred)
    m["r2_mean_over_targets"] = mean_target_r2(points, pred)
    return SplitResult("lolo", m, int(len(points)), np.ones(len(points), bool), pred, [])


def compare_laws(specs: Mapping[str, table_fit.FitSpec], points: pd.DataFrame,
                 splits: Sequence[str] = ("random", "N", "D", "C"), seed: int = 0) -> pd.DataFrame:
    """A table (law × split): R² per target averaged over targets (the headline), pooled R², MAE,
    MAPE and n, every law scored on the same splits. A split that cannot be made gets NaN scores
    and its explanation in `note`."""
    rows = []
    for name, spec in specs.items():
        full = table_fit.fit_points(spec, points)
        pred = full.predict(points)
        rows.append({"law": name, "split": "in_sample", HEADLINE: mean_target_r2(points, pred),
                     **metrics(points["loss"], pred), "note": ""})
        for split in splits:
            try:
                res = evaluate_split(spec, points, split, seed)
            except SplitError as err:
                rows.append({"law": name, "split": split, HEADLINE: np.nan, "r2": np.nan, "mae": np.nan,
                             "mape": np.nan, "n": 0, "note": str(err)})
                continue
            rows.append({"law": name, "split": split,
                         **{k: res.metrics[k] for k in (HEADLINE, "r2", "mae", "mape", "n")}, "note": ""})
    return pd.DataFrame(rows)
