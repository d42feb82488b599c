"""Cross-lingual transfer from a user's runs (spec §2): BTS, FAS, estimated pairs, statistics.

- **BTS** (bilingual transfer score): BTS(s→t) = 2 − σ_bi(L_t^mono(d_mono)) / d_mono, where
  L_t^mono(d) is the loss on t of the monolingual t run after d target tokens and σ_bi(ℓ) the
  total tokens (both languages) the 50/50 (s, t) bilingual run needs to reach ℓ on t. Both curves
  are interpolated linearly in log-tokens (warmup points left out, `curves.DEFAULT_PHASES`); σ_bi
  is the first crossing. A bilingual run that never reaches the loss within its range gives NaN
  with a reason (never extrapolated).
- **FAS** (finetuning adaptation score): finetunes of one multilingual checkpoint on single
  languages s, each evaluated on every target t:
  FAS(s→t) = (1/d_max)·∫_0^d_max (L_t^base(d) − L_{s→t}(d)) dd.
- **Estimated pairs**: features g̃_s, g̃_t, g̃_s − g̃_t, δ̃(s→t) (spec §2.2) and a 300-tree
  random forest trained on the measured BTS pairs, with 5-fold cross-validated R² and Spearman.
- **Statistics** of a matrix: same- vs different-script means, family effect, A→B vs B→A
  Pearson correlation, top-5 sources per target.

Matrices are pandas DataFrames with rows = target, columns = source, NaN where unmeasured.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from atlas_t5x import languages as langs_lib
from atlas_t5x.scaling import curves as cv


class TransferError(ValueError):
    """Runs or matrices that cannot give a transfer score (names the runs/languages involved)."""


# ---------------------------------------------------------------------------------------------
# BTS


@dataclasses.dataclass(frozen=True)
class BTSMeasurement:
    """One BTS(source→target) measurement. `bts` is NaN when undefined; `status` says why.

    A bilingual run that never reaches the monolingual loss is censored, not undefined: it would
    need more than its last σ tokens, so BTS < 2 − σ_last/d_mono. `bts` then holds that upper
    bound and `censored` = "upper"."""

    source: str
    target: str
    bts: float
    d_mono: float            # target tokens of the monolingual run at which its loss is read
    target_loss: float       # L_t^mono(d_mono), nats/token
    sigma: float             # total bilingual tokens to reach target_loss (NaN if not reached)
    status: str              # ok | never_reached | reached_before_first_eval | d_mono_outside_mono_run
    bilingual_run: str
    monolingual_run: str
    params: int
    censored: str = ""       # "" (measured) or "upper" (bts is an upper bound: BTS < bts)


def bts_from_curves(mono: cv.Curve, bilingual: cv.Curve, d_mono: float) -> tuple[float, float, float, str]:
    """(BTS, target loss, σ_bi, status) from a monolingual and a bilingual curve on one target.

    `mono.x` are the monolingual run's target tokens; `bilingual.x` the bilingual run's total
    tokens. The crossing is interpolated in log-tokens; nothing is extrapolated. When the
    bilingual curve never reaches the level, the returned BTS is the upper bound
    2 − (last bilingual tokens)/d_mono with status "never_reached".
    """
    if not d_mono > 0:
        raise TransferError(f"d_mono must be > 0 tokens, got {d_mono!r}")
    level = mono.loss_at(d_mono)
    if math.isnan(level):
        return math.nan, math.nan, math.nan, "d_mono_outside_mono_run"
    sigma, status = cv.first_crossing_log(bilingual.x, bilingual.loss, level)
    if status == "never":
        return 2.0 - float(bilingual.x[-1]) / d_mono, level, math.nan, "never_reached"
    if status == "before_start":
        return math.nan, level, math.nan, "reached_before_first_eval"
    return 2.0 - sigma / d_mono, level, sigma, "ok"


def measure_bts(
    rows: Sequence[Mapping[str, Any]],
    d_mono: float | None = None,
    loss_field: str = "loss",
    params: int | None = None,
    skipped: list[str] | None = None,
) -> list[BTSMeasurement]:
    """BTS for every (50/50 bilingual run, evaluated member language) in `rows`.

    Runs are matched by model size N: a bilingual (s, t) run of size N needs the from-scratch
    monolingual run of t with the same N. Finetunes are ignored.

    Args:
      rows: exported-log rows.
      d_mono: target tokens at which the monolingual loss is read. Default [our choice]: for each
        pair, the smaller of the monolingual run's last target-token count and half the
        bilingual run's last total-token count (so that a zero-transfer bilingual run can reach it).
      loss_field: which loss to compare ("loss", "loss_unigram_norm", "bits_per_byte").
      params: only runs of this size N; default: every size present.
      skipped: if given, a pair whose monolingual partner is missing is skipped and described
        here instead of raising.

    Raises:
      TransferError: a bilingual run evaluated on t whose monolingual partner (t, same N) is
        missing, naming both (unless `skipped` is given).
    """
    infos = cv.run_summaries(rows)
    # cooldown branches belong to their trunk's curve (curves.curve), not runs of their own
    scratch = {r: i for r, i in infos.items()
               if i.is_scratch and not i.is_branch and (params is None or i.params == params)}
    mono_by_key: dict[tuple[str, int], str] = {}
    for run, info in sorted(scratch.items()):
        if info.is_monolingual:
            mono_by_key.setdefault((info.languages[0], info.params), run)
    by_run_targets: dict[str, set[str]] = {}
    for row in rows:
        by_run_targets.setdefault(row["run"], set()).add(row["target"])

    out: list[BTSMeasurement] = []
    for run, info in sorted(scratch.items()):
        if not info.is_bilingual_5050:
            continue
        a, b = info.languages
        for target, source in ((a, b), (b, a)):
            if target not in by_run_targets.get(run, set()):
                continue
            mono_run = mono_by_key.get((target, info.params))
            if mono_run is None:
                problem = (f"bilingual run {run!r} ({a}+{b}, N={info.params}) is evaluated on {target!r} "
                           f"but its partner, a from-scratch monolingual {target!r} run with "
                           f"N={info.params}, is missing from the logs")
                if skipped is None:
                    raise TransferError(problem)
                skipped.append(f"BTS({source}->{target}): {problem}")
                continue
            mono = cv.curve(rows, mono_run, target, x=f"lang:{target}", loss_field=loss_field)
            bi = cv.curve(rows, run, target, x="tokens", loss_field=loss_field)
            d = d_mono if d_mono is not None else min(mono.x[-1], bi.x[-1] / 2.0)
            bts, level, sigma, status = bts_from_curves(mono, bi, d)
            out.append(BTSMeasurement(source, target, bts, float(d), level, sigma, status, run,
                                      mono_run, info.params,
                                      censored="upper" if status == "never_reached" else ""))
    return out


def bts_matrix(measurements: Iterable[BTSMeasurement], languages: Sequence[str] | None = None,
               params: int | None = None) -> pd.DataFrame:
    """Rows = target, columns = source; NaN where unmeasured or undefined.

    Scores depend on model size, so one matrix holds one size: `params`, or by default the size
    with the most defined scores, the largest on a tie [our choice]. Several bilingual runs of one
    (source, target, size), e.g. seeds, are averaged over their defined scores [our choice].
    `matrix.attrs` records "params", "n_runs" (target -> source -> runs averaged) and
    "upper_bounds" (target -> [sources]: cells whose average includes a censored run, so the cell
    is an upper bound on the score; they stay in the matrix as such rather than leaving it).
    """
    meas = list(measurements)
    defined: dict[int, int] = {}
    for m in meas:
        defined[m.params] = defined.get(m.params, 0) + int(math.isfinite(m.bts) and not m.censored)
    size = params if params is not None else (
        max(defined, key=lambda n: (defined[n], n)) if defined else None)
    meas = [m for m in meas if m.params == size]
    codes = list(languages) if languages is not None else sorted(
        {m.source for m in meas} | {m.target for m in meas})
    mat = pd.DataFrame(np.nan, index=pd.Index(codes, name="target"), columns=pd.Index(codes, name="source"))
    values: dict[tuple[str, str], list[float]] = {}
    upper: dict[str, list[str]] = {}
    for m in meas:
        if m.target in mat.index and m.source in mat.columns and math.isfinite(m.bts):
            values.setdefault((m.target, m.source), []).append(m.bts)
            if m.censored and m.source not in upper.get(m.target, []):
                upper.setdefault(m.target, []).append(m.source)
    n_runs: dict[str, dict[str, int]] = {}
    for (t, s), v in values.items():
        mat.loc[t, s] = float(np.mean(v))
        n_runs.setdefault(t, {})[s] = len(v)
    mat.attrs["params"] = size
    mat.attrs["n_runs"] = n_runs
    mat.attrs["upper_bounds"] = upper
    return mat


def matrix_to_csv(matrix: pd.DataFrame) -> str:
    """CSV text in the layout of ../shared/data/atlas_bts_*.csv: header cell "target\\source", rows
    target, columns source, 4 decimals, empty where unmeasured."""
    frame = matrix.copy()
    frame.index.name = "target\\source"
    frame.columns.name = None
    return frame.to_csv(float_format="%.4f")


def read_matrix(path) -> pd.DataFrame:
    """A matrix CSV (first column = target, header = sources), e.g. ../shared/data/atlas_bts_38x38.csv."""
    frame = pd.read_csv(path, index_col=0)
    frame.index = frame.index.astype(str)
    frame.columns = frame.columns.astype(str)
    frame.index.name, frame.columns.name = "target", "source"
    return frame.astype(float)


# ---------------------------------------------------------------------------------------------
# FAS


@dataclasses.dataclass(frozen=True)
class FinetuneScores:
    """FAS and the spec's pair ingredients from single-language finetunes of one checkpoint."""

    fas: pd.DataFrame            # rows target, cols source
    delta: pd.DataFrame          # δ(s→t) = L_{s→t}(d_max) − L_t^base(d_max), rows target, cols source
    self_gain: pd.Series         # g_l = FAS(l→l), the self-finetuning gain [our choice of measure]
    d_max: float                 # target-stage tokens integrated over
    base: str                    # where L^base came from


