"""The compute-optimal frontier three ways: N*(C) ∝ C^a and D*(C) ∝ C^b, each with an interval.

Approaches (Hoffmann et al. 2022 numbering):
  isoflop     (approach 2) points grouped by FLOP budget C; each budget's profile of log-loss over
              log N is interpolated (Akima, `scipy.interpolate.Akima1DInterpolator`, on a fine grid,
              so each minimum is read from its neighbouring sizes only) and its minimum N*(C) read
              off; log N* is regressed on log C, weighted by each budget's uncertainty in log N*.
              N* per budget is the median of the argmins over loss draws perturbed by the points'
              noise σ (nats; estimated from the profiles unless given), the "noise-and-interpolate"
              estimate of Porian et al. 2024; its spread (floored at a third of the budget's size
              spacing) gives the weight. A budget whose minimum sits at its smallest or largest
              size in half or more of the draws cannot locate N* and is dropped (flagged), as is
              one with fewer than 3 sizes.
  envelope    (approach 1) the lower envelope of loss over C across runs (intermediate points,
              e.g. `--points all`, welcome: each size's curve is read in log-log at common
              budgets), and the N on the envelope at each budget; envelope points won by the
              smallest or largest size are dropped. isoflop reads completed schedules only.
  parametric  (approach 3) the fitted law's implied exponents a = β/(α+β), b = α/(α+β)
              (Chinchilla form), intervals from the fit's bootstrap samples (`--bootstrap`).
Every approach reports {"a", "a_ci": [lo, hi], "b", "b_ci", "n_budgets"} (95% percentile intervals).
isoflop and envelope intervals come from a bootstrap over budgets (resampled with replacement)
and points (each budget's losses redrawn with the noise σ for isoflop; runs resampled within each
budget for envelope). `disagreements` names pairs of approaches whose intervals do not overlap.

Budgets: points whose C lie within `C_TOLERANCE` of each other form one budget (an isoFLOP
sweep, or a `C` column). When that gives fewer than 3 budgets of 3+ sizes, or a run has points
at several C inside one budget (a training curve), each size's points (a WSD trunk's cooldown
ends, or completed runs of that size) are interpolated (log-loss linear in log C) at common
budgets ×2 apart (`interpolated_points`), as isoFLOP studies read budgets off training curves.
Several points of one size in one budget (other hyperparameters), or sizes within 1% of each
other: the lowest loss is kept.

Units: N parameters, D tokens, C FLOPs (6·N·D unless a C column is given), loss nats/token.
Nothing here imports the trainer, Flax or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

APPROACHES = ("parametric", "isoflop", "envelope")
APPROACH_CHOICES = APPROACHES + ("all",)
C_TOLERANCE = 0.10        # [our choice, as Porian et al.] points within ±10% in C share a budget
MIN_SIZES = 3             # a profile needs 3 sizes to have an interior minimum
SIZE_TOLERANCE = 0.01     # [our choice] sizes within 1% of each other are one size
MIN_BUDGETS = 3           # a power law through fewer budgets has no interval
GRID_PER_INTERVAL = 25    # fine-grid points per gap between sizes (argmin resolution)
MIN_SD_FRACTION = 0.33    # [Porian et al.] floor of sd(log N*) as a fraction of the size spacing
N_DRAWS = 1000            # noise draws per budget (as Porian et al.)
N_BOOT = 400              # bootstrap replicates of the power-law fit
CONFIDENCE = 0.95


class FrontierError(ValueError):
    """The points cannot give this approach's frontier (names the reason); the CLI exits 2."""


@dataclasses.dataclass
class Budget:
    """One isoFLOP profile: its budget C (FLOPs), sizes N (parameters), tokens D, losses (nats)."""

    C: float
    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    runs: list[str]
    # filled by `locate`
    N_star: float = math.nan
    D_star: float = math.nan
    loss_star: float = math.nan
    sd_log_N: float = math.nan
    draws: np.ndarray | None = None   # log N* of each noise draw (NaN: at the edge)
    status: str = ""                   # "" = used; else why it is dropped
    note: str = ""                     # a used budget's caveat

    def to_dict(self) -> dict[str, Any]:
        return {"C": self.C, "n_sizes": int(len(self.N)), "N_range": [float(self.N.min()), float(self.N.max())],
                "N_star": self.N_star, "D_star": self.D_star, "loss_star": self.loss_star,
                "sd_log_N_star": self.sd_log_N, "used": not self.status, "dropped": self.status or None,
                "note": self.note or None}


