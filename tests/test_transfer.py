"""Transfer scores from runs (BTS, FAS), pair estimates and matrix statistics."""

import math

import numpy as np
import pandas as pd
import pytest

from atlas_t5x.scaling import transfer as tr
from _analyses_rows import log_grid, run_rows

E, B, BETA = 2.0, 400.0, 0.3


def _power(d):
    return E + B * d ** (-BETA)


def _pair_rows(tau_ab: float, tau_ba: float, n_points=40):
    """Mono runs of a and b, and a 50/50 bilingual run whose effective data for t is
    D_t·(1 + τ): the exact BTS is 2 − 2/(1 + τ)."""
    totals = log_grid(1e6, 4e9, n_points)
    rows = []
    rows += run_rows("mono_a", {"a": 1.0}, ["a"], lambda t, by, tot: _power(by["a"]), totals)
    rows += run_rows("mono_b", {"b": 1.0}, ["b"], lambda t, by, tot: _power(by["b"]), totals)
    tau = {"a": tau_ba, "b": tau_ab}  # transfer into target t from the other language

    def bi_loss(t, by, tot):
        return _power(by[t] * (1.0 + tau[t]))

    rows += run_rows("bi_ab", {"a": 0.5, "b": 0.5}, ["a", "b"], bi_loss, totals)
    return rows


@pytest.mark.parametrize("tau", [0.0, 0.5, -0.2, 1.5])
def test_bts_of_synthetic_curves_matches_the_known_value(tau):
    rows = _pair_rows(tau_ab=tau, tau_ba=0.25)
    meas = {(m.source, m.target): m for m in tr.measure_bts(rows, d_mono=1e8)}
    expect_ab = 2.0 - 2.0 / (1.0 + tau)
    assert meas[("a", "b")].status == "ok"
    assert meas[("a", "b")].bts == pytest.approx(expect_ab, abs=0.02)
    assert meas[("b", "a")].bts == pytest.approx(2.0 - 2.0 / 1.25, abs=0.02)
    mat = tr.bts_matrix(meas.values())
    assert mat.loc["b", "a"] == pytest.approx(expect_ab, abs=0.02)  # row target, column source
    assert math.isnan(mat.loc["a", "a"])


def test_bts_is_an_upper_bound_when_bilingual_never_reaches_the_loss():
    rows = _pair_rows(tau_ab=-0.9, tau_ba=0.0)  # b barely learns from the bilingual run
    meas = {(m.source, m.target): m for m in tr.measure_bts(rows, d_mono=1e9)}
    m = meas[("a", "b")]
    assert m.status == "never_reached" and m.censored == "upper" and np.isfinite(m.target_loss)
    last_bilingual = max(r["tokens"] for r in rows if r["run"] == "bi_ab")
    assert m.bts == pytest.approx(2.0 - last_bilingual / 1e9)     # BTS < 2 − σ_last/d_mono
    assert 2.0 - 2.0 / (1.0 - 0.9) < m.bts                        # the true score obeys the bound
    mat = tr.bts_matrix(meas.values())
    assert mat.loc["b", "a"] == pytest.approx(m.bts) and mat.attrs["upper_bounds"] == {"b": ["a"]}
    assert "b" not in mat.attrs["upper_bounds"].get("a", [])
    # d_mono outside the monolingual run's range is reported, not extrapolated
    far = tr.measure_bts(rows, d_mono=1e12)
    assert all(x.status == "d_mono_outside_mono_run" and math.isnan(x.bts) for x in far)


def test_missing_monolingual_partner_names_both_runs():
    rows = [r for r in _pair_rows(0.5, 0.5) if r["run"] != "mono_b"]
    with pytest.raises(tr.TransferError, match=r"'bi_ab'.*monolingual 'b'"):
        tr.measure_bts(rows)


def test_missing_partner_can_be_skipped_and_described_while_the_other_direction_is_measured():
    rows = [r for r in _pair_rows(0.5, 0.5) if r["run"] != "mono_b"]
    skipped: list[str] = []
    meas = tr.measure_bts(rows, skipped=skipped)
    assert [(m.source, m.target) for m in meas] == [("b", "a")]
    assert len(skipped) == 1 and skipped[0].startswith("BTS(a->b)") and "'bi_ab'" in skipped[0]


