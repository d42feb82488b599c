#!/usr/bin/env python
"""`make demo`: a real, small ATLAS study on the embedded corpus, end to end, on this CPU.

  python scripts/demo.py --out out/demo            # ≤ 10 minutes on 2 cores (gin/sweeps/demo.yaml)
  python scripts/demo.py --study --out out/study   # the larger study (gin/sweeps/study.yaml)

Steps:
 1. Calibrate: train a few steps of every model size (and evaluate every language twice) to time
    this machine; the compiled programs and eval sets are reused by the real runs. If the planned
    runs would not fit the time budget, every run's token budget shrinks by one common factor
    (printed; never grows).
 2. Train the sweep in this process (JAX's compile cache shared), evaluating every corpus language
    every `eval_every` steps → OUT/runs/<run>/logs/eval.jsonl.
 3. Export the logs → OUT/logs.csv and OUT/logs.parquet.
 4. Fit Chinchilla (csl), data-constrained (dcsl) and ATLAS per target language with held-out R²
    (random 20%, largest N, top-20% D, top-20% C), using the fitter in atlas_t5x.scaling.
 5. Write the report: OUT/report.md (atlas_t5x.scaling.report.build_report) plus this demo's
    loss-curve, fitted-law and all-language plots, and print where it is.

The losses fitted are token cross-entropies (nats/token, `loss`); the vocabulary-insensitive loss
`loss_unigram_norm` is negative for models better than the unigram baseline and cannot be fitted
in log space. Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from atlas_t5x import logio, sweeps  # noqa: E402

LAWS = ("csl", "dcsl", "atlas")
HELDOUT_SPLITS = ("random", "N", "D", "C")
CALIBRATION_STEPS = 6
MIN_STEPS = 32
MIN_POINTS_PER_TARGET = 20  # twice the 10 parameters of the multilingual ATLAS law
RUN_OVERHEAD_S = 5.0  # pipeline set-up, first eval, checkpoint write, per run [measured on this machine]
SAFETY = 1.2  # estimates ran ~15% short on a shared, loaded 2-core machine [measured]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/demo", help="output folder")
    parser.add_argument("--study", action="store_true", help="the larger study (gin/sweeps/study.yaml)")
    parser.add_argument("--spec", default=None, help="another sweep spec")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds for the whole demo (default 540 for the demo, none for --study)")
    parser.add_argument("--resume", action="store_true",
                        help="keep OUT/runs and the saved plan: finished runs are skipped, others resume")
    args = parser.parse_args(argv)
    if args.time_budget is None and not args.study and args.spec is None:
        args.time_budget = 540.0
    args.spec = args.spec or str(REPO_ROOT / "gin" / "sweeps" / ("study.yaml" if args.study else "demo.yaml"))
    return args


# ------------------------------------------------------------------------------------------
# 1. Calibration and planning


def calibrate(sweep: sweeps.Sweep, out: Path) -> dict[str, dict[str, float]]:
    """Per scale: train steps/s and seconds per evaluated language, measured on this machine."""
    timings = {}
    for run in _one_run_per_scale(sweep):
        name = f"calibrate-{run.scale}"
        settings = dict(run.settings)
        settings.update(eval_every=CALIBRATION_STEPS // 2, warmup_steps=1, checkpoint_every=None)
        probe = dataclasses.replace(
            run, name=name, tokens=CALIBRATION_STEPS * run.batch * run.seq_len,
            total_steps=CALIBRATION_STEPS, settings=settings, init_from=None,
        )
        probe_sweep = sweeps.Sweep(name="calibration", runs=(probe,), source="calibration")
        shutil.rmtree(probe.model_dir(out), ignore_errors=True)
        start = time.perf_counter()
        sweeps.run_locally(probe_sweep, out, progress=False)
        wall = time.perf_counter() - start
        logs = probe.model_dir(out) / "logs"
        train_rows = logio.read_jsonl(logs / "train.jsonl")
        eval_rows = [r for r in logio.read_jsonl(logs / "eval.jsonl") if r["step"] == CALIBRATION_STEPS]
        timings[run.scale] = {
            "steps_per_s": float(train_rows[-1]["steps_per_s"]),
            "eval_s_per_language": float(sum(r["eval_wallclock_s"] for r in eval_rows) / len(eval_rows)),
            "n_eval_languages": len(eval_rows),
            "calibration_wall_s": wall,
        }
        print(f"  {run.scale}: {timings[run.scale]['steps_per_s']:.2f} steps/s, "
              f"{timings[run.scale]['eval_s_per_language'] * 1000:.0f} ms per evaluated language "
              f"(calibration run {wall:.1f} s incl. compile)")
    return timings


def _one_run_per_scale(sweep: sweeps.Sweep) -> list[sweeps.RunSpec]:
    seen: dict[str, sweeps.RunSpec] = {}
    for run in sweep.runs:
        seen.setdefault(run.scale, run)
    return list(seen.values())


def estimate_seconds(run: sweeps.RunSpec, timing: dict[str, float]) -> float:
    """Training + evaluation seconds of one run on this machine (with a safety margin)."""
    evals = run.total_steps // run.settings["eval_every"] + (run.total_steps % run.settings["eval_every"] != 0)
    return SAFETY * (run.total_steps / timing["steps_per_s"]
                     + evals * timing["n_eval_languages"] * timing["eval_s_per_language"] + RUN_OVERHEAD_S)


def _scaled_run(run: sweeps.RunSpec, factor: float) -> sweeps.RunSpec:
    """The run with `factor` × its steps; warmup and evaluation period shrink alike, so the
    curve keeps the same number of post-warmup evaluation points."""
    steps = max(MIN_STEPS, int(run.total_steps * factor))
    ratio = steps / run.total_steps
    settings = dict(run.settings)
    settings["warmup_steps"] = max(1, int(settings["warmup_steps"] * ratio))
    settings["eval_every"] = max(1, int(round(settings["eval_every"] * ratio)))
    return dataclasses.replace(run, total_steps=steps, tokens=steps * run.batch * run.seq_len, settings=settings)


def plan(sweep: sweeps.Sweep, timings, seconds_left: float | None) -> tuple[sweeps.Sweep, float, float]:
    """Scales every run's token budget by one factor ≤ 1 so the estimate fits `seconds_left`.

    Per-run overheads do not shrink with the budget, so the factor is refined until the scaled
    sweep's estimate fits (or every run is at MIN_STEPS).
    """

    def total(s: sweeps.Sweep) -> float:
        return sum(estimate_seconds(r, timings[r.scale]) for r in s.runs)

    estimate = total(sweep)
    if seconds_left is None or estimate <= seconds_left:
        return sweep, 1.0, estimate
    factor, scaled = 1.0, sweep
    for _ in range(20):
        factor *= max(seconds_left, 1.0) / estimate
        scaled = sweeps.Sweep(sweep.name, tuple(_scaled_run(r, factor) for r in sweep.runs), sweep.source)
        estimate = total(scaled)
        if estimate <= seconds_left or all(r.total_steps == MIN_STEPS for r in scaled.runs):
            break
    return scaled, factor, estimate


# ------------------------------------------------------------------------------------------
# 4. Fits with held-out R²


def trained_target_rows(rows):
    """Rows whose target language is one of the run's training languages (D_t > 0)."""
    return [r for r in rows if r["target"] in r["tokens_by_lang"]]