def _base_curves(rows, infos, finetunes, targets, loss_field):
    """L_t^base(d): a run continuing the checkpoint on a multilingual mixture, else its d=0 loss."""
    init = infos[finetunes[0]].init
    cont = [r for r, i in infos.items() if i.init == init and not i.is_monolingual]
    if cont:
        run = sorted(cont)[0]
        curves = {}
        for t in targets:
            c = cv.curve(rows, run, t, x="tokens", loss_field=loss_field, phases=None)
            curves[t] = (lambda d, c=c: c.loss_at(d))
        return curves, f"continued run {run!r}"
    start: dict[str, float] = {}
    for row in rows:
        if row.get("run") in finetunes and int(row.get("tokens", 1)) == 0:
            start.setdefault(row["target"], float(row[loss_field]))
    where = "checkpoint loss at tokens=0"
    source = _checkpoint_source(init, infos)
    if source is not None and any(t not in start for t in targets):
        run, step = source   # the run that wrote the checkpoint, evaluated at (or just before) its step
        best: dict[str, tuple[int, float]] = {}
        for row in rows:
            s, t = int(row.get("step", 0)), row.get("target")
            if row.get("run") == run and (step is None or s <= step) and s >= best.get(t, (-1, 0.0))[0]:
                best[t] = (s, float(row[loss_field]))
        for t, (_, v) in best.items():
            start.setdefault(t, v)
        where = f"the loss of run {run!r} at the checkpoint's step (constant) [our choice]"
    missing = [t for t in targets if t not in start]
    if missing:
        raise TransferError(
            f"FAS needs the checkpoint's own loss on every target: no run continuing {init!r} on a "
            f"multilingual mixture, no tokens=0 evaluation in the finetunes and no evaluation of the "
            f"run that wrote the checkpoint for {missing}"
        )
    return {t: (lambda d, v=start[t]: v) for t in targets}, where


