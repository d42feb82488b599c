"""Accuracy of the compute-optimal exponent a (N* ∝ C^a) from isoFLOP sweeps: `--approach isoflop`
against a plain parabola fit (a quadratic in log N per budget, then log N* on log C).

Synthetic sweeps shaped like Porian et al. 2024's (16 sizes 5M–900M, budgets 1.25e16·2^k, each
budget holding the sizes within a factor 4–6 of its optimum, which wanders by ±30% around the
power law), losses from Chinchilla-form laws with a = 0.45–0.75 plus Gaussian noise σ = 0.002 or
0.01 nats (their two datasets' seed noise) and a per-size offset (architecture effects). Reported:
mean |a − truth|, mean |a − the same method run with the true σ and 1000 draws| (what a
published noise-and-interpolate estimate would give on the same points), and how often the 95%
interval holds the truth.

  python benchmarks/isoflop_accuracy.py [--seeds 4]
  python benchmarks/isoflop_accuracy.py --table sweep.csv --map N=params,C=flops,loss=loss --published 0.49
  python benchmarks/isoflop_accuracy.py --write_csv examples/synthetic_isoflop.csv   # the README's sweep
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from atlas_t5x.scaling import compute_optimal as cop
from atlas_t5x.scaling import points as points_lib

SIZES = np.array([5175744, 7508224, 9816640, 15608768, 22506048, 28695680, 37092096, 57432000, 84852864,
                  108540160, 149148032, 221014144, 347269120, 455546560, 612234304, 902090176], float)
BUDGETS = 1e17 * 2.0 ** np.arange(-3, 9)


def sweep(alpha: float, beta: float, sigma: float, seed: int, size_sd: float = 0.002) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = beta / (alpha + beta)
    G = 9e7 / (1e18 / 6) ** a
    A, E = 400.0, 1.8
    B = alpha * A / (beta * G ** (alpha + beta))
    lo_f, hi_f = rng.uniform(4, 6, 2)
    offset = size_sd * rng.standard_normal(len(SIZES))
    rows = []
    for C in BUDGETS:
        n_star = G * (C / 6) ** a * np.exp(0.3 * np.sin(seed + np.log(C)))
        for j, N in enumerate(SIZES):
            if n_star / lo_f <= N <= n_star * hi_f:
                D = C / (6 * N)
                rows.append({"run": f"n{j}", "N": N, "D": D, "C": C,
                             "loss": E + A / N ** alpha + B / D ** beta + offset[j] + sigma * rng.standard_normal()})
    return pd.DataFrame(rows)


def parabola(df: pd.DataFrame) -> float:
    cs, ns = [], []
    for C, g in df.groupby("C"):
        if g["N"].nunique() < 3:
            continue
        c = np.polyfit(np.log(g["N"]), g["loss"], 2)
        if c[0] > 0:
            cs.append(C)
            ns.append(-c[1] / (2 * c[0]))
    return float(np.polyfit(np.log(cs), ns, 1)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--table", help="a CSV isoFLOP sweep instead of the synthetic ones")
    p.add_argument("--map", default="N=N,C=C,loss=loss")
    p.add_argument("--published", type=float, help="the published a of --table")
    p.add_argument("--write_csv", help="write one synthetic sweep (a = 0.46/0.80 = 0.575, σ = 0.005 nats) and stop")
    args = p.parse_args()
    if args.write_csv:
        df = sweep(0.34, 0.46, 0.005, seed=0)
        df = df.rename(columns={"N": "params", "D": "tokens", "C": "flops"})
        df.round({"tokens": 0, "loss": 5}).to_csv(args.write_csv, index=False)
        print(f"wrote {args.write_csv}: {len(df)} runs, {df['flops'].nunique()} budgets, true a = 0.575")
        return
    if args.table:
        df = points_lib.load_table(args.table, points_lib.parse_map(args.map))
        t0 = time.perf_counter()
        res = cop.isoflop_frontier(df)
        print(f"isoflop a = {res.a:.4f} [{res.a_ci[0]:.4f}, {res.a_ci[1]:.4f}], {res.n_budgets} budgets, "
              f"σ = {res.extra['noise_sigma']:.4g} ({time.perf_counter() - t0:.2f} s); parabola a = {parabola(df):.4f}"
              + (f"; published {args.published}" if args.published is not None else ""))
        return
    rows = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for alpha, beta in [(0.34, 0.28), (0.30, 0.45), (0.25, 0.55), (0.2, 0.6)]:
            for sigma in (0.002, 0.01):
                df = sweep(alpha, beta, sigma, seed)
                truth = beta / (alpha + beta)
                ref = cop.isoflop_frontier(df, sigma=sigma, n_draws=1000, seed=seed + 100, n_boot=20).a
                ours = cop.isoflop_frontier(df, seed=seed)
                rows.append({"truth": truth, "sigma": sigma, "ref": ref, "ours": ours.a, "parabola": parabola(df),
                             "covered": ours.a_ci[0] <= truth <= ours.a_ci[1]})
    r = pd.DataFrame(rows)
    print(f"{len(r)} synthetic sweeps ({time.perf_counter() - t0:.1f} s)")
    for col in ("ours", "parabola"):
        print(f"  {col:<9} mean |a - truth| {np.mean(np.abs(r[col] - r.truth)):.4f}   "
              f"mean |a - reference| {np.mean(np.abs(r[col] - r.ref)):.4f}   "
              f"max |a - reference| {np.max(np.abs(r[col] - r.ref)):.4f}")
    print(f"  95% interval holds the truth in {100 * r.covered.mean():.0f}% of sweeps")


if __name__ == "__main__":
    main()
