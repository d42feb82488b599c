"""Compute planner (Chinchilla limit, repetition, band, bad input) and mixture planner."""

import json
import warnings

import numpy as np
import pytest


from atlas_t5x.scaling import planner as pl
from atlas_t5x.scaling.laws import make_law

ATLAS = dict(E=1.8, A=482.0, B=2085.0, alpha=0.348, beta=0.366, **{"lambda": 0.05})


def _atlas(**kw):
    return pl.FittedLaw(make_law("atlas"), dict(ATLAS), **kw)


def test_unlimited_data_matches_the_chinchilla_closed_form():
    plan = pl.plan_compute(_atlas(), 1e21)
    n_cf, d_cf = pl.chinchilla_optimum(1e21, ATLAS["A"], ATLAS["B"], ATLAS["alpha"], ATLAS["beta"])
    assert plan.closed_form == pytest.approx((n_cf, d_cf))
    assert plan.params == pytest.approx(n_cf, rel=1e-4)
    assert plan.tokens == pytest.approx(d_cf, rel=1e-4)
    assert 6 * plan.params * plan.tokens == pytest.approx(1e21)
    assert plan.epochs == 0.0 and plan.tokens_per_param == pytest.approx(d_cf / n_cf, rel=1e-3)


def test_less_unique_data_moves_to_fewer_tokens_per_parameter():
    unlimited = pl.plan_compute(_atlas(), 1e21)
    ratios = [unlimited.tokens_per_param]
    for U in (4e10, 2e10, 1e10, 3e9):  # all below the unlimited D* ≈ 6e10
        plan = pl.plan_compute(_atlas(), 1e21, U)
        assert plan.epochs == pytest.approx(plan.tokens / U)
        ratios.append(plan.tokens_per_param)
    assert all(a > b for a, b in zip(ratios, ratios[1:])), ratios
    # and repetition never helps: the predicted loss rises as U shrinks
    assert pl.plan_compute(_atlas(), 1e21, 3e9).loss > unlimited.loss


def test_bootstrap_band_brackets_the_plan():
    rng = np.random.default_rng(0)
    samples = tuple({**ATLAS, "alpha": ATLAS["alpha"] * f, "beta": ATLAS["beta"] * g}
                    for f, g in rng.normal(1, 0.02, (30, 2)))
    plan = pl.plan_compute(_atlas(samples=samples), 1e21, 1e11)
    lo, hi = plan.band["params"]
    assert lo < plan.params < hi
    assert "95% bootstrap" in pl.format_plan(plan)


def test_budget_too_small_and_extrapolation_warning():
    with pytest.raises(pl.PlanError, match="too small for the smallest model"):
        pl.plan_compute(_atlas(), 1e12)
    fl = _atlas(fit_range={"N": (1e7, 1e8), "D": (1e8, 1e10)})
    with pytest.warns(pl.ExtrapolationWarning, match=r"outside the fitted range \[1e\+07, 1e\+08\]"):
        plan = pl.plan_compute(fl, 1e23)
    assert plan.warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pl.plan_compute(fl, 6 * 3e7 * 3e9)
    with pytest.raises(pl.PlanError, match="must be a finite number"):
        pl.plan_compute(_atlas(), -1.0)


def test_load_fitted_laws(tmp_path):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"fits": {"sw": {"law": "csl", "params": {
        "E": 1.8, "A": 400.0, "B": 900.0, "alpha": 0.33}}}}))
    laws = pl.load_fitted_laws(path)
    assert laws["sw"].law.tied and laws["sw"].target == "sw"
    plan = pl.plan_compute(laws["sw"], 1e20)
    assert plan.params == pytest.approx(plan.closed_form[0], rel=1e-4)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(pl.PlanError, match="bad.json"):
        pl.load_fitted_laws(tmp_path / "bad.json")


# ------------------------------------------------------------------------------- mixture planner

from atlas_t5x.scaling import mixture_planner as mp  # noqa: E402


