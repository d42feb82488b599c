"""TFDS builder atlas_madlad (atlas_t5x/data/tfds_madlad.py): tfds.load and seqio.TfdsDataSource read
a MADLAD-layout root with the data layer's splits; built on Beam (DirectRunner) or in process."""

from __future__ import annotations

import gzip
import json
import os

import pytest
import seqio
import tensorflow_datasets as tfds

from atlas_t5x.data import madlad
from atlas_t5x.data import tfds_madlad  # noqa: F401  (registers the builder)


def write_shard(path, texts, raw_lines=()):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        for line in raw_lines:
            f.write(line + "\n")


def synthetic_root(root, sizes=None):
    """A small MADLAD-layout root: skewed languages, several scripts, multi-shard languages."""
    sizes = sizes or {"en": (3, 90), "de": (2, 40), "ru": (1, 25), "hi": (1, 12), "yo": (1, 9)}
    alphabets = {"en": "the cat sat on a mat", "de": "über die straße gehen",
                 "ru": "привет мир как дела", "hi": "नमस्ते दुनिया कैसे हो", "yo": "ẹ kú àárọ̀ ọ̀rẹ́"}
    for lang, (shards, docs) in sizes.items():
        words = alphabets[lang].split()
        for shard in range(shards):
            texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(3 + (i * 13 + shard) % 40))
                     + f" {shard}-{i}" for i in range(docs)]
            write_shard(os.path.join(root, lang, f"{lang}_clean_{shard:04d}.jsonl.gz"), texts)
    return str(root)


def texts_of(ds) -> list[str]:
    return sorted(ex["text"].numpy().decode("utf-8") for ex in ds)


@pytest.mark.parametrize("use_beam", [True, False])
def test_tfds_load_and_seqio_read_the_embedded_corpus_with_the_data_layer_splits(tmp_path, use_beam):
    if use_beam:
        pytest.importorskip("apache_beam")
    data_dir = str(tmp_path / "tfds")
    splits = tfds.load("atlas_madlad/cy", data_dir=data_dir, builder_kwargs={"use_beam": use_beam})
    for split in madlad.SPLITS:
        assert texts_of(splits[split]) == sorted(madlad.iter_split(None, "cy", split))
    source = seqio.TfdsDataSource("atlas_madlad/cy:1.0.0", tfds_data_dir=data_dir)
    assert set(source.splits) == set(madlad.SPLITS)
    assert source.num_input_examples("test") == len(list(madlad.iter_split(None, "cy", "test")))
    assert texts_of(source.get_dataset("validation", shuffle=False)) == \
        sorted(madlad.iter_split(None, "cy", "validation"))


def test_tfds_builder_over_a_synthetic_root_and_its_bad_input(tmp_path):
    root = synthetic_root(tmp_path / "madlad", {"en": (3, 40), "de": (1, 20)})
    data_dir = str(tmp_path / "tfds")
    train = tfds.load("atlas_madlad/en", split="train", data_dir=data_dir,
                      builder_kwargs={"root": root, "use_beam": False})
    assert texts_of(train) == sorted(madlad.iter_split(root, "en", "train"))
    builder = tfds.builder("atlas_madlad/en", data_dir=data_dir, root=root)
    assert builder.info.metadata["root"] == root
    assert sum(builder.info.splits[s].num_examples for s in madlad.SPLITS) == 120

    other = synthetic_root(tmp_path / "other", {"en": (1, 20)})
    with pytest.raises(madlad.CorpusError, match="was built from root"):
        tfds.builder("atlas_madlad/en", data_dir=data_dir, root=other)
    with pytest.raises(madlad.CorpusError, match=f"folder {root}/yo does not exist"):
        tfds.load("atlas_madlad/yo", data_dir=data_dir, builder_kwargs={"root": root, "use_beam": False})
    corrupt = os.path.join(root, "de", "de_clean_0001.jsonl.gz")
    write_shard(corrupt, ["ok"], raw_lines=["not json"])
    with pytest.raises(madlad.CorpusError, match=f"{corrupt}:2"):
        tfds.load("atlas_madlad/de", data_dir=data_dir, builder_kwargs={"root": root, "use_beam": False})
