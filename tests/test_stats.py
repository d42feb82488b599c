"""The per-language statistics file: counts, resumability, refusals, and its use for the splits."""

from __future__ import annotations

import gzip
import json
import logging
import os

import pytest
import seqio

from atlas_t5x.data import madlad, stats

BYTE = seqio.ByteVocabulary()


def _write(root, lang, docs, n_files=1):
    os.makedirs(root / lang, exist_ok=True)
    for shard in range(n_files):
        with gzip.open(root / lang / f"{lang}_clean_{shard:04d}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in docs[shard::n_files])


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "madlad"
    _write(folder, "cy", [f"cy document {i} " + "x" * (i % 17) for i in range(300)], n_files=2)
    _write(folder, "yi", [f"yi document {i}" for i in range(120)])
    return folder


def test_statistics_count_every_split_with_the_vocabulary(root, tmp_path):
    path = str(tmp_path / "stats.json")
    table = stats.compute_stats(str(root), ["cy", "yi"], "byte", path=path, progress=False)
    assert stats.read_stats(path) == table and table["root"] == str(root)
    for lang in ("cy", "yi"):
        entry = table["languages"][lang]
        everything = madlad.read_language(str(root), lang)
        assert entry["documents"] == len(everything)
        assert entry["bytes"] == sum(len(d.encode()) for d in everything)
        assert entry["thresholds"] == stats.thresholds_for(entry["bytes"]).to_json() == {"test": 0.2, "validation": 0.1}
        for split in stats.SPLITS:
            docs = madlad.load_split(str(root), lang, split)
            assert entry["splits"][split] == {"documents": len(docs), "bytes": sum(len(d.encode()) for d in docs),
                                              "tokens": sum(len(BYTE.encode(d)) + 1 for d in docs)}
        assert entry["unique_tokens"] == entry["splits"]["train"]["tokens"]
        assert entry["files"] == [[os.path.basename(p), os.path.getsize(p)] for p in madlad.shard_paths(str(root), lang)]
    assert not [n for n in os.listdir(tmp_path) if n != "stats.json" and n != "madlad"]  # no temp file left


def test_statistics_are_resumable_and_refuse_another_root_or_vocabulary(root, tmp_path, monkeypatch):
    path = str(tmp_path / "stats.json")
    stats.compute_stats(str(root), ["cy"], "byte", path=path, progress=False)
    counted = []
    original = stats.compute_language_stats
    monkeypatch.setattr(stats, "compute_language_stats",
                        lambda r, lang, *a, **k: counted.append(lang) or original(r, lang, *a, **k))
    table = stats.compute_stats(str(root), ["cy", "yi"], "byte", path=path, progress=False)
    assert counted == ["yi"] and set(table["languages"]) == {"cy", "yi"}  # cy was kept
    with pytest.raises(stats.StatsError, match="vocabulary"):
        stats.compute_stats(str(root), ["cy"], "corpus_spm", path=path, progress=False)
    with pytest.raises(stats.StatsError, match="describes root"):
        stats.load_stats(path, str(tmp_path / "elsewhere"))
    with pytest.raises(stats.StatsError, match=r"no entry for \['de'\]"):
        stats.load_stats(path, str(root), languages=["de"])
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(stats.StatsError, match="not an atlas_t5x statistics file"):
        stats.read_stats(str(tmp_path / "other.json"))


def test_splits_follow_the_statistics_file_and_a_changed_folder_is_refused(root, tmp_path, monkeypatch):
    path = str(tmp_path / "stats.json")
    table = stats.compute_stats(str(root), ["cy"], "byte", path=path, progress=False)
    table["languages"]["cy"]["thresholds"] = {"test": 0.5, "validation": 0.1}  # as a larger language would
    stats.write_stats(path, table)
    monkeypatch.setenv(madlad.MADLAD_STATS_ENV, path)
    assert madlad.thresholds_source(str(root), "cy") == f"statistics {path}"
    docs = madlad.read_language(str(root), "cy")
    expected = [d for d in docs if stats.hash_position(d) < 0.5]
    assert madlad.load_split(str(root), "cy", "test") == expected
    _write(root, "cy", [f"cy document {i}" for i in range(310)], n_files=2)  # the folder changes
    with pytest.raises(madlad.CorpusError, match=f"language 'cy': folder {root}/cy changed since statistics file"):
        madlad.load_split(str(root), "cy", "test")


def test_large_language_without_statistics_uses_the_listed_size_estimate_and_says_so(root, monkeypatch, caplog):
    monkeypatch.setattr(madlad, "MEASURE_LIMIT_BYTES", 0)
    monkeypatch.delenv(madlad.MADLAD_STATS_ENV, raising=False)
    with caplog.at_level(logging.WARNING):
        thresholds = madlad.language_thresholds(str(root), "yi")
    gzip_bytes = os.path.getsize(root / "yi" / "yi_clean_0000.jsonl.gz")
    assert thresholds == stats.thresholds_for(int(gzip_bytes * madlad.GZIP_TEXT_RATIO))
    assert madlad.thresholds_source(str(root), "yi") == "listed-size estimate"
    assert "language yi: no statistics file lists it" in caplog.text and "estimate" in caplog.text


def test_skip_bad_records_counts_them_in_the_statistics(tmp_path):
    folder = tmp_path / "madlad"
    _write(folder, "yi", [f"yi document {i}" for i in range(50)])
    path = folder / "yi" / "yi_clean_0001.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"text": "fine"}\n{"text": broken\n[1, 2]\n')
    with pytest.raises(madlad.CorpusError, match=f"{path}:2: not a valid JSON line"):
        stats.compute_language_stats(str(folder), "yi", "byte")
    entry = stats.compute_language_stats(str(folder), "yi", "byte", skip_bad_records=True)
    assert entry["bad_records"] == 2 and entry["documents"] == 51
