"""`make demo`: a real, small ATLAS study on the embedded corpus, end to end, on this CPU.

  python scripts/demo.py --out out/demo            # ≈ 10 minutes on a quiet 2-core CPU (gin/sweeps/demo.yaml)
  python scripts/demo.py --study --out out/study   # the larger study (gin/sweeps/study.yaml)

Steps:
 1. Calibrate: train a few steps of every model size (and evaluate every language twice) to time
    this machine (`estimate_seconds` says what a run costs); the compiled programs and eval sets
    are reused by the real runs. If the planned
    runs (trunks plus their WSD cooldown branches) would not fit the time budget, every run's token
    budget shrinks by one common factor (printed; never grows), but never below MIN_FACTOR: the
    trunks keep ≥ 10 tokens per parameter and all their cooldown branches, so the law stays
    identified and the demo runs over its budget instead (said so).
 2. Train the sweep on `--workers` processes (default: both cores of a 2-core machine; each takes
    the longest run left, and the time plan is that schedule's makespan; JAX's compile cache is
    shared on disk), evaluating every corpus language every `eval_every` steps →
    OUT/runs/<run>/logs/eval.jsonl.
 3. Export the logs → OUT/logs.csv and OUT/logs.parquet.
 4. Fit Chinchilla (csl), data-constrained (dcsl) and ATLAS per target language with held-out R²
    (random 20% of runs, largest N, per target top-20% D and C), using the fitter in
    atlas_t5x.scaling, on the completed-schedule points (cooldown ends and final evaluations) of the
    monolingual runs (the paper's monolingual setting) of the targets trained at MIN_SIZES or more
    model sizes (a law in N needs them).
 5. Write the report: OUT/report.md (atlas_t5x.scaling.report.build_report), whose first lines are
    the sanity table (CSL exponents and their bootstrap intervals, E off its bounds, held-out
    R²(N) and R²(D), the curse plan for 2K; failures first), plus this demo's checks, loss-curve,
    fitted-law and all-language plots; print the sanity table and where the report is.

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
import queue
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = Path(__file__).resolve().parents[2]  # the sweep specs live in the checkout's gin/

from atlas_t5x import logio  # noqa: E402
from atlas_t5x.cli import common  # noqa: E402

try:
    from atlas_t5x import sweeps  # noqa: E402  (models → JAX/Flax: the `train` extra)
except ImportError:  # a fitter-only install: main() names the extra to install
    sweeps = None

LAWS = ("csl", "dcsl", "atlas")
DEMO_SETTINGS = ("monolingual",)
HELDOUT_SPLITS = ("random", "N", "D", "C")
CALIBRATION_STEPS = 24  # evaluated at 12 and 24: the first of each compiles; 12 steps read
                        # demo2-3 up to 1.8x too fast on one core
MIN_STEPS = 32
MIN_FACTOR = 0.5  # the calibrated shrink never goes below this: trunks keep ≥ 10 tokens/param
MIN_SIZES = 3     # targets fitted: trained at ≥ 3 model sizes (α is not identified by 2)
# Time model of one run: train steps at the calibrated speed, evaluations at the calibrated cost,
# plus RUN_OVERHEAD_S (pipeline set-up, checkpoint write) and BRANCH_OVERHEAD_S per cooldown branch
# (state copy; its step is served by the compile cache), × SAFETY. Measured on a quiet 2-core
# machine: 10 runs with 50 branches trained in 185 s against 168 s of calibrated steps and
# evaluations, i.e. ~1.7 s per run; the former constants (5 s per run, 3 s per branch, × 1.2)
# predicted 440 s and left half the budget unused.
RUN_OVERHEAD_S = 2.0
BRANCH_OVERHEAD_S = 0.3
SAFETY = 1.15
WORKER_START_S = 15.0  # a training process's imports and first compilations (once per worker)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. 1 under `taskset -c 0`), not the
    machine's count: two workers on one core would each run at half speed against a plan for two."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # no affinity API (macOS)
        return os.cpu_count() or 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.ArgumentParser(prog="atlas-demo", description=__doc__)
    parser.add_argument("--out", default="out/demo", help="output folder")
    parser.add_argument("--study", action="store_true", help="the larger study (gin/sweeps/study.yaml)")
    parser.add_argument("--spec", default=None, help="another sweep spec")
    parser.add_argument("--time_budget", type=float, default=None, deprecated=("--time-budget",),
                        help="seconds for the whole demo (default 540 for the demo, none for --study)")
    parser.add_argument("--workers", type=int, default=min(2, usable_cores()),
                        help="training processes (default: min(2, the cores this process may run on, "
                             "e.g. 1 under `taskset -c 0`)); each takes the longest run left")
    parser.add_argument("--resume", action="store_true",
                        help="keep OUT/runs and the saved plan: finished runs are skipped, others resume")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
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
        settings.update(eval_every=CALIBRATION_STEPS // 2, warmup_steps=1, checkpoint_every=None, cooldown_at=[])
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
            "steps_per_s": steady_steps_per_s(train_rows),
            "eval_s_per_language": float(sum(r["eval_wallclock_s"] for r in eval_rows) / len(eval_rows)),
            "n_eval_languages": len(eval_rows),
            "calibration_wall_s": wall,
        }
        print(f"  {run.scale}: {timings[run.scale]['steps_per_s']:.2f} steps/s, "
              f"{timings[run.scale]['eval_s_per_language'] * 1000:.0f} ms per evaluated language "
              f"(calibration run {wall:.1f} s incl. compile)")
    return timings


def steady_steps_per_s(train_rows) -> float:
    """Train steps per second over every logged window after the first (which compiles)."""
    windows = [(b["step"] - a["step"], (b["step"] - a["step"]) / b["steps_per_s"])
               for a, b in zip(train_rows, train_rows[1:])]
    if not windows:
        return float(train_rows[-1]["steps_per_s"])
    return sum(n for n, _ in windows) / sum(t for _, t in windows)


def _one_run_per_scale(sweep: sweeps.Sweep) -> list[sweeps.RunSpec]:
    seen: dict[str, sweeps.RunSpec] = {}
    for run in sweep.runs:
        seen.setdefault(run.scale, run)
    return list(seen.values())


def estimate_seconds(run: sweeps.RunSpec, timing: dict[str, float]) -> float:
    """Training + evaluation seconds of one run (its trunk and cooldown branches) on this machine
    (with a safety margin)."""
    evals = run.total_steps // run.settings["eval_every"] + (run.total_steps % run.settings["eval_every"] != 0)
    n_branches = len(sweeps.branch_points(run))
    steps = run.total_steps + sweeps.branch_steps_total(run)
    return SAFETY * (steps / timing["steps_per_s"] + n_branches * BRANCH_OVERHEAD_S
                     + (evals + n_branches) * timing["n_eval_languages"] * timing["eval_s_per_language"]
                     + RUN_OVERHEAD_S)


def _scaled_run(run: sweeps.RunSpec, factor: float) -> sweeps.RunSpec:
    """The run with `factor` × its steps; warmup and evaluation period shrink alike, so the
    curve keeps the same number of post-warmup evaluation points."""
    steps = max(MIN_STEPS, int(run.total_steps * factor))
    ratio = steps / run.total_steps
    settings = dict(run.settings)
    settings["warmup_steps"] = max(1, int(settings["warmup_steps"] * ratio))
    settings["eval_every"] = max(1, int(round(settings["eval_every"] * ratio)))
    return dataclasses.replace(run, total_steps=steps, tokens=steps * run.batch * run.seq_len, settings=settings)


def makespan(seconds: Sequence[float], workers: int = 1) -> float:
    """Wall seconds to train runs of the given durations on `workers` processes that each take
    the longest run left (longest-processing-time-first list scheduling, as `train_runs` does)."""
    if workers <= 1:
        return float(sum(seconds))
    loads = [WORKER_START_S] * workers
    for t in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads)


def plan(sweep: sweeps.Sweep, timings, seconds_left: float | None,
         workers: int = 1) -> tuple[sweeps.Sweep, float, float]:
    """Scales every run's token budget by one factor ≤ 1 so the estimate fits `seconds_left`.

    The estimate is the makespan of the runs on `workers` processes. Per-run overheads do not
    shrink with the budget, so the factor is refined until the scaled sweep's estimate fits (or
    every run is at MIN_STEPS).
    """

    def total(s: sweeps.Sweep) -> float:
        return makespan([estimate_seconds(r, timings[r.scale]) for r in s.runs], workers)

    estimate = total(sweep)
    if seconds_left is None or estimate <= seconds_left:
        return sweep, 1.0, estimate
    factor, scaled = 1.0, sweep
    for _ in range(20):
        factor = max(factor * max(seconds_left, 1.0) / estimate, MIN_FACTOR)
        scaled = sweeps.Sweep(sweep.name, tuple(_scaled_run(r, factor) for r in sweep.runs), sweep.source)
        estimate = total(scaled)
        if estimate <= seconds_left or factor == MIN_FACTOR or all(r.total_steps == MIN_STEPS for r in scaled.runs):
            break
    return scaled, factor, estimate


# ------------------------------------------------------------------------------------------
# 2. Training on every core


def _start_worker(cache_dir: str, cores=None) -> None:
    """Worker initializer: pins the process to one core taken from the queue `cores` (when given),
    before JAX starts its CPU client, so XLA runs one thread there; enables the shared compile cache."""
    if cores is not None:
        try:
            os.sched_setaffinity(0, {cores.get(timeout=10)})
        except queue.Empty:   # more workers started than cores handed out: this one stays unpinned
            pass
    sweeps.enable_compile_cache(cache_dir)


def training_workers(sweep: sweeps.Sweep, workers: int) -> int:
    """Processes that will train the sweep: `workers`, or 1 when a run finetunes another (it must
    wait for its source, so `train_runs` trains the sweep in order in this process)."""
    return 1 if any(r.init_from for r in sweep.runs) else max(1, workers)


def _worker_cores(workers: int, context):
    """A queue holding one distinct core per worker, or None when the workers cannot each have one
    (more workers than usable cores, or no affinity API): then they share the cores unpinned."""
    if workers <= 1 or not hasattr(os, "sched_setaffinity") or workers > usable_cores():
        return None
    cores = context.Queue()
    for core in sorted(os.sched_getaffinity(0))[:workers]:
        cores.put(core)
    return cores


def calibrate_as_trained(sweep: sweeps.Sweep, out: Path, workers: int) -> dict[str, dict[str, float]]:
    """`calibrate` under the conditions the runs will train in. One worker trains in this process
    on every core it may use, so it calibrates here. Several workers each train pinned to one core,
    so the calibration runs in such a worker too: timed on all cores (XLA uses them all for one
    process), the runs came out up to 1.8× slower than estimated when two trained side by side."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")   # JAX is not fork-safe
    cores = _worker_cores(training_workers(sweep, workers), context)
    if cores is None:
        return calibrate(sweep, out)
    with ProcessPoolExecutor(1, mp_context=context, initializer=_start_worker,
                             initargs=(str(out / "jax_cache"), cores)) as pool:
        return pool.submit(calibrate, sweep, out).result()


