"""Fitting engine: published reproductions, options, bootstrap, profiles, ATLAS recovery."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atlas_t5x.scaling import bootstrap, points as points_lib, engine, table_fit, profiles
from atlas_t5x.scaling.laws import LAWS, make_law
from atlas_t5x.scaling.objectives import get_objective, huber, huber_log_normaliser


def _epoch(shared_data):
    d = pd.read_csv(shared_data / "epoch_chinchilla_fig4.csv").sort_values("loss").iloc[:-5]
    N = d["Model Size"].to_numpy(float)
    return {"N": N, "D": d["Training FLOP"].to_numpy(float) / (6 * N)}, d["loss"].to_numpy(float)


def _datablations(shared_data):
    d = pd.read_csv(shared_data / "datablations_182runs.csv")
    X = {"N": d["params"].to_numpy(float), "D": d["tokens"].to_numpy(float), "U": d["unique_tokens"].to_numpy(float)}
    return X, d["val_loss"].to_numpy(float)


DB_BASE = {"A": 520.82, "B": 1487.72, "E": 1.8691, "alpha": 0.35266, "beta": 0.35266}


def test_huber_and_likelihood_pieces():
    r = np.array([-2e-3, -5e-4, 0.0, 5e-4, 2e-3])
    np.testing.assert_allclose(huber(r, 1e-3), [1.5e-6, 1.25e-7, 0, 1.25e-7, 1.5e-6])
    # the normaliser is the integral of exp(-Huber) (checked where tails are short enough)
    x = np.linspace(-300, 300, 600001)
    z = np.trapezoid(np.exp(-huber(x, 0.5)), x)
    assert np.log(z) == pytest.approx(huber_log_normaliser(0.5), rel=1e-6)
    with pytest.raises(ValueError, match="unknown objective 'l1'"):
        get_objective("l1")


def test_epoch_chinchilla_summed_huber(shared_data):
    X, y = _epoch(shared_data)
    assert y.size == 240
    res = engine.fit(LAWS["csl"], X, y, "huber")
    assert res.converged, res.message
    assert res.objective <= 0.0010182741
    expected = {"E": 1.8172, "A": 477.8, "B": 2143.9, "alpha": 0.3473, "beta": 0.3672}
    for k, v in expected.items():
        assert res.params[k] == pytest.approx(v, rel=5e-3), k
    assert res.n_grid >= 1000 and res.n_polished >= 2


def test_epoch_chinchilla_likelihood(shared_data):
    X, y = _epoch(shared_data)
    res = engine.fit(LAWS["csl"], X, y, "likelihood")
    expected = {"E": 1.8169, "A": 482.01, "B": 2085.43, "alpha": 0.34781, "beta": 0.36585}
    for k, v in expected.items():
        assert res.params[k] == pytest.approx(v, rel=5e-3), k
    assert res.extra["sigma"] > 0


def test_datablations_rd_rn_with_base_fixed_finds_the_better_basin(shared_data):
    X, y = _datablations(shared_data)
    published = engine.evaluate(LAWS["dcsl"], {**DB_BASE, "R_D": 15.387756, "R_N": 5.309743}, X, y)
    res = engine.fit(LAWS["dcsl"], X, y, fixed=DB_BASE)
    assert res.free_names == ("R_D", "R_N")
    assert res.objective <= 0.015808 < published
    assert {k: res.params[k] for k in DB_BASE} == DB_BASE
    assert res.runner_ups, "distinct basins should be reported"
    assert all(r["objective"] >= res.objective for r in res.runner_ups)
    # the R_D direction is flat: the profile flags it
    prof = profiles.profile(res, X, y, names=["R_D"], n_values=5)
    assert prof["R_D"].weakly_identified
    assert np.all(prof["R_D"].objective >= res.objective - 1e-12)


def test_all_fixed_only_evaluates_and_bad_inputs_are_named():
    rng = np.random.default_rng(1)
    X = {"N": rng.uniform(1e7, 1e9, 30), "D": rng.uniform(1e9, 1e11, 30)}
    p = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.28}
    y = LAWS["csl"].predict(p, X) * np.exp(0.01 * rng.standard_normal(30))
    res = engine.fit(LAWS["csl"], X, y, fixed=p)
    assert res.free_names == () and res.params == p and "evaluated only" in res.message
    assert res.objective == pytest.approx(engine.evaluate(LAWS["csl"], p, X, y))
    with pytest.raises(engine.FitError, match="4 points are fewer than the 5 free parameters"):
        engine.fit(LAWS["csl"], {k: v[:4] for k, v in X.items()}, y[:4])
    with pytest.raises(engine.FitError, match="unknown parameter.*'tau_en'"):
        engine.fit(LAWS["csl"], X, y, fixed={"tau_en": 0.1})
    bad = dict(X, N=np.where(np.arange(30) == 3, -1.0, X["N"]))
    with pytest.raises(engine.FitError, match="'N' must be positive"):
        engine.fit(LAWS["csl"], bad, y)
    with pytest.raises(engine.FitError, match="'loss' has NaN"):
        engine.fit(LAWS["csl"], X, np.where(np.arange(30) == 2, np.nan, y))


def test_fixed_and_tied_parameters_are_respected():
    rng = np.random.default_rng(2)
    X = {"N": np.repeat(np.geomspace(1e7, 3e9, 8), 6), "D": np.tile(np.geomspace(1e9, 3e11, 6), 8)}
    p = {"E": 1.7, "A": 380.0, "B": 1500.0, "alpha": 0.31, "beta": 0.31}
    y = LAWS["csl"].predict(p, X) * np.exp(0.002 * rng.standard_normal(48))
    tied = engine.fit(make_law("csl", tied=True), X, y)
    assert "beta" not in tied.params
    assert tied.params["alpha"] == pytest.approx(0.31, abs=0.02)
    fixed = engine.fit(LAWS["csl"], X, y, fixed={"E": 1.7})
    assert fixed.params["E"] == 1.7 and "E" not in fixed.free_names
    assert fixed.params["beta"] == pytest.approx(0.31, abs=0.02)
    lsq = engine.fit(LAWS["csl"], X, y, "lsq", n_polish=3)
    assert lsq.converged and lsq.objective_name == "lsq"
    r = np.log(lsq.predict(X) / y)
    assert lsq.objective == pytest.approx(0.5 * np.sum(r * r), rel=1e-9)
    assert lsq.objective <= engine.evaluate(LAWS["csl"], p, X, y, "lsq")   # at most the truth's
    assert lsq.params["alpha"] == pytest.approx(0.31, abs=0.02)


def test_bootstrap_by_run_matches_individual_refits(shared_data):
    X, y = _epoch(shared_data)
    res = engine.fit(LAWS["csl"], X, y)
    runs = np.arange(y.size)
    boot = bootstrap.bootstrap(res, X, y, runs, n_boot=64, seed=3)
    assert boot.converged.mean() >= 0.9
    ci = boot.intervals()
    for k in ("alpha", "beta", "E"):
        assert ci[k]["lo"] < res.params[k] < ci[k]["hi"]
    assert 0.4 < ci["N_opt_exponent"]["median"] < 0.6
    W = bootstrap.run_weights(runs, 64, seed=3)
    problem = engine._Problem(res.law, get_objective("huber"), {}, None, False)
    for i in range(2):
        z, _, _, _ = engine.polish(problem, problem.pack(res.params), X, y, W[i])
        ref = problem.unpack(z)
        for k in ("E", "alpha", "beta"):
            assert boot.samples[k][i] == pytest.approx(float(ref[k]), rel=2e-3), k


def test_run_weights_resample_whole_runs():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    W = bootstrap.run_weights(groups, 50, seed=0)
    assert W.shape == (50, 6)
    assert np.all(W[:, 0] == W[:, 1]) and np.all(W[:, 3] == W[:, 5])
    assert np.all(W[:, [0, 2, 3]].sum(axis=1) == 3)   # three runs drawn per replicate


def test_run_weights_within_strata_keep_the_design():
    # two sizes with two runs each and one with three: every replicate keeps 2 + 2 + 3 runs per size
    groups = np.array(["a", "b", "c", "d", "e", "f", "g", "g"])
    sizes = np.array([1, 1, 2, 2, 3, 3, 3, 3])
    W = bootstrap.run_weights(groups, 200, seed=1, strata=sizes)
    assert np.all(W[:, [0, 1]].sum(axis=1) == 2) and np.all(W[:, [2, 3]].sum(axis=1) == 2)
    assert np.all(W[:, [4, 5, 6]].sum(axis=1) == 3) and np.all(W[:, 6] == W[:, 7])
    assert W[:, 0].std() > 0                      # runs are still resampled inside a size
    with pytest.raises(ValueError, match="spans two strata"):
        bootstrap.run_weights(groups, 4, strata=np.array([1, 1, 2, 2, 3, 3, 3, 4]))


def test_resampling_units_stratify_only_designed_sweeps():
    designed = pd.DataFrame({"run": ["a", "a-cd1", "b", "b-cd1"], "N": [1e6, 1e6, 2e6, 2e6]})
    groups, strata = bootstrap.resampling_units(designed)
    assert list(groups) == ["a", "a-cd1", "b", "b-cd1"] and list(strata) == [1e6, 1e6, 2e6, 2e6]
    one_run_per_size = pd.DataFrame({"run": ["a", "a", "b"], "N": [1e6, 1e6, 2e6]})
    assert bootstrap.resampling_units(one_run_per_size)[1] is None
    # two seeds at the small size: whole trunks (with their branches) are the unit there; the
    # large size's single trunk is resampled by run (its branches), within sizes
    seeds = pd.DataFrame({"run": ["a", "a-cd1", "a-s1", "a-s1-cd1", "b", "b-cd1"],
                          "group": ["a", "a", "a-s1", "a-s1", "b", "b"], "N": [1e6] * 4 + [2e6] * 2})
    groups, strata = bootstrap.resampling_units(seeds)
    assert list(groups) == ["trunk:a", "trunk:a", "trunk:a-s1", "trunk:a-s1", "b", "b-cd1"]
    assert list(strata) == list(seeds["N"])
    W = bootstrap.run_weights(groups, 200, seed=0, strata=strata)
    assert (W[:, 0] == W[:, 1]).all() and (W[:, 2] == W[:, 3]).all()     # a trunk moves whole
    assert W[:, 0].std() > 0 and (W[:, 4] != W[:, 5]).any()


def test_atlas_recovers_synthetic_parameters():
    points, truth = points_lib.synthetic_study(languages=("en", "de", "fr", "ja", "sw"),
                                         sizes=(2e7, 8e7, 3e8, 1.2e9, 5e9), noise=0.002, seed=4)
    spec = table_fit.FitSpec(law="atlas", n_polish=3)
    fitted = table_fit.fit_points(spec, points, ["de"])
    res = fitted.fits["de"]
    true = truth["de"]
    assert res.converged
    assert set(res.params) == set(true)
    assert len(res.params) == 10
    for k in ("alpha", "beta"):
        assert res.params[k] == pytest.approx(true[k], abs=0.02), k
    assert res.params["lambda"] == pytest.approx(true["lambda"], rel=0.25)
    assert res.params["E"] == pytest.approx(true["E"], rel=0.03)
    assert res.params["A"] == pytest.approx(true["A"], rel=0.15)
    assert res.params["B"] == pytest.approx(true["B"], rel=0.1)
    assert res.params["tau_other"] == pytest.approx(true["tau_other"], abs=0.02)
    taus = [k for k in true if k.startswith("tau_") and k != "tau_other"]
    for k in taus:
        assert res.params[k] == pytest.approx(true[k], abs=0.08), k


def test_transfer_languages_by_cosampling_and_matrix(tmp_path):
    points, _ = points_lib.synthetic_study(languages=("en", "de", "fr", "ja"), sizes=(1e8,), evals_per_run=1)
    k = points_lib.cosampled_languages(points, "en", 3)
    assert len(k) == 3 and "en" not in k
    matrix = pd.DataFrame([[np.nan, 0.4, -0.1], [0.2, np.nan, 0.0], [0.1, 0.3, np.nan]],
                          index=["en", "de", "fr"], columns=["en", "de", "fr"])
    path = tmp_path / "m.csv"
    matrix.to_csv(path)
    loaded = points_lib.load_transfer_matrix(path)
    assert points_lib.cosampled_languages(points, "en", 1, "matrix", loaded) == ["de"]
    assert points_lib.tau_init("en", ["de", "fr", "ja"], loaded) == {
        "tau_de": pytest.approx(0.25), "tau_fr": pytest.approx(-0.1 / 2.1), "tau_ja": 0.0}


def test_scaling_never_imports_tensorflow_or_flax(tmp_path):
    """The fitter and its CLI (load, fit, held-out, bootstrap, plots) stay off TF and Flax."""
    rng = np.random.default_rng(0)
    N = np.repeat(np.geomspace(1e7, 1e9, 4), 4)
    D = np.tile(np.geomspace(1e9, 1e11, 4), 4)
    loss = LAWS["csl"].predict({"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.3, "beta": 0.3}, {"N": N, "D": D})
    pd.DataFrame({"n": N, "d": D, "l": loss * np.exp(0.002 * rng.standard_normal(16))}).to_csv(
        tmp_path / "t.csv", index=False)
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, runpy\n"
        "from atlas_t5x.scaling import bootstrap, points as points_lib, engine, heldout, laws, plots, profiles\n"
        f"sys.argv = ['fit_atlas.py', '--table', {str(tmp_path / 't.csv')!r}, '--map', 'N=n,D=d,loss=l',\n"
        f"            '--law', 'csl', '--holdout', 'random', '--bootstrap', '8',\n"
        f"            '--out', {str(tmp_path / 'fit')!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(root / 'scripts' / 'fit_atlas.py')!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'flax')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fit" / "fit.json").is_file() and (tmp_path / "fit" / "residuals.png").is_file()
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_unidentified_parameters_are_fixed_at_zero_with_a_reason():
    rng = np.random.default_rng(3)
    n = 40
    X = {"N": rng.choice(np.geomspace(1e7, 3e9, 5), n), "D": np.exp(rng.uniform(np.log(1e9), np.log(3e11), n))}
    y = LAWS["csl"].predict({"E": 1.7, "A": 420.0, "B": 1900.0, "alpha": 0.33, "beta": 0.3}, X)
    points = pd.DataFrame({"run": [f"r{i}" for i in range(n)], "target": "all", "loss": y, "p": 0.5,
                           "K": 1.0, **X})
    msl = table_fit.fit_points(table_fit.FitSpec("msl", grid_budget=300, n_polish=2), points).fits["all"]
    assert msl.params["gamma"] == 0.0 and "gamma" not in msl.free_names
    assert "gamma fixed at 0: the sampling ratio p is 0.5 at every point" in msl.message
    curse = table_fit.fit_points(table_fit.FitSpec("curse", grid_budget=300, n_polish=2), points).fits["all"]
    assert curse.params["phi"] == curse.params["psi"] == 0.0
    assert curse.params["alpha"] == pytest.approx(0.33, abs=1e-3)
    with pytest.raises(engine.FitError, match="fix alpha instead of beta"):
        table_fit.fit_points(table_fit.FitSpec("csl", tied=True, fixed=(("beta", 0.3),)), points)
    # bootstrap: fixed parameters get no interval
    res = engine.fit(LAWS["csl"], X, y * np.exp(0.003 * rng.standard_normal(n)), fixed={"E": 1.7}, n_polish=2)
    ci = bootstrap.bootstrap(res, X, y, points["run"], n_boot=16).intervals()
    assert "E" not in ci and {"A", "B", "alpha", "beta", "N_opt_exponent"} <= set(ci)


@pytest.mark.parametrize("name, true", [
    ("curse", {"E": 1.7, "A": 420.0, "B": 1900.0, "alpha": 0.33, "beta": 0.30, "phi": 0.11, "psi": -0.04}),
    ("msl", {"E": 1.7, "A": 420.0, "B": 1900.0, "alpha": 0.33, "beta": 0.30, "gamma": 0.05}),
])
def test_curse_and_msl_recover_their_parameters(name, true):
    rng = np.random.default_rng(7)
    n = 96
    X = {"N": rng.choice(np.geomspace(1e7, 3e9, 6), n), "D": np.exp(rng.uniform(np.log(1e9), np.log(3e11), n)),
         "K": rng.choice([1.0, 2, 4, 8, 16], n), "p": rng.choice([1.0, 0.5, 0.25, 0.125], n)}
    y = LAWS[name].predict(true, X) * np.exp(0.001 * rng.standard_normal(n))
    res = engine.fit(LAWS[name], X, y, n_polish=3)
    assert res.converged
    for k in ("alpha", "beta", "phi", "psi", "gamma"):
        if k in true:
            assert res.params[k] == pytest.approx(true[k], abs=0.01), k


def test_dcsl_one_stage_reaches_at_most_the_two_stage_objective(shared_data):
    points = points_lib.load_table(shared_data / "datablations_182runs.csv",
                             points_lib.parse_map("N=params,D=tokens,U=unique_tokens,loss=val_loss"))
    fits = {stage: table_fit.fit_points(table_fit.FitSpec("dcsl", tied=True, dcsl_stage=stage, grid_budget=400,
                                                    n_polish=2), points).fits["all"]
            for stage in ("two", "one")}
    assert set(fits["two"].free_names) == {"R_D", "R_N"}          # base law fixed by stage one
    assert len(fits["one"].free_names) == 6                        # E, A, B, alpha, R_D, R_N
    assert fits["one"].objective <= fits["two"].objective + 1e-12
    assert engine.r2_score(points["loss"], fits["one"].predict(points_lib.law_inputs(fits["one"].law, points))) > 0.9


def test_atlas_tau_starts_from_the_transfer_matrix(shared_data):
    points, _ = points_lib.synthetic_study(languages=("en", "es", "ca", "pt"), sizes=(1e8, 1e9), evals_per_run=2)
    matrix_path = shared_data / "atlas_bts_38x38.csv"
    matrix = points_lib.load_transfer_matrix(matrix_path)
    law, init = table_fit.build_law(table_fit.FitSpec("atlas", transfer_matrix=str(matrix_path)), points, "es")
    transfer = law.option("transfer_langs")
    assert len(transfer) == 3 and law.option("with_other")
    for lang in transfer:
        expected = max(matrix.loc["es", lang] / (2 - matrix.loc["es", lang]), 0.0)
        assert init[f"tau_{lang}"] == pytest.approx(expected)
    assert any(v > 0 for v in init.values())
    # without a named matrix nothing beside the checkout is read: τ starts at 0
    _, init_without = table_fit.build_law(table_fit.FitSpec("atlas"), points, "es")
    assert set(init_without.values()) == {0.0}
