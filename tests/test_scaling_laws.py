"""Scaling-law formulas: saturation, Chinchilla, ATLAS effective data, the law registry."""

import numpy as np
import pandas as pd
import pytest

from atlas_t5x.scaling import laws
from atlas_t5x.scaling.laws import LAWS, atlas_effective_data, chinchilla, make_law, saturate


def test_saturate_below_one_epoch_is_identity_and_continuous_with_slope_one():
    U = 1e9
    D = np.array([1e6, 5e8, 1e9])
    np.testing.assert_allclose(saturate(D, U, 0.2), D)
    eps = 1e3
    above = saturate(U + eps, U, 0.2)
    assert above == pytest.approx(U + eps, rel=1e-9)  # slope 1 just past one epoch


def test_saturate_limits():
    U, lam = 1e9, 0.25
    assert saturate(1e20, U, lam) == pytest.approx(U * (1 + 1 / lam), rel=1e-9)
    D = np.geomspace(1e8, 1e12, 7)
    np.testing.assert_allclose(saturate(D, U, 0.0), D, rtol=1e-12)
    np.testing.assert_allclose(saturate(D, U, 1e-12), D, rtol=1e-6)
    S = saturate(D, U, lam)
    assert np.all(np.diff(S) >= 0) and np.all(np.diff(S[:5]) > 0)
    assert np.all(S <= U * (1 + 1 / lam))


def test_saturate_equals_the_data_constrained_data_term():
    U, R = 2e9, 15.387756
    D = np.geomspace(2e9, 1e12, 9)
    D_prime = U + U * R * (1 - np.exp(-(D / U - 1) / R))
    np.testing.assert_allclose(saturate(D, U, 1 / R), D_prime, rtol=1e-12)


def test_chinchilla_and_effective_data():
    assert chinchilla(1e9, 2e10, 1.8, 400.0, 2000.0, 0.34, 0.28) == pytest.approx(
        1.8 + 400 / 1e9**0.34 + 2000 / 2e10**0.28)
    d = atlas_effective_data(1e9, 2e9, 0.1, [4e9], [1e9], [0.5], 3e9, 1e10, 0.1)
    assert d == pytest.approx(1e9 + 0.5 * saturate(4e9, 1e9, 0.1) + 0.1 * 3e9)
    # a target never trained on still gets the floor, not zero
    assert atlas_effective_data(0.0, 1.0, 0.1) == laws.D_EFF_FLOOR


def test_registry_names_and_tied_option():
    assert set(LAWS) == {"csl", "dcsl", "atlas", "msl", "curse"}
    assert LAWS["csl"].param_names == ("E", "A", "B", "alpha", "beta")
    assert LAWS["atlas"].param_names == ("E", "A", "B", "alpha", "beta", "lambda")
    assert LAWS["dcsl"].param_names[-2:] == ("R_D", "R_N")
    assert LAWS["msl"].param_names[-1] == "gamma"
    assert LAWS["curse"].param_names[-2:] == ("phi", "psi")
    multi = make_law("atlas", transfer_langs=["en", "de", "fr"], with_other=True)
    assert multi.param_names[-4:] == ("tau_en", "tau_de", "tau_fr", "tau_other")
    assert len(multi.param_names) == 10
    tied = make_law("csl", tied=True)
    assert "beta" not in tied.param_names
    X = {"N": np.array([1e8]), "D": np.array([1e10])}
    p = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.3}
    assert tied.predict(p, X)[0] == pytest.approx(LAWS["csl"].predict({**p, "beta": 0.3}, X)[0])


def test_bad_names_are_errors():
    with pytest.raises(ValueError, match="unknown law 'chin'"):
        make_law("chin")
    X = {"N": np.array([1e8]), "D": np.array([1e10])}
    with pytest.raises(ValueError, match="unknown parameter.*'gamma'"):
        LAWS["csl"].predict({"E": 1, "A": 1, "B": 1, "alpha": 0.3, "beta": 0.3, "gamma": 1}, X)
    with pytest.raises(ValueError, match="missing input"):
        LAWS["dcsl"].predict({"E": 1, "A": 1, "B": 1, "alpha": .3, "beta": .3, "R_D": 5, "R_N": 5}, X)