def heldout_table(rows):
    """law × split table of held-out R², MAE, MAPE (FITTER's heldout.compare_laws)."""
    import pandas as pd

    from atlas_t5x.scaling import data as fdata
    from atlas_t5x.scaling import engine, heldout

    points = fdata.rows_to_points(trained_target_rows(rows), loss_field="loss")
    targets = sorted(t for t in points["target"].unique()
                     if points.loc[points["target"] == t, "N"].nunique() >= 2
                     and (points["target"] == t).sum() >= MIN_POINTS_PER_TARGET)
    if not targets:
        raise ValueError(f"no target has {MIN_POINTS_PER_TARGET} points from two or more model sizes")
    points = points[points["target"].isin(targets)].reset_index(drop=True)
    frames = []
    for law in LAWS:
        spec = engine.FitSpec(law=law, grid_budget=1000, n_polish=2)
        try:
            frames.append(heldout.compare_laws({law: spec}, points, splits=HELDOUT_SPLITS))
        except (engine.FitError, ValueError, FloatingPointError) as err:
            frames.append(pd.DataFrame([{"law": law, "split": "all", "r2": math.nan, "note": str(err)}]))
    return pd.concat(frames, ignore_index=True), points, targets


def fit_per_target(points, targets):
    """{law: TableFit} on every point of the targets (for the plots)."""
    from atlas_t5x.scaling import engine

    fits = {}
    for law in LAWS:
        try:
            fits[law] = engine.fit_points(engine.FitSpec(law=law, grid_budget=1000, n_polish=2), points, targets)
        except (engine.FitError, ValueError, FloatingPointError) as err:
            print(f"  {law}: fit failed: {err}")
    return fits


