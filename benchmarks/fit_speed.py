#!/usr/bin/env python
"""Fitter speed, printed in one run (not a timed test):

1. Epoch Chinchilla CSL fit (240 runs, summed Huber): our variable-projection fit, warm, vs a
   reference scipy L-BFGS-B loop over the 4500-start Hoffmann grid (α, β ∈ {0, 0.5, …, 2},
   e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}; log-sum-exp form, analytic numpy gradient,
   scipy's default tolerances as commonly used). `--reference_starts K` times K evenly spaced
   starts and extrapolates to 4500; the printout says which.
2. A 1000-replicate bootstrap by run of that fit (cold = including compilation, and warm).
3. Multilingual ATLAS (10 parameters) for 8 targets × 200 points (synthetic study).

  python benchmarks/fit_speed.py [--reference_starts 4500] [--data ../shared/data]
  (quick check of the script: --reference_starts 3 --repeats 1 --n_boot 20 --atlas_points 30)
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import optimize  # noqa: E402

from atlas_t5x.scaling import bootstrap, points as points_lib, engine, table_fit  # noqa: E402
from atlas_t5x.scaling.laws import LAWS  # noqa: E402
from atlas_t5x.scaling.objectives import huber  # noqa: E402

DELTA = 1e-3


def hoffmann_grid() -> np.ndarray:
    alphas = np.arange(0, 2.01, 0.5)
    es = np.arange(-1, 1.01, 0.5)
    ab = np.arange(0, 25.1, 5)
    return np.array(list(itertools.product(ab, ab, es, alphas, alphas)))  # a, b, e, alpha, beta


def reference_objective(x, logN, logD, logy):
    """Summed Huber on log residuals, LSE form, with its analytic gradient (numpy)."""
    a, b, e, alpha, beta = x
    t = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    m = t.max(axis=0)
    w = np.exp(t - m)
    s = w.sum(axis=0)
    r = m + np.log(s) - logy
    p = w / s
    dr = np.where(np.abs(r) <= DELTA, r, DELTA * np.sign(r))
    grad = np.array([
        np.sum(dr * p[0]), np.sum(dr * p[1]), np.sum(dr * p[2]),
        np.sum(dr * p[0] * -logN), np.sum(dr * p[1] * -logD)])
    return float(np.sum(huber(r, DELTA))), grad


def reference_fit(X, y, starts: np.ndarray):
    logN, logD, logy = np.log(X["N"]), np.log(X["D"]), np.log(y)
    best = (np.inf, None)
    for x0 in starts:
        res = optimize.minimize(reference_objective, x0, args=(logN, logD, logy), jac=True, method="L-BFGS-B")
        if res.fun < best[0]:
            best = (res.fun, res.x)
    return best


def median_time(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls (and prints their median CPU time of this process)."""
    times, cpus, out = [], [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    median_time.last_cpu = float(np.median(cpus))
    return float(np.median(times)), out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--reference_starts", type=int, default=4500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n_boot", type=int, default=1000, help="bootstrap replicates timed in [2]")
    parser.add_argument("--atlas_points", type=int, default=200, help="points per target in [3]")
    args = parser.parse_args(argv)

    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start")
    csv = Path(args.data) / "epoch_chinchilla_fig4.csv"
    if not csv.is_file():
        print(f"error: {csv} not found (pass --data)", file=sys.stderr)
        return 2
    d = pd.read_csv(csv).sort_values("loss").iloc[:-5]
    N = d["Model Size"].to_numpy(float)
    X = {"N": N, "D": d["Training FLOP"].to_numpy(float) / (6 * N)}
    y = d["loss"].to_numpy(float)

    # 1. Epoch CSL fit
    t = time.perf_counter()
    res = engine.fit(LAWS["csl"], X, y)
    cold = time.perf_counter() - t
    warm, res = median_time(lambda: engine.fit(LAWS["csl"], X, y), args.repeats)
    print("\n[1] Epoch Chinchilla CSL, 240 runs, summed Huber (delta=1e-3)")
    print(f"  ours: objective {res.objective:.10f}  converged={res.converged}  grid {res.n_grid} points, "
          f"{res.n_polished} polished")
    print("       " + ", ".join(f"{k}={v:.5g}" for k, v in res.params.items()))
    print(f"  ours: cold {cold:.3f} s (incl. JAX compile), warm {warm:.3f} s wall / "
          f"{median_time.last_cpu:.3f} s CPU (median of {args.repeats})")

    grid = hoffmann_grid()
    k = min(args.reference_starts, len(grid))
    idx = np.linspace(0, len(grid) - 1, k).round().astype(int)
    with engine.single_threaded_blas():
        t, c = time.perf_counter(), time.process_time()
        ref_obj, ref_x = reference_fit(X, y, grid[idx])
        ref_time, ref_cpu = time.perf_counter() - t, time.process_time() - c
    full_time = ref_time * len(grid) / k
    a, b, e, alpha, beta = ref_x
    print(f"  reference scipy L-BFGS-B loop (default tolerances): timed {k} of {len(grid)} starts in "
          f"{ref_time:.2f} s wall / {ref_cpu:.2f} s CPU"
          + ("" if k == len(grid) else f" → extrapolated {full_time:.1f} s wall for 4500"))
    print(f"  reference best objective {ref_obj:.10f}: E={np.exp(e):.5g} A={np.exp(a):.5g} B={np.exp(b):.5g} "
          f"alpha={alpha:.4g} beta={beta:.4g}")
    cpu_ratio = ref_cpu * len(grid) / k / median_time.last_cpu
    print(f"  speed-up (4500-start reference / ours warm): {full_time / warm:.0f}x wall, {cpu_ratio:.0f}x CPU")

    # 2. bootstrap
    runs = np.arange(y.size)
    t = time.perf_counter()
    boot = bootstrap.bootstrap(res, X, y, runs, n_boot=args.n_boot)
    boot_cold = time.perf_counter() - t
    boot_warm, boot = median_time(lambda: bootstrap.bootstrap(res, X, y, runs, n_boot=args.n_boot, seed=1), 2)
    ci = boot.intervals()
    print(f"\n[2] bootstrap by run, {args.n_boot} replicates of the Epoch fit")
    print(f"  cold {boot_cold:.2f} s (incl. compile), warm {boot_warm:.2f} s wall / "
          f"{median_time.last_cpu:.2f} s CPU; "
          f"{100 * boot.converged.mean():.1f}% converged")
    print(f"  95% CI alpha {ci['alpha']['lo']:.3f}–{ci['alpha']['hi']:.3f}, beta {ci['beta']['lo']:.3f}–"
          f"{ci['beta']['hi']:.3f} (Epoch: 0.317–0.373, 0.331–0.415)")

    # 3. multilingual ATLAS
    points, truth = points_lib.synthetic_study(evals_per_run=6, seed=0)
    rng = np.random.default_rng(0)
    parts = []
    for target, sub in points.groupby("target"):
        parts.append(sub.iloc[np.sort(rng.choice(len(sub), min(args.atlas_points, len(sub)), replace=False))])
    points = pd.concat(parts).reset_index(drop=True)
    spec = table_fit.FitSpec(law="atlas")
    t = time.perf_counter()
    fitted = table_fit.fit_points(spec, points)
    atlas_cold = time.perf_counter() - t
    atlas_warm, fitted = median_time(lambda: table_fit.fit_points(spec, points), 2)
    n_params = {len(r.params) for r in fitted.fits.values()}
    err = max(abs(r.params["beta"] - truth[t]["beta"]) for t, r in fitted.fits.items())
    print(f"\n[3] multilingual ATLAS ({'/'.join(map(str, sorted(n_params)))} parameters), "
          f"{len(fitted.fits)} targets x {args.atlas_points} points")
    print(f"  cold {atlas_cold:.2f} s (incl. compile), warm {atlas_warm:.2f} s wall / "
          f"{median_time.last_cpu:.2f} s CPU; all converged: "
          f"{fitted.converged}; max |beta - true| {err:.4f}")
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
