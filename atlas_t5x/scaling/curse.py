"""Curse of multilinguality (spec §1.6): fit L(K, N, D_t) and plan iso-loss growth in K.

    L(K, N, D_t) = L∞ + A·K^φ / N^α + B·K^ψ / D_t^β

K languages sampled uniformly, N parameters, D_t tokens of the evaluated language (nats/token).
The law is the FITTER's `curse` law (parameter names E = L∞, A, B, alpha, beta, phi, psi; inputs
N, D = D_t, K) fitted by its engine.

Iso-loss planning from K to r·K languages:
- compute-optimal closed form (each term keeps its value): N'/N = r^(φ/α), D_t'/D_t = r^(ψ/β),
  D_total'/D_total = r^(1+ψ/β), C'/C = r^(1+φ/α+ψ/β);
- the general iso-loss curve: with the baseline's reducible-loss shares w_N + w_D = 1,
  r^φ·w_N·s^(−α) + r^ψ·w_D·t^(−β) = 1 for N' = s·N, D_t' = t·D_t.
  Its least-compute point (min s·t) has r^φ·w_N·s^(−α) = β/(α+β): it coincides with the closed
  form exactly when the baseline itself is compute-optimal, w_N = β/(α+β).

The spec's table from the paper's constants (α = 0.11/0.243, β = 0.04/0.272, so φ/α = 0.243 and
ψ/β = −0.272 exactly): C'/C = r^(1 + 0.243 − 0.272) = r^0.971, i.e. 1.96, 3.84, 7.53, 14.76 for
r = 2, 4, 8, 16. The spec prints 7.52 and 14.7 and "C ∝ r^0.970": its compute column uses the
exponent 0.970 (8^0.970 = 7.52, 16^0.970 = 14.72), although its own parameter and token columns
(r^0.243, r^0.728) add to 0.971, and 14.72 itself is printed rounded to 14.7. The 0.064 gap at 16K
is that rounding, not a planner error (tests/test_curse.py checks the identity).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from atlas_t5x.scaling import curves as cv

# The paper's pooled exponents, and the α, β implied by its printed multipliers (spec §1.6).
PAPER_PHI = 0.11
PAPER_PSI = -0.04
PAPER_ALPHA = 0.11 / 0.243
PAPER_BETA = 0.04 / 0.272


class CurseError(ValueError):
    """Runs or parameters that cannot give a curse fit or plan."""


# ---------------------------------------------------------------------------------------------
# Data and fits


def curse_data(rows: Sequence[Mapping[str, Any]], loss_field: str = "loss",
               targets: Sequence[str] | None = None, points: str = "default") -> dict[str, np.ndarray]:
    """Points of from-scratch runs with uniform K-language mixtures, evaluated on a member language.

    `points`: the fitter's point set (`points.select_point_rows`; default: completed schedules —
    cooldown ends and final evaluations — only). Returns arrays N (params), D (= D_t, the target's
    own tokens), K, loss, `target` (str), `run` and `group` (trunk run). Points with D_t = 0 are
    dropped.
    """
    from atlas_t5x.scaling import points as data_lib

    infos = cv.run_summaries(rows)
    out: dict[str, list] = {"N": [], "D": [], "K": [], "loss": [], "target": [], "run": [], "group": []}
    for row in data_lib.select_point_rows(rows, points):
        info = infos[row["run"]]
        t = row["target"]
        if not (info.is_scratch and info.is_uniform and t in info.weights):
            continue
        if targets is not None and t not in targets:
            continue
        d_t = float(dict(row.get("tokens_by_lang", {})).get(t, 0))
        loss = float(row[loss_field])
        if d_t <= 0 or not math.isfinite(loss):
            continue
        out["N"].append(float(info.params))
        out["D"].append(d_t)
        out["K"].append(float(len(info.weights)))
        out["loss"].append(loss)
        out["target"].append(t)
        out["run"].append(row["run"])
        out["group"].append(row["group"])
    return {k: np.asarray(v) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class CurseFit:
    """A fitted curse law. `params`: E (= L∞), A, B, alpha, beta, phi, psi."""

    params: dict[str, float]
    n_points: int
    ks: tuple[int, ...]
    r2: float
    converged: bool
    scope: str                # "pooled" or a language code
    fit_result: Any = None    # the engine's FitResult

    def predict(self, K, N, D_t) -> np.ndarray:
        p = self.params
        K, N, D_t = (np.asarray(v, dtype=np.float64) for v in (K, N, D_t))
        return p["E"] + p["A"] * K ** p["phi"] / N ** p["alpha"] + p["B"] * K ** p["psi"] / D_t ** p["beta"]


def fit_curse(data: Mapping[str, np.ndarray], scope: str = "pooled", min_points: int = 8,
              **fit_kwargs) -> CurseFit:
    """Fits the curse law with the FITTER's engine (`engine.fit(LAWS['curse'], ...)`).

    Needs at least `min_points` points and two distinct K (else φ, ψ are not identified).
    `fit_kwargs` go to `engine.fit` (objective, fixed, grid_budget, seed, ...).
    """
    from atlas_t5x.scaling import engine
    from atlas_t5x.scaling.laws import LAWS

    n = int(np.asarray(data["loss"]).size)
    ks = tuple(sorted({int(k) for k in np.asarray(data["K"])}))
    if n < min_points:
        raise CurseError(f"{scope}: {n} uniform-K points, need at least {min_points}")
    if len(ks) < 2:
        raise CurseError(f"{scope}: runs cover K = {list(ks)} only; need at least two values of K")
    X = {"N": data["N"], "D": data["D"], "K": data["K"]}
    res = engine.fit(LAWS["curse"], X, data["loss"], **fit_kwargs)
    pred = res.predict(X)
    y = np.asarray(data["loss"], dtype=np.float64)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else math.nan
    params = {k: float(v) for k, v in res.params.items()}
    return CurseFit(params, n, ks, r2, bool(res.converged), scope, res)


def fit_curse_runs(rows: Sequence[Mapping[str, Any]], loss_field: str = "loss",
                   per_language: bool = True, points: str = "default", **fit_kwargs) -> dict[str, CurseFit | str]:
    """Pooled fit ("pooled") and one fit per language on the point set `points`; a scope that
    cannot be fitted maps to the reason (a string) instead of raising."""
    data = curse_data(rows, loss_field, points=points)
    out: dict[str, CurseFit | str] = {}
    scopes = [("pooled", np.ones(data["loss"].size, dtype=bool))]
    if per_language:
        scopes += [(t, data["target"] == t) for t in sorted(set(data["target"].tolist()))]
    for scope, mask in scopes:
        sub = {k: v[mask] for k, v in data.items()}
        try:
            out[scope] = fit_curse(sub, scope=scope, **fit_kwargs)
        except (CurseError, ValueError) as err:
            out[scope] = str(err)
    return out


# ---------------------------------------------------------------------------------------------
# Planning


@dataclasses.dataclass(frozen=True)
class IsoLossPlan:
    """Multipliers to keep the loss when going from K to r·K languages (compute-optimal form)."""

    r: float
    params_ratio: float         # N'/N
    target_tokens_ratio: float  # D_t'/D_t
    total_tokens_ratio: float   # D_total'/D_total
    compute_ratio: float        # C'/C
    warnings: tuple[str, ...] = ()   # why the plan should not be trusted (`plan_warnings`)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_warnings(r: float, phi: float, psi: float, alpha: float, beta: float, K: float | None = None,
                  fitted_ks: Sequence[float] | None = None) -> list[str]:
    """Reasons not to trust an iso-loss plan from K to r·K languages:
    |φ/α| > 1 (the model must grow faster than the number of languages, or shrink), |ψ/β| > 1
    (e.g. ψ/β < −1: more languages would need fewer total tokens, which no fitted curse explains:
    the fit does not identify ψ or β), or r·K (and K) outside the K range the law was fitted on."""
    out = []
    if abs(phi / alpha) > 1:
        out.append(f"|φ/α| = |{phi:.3g}/{alpha:.3g}| = {abs(phi / alpha):.3g} > 1: parameters would scale "
                   f"as r^{phi / alpha:.3g}; φ or α is not identified by these runs")
    if abs(psi / beta) > 1:
        out.append(f"|ψ/β| = |{psi:.3g}/{beta:.3g}| = {abs(psi / beta):.3g} > 1: tokens per language would "
                   f"scale as r^{psi / beta:.3g} (total tokens r^{1 + psi / beta:.3g}); ψ or β is not "
                   "identified by these runs")
    if K is not None and fitted_ks:
        lo, hi = min(fitted_ks), max(fitted_ks)
        for label, k in (("K", K), ("r·K", r * K)):
            if not lo <= k <= hi:
                out.append(f"{label} = {k:g} lies outside the fitted K range {lo:g}–{hi:g}: extrapolation")
    return out


def _check_exponents(alpha: float, beta: float) -> None:
    if not (alpha > 0 and beta > 0):
        raise CurseError(f"alpha and beta must be > 0 (got alpha={alpha!r}, beta={beta!r})")


def iso_loss_plan(r: float, phi: float, psi: float, alpha: float, beta: float, K: float | None = None,
                  fitted_ks: Sequence[float] | None = None, refuse: bool = False) -> IsoLossPlan:
    """The closed form: each loss term keeps its value when K → r·K.

    N'/N = r^(φ/α), D_t'/D_t = r^(ψ/β), D_total'/D_total = r^(1+ψ/β), C'/C = r^(1+φ/α+ψ/β).
    The plan carries `plan_warnings` (exponent ratios beyond ±1, r·K outside the fitted K range
    when K and fitted_ks are given); with `refuse` they raise CurseError instead.
    """
    _check_exponents(alpha, beta)
    if not r > 0:
        raise CurseError(f"language multiplier r must be > 0, got {r!r}")
    warnings = plan_warnings(r, phi, psi, alpha, beta, K, fitted_ks)
    if refuse and warnings:
        raise CurseError(f"no iso-loss plan for r = {r:g}: " + "; ".join(warnings))
    n_ratio = r ** (phi / alpha)
    dt_ratio = r ** (psi / beta)
    return IsoLossPlan(float(r), n_ratio, dt_ratio, r * dt_ratio, r * n_ratio * dt_ratio, tuple(warnings))


def paper_table(rs: Sequence[float] = (2, 4, 8, 16)) -> list[IsoLossPlan]:
    """The spec's table from the paper's exponents (φ = 0.11, ψ = −0.04, α ≈ 0.453, β ≈ 0.147)."""
    return [iso_loss_plan(r, PAPER_PHI, PAPER_PSI, PAPER_ALPHA, PAPER_BETA) for r in rs]


def term_shares(params: Mapping[str, float], K: float, N: float, D_t: float) -> tuple[float, float]:
    """(w_N, w_D): shares of the baseline's reducible loss in the N and D terms (sum to 1)."""
    p = params
    n_term = p["A"] * K ** p["phi"] * N ** (-p["alpha"])
    d_term = p["B"] * K ** p["psi"] * D_t ** (-p["beta"])
    total = n_term + d_term
    if not total > 0:
        raise CurseError("the baseline's reducible loss is zero: shares are undefined")
    return n_term / total, d_term / total


