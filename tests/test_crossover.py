"""Pretrain-vs-finetune crossover: finding a known crossing, C*(N) fits, the paper's constants."""

import math

import numpy as np
import pytest
from scipy import optimize

from atlas_t5x.scaling import crossover as co
from atlas_t5x.scaling import curves as cv
from _analyses_rows import log_grid, run_rows


def _curve(run, x, y):
    return cv.Curve(run, "ja", np.asarray(x, float), np.asarray(y, float), "lang:ja")


def test_finds_an_exact_crossing_of_log_linear_curves():
    x = log_grid(1e5, 1e9, 9)
    scratch = _curve("s", x, 5.0 - 0.3 * np.log(x))
    ft = _curve("f", x, 3.5 - 0.2 * np.log(x))   # equal at ln d = 15
    res = co.find_crossover(scratch, ft, params=2_000_000)
    assert res.status == "ok"
    assert res.tokens == pytest.approx(math.exp(15.0), rel=1e-9)
    assert res.flops == pytest.approx(6 * 2_000_000 * math.exp(15.0), rel=1e-9)


def test_finds_the_crossing_of_power_law_curves_from_runs():
    N = 50_000_000
    scratch_fn = lambda d: 2.0 + 400.0 * d ** -0.3       # noqa: E731
    ft_fn = lambda d: 2.6 + 5.0 * d ** -0.1              # noqa: E731
    truth = optimize.brentq(lambda ld: scratch_fn(math.exp(ld)) - ft_fn(math.exp(ld)), 5, 40)
    totals = log_grid(1e5, 1e11, 60)
    rows = run_rows("scratch_ja", {"ja": 1.0}, ["ja"], lambda t, by, tot: scratch_fn(by["ja"]), totals, params=N)
    rows += run_rows("ft_ja", {"ja": 1.0}, ["ja"], lambda t, by, tot: ft_fn(by["ja"]), totals, params=N,
                     init="/ckpt/unimax")
    (res,) = co.crossovers_from_runs(rows)
    assert res.status == "ok" and res.scratch_run == "scratch_ja" and res.finetune_run == "ft_ja"
    assert res.tokens == pytest.approx(math.exp(truth), rel=0.01)


def test_no_crossing_is_reported_not_extrapolated():
    x = log_grid(1e5, 1e7, 5)
    res = co.find_crossover(_curve("s", x, 5.0 - 0.1 * np.log(x)), _curve("f", x, 2.0 - 0.1 * np.log(x)), 10)
    assert res.status == "beyond" and math.isnan(res.tokens)
    assert res.beyond_tokens == pytest.approx(1e7) and res.describe().startswith("beyond 1e+07 tokens")
    res = co.find_crossover(_curve("s", x, 1.0 + 0 * x), _curve("f", x, 2.0 + 0 * x), 10)
    assert res.status == "scratch_better_from_start"


def test_finetune_without_scratch_partner_is_an_error():
    rows = run_rows("ft_ja", {"ja": 1.0}, ["ja"], lambda t, by, tot: 3.0, [1e6, 1e7], init="/ckpt")
    with pytest.raises(co.CrossoverError, match=r"'ft_ja'.*no from-scratch monolingual 'ja'"):
        co.crossovers_from_runs(rows)


def test_crossover_law_fit_and_bootstrap():
    rng = np.random.default_rng(0)
    N = np.array([1e8, 3e8, 1e9, 2e9, 4e9, 8e9])
    C = 2e6 * N ** 1.6 * np.exp(rng.normal(0, 0.05, N.size))
    law = co.fit_crossover_law(N, C, n_boot=300)
    assert law.b == pytest.approx(1.6, abs=0.05)
    lo, hi = law.interval([2e9])
    assert lo[0] < law.flops(2e9) < hi[0]
    with pytest.raises(co.CrossoverError, match="two or more model sizes"):
        co.fit_crossover_law([1e9, 1e9], [1e20, 2e20])


def test_paper_constants_give_the_2b_range():
    tokens = float(co.PAPER_LAW.tokens(2.03e9))
    assert 144e9 <= tokens <= 283e9
    assert min(co.PAPER_2B_TOKENS.values()) == 144e9 and max(co.PAPER_2B_TOKENS.values()) == 283e9
    assert float(co.PAPER_LAW.flops(2.03e9)) == pytest.approx(2.5e21, rel=0.03)


def test_plots(tmp_path):
    x = log_grid(1e5, 1e9, 9)
    s, f = _curve("s", x, 5.0 - 0.3 * np.log(x)), _curve("f", x, 3.5 - 0.2 * np.log(x))
    co.plot_crossover(tmp_path / "c.png", s, f, co.find_crossover(s, f, 10))
    co.plot_crossover_law(tmp_path / "l.png", co.PAPER_LAW, [1e9], [1e21])
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "l.png").stat().st_size > 1000


def test_bootstrap_resamples_sizes_and_far_sizes_are_flagged(tmp_path):
    # many targets at each of three sizes: a size-level bootstrap keeps the interval wide
    rng = np.random.default_rng(1)
    N = np.repeat([1e8, 3e8, 1e9], 8)
    C = 1e6 * N ** 1.65 * np.exp(rng.normal(0, 0.02, N.size)) * np.repeat([1.0, 1.3, 0.9], 8)
    law = co.fit_crossover_law(N, C, n_boot=200)
    assert law.n_sizes == 3 and law.size_range == (1e8, 1e9)
    assert law.samples.shape[0] > 150
    # every resample is a union of whole sizes: its slope comes from at most 3 distinct size means
    assert np.unique(np.round(law.samples[:, 1], 9)).size <= 10
    lo, hi = law.interval([2e9])
    assert hi[0] / lo[0] > 1.2
    assert law.extrapolation_note(2e8) == ""
    assert "far outside the model sizes" in law.extrapolation_note(2.03e10)
    x = log_grid(1e5, 1e9, 9)
    res = co.find_crossover(_curve("s", x, 5.0 - 0.3 * np.log(x)), _curve("f", x, 3.5 - 0.2 * np.log(x)), 10)
    rows = run_rows("s", {"ja": 1.0}, ["ja"], lambda t, by, tot: 5.0 - 0.3 * np.log(by["ja"]), x)
    rows += run_rows("f", {"ja": 1.0}, ["ja"], lambda t, by, tot: 3.5 - 0.2 * np.log(by["ja"]), x, init="/c")
    co.plot_crossovers(tmp_path / "all.png", rows, [res, res])
    assert (tmp_path / "all.png").read_bytes()[:4] == b"\x89PNG"
