"""Fit data: schema rows (read by `atlas_t5x.logs`) or plain CSV tables → a points table (pandas).

Points table columns (one row per (run, step, target)):
  run, group (the trunk run of a cooldown branch, else the run), phase (what the point is:
  cooldown_end, final, stable, decay; see `select_point_rows`), step, target, mixture (name), loss (nats/token; by default the token cross-entropy `loss`),
  N (parameters), D (the target's own training tokens D_t), U (the target's unique tokens U_t),
  D_total (all training tokens), C (= 6·N·D_total FLOPs), p (the target's mixture weight),
  K (number of languages with positive mixture weight), D_by_lang / U_by_lang / weights (dicts).

Only `atlas_t5x.schema` and `atlas_t5x.logs` are shared with the training side; the law fits of a
points table (FitSpec, fit_points) are in `table_fit`, beside this module.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from atlas_t5x import logs, schema


class DataError(ValueError):
    """Input data cannot be used for fitting (names the file, column and value)."""


LOSS_FIELDS = ("loss", "bits_per_byte", "loss_unigram_norm")
MAP_KEYS = ("N", "D", "U", "loss", "C", "run", "target", "mixture", "step", "p", "K")


# -------------------------------------------------------------------------------------------------
# Rows → points (rows are read by atlas_t5x.logs.read_rows)


def _read_frame(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if p.suffix == ".parquet":
            return pd.read_parquet(p)
        return pd.read_csv(p)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot read table: {err}") from err


def check_row_values(row: Mapping[str, Any], loss_field: str) -> None:
    """Raises DataError naming the run, step, target, field and value of an unusable log row.

    The laws are fitted in log-loss, so the fitted loss must be finite and positive;
    `loss_unigram_norm` turns negative once a model beats the unigram baseline (docs/log_schema.md).
    """
    where = f"run {row['run']!r} step {row['step']} target {row['target']!r}"
    loss = float(row[loss_field])
    if not math.isfinite(loss) or loss <= 0:
        hint = (" (it is negative once the model beats a unigram model; fit --loss_field loss)"
                if loss_field == "loss_unigram_norm" and math.isfinite(loss) else "")
        raise DataError(f"{where}: {loss_field!r} = {loss!r} must be a positive finite loss in "
                        f"nats/token; the laws are fitted in log-loss{hint}")
    if not float(row["params"]) > 0:
        raise DataError(f"{where}: 'params' (N) = {row['params']!r} must be positive")
    if not float(row["tokens"]) >= 0:
        raise DataError(f"{where}: 'tokens' = {row['tokens']!r} must be non-negative")
    for lang, value in row["tokens_by_lang"].items():
        if not float(value) >= 0:
            raise DataError(f"{where}: tokens_by_lang[{lang!r}] = {value!r} must be non-negative")
    for lang, value in row["unique_by_lang"].items():
        if not float(value) > 0:
            raise DataError(f"{where}: unique_by_lang[{lang!r}] (U) = {value!r} must be positive")
    for lang, value in row["mixture"]["weights"].items():
        if not (math.isfinite(float(value)) and float(value) >= 0):
            raise DataError(f"{where}: mixture weight of {lang!r} = {value!r} must be non-negative")


POINT_SETS = ("default", "stable", "stable_offset", "all")


def select_point_rows(rows: Sequence[Mapping[str, Any]], points: str = "default") -> list[dict[str, Any]]:
    """The rows of one point set, each with `phase` (what the point is) and `group` (its trunk).

    The one point filter every fit uses (atlas-fit --points, the report, the curse fit, live
    prediction). Intermediate evaluations of one schedule are not independent (N, D) points: only
    a completed schedule is [Hägele et al. 2024]. Point sets:
      default        end points: the last evaluation of each cooldown branch (`cooldown_end`) and
                     of each run that completed its schedule (`final`). Logs written before these
                     labels existed: a run's last row counts as final when it is in `decay`.
      stable         stable-phase rows only (constant learning rate; biased high by the missing
                     cooldown, the same way at every point).
      stable_offset  stable rows lowered by a fitted constant offset for the missing cooldown
                     (`stable_offset`) plus the end points.
      all            every post-warmup row (stable, decay and end points together).
    `group`: the run's `trunk` when it is a cooldown branch, else the run (grouped held-out
    splits and the bootstrap keep a trunk and its branches together).
    """
    if points not in POINT_SETS:
        raise DataError(f"unknown point set {points!r}; choose one of {', '.join(POINT_SETS)}")
    last: dict[str, int] = {}
    labelled: set[str] = set()
    for row in rows:
        last[row["run"]] = max(last.get(row["run"], -1), int(row["step"]))
        if row["schedule_phase"] in schema.END_PHASES:
            labelled.add(row["run"])
    out = []
    for row in rows:
        phase = row["schedule_phase"]
        if (phase == "decay" and row["run"] not in labelled and int(row["step"]) == last[row["run"]]
                and row.get("init", "scratch") == "scratch"):
            phase = "final"   # a legacy log's completed decay
        keep = {"default": phase in schema.END_PHASES,
                "stable": phase == "stable",
                "stable_offset": phase == "stable" or phase in schema.END_PHASES,
                "all": phase != "warmup"}[points]
        if keep:
            out.append({**row, "phase": phase, "group": str(row.get("trunk") or row["run"])})
    return out


def stable_offset(points: pd.DataFrame) -> dict[str, float]:
    """Per target, the constant (nats/token) by which stable-phase losses exceed completed ones.

    Each end point whose group (trunk) has stable points on both sides of its token count D_total
    is paired with the trunk's stable loss interpolated there (linear in log-tokens); the offset is
    the median of (stable − end) over the pairs, floored at 0 [our choice]. Targets without a pair
    get 0.
    """
    out: dict[str, float] = {}
    for target, sub in points.groupby("target"):
        diffs = []
        stable = sub[sub["phase"] == "stable"]
        for rec in sub[sub["phase"].isin(schema.END_PHASES)].itertuples():
            trunk = stable[stable["group"] == rec.group].sort_values("D_total")
            x = np.log(trunk["D_total"].to_numpy(float))
            if len(x) >= 2 and x[0] <= math.log(rec.D_total) <= x[-1]:
                diffs.append(float(np.interp(math.log(rec.D_total), x, trunk["loss"].to_numpy(float)))
                             - float(rec.loss))
        out[str(target)] = max(float(np.median(diffs)), 0.0) if diffs else 0.0
    return out


def rows_to_points(
    rows: Iterable[Mapping[str, Any]],
    loss_field: str = "loss",
    targets: Sequence[str] | None = None,
    points: str = "default",
    final_only: bool = False,
    include_finetunes: bool = False,
) -> pd.DataFrame:
    """Log rows → points table. Rows with no training tokens yet are dropped.

    `loss_field`: "loss" (token cross-entropy, the default), "bits_per_byte", or
    "loss_unigram_norm" (only usable while it stays positive: the laws are fitted in log-loss).
    `points`: the point set (`select_point_rows`; default: cooldown ends and final evaluations).
    The table records each point's `phase` and `group` (trunk run); with "stable_offset" the
    stable losses are lowered by `stable_offset` (recorded in `points.attrs["stable_offset"]`).
    `final_only`: keep only each run's last evaluated step.
    `include_finetunes`: keep runs started from a checkpoint (`init` != "scratch"). Off by default:
    their token counts start at the finetune, so a law over (N, D) would misread them.
    A target absent from a run's mixture gets D = 0 and U = 1 (only ATLAS transfer terms explain it).
    Raises DataError naming the run/step/target of a row with a non-positive or NaN loss,
    non-positive N or U, or negative token counts.
    """
    if loss_field not in LOSS_FIELDS:
        raise DataError(f"unknown loss field {loss_field!r}; choose one of {LOSS_FIELDS}")
    rows = [r for r in rows if not targets or r["target"] in targets]
    records = []
    for row in select_point_rows(rows, points):
        if row["tokens"] <= 0:
            continue
        if not include_finetunes and row.get("init", "scratch") != "scratch":
            continue
        check_row_values(row, loss_field)
        tgt = row["target"]
        tokens = {k: float(v) for k, v in row["tokens_by_lang"].items()}
        unique = {k: float(v) for k, v in row["unique_by_lang"].items()}
        weights = {k: float(v) for k, v in row["mixture"]["weights"].items()}
        records.append({
            "run": row["run"], "group": row["group"], "phase": row["phase"],
            "step": int(row["step"]), "target": tgt,
            "mixture": row["mixture"]["name"], "loss": float(row[loss_field]),
            "N": float(row["params"]), "D": tokens.get(tgt, 0.0), "U": unique.get(tgt, 1.0),
            "D_total": float(row["tokens"]), "C": 6.0 * float(row["params"]) * float(row["tokens"]),
            "p": weights.get(tgt, 0.0), "K": float(sum(1 for w in weights.values() if w > 0)),
            "D_by_lang": tokens, "U_by_lang": unique, "weights": weights,
        })
    if not records:
        hint = (" (the default point set keeps only completed schedules: cooldown_end and final "
                "evaluations; --points all keeps every post-warmup evaluation)" if points == "default" else "")
        raise DataError(f"no usable points in point set {points!r} (after filtering targets, schedule "
                        f"phases, step 0 and finetunes; see include_finetunes){hint}")
    table = pd.DataFrame.from_records(records)
    if final_only:
        last = table.groupby("run")["step"].transform("max")
        table = table[table["step"] == last].reset_index(drop=True)
    if points == "stable_offset":
        offsets = stable_offset(table)
        stable = (table["phase"] == "stable").to_numpy()
        table.loc[stable, "loss"] = table.loc[stable, "loss"] - table.loc[stable, "target"].map(offsets)
        if (table["loss"] <= 0).any():
            raise DataError("stable_offset: a lowered stable loss is not positive; use --points default")
        table.attrs["stable_offset"] = offsets
    return table


def drop_untrained_targets(points: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(points whose target had training tokens, D_t > 0; how many points were dropped).

    Only ATLAS explains the loss on a target a run never trained on (through its transfer terms);
    the other laws read the target's own tokens D_t, and laws compared with each other must share
    one point set.
    """
    untrained = (points["D"] <= 0).to_numpy()
    return points[~untrained].reset_index(drop=True), int(untrained.sum())