@dataclasses.dataclass
class Frontier:
    """One approach's exponents: N* ∝ C^a, D* ∝ C^b, 95% intervals, and what went into them."""

    approach: str
    a: float
    a_ci: tuple[float, float] | None
    b: float
    b_ci: tuple[float, float] | None
    n_budgets: int | None
    notes: list[str] = dataclasses.field(default_factory=list)
    budgets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"a": self.a, "a_ci": list(self.a_ci) if self.a_ci else None,
               "b": self.b, "b_ci": list(self.b_ci) if self.b_ci else None,
               "n_budgets": self.n_budgets, "notes": list(self.notes)}
        if self.budgets:
            out["budgets"] = self.budgets
        out.update(self.extra)
        return out


# -------------------------------------------------------------------------------------------------
# Budgets


def _cluster(logc: np.ndarray, tolerance: float) -> np.ndarray:
    """Labels of single-linkage clusters of sorted log C whose span stays within ±tolerance."""
    order = np.argsort(logc, kind="stable")
    labels = np.empty(len(logc), int)
    width = 2.0 * math.log1p(tolerance)
    label, start = -1, -math.inf
    for i in order:
        if logc[i] - start > width:
            label += 1
            start = logc[i]
        labels[i] = label
    return labels


def _check_columns(points: pd.DataFrame) -> None:
    for col in ("N", "D", "C", "loss"):
        if col not in points.columns:
            raise FrontierError(f"the points table has no column {col!r}")
        values = points[col].to_numpy(float)
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise FrontierError(f"column {col!r} must be positive and finite; row {i + 1} has {values[i]!r}")


def _group_col(points: pd.DataFrame) -> np.ndarray:
    for col in ("group", "run"):
        if col in points.columns:
            return points[col].astype(str).to_numpy()
    return np.array([f"row{i}" for i in range(len(points))])


def _size_labels(N: np.ndarray) -> np.ndarray:
    """Labels of sizes: N within SIZE_TOLERANCE (relative) of the previous size are one size
    (reconstructed tables carry one model's N with small rounding differences; two x values that
    close would make the interpolant's slopes blow up)."""
    order = np.argsort(N, kind="stable")
    labels = np.empty(len(N), int)
    label, start = -1, -math.inf
    for i in order:
        if math.log(N[i]) - start > math.log1p(SIZE_TOLERANCE):
            label += 1
            start = math.log(N[i])
        labels[i] = label
    return labels


def _make_budgets(points: pd.DataFrame, labels: np.ndarray) -> list[Budget]:
    out = []
    groups = _group_col(points)
    for lab in np.unique(labels):
        sub = points[labels == lab]
        g = groups[labels == lab]
        # several points of one size (other hyperparameters, a run's intermediate points, or sizes
        # within SIZE_TOLERANCE of each other): the best
        size = _size_labels(sub["N"].to_numpy(float))
        best = (sub.assign(_g=g, _size=size).sort_values("loss", kind="stable")
                .drop_duplicates("_size").sort_values("N"))
        out.append(Budget(C=float(np.exp(np.mean(np.log(sub["C"].to_numpy(float))))),
                          N=best["N"].to_numpy(float), D=best["D"].to_numpy(float),
                          loss=best["loss"].to_numpy(float), runs=list(best["_g"])))
    return sorted(out, key=lambda b: b.C)