# ------------------------------------------------------------------------------------------
# 5. Plots


def plot_loss_curves(rows, targets, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        runs = sorted({r["run"] for r in rows if r["target"] == target and target in r["tokens_by_lang"]})
        for run in runs:
            pts = sorted((r["tokens_by_lang"][target], r["loss"]) for r in rows
                         if r["run"] == run and r["target"] == target)
            ax.plot(*zip(*pts), marker="o", ms=3, label=run)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"training tokens of {target} (D_t)")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(f"target {target}")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fitted_laws(points, fits, targets, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
    styles = {"csl": ":", "dcsl": "--", "atlas": "-"}
    for ax, target in zip(axes[0], targets):
        sub = points[(points["target"] == target) & (points["p"] >= 1.0)]  # monolingual runs
        for i, (n, grp) in enumerate(sorted(sub.groupby("N"), key=lambda kv: kv[0])):
            color = f"C{i}"
            grp = grp.sort_values("D")
            ax.scatter(grp["D"], grp["loss"], color=color, s=12, label=f"N={n:.3g}")
            for law, fit in fits.items():
                if target in fit.fits:
                    pred = fit.predict(grp)
                    ax.plot(grp["D"], pred, styles[law], color=color, lw=1,
                            label=law if i == 0 else None)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"D_t, tokens of {target} (monolingual runs)")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(f"{target}: data and fitted laws (per-target fits)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_all_languages(rows, path: Path) -> None:
    """Final loss of every run on every evaluation language (transfer to unseen languages)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    last = {}
    for r in rows:
        key = (r["run"], r["target"])
        if key not in last or r["step"] > last[key]["step"]:
            last[key] = r
    runs = sorted({k[0] for k in last})
    langs = sorted({k[1] for k in last})
    grid = np.full((len(runs), len(langs)), np.nan)
    for (run, lang), r in last.items():
        grid[runs.index(run), langs.index(lang)] = r["loss"]
    fig, ax = plt.subplots(figsize=(0.45 * len(langs) + 3, 0.35 * len(runs) + 1.5))
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(langs)), langs, rotation=90)
    ax.set_yticks(range(len(runs)), runs, fontsize=7)
    ax.set_title("final validation loss (nats/token), run × evaluation language")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    out = Path(args.out)
    from atlas_t5x.data import madlad

    try:
        corpus = madlad.available_languages(madlad.resolve_madlad_dir())
        sweep = sweeps.load_sweep(args.spec, corpus_languages=corpus)
        sweeps.check_runnable(sweep)
    except (sweeps.SweepError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"ATLAS demo: {len(sweep.runs)} runs from {args.spec}, evaluated on {len(corpus)} languages; "
          f"output in {out}")
    plan_path = out / "plan.json"
    if not args.resume:
        for sub in ("runs", "report"):
            shutil.rmtree(out / sub, ignore_errors=True)
    sweeps.enable_compile_cache(out / "jax_cache")

    # 1. calibrate and plan
    if args.resume and plan_path.exists():
        saved = json.loads(plan_path.read_text())
        steps = saved["total_steps"]
        sweep = sweeps.Sweep(sweep.name, tuple(
            dataclasses.replace(r, total_steps=steps[r.name], tokens=steps[r.name] * r.batch * r.seq_len)
            for r in sweep.runs), sweep.source)
        print(f"resuming with the saved plan (token factor {saved['factor']:.3f})")
    else:
        print("1/5 timing this machine (a few steps per model size):")
        timings = calibrate(sweep, out)
        shutil.rmtree(out / "runs", ignore_errors=True)  # calibration runs are not part of the study
        reserve = 75.0  # export, fits and report [measured]
        left = None if args.time_budget is None else args.time_budget - (time.perf_counter() - start) - reserve
        sweep, factor, estimate = plan(sweep, timings, left)
        logio.write_atomic(plan_path, json.dumps({
            "factor": factor, "estimate_s": estimate, "timings": timings,
            "total_steps": {r.name: r.total_steps for r in sweep.runs}}, indent=1) + "\n")
        if factor < 1.0:
            print(f"  this machine is slower than planned: every run's token budget × {factor:.3f} "
                  f"(estimated {estimate:.0f} s of training)")
        else:
            print(f"  estimated {estimate:.0f} s of training")
    print(f"2/5 training {len(sweep.runs)} runs:")
    for r in sweep.runs:
        langs = r.training_languages or ["all"]
        print(f"  {r.name:<22} {r.scale:<6} {r.mixture:<22} {r.tokens:>8,} tokens, {r.total_steps:>4} steps"
              f" ({', '.join(langs)})")
    train_start = time.perf_counter()
    status = sweeps.run_locally(sweep, out, progress=True)
    trained = sum(v == "finished" for v in status.values())
    print(f"  trained {trained} runs in {time.perf_counter() - train_start:.0f} s")

    # 3. export
    from atlas_t5x.eval import export

    rows = export.export_logs([out / "runs"], csv_path=out / "logs.csv", parquet_path=out / "logs.parquet")
    print(f"3/5 exported {len(rows)} eval rows → {out / 'logs.csv'}, {out / 'logs.parquet'}")

    # 4. fits
    try:
        from atlas_t5x.scaling import engine  # noqa: F401  (the fitter)
    except ImportError:
        print("4/5 the fitter (atlas_t5x.scaling) is not available: stopping after the export.")
        return 0
    print("4/5 fitting csl, dcsl and atlas per target with held-out R² ...")
    try:
        table, points, targets = heldout_table(rows)
    except ValueError as err:
        print(f"  cannot fit: {err}; the logs are exported in {out}. Stopping before the report.")
        return 1
    logio.write_atomic(out / "heldout.csv", table.to_csv(index=False))
    fits = fit_per_target(points, targets)
    for rec in table[table["split"] == "all"].itertuples():
        print(f"  {rec.law}: {rec.note}")
    scored = table[table["split"] != "all"]
    if len(scored):
        pretty = scored.pivot_table(index="law", columns="split", values="r2", aggfunc="first")
        print(f"  held-out R² (targets {', '.join(targets)}):")
        print(pretty.to_string(float_format=lambda v: f"{v:.3f}"))

    # 5. report
    report_dir = out / "report"
    from atlas_t5x.scaling.report import build_report

    report_rows = [r for r in trained_target_rows(rows) if r["target"] in targets]
    report = build_report(report_rows, report_dir, laws=LAWS, loss_field="loss")
    plot_loss_curves(rows, targets, report_dir / "loss_curves.png")
    plot_fitted_laws(points, fits, targets, report_dir / "fitted_laws.png")
    plot_all_languages(rows, report_dir / "all_languages.png")
    factor = json.loads(plan_path.read_text())["factor"]
    demo_section = "\n".join([
        "", "## Demo study: curves and fitted laws", "",
        f"{len(sweep.runs)} runs from `{args.spec}` (token factor from calibration {factor:.3f}), each "
        f"evaluated on all {len(corpus)} corpus languages. Fits use the points whose target is a "
        f"training language of the run (D_t > 0) for the targets {', '.join(targets)}; loss = token "
        "cross-entropy (nats/token). The law × split held-out table of `heldout.compare_laws` is in "
        "[heldout.csv](../heldout.csv); the exported logs are `../logs.csv` and `../logs.parquet`.", "",
        "Loss curves per target (every run that trains on it):", "", "![loss curves](loss_curves.png)", "",
        "Monolingual points and the per-target fits (csl dotted, dcsl dashed, atlas solid):", "",
        "![fitted laws](fitted_laws.png)", "",
        "Final loss of every run on every evaluation language (transfer to languages a run never saw):",
        "", "![all languages](all_languages.png)", "",
    ])
    logio.write_atomic(report, report.read_text(encoding="utf-8") + demo_section)
    wall = time.perf_counter() - start
    print(f"5/5 report: {report}  (demo wall time {wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
