"""Mixture planner (beyond the paper): sampling rates that minimise the weighted predicted loss.

Given target languages with weights w_t, a model size N, a training budget of D_total tokens, a
fitted multilingual ATLAS law per target (transfer τ_i and optional τ_other) and the unique tokens
U_l of every candidate language, choose rates p on the simplex minimising

    Σ_t w_t · L_t(N, D_eff,t(p)),   D_eff,t = S_λ(p_t·D) + Σ_i τ_i·S_λ(p_i·D) + τ_other·S_λ(D_other)

subject to per-language epoch caps p_l·D_total ≤ cap_l·U_l (scipy SLSQP from several feasible
starts; the result is projected back onto the capped simplex so a cap is never exceeded).
D_other is every token not in t or its transfer languages; U_other the sum of those languages'
U [spec §1.4, our choice]. Unimax and temperature sampling are evaluated with the same laws for
comparison (temperature sampling ignores caps; its violations are reported).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from atlas_t5x.scaling.planner import FittedLaw, PlanError, outside_fit_range

# mT5/MADLAD-style temperature (sampling exponent 0.3) [our choice of default baseline]
DEFAULT_TEMPERATURE = 1.0 / 0.3


@dataclasses.dataclass(frozen=True)
class MixturePlan:
    """Rates, tokens and predicted losses of one mixture."""

    method: str
    weights: dict[str, float]            # sampling rates, sum 1
    tokens_by_lang: dict[str, float]
    epochs_by_lang: dict[str, float]
    loss_by_target: dict[str, float]     # predicted loss, nats/token
    objective: float                     # Σ w_t · loss_t / Σ w_t
    cap_violations: dict[str, float]     # language -> epochs beyond its cap (empty if none)
    converged: bool = True
    message: str = ""
    warnings: tuple[str, ...] = ()       # N or a target's tokens far outside its law's fitted range

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _transfer_langs(fl: FittedLaw) -> tuple[str, ...]:
    return tuple(dict(fl.law.options).get("transfer_langs", ()))


def _with_other(fl: FittedLaw) -> bool:
    return bool(dict(fl.law.options).get("with_other", False))


class _Problem:
    def __init__(self, targets, laws, params, total_tokens, unique, max_epochs, languages):
        if not targets:
            raise PlanError("no target languages given")
        bad_w = {t: w for t, w in targets.items() if not (w >= 0 and math.isfinite(w))}
        if bad_w or sum(targets.values()) <= 0:
            raise PlanError(f"target weights must be ≥ 0 with a positive sum; got {dict(targets)}")
        missing = [t for t in targets if t not in laws]
        if missing:
            raise PlanError(f"no fitted law for target(s) {missing}; laws are given for {sorted(laws)}")
        for t in targets:
            if laws[t].law.name != "atlas":
                raise PlanError(f"target {t!r}: the mixture planner needs an ATLAS law, got {laws[t].law.name!r}")
        if not (total_tokens > 0 and params > 0):
            raise PlanError(f"need params > 0 and a token budget > 0, got {params!r}, {total_tokens!r}")
        langs = list(languages) if languages is not None else sorted(
            set(targets) | {l for t in targets for l in _transfer_langs(laws[t])})
        for t in targets:
            if t not in langs:
                raise PlanError(f"target {t!r} is not among the candidate languages {langs}")
        no_u = [l for l in langs if l not in unique or not unique[l] > 0]
        if no_u:
            raise PlanError(f"unique tokens U missing or not > 0 for language(s) {no_u}")
        caps = ({l: float(max_epochs[l]) for l in langs} if isinstance(max_epochs, Mapping)
                else {l: float(max_epochs) for l in langs})
        if any(not c > 0 for c in caps.values()):
            raise PlanError(f"epoch caps must be > 0, got {caps}")
        self.langs = langs
        self.targets = dict(targets)
        self.laws = laws
        self.N = float(params)
        self.D = float(total_tokens)
        self.U = {l: float(unique[l]) for l in langs}
        self.caps = caps
        self.upper = np.array([min(1.0, caps[l] * self.U[l] / self.D) for l in langs])
        if self.upper.sum() < 1.0 - 1e-12:
            room = sum(caps[l] * self.U[l] for l in langs)
            raise PlanError(
                f"the epoch caps make the budget infeasible: the candidate languages hold at most "
                f"{room:.4g} tokens within their caps, the budget is {self.D:.4g} tokens"
            )

    def losses(self, p: np.ndarray) -> dict[str, float]:
        tokens = dict(zip(self.langs, p * self.D))
        out = {}
        for t in self.targets:
            fl = self.laws[t]
            transfer = _transfer_langs(fl)
            X: dict[str, Any] = {"N": np.array([self.N]), "D": np.array([tokens[t]]),
                                 "U": np.array([self.U[t]])}
            for l in transfer:
                X[f"D_{l}"] = np.array([tokens.get(l, 0.0)])
                X[f"U_{l}"] = np.array([self.U.get(l, 1.0)])
            if _with_other(fl):
                others = [l for l in self.langs if l != t and l not in transfer]
                X["D_other"] = np.array([max(sum(tokens[l] for l in others), 0.0)])
                X["U_other"] = np.array([max(sum(self.U[l] for l in others), 1.0)])
            out[t] = float(fl.law.predict(fl.params, X)[0])
        return out

    def objective(self, p: np.ndarray) -> float:
        losses = self.losses(p)
        total_w = sum(self.targets.values())
        return sum(w * losses[t] for t, w in self.targets.items()) / total_w

    def plan(self, p: np.ndarray, method: str, converged=True, message="") -> MixturePlan:
        tokens = {l: float(v) for l, v in zip(self.langs, p * self.D)}
        epochs = {l: tokens[l] / self.U[l] for l in self.langs}
        over = {l: epochs[l] - self.caps[l] for l in self.langs if epochs[l] > self.caps[l] * (1 + 1e-9)}
        losses = self.losses(p)
        return MixturePlan(method, {l: float(v) for l, v in zip(self.langs, p)}, tokens, epochs, losses,
                           self.objective(p), over, converged, message, self.range_notes(tokens))

    def range_notes(self, tokens: Mapping[str, float]) -> tuple[str, ...]:
        """Warnings for laws used far outside their fitted (N, D_t) range (laws with a fit_range)."""
        notes = []
        for t in self.targets:
            for key, value, unit in (("N", self.N, "parameters"), ("D", tokens[t], f"{t} tokens")):
                note = outside_fit_range(self.laws[t].fit_range, key, value, unit) if value > 0 else ""
                if note:
                    notes.append(f"target {t}: {note}")
        return tuple(notes)


def project_capped_simplex(p: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The closest point (Euclidean) to p with 0 ≤ x ≤ upper and Σx = 1 (bisection on the shift).

    Requires Σ upper ≥ 1.
    """
    p = np.asarray(p, dtype=np.float64)
    lo, hi = float(np.min(p - upper)) - 1.0, float(np.max(p)) + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.clip(p - mid, 0.0, upper).sum() > 1.0:
            lo = mid
        else:
            hi = mid
    x = np.clip(p - 0.5 * (lo + hi), 0.0, upper)
    # remove the bisection residue on a free coordinate, never above a cap
    free = np.nonzero((x > 0) & (x < upper))[0]
    if free.size:
        j = free[np.argmax(upper[free] - x[free])]
        x[j] = min(max(x[j] + 1.0 - x.sum(), 0.0), upper[j])
    return x


