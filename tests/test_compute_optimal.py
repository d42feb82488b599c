"""Compute-optimal exponents three ways (atlas_t5x.scaling.compute_optimal, atlas-fit --approach)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from atlas_t5x.cli import fit as fit_cli
from atlas_t5x.scaling import compute_optimal as cop

SIZES = np.geomspace(5e6, 3e9, 18)
BUDGETS = 1e17 * 2.0 ** np.arange(-2, 9)   # N* from 7e6 to 8e8, inside SIZES


def law(N, D, alpha, beta, A=400.0, E=1.8):
    """A Chinchilla-form law whose optimum at C = 1e18 is N* = 9e7 (so a = β/(α+β))."""
    a = beta / (alpha + beta)
    G = 9e7 / (1e18 / 6) ** a
    B = alpha * A / (beta * G ** (alpha + beta))
    return E + A / N ** alpha + B / D ** beta


def n_opt(C, alpha, beta):
    return 9e7 * (C / 1e18) ** (beta / (alpha + beta))


def sweep(alpha, beta, sigma=0.002, seed=0, width=5.0, budgets=BUDGETS):
    """IsoFLOP sweep: per budget the sizes within a factor `width` of N*, losses with noise σ."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        ns = n_opt(C, alpha, beta)
        for j, N in enumerate(SIZES):
            if ns / width <= N <= ns * width:
                D = C / (6 * N)
                rows.append({"run": f"s{j}", "N": N, "D": D, "C": C,
                             "loss": law(N, D, alpha, beta) + sigma * rng.standard_normal()})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("alpha,beta", [(0.25, 0.55), (0.34, 0.28)])
def test_isoflop_recovers_known_exponent(alpha, beta):
    truth = beta / (alpha + beta)     # 0.6875 and 0.4516: not 0.5
    res = cop.isoflop_frontier(sweep(alpha, beta), seed=1)
    assert abs(res.a - truth) < 0.015
    assert res.a_ci[0] <= truth <= res.a_ci[1]
    assert res.a_ci[1] - res.a_ci[0] < 0.06
    assert abs(res.b - (1 - truth)) < 0.015          # D* = C/(6N*)
    assert res.n_budgets == len(BUDGETS)
    assert 0.001 < res.extra["noise_sigma"] < 0.004  # σ = 0.002 recovered from the profiles


def test_isoflop_beats_a_plain_parabola_on_asymmetric_profiles():
    """Wide, asymmetric profiles: a quadratic in log N over every point of a budget is biased; the
    local (Akima) profile is not."""
    alpha, beta = 0.2, 0.6
    truth = beta / (alpha + beta)
    errs_ours, errs_parabola = [], []
    for seed in range(3):
        df = sweep(alpha, beta, sigma=0.002, seed=seed, width=8.0)
        errs_ours.append(abs(cop.isoflop_frontier(df, seed=seed).a - truth))
        cs, ns = [], []
        for C, g in df.groupby("C"):
            c = np.polyfit(np.log(g["N"]), g["loss"], 2)
            cs.append(C)
            ns.append(-c[1] / (2 * c[0]))
        errs_parabola.append(abs(np.polyfit(np.log(cs), ns, 1)[0] - truth))
    assert np.mean(errs_ours) < 0.01
    assert np.mean(errs_ours) < np.mean(errs_parabola)


def test_budget_at_grid_edge_and_too_few_points_are_dropped_and_flagged():
    alpha, beta = 0.25, 0.55
    df = sweep(alpha, beta)
    top = BUDGETS[-1]
    # the largest budget keeps only sizes below its N*: its minimum sits at the largest size
    df = df[~((df["C"] == top) & (df["N"] > n_opt(top, alpha, beta) / 1.5))]
    # the smallest budget keeps two sizes only
    low = df[df["C"] == BUDGETS[0]].index
    df = df.drop(low[2:])
    res = cop.isoflop_frontier(df, seed=0)
    by_c = {round(math.log10(b["C"]), 3): b for b in res.budgets}
    assert "largest size" in by_c[round(math.log10(top), 3)]["dropped"]
    assert "only 2 size(s)" in by_c[round(math.log10(BUDGETS[0]), 3)]["dropped"]
    assert res.n_budgets == len(BUDGETS) - 2
    assert abs(res.a - beta / (alpha + beta)) < 0.02
    assert any("largest size" in n for n in res.notes)


