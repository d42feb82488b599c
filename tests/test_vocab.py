"""Vocabularies: exact round trips on every shipped language, sizes, provenance, bad names."""

import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest

from atlas_t5x.data import madlad
from atlas_t5x.data import vocab as vocab_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_PER_SPLIT = 15


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sample(lang):
    """Documents from every split of a language: the longest ones and an evenly spaced sample."""
    docs = []
    for split in madlad.SPLITS:
        split_docs = madlad.load_split(None, lang, split)
        idx = np.linspace(0, len(split_docs) - 1, SAMPLE_PER_SPLIT).astype(int)
        docs += [split_docs[i] for i in idx] + [max(split_docs, key=len)]
    return docs


@pytest.mark.parametrize("lang", madlad.available_languages(madlad.EMBEDDED_CORPUS_DIR))
def test_every_shipped_language_round_trips_through_the_corpus_vocabulary(lang):
    vocab = vocab_lib.get_vocabulary("corpus_spm")
    for doc in _sample(lang):
        ids = vocab.encode(doc)
        assert vocab.decode(ids) == doc
        assert vocab.unk_id not in ids                                # byte fallback, no <unk>
        assert 0 < len(ids) <= len(doc.encode("utf-8"))               # never worse than bytes


def test_tf_encoding_matches_python_encoding():
    vocab = vocab_lib.get_vocabulary("corpus_spm")
    docs = [madlad.load_split(None, lang, "validation")[0] for lang in ("ja", "hi", "yi", "en")]
    for doc in docs:
        ids = vocab.encode_tf(doc).numpy().tolist()
        assert ids == vocab.encode(doc)
        assert vocab.decode_tf(np.array(ids, dtype=np.int32)).numpy().decode("utf-8") == doc


def test_corpus_vocabulary_ids_and_sizes():
    vocab = vocab_lib.get_vocabulary()
    assert vocab.vocab_size == 8192
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert vocab_lib.model_vocab_size("corpus_spm") == 8192
    byte = vocab_lib.get_vocabulary("byte")
    assert byte.vocab_size == 259 and vocab_lib.model_vocab_size("byte") == 384
    text = "Grüße, 世界 — नमस्ते\n\tend"
    assert byte.decode(byte.encode(text)) == text
    assert len(byte.encode(text)) == len(text.encode("utf-8"))


def test_padded_vocab_size():
    assert vocab_lib.PAPER_VOCAB_SIZE == 64512 and vocab_lib.PAPER_VOCAB_SIZE % 128 == 0
    assert vocab_lib.padded_vocab_size(64000) == 64000
    assert vocab_lib.padded_vocab_size(64001) == 64128
    assert vocab_lib.padded_vocab_size(259, multiple=64) == 320
    with pytest.raises(ValueError, match="must be positive"):
        vocab_lib.padded_vocab_size(0)


def test_vocabulary_path_and_bad_names(tmp_path):
    by_path = vocab_lib.get_vocabulary(vocab_lib.CORPUS_SPM_PATH)
    assert by_path.encode("psql") == vocab_lib.get_vocabulary().encode("psql")
    with pytest.raises(ValueError, match="unknown vocabulary 'bytes'"):
        vocab_lib.get_vocabulary("bytes")
    missing = str(tmp_path / "none.model")
    with pytest.raises(FileNotFoundError, match=missing):
        vocab_lib.get_vocabulary(missing)


def test_vocabulary_card_matches_model_and_train_splits():
    """The shipped model is the one its card describes, trained on the train splits only."""
    card_path = vocab_lib.CORPUS_SPM_PATH[: -len(".model")] + ".json"
    with open(card_path, encoding="utf-8") as f:
        card = json.load(f)
    with open(vocab_lib.CORPUS_SPM_PATH, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == card["sha256"]
    assert card["splits_used"] == ["train"] and card["temperature"] == 100
    for lang, n_bytes in card["train_bytes"].items():
        assert sum(len(d.encode()) for d in madlad.load_split(None, lang, "train")) == n_bytes
    vocab = vocab_lib.get_vocabulary()
    for lang in ("yi", "cy"):
        for split in madlad.SPLITS:
            n_tokens = sum(len(vocab.encode(d)) for d in madlad.load_split(None, lang, split))
            assert n_tokens == card["tokens_without_eos"][lang][split], (lang, split)


def test_temperature_shares():
    from atlas_t5x.cli import train_vocab
    sizes = {"en": 900, "fr": 90, "yi": 10}
    proportional = train_vocab.temperature_shares(sizes, 1.0)
    assert proportional == pytest.approx({"en": 0.9, "fr": 0.09, "yi": 0.01})
    t100 = train_vocab.temperature_shares(sizes, 100.0)
    expected = np.array([0.9, 0.09, 0.01]) ** 0.01
    assert [t100[k] for k in ("en", "fr", "yi")] == pytest.approx(list(expected / expected.sum()))
    assert max(t100.values()) / min(t100.values()) < 1.05
    # small language: whole passes until the target (the last pass partial), deterministic
    passes = []
    docs = lambda: passes.append(1) or iter(["ab", "cde"])  # noqa: E731
    picked = list(train_vocab.sample_language(docs, 11, 5, seed=3))
    assert picked[:4] == ["ab", "cde", "ab", "cde"] and 10 <= sum(map(len, picked)) <= 13
    assert sum(map(len, picked[:-1])) < 11 and len(passes) <= 3
    assert picked == list(train_vocab.sample_language(lambda: iter(["ab", "cde"]), 11, 5, seed=3))
    # large language: one streamed pass keeping each document with probability target / size
    big = [f"document {i:05d}" for i in range(5000)]
    size = sum(map(len, big))
    kept = list(train_vocab.sample_language(lambda: iter(big), size // 10, size, seed=1))
    assert 0.08 * size <= sum(map(len, kept)) <= 0.1 * size + 20 and kept != big[:len(kept)]


def test_train_vocab_cli_rejects_bad_input(capsys):
    train_vocab = _load_script("train_vocab")
    assert train_vocab.main(["--languages", "xx"]) == 2
    assert "nearest valid codes" in capsys.readouterr().err
    assert train_vocab.main(["--vocab_size", "10"]) == 2
