"""Live final-loss prediction from a run's curve so far, and its train-loop callback."""

import types

import numpy as np
import pytest

from atlas_t5x import logio
from atlas_t5x.eval.live import LIVE_LOG_RELPATH, LiveLossPrediction
from atlas_t5x.scaling import live_forecast as live
from _analyses_rows import log_grid, run_rows


def _truth(d):
    return 2.1 + 900.0 * np.asarray(d, float) ** -0.3


def test_prediction_from_a_partial_curve_brackets_the_truth():
    rng = np.random.default_rng(0)
    d = log_grid(1e7, 1e9, 12)
    y = _truth(d) * np.exp(rng.normal(0, 0.003, d.size))
    pred = live.predict_final_loss(d, y, 1e10, level=0.95, n_boot=60)
    truth = float(_truth(1e10))
    assert pred.predicted_final_loss == pytest.approx(truth, rel=0.02)
    assert pred.lower <= truth <= pred.upper
    assert pred.lower < pred.predicted_final_loss < pred.upper and pred.n_points == 12
    with pytest.raises(live.LiveError, match="at least 4"):
        live.predict_final_loss(d[:3], y[:3], 1e10)


def test_callback_appends_predictions_for_each_target(tmp_path):
    loss = lambda t, by, tot: float(_truth(tot)) + (0.1 if t == "de" else 0.0)  # noqa: E731
    rows = run_rows("r1", {"en": 0.5, "de": 0.5}, ["en", "de"], loss, log_grid(1e7, 1e9, 6))
    logio.append_jsonl(tmp_path / "logs" / "eval.jsonl", rows)
    cb = LiveLossPrediction(every_steps=100, total_steps=6000, n_boot=20)
    ctx = types.SimpleNamespace(step=600, run_info=types.SimpleNamespace(model_dir=str(tmp_path), run="r1"))
    cb(ctx)
    cb(ctx)  # a resumed run repeats the step's callbacks: nothing is written twice
    out = logio.read_jsonl(tmp_path / LIVE_LOG_RELPATH)
    assert sorted(r["target"] for r in out) == ["de", "en"]
    en = next(r for r in out if r["target"] == "en")
    # 6000 steps at the observed 1e9/600 tokens per step
    assert en["final_tokens"] == pytest.approx(1e9 * 10, rel=1e-6)
    assert en["lower"] <= en["predicted_final_loss"] <= en["upper"]
    assert en["predicted_final_loss"] == pytest.approx(float(_truth(1e10)), rel=0.02)
    # too early: no prediction rows, nothing written
    early = LiveLossPrediction(every_steps=100, final_tokens=1e10)
    assert early.predict(str(tmp_path), "r1", step=300) == []
    with pytest.raises(ValueError, match="total_steps or final_tokens"):
        LiveLossPrediction()


def test_prior_runs_make_it_a_fit_across_sizes():
    law = lambda N, d: 1.9 + 300.0 / N ** 0.32 + 900.0 / d ** 0.3  # noqa: E731
    d_full = log_grid(1e8, 1e10, 6)
    prior = {"N": [], "D": [], "loss": []}
    for N in (1e7, 1e8):
        prior["N"] += [N] * d_full.size
        prior["D"] += list(d_full)
        prior["loss"] += [law(N, d) for d in d_full]
    d = d_full[:4]
    pred = live.predict_final_loss(d, [law(3e7, x) for x in d], 1e10, params=3e7, prior=prior)
    assert pred.law.startswith("csl")
    assert pred.predicted_final_loss == pytest.approx(law(3e7, 1e10), rel=0.01)
    with pytest.raises(live.LiveError, match="params"):
        live.predict_final_loss(d, [law(3e7, x) for x in d], 1e10, prior=prior)


def test_callback_reads_and_writes_a_url_model_dir(tmp_path, monkeypatch):
    """A gs:// model_dir (eval.jsonl on an object store, as the eval writer allows) gets predictions."""
    import pathlib

    monkeypatch.setattr(logio, "_remote", lambda url: pathlib.Path(tmp_path, str(url).split("://", 1)[1]))
    model_dir = "gs://bucket/run"
    rows = run_rows("r1", {"en": 1.0}, ["en"], lambda t, by, tot: float(_truth(tot)), log_grid(1e7, 1e9, 6))
    logio.append_jsonl(f"{model_dir}/logs/eval.jsonl", rows)
    cb = LiveLossPrediction(every_steps=100, total_steps=6000, n_boot=20)
    ctx = types.SimpleNamespace(step=600, run_info=types.SimpleNamespace(model_dir=model_dir, run="r1"))
    cb(ctx)
    cb(ctx)  # resumed: the step's rows are already in the object
    out = logio.read_jsonl(f"{model_dir}/{LIVE_LOG_RELPATH}")
    assert [r["target"] for r in out] == ["en"]
    assert out[0]["predicted_final_loss"] == pytest.approx(float(_truth(1e10)), rel=0.02)
