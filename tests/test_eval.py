"""Per-language eval hooks: the unigram-normalised loss, the eval log writer, the callback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from atlas_t5x import logio, schema
from atlas_t5x.eval import callback as eval_callback
from atlas_t5x.eval import unigram
from atlas_t5x.eval.writer import EvalLogWriter, eval_log_path

from test_export import make_row


def test_unigram_normalised_loss_matches_a_hand_computed_example() -> None:
    # Training split of the target, V = 4 rows: token 0 three times, token 1 once.
    counts = unigram.count_unigrams([np.array([0, 1, 0]), np.array([0])], vocab_size=4)
    np.testing.assert_array_equal(counts, [3, 1, 0, 0])
    # Add-one smoothing: (count + 1) / (4 + 4) = 1/2, 1/4, 1/8, 1/8.
    log_p_uni = unigram.unigram_log_probs(counts)
    np.testing.assert_allclose(np.exp(log_p_uni), [0.5, 0.25, 0.125, 0.125])

    # Eval text: targets 0, 1, 3 (plus one padding position), model probabilities 1/2, 1/4, 1/2.
    targets = np.array([[0, 1, 3, 2]])
    weights = np.array([[1.0, 1.0, 1.0, 0.0]])
    model_p = np.array([0.5, 0.25, 0.5])
    sum_nll = -np.log(model_p).sum()  # = 4 ln 2
    sum_lp = unigram.sum_unigram_log_prob(log_p_uni, targets, weights)
    assert sum_lp == pytest.approx(-6 * math.log(2))  # ln 1/2 + ln 1/4 + ln 1/8

    got = eval_callback.losses_from_sums(sum_nll, 3.0, sum_lp, n_bytes=6)
    # Spec §3: L_u = -(1/T) Σ log(p / p_uni) = -(ln 1 + ln 1 + ln 4) / 3.
    spec_value = -np.mean(np.log(model_p / np.exp(log_p_uni[[0, 1, 3]])))
    assert spec_value == pytest.approx(-2 * math.log(2) / 3)
    assert got["loss_unigram_norm"] == pytest.approx(spec_value, rel=1e-12)
    # = cross-entropy minus the mean unigram surprisal (-(1/T) Σ log p_uni = 2 ln 2).
    assert got["loss"] == pytest.approx(4 * math.log(2) / 3)
    assert got["loss_unigram_norm"] == pytest.approx(got["loss"] - 2 * math.log(2))
    assert got["bits_per_byte"] == pytest.approx(4.0 / 6.0)  # 4 ln 2 nats = 4 bits over 6 bytes


def test_unigram_counts_reject_ids_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError, match=r"out of range \[0, 4\)"):
        unigram.count_unigrams([np.array([0, 4])], vocab_size=4)


def test_writer_validates_and_never_duplicates_across_restarts(tmp_path: Path) -> None:
    writer = EvalLogWriter(tmp_path, tensorboard=False)
    written = writer.write([make_row("r", 0, "en"), make_row("r", 0, "sw")])
    assert len(written) == 2
    bad = make_row("r", 5, "en")
    bad["tokens"] = 1.5  # float where the schema wants int tokens
    with pytest.raises(schema.SchemaError, match="'tokens'"):
        writer.write([make_row("r", 5, "sw"), bad])
    assert len(logio.read_jsonl(eval_log_path(tmp_path))) == 2  # nothing of the bad batch written

    # A crash mid-write leaves a truncated line; a restarted writer drops it and re-writes.
    with open(eval_log_path(tmp_path), "a") as f:
        f.write(json.dumps(make_row("r", 5, "en"))[:40])
    restarted = EvalLogWriter(tmp_path, tensorboard=False)
    assert restarted.has("r", 0, "en") and not restarted.has("r", 5, "en")
    written = restarted.write([make_row("r", 0, "en"), make_row("r", 5, "en")])
    assert [schema.row_key(r) for r in written] == [("r", 5, "en")]
    rows = logio.read_jsonl(eval_log_path(tmp_path))
    assert sorted(schema.row_key(r) for r in rows) == [("r", 0, "en"), ("r", 0, "sw"), ("r", 5, "en")]


def test_writer_mirrors_losses_to_tensorboard(tmp_path: Path) -> None:
    writer = EvalLogWriter(tmp_path, tensorboard=True)
    writer.write([make_row("r", 3, "sw", loss=2.5)])
    writer.close()
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "eval"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "eval/sw/loss" in acc.Tags()["tensors"]
    (event,) = acc.Tensors("eval/sw/loss")
    assert event.step == 3
    import tensorflow as tf

    assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(2.5)


def test_training_unigram_counts_are_cached_in_memory_and_on_disk(tmp_path: Path, monkeypatch) -> None:
    from atlas_t5x.data import accounting, madlad, vocab

    monkeypatch.setattr(eval_callback, "_UNIGRAM_CACHE", {})
    counts = eval_callback.training_unigram_counts("yi", "corpus_spm", 8192, cache_dir=str(tmp_path))
    spm = vocab.get_vocabulary("corpus_spm")
    split = accounting.encode_documents(madlad.load_split(None, "yi", "train"), spm)
    assert counts.sum() == split.num_tokens  # every training token counted once, EOS included
    np.testing.assert_array_equal(counts, np.bincount(split.tokens, minlength=8192))
    (cached,) = tmp_path.glob("unigram_yi_*.npy")

    # A new process (empty in-memory cache) reads the file instead of re-encoding the split.
    monkeypatch.setattr(eval_callback, "_UNIGRAM_CACHE", {})
    monkeypatch.setattr(accounting, "encode_documents", lambda *a, **k: pytest.fail("re-encoded"))
    again = eval_callback.training_unigram_counts("yi", "corpus_spm", 8192, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again, counts)
    assert eval_callback.training_unigram_counts("yi", "corpus_spm", 8192) is again  # in memory now


def test_callback_rejects_languages_missing_from_the_corpus() -> None:
    evaluator = eval_callback.PerLanguageEval(every_steps=5, languages=["en", "sw"])
    with pytest.raises(ValueError, match=r"\['sw'\] not in corpus"):
        evaluator.eval_languages()
    with pytest.raises(ValueError, match="every_steps must be positive"):
        eval_callback.PerLanguageEval(every_steps=0)


def test_default_eval_languages_are_training_plus_extra_never_a_whole_large_root(tmp_path) -> None:
    import gzip

    from atlas_t5x import languages as languages_lib
    from atlas_t5x.data import madlad

    codes = list(languages_lib.LANGUAGES)[: eval_callback.MAX_IMPLICIT_EVAL_LANGUAGES + 6]
    for code in codes:
        (tmp_path / code).mkdir()
        with gzip.open(tmp_path / code / f"{code}_clean_0000.jsonl.gz", "wt") as f:
            f.write('{"text": "x"}\n')
    large = eval_callback.PerLanguageEval(corpus_root=str(tmp_path), extra_languages=[codes[-1], "en"])
    assert large.eval_languages(["en", "fr"]) == ["en", "fr", codes[-1]]
    assert eval_callback.PerLanguageEval(corpus_root=str(tmp_path)).eval_languages(["de"]) == ["de"]
    with pytest.raises(ValueError, match=r"\['qq_Zzzz'\] not in corpus"):
        eval_callback.PerLanguageEval(corpus_root=str(tmp_path), extra_languages=["qq_Zzzz"]).eval_languages([])
    # a small corpus (the embedded one) is evaluated in full, training languages first
    small = eval_callback.PerLanguageEval().eval_languages(["yi"])
    assert sorted(small) == madlad.available_languages()


def test_training_unigram_counts_stop_at_the_token_cap() -> None:
    full = eval_callback.training_unigram_counts("en", "corpus_spm", 8192)
    capped = eval_callback.training_unigram_counts("en", "corpus_spm", 8192, max_tokens=1)
    # one chunk of 256 documents, then stop: fewer tokens than the whole split, a prefix of it
    assert 0 < capped.sum() < full.sum() and (capped <= full).all()
