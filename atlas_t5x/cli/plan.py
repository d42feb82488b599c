"""Planning with fitted scaling laws: compute budgets, more languages, finetune-or-not, mixtures.

  # loss-optimal N, D for 1e21 FLOPs and 2e9 unique Swahili tokens, under a fitted law
  atlas-plan compute --fit fit/fit.json --target sw --flops 1e21 --unique 2e9 --logs runs/
  atlas-plan compute --law csl --params E=1.82,A=482,B=2085,alpha=0.348,beta=0.366 --flops 1e21

  # going from K to r·K languages at iso-loss (paper exponents unless given)
  atlas-plan languages --r 2 4 8 16 --out_json curse.json --out_png frontier.png
  atlas-plan languages --logs runs/ --k 4 --n 1e8 --tokens_per_lang 2e9

  # pretrain-vs-finetune crossover: from logs, or the paper's C*(N) at a size
  atlas-plan crossover --params 2.03e9
  atlas-plan crossover --logs runs/ --params 2e9 --out_png crossover.png   # + crossover_law.png

  # mixture weights minimising the weighted predicted loss under epoch caps
  atlas-plan mixture --fit multi_fits.json --targets sw=1,yo=1 --params 1e9 \\
      --tokens 2e10 --unique sw=2e8,yo=5e7,en=1e11 --max_epochs 4 --out_png mixture.png

Each prints a readable answer, writes JSON (--out_json) and a plot (--out_png) atomically once
everything is computed, warns when a plan leaves the range its law was fitted on, and exits with
code 2 on bad input. `compute` reads atlas-fit's fit.json: its per-target "fit_range"
drives the extrapolation warnings and its "bootstrap" samples (--bootstrap K) the 95% band.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any


import numpy as np

from atlas_t5x import logio, logs
from atlas_t5x.scaling import crossover as co
from atlas_t5x.scaling import curse
from atlas_t5x.scaling import curves as cv
from atlas_t5x.scaling import mixture_planner as mp
from atlas_t5x.scaling import planner as pl
from atlas_t5x.cli import common


class InputError(ValueError):
    """Bad command-line input."""


def write_json(path: str | None, payload: Any) -> None:
    if path:
        logio.write_json(path, payload)
        print(f"wrote {path}")


def parse_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise InputError(f"{what}: {text!r} is not a number") from err
    if not math.isfinite(value):
        raise InputError(f"{what}: {text!r} is not finite")
    return value


def positive(what: str, upper: float | None = None):
    """argparse type: a finite number > 0 (and < `upper` if given), else exit 2 naming the flag."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and value > 0 and (upper is None or value < upper)):
            bound = f" and < {upper:g}" if upper is not None else ""
            raise argparse.ArgumentTypeError(f"{what} must be a finite number > 0{bound}, got {text}")
        return value

    return parse