def test_stats_reproduce_the_paper_matrix(shared_data):
    mat = tr.read_matrix(shared_data / "atlas_bts_38x38.csv")
    assert mat.shape == (38, 38)
    s = tr.transfer_stats(mat)
    assert s.same_script_mean == pytest.approx(-0.23, abs=0.01)
    assert s.diff_script_mean == pytest.approx(-0.39, abs=0.01)
    assert s.asymmetry_pearson == pytest.approx(-0.11, abs=0.02)
    assert s.same_script_mean > s.diff_script_mean
    assert s.top5["es"] == ["pt", "ca", "fr", "it", "de"]  # ties broken by code


def test_stats_reject_languages_without_metadata():
    mat = pd.DataFrame([[np.nan, 0.1], [0.2, np.nan]], index=["en", "xq"], columns=["en", "xq"])
    with pytest.raises(ValueError, match="'xq'"):
        tr.transfer_stats(mat)


def test_fas_features_and_forest_estimate_unmeasured_pairs():
    rng = np.random.default_rng(0)
    codes = ["en", "de", "fr", "es", "it", "pt", "nl", "sv", "ru", "pl", "cs", "uk"]
    base = {t: 3.0 + 0.1 * i for i, t in enumerate(codes)}
    gap = {(s, t): float(rng.uniform(0.0, 0.5)) for s in codes for t in codes}
    totals = log_grid(1e6, 1e8, 8)
    rows = []
    for s in codes:
        rows += run_rows(f"ft_{s}", {s: 1.0}, codes,
                         lambda t, by, tot, s=s: base[t] - gap[(s, t)], totals, init="gs://ckpt/unimax")
        rows += run_rows(f"ft_{s}", {s: 1.0}, codes, lambda t, by, tot: base[t], [0], init="gs://ckpt/unimax")
    scores = tr.finetune_scores(rows)
    assert scores.fas.loc["de", "en"] == pytest.approx(gap[("en", "de")], abs=1e-9)
    assert scores.delta.loc["de", "en"] == pytest.approx(-gap[("en", "de")], abs=1e-9)
    feats = tr.pair_features(scores.self_gain, scores.delta)
    assert list(feats.columns) == list(tr.FEATURE_NAMES) and len(feats) == len(codes) * (len(codes) - 1)
    truth = feats @ np.array([0.3, -0.2, 0.0, 0.5])
    bts = pd.DataFrame(np.nan, index=codes, columns=codes)
    for (s, t), v in truth.items():
        bts.loc[t, s] = v
    hidden = [("en", "de"), ("fr", "es"), ("ru", "uk")]
    for s, t in hidden:
        bts.loc[t, s] = np.nan
    est = tr.estimate_pairs(bts, feats, n_trees=100)
    assert est.cv_r2 > 0.6 and est.cv_spearman > 0.8
    for s, t in hidden:
        assert np.isfinite(est.matrix.loc[t, s]) and np.isfinite(est.estimated.loc[t, s])
    assert np.isnan(est.estimated.loc["de", "fr"])  # measured cells are not overwritten