def monolingual_points(points: pd.DataFrame) -> pd.DataFrame:
    """The points of runs trained on their target alone (the paper's monolingual setting, spec §5).

    A run is monolingual in its target when the target is the only language with positive mixture
    weight; a table without mixture weights (plain tables) falls back to the mixture's name
    (`mono*`) and D_t > 0.
    """
    keep = []
    for target, weights, name, d in zip(points["target"], points["weights"], points["mixture"], points["D"]):
        positive = [lang for lang, w in (weights or {}).items() if w > 0]
        keep.append(positive == [target] if positive else (str(name).lower().startswith("mono") and d > 0))
    return points[np.asarray(keep, bool)].reset_index(drop=True)


def load_points(source, **kwargs) -> pd.DataFrame:
    """Points from eval logs (a file, folder or glob), an exported CSV/Parquet table, or rows;
    read by `atlas_t5x.logs.read_rows`, then `rows_to_points(rows, **kwargs)`."""
    return rows_to_points(logs.read_rows(source), **kwargs)


# -------------------------------------------------------------------------------------------------
# Plain tables (--table FILE --map N=col,D=col,U=col,loss=col[,C=col])


def parse_map(text: str) -> dict[str, str]:
    """'N=params,D=tokens,loss=val_loss' → {'N': 'params', …}; unknown keys are an error."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise DataError(f"--map entry {item!r} is not KEY=column")
        key, col = (s.strip() for s in item.split("=", 1))
        if key not in MAP_KEYS:
            raise DataError(f"--map key {key!r} unknown; known keys: {', '.join(MAP_KEYS)}")
        out[key] = col
    return out


def load_table(path: str, mapping: Mapping[str, str], drop_highest_loss: int = 0) -> pd.DataFrame:
    """Points from a plain CSV/Parquet table with columns named by `mapping`.

    Needs N, loss and D or C (then D = C/(6N), tokens); U is optional (defaults to D: one epoch).
    `drop_highest_loss`: drop that many highest-loss rows first (Epoch's recipe drops 5).
    """
    frame = _read_frame(path)
    for key in ("N", "loss"):
        if key not in mapping:
            raise DataError(f"--map must name a column for {key}")
    if "D" not in mapping and "C" not in mapping:
        raise DataError("--map must name a column for D (tokens) or C (FLOPs)")
    for key, col in mapping.items():
        if col not in frame.columns:
            raise DataError(f"{path}: column {col!r} (for {key}) not found; columns: {list(frame.columns)}")
    if frame.empty:
        raise DataError(f"{path}: no points to fit (the table has a header but no rows)")

    def numeric(key: str) -> np.ndarray:
        col = mapping[key]
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raw = frame[col].iloc[i]
            raw = float(raw) if isinstance(raw, (int, float, np.number)) else raw
            raise DataError(f"{path}: column {col!r} ({key}) has a missing, non-numeric or infinite value "
                            f"at row {i + 1}: {raw!r}")
        if np.any(values <= 0):
            i = int(np.argmax(values <= 0))
            raise DataError(f"{path}: column {col!r} ({key}) must be positive; row {i + 1} has "
                            f"{float(values[i])!r}")
        return values

    N = numeric("N")
    loss = numeric("loss")
    if "D" in mapping:
        D = numeric("D")
    else:
        D = numeric("C") / (6.0 * N)
    C = numeric("C") if "C" in mapping else 6.0 * N * D
    U = numeric("U") if "U" in mapping else D.copy()
    points = pd.DataFrame({
        "run": frame[mapping["run"]].astype(str) if "run" in mapping else [f"row{i}" for i in range(len(frame))],
        "step": frame[mapping["step"]].astype(int) if "step" in mapping else 0,
        "target": frame[mapping["target"]].astype(str) if "target" in mapping else "all",
        "mixture": frame[mapping["mixture"]].astype(str) if "mixture" in mapping else "table",
        "loss": loss, "N": N, "D": D, "U": U, "D_total": D, "C": C,
        "p": numeric("p") if "p" in mapping else 1.0,
        "K": numeric("K") if "K" in mapping else 1.0,
    })
    if drop_highest_loss < 0 or drop_highest_loss >= len(points) > 0:
        raise DataError(f"{path}: cannot drop the {drop_highest_loss} highest losses of {len(points)} rows")
    if drop_highest_loss:
        points = points.sort_values("loss", kind="stable").iloc[:-drop_highest_loss]
        points = points.sort_index().reset_index(drop=True)
    points["group"] = points["run"]
    points["phase"] = "final"   # a plain table's rows are taken as completed runs
    points["D_by_lang"] = [{t: d} for t, d in zip(points["target"], points["D"])]
    points["U_by_lang"] = [{t: u} for t, u in zip(points["target"], points["U"])]
    # A named mixture column carries no per-language composition: leave weights empty so the
    # held-out M split classifies mixtures by name (mono*, bi*, *unimax*).
    points["weights"] = [{} if "mixture" in mapping else {t: 1.0} for t in points["target"]]
    return points


# -------------------------------------------------------------------------------------------------
# Transfer matrix and ATLAS inputs


def load_transfer_matrix(path: str | os.PathLike) -> pd.DataFrame:
    """Bilingual transfer scores; rows = target, columns = source; empty diagonal → NaN.

    Raises DataError naming the file when it is absent, unreadable or not numeric."""
    if not Path(path).is_file():
        raise DataError(f"transfer matrix {path}: no such file")
    try:
        frame = pd.read_csv(path, index_col=0)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"transfer matrix {path}: cannot read CSV: {err}") from err
    frame.index = frame.index.astype(str)
    frame.columns = frame.columns.astype(str)
    try:
        return frame.astype(float)
    except ValueError as err:
        raise DataError(f"transfer matrix {path}: non-numeric score ({err})") from err


def cosampled_languages(points: pd.DataFrame, target: str, k: int = 3, rule: str = "cosampling",
                        transfer_matrix: pd.DataFrame | None = None) -> list[str]:
    """K_t: the transfer languages of `target`.

    rule="cosampling": the k languages most often sampled together with the target across the
    fitted runs' mixtures (counted once per run, ties broken by summed mixture weight, then
    code). rule="matrix": the k best sources for the target in the transfer matrix.
    """
    if rule == "matrix":
        if transfer_matrix is None or target not in transfer_matrix.index:
            raise DataError(f"no transfer-matrix row for target {target!r}")
        row = transfer_matrix.loc[target].drop(labels=[target], errors="ignore").dropna()
        return list(row.sort_values(ascending=False, kind="stable").index[:k])
    if rule != "cosampling":
        raise DataError(f"unknown transfer-language rule {rule!r} (cosampling or matrix)")
    runs = points[points["target"] == target].drop_duplicates("run")
    counts: dict[str, int] = {}
    mass: dict[str, float] = {}
    for weights in runs["weights"]:
        if weights.get(target, 0.0) <= 0:
            continue
        for lang, w in weights.items():
            if lang != target and w > 0:
                counts[lang] = counts.get(lang, 0) + 1
                mass[lang] = mass.get(lang, 0.0) + w
    ranked = sorted(counts, key=lambda l: (-counts[l], -mass[l], l))
    return ranked[:k]


def atlas_inputs(points: pd.DataFrame, transfer: Sequence[str], with_other: bool = True) -> dict[str, np.ndarray]:
    """Law inputs for ATLAS: N, D, U (target) + D_/U_ per transfer language + D_other, U_other.

    U_other = the summed unique tokens of the other languages in each run [our choice]; languages
    a run did not train on contribute D = 0 (and U = 1 as a harmless placeholder).
    """
    X: dict[str, np.ndarray] = {k: points[k].to_numpy(np.float64) for k in ("N", "D", "U")}
    for lang in transfer:
        X[f"D_{lang}"] = np.array([d.get(lang, 0.0) for d in points["D_by_lang"]], np.float64)
        X[f"U_{lang}"] = np.array([max(u.get(lang, 1.0), 1.0) for u in points["U_by_lang"]], np.float64)
    if with_other:
        d_other, u_other = [], []
        for tgt, d, u in zip(points["target"], points["D_by_lang"], points["U_by_lang"]):
            others = [l for l in d if l != tgt and l not in transfer]
            d_other.append(sum(d[l] for l in others))
            u_other.append(max(sum(u.get(l, 0.0) for l in others), 1.0))
        X["D_other"] = np.array(d_other, np.float64)
        X["U_other"] = np.array(u_other, np.float64)
    return X


def law_inputs(law, points: pd.DataFrame) -> dict[str, np.ndarray]:
    """The inputs `law` reads, taken from the points table."""
    if law.name == "atlas":
        return atlas_inputs(points, law.option("transfer_langs", ()), law.option("with_other", False))
    out = {}
    for key in law.inputs:
        if law.name == "msl" and key == "D":
            # He et al. 2024: D is the run's total training tokens (the dataset size); the target's
            # share enters through its sampling ratio p (L_i(N, D, p_i)), not through D_t = p·D.
            column = "D_total" if "D_total" in points.columns else "D"   # a one-language table: D
            out[key] = points[column].to_numpy(np.float64)
            continue
        if key not in points.columns:
            raise DataError(f"law {law.name!r} needs column {key!r}, absent from the points table")
        out[key] = points[key].to_numpy(np.float64)
    return out


def tau_init(target: str, transfer: Sequence[str], matrix: pd.DataFrame | None) -> dict[str, float]:
    """Initial τ_i from the transfer matrix via laws.bts_to_tau (0 where the pair is unknown)."""
    from atlas_t5x.scaling.laws import bts_to_tau

    out = {}
    for lang in transfer:
        bts = float("nan")
        if matrix is not None and target in matrix.index and lang in matrix.columns:
            bts = float(matrix.loc[target, lang])
        out[f"tau_{lang}"] = bts_to_tau(bts) if math.isfinite(bts) else 0.0
    return out


# -------------------------------------------------------------------------------------------------
# Synthetic study (tests and benchmarks): losses drawn from a known multilingual ATLAS law


def synthetic_study(
    languages: Sequence[str] = ("en", "de", "fr", "es", "pt", "ru", "zh", "ja"),
    sizes: Sequence[float] = (2e7, 6e7, 2e8, 6e8, 2e9, 6e9),
    evals_per_run: int = 4,
    true_params: Mapping[str, float] | None = None,
    tau: Mapping[tuple[str, str], float] | None = None,
    tau_other: float = 0.05,
    noise: float = 0.003,
    n_transfer: int = 3,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """A points table from known ATLAS parameters, with repetition, transfer and noise.

    Mixtures: monolingual, 50/50 bilingual pairs, a Unimax-like uniform mixture over all
    languages, and 4-language "capacity" mixtures (the unseen-mixture split). Unique tokens span
    two orders of magnitude so small languages repeat many epochs. Returns (points, truth) where
    truth[target] holds the law's parameters (τ keyed tau_<lang> for its co-sampled K_t).
    """
    from atlas_t5x.scaling.laws import make_law

    rng = np.random.default_rng(seed)
    langs = list(languages)
    base = dict(E=1.7, A=420.0, B=1900.0, alpha=0.33, beta=0.31, **{"lambda": 0.12})
    base.update(true_params or {})
    unique = {l: float(u) for l, u in zip(langs, np.geomspace(3e10, 2e8, len(langs)))}
    mixtures: list[tuple[str, dict[str, float]]] = [(f"mono_{l}", {l: 1.0}) for l in langs]
    mixtures += [(f"bi_{a}_{b}", {a: 0.5, b: 0.5}) for i, a in enumerate(langs) for b in langs[i + 1:]]
    mixtures.append(("unimax", {l: 1.0 / len(langs) for l in langs}))
    for v in range(max(1, len(langs) // 2)):
        # up to 4 distinct languages (fewer when the study has fewer), equal weights summing to 1
        group = list(dict.fromkeys(langs[(v * 3 + j) % len(langs)] for j in range(4)))
        mixtures.append((f"cap4v{v}", {l: 1.0 / len(group) for l in group}))
    records = []
    for name, weights in mixtures:
        sizes_here = sizes if not name.startswith("bi_") else sizes[1::2]
        for N in sizes_here:
            totals = np.geomspace(2.0 * N, 60.0 * N, evals_per_run) * float(rng.uniform(0.8, 1.25))
            for step, total in enumerate(totals, start=1):
                tokens = {l: w * total for l, w in weights.items()}
                for tgt in weights:
                    records.append({
                        "run": f"{name}_N{N:.0e}", "group": f"{name}_N{N:.0e}",
                        "phase": "final" if step == evals_per_run else "cooldown_end", "step": step, "target": tgt, "mixture": name,
                        "N": float(N), "D": tokens[tgt], "U": unique[tgt], "D_total": float(total),
                        "C": 6.0 * N * total, "p": weights[tgt], "K": float(len(weights)),
                        "D_by_lang": dict(tokens), "U_by_lang": {l: unique[l] for l in weights},
                        "weights": dict(weights), "loss": np.nan,
                    })
    points = pd.DataFrame.from_records(records)
    truth: dict[str, dict[str, float]] = {}
    for tgt in langs:
        mask = (points["target"] == tgt).to_numpy()
        transfer = cosampled_languages(points, tgt, n_transfer)
        law = make_law("atlas", transfer_langs=transfer, with_other=True)
        params = dict(base, tau_other=tau_other)
        for i, src in enumerate(transfer):
            default = 0.35 / (i + 1)
            params[f"tau_{src}"] = float((tau or {}).get((tgt, src), default))
        truth[tgt] = params
        clean = law.predict(params, atlas_inputs(points[mask], transfer, True))
        points.loc[mask, "loss"] = clean * np.exp(noise * rng.standard_normal(mask.sum()))
    return points, truth