def test_too_few_budgets_is_an_error_not_a_crash():
    df = sweep(0.25, 0.55, budgets=BUDGETS[:2])
    with pytest.raises(cop.FrontierError, match="need 3"):
        cop.isoflop_frontier(df)
    with pytest.raises(cop.FrontierError, match="envelope"):
        cop.envelope_frontier(df)
    out = cop.compute_optimal(df, ("isoflop", "envelope"), strict=False)
    assert "need 3" in out["isoflop"]["error"] and out["disagreements"] == []


def test_training_curves_are_read_at_common_budgets():
    """Runs with points along their curve (WSD cooldown ends of a trunk), none at shared C: each run
    is interpolated at a common grid of budgets and the profiles still give a."""
    alpha, beta = 0.25, 0.55
    rows = []
    for j, N in enumerate(SIZES[::2]):
        for tpp in np.geomspace(2, 200, 9) * (1.07 ** j):     # tokens per parameter, run-specific
            D = tpp * N
            rows.append({"run": f"trunk{j}-cd{int(D)}", "group": f"trunk{j}", "N": N, "D": D, "C": 6 * N * D,
                         "loss": law(N, D, alpha, beta)})
    df = pd.DataFrame(rows)
    budgets, how = cop.make_budgets(df)
    assert how == "interpolated"
    res = cop.isoflop_frontier(df, seed=0)
    assert res.extra["budgets_from"] == "interpolated"
    assert abs(res.a - beta / (alpha + beta)) < 0.03


def test_envelope_and_parametric():
    alpha, beta = 0.25, 0.55
    truth = beta / (alpha + beta)
    env = cop.envelope_frontier(sweep(alpha, beta, sigma=0.0), seed=0)
    assert abs(env.a - truth) < 0.05 and env.a_ci[0] <= env.a <= env.a_ci[1]
    par = cop.parametric_frontier({"alpha": alpha, "beta": beta},
                                  [{"alpha": alpha * f, "beta": beta} for f in np.linspace(0.9, 1.1, 41)])
    assert par.a == pytest.approx(truth) and par.b == pytest.approx(1 - truth)
    lo, hi = par.a_ci
    assert beta / (1.1 * alpha + beta) < lo < truth < hi < beta / (0.9 * alpha + beta)
    tied = cop.parametric_frontier({"alpha": 0.3, "beta": 0.3}, tied=True)
    assert tied.a == 0.5 and "by construction" in tied.notes[0] and tied.a_ci is None


def test_disagreement_flag():
    res = {"parametric": {"a": 0.5, "a_ci": [0.49, 0.51]}, "isoflop": {"a": 0.6, "a_ci": [0.57, 0.63]},
           "envelope": {"a": 0.55, "a_ci": [0.45, 0.65]}}
    flags = cop.disagreements(res)
    assert len(flags) == 1 and flags[0].startswith("parametric") and "isoflop" in flags[0]


def _write(tmp_path, df, name="sweep.csv"):
    path = tmp_path / name
    df.rename(columns={"N": "params", "D": "tokens", "loss": "val_loss"}).to_csv(path, index=False)
    return path


def test_cli_isoflop_writes_compute_optimal(tmp_path, capsys):
    path = _write(tmp_path, sweep(0.25, 0.55))
    rc = fit_cli.main(["--table", str(path), "--map", "N=params,D=tokens,loss=val_loss,run=run", "--law", "csl",
                       "--no_select", "--approach", "all", "--no_plots", "--out", str(tmp_path / "o")])
    assert rc == 0
    doc = json.loads((tmp_path / "o" / "fit.json").read_text())
    co = doc["compute_optimal"]
    assert set(co) == {"parametric", "isoflop", "envelope", "disagreements"}
    assert abs(co["isoflop"]["a"] - 0.6875) < 0.015 and co["isoflop"]["n_budgets"] == len(BUDGETS)
    assert co["isoflop"]["a_ci"][0] < co["isoflop"]["a"] < co["isoflop"]["a_ci"][1]
    assert abs(co["parametric"]["a"] - 0.6875) < 0.02
    assert co["parametric"]["a_ci"][0] <= co["parametric"]["a"] <= co["parametric"]["a_ci"][1]
    assert "200 bootstrap replicates" in co["parametric"]["notes"][-1]
    assert "bootstrap" not in doc["per_target"]["all"]   # not asked: only the exponent interval
    assert doc["options"]["approach"] == "all"
    out = capsys.readouterr().out
    assert "compute-optimal isoflop" in out and "compute-optimal envelope" in out


