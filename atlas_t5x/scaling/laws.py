"""Scaling laws as pure functions of (parameters, inputs) → predicted loss (nats/token).

Every law is written once against an array module `xp` (numpy, or jax.numpy inside the fitting
engine) so the same formula serves prediction, vectorised grid search and gradient-based polish.

Units: N parameters (including the tied embedding), D / U tokens, C = 6·N·D FLOPs, loss in nats
per token. Parameter names are shared by every law: E, A, B, alpha, beta, lambda, tau_<lang>,
tau_other, R_D, R_N, phi, psi, gamma.

Inputs (`X`, a mapping of 1-D arrays, one entry per point):
  csl:   N, D
  dcsl:  N, D, U
  atlas: N, D, U (target) [+ D_<lang>, U_<lang> per transfer language, D_other, U_other]
  msl:   N, D, p          (D: the run's TOTAL training tokens, as He et al. 2024 define it, not the
                          target's D_t = p·D; p: the target's sampling ratio in the mixture;
                          `data.law_inputs` passes D_total)
  curse: N, D, K          (D: the target's own tokens D_t; K: number of languages)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# Smallest effective data (tokens) a law ever sees: keeps D_eff^-β finite when transfer terms
# cancel the target's own tokens. [our choice]
D_EFF_FLOOR = 1.0
_LAMBDA_EPS = 1e-9


def saturate(D, U, lam, xp=np):
    """Repetition saturation S_λ(D; U) in tokens (spec §1.2).

    D for D ≤ U; U·(1 + (1 − exp(−λ(D/U − 1)))/λ) beyond one epoch. Vectorised; λ → 0 gives D.
    """
    D = xp.asarray(D)
    U = xp.asarray(U)
    excess = xp.maximum(D / U - 1.0, 0.0)
    lam = xp.asarray(lam)
    small = xp.abs(lam) < _LAMBDA_EPS
    lam_safe = xp.where(small, 1.0, lam)
    gain = xp.where(small, excess, -xp.expm1(-lam_safe * excess) / lam_safe)
    return xp.where(D <= U, D, U * (1.0 + gain))


def chinchilla(N, D, E, A, B, alpha, beta, xp=np):
    """Chinchilla law E + A/N^α + B/D^β (nats/token); N parameters, D tokens."""
    return E + A * xp.asarray(N, dtype=float) ** (-alpha) + B * xp.asarray(D, dtype=float) ** (-beta)


def atlas_effective_data(
    D_t,
    U_t,
    lam,
    D_transfer: Sequence = (),
    U_transfer: Sequence = (),
    tau: Sequence = (),
    D_other=0.0,
    U_other=1.0,
    tau_other=0.0,
    xp=np,
    floor: float = D_EFF_FLOOR,
):
    """ATLAS effective data D_eff in tokens (spec §1.4), floored at `floor` [our choice].

    D_eff = S_λ(D_t; U_t) + Σ_i τ_i·S_λ(D_i; U_i) + τ_other·S_λ(D_other; U_other).
    """
    d_eff = saturate(D_t, U_t, lam, xp)
    for D_i, U_i, tau_i in zip(D_transfer, U_transfer, tau):
        d_eff = d_eff + tau_i * saturate(D_i, U_i, lam, xp)
    d_eff = d_eff + tau_other * saturate(D_other, U_other, lam, xp)
    return xp.maximum(d_eff, floor)


def chinchilla_optimal_params(D, A, B, alpha, beta, xp=np):
    """N_opt(D) = G·(D·G)^(β/α), G = (αA/(βB))^(1/(α+β)): the compute-optimal size for D tokens
    (infinite when the data term vanishes, B = 0: a fit may put B at its bound)."""
    A, B, alpha, beta = (xp.asarray(v) * 1.0 for v in (A, B, alpha, beta))   # inf/nan, not ZeroDivisionError
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
        return G * (D * G) ** (beta / alpha)


@dataclasses.dataclass(frozen=True)
class Law:
    """A scaling law: its parameter names, the inputs it reads and its prediction formula.

    `formula(p, X, xp)` maps a parameter dict (scalars or arrays broadcastable against X) to loss.
    `linear_basis(p, X, xp)`, when set, returns {name: column} for the parameters that enter
    linearly (loss = Σ name·column) given the non-linear ones; the engine uses it for variable
    projection. `tied=True` removes `beta` and uses `alpha` for both exponents.
    """

    name: str
    base_param_names: tuple[str, ...]
    inputs: tuple[str, ...]
    formula: Callable[..., Any]
    linear_basis_fn: Callable[..., dict] | None = None
    linear_names: tuple[str, ...] = ()
    tied: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    description: str = ""

    @property
    def param_names(self) -> tuple[str, ...]:
        if self.tied:
            return tuple(n for n in self.base_param_names if n != "beta")
        return self.base_param_names

    def full_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Adds beta = alpha for a tied law; checks names (ValueError naming unknown/missing)."""
        unknown = sorted(set(params) - set(self.base_param_names))
        if unknown:
            raise ValueError(
                f"law {self.name!r}: unknown parameter(s) {unknown}; expected {list(self.param_names)}"
            )
        missing = [n for n in self.param_names if n not in params]
        if missing:
            raise ValueError(f"law {self.name!r}: missing parameter(s) {missing}")
        full = dict(params)
        if self.tied:
            full["beta"] = full["alpha"]
        return full

    def predict(self, params: Mapping[str, Any], X: Mapping[str, Any], xp=np):
        """Predicted loss (nats/token) for every point of X."""
        missing = [k for k in self.inputs if k not in X]
        if missing:
            raise ValueError(f"law {self.name!r}: missing input(s) {missing}; needs {list(self.inputs)}")
        return self.formula(self.full_params(params), X, xp)

    def linear_basis(self, params: Mapping[str, Any], X: Mapping[str, Any], xp=np) -> dict:
        """Columns of the linearly entering parameters for fixed non-linear ones (varpro)."""
        if self.linear_basis_fn is None:
            raise ValueError(f"law {self.name!r} has no linear structure")
        p = dict(params)
        if self.tied:
            p["beta"] = p["alpha"]
        return self.linear_basis_fn(p, X, xp)

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)


