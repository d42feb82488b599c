"""seqio Tasks madlad_{lang}: registration and tokenised examples."""

import gzip
import json

import numpy as np
import pytest
import seqio

import atlas_t5x_tasks as tasks  # the repository's tasks/ folder, installed under this name
from atlas_t5x.data import mixtures as mixtures_lib
from atlas_t5x.data import madlad
from atlas_t5x.data import vocab as vocab_lib


def test_a_task_per_language_under_the_root():
    langs = madlad.available_languages(madlad.resolve_madlad_dir())
    assert tasks.MADLAD_TASKS == [f"madlad_{lang}" for lang in langs]
    assert set(tasks.MADLAD_TASKS) <= set(seqio.TaskRegistry.names())


@pytest.mark.parametrize("lang", ["yi", "ja"])
def test_task_yields_tokenised_documents(lang):
    task = seqio.get_mixture_or_task(f"madlad_{lang}")
    vocab = vocab_lib.get_vocabulary("corpus_spm")
    assert task.output_features["targets"].vocabulary.vocab_size == vocab.vocab_size
    docs = madlad.load_split(None, lang, "validation")
    ds = task.get_dataset(sequence_length=None, split="validation", shuffle=False)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == len(docs)
    for ex, doc in zip(examples, docs):
        assert ex["targets_pretokenized"].decode("utf-8") == doc
        assert ex["targets"].tolist() == vocab.encode(doc) + [vocab.eos_id]


def test_task_trims_to_the_sequence_length_and_keeps_eos():
    task = seqio.get_mixture_or_task("madlad_hi")
    vocab = vocab_lib.get_vocabulary("corpus_spm")
    docs = madlad.load_split(None, "hi", "test")[:10]
    ds = task.get_dataset(sequence_length={"targets": 16}, split="test", shuffle=False)
    for ex, doc in zip(ds.take(10).as_numpy_iterator(), docs):
        ids = vocab.encode(doc)
        assert ex["targets"].tolist() == ids[:15] + [vocab.eos_id]


def test_register_any_madlad_code_on_demand(tmp_path):
    lang_dir = tmp_path / "sw"
    lang_dir.mkdir()
    docs = [f"Habari ya {i} asubuhi na jioni" for i in range(40)]
    with gzip.open(lang_dir / "sw_clean_0000.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    try:
        assert tasks.register_madlad_task("sw", str(tmp_path), vocab_name="byte") == "madlad_sw"
        ds = seqio.get_mixture_or_task("madlad_sw").get_dataset(
            sequence_length=None, split="train", shuffle=False)
        got = [ex["targets"].tolist() for ex in ds.as_numpy_iterator()]
        byte = vocab_lib.get_vocabulary("byte")
        want = [byte.encode(d) + [byte.eos_id] for d in madlad.load_split(str(tmp_path), "sw", "train")]
        assert got == want and len(got) > 0
    finally:
        seqio.TaskRegistry.remove("madlad_sw")


def test_register_rejects_unknown_or_absent_languages(tmp_path):
    with pytest.raises(ValueError, match="nearest valid codes"):
        tasks.register_madlad_task("qqz")
    with pytest.raises(madlad.CorpusError, match=f"{tmp_path}/sw does not exist"):
        tasks.register_madlad_task("sw", str(tmp_path))
    (tmp_path / "foo").mkdir()   # a shard folder whose name is no MADLAD-400 code
    with gzip.open(tmp_path / "foo" / "foo_clean_0000.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(madlad.CorpusError, match=f"{tmp_path}/foo under the MADLAD root: "
                                                 "unknown language 'foo'; nearest valid codes"):
        tasks.register_madlad_tasks(str(tmp_path))


def test_seqio_mixture_samples_documents_in_token_proportions(tmp_path):
    """sw documents are ~10x longer than ha ones: a 50/50 token mixture draws ~10 ha per sw."""
    for lang, words in (("sw", 40), ("ha", 4)):
        (tmp_path / lang).mkdir()
        with gzip.open(tmp_path / lang / f"{lang}_clean_0000.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": f"{i} " + " ".join(["maneno"] * words)}) + "\n"
                         for i in range(200))
    try:
        for lang in ("ha", "sw"):
            tasks.register_madlad_task(lang, str(tmp_path), vocab_name="byte")
        name = tasks.mixtures.register_mixture(mixtures_lib.bilingual("ha", "sw"))
        mixture = seqio.get_mixture_or_task(name)
        rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
        assert rates["madlad_ha"] / rates["madlad_sw"] == pytest.approx(
            tasks.mixtures.mean_document_tokens(seqio.get_mixture_or_task("madlad_sw"))
            / tasks.mixtures.mean_document_tokens(seqio.get_mixture_or_task("madlad_ha")))
        ds = mixture.get_dataset(sequence_length=None, split="train", shuffle=True, seed=0)
        lengths = [len(ex["targets"]) for ex in ds.take(1500).as_numpy_iterator()]
        assert 1200 < sum(n < 100 for n in lengths) < 1450       # ha documents, not 50%
        long_tokens = sum(n for n in lengths if n >= 100)
        assert long_tokens / sum(lengths) == pytest.approx(0.5, abs=0.05)
    finally:
        for name in ("madlad_bilingual_ha_sw", "madlad_ha", "madlad_sw"):
            if name in seqio.MixtureRegistry.names():
                seqio.MixtureRegistry.remove(name)
            elif name in seqio.TaskRegistry.names():
                seqio.TaskRegistry.remove(name)