def test_cli_isoflop_too_few_budgets_exits_2(tmp_path, capsys):
    path = _write(tmp_path, sweep(0.25, 0.55, budgets=BUDGETS[:2]))
    rc = fit_cli.main(["--table", str(path), "--map", "N=params,D=tokens,loss=val_loss", "--law", "csl",
                       "--no_select", "--approach", "isoflop", "--no_plots", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "isoflop" in capsys.readouterr().err
    assert not (tmp_path / "o" / "fit.json").exists()


def test_cli_bad_column_exits_2_naming_file_and_column(tmp_path, capsys):
    df = sweep(0.25, 0.55).astype({"loss": object})
    df.loc[3, "loss"] = "n/a"
    path = _write(tmp_path, df)
    rc = fit_cli.main(["--table", str(path), "--map", "N=params,D=tokens,loss=val_loss", "--approach", "isoflop",
                       "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and "val_loss" in err


def test_wsd_trunks_use_cooldown_ends_not_stable_points():
    """Logged points: each trunk's cooldown ends are read at common budgets; its stable-phase points
    (no cooldown, higher loss) are left out, and runs that never trained on the target too."""
    alpha, beta = 0.25, 0.55
    rows = []
    for j, N in enumerate(SIZES[::2]):
        for k, tpp in enumerate(np.geomspace(2, 200, 9)):
            for phase, d, extra in (("cooldown_end", tpp * N, 0.0), ("stable", 1.3 * tpp * N, 0.08 * (1 + k % 3))):
                rows.append({"run": f"t{j}-cd{k}", "group": f"t{j}", "phase": phase, "N": N, "D": d,
                             "C": 6 * N * d, "loss": law(N, d, alpha, beta) + extra, "target": "ru"})
        rows.append({"run": f"other{j}", "group": f"other{j}", "phase": "final", "N": N, "D": 0.0,
                     "C": 6 * N * 50 * N, "loss": 9.0, "target": "ru"})
    df = pd.DataFrame(rows)
    out = cop.compute_optimal(df, ("isoflop",))
    assert abs(out["isoflop"]["a"] - beta / (alpha + beta)) < 0.03
    assert "completed schedules only" in out["isoflop"]["notes"][0]
    assert "runs with target tokens" in out["isoflop"]["notes"][0]
    clean = cop.compute_optimal(df[(df["phase"] == "cooldown_end")], ("isoflop",))
    assert out["isoflop"]["a"] == pytest.approx(clean["isoflop"]["a"])
    mixed = cop.compute_optimal(df[df["D"] > 0].drop(columns="phase"), ("isoflop",), strict=False)
    assert mixed["isoflop"].get("a") != pytest.approx(clean["isoflop"]["a"], abs=1e-3)   # what the filter prevents


def test_compute_planner_says_which_exponents_it_uses():
    from atlas_t5x.scaling import planner

    entry = {"law": "csl", "params": {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.3, "beta": 0.45},
             "compute_optimal": {"isoflop": {"a": 0.62, "a_ci": [0.6, 0.64]}, "envelope": {"error": "too few"}}}
    plan = planner.plan_compute(planner.FittedLaw.from_dict(entry, target="ru"), 1e21, min_params=1e6)
    assert plan.exponents["a"] == pytest.approx(0.6) and plan.exponents["b"] == pytest.approx(0.4)
    assert plan.exponents["others"]["isoflop"]["a"] == 0.62 and "error" in plan.exponents["others"]["envelope"]
    text = planner.format_plan(plan)
    assert "exponents: the fitted csl law" in text and "C^0.600" in text and "isoflop a = 0.620 [0.600, 0.640]" in text
    tied = {"law": "csl", "params": {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.3}}
    text = planner.format_plan(planner.plan_compute(planner.FittedLaw.from_dict(tied), 1e21, min_params=1e6))
    assert "tied exponents: a = 0.5 by construction" in text
