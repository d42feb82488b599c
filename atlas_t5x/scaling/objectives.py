"""Fitting objectives on log-loss residuals r = log L̂ − log L (float64 throughout).

- `huber`: Σ_i w_i·Huber_δ(r_i), δ = 1e-3, SUMMED (a mean-reduced objective makes quasi-Newton
  methods stop early in a different basin; spec §6). The default.
- `likelihood`: Epoch AI's variant: negative log-likelihood of a Huber-shaped density with a free
  scale σ, Σ_i w_i·[Huber_δ(r_i/σ) + log σ + log Z_δ]. σ is an extra fitted parameter (`sigma`).
- `lsq`: least squares ½·Σ_i w_i·r_i².

All functions take an array module `xp` so the engine can evaluate them under JAX.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import special

DEFAULT_DELTA = 1e-3


def huber(r, delta: float = DEFAULT_DELTA, xp=np):
    """Huber loss: ½r² for |r| ≤ δ, δ(|r| − δ/2) beyond."""
    a = xp.abs(r)
    return xp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_weight(r, delta: float = DEFAULT_DELTA, xp=np):
    """IRLS weight ψ(r)/r of the Huber loss: 1 inside δ, δ/|r| beyond."""
    a = xp.abs(r)
    return xp.where(a <= delta, 1.0, delta / xp.maximum(a, delta))


def huber_log_normaliser(delta: float = DEFAULT_DELTA) -> float:
    """log Z_δ of the unit-scale density ∝ exp(−Huber_δ(x))."""
    inner = math.sqrt(2 * math.pi) * (1.0 - 2.0 * special.ndtr(-delta))
    tails = 2.0 * math.exp(-0.5 * delta * delta) / delta
    return math.log(inner + tails)


@dataclasses.dataclass(frozen=True)
class Objective:
    """An objective over log residuals. `extra_params` are nuisance parameters it adds (σ)."""

    name: str
    delta: float = DEFAULT_DELTA

    @property
    def extra_params(self) -> tuple[str, ...]:
        return ("sigma",) if self.name == "likelihood" else ()

    def value(self, r, w, extra=None, xp=np):
        """Objective for residuals r (…, n) and point weights w (n,) or (…, n)."""
        if self.name == "huber":
            return xp.sum(w * huber(r, self.delta, xp), axis=-1)
        if self.name == "lsq":
            return 0.5 * xp.sum(w * r * r, axis=-1)
        if self.name == "likelihood":
            sigma = extra["sigma"]
            per_point = huber(r / sigma, self.delta, xp) + xp.log(sigma) + huber_log_normaliser(self.delta)
            return xp.sum(w * per_point, axis=-1)
        raise ValueError(f"unknown objective {self.name!r}")

    def irls_weight(self, r, xp=np):
        """Weights of the quadratic majoriser at r (Huber and least squares only)."""
        if self.name == "huber":
            return huber_weight(r, self.delta, xp)
        if self.name == "lsq":
            return xp.ones_like(r)
        raise ValueError(f"objective {self.name!r} has no IRLS form")

    def best_sigma(self, r, w) -> float:
        """The σ minimising the likelihood for fixed residuals (1-D, bounded search)."""
        from scipy import optimize

        r = np.asarray(r, float)
        w = np.asarray(w, float)
        scale = max(float(np.sqrt(np.average(r * r, weights=w))), 1e-12)

        def f(log_s):
            return float(self.value(r, w, {"sigma": math.exp(log_s)}))

        res = optimize.minimize_scalar(
            f, bounds=(math.log(scale) - 12.0, math.log(scale) + 6.0), method="bounded",
            options={"xatol": 1e-10},
        )
        return math.exp(res.x)


OBJECTIVES = ("huber", "likelihood", "lsq")


def get_objective(name: str, delta: float = DEFAULT_DELTA) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return Objective(name, delta)