def interpolated_points(points: pd.DataFrame, budgets: Sequence[float] | None = None,
                        ratio: float = 2.0) -> pd.DataFrame:
    """Each size's loss at common budgets: log-loss linear in log C between that size's points
    (WSD cooldown ends of one trunk, a run's completed evaluations, or completed runs of one size at
    several budgets; the lowest loss where several share a C), no extrapolation.

    `budgets` (FLOPs): default a geometric grid with factor `ratio` anchored at the largest C
    (never finer than that: budgets closer together than the points would repeat them).
    Returns rows run, group, N, C, D, loss (D = C/(6N)).
    """
    # one curve per size: a trunk's cooldown ends, or completed runs of one size at several budgets
    # (a plain table without a run column) — each point is a completed schedule
    sizes = _size_labels(points["N"].to_numpy(float))
    logc_all = np.log(points["C"].to_numpy(float))
    if budgets is None:
        lo, hi = logc_all.min(), logc_all.max()
        step = math.log(ratio)
        budgets = np.exp((hi - step * np.arange(int((hi - lo) / step + 1e-9) + 1))[::-1])
    rows = []
    for label in np.unique(sizes):
        sub = points[sizes == label]
        n = float(np.exp(np.mean(np.log(sub["N"].to_numpy(float)))))
        names = np.unique(_group_col(sub))
        g = str(names[0]) if len(names) == 1 else f"N{n:.4g}"   # one trunk, or several runs of one size
        # one loss per C (the lowest), then interpolate in log-log
        sub = sub.sort_values("loss", kind="stable").drop_duplicates("C").sort_values("C")
        x = np.log(sub["C"].to_numpy(float))
        y = np.log(sub["loss"].to_numpy(float))
        for c in budgets:
            lc = math.log(c)
            if len(x) >= 2 and x[0] - 1e-9 <= lc <= x[-1] + 1e-9:
                rows.append({"run": g, "group": g, "N": n, "C": float(c), "D": float(c) / (6.0 * n),
                             "loss": float(np.exp(np.interp(lc, x, y)))})
            elif len(x) == 1 and abs(x[0] - lc) <= math.log1p(C_TOLERANCE):
                rows.append({"run": g, "group": g, "N": n, "C": float(c), "D": float(c) / (6.0 * n),
                             "loss": float(np.exp(y[0]))})
    return pd.DataFrame(rows, columns=["run", "group", "N", "C", "D", "loss"])


def make_budgets(points: pd.DataFrame, tolerance: float = C_TOLERANCE) -> tuple[list[Budget], str]:
    """(budgets, how they were formed: "aligned" or "interpolated"); see the module docstring."""
    _check_columns(points)
    logc = np.log(points["C"].to_numpy(float))
    labels = _cluster(logc, tolerance)
    aligned = _make_budgets(points, labels)
    # a run with two different C in one budget is a training curve, not an isoFLOP point
    spread = pd.DataFrame({"g": _group_col(points), "lab": labels, "c": np.round(logc, 9)})
    curves = bool((spread.groupby(["g", "lab"])["c"].nunique() > 1).any())
    if not curves and sum(len(b.N) >= MIN_SIZES for b in aligned) >= MIN_BUDGETS:
        return aligned, "aligned"
    interp = interpolated_points(points)
    if len(interp):
        budgets = _make_budgets(interp, _cluster(np.log(interp["C"].to_numpy(float)), tolerance))
        def score(bs):
            return sum(len(b.N) >= MIN_SIZES for b in bs), max((len(b.N) for b in bs), default=0)

        if curves or score(budgets) >= score(aligned):
            return budgets, "interpolated"
    return aligned, "aligned"


# -------------------------------------------------------------------------------------------------
# isoFLOP profiles (approach 2)


def estimate_noise(budgets: Sequence[Budget]) -> float:
    """The points' loss noise σ (nats): the scatter of each budget's losses about cubics in log N
    through every window of 5 neighbouring sizes (quadratics through 4 when no budget has 5),
    pooled by the median. A cubic over 5 sizes follows an asymmetric profile closely, so the
    residual is noise rather than misfit. NaN when no budget has 4 sizes."""
    from scipy.stats import chi2

    for width, degree in ((5, 3), (4, 2)):
        ratios = []
        for b in budgets:
            x, y = np.log(b.N), b.loss
            for i in range(len(x) - width + 1):
                xs, ys = x[i:i + width] - x[i:i + width].mean(), y[i:i + width]
                rss = float(np.sum((ys - np.polyval(np.polyfit(xs, ys, degree), xs)) ** 2))
                ratios.append(rss / (width - degree - 1))
        if ratios:
            # the median of σ²·χ²_k/k is σ²·median(χ²_k)/k
            k = width - degree - 1
            return float(math.sqrt(np.median(ratios) / (chi2.median(k) / k)))
    return math.nan


