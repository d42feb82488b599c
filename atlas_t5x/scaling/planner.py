"""Compute planner: the loss-optimal model size N and token count D for a FLOP budget.

For a target language with U unique tokens and a fitted law L(N, D; U) (the FITTER's laws, e.g.
monolingual ATLAS with repetition saturation S_λ, or CSL), minimise L subject to C = 6·N·D over
N in [min_params, max_params]. With unlimited data (U = ∞) and a Chinchilla-form law the answer is
the closed form N* = G·(C/6)^(β/(α+β)), D* = (C/6)/N*, G = (αA/(βB))^(1/(α+β)).

Repetition makes extra epochs worth less, so as U shrinks the optimum moves to fewer tokens per
parameter (D/N falls). Bootstrap parameter samples give a band; plans far outside the fitted
(N, D) range come with a warning stating the range.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from atlas_t5x.scaling.laws import Law, make_law

# The smallest model of the spec's family (scale 0, spec §3), parameters.
SMALLEST_PAPER_MODEL = 9_044_352
# [our choice] a model must see at least this many tokens per parameter to count as trained.
MIN_TOKENS_PER_PARAM = 1.0
# [our choice] a plan further than this factor outside the fitted N or D range warns.
EXTRAPOLATION_FACTOR = 2.0


class PlanError(ValueError):
    """A plan that cannot be made (budget, law or data problem), with the reason."""


def outside_fit_range(fit_range: Mapping[str, tuple[float, float]] | None, key: str, value: float,
                      unit: str, factor: float = EXTRAPOLATION_FACTOR) -> str:
    """"KEY = value unit is far outside the fitted range [lo, hi]: ..." when `value` lies more
    than `factor` outside `fit_range[key]`; "" when it is inside or `key` has no range."""
    if not fit_range or key not in fit_range:
        return ""
    lo, hi = fit_range[key]
    if lo / factor <= value <= hi * factor:
        return ""
    return (f"{key} = {value:.3g} {unit} is far outside the fitted range [{lo:.3g}, {hi:.3g}]: "
            "the law is extrapolated")


class ExtrapolationWarning(UserWarning):
    """The plan lies far outside the range the law was fitted on."""


# ---------------------------------------------------------------------------------------------
# Fitted laws


def law_for_params(name: str, params: Mapping[str, float]) -> Law:
    """The FITTER's law `name` matching a parameter dict: tied when `beta` is absent, ATLAS transfer
    languages from the `tau_<lang>` keys, the `D_other` term when `tau_other` is present."""
    tied = "beta" not in params and "alpha" in params
    if name == "atlas":
        transfer = tuple(sorted(k[4:] for k in params if k.startswith("tau_") and k != "tau_other"))
        return make_law("atlas", tied=tied, transfer_langs=transfer, with_other="tau_other" in params)
    return make_law(name, tied=tied)


def _number(value: Any, field: str) -> float:
    """A fit file's numeric value as float; PlanError naming the field and the value otherwise
    (a string such as "abc", null, a list, true/false)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PlanError(f"field {field} = {json.dumps(value) if _jsonable(value) else repr(value)} is not a number")
    try:
        return float(value)
    except ValueError:
        raise PlanError(f"field {field} = {value!r} is not a number") from None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class FittedLaw:
    """A law with fitted parameters, optional bootstrap samples and the range it was fitted on.

    `fit_range` maps "N" / "D" / "epochs" to (min, max) of the fitted points (parameters, target
    tokens, target epochs D_t/U_t), e.g. the "fit_range" atlas-fit writes per target.
    """

    law: Law
    params: dict[str, float]
    samples: tuple[dict[str, float], ...] = ()
    fit_range: dict[str, tuple[float, float]] | None = None
    target: str = ""
    # atlas-fit's "compute_optimal" for this target ({approach: {"a", "a_ci", ...}}), when present
    frontier: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], target: str = "") -> "FittedLaw":
        """From {"law": name, "params": {...}, optional "bootstrap"/"samples": [{...}],
        optional "fit_range": {"N": [lo, hi], "D": [lo, hi], "epochs": [lo, hi]}} (e.g. one
        `per_target` entry of atlas-fit's fit.json, whose "bootstrap" holds "samples")."""
        if "law" not in d or "params" not in d:
            raise PlanError(f"fitted law {target or ''!s}: expected keys 'law' and 'params', got {sorted(d)}")
        where = f"per_target.{target}." if target else ""
        params = {k: _number(v, f"{where}params.{k}") for k, v in dict(d["params"]).items()}
        samples = d.get("samples", d.get("bootstrap", ()))
        if isinstance(samples, Mapping):
            samples = samples.get("samples", ())
        rng = d.get("fit_range")
        return cls(law_for_params(str(d["law"]), params), params,
                   tuple({k: _number(v, f"{where}samples[{i}].{k}") for k, v in s.items()}
                         for i, s in enumerate(samples or ())),
                   {k: (_number(v[0], f"{where}fit_range.{k}[0]"), _number(v[1], f"{where}fit_range.{k}[1]"))
                    for k, v in rng.items()} if rng else None,
                   target or str(d.get("target", "")),
                   dict(d["compute_optimal"]) if isinstance(d.get("compute_optimal"), Mapping) else None)

    def loss(self, N, D, U=math.inf, params: Mapping[str, float] | None = None) -> np.ndarray:
        """Predicted loss (nats/token) of N parameters trained on D target tokens with U unique.

        Monolingual training: transfer-language and other-language tokens are zero.
        """
        N = np.asarray(N, dtype=np.float64)
        D = np.asarray(D, dtype=np.float64)
        X: dict[str, Any] = {"N": N, "D": D, "U": np.broadcast_to(np.float64(U), D.shape)}
        for name in self.law.inputs:
            if name not in X:
                if name.startswith("D_"):
                    X[name] = np.zeros_like(D)
                elif name.startswith("U_"):
                    X[name] = np.ones_like(D)
                elif name in ("K", "p"):
                    X[name] = np.ones_like(D)   # one language, all of the mixture
                else:
                    raise PlanError(f"law {self.law.name!r} needs input {name!r}, which a plan cannot supply")
        return np.asarray(self.law.predict(params or self.params, X), dtype=np.float64)


