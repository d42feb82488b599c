"""Fitting a points table: one law per target language (the spec and table plumbing of the fits).

`FitSpec` says which law, options and objective; `fit_points` builds each target's law from the
points table (`atlas_t5x.scaling.points`: transfer languages, τ initial values) and hands the
arrays to the numeric core, `atlas_t5x.scaling.engine.fit`. `TableFit.predict` routes each point to
its target's fitted law.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from atlas_t5x.scaling import points as points_lib
from atlas_t5x.scaling.engine import FitError, FitResult, fit, single_threaded_blas
from atlas_t5x.scaling.laws import Law, make_law




@dataclasses.dataclass(frozen=True)
class FitSpec:
    """How to fit a points table: the law, its options and the objective.

    atlas: multilingual (K_t transfer languages + other) when the data hold multilingual mixtures,
    monolingual otherwise (`multilingual` forces either). dcsl: `dcsl_stage` "two" fits the base
    law on points with at most one epoch first, then R_D, R_N with the base law fixed.
    `bounds` replace default_bounds for the named parameters.
    """

    law: str = "csl"
    objective: str = "huber"
    tied: bool = False
    fixed: tuple[tuple[str, float], ...] = ()
    n_transfer: int = 3
    transfer_rule: str = "cosampling"
    transfer_matrix: str | None = None
    multilingual: bool | None = None
    allow_negative_tau: bool = False
    dcsl_stage: str = "one"
    grid_budget: int = 4000
    n_polish: int = 6
    bounds: tuple[tuple[str, float, float], ...] = ()   # (name, low, high), natural units

    def bounds_for(self, names: Sequence[str] | None = None) -> dict[str, tuple[float, float]] | None:
        """`bounds` as {name: (low, high)} for `engine.fit`, only those of `names` when given;
        None when none apply (the defaults)."""
        return {n: (lo, hi) for n, lo, hi in self.bounds if names is None or n in names} or None


@dataclasses.dataclass
class TableFit:
    """Per-target fits of one FitSpec; `predict(points)` routes each row to its target's law."""

    spec: FitSpec
    fits: dict[str, FitResult]

    def predict(self, points) -> np.ndarray:
        out = np.full(len(points), np.nan)
        tg = points["target"].to_numpy()
        for target, res in self.fits.items():
            mask = tg == target
            if mask.any():
                out[mask] = res.predict(points_lib.law_inputs(res.law, points[mask]))
        missing = sorted(set(tg) - set(self.fits))
        if missing:
            raise FitError(f"no fitted law for target(s) {missing}")
        return out

    @property
    def objective(self) -> float:
        return float(sum(r.objective for r in self.fits.values()))

    @property
    def converged(self) -> bool:
        return all(r.converged for r in self.fits.values())


def _is_multilingual(points) -> bool:
    return bool(any(sum(1 for w in ws.values() if w > 0) > 1 for ws in points["weights"]))


def build_law(spec: FitSpec, points, target: str) -> tuple[Law, dict[str, float]]:
    """The law for one target (transfer languages chosen on `points`) and its initial values."""
    if spec.law != "atlas":
        return make_law(spec.law, tied=spec.tied, stage=spec.dcsl_stage), {}
    multi = _is_multilingual(points) if spec.multilingual is None else spec.multilingual
    if not multi:
        return make_law("atlas", tied=spec.tied), {}
    # Only a matrix the user names: a default found beside the checkout would make the same command
    # fit differently on two machines.
    matrix = points_lib.load_transfer_matrix(spec.transfer_matrix) if spec.transfer_matrix else None
    transfer = points_lib.cosampled_languages(points, target, spec.n_transfer, spec.transfer_rule, matrix)
    law = make_law("atlas", tied=spec.tied, transfer_langs=transfer, with_other=True)
    init = points_lib.tau_init(target, transfer, matrix)
    if not spec.allow_negative_tau:
        init = {k: max(v, 0.0) for k, v in init.items()}
    return law, init


def fit_points(spec: FitSpec, points, targets: Sequence[str] | None = None) -> TableFit:
    """Fits `spec` separately for every target of the points table (or the given ones)."""
    with single_threaded_blas():
        return _fit_points(spec, points, targets)