def test_heatmap_is_written(tmp_path, shared_data):
    mat = tr.read_matrix(shared_data / "atlas_bts_30x30.csv")
    tr.plot_matrix(mat, tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_matrix_holds_one_model_size():
    rows = _pair_rows(0.5, 0.25)
    small = [dict(r, params=10) for r in _pair_rows(0.0, 0.0)]
    for r in small:
        r["run"] += "_small"
    meas = tr.measure_bts(rows + small, d_mono=1e8)
    assert len(meas) == 4
    big = tr.bts_matrix(meas)
    assert big.attrs["params"] == 100_000_000 and big.loc["b", "a"] == pytest.approx(2 - 2 / 1.5, abs=0.02)
    assert tr.bts_matrix(meas, params=10).loc["b", "a"] == pytest.approx(0.0, abs=0.02)


def test_fas_baseline_from_a_continued_multilingual_run():
    codes = ["en", "sw"]
    totals = log_grid(1e6, 1e8, 6)
    rows = run_rows("cont", {"en": 0.5, "sw": 0.5}, codes, lambda t, by, tot: 3.0 - 0.1 * np.log10(tot),
                    totals, init="/ckpt")
    rows += run_rows("ft_sw", {"sw": 1.0}, codes, lambda t, by, tot: 2.9 - 0.1 * np.log10(tot), totals,
                     init="/ckpt")
    scores = tr.finetune_scores(rows)
    assert scores.base == "continued run 'cont'"
    assert scores.fas.loc["en", "sw"] == pytest.approx(0.1, abs=1e-9)
    with pytest.raises(tr.TransferError, match="no monolingual finetune runs"):
        tr.finetune_scores([r for r in rows if r["run"] == "cont"])


def test_repeated_runs_are_averaged_and_the_default_size_has_the_most_scores():
    rows = _pair_rows(0.5, 0.25)
    seed2 = [dict(r, run=r["run"] + "_seed2") for r in _pair_rows(0.0, 0.25) if r["run"] == "bi_ab"]
    tiny = [dict(r, run=r["run"] + "_tiny", params=10) for r in _pair_rows(0.5, 0.25)
            if r["run"] != "mono_b"]  # at N=10 only b->a is measurable ... and that partner is missing
    meas = tr.measure_bts(rows + seed2, d_mono=1e8)
    mat = tr.bts_matrix(meas)
    # two bilingual runs of (a, b): BTS(a->b) averages 2 - 2/1.5 and 0
    assert mat.loc["b", "a"] == pytest.approx((2 - 2 / 1.5) / 2, abs=0.02)
    assert mat.attrs["n_runs"]["b"]["a"] == 2
    with pytest.raises(tr.TransferError, match=r"'bi_ab_tiny'.*monolingual 'b' run with N=10"):
        tr.measure_bts(rows + tiny, d_mono=1e8)
    small = [dict(r, run=r["run"] + "_small", params=10) for r in _pair_rows(0.0, 0.0)]
    never = [m for m in tr.measure_bts(small, d_mono=3.9e9)]  # the bilingual run ends before 2·d_mono
    assert all(m.status == "never_reached" for m in never)
    assert tr.bts_matrix(meas + never).attrs["params"] == 100_000_000  # N=10 has no defined score


def test_cli_writes_nothing_when_languages_lack_metadata(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from atlas_t5x import logio

    rows = _pair_rows(0.5, 0.25)  # languages "a" and "b" have no script/family
    for run in {r["run"] for r in rows}:
        logio.append_jsonl(tmp_path / "runs" / run / "logs" / "eval.jsonl", [r for r in rows if r["run"] == run])
    path = Path(__file__).resolve().parents[1] / "scripts" / "transfer_matrix.py"
    spec = importlib.util.spec_from_file_location("_tm_cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--d_mono", "1e8"]) == 2
    err = capsys.readouterr().err
    assert "no script/family metadata for 2 language(s): 'a'" in err and "'b'" in err
    assert not (tmp_path / "out").exists()


def test_warmup_points_are_left_out_of_the_curves():
    rows = _pair_rows(0.5, 0.25)
    # a warmup evaluation of the bilingual run far below every later loss would be a "crossing"
    early = dict(next(r for r in rows if r["run"] == "bi_ab" and r["target"] == "b"), step=1, loss=0.1,
                 schedule_phase="warmup", tokens=10, tokens_by_lang={"a": 5, "b": 5})
    meas = {(m.source, m.target): m for m in tr.measure_bts(rows + [early], d_mono=1e8)}
    assert meas[("a", "b")].status == "ok"
    assert meas[("a", "b")].bts == pytest.approx(2.0 - 2.0 / 1.5, abs=0.02)


def test_fas_baseline_from_the_run_that_wrote_the_checkpoint():
    codes = ["en", "sw"]
    base = run_rows("uni", {"en": 0.5, "sw": 0.5}, codes, lambda t, by, tot: 4.0 - 0.1 * np.log10(tot),
                    log_grid(1e6, 1e8, 5))   # steps 100..500; the checkpoint is step 300 (tokens 1e7)
    ft = run_rows("ft_sw", {"sw": 1.0}, codes, lambda t, by, tot: (3.0 if t == "sw" else 3.5), log_grid(1e6, 1e7, 3),
                  init="/runs/uni/checkpoints/300")
    scores = tr.finetune_scores(base + ft)
    assert "'uni'" in scores.base
    assert scores.fas.loc["sw", "sw"] == pytest.approx(4.0 - 0.7 - 3.0)   # base loss at step 300: 4 - 0.1*7
    assert scores.fas.loc["en", "sw"] == pytest.approx(4.0 - 0.7 - 3.5)