def load_fitted_laws(path: str | os.PathLike) -> dict[str, FittedLaw]:
    """Fitted laws from a JSON file, keyed by target.

    Accepts atlas-fit's fit.json (`fit_run.read_fit_json`) ({"law", "targets", "per_target": {t: {"law",
    "params", ...}}} or a single-target {"law", "params"}), a plain {"law", "params"}, a mapping
    {target: {"law", "params"}}, or {"fits": {...}}. Raises PlanError naming the file on bad content.
    """
    from atlas_t5x.scaling import fit_run   # the fit.json writer and reader

    try:
        doc = fit_run.read_fit_json(path)
    except ValueError as err:
        raise PlanError(str(err)) from err
    try:
        if isinstance(doc, Mapping) and "fits" in doc:
            doc = doc["fits"]
        if isinstance(doc, Mapping) and isinstance(doc.get("per_target"), Mapping):
            return {t: FittedLaw.from_dict({"law": doc.get("law"), **d}, target=t)
                    for t, d in doc["per_target"].items()}
        if isinstance(doc, Mapping) and "law" in doc:
            params = doc.get("params", {})
            targets = doc.get("targets") or [str(doc.get("target", ""))]
            if params and all(isinstance(v, Mapping) for v in params.values()):
                return {t: FittedLaw.from_dict({**doc, "params": v}, target=t) for t, v in params.items()}
            return {targets[0]: FittedLaw.from_dict(doc, target=targets[0])}
        if not isinstance(doc, Mapping) or not doc:
            raise PlanError("expected a fitted law or a mapping target -> fitted law")
        return {t: FittedLaw.from_dict(d, target=t) for t, d in doc.items()}
    except (PlanError, ValueError, TypeError, AttributeError) as err:
        raise PlanError(f"{path}: {err}") from err