def _fit_points(spec: FitSpec, points, targets: Sequence[str] | None) -> TableFit:
    if len(points) == 0:
        raise FitError("no points to fit")
    all_targets = sorted(points["target"].unique())
    targets = list(targets) if targets else all_targets
    unknown = [t for t in targets if t not in all_targets]
    if unknown:
        raise FitError(f"target(s) {unknown} not in the data; targets present: {all_targets}")
    fits = {}
    for target in targets:
        sub = points[points["target"] == target]
        law, init = build_law(spec, points, target)
        fixed = dict(spec.fixed)
        if law.tied and "beta" in fixed:
            raise FitError("--tied ties beta to alpha: fix alpha instead of beta")
        allowed = set(law.param_names) | {"sigma"}
        for what, names in (("--fix", fixed), ("--bound", {b[0] for b in spec.bounds})):
            unknown = sorted(set(names) - allowed)
            if unknown:
                raise FitError(f"{what} names unknown parameter(s) {unknown} for law {law.name!r}; "
                               f"its parameters: {list(law.param_names)}")
        X = points_lib.law_inputs(law, sub)
        y = sub["loss"].to_numpy(np.float64)
        unidentified = _unidentified_params(law, X, fixed)
        fixed.update({k: 0.0 for k in unidentified})
        if law.name == "dcsl" and spec.dcsl_stage == "two":
            fixed = {**_dcsl_base_fit(spec, sub, law, fixed), **fixed}
        fits[target] = fit(law, X, y, spec.objective, fixed, init=init, bounds=spec.bounds_for(),
                           allow_negative_tau=spec.allow_negative_tau,
                           grid_budget=spec.grid_budget, n_polish=spec.n_polish)
        fits[target].initial_values = dict(init)
        for name, why in unidentified.items():
            fits[target].message += f"; {name} fixed at 0: {why}"
    return TableFit(spec, fits)


def _unidentified_params(law: Law, X: Mapping[str, np.ndarray], fixed: Mapping[str, float]) -> dict[str, str]:
    """Parameters the points cannot determine, with the reason; the caller fixes them at 0
    [our choice]: τ whose source language has no tokens at any point, MSL's γ when the sampling
    ratio p is the same everywhere, the curse law's φ, ψ when K is the same everywhere."""
    out = {}
    for name in law.param_names:
        if name in fixed:
            continue
        if name.startswith("tau_"):
            column = X.get("D_" + name[len("tau_"):])
            if column is not None and not np.any(column > 0):
                out[name] = "its language has no training tokens in these points"
        elif name == "gamma" and np.ptp(X["p"]) == 0:
            out[name] = f"the sampling ratio p is {float(X['p'][0]):g} at every point"
        elif name in ("phi", "psi") and np.ptp(X["K"]) == 0:
            out[name] = f"the number of languages K is {float(X['K'][0]):g} at every point"
        elif name == "lambda" and not _repeats_data(X):
            # S_λ(D; U) = D while D ≤ U: with no repeated data λ changes no prediction (and a
            # table without a U column sets U = D); 0 is the no-saturation limit
            out[name] = "no point repeats its data (D ≤ U everywhere; a table without U sets U = D)"
    return out


def _repeats_data(X: Mapping[str, np.ndarray]) -> bool:
    """Whether any (D, U) input pair of the law has D > U at some point (repeated data)."""
    pairs = [("D", "U")] + [(k, "U_" + k[2:]) for k in X if k.startswith("D_")]
    return any(np.any(X[d] > X[u] * (1 + 1e-9)) for d, u in pairs if d in X and u in X)


def _dcsl_base_fit(spec: FitSpec, sub, law: Law, fixed: Mapping[str, float]) -> dict[str, float]:
    """Stage one of the two-stage DCSL fit: CSL on points with at most one epoch (D ≤ U)."""
    base_names = [n for n in ("E", "A", "B", "alpha", "beta") if n in law.param_names]
    if all(n in fixed for n in base_names):
        return {}
    one_epoch = sub[sub["D"] <= sub["U"]]
    csl = make_law("csl", tied=law.tied)
    if len(one_epoch) < len(csl.param_names):
        raise FitError(f"two-stage dcsl needs ≥ {len(csl.param_names)} points with D ≤ U; "
                       f"found {len(one_epoch)}")
    res = fit(csl, {"N": one_epoch["N"].to_numpy(float), "D": one_epoch["D"].to_numpy(float)},
              one_epoch["loss"].to_numpy(float), spec.objective,
              {k: v for k, v in fixed.items() if k in csl.param_names},
              bounds=spec.bounds_for(csl.param_names))
    return {k: v for k, v in res.params.items() if k in law.param_names}
