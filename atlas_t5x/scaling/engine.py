"""The fitting engine: variable-projection grid search, then tight gradient polish.

1. The non-linear parameters (exponents, λ, τ, R_D, R_N, φ, ψ, γ) are searched on a dense grid
   (Cartesian for ≤ 3 of them, a scrambled Sobol set beyond), vectorised over all grid points.
2. For laws whose amplitudes (E, A, B) enter linearly, the amplitudes of every grid point are
   solved exactly by a batched non-negative least squares on relative residuals, re-weighted a
   few times with the Huber IRLS weights so they approximate the log-space robust fit
   ("variable projection"). Laws without that structure (DCSL) search their non-linear
   parameters with the base law taken from a CSL fit.
3. The true objective is evaluated at every grid point; the best few distinct candidates are
   polished by L-BFGS-B on the true objective with JAX gradients (float64) and tight tolerances.
4. Results report the objective, a converged flag with its reason (`CONVERGENCE_CRITERIA`: a
   gradient test, or a step test at the kinks of the Huber objective; never the optimizer's own
   stop alone), parameters at or next to a bound (`near_bounds`), and runner-up basins.

Positive parameters (E, A, B, R_D, R_N, σ) are optimised in log space (the log-sum-exp form of
spec §1.1); the others directly, within bounds.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

from atlas_t5x.scaling.laws import Law
from atlas_t5x.scaling.objectives import Objective, get_objective

LOG_PARAMS = ("E", "A", "B", "R_D", "R_N", "sigma")
TINY_AMPLITUDE = 1e-12
DEFAULT_GTOL = 1e-12
DEFAULT_MAXITER = 20000


class FitError(ValueError):
    """The data or options cannot produce a fit (names the offending parameter or input)."""


def default_bounds(name: str, allow_negative_tau: bool = False) -> tuple[float, float]:
    """Natural-unit bounds of a parameter. E ≥ 0 via its log form; τ ≥ 0 unless allowed."""
    if name in ("E", "A", "B"):
        return (1e-12, 1e12)
    if name in ("R_D", "R_N"):
        return (1e-3, 1e4)
    if name == "sigma":
        return (1e-12, 10.0)
    if name in ("alpha", "beta"):
        return (0.0, 5.0)
    if name == "lambda":
        return (0.0, 50.0)
    if name.startswith("tau_"):
        return (-5.0 if allow_negative_tau else 0.0, 50.0)
    if name in ("phi", "psi", "gamma"):
        return (-5.0, 5.0)
    raise FitError(f"no bounds known for parameter {name!r}")


def default_grid(name: str, count: int, center: float | None = None, allow_negative_tau=False) -> np.ndarray:
    """Candidate values for a non-linear parameter in the grid search. [our choice of ranges]"""
    if name in ("alpha", "beta"):
        return np.linspace(0.02, 1.5, count)
    if name == "lambda":
        return np.concatenate([[0.0], np.geomspace(1e-3, 3.0, max(count - 1, 1))])
    if name in ("R_D", "R_N"):
        return np.geomspace(0.3, 300.0, count)
    if name.startswith("tau_"):
        lo = -0.5 if allow_negative_tau else 0.0
        values = np.linspace(lo, 1.5 if name != "tau_other" else 1.0, count)
        if center is not None:
            values = np.unique(np.concatenate([values, [center]]))
        return values
    if name in ("phi", "psi", "gamma"):
        return np.linspace(-0.6, 0.6, count)
    raise FitError(f"no grid known for parameter {name!r}")


def _to_z(name: str, value: float) -> float:
    return math.log(max(value, TINY_AMPLITUDE)) if name in LOG_PARAMS else float(value)


def _from_z(name: str, z):
    return np.exp(z) if name in LOG_PARAMS else z


@dataclasses.dataclass
class FitResult:
    """A fitted law. `params` holds every parameter (fixed ones included), natural units."""

    law: Law
    params: dict[str, float]
    objective: float
    objective_name: str
    converged: bool
    message: str
    n_points: int
    free_names: tuple[str, ...]
    fixed: dict[str, float]
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    runner_ups: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    n_grid: int = 0
    n_polished: int = 0
    initial_values: dict[str, float] = dataclasses.field(default_factory=dict)
    at_bounds: dict[str, str] = dataclasses.field(default_factory=dict)   # name → "low"/"high"
    bounds: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)  # used, natural units

    def predict(self, X: Mapping[str, Any]) -> np.ndarray:
        return np.asarray(self.law.predict(self.params, X), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.law.name,
            "params": {k: float(v) for k, v in self.params.items()},
            "objective": float(self.objective),
            "objective_name": self.objective_name,
            "converged": bool(self.converged),
            "convergence_message": self.message,
            "n_points": int(self.n_points),
            "free_params": list(self.free_names),
            "fixed_params": {k: float(v) for k, v in self.fixed.items()},
            "nuisance": {k: float(v) for k, v in self.extra.items()},
            "runner_ups": self.runner_ups,
            "n_grid": self.n_grid,
            "n_polished": self.n_polished,
            "initial_values": {k: float(v) for k, v in self.initial_values.items()},
            "at_bounds": dict(self.at_bounds),
        }


# -------------------------------------------------------------------------------------------------
# JAX objective (value and gradient in float64)


class _Problem:
    """Binds a law, objective, free/fixed split and bounds; builds jitted value-and-gradient."""

    def __init__(self, law: Law, objective: Objective, fixed: Mapping[str, float],
                 bounds: Mapping[str, tuple[float, float]] | None, allow_negative_tau: bool):
        unknown = sorted(set(fixed) - set(law.param_names) - set(objective.extra_params))
        if unknown:
            raise FitError(
                f"unknown parameter(s) {unknown} for law {law.name!r}; its parameters are "
                f"{list(law.param_names) + list(objective.extra_params)}"
            )
        self.law = law
        self.objective = objective
        self.fixed = {k: float(v) for k, v in fixed.items()}
        names = tuple(law.param_names) + objective.extra_params
        self.free = tuple(n for n in names if n not in self.fixed)
        bounds = dict(bounds or {})
        for k, (lo, hi) in bounds.items():
            if k not in names:
                raise FitError(f"bounds given for unknown parameter {k!r} of law {law.name!r}")
            if not lo < hi:
                raise FitError(f"bounds of {k!r}: low {lo!r} must be below high {hi!r}")
            if k in LOG_PARAMS and hi <= 0:
                raise FitError(f"bounds of {k!r}: {k} is positive, high {hi!r} must be > 0")
        self.bounds_nat = {n: bounds.get(n, default_bounds(n, allow_negative_tau)) for n in names}
        self.z_bounds = [
            tuple(_to_z(n, b) if b is not None else None for b in self.bounds_nat[n]) for n in self.free
        ]
        self.fixed_names = tuple(sorted(self.fixed))
        self.fixed_vec = np.array([self.fixed[n] for n in self.fixed_names], dtype=np.float64)

    # natural-unit dict (law params + extras) from a free vector (numpy or jax)
    def unpack(self, z, xp=np, fixed_vec=None) -> dict[str, Any]:
        fv = self.fixed_vec if fixed_vec is None else fixed_vec
        out: dict[str, Any] = {n: fv[i] for i, n in enumerate(self.fixed_names)}
        for i, n in enumerate(self.free):
            out[n] = xp.exp(z[..., i]) if n in LOG_PARAMS else z[..., i]
        return out

    def pack(self, values: Mapping[str, float]) -> np.ndarray:
        return np.array([_to_z(n, float(values[n])) for n in self.free], dtype=np.float64)

    def law_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k in self.law.param_names}

    def residuals(self, z, X, y, xp=np, fixed_vec=None):
        values = self.unpack(z, xp, fixed_vec)
        pred = self.law.formula(self.law.full_params(self.law_params(values)), X, xp)
        return xp.log(xp.maximum(pred, 1e-300)) - xp.log(y), values

    def value(self, z, X, y, w, xp=np, fixed_vec=None):
        r, values = self.residuals(z, X, y, xp, fixed_vec)
        extra = {k: values[k] for k in self.objective.extra_params}
        return self.objective.value(r, w, extra, xp)

    def jitted(self, kind: str):
        """Compiled functions, shared by every problem with the same law, objective and split.

        'vg': (z, fixed_vec, X, y, w) → (value, grad);
        'residual': (z, fixed_vec, X, y) → r (log residuals).
        Fixed values are arguments, so bootstrap/profile refits reuse one compilation.
        """
        key = (kind, self.law, self.objective, self.free, self.fixed_names)
        if key not in _JIT_CACHE:
            import jax
            import jax.numpy as jnp

            if kind == "vg":
                fn = jax.value_and_grad(lambda z, fv, X, y, w: self.value(z, X, y, w, jnp, fv))
            elif kind == "residual":
                fn = lambda z, fv, X, y: self.residuals(z, X, y, jnp, fv)[0]  # noqa: E731
            else:
                raise KeyError(kind)
            _JIT_CACHE[key] = jax.jit(fn)
        return _JIT_CACHE[key]


_JIT_CACHE: dict[tuple, Callable] = {}


def _as_float64(X: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in X.items()}


def check_data(law: Law, X: Mapping[str, Any], y) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Validates inputs: present, finite, positive where they must be. Raises FitError naming them."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise FitError("no points to fit (loss array is empty)")
    X = _as_float64({k: X[k] for k in law.inputs if k in X})
    missing = [k for k in law.inputs if k not in X]
    if missing:
        raise FitError(f"law {law.name!r} needs input(s) {missing}")
    for k, v in list(X.items()) + [("loss", y)]:
        if v.shape != y.shape:
            raise FitError(f"input {k!r} has {v.shape[0] if v.ndim else 0} values, loss has {y.size}")
        if not np.all(np.isfinite(v)):
            i = int(np.argmin(np.isfinite(v)))
            raise FitError(f"input {k!r} has NaN or infinite values (first at point {i}: {float(v[i])!r})")
        # ATLAS may explain a target it never trained on through transfer: D_t = 0 is allowed.
        must_be_positive = k in ("N", "U", "K", "p", "loss", "U_other") or k.startswith("U_") or (
            k == "D" and law.name != "atlas")
        if must_be_positive and np.any(v <= 0):
            i = int(np.argmax(v <= 0))
            raise FitError(f"input {k!r} must be positive; point {i} has {float(v[i])!r}")
        if (k.startswith("D_") or k == "D") and np.any(v < 0):
            i = int(np.argmax(v < 0))
            raise FitError(f"input {k!r} must be non-negative; point {i} has {float(v[i])!r}")
    return X, y


# -------------------------------------------------------------------------------------------------
# Grid search with variable projection


def _batched_nnls(F: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min ||F c − b||² s.t. c ≥ 0 for every batch item; F (G, n, k), b (G, n) → c (G, k).

    Exact for small k by enumerating active sets (2^k − 1 unconstrained solves, vectorised).
    """
    G, _, k = F.shape
    Ft = np.swapaxes(F, 1, 2)
    FtF = Ft @ F
    Ftb = (Ft @ b[..., None])[..., 0]
    btb = np.sum(b * b, axis=1)
    best = np.zeros((G, k))
    best_sse = btb.copy()
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            idx = np.array(subset)
            M = FtF[:, idx[:, None], idx[None, :]] + 1e-14 * np.eye(size) * np.trace(
                FtF, axis1=1, axis2=2)[:, None, None]
            rhs = Ftb[:, idx]
            try:
                c = np.linalg.solve(M, rhs[..., None])[..., 0]
            except np.linalg.LinAlgError:
                continue
            sse = btb - 2 * np.einsum("gk,gk->g", c, rhs) + np.einsum("gk,gkl,gl->g", c, M, c)
            ok = np.all(c >= 0, axis=1) & np.isfinite(sse) & (sse < best_sse)
            if np.any(ok):
                full = np.zeros((G, k))
                full[:, idx] = c
                best[ok] = full[ok]
                best_sse[ok] = sse[ok]
    return best