def with_fit_ranges(laws: Mapping[str, FittedLaw], rows: Sequence[Mapping[str, Any]]) -> dict[str, FittedLaw]:
    """Adds each target's fitted (N, D_t, epochs D_t/U_t) range, taken from exported-log rows."""
    out = {}
    for target, fl in laws.items():
        pts = []
        for r in rows:
            if r.get("target") != target:
                continue
            d = float(dict(r.get("tokens_by_lang", {})).get(target, 0))
            u = float(dict(r.get("unique_by_lang", {})).get(target, 0))
            if d > 0:
                pts.append((float(r["params"]), d, d / u if u > 0 else 0.0))
        if not pts:
            out[target] = fl
            continue
        n, d, e = zip(*pts)
        out[target] = dataclasses.replace(
            fl, fit_range={"N": (min(n), max(n)), "D": (min(d), max(d)), "epochs": (min(e), max(e))})
    return out


def samples_from_bootstrap(boot, params: Mapping[str, float]) -> tuple[dict[str, float], ...]:
    """Parameter samples from a FITTER `bootstrap.BootstrapResult` (converged resamples only)."""
    names = [k for k in params if k in boot.samples]
    out = []
    for i in np.flatnonzero(np.asarray(boot.converged)):
        sample = dict(params)
        sample.update({k: float(boot.samples[k][i]) for k in names})
        if all(math.isfinite(v) for v in sample.values()):
            out.append(sample)
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Plans


def chinchilla_optimum(C: float, A: float, B: float, alpha: float, beta: float) -> tuple[float, float]:
    """(N*, D*) minimising E + A/N^α + B/D^β subject to 6·N·D = C (closed form)."""
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    n = G * (C / 6.0) ** (beta / (alpha + beta))
    return n, C / (6.0 * n)


@dataclasses.dataclass(frozen=True)
class ComputePlan:
    """The loss-optimal split of a FLOP budget for one target."""

    target: str
    flops: float
    unique_tokens: float          # U (inf when unlimited)
    params: float                 # N*
    tokens: float                 # D*
    loss: float                   # predicted loss at (N*, D*), nats/token
    tokens_per_param: float
    epochs: float                 # D*/U (0 when U is unlimited)
    closed_form: tuple[float, float] | None   # Chinchilla (N*, D*) when its D* needs no repetition (≤ U)
    band: dict[str, tuple[float, float]] | None  # 2.5–97.5 % of N, D, loss over bootstrap samples
    warnings: tuple[str, ...] = ()
    at_bound: str = ""            # "min_params"/"max_params" if the optimum sits on a bound
    exponents: dict[str, Any] | None = None   # which allocation exponents the plan uses (`plan_exponents`)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["unique_tokens"] = None if math.isinf(self.unique_tokens) else self.unique_tokens
        return d