def _train_one(sweep: sweeps.Sweep, out: str, name: str) -> tuple[str, str, float]:
    started = time.perf_counter()
    try:
        status = sweeps.run_locally(sweep, out, progress=False, only=[name])[name]
    except Exception as err:  # noqa: BLE001  (gin re-raises with a class that does not pickle back)
        status = f"failed: {type(err).__name__}: {err}"
    return name, status, time.perf_counter() - started


def train_runs(sweep: sweeps.Sweep, out: Path, estimates: dict[str, float], workers: int) -> dict[str, str]:
    """Trains the sweep's runs; returns {run: status} (`sweeps.run_locally`'s statuses).

    With `workers` > 1 (and no finetunes, which wait for their sources) the runs are trained by
    that many worker processes, each pinned to a core of its own (`_worker_cores`) and taking the
    longest run left (`estimates`, seconds) so the sweep ends at about `makespan`.
    A line per finished run reports its wall time next to its estimate.
    """
    if training_workers(sweep, workers) <= 1:
        return sweeps.run_locally(sweep, out, progress=True)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    order = sorted(sweep.runs, key=lambda r: -estimates.get(r.name, 0.0))
    status: dict[str, str] = {}
    context = multiprocessing.get_context("spawn")   # JAX is not fork-safe
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(str(out / "jax_cache"), _worker_cores(workers, context))) as pool:
        jobs = [pool.submit(_train_one, sweep, str(out), r.name) for r in order]
        for done, job in enumerate(as_completed(jobs), start=1):
            name, state, wall = job.result()
            status[name] = state
            print(f"  [{done}/{len(jobs)}] {name}: {state} in {wall:.0f} s "
                  f"(estimated {estimates.get(name, math.nan):.0f} s)", flush=True)
    return status