def finite(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite")
    return value


def read_json_file(path: str, what: str) -> Any:
    """The JSON document at `path`; InputError naming the file and the problem (not JSON, not UTF-8)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read {what}: {err.strerror or err}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: {what} is not a JSON file (not UTF-8 text: byte {data[err.start]:#04x} at "
                         f"offset {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: {what} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None


def load_laws(path: str) -> dict[str, pl.FittedLaw]:
    """atlas-fit's fit file (or another fitted-law JSON), checked to be JSON first."""
    read_json_file(path, "fit file")
    return pl.load_fitted_laws(path)


def parse_pairs(text: str, what: str) -> dict[str, float]:
    """"a=1,b=2e9" → {"a": 1.0, "b": 2e9}."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise InputError(f"{what}: expected name=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_number(v.strip(), f"{what} {k.strip()}")
    if not out:
        raise InputError(f"{what}: no name=value pairs in {text!r}")
    return out


# ---------------------------------------------------------------------------------------------
# compute


def _laws_from_args(args) -> dict[str, pl.FittedLaw]:
    if args.fit:
        laws = load_laws(args.fit)
        if args.target:
            missing = [t for t in args.target if t not in laws]
            if missing:
                raise InputError(f"--target {missing} not in {args.fit} (has {sorted(laws)})")
            laws = {t: laws[t] for t in args.target}
        return laws
    if not (args.law and args.params):
        raise InputError("give --fit FILE, or --law NAME with --params name=value,...")
    params = parse_pairs(args.params, "--params")
    target = (args.target or [""])[0]
    return {target: pl.FittedLaw(pl.law_for_params(args.law, params), params, target=target)}


def cmd_compute(args) -> dict:
    flops = parse_number(args.flops, "--flops")
    if not flops > 0:
        raise InputError(f"--flops must be > 0, got {args.flops}")
    laws = _laws_from_args(args)
    if args.logs:
        laws = pl.with_fit_ranges(laws, logs.read_rows(args.logs))
    unique: Any = None
    if args.unique:
        unique = (parse_pairs(args.unique, "--unique") if "=" in args.unique
                  else parse_number(args.unique, "--unique"))
    if isinstance(unique, dict):
        missing = [t for t in laws if t not in unique]
        if missing:
            raise InputError(f"--unique gives no U for target(s) {missing} (has {sorted(unique)}); "
                             "give every target, or one number for all")
    plans = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pl.ExtrapolationWarning)  # printed with the plan instead
        for target, fl in laws.items():
            u = unique.get(target) if isinstance(unique, dict) else unique
            plan = pl.plan_compute(fl, flops, u, min_params=args.min_params, max_params=args.max_params,
                                   target=target)
            print(pl.format_plan(plan))
            plans.append(plan)
    if args.out_png:
        _plot_compute(args.out_png, laws, plans)
    return {"command": "compute", "plans": [p.to_dict() for p in plans]}


def _plot_compute(path, laws, plans) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for plan in plans:
        fl = laws[plan.target]
        n = np.geomspace(plan.params / 30, plan.params * 30, 200)
        u = "U unlimited" if math.isinf(plan.unique_tokens) else f"U = {plan.unique_tokens:.3g} tokens"
        line, = ax.plot(n, fl.loss(n, plan.flops / (6 * n), plan.unique_tokens),
                        label=f"{plan.target or 'law'} ({u}): N* = {plan.params:.3g}, "
                              f"{plan.tokens_per_param:.0f} tok/param, {plan.epochs:.2g} epochs")
        ax.plot(plan.params, plan.loss, "o", color=line.get_color(), mec="black")
        if plan.band:
            ax.axvspan(*plan.band["params"], color=line.get_color(), alpha=0.15, lw=0)
        if fl.fit_range and "N" in fl.fit_range:
            ax.axvline(fl.fit_range["N"][1], color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N (tokens D = C / 6N)")
    ax.set_ylabel("predicted loss (nats/token)")
    ax.set_title(f"Predicted loss at a fixed budget C = {plans[0].flops:.3g} FLOPs\n"
                 "dot: optimum; shaded: 95% bootstrap N*; dotted: largest fitted N", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


# ---------------------------------------------------------------------------------------------
# languages (curse of multilinguality)


def cmd_languages(args) -> dict:
    p = {"phi": curse.PAPER_PHI, "psi": curse.PAPER_PSI, "alpha": curse.PAPER_ALPHA, "beta": curse.PAPER_BETA}
    source = "paper exponents (phi=0.11, psi=-0.04, alpha=0.11/0.243, beta=0.04/0.272)"
    out: dict[str, Any] = {"command": "languages"}
    if args.fit:
        doc = read_json_file(args.fit, "curse fit")
        doc = doc.get("params", doc) if isinstance(doc, dict) else doc
        if not isinstance(doc, dict) or not {"phi", "psi", "alpha"} <= set(doc):
            keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise InputError(f"{args.fit}: expected curse parameters phi, psi, alpha[, beta, E, A, B] "
                             f"(one pooled fit), got {keys}")
        for k in ("E", "A", "B", "phi", "psi", "alpha", "beta"):
            if k in doc:
                value = doc[k]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise InputError(f"{args.fit}: curse parameter {k!r} must be a finite number, got {value!r}")
                p[k] = float(value)
        if "beta" not in doc:  # a tied fit (alpha = beta)
            p["beta"] = p["alpha"]
        source = f"fit {args.fit}"
    elif args.logs:
        fits = curse.fit_curse_runs(logs.read_rows(args.logs), args.loss_field, per_language=args.per_language)
        pooled = fits.pop("pooled")
        if isinstance(pooled, str):
            raise InputError(f"{args.logs}: no pooled curse fit: {pooled}")
        p.update(pooled.params)
        source = (f"pooled curse fit of {args.logs}: {pooled.n_points} points, K in {list(pooled.ks)}, "
                  f"R² {pooled.r2:.3f}, converged {pooled.converged}")
        print("Curse law L(K, N, D_t) = E + A·K^phi/N^alpha + B·K^psi/D_t^beta (nats/token; N parameters, "
              "D_t tokens of the evaluated language):")
        print(f"  {'scope':<8} {'points':>6} {'K':>12} {'E':>7} {'A':>9} {'B':>9} {'alpha':>6} {'beta':>6} "
              f"{'phi':>7} {'psi':>7} {'R2':>6}")
        out["fits"] = {}
        for scope, fit in [("pooled", pooled)] + sorted(fits.items()):
            if isinstance(fit, str):
                print(f"  {scope:<8} not fitted: {fit}")
                out["fits"][scope] = {"error": fit}
                continue
            q = fit.params
            print(f"  {scope:<8} {fit.n_points:6d} {','.join(map(str, fit.ks)):>12} {q['E']:7.3f} {q['A']:9.4g} "
                  f"{q['B']:9.4g} {q['alpha']:6.3f} {q['beta']:6.3f} {q['phi']:+7.3f} {q['psi']:+7.3f} "
                  f"{fit.r2:6.3f}" + ("" if fit.converged else "  (NOT converged)"))
            out["fits"][scope] = {"params": q, "n_points": fit.n_points, "ks": list(fit.ks), "r2": fit.r2,
                                  "converged": fit.converged}
    for name in ("phi", "psi", "alpha", "beta"):
        if getattr(args, name) is not None:
            p[name] = float(getattr(args, name))
            source = "given exponents"
    for name in ("alpha", "beta"):  # scaling exponents: a non-positive one gives complex ratios
        if not p[name] > 0:
            raise InputError(f"exponent {name} must be > 0, got {p[name]:g} ({source})")
    tied = " (tied: alpha = beta, so a = 0.5 by construction)" if p["alpha"] == p["beta"] else ""
    print(f"Exponents used ({source}): phi={p['phi']:+.4g}, psi={p['psi']:+.4g}, alpha={p['alpha']:.4g}, "
          f"beta={p['beta']:.4g}; one language's compute-optimal N* ∝ C^a, a = beta/(alpha+beta) = "
          f"{p['beta'] / (p['alpha'] + p['beta']):.3f}{tied}")
    out["allocation_exponent_a"] = p["beta"] / (p["alpha"] + p["beta"])
    rs = [parse_number(r, "--r") for r in args.r]
    plans = [curse.iso_loss_plan(r, p["phi"], p["psi"], p["alpha"], p["beta"]) for r in rs]
    if args.logs and args.k:
        fitted_ks = out["fits"]["pooled"]["ks"]
        far = [r for r in rs if r * args.k > max(fitted_ks) * pl.EXTRAPOLATION_FACTOR]
        if far:
            msg = (f"r·K = {', '.join(f'{r * args.k:g}' for r in far)} languages is far outside the fitted "
                   f"K range [{min(fitted_ks)}, {max(fitted_ks)}]: the curse law is extrapolated")
            print(f"WARNING: {msg}")
            out["warnings"] = [msg]
    print(f"Iso-loss growth from K to r·K languages ({source}); each loss term keeps its value:")
    print(f"{'languages':>10} {'total tokens x':>15} {'params x':>9} {'tokens/lang x':>14} {'compute x':>10}")
    for plan in plans:
        print(f"{plan.r:>9g}K {plan.total_tokens_ratio:15.2f} {plan.params_ratio:9.2f} "
              f"{plan.target_tokens_ratio:14.2f} {plan.compute_ratio:10.2f}")
    out.update({"exponents": p, "source": source, "closed_form": [pl_.to_dict() for pl_ in plans]})
    if args.k and args.n and args.tokens_per_lang:
        d_total = args.k * args.tokens_per_lang
        print(f"From the baseline K = {args.k:g} languages, N = {args.n:.3g} parameters, D_t = "
              f"{args.tokens_per_lang:.3g} tokens per language (D_total = {d_total:.3g}, "
              f"C = 6·N·D_total = {6 * args.n * d_total:.3g} FLOPs):")
        out["baseline"] = {"K": args.k, "N": args.n, "D_t": args.tokens_per_lang, "D_total": d_total,
                           "C": 6 * args.n * d_total}
        out["absolute"] = []
        for plan in plans:
            n2, dt2 = args.n * plan.params_ratio, args.tokens_per_lang * plan.target_tokens_ratio
            dtot2 = plan.r * args.k * dt2
            print(f"  {plan.r * args.k:g} languages: N' = {n2:.3g} parameters, D_t' = {dt2:.3g} tokens per "
                  f"language, D_total' = {dtot2:.3g} tokens, C' = {6 * n2 * dtot2:.3g} FLOPs")
            out["absolute"].append({"r": plan.r, "K": plan.r * args.k, "N": n2, "D_t": dt2, "D_total": dtot2,
                                    "C": 6 * n2 * dtot2})
    w_N = args.w_n
    if w_N is None and args.k and args.n and args.tokens_per_lang and all(k in p for k in ("A", "B")):
        w_N = curse.term_shares(p, args.k, args.n, args.tokens_per_lang)[0]
    if w_N is not None:
        print(f"General iso-loss curve with N-term share w_N = {w_N:.3f}: least-compute points")
        out["w_N"] = w_N
        out["least_compute"] = []
        for r in rs:
            best = curse.min_compute_on_curve(r, w_N, p["phi"], p["psi"], p["alpha"], p["beta"])
            print(f"  {r:g}K: params x{best['s']:.2f}, tokens/lang x{best['t']:.2f}, "
                  f"total tokens x{best['total_tokens']:.2f}, compute x{best['compute']:.2f}")
            out["least_compute"].append({"r": r, **best})
    if args.out_png:
        curse.plot_frontier(args.out_png, p, rs=rs, w_N=w_N)
        print(f"wrote {args.out_png}")
    return out


# ---------------------------------------------------------------------------------------------
# crossover


def cmd_crossover(args) -> dict:
    out: dict[str, Any] = {"command": "crossover"}
    N = None
    if args.params:
        N = parse_number(args.params, "--params")
        if not N > 0:
            raise InputError(f"--params must be > 0, got {args.params}")
    law = co.CrossoverLaw(args.a, args.b)
    source = "paper C*(N) = 1,113,708·N^1.65" if (args.a, args.b) == (co.PAPER_A, co.PAPER_B) else "given a, b"
    figures: dict[str, Any] = {}
    if args.logs:
        rows = logs.read_rows(args.logs)
        results = co.crossovers_from_runs(rows, loss_field=args.loss_field)
        if not results:
            raise InputError(f"{args.logs}: no (from-scratch, finetune) monolingual run pairs of one size")
        print(f"{'target':>8} {'N':>10} {'crossover tokens':>17} {'crossover FLOPs':>16}  status")
        for r in results:
            print(f"{r.target:>8} {r.params:10.3g} {r.tokens:17.4g} {r.flops:16.4g}  {r.status}"
                  + (f" (common range {r.common_range[0]:.3g}–{r.common_range[1]:.3g} tokens)" if r.status != "ok" else ""))
        out["crossovers"] = [r.to_dict() for r in results]
        ok = [r for r in results if r.status == "ok"]
        censored = [r for r in results if r.status == "beyond"]
        if censored:
            print(f"note: {len(censored)} comparison(s) never cross within their runs (C* lies beyond the "
                  "measured range); they are left out of the C*(N) fit, which may then run low")
        if len({r.params for r in ok}) >= 2:
            law = co.fit_crossover_law([r.params for r in ok], [r.flops for r in ok], n_boot=args.bootstrap)
            source = (f"fit over {len(ok)} crossovers at {law.n_sizes} sizes "
                      f"{law.size_range[0]:.3g}–{law.size_range[1]:.3g}, bootstrap over sizes")
        if args.out_png:
            figures["curves"] = lambda path: co.plot_crossovers(path, rows, results, args.loss_field)
            figures["law"] = lambda path: co.plot_crossover_law(path, law, [r.params for r in ok],
                                                                [r.flops for r in ok])
    elif args.out_png:
        figures["law"] = lambda path: co.plot_crossover_law(path, law, [N] if N else [],
                                                            [float(law.flops(N))] if N else [],
                                                            points_label="C*(N) at the queried N")
    out["law"] = law.to_dict()
    print(f"C*(N) = {law.a:.6g}·N^{law.b:.4g} FLOPs ({source})")
    if N is not None:
        lo, hi = law.interval([N])
        print(f"  at N = {N:.4g}: finetuning stays ahead until {float(law.tokens(N)):.4g} target tokens "
              f"({float(law.flops(N)):.4g} FLOPs of target-stage compute)"
              + (f"; 95% interval {lo[0]:.3g}–{hi[0]:.3g} FLOPs "
                 f"({lo[0] / (6 * N):.3g}–{hi[0] / (6 * N):.3g} tokens)" if np.isfinite(lo[0]) else ""))
        out["at"] = {"params": N, "tokens": float(law.tokens(N)), "flops": float(law.flops(N)),
                     "flops_interval": [float(lo[0]), float(hi[0])]}
        note = law.extrapolation_note(N, pl.EXTRAPOLATION_FACTOR)
        if note:
            print(f"  WARNING: {note}")
            out["warnings"] = [note]
    if args.out_png:   # everything computed: now write
        stem = Path(args.out_png)
        for kind, draw in figures.items():
            path = stem if kind == "curves" or len(figures) == 1 else stem.with_name(f"{stem.stem}_law{stem.suffix}")
            draw(path)
            print(f"wrote {path}")
    return out


# ---------------------------------------------------------------------------------------------
# mixture


def cmd_mixture(args) -> dict:
    laws = load_laws(args.fit)
    targets = parse_pairs(args.targets, "--targets")
    N = parse_number(args.params, "--params")
    if args.tokens:
        total = parse_number(args.tokens, "--tokens")
    elif args.flops:
        total = parse_number(args.flops, "--flops") / (6.0 * N)
    else:
        raise InputError("give the budget as --tokens D_total or --flops C")
    unique = parse_pairs(args.unique, "--unique")
    caps: Any = parse_pairs(args.max_epochs, "--max_epochs") if "=" in args.max_epochs else parse_number(
        args.max_epochs, "--max_epochs")
    languages = [l.strip() for l in args.languages.split(",")] if args.languages else None
    temps = [parse_number(t, "--temperature") for t in args.temperature]
    plans = mp.compare_mixtures(targets, laws, N, total, unique, caps, languages, temps) if not isinstance(caps, dict) \
        else {"optimised": mp.plan_mixture(targets, laws, N, total, unique, caps, languages)}
    print(f"Mixture for targets {targets}, N = {N:.3g}, budget {total:.4g} tokens, epoch cap {args.max_epochs}")
    print(mp.format_comparison(plans))
    for note in plans["optimised"].warnings:
        print(f"WARNING: {note}")
    if args.out_png:
        mp.plot_comparison(args.out_png, plans)
        print(f"wrote {args.out_png}")
    return {"command": "mixture", "budget_tokens": total, "params": N,
            "plans": {k: v.to_dict() for k, v in plans.items()}}


# ---------------------------------------------------------------------------------------------


def _save(fig, path) -> None:
    fig.tight_layout()
    logio.write_png(path, fig)
    print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = common.ArgumentParser(prog="atlas-plan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compute", help="loss-optimal N, D for a FLOP budget")
    c.add_argument("--fit", help="JSON of fitted laws ({law, params} or {target: {law, params}})")
    c.add_argument("--target", action="append", help="target language(s) in --fit (repeatable)")
    c.add_argument("--law", help="law name when giving --params (csl, atlas, dcsl)")
    c.add_argument("--params", help="law parameters name=value,...")
    c.add_argument("--flops", required=True, help="FLOP budget C (e.g. 1e21)")
    c.add_argument("--unique", help="unique target tokens U (one number or lang=U,...); omit: unlimited")
    c.add_argument("--logs", help="the logs the law was fitted on: plans far outside their N, D range warn")
    c.add_argument("--min_params", deprecated=("--min-params",), type=float, default=pl.SMALLEST_PAPER_MODEL)
    c.add_argument("--max_params", deprecated=("--max-params",), type=float, default=1e13)

    g = sub.add_parser("languages", help="iso-loss growth from K to r·K languages (curse law)")
    g.add_argument("--r", nargs="+", default=["2", "4", "8", "16"], help="language multipliers r")
    g.add_argument("--fit", help="JSON with fitted curse params (E, A, B, alpha, beta, phi, psi)")
    g.add_argument("--logs", help="fit the pooled curse law on the uniform-K runs of these logs first")
    g.add_argument("--loss_field", deprecated=("--loss-field",), default="loss")
    g.add_argument("--no_per_language", deprecated=("--no-per-language",), dest="per_language", action="store_false",
                   help="with --logs: only the pooled fit (default: pooled and one fit per language)")
    for name in ("phi", "psi", "alpha", "beta"):
        g.add_argument(f"--{name}", type=finite)
    g.add_argument("--w_n", deprecated=("--w-n",), type=positive("--w_n", upper=1.0),
                   help="share of the N term in the baseline's reducible loss (0 < w < 1)")
    g.add_argument("--k", type=positive("--k"), help="baseline K (with --n, --tokens_per_lang and a --fit)")
    g.add_argument("--n", type=positive("--n"), help="baseline parameters")
    g.add_argument("--tokens_per_lang", deprecated=("--tokens-per-lang",), type=positive("--tokens_per_lang"), help="baseline tokens per language D_t")

    x = sub.add_parser("crossover", help="pretrain-from-scratch vs finetune crossover")
    x.add_argument("--logs", help="exported logs (folder, eval.jsonl or CSV/Parquet table)")
    x.add_argument("--params", help="model size N to evaluate C*(N) at")
    x.add_argument("--a", type=float, default=co.PAPER_A)
    x.add_argument("--b", type=float, default=co.PAPER_B)
    x.add_argument("--bootstrap", type=int, default=1000)
    x.add_argument("--loss_field", deprecated=("--loss-field",), default="loss")

    m = sub.add_parser("mixture", help="mixture weights minimising the weighted predicted loss")
    m.add_argument("--fit", required=True, help="JSON {target: multilingual ATLAS {law, params}}")
    m.add_argument("--targets", required=True, help="lang=weight,...")
    m.add_argument("--params", required=True, type=lambda v: str(positive("--params")(v)), help="model size N")
    m.add_argument("--tokens", help="total training tokens D_total")
    m.add_argument("--flops", help="FLOP budget (D_total = C / 6N)")
    m.add_argument("--unique", required=True, help="unique tokens lang=U,... for every candidate")
    m.add_argument("--max_epochs", deprecated=("--max-epochs",), default="4", help="epoch cap: one number or lang=cap,...")
    m.add_argument("--languages", help="candidate languages (default: targets + transfer languages)")
    m.add_argument("--temperature", nargs="*", default=[str(mp.DEFAULT_TEMPERATURE)])

    for p in (c, g, x, m):
        p.add_argument("--out_json", deprecated=("--out-json",), help="write the answer as JSON here")
        p.add_argument("--out_png", deprecated=("--out-png",), help="write a plot here")
    return parser


COMMANDS = {"compute": cmd_compute, "languages": cmd_languages, "crossover": cmd_crossover,
            "mixture": cmd_mixture}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if getattr(args, "logs", None):   # reading logs and fitting can take seconds
                common.status(f"atlas-plan {args.command}: reading {args.logs}")
            payload = COMMANDS[args.command](args)
        for w in caught:
            if not issubclass(w.category, (DeprecationWarning, pl.ExtrapolationWarning)):
                print(f"warning: {w.message}", file=sys.stderr)
        write_json(args.out_json, payload)
    except (InputError, pl.PlanError, curse.CurseError, co.CrossoverError, cv.CurveError, logs.LogError, ValueError,
            OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ArithmeticError, TypeError) as err:  # overflow / complex results from out-of-range inputs
        print(f"error: the {args.command} plan cannot be computed from these inputs ({type(err).__name__}: "
              f"{err}); check that law parameters and exponents are positive and in range", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