def _checkpoint_source(init: str, infos) -> tuple[str, int | None] | None:
    """(run, step) of the run in the logs whose folder holds the checkpoint `init`
    (".../<run>/checkpoints/<step>" or ".../<run>"), else None."""
    parts = [p for p in str(init).replace("\\", "/").split("/") if p]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in infos:
            rest = parts[i + 1:]
            step = int(rest[-1]) if rest and rest[-1].isdigit() else None
            return parts[i], step
    return None


def finetune_scores(rows: Sequence[Mapping[str, Any]], loss_field: str = "loss",
                    d_max: float | None = None, checkpoint: str | None = None) -> FinetuneScores:
    """FAS(s→t) from monolingual finetunes of one checkpoint (runs with init != "scratch").

    d_max defaults to the shortest finetune's last target-stage token count. The integral is a
    trapezoid over each curve's points in linear tokens, starting at the first evaluation
    (normalised by the length covered) [our choice].
    """
    infos = cv.run_summaries(rows)
    fts = [r for r, i in sorted(infos.items()) if not i.is_scratch and i.is_monolingual and not i.is_branch]
    if checkpoint is not None:
        fts = [r for r in fts if infos[r].init == checkpoint]
    if not fts:
        raise TransferError("no monolingual finetune runs (init != 'scratch') in the logs")
    inits = {infos[r].init for r in fts}
    if len(inits) > 1:
        raise TransferError(f"finetunes start from several checkpoints {sorted(inits)}; pass checkpoint=")
    sources = sorted({infos[r].languages[0] for r in fts})
    targets = sorted({row["target"] for row in rows if row.get("run") in fts})
    ft_curves = {(infos[r].languages[0], t): cv.curve(rows, r, t, x="tokens", loss_field=loss_field, phases=None)
                 for r in fts for t in cv.targets_of(rows, r)}
    if d_max is None:
        d_max = min(c.x[-1] for c in ft_curves.values())
    base, base_name = _base_curves(rows, infos, fts, targets, loss_field)
    fas = pd.DataFrame(np.nan, index=pd.Index(targets, name="target"), columns=pd.Index(sources, name="source"))
    delta = fas.copy()
    for (s, t), c in ft_curves.items():
        keep = c.x <= d_max * (1 + 1e-9)
        x, y = c.x[keep], c.loss[keep]
        if x.size == 0:
            continue
        gap = np.array([base[t](d) for d in x]) - y
        if np.any(np.isnan(gap)):
            continue
        fas.loc[t, s] = float(np.trapezoid(gap, x) / (x[-1] - x[0])) if x.size > 1 else float(gap[0])
        delta.loc[t, s] = float(y[-1] - base[t](x[-1]))
    gain = pd.Series({l: fas.loc[l, l] for l in sources if l in fas.index}, dtype=float)
    return FinetuneScores(fas, delta, gain, float(d_max), base_name)


