"""Pretrain from scratch vs finetune a multilingual checkpoint (spec §1.7).

For one target t and model size N, compare the loss of a from-scratch monolingual run with that of
a finetune (continued monolingual training of a multilingual checkpoint), both against the target
tokens of the target stage d. The crossover d* is where the from-scratch curve first drops to or
below the finetune curve (both interpolated in log-tokens on their common range, never
extrapolated); its compute is C* = 6·N·d* FLOPs (the target stage only).

Across sizes, C*(N) = a·N^b is fitted by least squares in log–log (every target's crossover at
every size) with a bootstrap interval that resamples model sizes. The paper's fit: C*(N) ≈ 1,113,708·N^1.65 FLOPs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from atlas_t5x.scaling import curves as cv

PAPER_A = 1_113_708.0
PAPER_B = 1.65
# The paper's crossovers at 2B parameters, in target tokens (spec §1.7; "2B" = scale 34).
PAPER_2B_PARAMS = 2_034_422_912
PAPER_2B_TOKENS = {"en": 144e9, "ja": 145e9, "pt": 148e9, "de": 160e9, "ru": 189e9, "vi": 234e9,
                   "es": 239e9, "zh": 283e9}


class CrossoverError(ValueError):
    """Runs that cannot give a crossover (names the run, target or size)."""


@dataclasses.dataclass(frozen=True)
class Crossover:
    """The crossover of one (target, N). `tokens`/`flops` are NaN unless status == "ok".

    status "beyond": the finetune stays ahead over the whole common range, so the crossover lies
    beyond its end — a censored result, `beyond_tokens` (a lower bound on d*) holds that end.
    `describe()` says it as "beyond X tokens"."""

    target: str
    params: int
    tokens: float            # d*, target tokens of the target stage
    flops: float             # 6·N·d*
    status: str              # ok | beyond | scratch_better_from_start | no_overlap
    common_range: tuple[float, float]
    scratch_run: str
    finetune_run: str
    beyond_tokens: float = math.nan   # status "beyond": d* > this many tokens (end of the common range)

    def describe(self) -> str:
        """The crossover in words: "d* tokens", "beyond X tokens", or the status."""
        if self.status == "ok":
            return f"{self.tokens:.4g} tokens"
        if self.status == "beyond":
            return f"beyond {self.beyond_tokens:.4g} tokens (the end of the finetune's measured range)"
        return self.status.replace("_", " ")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_crossover(scratch: cv.Curve, finetune: cv.Curve, params: int) -> Crossover:
    """First crossing of the from-scratch curve below the finetune curve, in log-tokens."""
    lo = max(scratch.x[0], finetune.x[0])
    hi = min(scratch.x[-1], finetune.x[-1])
    base = dict(target=scratch.target, params=int(params), scratch_run=scratch.run,
                finetune_run=finetune.run)
    if not lo < hi:
        return Crossover(tokens=math.nan, flops=math.nan, status="no_overlap",
                         common_range=(float(lo), float(hi)), **base)
    grid = np.unique(np.concatenate([scratch.x, finetune.x]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    gap = cv.interp_log(scratch.x, scratch.loss, grid) - cv.interp_log(finetune.x, finetune.loss, grid)
    # gap(d) = L_scratch − L_finetune is piecewise linear in log d between grid points
    d_star, status = cv.first_crossing_log(grid, gap, 0.0)
    status = {"ok": "ok", "never": "beyond", "before_start": "scratch_better_from_start"}[status]
    flops = 6.0 * params * d_star if status == "ok" else math.nan
    return Crossover(tokens=float(d_star), flops=float(flops), status=status,
                     common_range=(float(lo), float(hi)),
                     beyond_tokens=float(hi) if status == "beyond" else math.nan, **base)


def crossovers_from_runs(rows: Sequence[Mapping[str, Any]], loss_field: str = "loss") -> list[Crossover]:
    """Every (target, N) with a from-scratch monolingual run and a monolingual finetune.

    x is the target's own training tokens in each run (`tokens_by_lang[t]`, counted from the start
    of the finetune for finetuned runs). Several finetunes of one (t, N): each is compared.
    """
    infos = cv.run_summaries(rows)
    scratch: dict[tuple[str, int], str] = {}
    finetunes: dict[tuple[str, int], list[str]] = {}
    for run, info in sorted(infos.items()):
        if not info.is_monolingual or info.is_branch:   # branches are part of their trunk's curve
            continue
        key = (info.languages[0], info.params)
        if info.is_scratch:
            scratch.setdefault(key, run)
        else:
            finetunes.setdefault(key, []).append(run)
    out = []
    for key, fts in sorted(finetunes.items()):
        t, n = key
        if key not in scratch:
            raise CrossoverError(
                f"finetune run(s) {fts} of {t!r} with N={n} have no from-scratch monolingual "
                f"{t!r} run of the same size in the logs"
            )
        s_curve = cv.curve(rows, scratch[key], t, x=f"lang:{t}", loss_field=loss_field)
        for ft in fts:
            f_curve = cv.curve(rows, ft, t, x=f"lang:{t}", loss_field=loss_field)
            out.append(find_crossover(s_curve, f_curve, n))
    return out


# ---------------------------------------------------------------------------------------------
# C*(N) = a·N^b


@dataclasses.dataclass(frozen=True)
class CrossoverLaw:
    """C*(N) = a·N^b FLOPs, with bootstrap samples of (a, b) (may be empty)."""

    a: float
    b: float
    samples: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))
    n_sizes: int = 0
    size_range: tuple[float, float] = (math.nan, math.nan)

    def flops(self, N) -> np.ndarray:
        return self.a * np.asarray(N, dtype=np.float64) ** self.b

    def tokens(self, N) -> np.ndarray:
        """The crossover in target tokens: C*(N) / (6·N)."""
        N = np.asarray(N, dtype=np.float64)
        return self.flops(N) / (6.0 * N)

    def interval(self, N, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap percentile interval of C*(N) in FLOPs (NaN without samples)."""
        N = np.atleast_1d(np.asarray(N, dtype=np.float64))
        if self.samples.size == 0:
            nan = np.full(N.shape, np.nan)
            return nan, nan
        vals = self.samples[:, :1] * N[None, :] ** self.samples[:, 1:2]
        q = (1 - level) / 2 * 100
        return np.percentile(vals, q, axis=0), np.percentile(vals, 100 - q, axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "n_sizes": self.n_sizes, "size_range": list(self.size_range),
                "n_bootstrap": int(self.samples.shape[0])}

    def extrapolation_note(self, N: float, factor: float = 2.0) -> str:
        """A warning text when N lies more than `factor` outside the fitted sizes, else ""."""
        lo, hi = self.size_range
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo / factor <= N <= hi * factor:
            return ""
        return (f"N = {N:.3g} is far outside the model sizes C*(N) was fitted on "
                f"[{lo:.3g}, {hi:.3g}]: the crossover law is extrapolated")