def _argmin_log_n(x: np.ndarray, logy: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the fine-grid minimum of the Akima interpolant of each column of logy (n, k)."""
    values = Akima1DInterpolator(x, logy, axis=0)(grid)
    return np.argmin(values, axis=0), values


def locate(budget: Budget, sigma: float, rng: np.random.Generator, n_draws: int = N_DRAWS) -> Budget:
    """Sets the budget's N*, D*, loss*, sd(log N*) and noise draws, or `status` when dropped."""
    n = len(budget.N)
    if n < MIN_SIZES:
        budget.status = f"only {n} size(s); a profile needs {MIN_SIZES}"
        return budget
    x = np.log(budget.N)
    m = (n - 1) * GRID_PER_INTERVAL
    grid = np.linspace(x[0], x[-1], m)
    i0 = int(_argmin_log_n(x, np.log(budget.loss)[:, None], grid)[0][0])
    noisy = budget.loss[:, None] + sigma * rng.standard_normal((n, n_draws))
    noisy = np.maximum(noisy, 1e-12)
    idx, vals = _argmin_log_n(x, np.log(noisy), grid)
    inside = (idx > 0) & (idx < m - 1)
    draws = np.where(inside, grid[idx], np.nan)
    budget.draws = draws
    # As the published method: a budget counts when at least half of the noise draws put its minimum
    # inside the sizes (with σ = 0: when the profile's own minimum is inside)
    if inside.sum() < n_draws / 2:
        low = int(np.sum(idx == 0)) >= int(np.sum(idx == m - 1))
        side, edge_n = ("smallest", budget.N[0]) if low else ("largest", budget.N[-1])
        budget.status = (f"minimum at the {side} size (N = {edge_n:.3g}) in {100 * (1 - inside.mean()):.0f}% "
                         "of noise draws: the profile does not bracket N*")
        return budget
    if i0 in (0, m - 1):
        budget.note = (f"the profile's own minimum is at its {'smallest' if i0 == 0 else 'largest'} size; kept: "
                       f"{100 * inside.mean():.0f}% of noise draws put it inside")
    log_star = float(np.nanmedian(draws))
    sd = float(np.nanstd(draws))
    spacing = (x[-1] - x[0]) / (n - 1)
    budget.sd_log_N = max(sd, MIN_SD_FRACTION * spacing) * (n_draws / inside.sum())
    budget.N_star = float(math.exp(log_star))
    budget.loss_star = float(np.exp(np.nanmedian(np.where(inside, vals[idx, np.arange(n_draws)], np.nan))))
    budget.D_star = float(math.exp(np.interp(log_star, x, np.log(budget.D))))
    return budget


def _wls(logc: np.ndarray, logn: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the weighted least-squares line logn ≈ slope·logc + intercept."""
    coef = np.polyfit(logc, logn, 1, w=np.sqrt(w))
    return float(coef[0]), float(coef[1])


def _interval(samples: np.ndarray) -> tuple[float, float] | None:
    samples = samples[np.isfinite(samples)]
    if len(samples) < 20:
        return None
    q = (1 - CONFIDENCE) / 2
    return float(np.quantile(samples, q)), float(np.quantile(samples, 1 - q))


def _b_from(logc: np.ndarray, logd: np.ndarray, w: np.ndarray) -> float:
    return _wls(logc, logd, w)[0]


def isoflop_frontier(points: pd.DataFrame, sigma: float | None = None, seed: int = 0,
                     n_draws: int = N_DRAWS, n_boot: int = N_BOOT, tolerance: float = C_TOLERANCE) -> Frontier:
    """Approach 2 on a points table (columns N, D, C, loss, and run or group); FrontierError when
    fewer than `MIN_BUDGETS` budgets locate their minimum."""
    budgets, how = make_budgets(points, tolerance)
    notes = []
    if how == "interpolated":
        notes.append("budgets read off each run's curve (log-loss interpolated in log C between its points)")
    if sigma is None:
        sigma = estimate_noise([b for b in budgets if len(b.N) >= MIN_SIZES])
        if not math.isfinite(sigma):
            sigma = 0.0
            notes.append("noise σ not estimable (no budget with 4+ sizes): N* from the interpolated profile alone")
        sigma_source = "estimated from the profiles"
    else:
        sigma_source = "given"
    rng = np.random.default_rng(seed)
    for b in budgets:
        locate(b, sigma, rng, n_draws)
    used = [b for b in budgets if not b.status]
    dropped = [b for b in budgets if b.status]
    for b in dropped:
        notes.append(f"budget C = {b.C:.3g}: dropped ({b.status})")
    notes.extend(f"budget C = {b.C:.3g}: {b.note}" for b in used if b.note)
    if len(used) < MIN_BUDGETS:
        raise FrontierError(
            f"isoflop: {len(used)} budget(s) locate their minimum, need {MIN_BUDGETS} "
            f"({len(budgets)} budget(s) from {len(points)} point(s); "
            + ("; ".join(f"C = {b.C:.3g}: {b.status}" for b in dropped[:6]) or "no budget dropped")
            + (f"; and {len(dropped) - 6} more" if len(dropped) > 6 else "") + ")")
    logc = np.log([b.C for b in used])
    logn = np.log([b.N_star for b in used])
    logd = np.log([b.D_star for b in used])
    w = 1.0 / np.array([b.sd_log_N for b in used]) ** 2
    a, coef = _wls(logc, logn, w)
    b_exp = _b_from(logc, logd, w)
    # bootstrap: budgets resampled with replacement, each budget's N* from one noise draw
    boot_rng = np.random.default_rng(seed + 1)
    draws = np.stack([b.draws for b in used])          # (budgets, n_draws), NaN at edges
    d_offset = logd - (logc - logn)                    # log D* - log(C/N*): the profile's D/N relation
    a_s, b_s = [], []
    k = len(used)
    for r in range(n_boot):
        pick = boot_rng.integers(0, k, k)
        if len(np.unique(logc[pick])) < 2:
            continue
        col = boot_rng.integers(0, draws.shape[1], k)
        ln = draws[pick, col]
        ok = np.isfinite(ln)
        if ok.sum() < 2 or len(np.unique(logc[pick][ok])) < 2:
            continue
        a_s.append(_wls(logc[pick][ok], ln[ok], w[pick][ok])[0])
        b_s.append(_wls(logc[pick][ok], (logc[pick] - ln + d_offset[pick])[ok], w[pick][ok])[0])
    return Frontier(
        "isoflop", a, _interval(np.array(a_s)), b_exp, _interval(np.array(b_s)), len(used), notes,
        [bb.to_dict() for bb in budgets],
        {"coef_N": float(math.exp(coef)), "noise_sigma": sigma, "noise_sigma_source": sigma_source,
         "budgets_from": how, "n_boot": len(a_s)})


# -------------------------------------------------------------------------------------------------
# Envelope (approach 1)


def envelope_frontier(points: pd.DataFrame, seed: int = 0, n_boot: int = N_BOOT,
                      tolerance: float = C_TOLERANCE) -> Frontier:
    """Approach 1: per budget, the size of the lowest loss (after reading runs at common budgets
    as `make_budgets` does); envelope points won by a budget's smallest or largest size dropped."""
    budgets, how = make_budgets(points, tolerance)
    notes = [] if how == "aligned" else ["budgets read off each run's curve (log-loss interpolated in log C)"]
    rows = []
    for b in budgets:
        if len(b.N) < MIN_SIZES:
            notes.append(f"budget C = {b.C:.3g}: dropped (only {len(b.N)} size(s))")
            continue
        i = int(np.argmin(b.loss))
        if i in (0, len(b.N) - 1):
            notes.append(f"budget C = {b.C:.3g}: dropped (lowest loss at the "
                         f"{'smallest' if i == 0 else 'largest'} size)")
            continue
        rows.append(b)
    if len(rows) < MIN_BUDGETS or len({round(float(np.log(b.N[np.argmin(b.loss)])), 9) for b in rows}) < 2:
        raise FrontierError(f"envelope: {len(rows)} budget(s) with an interior lowest loss, need "
                            f"{MIN_BUDGETS} over at least two sizes")
    logc = np.log([b.C for b in rows])
    logn = np.log([b.N[np.argmin(b.loss)] for b in rows])
    logd = np.log([b.D[np.argmin(b.loss)] for b in rows])
    ones = np.ones(len(rows))
    a = _wls(logc, logn, ones)[0]
    b_exp = _wls(logc, logd, ones)[0]
    rng = np.random.default_rng(seed + 2)
    a_s, b_s = [], []
    for _ in range(n_boot):
        pick = rng.integers(0, len(rows), len(rows))
        ln, ld = [], []
        for j in pick:
            bb = rows[j]
            sel = np.unique(rng.integers(0, len(bb.N), len(bb.N)))   # the budget's runs, resampled
            i = sel[int(np.argmin(bb.loss[sel]))]
            ln.append(math.log(bb.N[i]))
            ld.append(math.log(bb.D[i]))
        if len(np.unique(logc[pick])) < 2:
            continue
        a_s.append(_wls(logc[pick], np.array(ln), ones)[0])
        b_s.append(_wls(logc[pick], np.array(ld), ones)[0])
    env = [{"C": b.C, "N": float(b.N[np.argmin(b.loss)]), "loss": float(b.loss.min())} for b in rows]
    return Frontier("envelope", a, _interval(np.array(a_s)), b_exp, _interval(np.array(b_s)), len(rows), notes,
                    extra={"envelope": env, "budgets_from": how})


# -------------------------------------------------------------------------------------------------
# Parametric law (approach 3)


def parametric_frontier(params: Mapping[str, float], samples: Sequence[Mapping[str, float]] = (),
                        tied: bool = False) -> Frontier:
    """Approach 3: a = β/(α+β), b = α/(α+β) of a fitted law with exponents alpha (N) and beta
    (D; = alpha when tied); intervals from bootstrap parameter samples (none without samples)."""
    if "alpha" not in params:
        raise FrontierError("parametric: the law has no exponent alpha (no N term)")
    alpha = float(params["alpha"])
    beta = float(params.get("beta", alpha))
    if not (alpha > 0 and beta > 0):
        raise FrontierError(f"parametric: exponents must be positive (alpha={alpha:g}, beta={beta:g})")
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    notes = []
    if tied:
        notes.append("tied exponents (alpha = beta): a = b = 0.5 by construction, not estimated")
    a_s = np.array([float(s.get("beta", s["alpha"])) / (float(s["alpha"]) + float(s.get("beta", s["alpha"])))
                    for s in samples if float(s.get("alpha", 0)) > 0 and float(s.get("beta", s.get("alpha", 0))) > 0])
    a_ci = _interval(a_s) if len(a_s) else None
    if not len(samples):
        notes.append("no interval: fit with --bootstrap K for one")
    elif a_ci is None:
        notes.append(f"no interval: {len(a_s)} usable bootstrap sample(s)")
    b_ci = (1.0 - a_ci[1], 1.0 - a_ci[0]) if a_ci else None
    return Frontier("parametric", a, a_ci, b, b_ci, None, notes,
                    extra={"alpha": alpha, "beta": beta, "tied": bool(tied), "n_samples": int(len(a_s))})


# -------------------------------------------------------------------------------------------------
# Side by side


def disagreements(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Pairs of approaches whose 95% intervals of a do not overlap, as readable lines."""
    out = []
    names = [n for n in APPROACHES if n in results and results[n].get("a_ci")]
    for i, p in enumerate(names):
        for q in names[i + 1:]:
            lo1, hi1 = results[p]["a_ci"]
            lo2, hi2 = results[q]["a_ci"]
            if hi1 < lo2 or hi2 < lo1:
                out.append(f"{p} a = {results[p]['a']:.3f} [{lo1:.3f}, {hi1:.3f}] and {q} a = "
                           f"{results[q]['a']:.3f} [{lo2:.3f}, {hi2:.3f}]: intervals do not overlap")
    return out


def approaches_for(choice: str) -> tuple[str, ...]:
    """The approaches `--approach choice` runs."""
    if choice not in APPROACH_CHOICES:
        raise FrontierError(f"unknown approach {choice!r}; choose one of {', '.join(APPROACH_CHOICES)}")
    return APPROACHES if choice == "all" else (choice,)


def frontier_points(points: pd.DataFrame, completed_only: bool = True) -> tuple[pd.DataFrame, str]:
    """(the points of one target's frontier, a note on the choice, "" when all are used).

    The frontier is a property of one training recipe: runs trained on the target alone
    (`points.monolingual_points`) when there are any, else every run with target tokens (D > 0);
    of logged points only completed schedules (`schema.END_PHASES`) when the table holds others,
    unless `completed_only` is False (the envelope reads intermediate points too).
    """
    from atlas_t5x import schema
    from atlas_t5x.scaling import points as points_lib

    notes = []
    if completed_only and "phase" in points.columns:
        ends = points["phase"].isin(schema.END_PHASES).to_numpy()
        if ends.any() and not ends.all():
            # a stable or mid-decay loss is not the loss of a completed schedule at that budget
            points = points[ends].reset_index(drop=True)
            notes.append("completed schedules only (cooldown ends and final evaluations)")
    trained = points[points["D"] > 0] if "D" in points.columns else points
    if "weights" in trained.columns and "mixture" in trained.columns and len(trained):
        mono = points_lib.monolingual_points(trained.reset_index(drop=True))
        if len(mono) and len(mono) < len(trained):
            return mono, "; ".join(notes + [f"runs trained on the target alone ({len(mono)} of {len(points)} points)"])
    if len(trained) < len(points):
        notes.append(f"runs with target tokens ({len(trained)} of {len(points)} points)")
    return trained.reset_index(drop=True), "; ".join(notes)


def compute_optimal(points: pd.DataFrame, approaches: Sequence[str], params: Mapping[str, float] | None = None,
                    samples: Sequence[Mapping[str, float]] = (), tied: bool = False, seed: int = 0,
                    strict: bool = True) -> dict[str, Any]:
    """{approach: Frontier.to_dict()} for one target's points (and fitted parameters for
    parametric), plus "disagreements" when several approaches run. `strict`: an approach that
    cannot be computed raises FrontierError; otherwise it is recorded as {"error": reason}."""
    out: dict[str, Any] = {}
    chosen = {name: frontier_points(points, completed_only=name == "isoflop")
              for name in approaches if name in ("isoflop", "envelope")}
    for name in approaches:
        try:
            if name == "parametric":
                if params is None:
                    raise FrontierError("parametric: no fitted law")
                res = parametric_frontier(params, samples, tied)
            elif name == "isoflop":
                res = isoflop_frontier(chosen[name][0], seed=seed)
            elif name == "envelope":
                res = envelope_frontier(chosen[name][0], seed=seed)
            else:
                raise FrontierError(f"unknown approach {name!r}")
            if name in chosen and chosen[name][1]:
                res.notes.insert(0, f"points: {chosen[name][1]}")
            out[name] = res.to_dict()
        except FrontierError as err:
            if strict:
                raise
            out[name] = {"error": str(err)}
    if len(approaches) > 1:
        out["disagreements"] = disagreements({k: v for k, v in out.items() if isinstance(v, dict) and "a" in v})
    return out


def summary_lines(target: str, result: Mapping[str, Any]) -> list[str]:
    """One line per approach (and per disagreement) for the fit summary."""
    lines = []
    for name in APPROACHES:
        r = result.get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"  [{target}] compute-optimal {name:<10}: not computed: {r['error']}")
            continue
        ci = f" [{r['a_ci'][0]:.3f}, {r['a_ci'][1]:.3f}]" if r.get("a_ci") else " (no interval)"
        bci = f" [{r['b_ci'][0]:.3f}, {r['b_ci'][1]:.3f}]" if r.get("b_ci") else ""
        nb = f", {r['n_budgets']} budgets" if r.get("n_budgets") else ""
        lines.append(f"  [{target}] compute-optimal {name:<10}: N* ∝ C^{r['a']:.3f}{ci}, "
                     f"D* ∝ C^{r['b']:.3f}{bci}{nb}")
    for d in result.get("disagreements", []):
        lines.append(f"  [{target}] DISAGREE: {d}")
    return lines