# ---------------------------------------------------------------------------------------------
# Estimated pairs


FEATURE_NAMES = ("g_s", "g_t", "g_s_minus_g_t", "delta")


def pair_features(self_gain: Mapping[str, float], delta: pd.DataFrame) -> pd.DataFrame:
    """Spec §2.2 features per (source, target): g̃_s, g̃_t, g̃_s − g̃_t, δ̃(s→t).

    g is z-scored over all languages; δ is z-scored within each target (over its sources).
    Index: MultiIndex (source, target).
    """
    g = pd.Series(self_gain, dtype=float).dropna()
    if g.size < 2 or g.std(ddof=0) == 0:
        raise TransferError("self-finetuning gains need at least two languages with different values")
    gz = (g - g.mean()) / g.std(ddof=0)
    recs = []
    for t in delta.index:
        row = delta.loc[t].dropna()
        sd = row.std(ddof=0)
        for s, d in row.items():
            if s == t or s not in gz or t not in gz:
                continue
            dz = 0.0 if not sd > 0 else (d - row.mean()) / sd
            recs.append((s, t, gz[s], gz[t], gz[s] - gz[t], dz))
    frame = pd.DataFrame(recs, columns=("source", "target") + FEATURE_NAMES)
    return frame.set_index(["source", "target"])


@dataclasses.dataclass(frozen=True)
class PairEstimate:
    """Random-forest estimates of unmeasured BTS pairs and its cross-validated quality."""

    matrix: pd.DataFrame         # measured values kept, unmeasured filled by the forest
    estimated: pd.DataFrame      # the forest's predictions only (NaN where measured)
    cv_r2: float
    cv_spearman: float
    n_train: int