def _optimum(fl: FittedLaw, C: float, U: float, lo: float, hi: float,
             params: Mapping[str, float] | None = None) -> tuple[float, float]:
    from scipy import optimize

    def loss_of_logn(logn):
        n = np.exp(logn)
        return fl.loss(n, C / (6.0 * n), U, params)

    grid = np.linspace(math.log(lo), math.log(hi), 801)
    values = loss_of_logn(grid)
    if not np.any(np.isfinite(values)):
        raise PlanError(f"law {fl.law.name!r} predicts no finite loss for this budget")
    i = int(np.nanargmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    if a < b:
        res = optimize.minimize_scalar(lambda z: float(loss_of_logn(np.array([z]))[0]), bounds=(a, b),
                                       method="bounded", options={"xatol": 1e-10})
        logn = float(res.x) if res.fun <= values[i] else float(grid[i])
    else:
        logn = float(grid[i])
    n = math.exp(logn)
    return n, float(loss_of_logn(np.array([logn]))[0])


def plan_compute(
    fitted: FittedLaw,
    flops: float,
    unique_tokens: float | None = None,
    min_params: float = SMALLEST_PAPER_MODEL,
    max_params: float = 1e13,
    min_tokens_per_param: float = MIN_TOKENS_PER_PARAM,
    extrapolation_factor: float = EXTRAPOLATION_FACTOR,
    target: str | None = None,
) -> ComputePlan:
    """Loss-optimal (N, D) with 6·N·D = flops, accounting for repetition when U is finite.

    Raises:
      PlanError: the budget cannot train the smallest model (min_params) on min_tokens_per_param
        tokens per parameter, or bad numbers.
    Warns:
      ExtrapolationWarning: the plan's N or D lies more than `extrapolation_factor` outside the
        fitted range, or it repeats the data for more epochs than `extrapolation_factor` × the
        most epochs fitted (at least one epoch): the repetition term S_λ is then an
        extrapolation (a λ fitted on ≤ 1-epoch data is not identified). Messages state the range.
    """
    if not (isinstance(flops, (int, float)) and math.isfinite(flops) and flops > 0):
        raise PlanError(f"FLOP budget must be a finite number > 0, got {flops!r}")
    U = math.inf if unique_tokens is None else float(unique_tokens)
    if not U > 0:
        raise PlanError(f"unique tokens U must be > 0 (or unlimited), got {unique_tokens!r}")
    if not 0 < min_params < max_params:
        raise PlanError(f"need 0 < min_params < max_params, got {min_params!r}, {max_params!r}")
    c_min = 6.0 * min_params * min_tokens_per_param * min_params
    if flops < c_min:
        raise PlanError(
            f"budget of {flops:.3g} FLOPs is too small for the smallest model ({min_params:.3g} "
            f"parameters): training it on {min_tokens_per_param:g} token(s) per parameter needs "
            f"{c_min:.3g} FLOPs"
        )
    # the largest N that still gets min_tokens_per_param tokens per parameter
    hi = min(max_params, math.sqrt(flops / (6.0 * min_tokens_per_param)))
    n, loss = _optimum(fitted, flops, U, min_params, hi)
    d = flops / (6.0 * n)
    at_bound = "min_params" if n <= min_params * 1.0001 else ("max_params" if n >= hi * 0.9999 else "")

    # Chinchilla closed form: exact when nothing is repeated (U unlimited, or its D* fits in U)
    closed = None
    p = fitted.law.full_params(fitted.params)
    if all(k in p for k in ("A", "B", "alpha", "beta")) and fitted.law.name in ("csl", "atlas"):
        cf = chinchilla_optimum(flops, p["A"], p["B"], p["alpha"], p["beta"])
        if cf[1] <= U or "U" not in fitted.law.inputs:
            closed = cf

    band = None
    if fitted.samples:
        ns, ds, ls = [], [], []
        for sample in fitted.samples:
            try:
                n_s, l_s = _optimum(fitted, flops, U, min_params, hi, sample)
            except (PlanError, ValueError, FloatingPointError):
                continue
            ns.append(n_s)
            ds.append(flops / (6.0 * n_s))
            ls.append(l_s)
        if ns:
            band = {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
                    for k, v in (("params", ns), ("tokens", ds), ("loss", ls))}

    notes = []
    if not math.isinf(U) and "U" not in fitted.law.inputs:
        notes.append(f"law {fitted.law.name!r} does not model repetition: U only sets the epoch count")
    if fitted.fit_range:
        for key, value, unit in (("N", n, "parameters"), ("D", d, "tokens")):
            note = outside_fit_range(fitted.fit_range, key, value, unit, extrapolation_factor)
            if note:
                notes.append(f"plan {note}")
        epochs = d / U
        if "epochs" in fitted.fit_range and "U" in fitted.law.inputs:
            lo_e, hi_e = fitted.fit_range["epochs"]
            if epochs > max(hi_e, 1.0) * extrapolation_factor:
                notes.append(f"plan repeats the data {epochs:.3g} times but the law was fitted on "
                             f"{lo_e:.3g}–{hi_e:.3g} epochs: the repetition term (lambda = "
                             f"{fitted.params.get('lambda', math.nan):.3g}) is extrapolated")
    if notes:
        warnings.warn("; ".join(notes), ExtrapolationWarning, stacklevel=2)
    return ComputePlan(
        target=target if target is not None else fitted.target, flops=float(flops), unique_tokens=U,
        params=n, tokens=d, loss=loss, tokens_per_param=d / n, epochs=0.0 if math.isinf(U) else d / U,
        closed_form=closed, band=band, warnings=tuple(notes), at_bound=at_bound,
        exponents=plan_exponents(fitted),
    )


def plan_exponents(fitted: FittedLaw) -> dict[str, Any] | None:
    """The allocation the plan follows: the fitted law's own exponents a = β/(α+β) (N* ∝ C^a) and
    b = α/(α+β) (D* ∝ C^b), whether they are tied (a = 0.5 by construction), and the other
    approaches' a from atlas-fit's compute_optimal (isoflop, envelope) for comparison. None when
    the law has no α."""
    p = fitted.law.full_params(fitted.params)
    if "alpha" not in p:
        return None
    alpha, beta = float(p["alpha"]), float(p.get("beta", p["alpha"]))
    if not (alpha > 0 and beta > 0):
        return None
    out: dict[str, Any] = {"source": f"the fitted {fitted.law.name} law (parametric; unlimited data)",
                           "tied": bool(fitted.law.tied), "a": beta / (alpha + beta), "b": alpha / (alpha + beta),
                           "others": {}}
    for name, res in (fitted.frontier or {}).items():
        if name in ("isoflop", "envelope") and isinstance(res, Mapping):
            out["others"][name] = ({"a": res["a"], "a_ci": res.get("a_ci")} if "a" in res
                                   else {"error": str(res.get("error", "not computed"))})
    return out


def format_exponents(ex: Mapping[str, Any] | None) -> str:
    """One line naming the exponents a plan uses (and the other approaches' a)."""
    if not ex:
        return ""
    tied = ", tied exponents: a = 0.5 by construction" if ex.get("tied") else ""
    line = f"  exponents: {ex['source']}: N* ∝ C^{ex['a']:.3f}, D* ∝ C^{ex['b']:.3f}{tied}"
    others = []
    for name, r in ex.get("others", {}).items():
        if "a" not in r:
            others.append(f"{name} not computed")
            continue
        ci = f" [{r['a_ci'][0]:.3f}, {r['a_ci'][1]:.3f}]" if r.get("a_ci") else ""
        others.append(f"{name} a = {r['a']:.3f}{ci}")
    if others:
        line += "; from the data: " + ", ".join(others)
    return line


def plan_targets(laws: Mapping[str, FittedLaw], flops: float,
                 unique_tokens: Mapping[str, float | None] | float | None = None, **kwargs) -> list[ComputePlan]:
    """One plan per target (each target trained on its own with the whole budget)."""
    plans = []
    for target, fl in laws.items():
        u = unique_tokens.get(target) if isinstance(unique_tokens, Mapping) else unique_tokens
        plans.append(plan_compute(fl, flops, u, target=target, **kwargs))
    return plans


def format_plan(plan: ComputePlan) -> str:
    """A readable multi-line summary of a plan."""
    u = "unlimited" if math.isinf(plan.unique_tokens) else f"{plan.unique_tokens:.3g} tokens"
    lines = [
        f"target {plan.target or '(unnamed)'}: budget {plan.flops:.3g} FLOPs, unique data {u}",
        f"  parameters N = {plan.params:.4g}, tokens D = {plan.tokens:.4g} "
        f"({plan.tokens_per_param:.1f} tokens/parameter, "
        + ("no repetition: U unlimited)" if math.isinf(plan.unique_tokens) else f"{plan.epochs:.2f} epochs of U)"),
        f"  predicted loss {plan.loss:.4f} nats/token",
    ]
    if plan.exponents:
        lines.append(format_exponents(plan.exponents))
    if plan.closed_form:
        lines.append(f"  Chinchilla closed form: N = {plan.closed_form[0]:.4g}, D = {plan.closed_form[1]:.4g}")
    if plan.band:
        b = plan.band
        lines.append(f"  95% bootstrap: N {b['params'][0]:.3g}–{b['params'][1]:.3g}, "
                     f"D {b['tokens'][0]:.3g}–{b['tokens'][1]:.3g}, "
                     f"loss {b['loss'][0]:.4f}–{b['loss'][1]:.4f}")
    if plan.at_bound:
        lines.append(f"  note: the optimum sits on the {plan.at_bound} bound")
    lines += [f"  WARNING: {w}" for w in plan.warnings]
    return "\n".join(lines)
