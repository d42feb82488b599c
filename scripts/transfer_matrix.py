#!/usr/bin/env python
"""Cross-lingual transfer matrix from exported logs (or statistics of a given matrix).

  # BTS from monolingual + 50/50 bilingual runs, FAS + random-forest estimates from finetunes
  python scripts/transfer_matrix.py runs/ --out out/transfer --d-mono 4e7
  # statistics and heatmap of an existing matrix (rows target, columns source)
  python scripts/transfer_matrix.py --matrix ../shared/data/atlas_bts_38x38.csv --out out/paper

Writes OUT/bts_matrix.csv (rows target, columns source), OUT/bts_heatmap.png (top-5 sources per
target marked), OUT/transfer.json (measurements, statistics, forest quality) and, when finetunes
are present, OUT/fas_matrix.csv and OUT/bts_estimated.csv. Exits with code 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atlas_t5x import logio  # noqa: E402
from atlas_t5x.scaling import curves as cv  # noqa: E402
from atlas_t5x.scaling import transfer as tr  # noqa: E402


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    return obj


def _write_csv(frame, path: Path) -> None:
    logio.write_atomic(path, frame.to_csv(float_format="%.4f"))
    print(f"wrote {path}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="?", help="exported logs: folder of runs, eval.jsonl or CSV/Parquet table")
    parser.add_argument("--matrix", help="an existing matrix CSV instead of logs (rows target, cols source)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--d-mono", type=float, help="target tokens at which to read the monolingual loss")
    parser.add_argument("--params", type=int, help="only runs of this size N")
    parser.add_argument("--loss-field", default="loss", help="loss, loss_unigram_norm or bits_per_byte")
    parser.add_argument("--trees", type=int, default=300, help="random-forest trees")
    parser.add_argument("--top", type=int, default=5, help="top-k sources marked per target")
    args = parser.parse_args(argv)
    if bool(args.logs) == bool(args.matrix):
        parser.error("give exactly one of LOGS or --matrix")
    return args


def run(args) -> dict:
    out = Path(args.out)
    payload: dict = {}
    estimated = None
    if args.matrix:
        matrix = tr.read_matrix(args.matrix)
        payload["matrix_source"] = str(args.matrix)
    else:
        rows = cv.load_rows(args.logs)
        meas = tr.measure_bts(rows, d_mono=args.d_mono, loss_field=args.loss_field, params=args.params)
        if not meas:
            raise tr.TransferError(f"{args.logs}: no 50/50 bilingual from-scratch runs found")
        matrix = tr.bts_matrix(meas, params=args.params)
        payload["measurements"] = [m.__dict__ for m in meas]
        payload["matrix_params"] = matrix.attrs["params"]
        print(f"{len(meas)} BTS measurements from {len({m.bilingual_run for m in meas})} bilingual runs:")
        for m in meas:
            value = f"{m.bts:+.3f}" if math.isfinite(m.bts) else "undefined"
            print(f"  BTS({m.source}->{m.target}) = {value}  [N={m.params:.3g}, {m.status}; "
                  f"d_mono={m.d_mono:.3g}, sigma={m.sigma:.3g}]")
        print(f"matrix: model size N = {matrix.attrs['params']:.3g}")
        try:
            scores = tr.finetune_scores(rows, loss_field=args.loss_field)
        except tr.TransferError as err:
            print(f"FAS / estimated pairs: skipped ({err})")
        else:
            _write_csv(scores.fas, out / "fas_matrix.csv")
            feats = tr.pair_features(scores.self_gain, scores.delta)
            codes = sorted(set(matrix.index) | set(scores.fas.index) | set(scores.fas.columns))
            full = matrix.reindex(index=codes, columns=codes)
            est = tr.estimate_pairs(full, feats, n_trees=args.trees)
            print(f"random forest ({args.trees} trees) on {est.n_train} measured pairs: "
                  f"5-fold CV R² = {est.cv_r2:.3f}, Spearman = {est.cv_spearman:.3f}")
            payload["forest"] = {"cv_r2": est.cv_r2, "cv_spearman": est.cv_spearman, "n_train": est.n_train,
                                 "fas_d_max": scores.d_max, "fas_base": scores.base}
            _write_csv(est.matrix, out / "bts_estimated.csv")
            matrix, estimated = est.matrix, est.estimated
    stats = tr.transfer_stats(matrix, k=args.top)
    payload["stats"] = stats.to_dict()
    print(f"same-script mean {stats.same_script_mean:+.3f} vs different-script {stats.diff_script_mean:+.3f}; "
          f"same-family {stats.same_family_mean:+.3f} vs different-family {stats.diff_family_mean:+.3f}")
    print(f"A->B vs B->A Pearson r = {stats.asymmetry_pearson:+.3f} over {stats.n_symmetric_pairs} pairs")
    top = ", ".join(f"{s} ({n})" for s, n in list(stats.top5_source_counts.items())[:5])
    print(f"most frequent top-{args.top} sources (number of targets): {top}")
    _write_csv(matrix, out / "bts_matrix.csv")
    tr.plot_matrix(matrix, out / "bts_heatmap.png", k=args.top, estimated=estimated)
    print(f"wrote {out / 'bts_heatmap.png'}")
    logio.write_atomic(out / "transfer.json", json.dumps(_jsonable(payload), indent=2, sort_keys=True) + "\n")
    print(f"wrote {out / 'transfer.json'}")
    return payload


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (tr.TransferError, cv.CurveError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