PAPER_LAW = CrossoverLaw(PAPER_A, PAPER_B)


def fit_crossover_law(params: Sequence[float], flops: Sequence[float], n_boot: int = 1000,
                      seed: int = 0) -> CrossoverLaw:
    """Least squares of log C* = log a + b·log N over the points with a finite crossover (several
    targets per size allowed), and a bootstrap that resamples model sizes with replacement, each
    drawn size bringing all its points (resamples with fewer than two distinct sizes are skipped).
    """
    N = np.asarray(params, dtype=np.float64)
    C = np.asarray(flops, dtype=np.float64)
    ok = np.isfinite(N) & np.isfinite(C) & (N > 0) & (C > 0)
    N, C = N[ok], C[ok]
    sizes = np.unique(N)
    if sizes.size < 2:
        raise CrossoverError("C*(N) needs finite crossovers at two or more model sizes; "
                             f"got sizes {sizes.tolist()}")
    lx, ly = np.log(N), np.log(C)
    b, log_a = np.polyfit(lx, ly, 1)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(N == n) for n in sizes]
    samples = []
    for _ in range(n_boot):
        drawn = rng.integers(0, sizes.size, sizes.size)
        if np.unique(drawn).size < 2:
            continue
        idx = np.concatenate([members[i] for i in drawn])
        bb, la = np.polyfit(lx[idx], ly[idx], 1)
        samples.append((math.exp(la), bb))
    return CrossoverLaw(math.exp(log_a), float(b), np.array(samples).reshape(-1, 2), int(sizes.size),
                        (float(N.min()), float(N.max())))


# ---------------------------------------------------------------------------------------------
# Plots