# ------------------------------------------------------------------------------------------------
# CSL


def _csl_basis(p, X, xp):
    return {"E": xp.ones_like(X["N"]), "A": X["N"] ** (-p["alpha"]), "B": X["D"] ** (-p["beta"])}


def _csl(p, X, xp):
    return chinchilla(X["N"], X["D"], p["E"], p["A"], p["B"], p["alpha"], p["beta"], xp)


# ------------------------------------------------------------------------------------------------
# DCSL (Muennighoff et al. 2023, published form)


def dcsl_effective(N, D, U, A, B, alpha, beta, R_D, R_N, xp=np):
    """(N', D') of the data-constrained law. U_D = min(U, D) [our choice: no more unique tokens
    than seen]; U_N = min(N, N_opt(U_D)), or N where N_opt is not finite."""
    U_D = xp.minimum(U, D)
    rep_D = xp.maximum(D / U_D - 1.0, 0.0)
    D_prime = U_D + U_D * R_D * (-xp.expm1(-rep_D / R_D))
    n_opt = chinchilla_optimal_params(U_D, A, B, alpha, beta, xp)
    U_N = xp.where(xp.isfinite(n_opt), xp.minimum(N, n_opt), N)   # no finite N_opt (B = 0, α = β = 0): N
    rep_N = xp.maximum(N / U_N - 1.0, 0.0)
    N_prime = U_N + U_N * R_N * (-xp.expm1(-rep_N / R_N))
    return N_prime, D_prime


def _dcsl(p, X, xp):
    N_p, D_p = dcsl_effective(
        X["N"], X["D"], X["U"], p["A"], p["B"], p["alpha"], p["beta"], p["R_D"], p["R_N"], xp
    )
    return p["E"] + p["A"] * N_p ** (-p["alpha"]) + p["B"] * D_p ** (-p["beta"])


# ------------------------------------------------------------------------------------------------
# ATLAS


def _atlas_deff(p, X, xp, transfer: tuple[str, ...], with_other: bool):
    D_tr = [X[f"D_{l}"] for l in transfer]
    U_tr = [X[f"U_{l}"] for l in transfer]
    tau = [p[f"tau_{l}"] for l in transfer]
    if with_other:
        return atlas_effective_data(
            X["D"], X["U"], p["lambda"], D_tr, U_tr, tau, X["D_other"], X["U_other"], p["tau_other"], xp
        )
    return atlas_effective_data(X["D"], X["U"], p["lambda"], D_tr, U_tr, tau, xp=xp)


@functools.lru_cache(maxsize=None)
def _make_atlas(transfer: tuple[str, ...], with_other: bool):
    def basis(p, X, xp):
        d_eff = _atlas_deff(p, X, xp, transfer, with_other)
        return {"E": xp.ones_like(X["N"]), "A": X["N"] ** (-p["alpha"]), "B": d_eff ** (-p["beta"])}

    def formula(p, X, xp):
        d_eff = _atlas_deff(p, X, xp, transfer, with_other)
        return p["E"] + p["A"] * X["N"] ** (-p["alpha"]) + p["B"] * d_eff ** (-p["beta"])

    return formula, basis


