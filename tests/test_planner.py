"""Compute planner (Chinchilla limit, repetition, band, bad input) and mixture planner."""

import json
import math
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
