"""Fit plots (matplotlib, Agg backend): data vs fitted curves per target, and residuals.

Curves are drawn per run (the law evaluated along the run's evaluated steps), so they work for
every law, including multilingual ATLAS whose inputs go beyond (N, D). Held-out points are
drawn as crosses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from atlas_t5x import logio  # noqa: E402


def _save(fig, path: str | Path) -> None:
    logio.write_png(path, fig, dpi=110, bbox_inches="tight")


def _grid(n: int):
    cols = min(4, n)
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    fig.subplots_adjust(wspace=0.35, hspace=0.45)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def plot_curves(points: pd.DataFrame, pred: np.ndarray, path: str | Path,
                held_out: np.ndarray | None = None, title: str = "", curve_fn=None) -> None:
    """Loss (nats/token) vs the target's tokens D per target; colour = model size N.

    Runs with several evaluations get their fitted curve drawn through them. When every run has
    one point (a plain table), `curve_fn(target, N, D) -> loss`, if given, draws the law at five
    model sizes (quantiles of N) over the data's D range.
    """
    targets = sorted(points["target"].unique())
    held = np.zeros(len(points), bool) if held_out is None else np.asarray(held_out, bool)
    fig, axes = _grid(len(targets))
    logN = np.log10(points["N"].to_numpy(float))
    norm = matplotlib.colors.Normalize(logN.min(), max(logN.max(), logN.min() + 1e-9))
    cmap = matplotlib.colormaps["viridis"]
    D = points["D"].to_numpy(float)
    x_all = np.where(D > 0, D, points["D_total"].to_numpy(float))
    for ax, target in zip(axes, targets):
        sel = (points["target"] == target).to_numpy()
        sub = points[sel]
        x = x_all[sel]
        groups = sub.groupby("run").indices
        if curve_fn is not None and max(len(i) for i in groups.values()) < 2:
            d_grid = np.geomspace(x.min(), x.max(), 100)
            for q in np.quantile(sub["N"].to_numpy(float), [0.05, 0.25, 0.5, 0.75, 0.95]):
                ax.plot(d_grid, curve_fn(target, np.full_like(d_grid, q), d_grid), "-",
                        color=cmap(norm(np.log10(q))), lw=1.2)
        for run, idx in groups.items():
            if len(idx) < 2:
                continue
            order = idx[np.argsort(x[idx])]
            colour = cmap(norm(logN[sel][order[0]]))
            ax.plot(x[order], pred[sel][order], "-", color=colour, lw=1.0, alpha=0.8)
        fit_pts = ~held[sel]
        ax.scatter(x[fit_pts], sub["loss"].to_numpy()[fit_pts], s=10, c=cmap(norm(logN[sel][fit_pts])),
                   edgecolors="none", label="fitted points")
        if (~fit_pts).any():
            ax.scatter(x[~fit_pts], sub["loss"].to_numpy()[~fit_pts], s=22, marker="x", color="crimson",
                       label="held out")
        ax.set_xscale("log")
        ax.set_title(f"target {target}")
        ax.set_xlabel("target tokens D (D_total if 0)")
        ax.set_ylabel("loss (nats/token)")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, y=1.02)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=list(axes), label="log10 N (parameters)", shrink=0.8)
    _save(fig, path)


def plot_residuals(points: pd.DataFrame, pred: np.ndarray, path: str | Path,
                   held_out: np.ndarray | None = None, title: str = "",
                   heldout_pred: np.ndarray | None = None) -> None:
    """Log residuals log(L̂/L) against compute C, per target colour; held-out points crossed.

    `heldout_pred`, when given, holds the held-out points' predictions by the fit made without
    them (NaN elsewhere): crosses then show true held-out residuals, not in-sample ones.
    """
    held = np.zeros(len(points), bool) if held_out is None else np.asarray(held_out, bool)
    pred = np.asarray(pred, float)
    if heldout_pred is not None:
        heldout_pred = np.asarray(heldout_pred, float)
        use = held & np.isfinite(heldout_pred)
        pred = np.where(use, heldout_pred, pred)
        held = use
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    resid = np.log(pred / points["loss"].to_numpy(float))
    C = points["C"].to_numpy(float)
    for i, target in enumerate(sorted(points["target"].unique())):
        sel = (points["target"] == target).to_numpy()
        ax.scatter(C[sel & ~held], resid[sel & ~held], s=10, label=target, color=f"C{i % 10}")
        if (sel & held).any():
            ax.scatter(C[sel & held], resid[sel & held], s=24, marker="x", color=f"C{i % 10}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("compute C = 6·N·D_total (FLOPs)")
    ax.set_ylabel("log residual log(L̂/L)")
    ax.set_title(title or "residuals (x = held out)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def write_plots(points: pd.DataFrame, pred: np.ndarray, out_dir: str | Path,
                held_out: np.ndarray | None = None, law: str = "", splits: Sequence[str] = (),
                curve_fn=None, heldout_pred: np.ndarray | None = None) -> list[str]:
    """Writes fit_curves.png and residuals.png into out_dir; returns their paths.

    `pred`: the full fit's predictions; `heldout_pred`: the held-out split's predictions (see
    plot_residuals)."""
    out = Path(out_dir)
    curves, resid = out / "fit_curves.png", out / "residuals.png"
    label = f"{law} fit" + (f" (held out: {', '.join(splits)})" if splits else "")
    plot_curves(points, pred, curves, held_out, label, curve_fn)
    resid_label = label
    if splits and heldout_pred is not None:
        resid_label = (f"{law} residuals: dots in sample; x held out ({', '.join(splits)}), "
                       f"predicted by the fit without them")
    plot_residuals(points, pred, resid, held_out, resid_label, heldout_pred)
    return [str(curves), str(resid)]