# ------------------------------------------------------------------------------------------
# 4. Fits with held-out R²


def trained_target_rows(rows):
    """Rows whose target language is one of the run's training languages (D_t > 0)."""
    return [r for r in rows if r["target"] in r["tokens_by_lang"]]


def fit_points_and_targets(rows):
    """The monolingual setting's points table (from-scratch runs trained on their target alone,
    completed schedules) and the targets that can be fitted: at least the report's minimum number
    of points (MIN_POINTS_PER_TARGET["monolingual"]) from MIN_SIZES or more model sizes.

    `rows_to_points` leaves finetunes out: the laws describe training from initialisation; a
    finetune's curve starts from its source's loss and is only used for the crossover (spec §1.7).
    """
    from atlas_t5x.scaling import points as fdata
    from atlas_t5x.scaling.report import MIN_POINTS_PER_TARGET

    min_points = MIN_POINTS_PER_TARGET["monolingual"]
    points = fdata.monolingual_points(fdata.rows_to_points(trained_target_rows(rows), loss_field="loss"))
    targets = sorted(t for t in points["target"].unique()
                     if points.loc[points["target"] == t, "N"].nunique() >= MIN_SIZES
                     and (points["target"] == t).sum() >= min_points)
    if not targets:
        raise ValueError(f"no target has {min_points} completed-schedule points of monolingual runs "
                         f"from {MIN_SIZES} or more model sizes")
    return points[points["target"].isin(targets)].reset_index(drop=True), targets


