"""Cross-lingual transfer matrix from exported logs (or statistics of a given matrix).

  # BTS from monolingual + 50/50 bilingual runs, FAS + random-forest estimates from finetunes
  atlas-transfer runs/ --out out/transfer --d_mono 4e7
  # statistics and heatmap of an existing matrix (rows target, columns source)
  atlas-transfer --matrix out/transfer/bts_matrix.csv --out out/matrix_stats

Writes OUT/bts_matrix.csv (measured scores; rows target, columns source), OUT/bts_heatmap.png
(top-5 sources per target marked; estimated cells hatched), OUT/transfer.json (measurements,
statistics of the measured scores, forest quality) and, when single-language finetunes of one
checkpoint are present, OUT/fas_matrix.csv and OUT/bts_estimated.csv (measured + random-forest
estimates). Everything is computed before anything is written; exits with code 2 on bad input.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np

from atlas_t5x import logio, logs
from atlas_t5x.scaling import curves as cv
from atlas_t5x.scaling import transfer as tr
from atlas_t5x.cli import common


def _fmt(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


def load_matrix(path: str):
    """tr.read_matrix with every problem named by file and cell: not UTF-8, empty, a cell that is
    not a number or is NaN/±inf (an unmeasured pair is an empty cell), no measured score at all."""
    import pandas as pd

    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise tr.TransferError(f"{path}: cannot read matrix: {err.strerror or err}") from err
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise tr.TransferError(f"{path}: not a CSV matrix (not UTF-8 text: byte {data[err.start]:#04x} at "
                               f"offset {err.start})") from None
    try:
        cells = pd.read_csv(io.BytesIO(data), index_col=0, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise tr.TransferError(f"{path}: not a CSV matrix: {err}") from None
    if cells.shape[0] == 0 or cells.shape[1] == 0:
        raise tr.TransferError(f"{path}: the matrix is empty ({cells.shape[0]} rows, {cells.shape[1]} columns); "
                               "expected a header of source languages and one row per target")
    for target, row in cells.iterrows():
        for source, text in row.items():
            if text.strip() == "":
                continue  # a pair that was not measured
            try:
                value = float(text)
            except ValueError:
                raise tr.TransferError(f"{path}: cell (target {target}, source {source}) = {text!r} is not a "
                                       "number") from None
            if not math.isfinite(value):
                raise tr.TransferError(f"{path}: cell (target {target}, source {source}) is {text.strip()}: "
                                       "scores must be finite (leave the cell empty for a pair not measured)")
    matrix = tr.read_matrix(io.BytesIO(data))
    if not np.isfinite(matrix.to_numpy(dtype=float)).any():
        raise tr.TransferError(f"{path}: the matrix has no measured score (every cell is empty)")
    return matrix


def parse_args(argv):
    parser = common.ArgumentParser(prog="atlas-transfer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="?", help="exported logs: folder of runs, eval.jsonl or CSV/Parquet table")
    parser.add_argument("--matrix", help="an existing matrix CSV instead of logs (rows target, cols source)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--d_mono", deprecated=("--d-mono",), type=float, help="target tokens at which to read the monolingual loss "
                        "(default per pair: min(last monolingual target tokens, half the bilingual run's tokens))")
    parser.add_argument("--params", type=lambda v: int(float(v)),
                        help="only runs of this size N (parameters, e.g. 3e7; default: the size with the most scores)")
    parser.add_argument("--loss_field", deprecated=("--loss-field",), default="loss", choices=("loss", "loss_unigram_norm", "bits_per_byte"))
    parser.add_argument("--trees", type=int, default=300, help="random-forest trees")
    parser.add_argument("--top", type=int, default=5, help="top-k sources marked per target")
    args = parser.parse_args(argv)
    if bool(args.logs) == bool(args.matrix):
        parser.error("give exactly one of LOGS or --matrix")
    return args


def run(args) -> dict:
    """Computes everything first, then writes the outputs (nothing is written on bad input)."""
    out = Path(args.out)
    payload: dict = {}
    files: dict[str, str | bytes] = {}   # name -> content, written at the end
    estimated = shown = None
    title = "Bilingual transfer score (row: target, column: source)"
    if args.matrix:
        matrix = load_matrix(args.matrix)
        payload["matrix_source"] = str(args.matrix)
    else:
        common.status(f"reading logs from {args.logs}")
        rows = logs.read_rows(args.logs)
        skipped: list[str] = []
        meas = tr.measure_bts(rows, d_mono=args.d_mono, loss_field=args.loss_field, params=args.params,
                              skipped=skipped)
        for note in skipped:
            print(f"skipped {note}", file=sys.stderr)
        if not meas:
            size = f" with N = {args.params:.4g} (--params)" if args.params else ""
            why = f" ({len(skipped)} pair(s) lack their monolingual partner; see above)" if skipped else ""
            raise tr.TransferError(f"{args.logs}: no measurable 50/50 bilingual from-scratch runs{size}{why}")
        payload["skipped"] = skipped
        matrix = tr.bts_matrix(meas, params=args.params)
        size = matrix.attrs["params"]
        payload["measurements"] = [m.__dict__ for m in meas]
        payload["matrix_params"] = size
        payload["matrix_runs_averaged"] = matrix.attrs["n_runs"]
        print(f"{len(meas)} BTS measurements from {len({m.bilingual_run for m in meas})} bilingual runs "
              f"(loss field {args.loss_field!r}):")
        for m in sorted(meas, key=lambda m: (m.params, m.target, m.source)):
            value = f"{m.bts:+.3f}" if math.isfinite(m.bts) else "undefined"
            print(f"  BTS({m.source}->{m.target}) = {value}  [N={m.params:.3g}, {m.status}; "
                  f"d_mono={m.d_mono:.3g} tokens, sigma_bi={m.sigma:.3g} tokens, "
                  f"L_mono={m.target_loss:.4f}]")
        sizes = sorted({m.params for m in meas})
        print(f"matrix: model size N = {size:.3g} (sizes measured: {', '.join(f'{n:.3g}' for n in sizes)}; "
              "choose one with --params)")
        title = f"Bilingual transfer score at N = {size:.3g} (row: target, column: source)"
        try:
            scores = tr.finetune_scores(rows, loss_field=args.loss_field)
        except tr.TransferError as err:
            print(f"FAS / estimated pairs: skipped ({err})")
        else:
            files["fas_matrix.csv"] = tr.matrix_to_csv(scores.fas)
            payload["fas"] = {"d_max": scores.d_max, "base": scores.base,
                              "self_gain": scores.self_gain.to_dict()}
            print(f"FAS from {scores.fas.shape[1]} single-language finetunes over d_max = "
                  f"{scores.d_max:.3g} tokens (baseline: {scores.base})")
            try:
                feats = tr.pair_features(scores.self_gain, scores.delta)
                codes = sorted(set(matrix.index) | set(scores.fas.index) | set(scores.fas.columns))
                full = matrix.reindex(index=codes, columns=codes)
                est = tr.estimate_pairs(full, feats, n_trees=args.trees)
            except tr.TransferError as err:
                print(f"estimated pairs: skipped ({err})")
            else:
                print(f"random forest ({args.trees} trees, features {', '.join(tr.FEATURE_NAMES)}) on "
                      f"{est.n_train} measured pairs: 5-fold CV R² = {est.cv_r2:.3f}, "
                      f"Spearman = {est.cv_spearman:.3f}; "
                      f"{int(np.isfinite(est.estimated.to_numpy(dtype=float)).sum())} pairs estimated")
                payload["forest"] = {"cv_r2": est.cv_r2, "cv_spearman": est.cv_spearman,
                                     "n_train": est.n_train, "n_trees": args.trees}
                files["bts_estimated.csv"] = tr.matrix_to_csv(est.matrix)
                shown, estimated = est.matrix, est.estimated
                payload["stats_with_estimates"] = tr.transfer_stats(shown, k=args.top).to_dict()
    # statistics describe the measured scores; the estimates are reported beside them
    stats = tr.transfer_stats(matrix, k=args.top)
    payload["stats"] = stats.to_dict()
    print(f"statistics of the {int(np.isfinite(matrix.to_numpy(dtype=float)).sum())} measured scores:")
    cells, counts = stats.script_family_means, stats.script_family_counts
    print(f"same-script mean {_fmt(stats.same_script_mean)} vs different-script {_fmt(stats.diff_script_mean)}; "
          f"same-family {_fmt(stats.same_family_mean)} vs different-family {_fmt(stats.diff_family_mean)}")
    print("  mean BTS by (script, family):       same family      different family")
    for sc, label in ((1, "same script"), (0, "different script")):
        print(f"  {label:<32}" + "".join(
            f"  {_fmt(cells[f'script={sc},family={fa}'])} (n={counts[f'script={sc},family={fa}']:>4})"
            for fa in (1, 0)))
    print(f"A->B vs B->A Pearson r = {_fmt(stats.asymmetry_pearson)} over {stats.n_symmetric_pairs} pairs "
          "with both directions")
    top = ", ".join(f"{s} ({n})" for s, n in list(stats.top5_source_counts.items())[:5])
    print(f"most frequent top-{args.top} sources (number of targets): {top}")
    files["bts_matrix.csv"] = tr.matrix_to_csv(matrix)
    buf = io.BytesIO()
    tr.plot_matrix(shown if estimated is not None else matrix, buf, k=args.top, estimated=estimated,
                   title=title)
    files["bts_heatmap.png"] = buf.getvalue()
    for name, content in files.items():
        logio.write_atomic(out / name, content)
        print(f"wrote {out / name}")
    logio.write_json(out / "transfer.json", payload)
    print(f"wrote {out / 'transfer.json'}")
    return payload


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (tr.TransferError, cv.CurveError, logs.LogError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
