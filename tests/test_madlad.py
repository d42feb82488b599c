"""MADLAD layout reader: splits, gfile paths, bad input, and the embedded corpus manifest."""

import gzip
import hashlib
import json
import os
import random
import struct
import uuid

import gin
import pytest
import tensorflow as tf

from atlas_t5x import languages
from atlas_t5x.data import madlad, stats

MANIFEST_PATH = os.path.join(madlad.EMBEDDED_CORPUS_DIR, "MANIFEST.json")
PERMISSIVE = {"PostgreSQL", "HPND", "MIT"}
WEAK_COPYLEFT = {"LGPL-2+", "LGPL-2.1+"}


def _docs(n, seed=0):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    return [f"doc {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 30)))
            for i in range(n)]


def _write_shard(path, rows, raw=None):
    """Writes rows ({"text": ...} dicts or pre-serialised lines) as a gzipped JSONL shard."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    payload = raw if raw is not None else "".join(
        (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows).encode()
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(gzip.compress(payload, mtime=0))


def _write_language(root, lang, docs, n_shards=1):
    for shard in range(n_shards):
        _write_shard(f"{root}/{lang}/{lang}_clean_{shard:04d}.jsonl.gz",
                     [{"text": d} for d in docs[shard::n_shards]])


def _all_splits(root, lang):
    return {s: madlad.load_split(root, lang, s) for s in madlad.SPLITS}


# ---------------------------------------------------------------------------------------------
# Splits


def test_embedded_splits_are_disjoint_cover_the_data_and_have_paper_shares():
    root = madlad.EMBEDDED_CORPUS_DIR
    pooled = {split: 0 for split in madlad.SPLITS}
    for lang in madlad.available_languages(root):
        everything = madlad.read_language(root, lang)
        splits = _all_splits(root, lang)
        seen = [set(v) for v in splits.values()]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2]), lang
        assert sorted(d for v in splits.values() for d in v) == sorted(everything), lang
        for split in madlad.SPLITS:
            pooled[split] += sum(len(d.encode()) for d in splits[split])
    # every embedded language is small (< 20M tokens): 20% / 10% of the hash space, so the pooled
    # byte shares sit near 20% / 10% (about 12k documents: the noise is well under 2 points)
    total = sum(pooled.values())
    assert abs(pooled["test"] / total - madlad.TEST_FRACTION) < 0.02
    assert abs(pooled["validation"] / total - madlad.VALIDATION_FRACTION) < 0.02


def test_split_shares_follow_the_thresholds_for_many_documents():
    docs = [f"{i:06d}" + "x" * 94 for i in range(20000)]   # 100 bytes each
    splits = madlad.split_documents(docs)
    shares = [len(splits[s]) / len(docs) for s in ("train", "validation", "test")]
    assert shares == pytest.approx([0.7, 0.1, 0.2], abs=0.01)


def test_test_split_is_capped_at_20m_tokens():
    small = stats.thresholds_for(4 * 10**6)            # 1M estimated tokens: 20% / 10%
    assert (small.test, small.validation) == (0.2, 0.1)
    large = stats.thresholds_for(4 * 10**9)            # 1G estimated tokens: 20M / 5M tokens
    assert large.test == pytest.approx(20e6 / 1e9) and large.validation == pytest.approx(5e6 / 1e9)
    docs = _docs(4000)
    capped = madlad.split_documents(docs, stats.SplitThresholds(test=0.05, validation=0.01))
    assert len(capped["test"]) == pytest.approx(0.05 * len(docs), abs=0.015 * len(docs))
    with pytest.raises(madlad.CorpusError, match="too few"):
        madlad.split_documents(docs[:3])


def test_splits_are_independent_of_sharding_and_file_order(tmp_path):
    docs = _docs(300, seed=1)
    shuffled = docs[:]
    random.Random(7).shuffle(shuffled)
    _write_language(tmp_path / "a", "cy", docs, n_shards=1)
    _write_language(tmp_path / "b", "cy", shuffled, n_shards=4)
    a, b = _all_splits(str(tmp_path / "a"), "cy"), _all_splits(str(tmp_path / "b"), "cy")
    assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}
    for split in madlad.SPLITS:
        # the order-free fingerprint agrees for any ordering of the same documents
        assert madlad.split_fingerprint(a[split]) == madlad.split_fingerprint(b[split][::-1])
        assert madlad.split_fingerprint(a[split]) == madlad.split_fingerprint(
            madlad.split_documents(shuffled)[split])


def test_split_assignment_is_pinned_across_machines():
    """The split uses SHA-256 of the salted text only; these golden values catch any change."""
    docs = [f"document number {i}" for i in range(100)]
    digest = hashlib.sha256(b"atlas_t5x/madlad-split/v2\x00document number 0").digest()
    assert stats.hash_position(docs[0]) == int.from_bytes(digest[:8], "big") / 2**64 == 0.8738407559471552
    splits = madlad.split_documents(docs)
    assert [len(splits[s]) for s in madlad.SPLITS] == [67, 14, 19]
    assert splits["test"][:3] == ["document number 1", "document number 2", "document number 3"]
    assert madlad.split_fingerprint(splits["test"]) == (
        "173165069d32b73cd969077cf9ff686c8810036fec264a0f78777c96ec6b9924")


def test_reads_a_gfile_url_root_like_a_local_folder(tmp_path):
    """A scheme-prefixed root (TensorFlow's in-memory ram:// filesystem, read like gs://)."""
    docs = _docs(120, seed=3)
    url_root = f"ram://madlad-{uuid.uuid4().hex}"
    _write_language(url_root, "cy", docs, n_shards=2)
    _write_language(tmp_path, "cy", docs, n_shards=2)
    assert madlad.available_languages(url_root) == ["cy"]
    assert _all_splits(url_root, "cy") == _all_splits(str(tmp_path), "cy")


def test_seqio_source_yields_the_split(tmp_path):
    docs = _docs(80, seed=4)
    _write_language(tmp_path, "yi", docs)
    source = madlad.madlad_data_source("yi", str(tmp_path))
    assert set(source.splits) == set(madlad.SPLITS)
    for split in madlad.SPLITS:
        got = [ex["text"].decode() for ex in source.get_dataset(split, shuffle=False).as_numpy_iterator()]
        assert got == madlad.load_split(str(tmp_path), "yi", split)


def test_resolve_madlad_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(madlad.MADLAD_DIR_ENV, raising=False)
    assert madlad.resolve_madlad_dir() == madlad.EMBEDDED_CORPUS_DIR
    monkeypatch.setenv(madlad.MADLAD_DIR_ENV, str(tmp_path))
    assert madlad.resolve_madlad_dir() == str(tmp_path)
    assert madlad.resolve_madlad_dir("gs://bucket/madlad") == "gs://bucket/madlad"
    gin_root = str(tmp_path / "from_gin")
    with gin.unlock_config():
        gin.bind_parameter("resolve_madlad_dir.root", gin_root)
    try:  # the binding wins over $MADLAD_DIR, also where callers pass root=None explicitly
        assert madlad.resolve_madlad_dir() == madlad.resolve_madlad_dir(None) == gin_root
        assert madlad.resolve_madlad_dir("gs://bucket/madlad") == "gs://bucket/madlad"
        with pytest.raises(madlad.CorpusError, match="from_gin does not exist"):
            madlad.available_languages(None)
    finally:
        gin.clear_config()


def test_language_aliases_resolve_to_madlad_codes(tmp_path):
    _write_language(tmp_path, "pt", _docs(60))
    assert madlad.load_split(str(tmp_path), "pt_BR", "test") == madlad.load_split(str(tmp_path), "pt", "test")


# ---------------------------------------------------------------------------------------------
# Bad input


def test_unknown_language_lists_nearest_codes():
    with pytest.raises(ValueError, match="nearest valid codes"):
        madlad.load_split(None, "xx", "train")


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        madlad.load_split(None, "en", "dev")


def test_missing_language_folder_names_the_path(tmp_path):
    _write_language(tmp_path, "cy", _docs(50))
    with pytest.raises(madlad.CorpusError, match=f"{tmp_path}/sw.*does not exist"):
        madlad.load_split(str(tmp_path), "sw", "train")


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(madlad.CorpusError, match=str(tmp_path / "nowhere")):
        madlad.available_languages(str(tmp_path / "nowhere"))


def test_empty_language_folder_names_the_path(tmp_path):
    (tmp_path / "cy").mkdir()
    (tmp_path / "cy" / "README").write_text("not a shard")
    with pytest.raises(madlad.CorpusError, match=f"{tmp_path}/cy holds no cy_clean_NNNN"):
        madlad.load_split(str(tmp_path), "cy", "train")
    assert madlad.available_languages(str(tmp_path)) == []


def test_language_with_only_empty_shards(tmp_path):
    _write_shard(f"{tmp_path}/cy/cy_clean_0000.jsonl.gz", [])
    with pytest.raises(madlad.CorpusError, match="hold no documents"):
        madlad.load_split(str(tmp_path), "cy", "train")


def test_too_few_documents_for_three_splits(tmp_path):
    _write_language(tmp_path, "cy", ["only one document"])
    with pytest.raises(madlad.CorpusError, match="too few"):
        madlad.load_split(str(tmp_path), "cy", "train")


def test_file_that_is_not_gzip_names_the_file(tmp_path):
    path = tmp_path / "cy" / "cy_clean_0000.jsonl.gz"
    path.parent.mkdir()
    path.write_text('{"text": "plain text, not gzip"}\n')
    with pytest.raises(madlad.CorpusError, match=f"{path}: not valid gzip"):
        madlad.load_split(str(tmp_path), "cy", "train")


def test_truncated_gzip_names_the_file(tmp_path):
    _write_language(tmp_path, "cy", _docs(200))
    path = tmp_path / "cy" / "cy_clean_0000.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(madlad.CorpusError, match=f"{path}: not valid gzip"):
        madlad.load_split(str(tmp_path), "cy", "train")


def test_bad_json_line_names_file_and_line(tmp_path):
    path = f"{tmp_path}/cy/cy_clean_0000.jsonl.gz"
    _write_shard(path, ['{"text": "fine"}', '{"text": "fine too"}', '{"text": broken'])
    with pytest.raises(madlad.CorpusError, match=f"{path}:3: not a valid JSON line"):
        madlad.load_split(str(tmp_path), "cy", "train")


def test_row_without_text_names_file_and_line(tmp_path):
    path = f"{tmp_path}/cy/cy_clean_0001.jsonl.gz"
    _write_shard(f"{tmp_path}/cy/cy_clean_0000.jsonl.gz", [{"text": d} for d in _docs(30)])
    _write_shard(path, [{"text": "ok"}, {"content": "no text field"}])
    with pytest.raises(madlad.CorpusError, match=f"{path}:2: row has no string field 'text'"):
        madlad.load_split(str(tmp_path), "cy", "train")


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = f"{tmp_path}/cy/cy_clean_0000.jsonl.gz"
    _write_shard(path, None, raw=b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(madlad.CorpusError, match=f"{path}:2"):
        madlad.load_split(str(tmp_path), "cy", "train")


# ---------------------------------------------------------------------------------------------
# The embedded corpus and its manifest


@pytest.fixture(scope="module")
def manifest():
    with open(MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)


def test_manifest_lists_every_shipped_file_with_sha256_and_license(manifest):
    listed = {f["path"]: f for info in manifest["languages"].values() for f in info["files"]}
    on_disk = set()
    for dirpath, _, files in os.walk(madlad.EMBEDDED_CORPUS_DIR):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), madlad.EMBEDDED_CORPUS_DIR)
            if rel not in ("MANIFEST.json", "README.md"):
                on_disk.add(rel)
    assert on_disk == set(listed)
    for rel, entry in listed.items():
        with open(os.path.join(madlad.EMBEDDED_CORPUS_DIR, rel), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"], rel
        assert entry["licenses"] and set(entry["licenses"]) <= PERMISSIVE | WEAK_COPYLEFT, rel


def test_manifest_sources_carry_package_license_and_hash(manifest):
    for lang, info in manifest["languages"].items():
        assert info["sources"], lang
        for src in info["sources"]:
            assert src["package"] in manifest["packages"]
            assert src["license"] == manifest["packages"][src["package"]]["license"]
            assert len(src["sha256"]) == 64 and src["source_package"]
        assert sorted({s["license"] for s in info["sources"]}) == info["licenses"]
        # the weak-copyleft tier is only drawn on where permissive text is scarce
        if set(info["licenses"]) & WEAK_COPYLEFT:
            permissive = [s for s in info["sources"] if s["license"] in PERMISSIVE]
            assert sum(s["documents"] for s in permissive) < info["documents"] / 2, lang


def test_manifest_counts_match_the_files(manifest):
    for lang, info in manifest["languages"].items():
        docs = madlad.read_language(madlad.EMBEDDED_CORPUS_DIR, lang)
        assert len(docs) == info["documents"] == sum(s["documents"] for s in info["sources"])
        assert sum(len(d.encode()) for d in docs) == info["text_bytes"]


def test_corpus_breadth(manifest):
    langs = manifest["languages"]
    assert sorted(langs) == madlad.available_languages(madlad.EMBEDDED_CORPUS_DIR)
    assert len(langs) >= 12
    for lang, info in langs.items():
        assert info["script"] == languages.LANGUAGES[lang].script
    assert len({info["script"] for info in langs.values()}) >= 4
    for group in (["es", "pt", "ca", "it", "fr"], ["ru", "uk", "bg"], ["hi", "mr"], ["zh", "ja", "ko"]):
        assert set(group) <= set(langs), group
    low = [lang for lang, info in langs.items() if info["text_bytes"] < 100_000]
    high = max(info["text_bytes"] for info in langs.values())
    assert len(low) >= 2 and high > 8 * 100_000


# ---------------------------------------------------------------------------------------------
# The corpus builder's message handling (on a catalog written here, not the machine's)


def _write_mo(path, messages):
    """A GNU .mo file (format revision 0, no hash table) from {msgid: msgstr}."""
    keys = sorted(messages)
    ids = [k.encode() for k in keys]
    strs = [messages[k].encode() for k in keys]
    n = len(keys)
    header_size = 7 * 4
    ids_table, strs_table = header_size, header_size + 8 * n
    data_start = strs_table + 8 * n
    blob, id_entries, str_entries = b"", [], []
    for raw, entries in ((ids, id_entries), (strs, str_entries)):
        for item in raw:
            entries.append((len(item), data_start + len(blob)))
            blob += item + b"\0"
    out = struct.pack("<7I", 0x950412DE, 0, n, ids_table, strs_table, 0, data_start)
    out += b"".join(struct.pack("<2I", *e) for e in id_entries + str_entries) + blob
    path.write_bytes(out)


def _build_corpus_module():
    from atlas_t5x.cli import build_corpus

    return build_corpus


def test_builder_keeps_real_translations_only(tmp_path):
    build_corpus = _build_corpus_module()
    mo = tmp_path / "demo.mo"
    _write_mo(mo, {
        "": "Content-Type: text/plain; charset=UTF-8\n",        # header entry
        "could not open file \"%s\": %m": "no se pudo abrir el archivo «%s»: %m",
        "%s: %s\n": "%s: %s\n",                                 # format only (and untranslated)
        "%d%%": "%d %%",                                        # format only, translated
        "untranslated": "",
        "same": "same",                                         # msgstr == msgid
        "ctx\x04Open": "  Abrir  ",                             # msgctxt prefix, padded msgstr
    })
    pairs = build_corpus.read_catalog(str(mo))
    assert ("Open", "  Abrir  ") in pairs
    assert build_corpus.translated_messages(pairs, source_side=False) == [
        "no se pudo abrir el archivo «%s»: %m", "Abrir"]
    assert build_corpus.translated_messages(pairs, source_side=True) == [
        "could not open file \"%s\": %m", "Open"]
    assert build_corpus.is_format_only("%-10s %5.2f %1$lld %<PRId64>") and not build_corpus.is_format_only("%s файл")


def test_builder_groups_consecutive_messages_into_documents():
    build_corpus = _build_corpus_module()
    messages = [f"message {i:03d} " + "x" * 90 for i in range(20)]        # 104 bytes each + newline
    docs = build_corpus.group_documents(messages)
    assert [n for _, n in docs] == [5, 5, 5, 5]
    assert "\n".join(d for d, _ in docs) == "\n".join(messages)
    unreadable = os.path.join(os.path.dirname(MANIFEST_PATH), "MANIFEST.json")
    with pytest.raises(build_corpus.BuildError, match="not a readable gettext catalog"):
        build_corpus.read_catalog(unreadable)