def _grid_points(problem: _Problem, names: Sequence[str], budget: int, init: Mapping[str, float],
                 seed: int, allow_negative_tau: bool) -> dict[str, np.ndarray]:
    """Grid of the non-linear free parameters: Cartesian up to 3 of them, Sobol beyond."""
    if not names:
        return {}
    d = len(names)
    if d <= 3:
        per = max(3, int(round(budget ** (1.0 / d))))
        axes = [default_grid(n, per, init.get(n), allow_negative_tau) for n in names]
        mesh = np.meshgrid(*axes, indexing="ij")
        return {n: m.ravel() for n, m in zip(names, mesh)}
    # Sobol over each parameter's grid range; the initial guess is always included.
    m = int(math.ceil(math.log2(max(budget, 16))))
    from scipy.stats import qmc   # here, not at import: scipy.stats costs ~1 s to import

    unit = qmc.Sobol(d, scramble=True, seed=seed).random_base2(m)
    out = {}
    for j, n in enumerate(names):
        axis = default_grid(n, 64, None, allow_negative_tau)
        if n == "lambda":  # log-uniform over the λ grid's positive range
            lo, hi = math.log(1e-3), math.log(3.0)
            out[n] = np.exp(lo + unit[:, j] * (hi - lo))
        elif n in ("R_D", "R_N"):
            lo, hi = math.log(axis[0]), math.log(axis[-1])
            out[n] = np.exp(lo + unit[:, j] * (hi - lo))
        else:
            out[n] = axis[0] + unit[:, j] * (axis[-1] - axis[0])
    given = [n for n in names if n in init]
    if given:
        # A quarter more points hold the given initial values (e.g. τ from the transfer matrix)
        # while the other parameters keep their Sobol values.
        k = max(1, len(unit) // 4)
        for n in names:
            block = np.full(k, float(init[n])) if n in given else out[n][:k]
            out[n] = np.concatenate([block, out[n]])
    return out


def _clip_to_bounds(problem: _Problem, values: dict[str, np.ndarray]) -> None:
    for n in problem.free:
        if n in values:
            lo, hi = problem.bounds_nat[n]
            values[n] = np.clip(values[n], lo, hi)


def grid_search(problem: _Problem, X, y, w, budget: int, init: Mapping[str, float], seed: int,
                allow_negative_tau: bool, irls_steps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Evaluates the true objective over the grid. Returns (Z candidates (G, p), objective (G,))."""
    law = problem.law
    linear = [n for n in law.linear_names if n in law.param_names]
    use_varpro = law.linear_basis_fn is not None
    free_linear = [n for n in linear if n in problem.free] if use_varpro else []
    nonlinear = [n for n in problem.free if n not in free_linear and n not in problem.objective.extra_params]
    base: dict[str, float] = dict(init)
    if not use_varpro:
        # Amplitudes/exponents start from `init` (e.g. a CSL fit); the rest is gridded.
        nonlinear = [n for n in nonlinear if n not in base]
    grid = _grid_points(problem, nonlinear, budget, init, seed, allow_negative_tau)
    G = len(next(iter(grid.values()))) if grid else 1
    values: dict[str, np.ndarray] = {}
    for n in problem.free:
        if n in grid:
            values[n] = grid[n]
        elif n in base:
            values[n] = np.full(G, float(base[n]))
    chunk = max(1, int(4_000_000 // max(y.size, 1)))
    out_z = np.zeros((G, len(problem.free)))
    out_obj = np.full(G, np.inf)
    Xb = {k: v[None, :] for k, v in X.items()}
    for start in range(0, G, chunk):
        sl = slice(start, min(G, start + chunk))
        vals = {n: v[sl, None] for n, v in values.items()}
        p = {**{k: np.float64(v) for k, v in problem.fixed.items()}, **vals}
        if use_varpro and free_linear:
            nl = {k: v for k, v in p.items() if k not in free_linear}
            for n in free_linear:
                nl.setdefault(n, np.zeros((sl.stop - sl.start, 1)))
            with np.errstate(all="ignore"):
                cols = law.linear_basis(problem.law_params(nl), Xb, np)
            Gc = sl.stop - sl.start
            cols = {k: np.broadcast_to(v, (Gc, y.size)) for k, v in cols.items()}
            offset = sum(problem.fixed[n] * cols[n] for n in linear if n not in free_linear)
            target = y[None, :] - offset
            F = np.stack([cols[n] for n in free_linear], axis=-1)
            bad = ~np.all(np.isfinite(F), axis=(1, 2))
            F = np.where(np.isfinite(F), F, 0.0)
            omega = np.ones((Gc, y.size))
            for _ in range(max(1, irls_steps)):
                s = np.sqrt(w[None, :] * omega) / y[None, :]
                c = _batched_nnls(F * s[..., None], target * s)
                pred = (F @ c[..., None])[..., 0] + offset
                r = np.log(np.maximum(pred, 1e-300)) - np.log(y)[None, :]
                if problem.objective.name == "huber":
                    omega = problem.objective.irls_weight(r)
                else:
                    break
            for j, n in enumerate(free_linear):
                vals[n] = np.maximum(c[:, j:j + 1], TINY_AMPLITUDE)
            p.update(vals)
        else:
            bad = np.zeros(sl.stop - sl.start, bool)
        if "sigma" in problem.free:
            vals["sigma"] = np.full((sl.stop - sl.start, 1), 0.05)
        _clip_to_bounds(problem, vals)
        p.update(vals)
        with np.errstate(all="ignore"):
            pred = law.formula(law.full_params(problem.law_params(p)), Xb, np)
            r = np.log(np.maximum(pred, 1e-300)) - np.log(y)[None, :]
            # rank by the robust objective; the likelihood's σ is set at polish time
            rank_obj = get_objective("huber" if problem.objective.name == "likelihood"
                                     else problem.objective.name, problem.objective.delta)
            obj = rank_obj.value(r, w[None, :])
        obj = np.where(bad | ~np.isfinite(obj), np.inf, obj)
        out_obj[sl] = obj
        for j, n in enumerate(problem.free):
            v = np.broadcast_to(vals[n][:, 0] if n in vals else np.full(sl.stop - sl.start, base[n]),
                                (sl.stop - sl.start,))
            out_z[sl, j] = np.log(np.maximum(v, TINY_AMPLITUDE)) if n in LOG_PARAMS else v
    return out_z, out_obj


def _distinct(Z: np.ndarray, order: np.ndarray, k: int, scale: np.ndarray, min_dist: float) -> list[int]:
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= k:
            break
        if all(np.max(np.abs(Z[i] - Z[j]) / scale) > min_dist for j in chosen):
            chosen.append(int(i))
    return chosen


# -------------------------------------------------------------------------------------------------
# Polish


def polish(problem: _Problem, z0: np.ndarray, X, y, w, gtol: float = DEFAULT_GTOL,
           maxiter: int = DEFAULT_MAXITER) -> tuple[np.ndarray, float, bool, str]:
    """L-BFGS-B on the true objective from z0. Returns (z, value, converged, reason)."""
    import jax

    vg = problem.jitted("vg")

    def fun(z):
        with jax.enable_x64(True):
            v, g = vg(z, problem.fixed_vec, X, y, w)
        v = float(v)
        g = np.asarray(g, dtype=np.float64)
        if not np.isfinite(v):
            return 1e300, np.zeros_like(z)
        return v, g

    bounds = problem.z_bounds
    options = {"maxiter": maxiter, "maxfun": maxiter * 2, "ftol": 1e-15, "gtol": gtol, "maxcor": 30}
    res = optimize.minimize(fun, z0, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
    if not res.success:
        # a failed line search often recovers with a fresh curvature memory
        retry = optimize.minimize(fun, res.x, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
        if retry.fun <= res.fun:
            retry.nit += res.nit
            res = retry
    z = np.asarray(res.x, dtype=np.float64)
    value, grad = fun(z)
    # projected gradient: components pushing against an active bound do not count
    lo = np.array([b[0] if b[0] is not None else -np.inf for b in bounds])
    hi = np.array([b[1] if b[1] is not None else np.inf for b in bounds])
    pg = np.where((z <= lo) & (grad > 0) | (z >= hi) & (grad < 0), 0.0, grad)
    pg_norm = float(np.max(np.abs(pg))) if pg.size else 0.0
    tol = gradient_tolerance(value)
    msg = res.message if isinstance(res.message, str) else res.message.decode()
    reason = f"{msg.strip()} after {res.nit} iterations; max |projected gradient| = {pg_norm:.2e}"
    # The optimizer's own stop (e.g. a relative-reduction test after 0 iterations) is not trusted:
    # converged means the gradient test or, for kinked objectives, the step test below.
    converged = pg_norm <= tol
    if converged:
        reason += f" ≤ tolerance {tol:.1e} (gradient test)"
    elif pg_norm > 0 and _no_descent(fun, z, value, pg, lo, hi):
        # The Huber objective has kinks at |r| = δ, so its gradient need not vanish at a
        # minimum; where no step along −g lowers it, it is a minimum.
        converged = True
        reason += (f" > tolerance {tol:.1e}, but no step of length 1e-12…1e-3 along the negative "
                   "projected gradient lowers the objective (step test: kinked minimum)")
    else:
        reason += f" > tolerance {tol:.1e}: not converged"
    return z, float(value), converged, reason


def gradient_tolerance(value: float) -> float:
    """The gradient test of `converged`: max |projected gradient| (z-space: log for positive
    parameters) ≤ 1e-7·max(|objective|, 1e-3), at least 1e-10."""
    return max(1e-7 * max(abs(value), 1e-3), 1e-10)


CONVERGENCE_CRITERIA = (
    "converged = max |projected gradient| ≤ 1e-7·max(|objective|, 1e-3) (gradient test), or, where "
    "the objective has kinks (Huber), no step of length 1e-12…1e-3 along the negative projected "
    "gradient lowers it (step test); bootstrap replicates: no relative objective decrease > 1e-10 "
    "over 4 Levenberg–Marquardt iterations (parameters at a bound held there), or the gradient "
    "test; a replicate that fails both is polished by L-BFGS-B and judged by the fit's test")


def _no_descent(fun, z, value, g, lo, hi) -> bool:
    direction = -g / np.max(np.abs(g))
    for t in np.geomspace(1e-12, 1e-3, 10):
        trial = np.clip(z + t * direction, lo, hi)
        # improvements below 1e-12 (relative) are rounding noise of a float64 sum
        if fun(trial)[0] < value - 1e-12 * abs(value):
            return False
    return True


# -------------------------------------------------------------------------------------------------
# Vectorised IRLS polish (many starts or many bootstrap weightings at once)


def batched_lm(problem: _Problem, Z0: np.ndarray, X, y, W: np.ndarray, max_iter: int = 200,
               round_iters: int = 25):
    """Vectorised damped IRLS–Gauss–Newton (Levenberg–Marquardt on the objective's quadratic
    majoriser) from every start row of Z0 with point weights W (rows). Huber and least squares.

    Runs in rounds of `round_iters` compiled iterations; after each round only the rows still
    making progress continue, packed into a smaller batch (one extra compiled size), so a few
    slow bootstrap replicates do not keep the whole batch busy. Returns (Z, converged).
    """
    import jax
    import jax.numpy as jnp

    Xp, yp, _ = pad_points(X, y, np.ones_like(y))
    pad = yp.size - y.size
    Wp = np.concatenate([W, np.zeros((W.shape[0], pad))], axis=1) if pad else np.asarray(W, float)
    key = ("lm", problem.law, problem.objective, problem.free, problem.fixed_names, round_iters)
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = jax.jit(_make_lm(problem, round_iters))
    step = _JIT_CACHE[key]
    lo = np.array([b[0] if b[0] is not None else -np.inf for b in problem.z_bounds])
    hi = np.array([b[1] if b[1] is not None else np.inf for b in problem.z_bounds])
    R = Z0.shape[0]
    Z = np.array(Z0, dtype=np.float64)
    mu = np.full(R, 1e-6)
    stall = np.zeros(R, dtype=np.int32)
    f = np.full(R, np.inf)
    pg = np.full(R, np.inf)
    small = min(R, max(16, 2 ** int(math.ceil(math.log2(max(R // 4, 1))))))
    active = np.arange(R)
    done = 0
    with jax.enable_x64(True):
        while active.size and done < max_iter:
            size = small if active.size <= small else R
            idx = np.concatenate([active, np.full(size - active.size, active[0])])
            out = step(jnp.asarray(Z[idx]), jnp.asarray(mu[idx]), jnp.asarray(stall[idx]),
                       problem.fixed_vec, Xp, yp, jnp.asarray(Wp[idx]), lo, hi)
            out = [np.asarray(o)[: active.size] for o in out]
            Z[active], mu[active], f[active], stall[active], pg[active] = out
            active = active[stall[active] < STALL_STEPS]
            done += round_iters
    # Converged: the objective stopped decreasing (the Huber objective's kinks keep its gradient
    # from vanishing exactly), or the projected gradient is tiny.
    conv = np.isfinite(f) & ((stall >= STALL_STEPS) | (pg <= np.maximum(1e-8 * np.abs(f), 1e-12)))
    return Z, conv


STALL_STEPS = 4  # LM iterations without relative progress > 1e-10 that count as converged


def _make_lm(problem, n_iter: int):
    import jax
    import jax.numpy as jnp

    obj = problem.objective

    def residual(z, fv, X, y):
        return problem.residuals(z, X, y, jnp, fv)[0]

    def value(z, fv, X, y, w):
        return obj.value(residual(z, fv, X, y), w, None, jnp)

    def solve_all(Z0, mu0, stall0, fv, X, y, W, lo, hi):
        val_b = jax.vmap(value, in_axes=(0, None, None, None, 0))
        p = Z0.shape[1]
        eye = jnp.eye(p)

        def res_and_jac(z):
            # linearize evaluates the residuals once and reuses them for all p tangents
            r, tangent = jax.linearize(lambda zz: residual(zz, fv, X, y), z)
            return r, jax.vmap(tangent, out_axes=1)(eye)

        res_jac_b = jax.vmap(res_and_jac)

        def body(state):
            it, Z, mu, f, stall = state
            r, J = res_jac_b(Z)
            om = W * obj.irls_weight(r, jnp)
            H = jnp.einsum("rnp,rn,rnq->rpq", J, om, J)
            g = jnp.einsum("rnp,rn->rp", J, om * r)
            # Active set: a parameter at a bound whose descent leaves the box stays there and
            # drops out of the step (clipping a full step would distort the other components).
            held = ((Z <= lo) & (g > 0)) | ((Z >= hi) & (g < 0))
            g = jnp.where(held, 0.0, g)
            H = jnp.where(held[:, :, None] | held[:, None, :], 0.0, H) + held[:, :, None] * eye[None]
            diag = jnp.diagonal(H, axis1=1, axis2=2)
            Hd = H + (mu[:, None] * diag + 1e-12 * (1.0 + diag))[:, :, None] * eye[None]
            dz = -jnp.linalg.solve(Hd, g[..., None])[..., 0]
            Zn = jnp.clip(Z + dz, lo, hi)
            fn = val_b(Zn, fv, X, y, W)
            ok = jnp.isfinite(fn) & (fn <= f)
            progress = ok & (f - fn > 1e-10 * jnp.abs(f))
            Z = jnp.where(ok[:, None], Zn, Z)
            f = jnp.where(ok, fn, f)
            mu = jnp.clip(jnp.where(ok, mu * 0.1, mu * 10.0), 1e-10, 1e10)
            stall = jnp.where(progress, 0, stall + 1)
            return it + 1, Z, mu, f, stall

        def keep_going(state):
            it, _, _, _, stall = state
            return (it < n_iter) & jnp.any(stall < STALL_STEPS)

        f0 = val_b(Z0, fv, X, y, W)
        _, Z, mu, f, stall = jax.lax.while_loop(keep_going, body, (0, Z0, mu0, f0, stall0))
        grad = jax.vmap(jax.grad(value), in_axes=(0, None, None, None, 0))(Z, fv, X, y, W)
        at_lo = (Z <= lo) & (grad > 0)
        at_hi = (Z >= hi) & (grad < 0)
        pg = jnp.where(at_lo | at_hi, 0.0, grad)
        return Z, mu, f, stall, jnp.max(jnp.abs(pg), axis=1)

    return solve_all


# -------------------------------------------------------------------------------------------------
# Public entry point


def single_threaded_blas():
    """BLAS limited to one thread: the fitter's linear algebra is tiny, and multithreaded
    OpenBLAS on tiny problems costs ~100x (measured: L-BFGS-B 8 ms/iteration → 80 µs on a loaded
    2-core machine)."""
    return threadpool_limits(limits=1, user_api="blas")


def _blas_single(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_threaded_blas():
            return fn(*args, **kwargs)
    return wrapper


@_blas_single
def fit(
    law: Law,
    X: Mapping[str, Any],
    y,
    objective: str | Objective = "huber",
    fixed: Mapping[str, float] | None = None,
    weights=None,
    init: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    allow_negative_tau: bool = False,
    grid_budget: int = 4000,
    n_polish: int = 6,
    n_runner_ups: int = 5,
    seed: int = 0,
    gtol: float = DEFAULT_GTOL,
    n_final: int = 3,
    lm_iters: int = 60,
) -> FitResult:
    """Fits `law` to losses y (nats/token) at inputs X. See the module docstring for the method.

    `fixed`: parameters held at given values (natural units). `init`: starting values included in
    the search (e.g. τ from a transfer matrix; for DCSL the base law). `weights`: per-point
    multiplicities (bootstrap). With every parameter fixed this only evaluates.
    `n_polish` grid candidates go through `lm_iters` vectorised IRLS steps; the best `n_final`
    distinct basins are then polished by L-BFGS-B at tolerance `gtol`.
    """
    obj = objective if isinstance(objective, Objective) else get_objective(objective)
    X, y = check_data(law, X, y)
    fixed = dict(fixed or {})
    init = dict(init or {})
    canon, to_canon = _canonical(law)
    if canon is not law:
        # Fit an equivalent law with placeholder language names so one compilation serves
        # every target; names are mapped back on the way out.
        ren = lambda d: {to_canon.get(k, k): v for k, v in d.items()}  # noqa: E731
        res = fit.__wrapped__(canon, ren(X), y, obj, ren(fixed), weights, ren(init),
                              ren(bounds) if bounds else None, allow_negative_tau, grid_budget, n_polish,
                              n_runner_ups, seed, gtol, n_final, lm_iters)
        back = {v: k for k, v in to_canon.items()}
        res.law = law
        res.params = {back.get(k, k): v for k, v in res.params.items()}
        res.fixed = {back.get(k, k): v for k, v in res.fixed.items()}
        res.bounds = {back.get(k, k): v for k, v in res.bounds.items()}
        res.at_bounds = {back.get(k, k): v for k, v in res.at_bounds.items()}
        res.free_names = tuple(back.get(k, k) for k in res.free_names)
        for ru in res.runner_ups:
            ru["params"] = {back.get(k, k): v for k, v in ru["params"].items()}
        return res
    problem = _Problem(law, obj, fixed, bounds, allow_negative_tau)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    n_free_law = len([n for n in problem.free if n not in obj.extra_params])
    if y.size < n_free_law:
        raise FitError(f"{y.size} points are fewer than the {n_free_law} free parameters of law {law.name!r}")

    if not problem.free:
        value = float(problem.value(np.zeros(0), X, y, w))
        return FitResult(law, problem.law_params(problem.unpack(np.zeros(0))), value, obj.name, True,
                         "all parameters fixed: evaluated only", int(y.size), (), fixed)

    if law.linear_basis_fn is None:
        missing = [n for n in problem.free if n in ("E", "A", "B", "alpha", "beta") and n not in init]
        if missing:
            init = {**_csl_seed(law, X, y, w, obj, fixed), **init}

    Z, objs = grid_search(problem, X, y, w, grid_budget, init, seed, allow_negative_tau)
    finite = np.isfinite(objs)
    if not np.any(finite):
        raise FitError(f"law {law.name!r}: every grid candidate gives a non-finite objective")
    order = np.argsort(objs)
    order = order[np.isfinite(objs[order])]
    spread = np.ptp(Z[finite], axis=0)
    scale = np.where(spread > 0, spread, 1.0)
    starts = _distinct(Z, order, n_polish, scale, min_dist=0.08)

    if "sigma" in problem.free:
        j = problem.free.index("sigma")
        for i in starts:
            r, _ = problem.residuals(Z[i], X, y)
            Z[i, j] = math.log(obj.best_sigma(r, w))

    Xp, yp, wp = pad_points(X, y, w)
    candidates = [Z[i].copy() for i in starts]
    if obj.name in ("huber", "lsq") and len(candidates) > n_final:
        # Bring every start to its basin in one vectorised IRLS call, then polish only the
        # distinct basins with L-BFGS-B (few iterations from there).
        n_cand = len(candidates)
        # a fixed row count (n_polish) keeps one compilation per problem structure
        S = np.stack(candidates + [candidates[0]] * (max(n_polish, n_cand) - n_cand))
        Zl, _ = batched_lm(problem, S, X, y, np.tile(w, (S.shape[0], 1)), lm_iters)
        Zl = Zl[:n_cand]
        f_lm = np.array([float(problem.value(z, X, y, w)) for z in Zl])
        f_lm = np.where(np.isfinite(f_lm), f_lm, np.inf)
        candidates = []
        for i in np.argsort(f_lm):
            if len(candidates) >= n_final:
                break
            if all(np.max(np.abs(Zl[i] - c)) > 1e-2 for c in candidates):
                candidates.append(Zl[i])
    polished = []
    for z0 in candidates:
        z, v, ok, why = polish(problem, z0, Xp, yp, wp, gtol=gtol)
        polished.append((v, z, ok, why))
    polished.sort(key=lambda t: t[0])
    best_v, best_z, ok, why = polished[0]

    runner_ups = []
    basins = [best_z]
    for v, z, c, _ in polished[1:]:
        if all(np.max(np.abs(z - b)) > 1e-2 for b in basins):
            basins.append(z)
            vals = problem.unpack(z)
            runner_ups.append({"objective": float(v), "converged": bool(c),
                               "params": {k: float(vals[k]) for k in law.param_names}})
    values = problem.unpack(best_z)
    params = {k: float(values[k]) for k in law.param_names}
    extra = {k: float(values[k]) for k in obj.extra_params}
    at_bounds = _at_bounds(problem, best_z, y)
    if at_bounds:
        why += "; at or next to a bound (the data push towards it; not identified there): " + ", ".join(
            f"{k} at its {side} bound {problem.bounds_nat[k][0 if side == 'low' else 1]:g}"
            for k, side in at_bounds.items())
    return FitResult(law, params, best_v, obj.name, ok, why, int(y.size), problem.free, fixed, extra,
                     runner_ups[:n_runner_ups], int(Z.shape[0]), len(starts), at_bounds=at_bounds,
                     bounds=dict(problem.bounds_nat))


BOUND_RTOL_LOG = 0.01      # positive parameters (log space): within 1% of the log-range of a bound
BOUND_RTOL = 1e-3          # other parameters: within 0.1% of the range of a bound
NEGLIGIBLE_AMPLITUDE = 1e-3  # E below 0.1% of the smallest loss: effectively at its bound 0


# λ's low bound (0: repeated tokens worth fresh ones) is judged on its own scale: S_λ caps
# repetition at 1 + 1/λ epochs, so λ = 0.04 (25 epochs' worth) is a finding, not the bound; below
# 1e-3 (> 1000 epochs) it is indistinguishable from 0 for any run here [our choice].
LAMBDA_LOW_TOL = 1e-3


def near_bounds(names: Sequence[str], z: np.ndarray, z_bounds, y=None) -> dict[str, str]:
    """Free parameters at or next to a bound of the search: within BOUND_RTOL_LOG of the log-range
    for positive parameters (e.g. R_N = 9000 of [1e-3, 1e4]), within BOUND_RTOL of the range for
    the others (e.g. λ = 49.99 of [0, 50], τ = 0.01 of [0, 50]; λ ≤ LAMBDA_LOW_TOL at its low
    end); and an irreducible loss E below
    NEGLIGIBLE_AMPLITUDE × the smallest loss y (e.g. E = 1e-9 for losses ≈ 3: the fit pushes E
    to 0). Returns name → "low" / "high"."""
    out = {}
    for name, zi, (lo, hi) in zip(names, z, z_bounds):
        rtol = BOUND_RTOL_LOG if name in LOG_PARAMS else BOUND_RTOL
        width = (hi - lo) if lo is not None and hi is not None else max(1.0, abs(zi))
        low_tol = LAMBDA_LOW_TOL if name == "lambda" else rtol * width
        if lo is not None and zi <= lo + low_tol:
            out[name] = "low"
        elif hi is not None and zi >= hi - rtol * width:
            out[name] = "high"
        elif name == "E" and y is not None and math.exp(zi) < NEGLIGIBLE_AMPLITUDE * float(np.min(y)):
            out[name] = "low"
    return out


def _at_bounds(problem: _Problem, z: np.ndarray, y=None) -> dict[str, str]:
    return near_bounds(problem.free, z, problem.z_bounds, y)


def pad_points(X: Mapping[str, np.ndarray], y: np.ndarray, w: np.ndarray):
    """Pads points with zero-weight copies of the first one to the next power of two (≥ 32), so
    compiled objectives are reused across targets, splits and bootstrap sets."""
    n = y.size
    size = max(32, 2 ** int(math.ceil(math.log2(max(n, 1)))))
    if size == n:
        return X, y, w
    extra = size - n
    Xp = {k: np.concatenate([v, np.full(extra, v[0])]) for k, v in X.items()}
    return Xp, np.concatenate([y, np.full(extra, y[0])]), np.concatenate([w, np.zeros(extra)])


def _canonical(law: Law) -> tuple[Law, dict[str, str]]:
    """An ATLAS law with transfer languages renamed to x0, x1, … (and the name map)."""
    from atlas_t5x.scaling.laws import make_law

    transfer = law.option("transfer_langs", ())
    if law.name != "atlas" or not transfer or all(l == f"x{i}" for i, l in enumerate(transfer)):
        return law, {}
    placeholders = tuple(f"x{i}" for i in range(len(transfer)))
    canon = make_law("atlas", tied=law.tied, transfer_langs=placeholders,
                     with_other=law.option("with_other", False))
    mapping = {}
    for lang, ph in zip(transfer, placeholders):
        mapping[f"tau_{lang}"] = f"tau_{ph}"
        mapping[f"D_{lang}"] = f"D_{ph}"
        mapping[f"U_{lang}"] = f"U_{ph}"
    return canon, mapping


def _csl_seed(law: Law, X, y, w, obj: Objective, fixed: Mapping[str, float]) -> dict[str, float]:
    """Base-law starting values for laws without linear structure: a CSL fit on the same data."""
    from atlas_t5x.scaling.laws import make_law

    csl = make_law("csl", tied=law.tied)
    csl_fixed = {k: v for k, v in fixed.items() if k in csl.param_names}
    res = fit(csl, {"N": X["N"], "D": X["D"]}, y, obj.name, csl_fixed, weights=w, n_polish=3)
    seed = dict(res.params)
    if law.tied:
        seed.pop("beta", None)
    return seed


def evaluate(law: Law, params: Mapping[str, float], X: Mapping[str, Any], y,
             objective: str = "huber", extra: Mapping[str, float] | None = None) -> float:
    """The objective of fixed parameters on data (no fitting)."""
    obj = get_objective(objective)
    X, y = check_data(law, X, y)
    pred = np.asarray(law.predict(dict(params), X), np.float64)
    r = np.log(np.maximum(pred, 1e-300)) - np.log(y)
    return float(obj.value(r, np.ones_like(y), dict(extra or {})))


def r2_score(y, pred) -> float:
    """Coefficient of determination on raw loss (may be negative)."""
    y = np.asarray(y, float)
    pred = np.asarray(pred, float)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return float(1.0 - np.sum((y - pred) ** 2) / ss_tot) if ss_tot > 0 else float("nan")