def plan_mixture(
    targets: Mapping[str, float],
    laws: Mapping[str, FittedLaw],
    params: float,
    total_tokens: float,
    unique_tokens: Mapping[str, float],
    max_epochs: float | Mapping[str, float] = 4.0,
    languages: Sequence[str] | None = None,
    seed: int = 0,
    n_starts: int = 4,
) -> MixturePlan:
    """Rates minimising the weighted predicted loss of `targets` under per-language epoch caps.

    Args:
      targets: {language: weight ≥ 0} to optimise for.
      laws: fitted multilingual ATLAS per target (planner.FittedLaw).
      params: model size N (parameters).
      total_tokens: training budget D_total (tokens; FLOPs C give D_total = C/(6N)).
      unique_tokens: U_l for every candidate language.
      max_epochs: epoch cap, one value or per language [default 4: our choice].
      languages: candidate languages (default: targets and their laws' transfer languages).

    Raises:
      PlanError: missing laws/U, non-ATLAS law, or caps that cannot hold the budget.
    """
    from scipy import optimize

    prob = _Problem(targets, laws, params, total_tokens, unique_tokens, max_epochs, languages)
    n = len(prob.langs)
    rng = np.random.default_rng(seed)
    w_t = np.array([targets.get(l, 0.0) for l in prob.langs], dtype=np.float64)
    starts = [prob.upper / prob.upper.sum(), np.full(n, 1.0 / n)]
    if w_t.sum() > 0:
        starts.append(w_t / w_t.sum())
    starts += [rng.dirichlet(np.ones(n)) for _ in range(max(n_starts - len(starts), 0))]
    best, best_val, best_res = None, math.inf, None
    for start in starts:
        x0 = project_capped_simplex(start, prob.upper)
        res = optimize.minimize(
            prob.objective, x0, method="SLSQP", bounds=list(zip(np.zeros(n), prob.upper)),
            constraints=[{"type": "eq", "fun": lambda p: np.sum(p) - 1.0}],
            options={"ftol": 1e-12, "maxiter": 500},
        )
        x = project_capped_simplex(res.x, prob.upper)
        val = prob.objective(x)
        if val < best_val:
            best, best_val, best_res = x, val, res
    return prob.plan(best, "optimised", bool(best_res.success), str(best_res.message))