def heldout_frame(facts):
    """The report's held-out R² (mean over targets) per setting, law and split, as a table."""
    import pandas as pd

    records = []
    for setting, found in (facts.get("settings") or {}).items():
        for law, splits in found["heldout"].items():
            variant = next(iter(found["fits"].get(law, {}).values()), {}).get("variant", law)
            for split, r2 in splits.items():
                records.append({"setting": setting, "law": law, "variant": variant, "split": split,
                                "r2_mean_over_targets": r2})
    return pd.DataFrame(records, columns=["setting", "law", "variant", "split", "r2_mean_over_targets"])


def chosen_fits(points, facts):
    """{law: TableFit} of each law's chosen variant (the report's monolingual setting) refitted on
    the monolingual points, for the plots and the demo's checks."""
    from atlas_t5x.scaling import engine, table_fit

    fits = {}
    for law, per_target in (facts.get("fits") or {}).items():
        chosen = next(iter(per_target.values()))
        spec = table_fit.FitSpec(law=law, tied=chosen["tied"], objective=chosen["objective"],
                                 grid_budget=1000, n_polish=2)
        try:
            fits[law] = table_fit.fit_points(spec, points)
        except (engine.FitError, ValueError):
            continue
    return fits


# ------------------------------------------------------------------------------------------
# 5. What a reader checks first