# ------------------------------------------------------------------------------------------------
# MSL (He et al. 2024) and the curse-of-multilinguality law


def _msl_basis(p, X, xp):
    m = X["p"] ** (-p["gamma"])
    return {"E": m, "A": m * X["N"] ** (-p["alpha"]), "B": m * X["D"] ** (-p["beta"])}


def _msl(p, X, xp):
    return (p["E"] + p["A"] * X["N"] ** (-p["alpha"]) + p["B"] * X["D"] ** (-p["beta"])) * X["p"] ** (
        -p["gamma"]
    )


def _curse_basis(p, X, xp):
    return {
        "E": xp.ones_like(X["N"]),
        "A": X["K"] ** p["phi"] * X["N"] ** (-p["alpha"]),
        "B": X["K"] ** p["psi"] * X["D"] ** (-p["beta"]),
    }


def _curse(p, X, xp):
    return (
        p["E"]
        + p["A"] * X["K"] ** p["phi"] * X["N"] ** (-p["alpha"])
        + p["B"] * X["K"] ** p["psi"] * X["D"] ** (-p["beta"])
    )


# ------------------------------------------------------------------------------------------------
# Construction and registry

_BASE = ("E", "A", "B", "alpha", "beta")
LAW_NAMES = ("csl", "dcsl", "atlas", "msl", "curse")


def make_law(
    name: str,
    tied: bool = False,
    transfer_langs: Sequence[str] = (),
    with_other: bool = False,
    stage: str = "one",
) -> Law:
    """Builds a law by name.

    atlas: `transfer_langs` (K_t) and `with_other` select the multilingual variant; with neither it
    is the 6-parameter monolingual law. dcsl: `stage` is "one" (every parameter fitted jointly) or
    "two" (the engine fixes the base law first; see engine.fit_dcsl_two_stage).
    """
    if name == "csl":
        return Law("csl", _BASE, ("N", "D"), _csl, _csl_basis, ("E", "A", "B"), tied,
                   description="E + A/N^alpha + B/D^beta")
    if name == "dcsl":
        if stage not in ("one", "two"):
            raise ValueError(f"dcsl stage must be 'one' or 'two', got {stage!r}")
        return Law("dcsl", _BASE + ("R_D", "R_N"), ("N", "D", "U"), _dcsl, None, (), tied,
                   options=(("stage", stage),),
                   description="E + A/N'^alpha + B/D'^beta (Muennighoff et al. 2023)")
    if name == "atlas":
        transfer = tuple(transfer_langs)
        if len(set(transfer)) != len(transfer):
            raise ValueError(f"atlas: repeated transfer language in {transfer}")
        names = _BASE + ("lambda",) + tuple(f"tau_{l}" for l in transfer)
        inputs = ("N", "D", "U") + tuple(f"{k}_{l}" for l in transfer for k in ("D", "U"))
        if with_other:
            names += ("tau_other",)
            inputs += ("D_other", "U_other")
        formula, basis = _make_atlas(transfer, with_other)
        return Law("atlas", names, inputs, formula, basis, ("E", "A", "B"), tied,
                   options=(("transfer_langs", transfer), ("with_other", with_other)),
                   description="E + A/N^alpha + B/D_eff^beta, D_eff = S_lambda(D_t) + sum tau_i S_lambda(D_i)")
    if name == "msl":
        return Law("msl", _BASE + ("gamma",), ("N", "D", "p"), _msl, _msl_basis, ("E", "A", "B"), tied,
                   description="(E + A/N^alpha + B/D^beta) * p^-gamma (He et al. 2024)")
    if name == "curse":
        return Law("curse", _BASE + ("phi", "psi"), ("N", "D", "K"), _curse, _curse_basis,
                   ("E", "A", "B"), tied,
                   description="E + A K^phi/N^alpha + B K^psi/D_t^beta")
    raise ValueError(f"unknown law {name!r}; known laws: {', '.join(LAW_NAMES)}")


LAWS: dict[str, Law] = {name: make_law(name) for name in LAW_NAMES}


def bts_to_tau(bts: float) -> float:
    """Bilingual transfer score → ATLAS τ initial value. [our choice]

    A 50/50 bilingual run reaching the monolingual loss after σ total tokens has
    D_eff = σ/2·(1 + τ) = d_mono and BTS = 2 − σ/d_mono, hence τ = BTS / (2 − BTS).
    """
    if not math.isfinite(bts):
        return 0.0
    return bts / (2.0 - bts)