def estimate_pairs(bts: pd.DataFrame, features: pd.DataFrame, n_trees: int = 300,
                   folds: int = 5, seed: int = 0) -> PairEstimate:
    """Trains a RandomForestRegressor on the measured BTS pairs; predicts the rest.

    Cross-validation: `folds`-fold KFold (shuffled, seeded) over measured pairs; R² and Spearman of
    the out-of-fold predictions.
    """
    from scipy import stats
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.model_selection import KFold, cross_val_predict

    measured, unmeasured = [], []
    for (s, t) in features.index:
        value = bts.loc[t, s] if (t in bts.index and s in bts.columns) else np.nan
        (measured if np.isfinite(value) else unmeasured).append((s, t))
    if len(measured) < max(folds, 2):
        raise TransferError(f"only {len(measured)} measured BTS pairs have features; need ≥ {max(folds, 2)}")
    X = features.loc[measured, list(FEATURE_NAMES)].to_numpy()
    y = np.array([bts.loc[t, s] for s, t in measured])
    forest = RandomForestRegressor(n_estimators=n_trees, random_state=seed, n_jobs=1)
    oof = cross_val_predict(forest, X, y, cv=KFold(folds, shuffle=True, random_state=seed))
    ss_res = float(np.sum((y - oof) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    rho = float(stats.spearmanr(y, oof).statistic)
    forest.fit(X, y)
    filled = bts.copy()
    estimated = pd.DataFrame(np.nan, index=bts.index, columns=bts.columns)
    if unmeasured:
        pred = forest.predict(features.loc[unmeasured, list(FEATURE_NAMES)].to_numpy())
        for (s, t), p in zip(unmeasured, pred):
            if t in filled.index and s in filled.columns:
                filled.loc[t, s] = p
                estimated.loc[t, s] = p
    return PairEstimate(filled, estimated, r2, rho, len(measured))


# ---------------------------------------------------------------------------------------------
# Statistics


@dataclasses.dataclass(frozen=True)
class TransferStats:
    """Summary of a transfer matrix (rows target, columns source)."""

    same_script_mean: float
    diff_script_mean: float
    same_family_mean: float
    diff_family_mean: float
    # mean by (same script?, same family?) cell, with counts: keys "script=1,family=0" etc.
    script_family_means: dict[str, float]
    script_family_counts: dict[str, int]
    asymmetry_pearson: float     # Pearson r between BTS(A→B) and BTS(B→A) over pairs with both
    n_symmetric_pairs: int
    top5: dict[str, list[str]]   # target -> its 5 best sources
    top5_source_counts: dict[str, int]  # source -> number of targets it is a top-5 source for
    # censored cells (matrix.attrs["upper_bounds"]) counted at their bound: a mean that includes
    # them is itself an upper bound; how many each group holds
    n_upper_bounds: int = 0
    upper_bounds_in: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def top_sources(matrix: pd.DataFrame, k: int = 5) -> dict[str, list[str]]:
    """The k sources with the highest score for each target (ties broken by code)."""
    out = {}
    for t in matrix.index:
        row = matrix.loc[t].drop(labels=[t], errors="ignore").dropna()
        out[t] = sorted(row.index, key=lambda s: (-row[s], s))[:k]
    return out


def transfer_stats(matrix: pd.DataFrame, k: int = 5) -> TransferStats:
    """Same/different script and family means, asymmetry correlation and top-k sources.

    Raises:
      ValueError: a language of the matrix has no script/family metadata (names all of them).
    """
    from scipy import stats

    codes = list(dict.fromkeys(list(matrix.index) + list(matrix.columns)))
    meta = langs_lib.require_metadata(codes)
    cells: dict[tuple[bool, bool], list[float]] = {(a, b): [] for a in (True, False) for b in (True, False)}
    censored: dict[tuple[bool, bool], int] = {k: 0 for k in cells}
    upper = matrix.attrs.get("upper_bounds", {}) or {}
    for t in matrix.index:
        for s in matrix.columns:
            v = matrix.loc[t, s]
            if s == t or not np.isfinite(v):
                continue
            key = (meta[s].script == meta[t].script, meta[s].family == meta[t].family)
            cells[key].append(float(v))
            censored[key] += int(s in upper.get(t, ()))

    def mean(values):
        return float(np.mean(values)) if values else math.nan

    same_script = cells[(True, True)] + cells[(True, False)]
    diff_script = cells[(False, True)] + cells[(False, False)]
    same_family = cells[(True, True)] + cells[(False, True)]
    diff_family = cells[(True, False)] + cells[(False, False)]
    a_to_b, b_to_a = [], []
    shared = [c for c in matrix.index if c in matrix.columns]
    for i, x in enumerate(shared):
        for y in shared[i + 1:]:
            v1, v2 = matrix.loc[y, x], matrix.loc[x, y]
            if np.isfinite(v1) and np.isfinite(v2):
                a_to_b.append(v1)
                b_to_a.append(v2)
    r = float(stats.pearsonr(a_to_b, b_to_a).statistic) if len(a_to_b) >= 3 else math.nan
    top = top_sources(matrix, k)
    counts: dict[str, int] = {}
    for sources in top.values():
        for s in sources:
            counts[s] = counts.get(s, 0) + 1
    label = lambda key: f"script={int(key[0])},family={int(key[1])}"  # noqa: E731
    return TransferStats(
        same_script_mean=mean(same_script), diff_script_mean=mean(diff_script),
        same_family_mean=mean(same_family), diff_family_mean=mean(diff_family),
        script_family_means={label(k_): mean(v) for k_, v in cells.items()},
        script_family_counts={label(k_): len(v) for k_, v in cells.items()},
        asymmetry_pearson=r, n_symmetric_pairs=len(a_to_b), top5=top,
        top5_source_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        n_upper_bounds=int(sum(censored.values())),
        upper_bounds_in={
            "same_script": censored[(True, True)] + censored[(True, False)],
            "diff_script": censored[(False, True)] + censored[(False, False)],
            "same_family": censored[(True, True)] + censored[(False, True)],
            "diff_family": censored[(True, False)] + censored[(False, False)],
            **{label(k_): v for k_, v in censored.items()}},
    )


# ---------------------------------------------------------------------------------------------
# Plot


def plot_matrix(matrix: pd.DataFrame, path, title: str = "Bilingual transfer score (row: target, column: source)",
                k: int = 5, estimated: pd.DataFrame | None = None) -> None:
    """Heatmap PNG (diverging colours centred at 0), the top-k sources per target marked with a dot;
    estimated cells (if given) hatched. `path`: a file path (written atomically) or a binary file
    object."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atlas_t5x import logio

    values = matrix.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    lim = float(np.max(np.abs(finite))) if finite.size and np.max(np.abs(finite)) > 0 else 1.0
    n_t, n_s = values.shape
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * n_s + 2), max(5, 0.28 * n_t + 1.5)))
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#d9d9d9")  # grey: no score, not BTS = 0
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(n_s), matrix.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(n_t), matrix.index, fontsize=7)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    cols = {c: j for j, c in enumerate(matrix.columns)}
    for i, (t, sources) in enumerate(top_sources(matrix, k).items()):
        for s in sources:
            ax.plot(cols[s], i, marker="o", color="black", markersize=3)
    if estimated is not None:
        est = estimated.reindex(index=matrix.index, columns=matrix.columns).to_numpy(dtype=float)
        for i, j in zip(*np.nonzero(np.isfinite(est))):
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", lw=0))
    fig.colorbar(im, ax=ax, shrink=0.8, label="BTS (> 0: the source helps the target)")
    notes = f"dots: top-{k} sources per target; grey: not measured or undefined"
    if estimated is not None and np.isfinite(estimated.to_numpy(dtype=float)).any():
        notes += "; hatched: random-forest estimate"
    width = int(fig.get_figwidth() * 11)   # characters that fit at this font size
    ax.set_title(textwrap.fill(title, width) + "\n" + textwrap.fill(notes, width), fontsize=9)
    fig.tight_layout()
    if hasattr(path, "write"):   # a binary file object
        fig.savefig(path, format="png", dpi=110)
        plt.close(fig)
    else:
        logio.write_png(path, fig)