def _final_rows(rows):
    """{(run, target): the row of the run's last evaluation of target}."""
    last = {}
    for r in rows:
        key = (r["run"], r["target"])
        if key not in last or r["step"] > last[key]["step"]:
            last[key] = r
    return last


def _is_mono(row, target) -> bool:
    """A from-scratch monolingual run's completed trunk (its final evaluation, not a branch)."""
    return (set(row["tokens_by_lang"]) == {target} and row["init"] == "scratch"
            and row["schedule_phase"] in ("final", "decay"))


def sanity_checks(rows, fits, targets) -> list[str]:
    """Markdown lines: the checks a researcher makes before trusting the curves and fits.

    - no non-finite loss, and every (run, step) evaluated on every evaluation language;
    - the final loss of the monolingual runs falls with model size N, per target;
    - loss falls with training tokens along every curve of a training language;
    - repeated data: per monolingual target (largest size), epochs at the end, the loss drop over
      the run's last doubling of D_t, and the fitted value of repetition: ATLAS counts the run's
      D_t as S_λ(D_t; U_t) fresh tokens (spec §1.2), reported as "effective epochs" S_λ/U_t;
    - fitted E at its lower bound (the runs are too short to pin the irreducible loss).
    """
    import numpy as np

    from atlas_t5x.scaling import laws

    lines = ["", "### Checks before reading the fits", "",
             "| check | result |", "|---|---|"]
    bad = [r for r in rows if not all(math.isfinite(r[f]) for f in ("loss", "loss_unigram_norm", "bits_per_byte"))]
    lines.append(f"| non-finite losses | {len(bad)} of {len(rows)} rows |")
    languages = {r["target"] for r in rows}
    per_eval: dict[tuple[str, int], set[str]] = {}
    for r in rows:
        per_eval.setdefault((r["run"], r["step"]), set()).add(r["target"])
    partial = [k for k, v in per_eval.items() if v != languages]
    lines.append(f"| evaluations missing a language | {len(partial)} of {len(per_eval)} (run, step) pairs, "
                 f"{len(languages)} languages each |")

    last = _final_rows(rows)
    for target in targets:
        mono = sorted((r["params"], r["loss"], r["scale"]) for (run, t), r in last.items()
                      if t == target and _is_mono(r, target))
        if len(mono) >= 2:
            falls = all(a[1] > b[1] for a, b in zip(mono, mono[1:]))
            detail = " > ".join(f"{scale} {loss:.3f}" for _, loss, scale in mono)
            lines.append(f"| {target}: final loss falls with N (monolingual) | "
                         f"{'yes' if falls else '**no**'}: {detail} |")

    drops = total = 0
    worst = (1.0, "")
    for (run, target), final in last.items():
        if target not in final["tokens_by_lang"]:
            continue
        curve = sorted((r["step"], r["loss"]) for r in rows if r["run"] == run and r["target"] == target)
        pairs = list(zip(curve, curve[1:]))
        n_down = sum(b[1] < a[1] for a, b in pairs)
        drops, total = drops + n_down, total + len(pairs)
        if pairs and n_down / len(pairs) < worst[0]:
            worst = (n_down / len(pairs), f"{run} on {target}")
    if total:
        least = f"; least monotone curve: {worst[1]} ({worst[0]:.0%})" if worst[1] else ""
        lines.append(f"| loss falls between consecutive evaluations (training languages) | {drops} of {total} "
                     f"steps{least} |")

    atlas_fit = fits.get("atlas")
    for target in targets:
        mono = [r for (run, t), r in last.items() if t == target and _is_mono(r, target)]
        if not mono:
            continue
        final = max(mono, key=lambda r: r["params"])
        curve = {r["tokens_by_lang"][target]: r["loss"] for r in rows if r["run"] == final["run"]
                 and r["target"] == target}
        d_end = max(curve)
        d_half = min(curve, key=lambda d: abs(d - d_end / 2))
        u = final["unique_by_lang"][target]
        text = (f"{final['epochs_by_lang'][target]:.2f} epochs of U_t = {u:,} tokens; loss drop over the "
                f"last doubling of D_t: {curve[d_half] - curve[d_end]:.3f}")
        if atlas_fit is not None and target in atlas_fit.fits and d_end > u:
            lam = float(atlas_fit.fits[target].params["lambda"])
            eff = float(laws.saturate(np.asarray([d_end], float), np.asarray([u], float), lam)[0]) / u
            text += f"; ATLAS λ = {lam:.3g} counts them as {eff:.2f} effective epochs"
        lines.append(f"| {target}: repetition ({final['run']}) | {text} |")

    at_bound = sorted(f"{law} on {t}: {', '.join(f'{k} ({side})' for k, side in res.at_bounds.items())}"
                      for law, fit in fits.items() for t, res in fit.fits.items() if res.at_bounds)
    if at_bound:
        lines.append(f"| parameters at or next to a bound | {'; '.join(at_bound)}: not identified by these "
                     "runs (see the sanity table at the top) |")
    return lines + [""]


