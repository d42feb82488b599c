"""Background prefetch (atlas_t5x/data/prefetch.py): the same batches in the same order, the state and
accounting of the batches consumed (not those read ahead), exact resume, errors raised to the
consumer; and the trainer's profile_steps trace and input_wait_s / step_time_s fields."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_t5x import logio
from atlas_t5x.data import prefetch
from atlas_t5x.data import synthetic
import _short_run
from test_pipeline import make_pipeline


def _assert_same_batch(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_prefetched_train_stream_resumes_exactly_and_counts_consumed_batches(tmp_path):
    weights = {"en": 0.5, "fr": 0.3, "sw": 0.2}
    reference = make_pipeline(tmp_path, weights, block_docs=4)
    expected = [next(reference) for _ in range(9)]
    accounting_after_4 = make_pipeline(tmp_path, weights, block_docs=4)
    for _ in range(4):
        next(accounting_after_4)

    ahead = prefetch.Prefetcher(make_pipeline(tmp_path, weights, block_docs=4), place=dict, depth=3)
    first = [next(ahead) for _ in range(4)]
    for got, want in zip(first, expected):
        _assert_same_batch(got, want)
    # The producer has read ahead (up to 3 more), but state and accounting are those after 4 batches.
    state = ahead.get_state()
    assert state == accounting_after_4.get_state()
    assert ahead.accounting().tokens_by_lang == accounting_after_4.accounting().tokens_by_lang
    ahead.close()

    resumed = prefetch.Prefetcher(make_pipeline(tmp_path, weights, block_docs=4), place=dict, depth=2)
    resumed.set_state(state)
    for got, want in zip([next(resumed) for _ in range(5)], expected[4:]):
        _assert_same_batch(got, want)
    # Rewinding (a cooldown branch) drops the read-ahead and repeats the batches after the position.
    resumed.set_state(state)
    _assert_same_batch(next(resumed), expected[4])
    resumed.close()


def test_producer_errors_reach_the_consumer_and_bad_settings_are_refused():
    class Failing(synthetic.SyntheticPipeline):
        def __next__(self):
            if self.get_state()["batch_index"] == 2:
                raise RuntimeError("bad shard at batch 2")
            return super().__next__()

    ahead = prefetch.Prefetcher(Failing(("en",), None, 16, 4, 64, 0, 1000, 0, 1), place=dict, depth=2)
    next(ahead), next(ahead)
    with pytest.raises(RuntimeError, match="bad shard at batch 2"):
        next(ahead)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        prefetch.Prefetcher(synthetic.make_synthetic_pipeline(process_index=0, process_count=1), dict, depth=0)
    assert isinstance(prefetch.wrap(iter([]), dict, 2), prefetch._Synchronous)  # no snapshot(): synchronous


def test_train_profiles_requested_steps_and_logs_input_wait(tmp_path):
    bindings = _short_run.SHORT_RUN_BINDINGS + ["train.profile_steps = (3, 4)"]
    result = _short_run.train_smoke_run(tmp_path, bindings)
    assert result.step == _short_run.TOTAL_STEPS
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    rows = logio.read_jsonl(tmp_path / "logs" / "train.jsonl")
    assert [r["step"] for r in rows] == list(range(1, _short_run.TOTAL_STEPS + 1))
    for row in rows:
        assert row["input_wait_s"] >= 0.0
        assert row["step_time_s"] == pytest.approx(1.0 / row["steps_per_s"], rel=1e-6)
    with pytest.raises(ValueError, match=r"train.profile_steps must be \(first, last\)"):
        _short_run.train_smoke_run(tmp_path / "bad", _short_run.SHORT_RUN_BINDINGS + ["train.profile_steps = (5, 2)"])