def _multilingual_laws():
    def law(transfer, taus):
        params = dict(ATLAS, tau_other=0.05, **{f"tau_{l}": v for l, v in zip(transfer, taus)})
        return pl.FittedLaw(make_law("atlas", transfer_langs=transfer, with_other=True), params)

    return {"sw": law(("en", "yo"), (0.3, 0.4)), "yo": law(("en", "sw"), (0.2, 0.4)),
            "en": law(("de",), (0.5,))}


UNIQUE = {"sw": 2e8, "yo": 5e7, "en": 1e11, "de": 5e10}


def test_mixture_planner_respects_epoch_caps_and_beats_baselines():
    laws = _multilingual_laws()
    targets = {"sw": 1.0, "yo": 1.0, "en": 0.5}
    for cap in (1.0, 4.0, {"sw": 2.0, "yo": 8.0, "en": 1.0, "de": 1.0}):
        plan = mp.plan_mixture(targets, laws, params=1e9, total_tokens=2e10, unique_tokens=UNIQUE,
                               max_epochs=cap)
        assert sum(plan.weights.values()) == pytest.approx(1.0, abs=1e-9)
        caps = cap if isinstance(cap, dict) else {l: cap for l in UNIQUE}
        for lang, epochs in plan.epochs_by_lang.items():
            assert epochs <= caps[lang] * (1 + 1e-9), (lang, epochs, caps[lang])
            assert plan.weights[lang] >= 0
        assert not plan.cap_violations
    plans = mp.compare_mixtures(targets, laws, 1e9, 2e10, UNIQUE, max_epochs=4.0)
    assert set(plans) == {"optimised", "unimax", "temperature_T3.33"}
    assert plans["optimised"].objective <= plans["unimax"].objective + 1e-9
    assert plans["optimised"].objective <= plans["temperature_T3.33"].objective + 1e-9
    assert "weighted" in mp.format_comparison(plans)


def test_mixture_planner_bad_input():
    laws = _multilingual_laws()
    with pytest.raises(pl.PlanError, match="infeasible"):
        mp.plan_mixture({"sw": 1.0}, laws, 1e9, 1e12, {"sw": 2e8, "en": 1e9, "yo": 5e7}, max_epochs=2.0)
    with pytest.raises(pl.PlanError, match=r"no fitted law for target\(s\) \['fr'\]"):
        mp.plan_mixture({"fr": 1.0}, laws, 1e9, 1e10, UNIQUE)
    with pytest.raises(pl.PlanError, match=r"U missing.*\['yo'\]"):
        mp.plan_mixture({"sw": 1.0}, laws, 1e9, 1e10, {"sw": 1e9, "en": 1e9})


def test_projection_onto_capped_simplex():
    upper = np.array([0.1, 0.5, 1.0])
    x = mp.project_capped_simplex(np.array([5.0, -1.0, 0.2]), upper)
    assert x.sum() == pytest.approx(1.0) and np.all(x <= upper) and np.all(x >= 0)


def test_reads_fit_atlas_output_and_warns_outside_the_logged_range(tmp_path):
    doc = {"law": "atlas", "targets": ["de", "en"], "params": {"de": ATLAS, "en": ATLAS},
           "per_target": {t: {"law": "atlas", "params": ATLAS, "converged": True} for t in ("de", "en")}}
    (tmp_path / "fit.json").write_text(json.dumps(doc))
    laws = pl.load_fitted_laws(tmp_path / "fit.json")
    assert sorted(laws) == ["de", "en"] and laws["en"].law.name == "atlas"
    from _analyses_rows import study_rows

    ranged = pl.with_fit_ranges(laws, study_rows())
    assert ranged["de"].fit_range["N"] == (1e7, 1e8)
    with pytest.warns(pl.ExtrapolationWarning, match="far outside the fitted range"):
        pl.plan_compute(ranged["de"], 1e22)