def _eval_languages(sweep, corpus: Sequence[str]) -> str:
    """The languages the runs were evaluated on, as the spec says (a list, or every corpus language)."""
    chosen = {tuple(r.settings.get("eval_languages") or ()) if r.settings.get("eval_languages") != "all"
              else tuple(corpus) for r in sweep.runs}
    langs = sorted({lang for group in chosen for lang in group})
    if set(langs) == set(corpus):
        return f"all {len(corpus)} corpus languages"
    return f"{len(langs)} of the {len(corpus)} corpus languages ({', '.join(langs)})"


# ------------------------------------------------------------------------------------------
# 6. Plots


def plot_loss_curves(rows, targets, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trunk_of = lambda r: r.get("trunk") or r["run"]  # noqa: E731  (a cooldown branch → its trunk)
    trunks = sorted({trunk_of(r) for r in rows})
    colors = {run: plt.get_cmap("tab20")(i % 20) for i, run in enumerate(trunks)}  # one colour per trunk
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        own = [r for r in rows if r["target"] == target and target in r["tokens_by_lang"]]
        for trunk in sorted({trunk_of(r) for r in own}):
            curve = sorted((r["tokens_by_lang"][target], r["loss"]) for r in own if r["run"] == trunk)
            ax.plot(*zip(*curve), marker="o", ms=3, label=trunk, color=colors[trunk])
            ends = [(r["tokens_by_lang"][target], r["loss"]) for r in own
                    if r["run"] != trunk and trunk_of(r) == trunk]
            if ends:   # each cooldown branch's end: a completed point off the trunk's curve
                ax.plot(*zip(*sorted(ends)), ls="none", marker="v", ms=5, mfc="none", color=colors[trunk])
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"training tokens of {target} (D_t); ▽ cooldown-branch ends")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(f"target {target}")
        ax.legend(fontsize=6)
    fig.tight_layout()
    logio.write_png(path, fig)


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


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    if sweeps is None:
        return common.run_main(lambda _: common.require_training_stack("atlas-demo"), [])
    out = Path(args.out)
    from atlas_t5x.data import madlad

    try:
        corpus = madlad.available_languages(madlad.resolve_madlad_dir())
        sweep = sweeps.load_sweep(args.spec, corpus_languages=corpus)
        sweeps.check_runnable(sweep)
    except (sweeps.SweepError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"ATLAS demo: {len(sweep.runs)} runs from {args.spec}, evaluated on {_eval_languages(sweep, corpus)}; "
          f"output in {out}")
    plan_path = out / "plan.json"
    if not args.resume:
        for sub in ("runs", "report"):
            shutil.rmtree(out / sub, ignore_errors=True)
    sweeps.enable_compile_cache(out / "jax_cache")

    # 1. calibrate and plan
    if args.resume and plan_path.exists():
        saved = json.loads(plan_path.read_text())
        # The same scaling as the first time (steps, warmup and evaluation period alike), so a
        # resumed run continues the curve it started.
        if saved["factor"] < 1.0:
            sweep = sweeps.Sweep(sweep.name, tuple(_scaled_run(r, saved["factor"]) for r in sweep.runs),
                                 sweep.source)
        changed = [r.name for r in sweep.runs
                   if r.name in saved["total_steps"] and saved["total_steps"][r.name] != r.total_steps]
        if changed:
            print(f"error: {plan_path} does not match {args.spec} for run(s) {changed}; "
                  "run without --resume", file=sys.stderr)
            return 2
        timings = saved["timings"]
        print(f"resuming with the saved plan (token factor {saved['factor']:.3f})")
    else:
        print("1/5 timing this machine (a few steps per model size):")
        timings = calibrate_as_trained(sweep, out, args.workers)
        shutil.rmtree(out / "runs", ignore_errors=True)  # calibration runs are not part of the study
        reserve = 90.0  # export, fits and report [measured: 70-80 s on one core]
        left = None if args.time_budget is None else args.time_budget - (time.perf_counter() - start) - reserve
        sweep, factor, estimate = plan(sweep, timings, left, training_workers(sweep, args.workers))
        logio.write_atomic(plan_path, json.dumps({
            "factor": factor, "estimate_s": estimate, "workers": args.workers, "timings": timings,
            "total_steps": {r.name: r.total_steps for r in sweep.runs}}, indent=1) + "\n")
        if factor < 1.0:
            print(f"  this machine is slower than planned: every run's token budget × {factor:.3f} "
                  f"(estimated {estimate:.0f} s of training)")
        else:
            print(f"  estimated {estimate:.0f} s of training")
    estimates = {r.name: estimate_seconds(r, timings[r.scale]) for r in sweep.runs}
    print(f"2/5 training {len(sweep.runs)} runs on {training_workers(sweep, args.workers)} process(es):")
    for r in sweep.runs:
        langs = r.training_languages or ["all"]
        init = f", from {r.init_from}" if r.init_from else ""
        print(f"  {r.name:<32} {r.scale:<6} {r.mixture:<16} {r.tokens:>8,} tokens, {r.total_steps:>4} steps"
              f" ({', '.join(langs)}{init})")
    train_start = time.perf_counter()
    status = train_runs(sweep, out, estimates, args.workers)
    trained = sum(v == "finished" for v in status.values())
    print(f"  trained {trained} runs in {time.perf_counter() - train_start:.0f} s")
    failed = {name: state for name, state in status.items() if state.startswith("failed")}
    if failed:
        for name, state in failed.items():
            print(f"error: run {name} {state}", file=sys.stderr)
        print(f"error: {len(failed)} run(s) failed; their logs are in {out / 'runs'} (fix and rerun with "
              "--resume to keep the finished runs)", file=sys.stderr)
        return 1

    # 3. export
    from atlas_t5x import logs

    rows = logs.export_logs([out / "runs"], csv_path=out / "logs.csv", parquet_path=out / "logs.parquet")
    print(f"3/5 exported {len(rows)} eval rows → {out / 'logs.csv'}, {out / 'logs.parquet'}")

    # 4. fits
    try:
        from atlas_t5x.scaling import engine  # noqa: F401  (the fitter)
    except ImportError:
        print("4/5 the fitter (atlas_t5x.scaling) is not available: stopping after the export.")
        return 0
    print(f"4/5 fitting csl, dcsl and atlas per target ({' and '.join(DEMO_SETTINGS)} setting, model "
          "selection, bootstrap by run, held-out R²) and writing the report ...")
    try:
        points, targets = fit_points_and_targets(rows)
    except ValueError as err:
        print(f"  cannot fit: {err}; the logs are exported in {out}. Stopping before the report.")
        return 1
    trained_alone = sorted({lang for r in sweep.runs if r.training_languages and len(r.training_languages) == 1
                            for lang in r.training_languages} - set(targets))
    if trained_alone:   # trained, but too few sizes or points for a law in N: said, not silently dropped
        print(f"  not fitted (fewer than {MIN_SIZES} sizes or too few completed points of monolingual "
              f"runs): {', '.join(trained_alone)}")
    report_dir = out / "report"
    from atlas_t5x.scaling.report import build_report

    report_rows = [r for r in trained_target_rows(rows) if r["target"] in targets]
    # a sweep without uniform K > 2 runs (the demo: ru+uk at two sizes) cannot identify the curse
    # exponent φ: its plan is reported, not checked (gin/sweeps/demo.yaml says why)
    curse_design = any(r.family == "uniform" for r in sweep.runs)
    # one core's budget: the demo fits the monolingual setting (what its checks read); its two
    # bilingual runs add two points to a multilingual one, which `atlas-report` fits
    report = build_report(report_rows, report_dir, laws=LAWS, loss_field="loss", curse_check=curse_design,
                          settings=DEMO_SETTINGS)
    facts = json.loads((report_dir / "report.json").read_text())["facts"]
    table = heldout_frame(facts)
    logio.write_atomic(out / "heldout.csv", table.to_csv(index=False))
    for setting, sub in table.groupby("setting", sort=False):
        pretty = sub.pivot_table(index="variant", columns="split", values="r2_mean_over_targets", aggfunc="first")
        print(f"  held-out R², {setting} setting, per target averaged over targets (targets {', '.join(targets)}):")
        print(pretty.to_string(float_format=lambda v: f"{v:.3f}"))
    fits = chosen_fits(points, facts)
    plot_loss_curves(rows, targets, report_dir / "loss_curves.png")
    plot_fitted_laws(points, fits, targets, report_dir / "fitted_laws.png")
    plot_all_languages(rows, report_dir / "all_languages.png")
    factor = json.loads(plan_path.read_text())["factor"]
    demo_section = "\n".join([
        "", "## Demo study: curves and fitted laws", "",
        f"{len(sweep.runs)} runs from `{args.spec}` (token factor from calibration {factor:.3f}), each "
        f"evaluated on {_eval_languages(sweep, corpus)}. The fits above (section \"Fits and held-out "
        f"R²\") use the completed-schedule points of the targets {', '.join(targets)}: first the runs "
        "trained on the target alone (monolingual setting, which the sanity checks read), then every run "
        "that trains on it; loss = token cross-entropy (nats/token); finetunes are left out. Their "
        "held-out R² per setting, law and split is also in [heldout.csv](../heldout.csv); the exported "
        "logs are `../logs.csv` and `../logs.parquet`.", "",
        *sanity_checks(rows, fits, targets),
        "Loss curves per target (every run that trains on it):", "", "![loss curves](loss_curves.png)", "",
        "Monolingual points and the per-target fits (csl dotted, dcsl dashed, atlas solid):", "",
        "![fitted laws](fitted_laws.png)", "",
        "Final loss of every run on every evaluation language (transfer to languages a run never saw):",
        "", "![all languages](all_languages.png)", "",
    ])
    logio.write_atomic(report, report.read_text(encoding="utf-8") + demo_section)
    wall = time.perf_counter() - start
    sanity = json.loads((report_dir / "report.json").read_text())["sections"]["Sanity checks"]
    checks = sanity["tables"][0]["rows"]
    failed = [c for c in checks if not c[1]]
    print(f"5/5 report: {report}  (demo wall time {wall:.0f} s, {time.process_time():.0f} s of CPU in this process)")
    print(f"sanity: {len(checks) - len(failed)} of {len(checks)} checks pass"
          + (f"; FAILED: {'; '.join(f'{c[0]} ({c[2]})' for c in failed)}" if failed else ""))
    for check, ok, detail in checks:
        print(f"  {'pass' if ok else 'FAIL'}  {check}: {detail}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
