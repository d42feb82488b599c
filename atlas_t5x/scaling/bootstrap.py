"""Bootstrap by run: resample whole runs (not points) and refit, for confidence intervals.

A replicate is a multiset of runs; it enters the objective as per-point weights (how many times
the point's run was drawn). All replicates are refitted at once, warm-started from the optimum,
by a vectorised Levenberg–Marquardt iteration on the IRLS majoriser of the objective
(Huber / least squares; JAX, float64; parameters at a bound held there by an active set); the
replicates it leaves unconverged are finished by the fit's own L-BFGS-B polish, whose convergence
test (`engine.CONVERGENCE_CRITERIA`) then decides. The likelihood objective, whose scale parameter has no
IRLS form, falls back to one L-BFGS-B polish per replicate (slower).

Derived quantities (e.g. the compute-optimal allocation exponent β/(α+β)) get intervals too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from atlas_t5x.scaling import engine
from atlas_t5x.scaling.objectives import get_objective


def default_derived(param_names: Sequence[str]) -> dict[str, Callable[[Mapping[str, float]], float]]:
    """Compute-optimal exponents when the law has α and β: N_opt ∝ C^(β/(α+β)), D_opt ∝ C^(α/(α+β))."""
    if "alpha" in param_names:
        beta = "beta" if "beta" in param_names else "alpha"
        return {
            "N_opt_exponent": lambda p: p[beta] / (p["alpha"] + p[beta]),
            "D_opt_exponent": lambda p: p["alpha"] / (p["alpha"] + p[beta]),
        }
    return {}


@dataclasses.dataclass
class BootstrapResult:
    samples: dict[str, np.ndarray]       # parameter / derived name → (n_boot,) values
    converged: np.ndarray                # (n_boot,) bool
    level: float

    def intervals(self) -> dict[str, dict[str, float]]:
        lo_q, hi_q = 50 * (1 - self.level), 100 - 50 * (1 - self.level)
        out = {}
        for k, v in self.samples.items():
            v = v[self.converged & np.isfinite(v)]
            if v.size == 0:
                continue
            out[k] = {"lo": float(np.percentile(v, lo_q)), "hi": float(np.percentile(v, hi_q)),
                      "median": float(np.median(v)), "std": float(np.std(v))}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"n_boot": int(self.converged.size), "level": self.level,
                "converged_fraction": float(self.converged.mean()), "intervals": self.intervals()}


def run_weights(groups: Sequence, n_boot: int, seed: int = 0, strata: Sequence | None = None) -> np.ndarray:
    """(n_boot, n_points) multiplicities from resampling the distinct groups (runs) with replacement.

    With `strata` (one label per point, constant within a group, e.g. the model size N), groups are
    resampled within each stratum and every stratum keeps its number of groups: the design (which
    sizes were trained) is fixed, only the runs at each size are resampled.
    """
    codes, _ = _factorize(groups)
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    if strata is None:
        draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    else:
        stratum_codes, _ = _factorize(strata)
        group_stratum = np.full(n_groups, -1)
        for g, s in zip(codes, stratum_codes):
            if group_stratum[g] not in (-1, s):
                raise ValueError(f"bootstrap strata: group {g} spans two strata; a run must have one "
                                 "stratum (e.g. one model size)")
            group_stratum[g] = s
        draws = np.empty((n_boot, n_groups), dtype=int)
        column = 0
        for s in np.unique(group_stratum):
            members = np.flatnonzero(group_stratum == s)
            draws[:, column:column + members.size] = members[rng.integers(0, members.size,
                                                                          size=(n_boot, members.size))]
            column += members.size
    counts = np.zeros((n_boot, n_groups))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_groups), draws.ravel()), 1.0)
    return counts[:, codes]


def _factorize(groups):
    values = np.asarray(groups)
    uniq, codes = np.unique(values, return_inverse=True)
    return codes.ravel(), uniq


@engine._blas_single
def bootstrap(result: engine.FitResult, X: Mapping[str, Any], y, groups: Sequence, n_boot: int = 1000,
              seed: int = 0, level: float = 0.95, max_iter: int = 1000,
              derived: Mapping[str, Callable] | None = None, strata: Sequence | None = None) -> BootstrapResult:
    """Refits `result` on `n_boot` run-resampled data sets (within `strata` when given, see
    `run_weights`); returns samples and intervals."""
    law = result.law
    canon, to_canon = engine._canonical(law)
    ren = lambda d: {to_canon.get(k, k): v for k, v in d.items()}  # noqa: E731
    Xc, y = engine.check_data(canon, ren(X), y)
    obj = get_objective(result.objective_name)
    # the fit's own bounds (τ ≥ 0 unless allowed, user bounds) hold for every replicate
    problem = engine._Problem(canon, obj, ren(result.fixed), ren(result.bounds) or None, True)
    start = problem.pack({**ren(result.params), **result.extra})
    W = run_weights(groups, n_boot, seed, strata)
    if obj.name == "likelihood":
        polished = [engine.polish(problem, start.copy(), Xc, y, w) for w in W]
        Z = np.stack([z for z, _, _, _ in polished])
        conv = np.array([ok for _, _, ok, _ in polished], bool)
    else:
        Z, conv = engine.batched_lm(problem, np.tile(start, (n_boot, 1)), Xc, y, W, max_iter)
        # The few replicates the vectorised iteration leaves on a long, flat valley (an exponent
        # traded against its amplitude) finish with the main fit's polish and its convergence
        # test (gradient or step test), so "converged" means the same for a replicate as for the fit.
        Xp, yp, _ = engine.pad_points(Xc, y, np.ones_like(y))
        for i in np.flatnonzero(~conv):
            wp = np.concatenate([W[i], np.zeros(yp.size - y.size)])
            Z[i], _, conv[i], _ = engine.polish(problem, Z[i].copy(), Xp, yp, wp)
    back = {v: k for k, v in to_canon.items()}
    samples: dict[str, np.ndarray] = {}
    values = problem.unpack(Z)
    for name in problem.free:
        samples[back.get(name, name)] = np.asarray(values[name], float)
    # Fixed parameters get no interval; derived quantities use their fixed values and get one
    # only when they depend on a fitted parameter (the default ones: when α or β is fitted).
    every = dict(samples)
    for name, v in problem.fixed.items():
        if name in canon.param_names:
            every.setdefault(back.get(name, name), np.full(n_boot, v))
    if derived is None:
        derived = default_derived(law.param_names) if {"alpha", "beta"} & set(samples) else {}
    for name, fn in derived.items():
        samples[name] = np.array([fn({k: every[k][i] for k in every}) for i in range(n_boot)])
    return BootstrapResult(samples, conv, level)




def resampling_units(points) -> tuple[np.ndarray, np.ndarray | None]:
    """(groups, strata) of a bootstrap by run over a points table.

    Groups: whole trunks (`group`: a WSD trunk with its cooldown branches, which share its stable
    phase) at every model size trained with two or more trunks (e.g. seeds), so a replicate
    resamples trunk-to-trunk variation there; at a size with one trunk its logged runs (each
    cooldown branch a run of its own) are resampled instead, as nothing else varies there.
    Strata: the model size N when every size has two or more units (a designed sweep: the sizes
    are chosen, so each replicate keeps them and resamples the units at each size); otherwise none
    (e.g. tables with one run per size).
    """
    runs = points["run"].astype(str).to_numpy()
    groups = runs
    if "group" in points.columns:
        trunks = np.asarray(["trunk:" + g for g in points["group"].astype(str)])
        sizes = points["N"].to_numpy(float)
        trunks_per_size = points.groupby("N")["group"].nunique()
        several = np.isin(sizes, trunks_per_size.index[trunks_per_size >= 2].to_numpy(float))
        groups = np.where(several, trunks, runs)
    units_per_size = pd.Series(groups).groupby(points["N"].to_numpy(float)).nunique()
    strata = points["N"].to_numpy(float) if len(units_per_size) > 1 and units_per_size.min() >= 2 else None
    return groups, strata
