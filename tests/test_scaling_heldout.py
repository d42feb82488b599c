"""Held-out splits (spec §5) and the law comparison table."""

import numpy as np
import pytest

from atlas_t5x.scaling import points as points_lib, engine, table_fit, heldout


@pytest.fixture(scope="module")
def study():
    points, truth = points_lib.synthetic_study(languages=("en", "de", "fr", "ja"), sizes=(2e7, 8e7, 3e8, 1.2e9, 5e9),
                                         noise=0.002, seed=5)
    return points[points["target"].isin(["de", "ja"])].reset_index(drop=True)


def test_metrics_values():
    m = heldout.metrics([2.0, 3.0, 4.0], [2.0, 3.5, 4.0])
    assert m["mae"] == pytest.approx(0.5 / 3)
    assert m["mape"] == pytest.approx(100 * (0.5 / 3) / 3)
    assert m["r2"] == pytest.approx(1 - 0.25 / 2)
    assert m["n"] == 3


def test_split_masks(study):
    n = len(study)
    random = heldout.holdout_mask(study, "random", seed=1)
    assert study.loc[random, "run"].nunique() == round(0.2 * study["run"].nunique())
    assert not set(study.loc[random, "run"]) & set(study.loc[~random, "run"])   # whole runs
    assert not np.array_equal(random, heldout.holdout_mask(study, "random", seed=2))
    big = heldout.holdout_mask(study, "N")
    assert set(study.loc[big, "N"]) == {5e9} and study.loc[~big, "N"].max() < 5e9
    for split in ("D", "C"):   # chosen per target
        top = heldout.holdout_mask(study, split)
        for t in study["target"].unique():
            sel = (study["target"] == t).to_numpy()
            assert study.loc[sel & top, split].min() >= study.loc[sel & ~top, split].max()
            assert 0.18 <= top[sel].mean() <= 0.25
    unseen = heldout.holdout_mask(study, "M")
    kinds = {heldout.mixture_kind(m, w) for m, w in zip(study.loc[~unseen, "mixture"], study.loc[~unseen, "weights"])}
    assert kinds == {"monolingual", "bilingual", "unimax"}
    assert set(study.loc[unseen, "mixture"]) == {m for m in study["mixture"] if m.startswith("cap4")}
    with pytest.raises(engine.FitError, match="unknown held-out split 'Q'"):
        heldout.holdout_mask(study, "Q")


def test_atlas_beats_csl_on_size_and_mixture_extrapolation(study):
    fast = dict(n_polish=2, grid_budget=1500)
    table = heldout.compare_laws({"csl": table_fit.FitSpec("csl", **fast), "atlas": table_fit.FitSpec("atlas", **fast)},
                                 study, splits=("N", "M"))
    r2 = table.set_index(["law", "split"])["r2"]
    assert set(table["split"]) == {"in_sample", "N", "M"}
    assert r2["atlas", "N"] > r2["csl", "N"] and r2["atlas", "N"] > 0.95
    assert r2["atlas", "M"] > r2["csl", "M"] and r2["atlas", "M"] > 0.95
    mape = table.set_index(["law", "split"])["mape"]
    assert mape["atlas", "M"] < mape["csl", "M"]


def test_split_that_leaves_nothing_to_fit_is_an_error(study):
    only_capacity = study[study["mixture"].str.startswith("cap4")].reset_index(drop=True)
    with pytest.raises(engine.FitError, match="split 'M' holds out every point"):
        heldout.evaluate_split(table_fit.FitSpec("csl"), only_capacity, "M")
    mono = study[study["mixture"].str.startswith("mono")].reset_index(drop=True)
    with pytest.raises(engine.FitError, match="split 'M' holds out no point"):
        heldout.evaluate_split(table_fit.FitSpec("csl"), mono, "M")


def test_leave_one_language_out_predicts_every_target(study):
    res = heldout.evaluate_split(table_fit.FitSpec("csl", n_polish=2, grid_budget=1000), study, "lolo")
    assert res.metrics["n"] == len(study)
    assert np.all(np.isfinite(res.predictions))
    assert res.metrics["mape"] < 10.0