def evaluate_mixture(weights: Mapping[str, float], targets, laws, params, total_tokens, unique_tokens,
                     max_epochs=4.0, method: str = "given") -> MixturePlan:
    """Predicted losses (and cap violations) of given rates over the same candidate languages."""
    prob = _Problem(targets, laws, params, total_tokens, unique_tokens, max_epochs, sorted(weights))
    p = np.array([float(weights[l]) for l in prob.langs])
    if np.any(p < 0) or not p.sum() > 0:
        raise PlanError(f"mixture rates must be ≥ 0 with a positive sum, got {dict(weights)}")
    return prob.plan(p / p.sum(), method)


def compare_mixtures(targets, laws, params, total_tokens, unique_tokens, max_epochs: float = 4.0,
                     languages: Sequence[str] | None = None,
                     temperatures: Sequence[float] = (DEFAULT_TEMPERATURE,)) -> dict[str, MixturePlan]:
    """The optimised mixture, Unimax (same cap) and temperature sampling over the same languages."""
    from atlas_t5x import mixture_weights

    best = plan_mixture(targets, laws, params, total_tokens, unique_tokens, max_epochs, languages)
    langs = list(best.weights)
    sizes = {l: float(unique_tokens[l]) for l in langs}
    out = {"optimised": best}
    if not isinstance(max_epochs, Mapping):
        alloc = mixture_weights.unimax_allocation(sizes, total_tokens, max_epochs)
        out["unimax"] = evaluate_mixture(alloc, targets, laws, params, total_tokens, unique_tokens,
                                         max_epochs, "unimax")
    for T in temperatures:
        rates = mixture_weights.temperature_rates(sizes, T)
        out[f"temperature_T{T:.3g}"] = evaluate_mixture(rates, targets, laws, params, total_tokens,
                                                        unique_tokens, max_epochs, f"temperature T={T:.3g}")
    return out


def format_comparison(plans: Mapping[str, MixturePlan]) -> str:
    """A readable table: rates per language and predicted loss per target for each method."""
    first = next(iter(plans.values()))
    langs, targets = list(first.weights), list(first.loss_by_target)
    head = f"{'method':<22}" + "".join(f"{l:>8}" for l in langs) + " | " + "".join(
        f"{'L_' + t:>9}" for t in targets) + f"{'weighted':>10}"
    lines = [head, "-" * len(head)]
    for name, p in plans.items():
        line = f"{name:<22}" + "".join(f"{p.weights[l]:8.3f}" for l in langs) + " | " + "".join(
            f"{p.loss_by_target[t]:9.4f}" for t in targets) + f"{p.objective:10.4f}"
        if p.cap_violations:
            line += "  (exceeds caps: " + ", ".join(f"{l} +{v:.2f} ep" for l, v in p.cap_violations.items()) + ")"
        lines.append(line)
    lines += ["", f"{'epochs (D_l / U_l)':<22}" + "".join(f"{l:>8}" for l in langs)]
    for name, p in plans.items():
        lines.append(f"{name:<22}" + "".join(f"{p.epochs_by_lang[l]:8.2f}" for l in langs))
    return "\n".join(lines)


def plot_comparison(path, plans: Mapping[str, MixturePlan]) -> None:
    """Bars of the sampling rate per language for each method; the legend gives each method's
    weighted predicted loss; languages whose epoch cap a method exceeds are starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atlas_t5x import logio

    first = next(iter(plans.values()))
    langs = list(first.weights)
    width = 0.8 / len(plans)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(langs) + 3), 4))
    for i, (name, p) in enumerate(plans.items()):
        xs = np.arange(len(langs)) + (i - (len(plans) - 1) / 2) * width
        ax.bar(xs, [p.weights[l] for l in langs], width, label=f"{name}: weighted loss {p.objective:.4f}")
        for x, l in zip(xs, langs):
            if l in p.cap_violations:
                ax.annotate("*", (x, p.weights[l]), ha="center", va="bottom")
    ax.set_xticks(range(len(langs)), langs)
    ax.set_ylabel("sampling rate")
    ax.set_xlabel("language")
    ax.set_title("Mixture per method (predicted loss in nats/token; *: epoch cap exceeded)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    logio.write_png(path, fig)