def _draw_crossover(ax, scratch: cv.Curve, finetune: cv.Curve, result: Crossover, fontsize: float = 8) -> None:
    import matplotlib.ticker

    ax.plot(scratch.x, scratch.loss, "o-", ms=3, label=f"from scratch ({scratch.run})")
    ax.plot(finetune.x, finetune.loss, "s-", ms=3, label=f"finetuned ({finetune.run})")
    if result.status == "ok":
        ax.axvline(result.tokens, color="gray", ls="--")
        ax.annotate(f"d* = {result.tokens:.3g} tokens\nC* = {result.flops:.3g} FLOPs",
                    (result.tokens, ax.get_ylim()[1]), va="top", fontsize=fontsize)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())   # decades only: no overlapping labels
    ax.set_xlabel(f"{result.target} training tokens d of the target stage", fontsize=fontsize + 1)
    ax.set_ylabel(f"loss on {result.target} (nats/token)", fontsize=fontsize + 1)
    six_n = 6.0 * float(result.params)
    top = ax.secondary_xaxis("top", functions=(lambda d: d * six_n, lambda c: c / six_n))
    top.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    top.set_xlabel("target-stage compute 6·N·d (FLOPs)", fontsize=fontsize)
    ax.set_title(f"{result.target}, N = {result.params:.3g}: {result.status}", fontsize=fontsize + 1)
    ax.legend(fontsize=fontsize - 1)
    ax.grid(True, which="both", alpha=0.3)


def plot_crossover(path, scratch: cv.Curve, finetune: cv.Curve, result: Crossover) -> None:
    """Loss vs target tokens (compute on the top axis) of both runs, the crossover marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.3))
    _draw_crossover(ax, scratch, finetune, result)
    _save(fig, path)


def plot_crossovers(path, rows: Sequence[Mapping[str, Any]], results: Sequence[Crossover],
                    loss_field: str = "loss", max_panels: int = 9) -> None:
    """One panel per (target, N) comparison (the first `max_panels`), crossings marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(results)[:max_panels]
    if not shown:
        raise CrossoverError("no crossover results to plot")
    cols = min(3, len(shown))
    nrows = math.ceil(len(shown) / cols)
    size = (6.5, 4.6) if len(shown) == 1 else (4.6 * cols, 3.7 * nrows)
    fig, axes = plt.subplots(nrows, cols, figsize=size, squeeze=False)
    for ax, res in zip(axes.ravel(), shown):
        x = f"lang:{res.target}"
        _draw_crossover(ax, cv.curve(rows, res.scratch_run, res.target, x, loss_field),
                        cv.curve(rows, res.finetune_run, res.target, x, loss_field), res, fontsize=7)
    for ax in axes.ravel()[len(shown):]:
        ax.axis("off")
    more = f" (first {len(shown)} of {len(results)})" if len(results) > len(shown) else ""
    fig.suptitle(f"Pretrain from scratch vs finetune{more}", fontsize=10)
    _save(fig, path)


def plot_crossover_law(path, law: CrossoverLaw, params: Sequence[float] = (), flops: Sequence[float] = (),
                       points_label: str = "measured") -> None:
    """C*(N) points (`points_label`), the law a·N^b ("fit" when it has bootstrap samples, else
    "given") and its bootstrap band, the paper's law and the paper's 2B crossovers (spec §1.7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo_n = min([law.size_range[0]] + list(params) + [1e7]) if np.isfinite(law.size_range[0]) else 1e7
    hi_n = max([law.size_range[1]] + list(params) + [1e10]) if np.isfinite(law.size_range[1]) else 1e10
    grid = np.geomspace(lo_n, hi_n, 100)
    fig, ax = plt.subplots(figsize=(6, 4))
    kind = "fit" if law.samples.size else "given"
    ax.plot(grid, law.flops(grid), label=f"{kind} {law.a:.3g}·N^{law.b:.3f}")
    lo, hi = law.interval(grid)
    if np.all(np.isfinite(lo)):
        ax.fill_between(grid, lo, hi, alpha=0.25, label="95% bootstrap over sizes")
    ax.plot(grid, PAPER_LAW.flops(grid), "k:", label="paper 1,113,708·N^1.65")
    paper_n = np.full(len(PAPER_2B_TOKENS), PAPER_2B_PARAMS)
    ax.plot(paper_n, 6.0 * paper_n * np.array(list(PAPER_2B_TOKENS.values())), "k_", ms=10,
            label="paper, 2B models (8 languages)")
    if len(params):
        ax.plot(params, flops, "o", label=points_label)
    if np.isfinite(law.size_range[0]):
        ax.axvspan(*law.size_range, color="gray", alpha=0.1, lw=0, label="fitted sizes")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("crossover compute C* (target-stage FLOPs)")
    ax.set_title("Finetuning beats pretraining from scratch below C*(N)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    from atlas_t5x import logio

    fig.tight_layout()
    logio.write_png(path, fig)