def iso_loss_curve(r: float, w_N: float, phi: float, psi: float, alpha: float, beta: float,
                   s: Sequence[float] | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The general iso-loss curve at r·K: for each parameter multiplier s, the target-token
    multiplier t solving r^φ·w_N·s^(−α) + r^ψ·w_D·t^(−β) = 1 (w_D = 1 − w_N).

    Returns s, t, total-token multiplier r·t and compute multiplier r·s·t. Multipliers s too small
    to keep the loss (r^φ·w_N·s^(−α) ≥ 1) are dropped.
    """
    _check_exponents(alpha, beta)
    if not 0 <= w_N <= 1:
        raise CurseError(f"w_N must lie in [0, 1], got {w_N!r}")
    w_D = 1.0 - w_N
    if s is None:
        s_min = (r ** phi * w_N) ** (1.0 / alpha) if w_N > 0 else 1e-3
        s = np.geomspace(s_min * 1.001, max(s_min * 1.001, 1.0) * 100.0, 400)
    s = np.asarray(s, dtype=np.float64)
    left = 1.0 - r ** phi * w_N * s ** (-alpha)
    ok = left > 0
    s = s[ok]
    t = (left[ok] / (r ** psi * w_D)) ** (-1.0 / beta) if w_D > 0 else np.ones_like(s)
    return {"s": s, "t": t, "total_tokens": r * t, "compute": r * s * t}


def min_compute_on_curve(r: float, w_N: float, phi: float, psi: float, alpha: float,
                         beta: float) -> dict[str, float]:
    """The point of the general iso-loss curve with the least compute C'/C = r·s·t (numerical)."""
    from scipy import optimize

    s_min = (r ** phi * w_N) ** (1.0 / alpha)

    def log_compute(log_s):
        c = iso_loss_curve(r, w_N, phi, psi, alpha, beta, s=[math.exp(log_s)])["compute"]
        return math.log(c[0]) if c.size else 1e9

    res = optimize.minimize_scalar(log_compute, bounds=(math.log(s_min) + 1e-9, math.log(s_min) + 20),
                                   method="bounded", options={"xatol": 1e-10})
    point = iso_loss_curve(r, w_N, phi, psi, alpha, beta, s=[math.exp(res.x)])
    return {k: float(v[0]) for k, v in point.items()}


def compute_optimal_share(alpha: float, beta: float) -> float:
    """w_N = β/(α+β): the N term's share of the reducible loss in a compute-optimal baseline."""
    _check_exponents(alpha, beta)
    return beta / (alpha + beta)


def plot_frontier(path, params: Mapping[str, float] | None = None, rs: Sequence[float] = (2, 4, 8, 16),
                  w_N: float | None = None, K: float = 1, N: float | None = None,
                  D_t: float | None = None) -> None:
    """Iso-loss frontier PNG: for each r, the (N'/N, D_total'/D_total) pairs keeping the baseline's
    loss at r·K languages, with the closed-form point (each term keeps its value, filled dot) and
    the least-compute point of the curve (open circle; the same point when w_N = β/(α+β)).

    `params` default to the paper's exponents. w_N: given, else from `term_shares` with fitted
    params and a baseline (K, N, D_t), else β/(α+β), a compute-optimal baseline [our choice].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atlas_t5x import logio

    p = dict(params or {"phi": PAPER_PHI, "psi": PAPER_PSI, "alpha": PAPER_ALPHA, "beta": PAPER_BETA})
    if w_N is None:
        if params and N and D_t and "A" in p and "B" in p:
            w_N, how = term_shares(p, K, N, D_t)[0], f"baseline K={K:g}, N={N:.3g}, D_t={D_t:.3g}"
        else:
            w_N, how = compute_optimal_share(p["alpha"], p["beta"]), "compute-optimal baseline"
    else:
        how = "given"
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    points = []
    for r in rs:
        plan = iso_loss_plan(r, p["phi"], p["psi"], p["alpha"], p["beta"])
        best = min_compute_on_curve(r, w_N, p["phi"], p["psi"], p["alpha"], p["beta"])
        s_lo = (r ** p["phi"] * w_N) ** (1.0 / p["alpha"]) if w_N > 0 else 1e-3
        s_grid = np.geomspace(max(s_lo * 1.0005, min(plan.params_ratio, best["s"]) / 4),
                              max(plan.params_ratio, best["s"]) * 8, 400)
        c = iso_loss_curve(r, w_N, p["phi"], p["psi"], p["alpha"], p["beta"], s=s_grid)
        line, = ax.plot(c["s"], c["total_tokens"],
                        label=f"{r:g}K: N x{plan.params_ratio:.2f}, D x{plan.total_tokens_ratio:.2f}, "
                              f"C x{plan.compute_ratio:.2f}")
        ax.plot(plan.params_ratio, plan.total_tokens_ratio, "o", color=line.get_color())
        ax.plot(best["s"], best["total_tokens"], "o", mfc="none", ms=10, color=line.get_color())
        points += [plan.total_tokens_ratio, best["total_tokens"]]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(min(points) / 4, max(points) * 4)
    ax.axhline(1.0, color="gray", lw=0.6)
    ax.axvline(1.0, color="gray", lw=0.6)
    ax.set_xlabel("parameters N'/N (× the K-language baseline)")
    ax.set_ylabel("total training tokens D'/D (× baseline)")
    ax.set_title(f"Iso-loss frontier from K to r·K languages (phi={p['phi']:.3g}, psi={p['psi']:.3g}, "
                 f"alpha={p['alpha']:.3g}, beta={p['beta']:.3g})\n"
                 f"N-term share w_N = {w_N:.2f} ({how}); dot: both terms keep their value; "
                 "circle: least compute", fontsize=7.5)
    ax.legend(fontsize=7, title="closed form", title_fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    logio.write_png(path, fig)