def test_fit_json_samples_give_a_band_and_repetition_beyond_the_fitted_epochs_warns(tmp_path):
    # one per_target entry as scripts/fit_atlas.py writes it (bootstrap samples + fitted range)
    rng = np.random.default_rng(1)
    samples = [{**ATLAS, "alpha": ATLAS["alpha"] * f} for f in rng.normal(1, 0.02, 20)]
    entry = {"law": "atlas", "params": ATLAS, "fit_range": {"N": [1e7, 1e10], "D": [1e8, 1e12],
                                                            "epochs": [0.01, 2.0]},
             "bootstrap": {"n_boot": 20, "intervals": {}, "samples": samples}}
    (tmp_path / "fit.json").write_text(json.dumps({"law": "atlas", "targets": ["sw"], "params": ATLAS,
                                                   "per_target": {"sw": entry}}))
    fl = pl.load_fitted_laws(tmp_path / "fit.json")["sw"]
    assert len(fl.samples) == 20 and fl.fit_range["epochs"] == (0.01, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = pl.plan_compute(fl, 1e21, 1e11)   # D* ≈ 6e10 < U: no repetition, Chinchilla holds
    assert plan.band["params"][0] < plan.params < plan.band["params"][1]
    assert plan.closed_form[0] == pytest.approx(plan.params, rel=1e-3)
    with pytest.warns(pl.ExtrapolationWarning, match=r"repeats the data .* fitted on 0.01–2 epochs"):
        plan = pl.plan_compute(fl, 1e21, 3e9)
    assert plan.epochs > 4 and plan.closed_form is None


def test_mixture_comparison_plot_and_epoch_table(tmp_path):
    plans = mp.compare_mixtures({"sw": 1.0, "yo": 1.0}, _multilingual_laws(), 1e9, 2e10, UNIQUE, max_epochs=4.0)
    text = mp.format_comparison(plans)
    assert "epochs (D_l / U_l)" in text and "exceeds caps" in text   # temperature sampling ignores caps
    assert plans["optimised"].epochs_by_lang["yo"] <= 4.0 * (1 + 1e-9)
    mp.plot_comparison(tmp_path / "m.png", plans)
    assert not plans["optimised"].warnings
    import dataclasses

    laws = {t: dataclasses.replace(fl, fit_range={"N": (1e7, 1e8), "D": (1e6, 1e10)})
            for t, fl in _multilingual_laws().items()}
    plan = mp.plan_mixture({"sw": 1.0}, laws, 1e9, 2e10, UNIQUE)
    assert any("target sw: N = 1e+09 parameters is far outside the fitted range [1e+07, 1e+08]" in w
               for w in plan.warnings)
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_plans_from_fit_atlas_output_carry_its_band_and_range(tmp_path):
    """The interface with scripts/fit_atlas.py: per-target "fit_range" and bootstrap "samples"."""
    import importlib.util
    from pathlib import Path

    from atlas_t5x import logio
    from _analyses_rows import log_grid, run_rows

    rng = np.random.default_rng(0)
    rows = []
    for N in (1e7, 3e7, 1e8):
        rows += run_rows(f"mono_sw_{N:.0e}", {"sw": 1.0}, ["sw"],
                         lambda t, by, tot, N=N: (1.8 + 400 / N ** 0.34 + 900 / by["sw"] ** 0.3)
                         * np.exp(rng.normal(0, 0.002)), log_grid(1e8, 1e10, 6), params=int(N))
    logio.append_jsonl(tmp_path / "logs" / "eval.jsonl", rows)
    path = Path(__file__).resolve().parents[1] / "scripts" / "fit_atlas.py"
    spec = importlib.util.spec_from_file_location("_fit_atlas_cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--logs", str(tmp_path / "logs"), "--law", "csl", "--loss_field", "loss",
                     "--bootstrap", "8", "--no_plots", "--out", str(tmp_path / "fit")]) == 0
    fl = pl.load_fitted_laws(tmp_path / "fit" / "fit.json")["sw"]
    assert fl.fit_range["N"] == (1e7, 1e8) and fl.fit_range["D"] == pytest.approx((1e8, 1e10))
    assert len(fl.samples) >= 4 and set(fl.samples[0]) >= {"E", "A", "B", "alpha", "beta"}
    with pytest.warns(pl.ExtrapolationWarning, match=r"fitted range \[1e\+07, 1e\+08\]"):
        plan = pl.plan_compute(fl, 1e21)
    lo, hi = plan.band["params"]
    assert 0 < lo <= hi and 0.2 < plan.params / lo < 5 and 0.2 < hi / plan.params < 5