@pytest.mark.parametrize("name", ["csl", "atlas", "msl", "curse"])
def test_linear_basis_reproduces_prediction(name):
    rng = np.random.default_rng(0)
    law = make_law(name, transfer_langs=["de"], with_other=True) if name == "atlas" else LAWS[name]
    n = 20
    X = {"N": rng.uniform(1e7, 1e9, n), "D": rng.uniform(1e8, 1e11, n), "U": rng.uniform(1e8, 1e10, n),
         "p": rng.uniform(0.1, 1, n), "K": rng.integers(1, 8, n).astype(float),
         "D_de": rng.uniform(0, 1e10, n), "U_de": rng.uniform(1e8, 1e9, n),
         "D_other": rng.uniform(0, 1e10, n), "U_other": rng.uniform(1e9, 1e10, n)}
    p = {k: v for k, v in {"E": 1.7, "A": 300.0, "B": 900.0, "alpha": 0.3, "beta": 0.25, "lambda": 0.2,
                           "tau_de": 0.3, "tau_other": 0.05, "gamma": 0.1, "phi": 0.1,
                           "psi": -0.05}.items() if k in law.param_names}
    cols = law.linear_basis(p, X)
    np.testing.assert_allclose(sum(p[k] * c for k, c in cols.items()), law.predict(p, X), rtol=1e-12)


def test_curse_with_one_language_is_chinchilla_and_msl_scales_by_ratio():
    X = {"N": np.array([1e8, 1e9]), "D": np.array([1e10, 1e11]), "K": np.ones(2), "p": np.array([0.5, 0.5])}
    base = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.28}
    np.testing.assert_allclose(LAWS["curse"].predict({**base, "phi": 0.11, "psi": -0.04}, X),
                               LAWS["csl"].predict(base, X))
    np.testing.assert_allclose(LAWS["msl"].predict({**base, "gamma": 0.2}, X),
                               LAWS["csl"].predict(base, X) * 0.5 ** -0.2)


def test_bts_to_tau():
    assert laws.bts_to_tau(0.0) == 0.0
    assert laws.bts_to_tau(0.5) == pytest.approx(1 / 3)   # 63B total tokens for 42B mono
    assert laws.bts_to_tau(-0.5) == pytest.approx(-0.2)   # 105B total tokens for 42B mono


def test_datablations_r2_at_published_parameters(shared_data):
    d = pd.read_csv(shared_data / "datablations_182runs.csv")
    X = {"N": d["params"].to_numpy(float), "D": d["tokens"].to_numpy(float), "U": d["unique_tokens"].to_numpy(float)}
    y = d["val_loss"].to_numpy(float)
    base = {"A": 520.82, "B": 1487.72, "E": 1.8691, "alpha": 0.35266, "beta": 0.35266}
    pred = LAWS["dcsl"].predict({**base, "R_D": 15.387756, "R_N": 5.309743}, X)
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert len(y) == 182
    assert r2 == pytest.approx(0.7722, abs=1e-4)
    r2_base = 1 - np.sum((y - LAWS["csl"].predict(base, X)) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2_base == pytest.approx(0.4452, abs=2e-4)


def test_dcsl_with_a_vanishing_data_term_predicts_instead_of_dividing_by_zero():
    # a fit that puts B at its lower bound (0) must still predict: N_opt(U) is infinite, so the
    # parameters are not "repeated" and the law is E + A/N^α
    p = {"E": 1.0, "A": 10.0, "B": 0.0, "alpha": 0.3, "beta": 0.3, "R_D": 5.0, "R_N": 5.0}
    X = {"N": np.array([1e5, 1e6]), "D": np.array([1e6, 1e7]), "U": np.array([1e4, 1e4])}
    np.testing.assert_allclose(LAWS["dcsl"].predict(p, X), 1.0 + 10.0 * X["N"] ** -0.3)
    flat = {**p, "B": 2.0, "alpha": 0.0, "beta": 0.0}       # degenerate exponents: a number, not a crash
    np.testing.assert_allclose(LAWS["dcsl"].predict(flat, X), 1.0 + 10.0 + 2.0)
