"""Objective profiles: hold one parameter at a series of values, re-optimise the others.

A flat profile means the data barely constrain that parameter (e.g. R_D* of the data-constrained
law, spec §6). A parameter is flagged weakly identified when moving it to both ends of its
profile range raises the objective by less than `flat_tolerance` (relative; default 1%)
[our choice]. Ranges: ×1/3…×3 for positive (log-space) parameters, ±0.1 for exponents and
±max(0.5·|value|, 0.05) for λ, τ, φ, ψ, γ [our choice].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from atlas_t5x.scaling import engine
from atlas_t5x.scaling.objectives import get_objective


FLAT_TOLERANCE = 0.01


@dataclasses.dataclass
class Profile:
    name: str
    values: np.ndarray
    objective: np.ndarray
    optimum: float
    optimum_objective: float
    weakly_identified: bool

    def to_dict(self) -> dict[str, Any]:
        return {"values": [float(v) for v in self.values],
                "objective": [float(v) for v in self.objective],
                "optimum": self.optimum, "optimum_objective": self.optimum_objective,
                "weakly_identified": self.weakly_identified}


def profile_values(name: str, value: float, n: int, lo: float, hi: float) -> np.ndarray:
    if name in engine.LOG_PARAMS:
        vals = value * np.geomspace(1.0 / 3.0, 3.0, n)
    elif name in ("alpha", "beta"):
        vals = value + np.linspace(-0.1, 0.1, n)
    else:
        half = max(0.5 * abs(value), 0.05)
        vals = value + np.linspace(-half, half, n)
    return np.clip(vals, lo, hi)


@engine._blas_single
def profile(result: engine.FitResult, X: Mapping[str, Any], y, names: Sequence[str] | None = None,
            n_values: int = 9, flat_tolerance: float = FLAT_TOLERANCE) -> dict[str, Profile]:
    """Profiles of `result`'s objective along each free parameter (or the named ones)."""
    law = result.law
    canon, to_canon = engine._canonical(law)
    ren = lambda d: {to_canon.get(k, k): v for k, v in d.items()}  # noqa: E731
    back = {v: k for k, v in to_canon.items()}
    Xc, y = engine.check_data(canon, ren(X), y)
    obj = get_objective(result.objective_name)
    free = [n for n in result.free_names if n not in obj.extra_params]
    names = list(names) if names else free
    unknown = [n for n in names if n not in free]
    if unknown:
        raise engine.FitError(f"cannot profile {unknown}: not free parameters of the fit ({free})")
    full = ren({**result.params, **result.extra})
    w = np.ones_like(y)
    Xp, yp, wp = engine.pad_points(Xc, y, w)
    out = {}
    for name in names:
        cname = to_canon.get(name, name)
        lo, hi = ren(result.bounds).get(cname) or engine.default_bounds(cname, allow_negative_tau=True)
        values = profile_values(cname, full[cname], n_values, lo, hi)
        objs = []
        for v in values:
            fixed = {**ren(result.fixed), cname: float(v)}
            problem = engine._Problem(canon, obj, fixed, ren(result.bounds) or None, True)
            start = problem.pack(full)
            if problem.free:
                _, fval, _, _ = engine.polish(problem, start, Xp, yp, wp, gtol=1e-10, maxiter=2000)
            else:
                fval = float(problem.value(start, Xc, y, w))
            objs.append(fval)
        objs = np.asarray(objs)
        base = result.objective
        scale = max(abs(base), 1e-12)
        weak = bool((objs[0] - base) / scale < flat_tolerance and (objs[-1] - base) / scale < flat_tolerance)
        out[back.get(cname, cname)] = Profile(back.get(cname, cname), values, objs, float(full[cname]),
                                              float(base), weak)
    return out
