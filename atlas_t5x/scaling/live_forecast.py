"""Live prediction of a run's final loss from its own curve so far (plus optional prior runs).

Single run [our choice of law]: with N and the mixture fixed, the loss against total tokens D
follows L(D) = E' + B·D^(−β) (the N term of the Chinchilla law folds into E'). It is fitted by
robust least squares on log-loss (soft-L1), and the interval comes from a residual bootstrap
(refits on the fitted curve times resampled log-residuals, inflated by √(n/(n−3))).

With prior runs (points (N, D, loss) of finished runs on the same mixture, D in total tokens), the
FITTER's CSL law is fitted with its engine on prior + current points and evaluated at
(N, D_final); the interval widens the prediction by the spread of the current run's
log-residuals [our choice].

Nothing here imports the trainer, Flax or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from atlas_t5x.scaling.laws import chinchilla


class LiveError(ValueError):
    """Too few or unusable points for a prediction."""


@dataclasses.dataclass(frozen=True)
class LivePrediction:
    """The predicted final loss (nats/token) with an interval at `level`."""

    tokens_so_far: float
    final_tokens: float
    predicted_final_loss: float
    lower: float
    upper: float
    level: float
    n_points: int
    law: str
    params: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fit_power(d: np.ndarray, y: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
    """(log E', log B, β) of E' + B·d^−β by soft-L1 least squares on log-loss; d scaled by d[-1]."""
    from scipy import optimize

    scale = d[-1]
    u = d / scale

    def resid(z):
        return np.log(np.exp(z[0]) + np.exp(z[1]) * u ** (-z[2])) - np.log(y)

    starts = [x0] if x0 is not None else [
        np.array([math.log(max(y.min() * f, 1e-6)), math.log(max(y.max() - y.min() * f, 1e-6)), b])
        for f in (0.5, 0.9) for b in (0.1, 0.4)]
    best = None
    for z0 in starts:
        res = optimize.least_squares(resid, z0, loss="soft_l1", f_scale=0.01,
                                     bounds=([-20, -20, 1e-3], [10, 10, 3.0]))
        if best is None or res.cost < best.cost:
            best = res
    z = best.x.copy()
    z[1] = z[1] + z[2] * math.log(scale)   # back to B in unscaled tokens: B·d^−β = B_u·(d/scale)^−β
    return z


def _predict_power(z: np.ndarray, d) -> np.ndarray:
    return chinchilla(1.0, d, math.exp(z[0]), 0.0, math.exp(z[1]), 1.0, z[2])


def predict_final_loss(
    tokens: Sequence[float],
    losses: Sequence[float],
    final_tokens: float,
    params: float | None = None,
    prior: Mapping[str, Sequence[float]] | None = None,
    level: float = 0.8,
    n_boot: int = 100,
    min_points: int = 4,
    seed: int = 0,
) -> LivePrediction:
    """Predicted loss at `final_tokens` from the curve so far.

    Args:
      tokens, losses: the run's points so far (total tokens, nats/token).
      final_tokens: the run's planned total tokens.
      params: the run's N (needed with `prior`).
      prior: {"N": ..., "D": ..., "loss": ...} points of finished runs on the same mixture.
      level: central interval probability.
    Raises:
      LiveError: fewer than `min_points` usable points, or final_tokens not beyond the first point.
    """
    d = np.asarray(tokens, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    keep = np.isfinite(d) & np.isfinite(y) & (d > 0) & (y > 0)
    d, y = d[keep], y[keep]
    order = np.argsort(d)
    d, y = d[order], y[order]
    if d.size < min_points:
        raise LiveError(f"{d.size} usable points so far; a live prediction needs at least {min_points}")
    if not final_tokens > d[0]:
        raise LiveError(f"final_tokens {final_tokens!r} must exceed the first evaluated token count {d[0]:.3g}")
    q = (1.0 - level) / 2.0

    if prior is not None and len(prior.get("loss", ())) > 0:
        if params is None:
            raise LiveError("prior runs need the current run's params (N)")
        from atlas_t5x.scaling import engine
        from atlas_t5x.scaling.laws import LAWS

        N_all = np.concatenate([np.asarray(prior["N"], float), np.full(d.size, float(params))])
        D_all = np.concatenate([np.asarray(prior["D"], float), d])
        y_all = np.concatenate([np.asarray(prior["loss"], float), y])
        res = engine.fit(LAWS["csl"], {"N": N_all, "D": D_all}, y_all, grid_budget=500, n_polish=2)
        pred = float(res.predict({"N": np.array([float(params)]), "D": np.array([float(final_tokens)])})[0])
        own = np.log(y) - np.log(res.predict({"N": np.full(d.size, float(params)), "D": d}))
        from scipy import stats

        half = float(stats.norm.ppf(1 - q) * max(np.std(own), 1e-4))
        return LivePrediction(float(d[-1]), float(final_tokens), pred, pred * math.exp(-half),
                              pred * math.exp(half), level, int(d.size), "csl (prior runs + this run)",
                              {k: float(v) for k, v in res.params.items()})

    z = _fit_power(d, y)
    fitted = _predict_power(z, d)
    pred = float(_predict_power(z, final_tokens))
    # residuals of a 3-parameter fit understate the noise: inflate by sqrt(n / (n - 3))
    resid = (np.log(y) - np.log(fitted)) * math.sqrt(d.size / max(d.size - 3, 1))
    rng = np.random.default_rng(seed)
    boots = []
    z_scaled = z.copy()
    z_scaled[1] = z[1] - z[2] * math.log(d[-1])
    for _ in range(n_boot):
        y_b = fitted * np.exp(rng.choice(resid, size=resid.size, replace=True))
        try:
            z_b = _fit_power(d, y_b, x0=z_scaled)
        except (ValueError, FloatingPointError):
            continue
        boots.append(float(_predict_power(z_b, final_tokens)))
    lower, upper = (np.quantile(boots, [q, 1 - q]) if boots else (pred, pred))
    return LivePrediction(float(d[-1]), float(final_tokens), pred,
                          float(min(lower, pred)), float(max(upper, pred)),
                          level, int(d.size), "E' + B*D^-beta (this run)",
                          {"E": math.exp(z[0]), "B": math.exp(z[1]), "beta": float(z[2])})
