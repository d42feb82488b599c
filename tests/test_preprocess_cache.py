"""seqio cache of the madlad_{lang} Tasks (atlas_t5x/preprocess/seqio_cache.py and seqio's own
cache_tasks_main): seqio's format, read back with use_cached=True with the same tokens, counts that
agree with the statistics file, and the trainer's pipeline reading it (make_train_pipeline.
use_cached): the same batches, accounting and resume state as streaming, on one process or two;
caches for another vocabulary or split refused by name."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("apache_beam")

import seqio  # noqa: E402

from atlas_t5x.data import madlad, task_cache  # noqa: E402
from atlas_t5x.data import mixtures as M  # noqa: E402
from atlas_t5x.data import pipeline as P  # noqa: E402
from atlas_t5x.data import stats as stats_lib  # noqa: E402
from atlas_t5x.preprocess import seqio_cache  # noqa: E402
from atlas_t5x.preprocess.beam_runtime import PreprocessError  # noqa: E402
from test_streaming import _run, _write_root  # noqa: E402

LANG = "cy"   # the embedded corpus's second smallest language: 163 documents, one shard file
SYNTHETIC = ("en", "fr", "yo")  # test_streaming's root: 3, 2 and 1 shard files


@pytest.fixture(autouse=True)
def global_cache_dirs():
    """Restores seqio's global cache folders (the pipeline adds its cache_dirs to them) and the
    registered embedded-corpus Task (the cache tests re-register it)."""
    saved = list(seqio.get_global_cache_dirs())
    yield
    seqio.set_global_cache_dirs(saved)
    seqio_cache.register_tasks([LANG], None, "corpus_spm", None)


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory) -> str:
    """The cy Task of the embedded corpus cached with corpus_spm (the Beam DirectRunner path)."""
    cache_dir = str(tmp_path_factory.mktemp("embedded") / "cache")
    assert seqio_cache.cache_madlad_tasks([LANG], cache_dir) == {"madlad_cy": True}
    seqio_cache.register_tasks([LANG], None, "corpus_spm", None)
    return cache_dir


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(root, byte-vocabulary cache) of a generated MADLAD root: en 3 files, fr 2, yo 1."""
    tmp = tmp_path_factory.mktemp("synthetic")
    root = tmp / "madlad"
    _write_root(root)
    cache_dir = str(tmp / "cache")
    names = [f"madlad_{lang}" for lang in SYNTHETIC]
    registered = {name: seqio.TaskRegistry.get(name) for name in names if name in seqio.TaskRegistry.names()}
    seqio_cache.cache_madlad_tasks(list(SYNTHETIC), cache_dir, root=str(root), vocab_name="byte",
                                   splits=["train"])   # all the trainer reads
    yield root, cache_dir
    for name in names:   # the build registered these Tasks over the generated root: put back the default ones
        seqio.TaskRegistry.remove(name)
        if name in registered:
            seqio.TaskRegistry.add_provider(name, registered[name])


def token_rows(task, split, use_cached):
    ds = task.get_dataset(None, split=split, use_cached=use_cached, shuffle=False)
    return [tuple(ex["targets"].tolist()) for ex in ds.as_numpy_iterator()]


def test_cached_task_reads_the_same_tokens_and_matches_the_statistics(embedded_cache, tmp_path):
    task_dir = os.path.join(embedded_cache, "madlad_cy")
    names = sorted(os.listdir(task_dir))
    assert {"COMPLETED", task_cache.MANIFEST, "info.train.json", "stats.test.json"} <= set(names)
    # one output shard per source file (the embedded corpus has one per language)
    assert [n for n in names if n.startswith("train.tfrecord")] == ["train.tfrecord-00000-of-00001"]
    manifest = json.loads((open(os.path.join(task_dir, task_cache.MANIFEST), encoding="utf-8").read()))
    assert manifest["vocab"].startswith("SentencePieceVocabulary:8192:")
    assert manifest["files"] == [[n, s] for n, s in stats_lib.listed_files(madlad.EMBEDDED_CORPUS_DIR, LANG)]

    seqio.add_global_cache_dirs([embedded_cache])
    task = seqio.get_mixture_or_task("madlad_cy")
    assert task.cache_dir == task_dir
    stats = stats_lib.compute_language_stats(madlad.EMBEDDED_CORPUS_DIR, LANG, "corpus_spm")
    for split in madlad.SPLITS:
        cached, streamed = token_rows(task, split, True), token_rows(task, split, False)
        assert cached == streamed and len(cached) > 0   # same documents, in line order
        assert all(row[-1] == 1 for row in cached)      # EOS appended after the cache point
        counts = task.get_cached_stats(split)
        assert counts["examples"] == stats["splits"][split]["documents"]
        assert counts["targets_tokens"] + counts["examples"] == stats["splits"][split]["tokens"]
    lines = [int(ex["source_line"]) for ex in task.get_dataset(None, "train", use_cached=True,
                                                                shuffle=False).as_numpy_iterator()]
    assert lines == sorted(lines) and len(set(lines)) == len(lines)

    # a rerun reuses the cache; a second build elsewhere (two workers) is byte-identical
    assert seqio_cache.cache_madlad_tasks([LANG], embedded_cache) == {"madlad_cy": False}
    again = str(tmp_path / "again")
    seqio_cache.cache_madlad_tasks([LANG], again,
                                   beam_args=["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    for path in sorted(glob.glob(os.path.join(task_dir, "*"))):
        with open(path, "rb") as a, open(os.path.join(again, "madlad_cy", os.path.basename(path)), "rb") as b:
            assert a.read() == b.read(), path


def test_train_pipeline_reads_the_embedded_cache_like_the_stream(embedded_cache):
    """corpus_spm ids from seqio's tokenizer (cache) equal the pipeline's batched SentencePiece."""
    def batches(use_cached):
        pipe = P.make_train_pipeline(M.monolingual(LANG), vocab="corpus_spm", seq_len=128, global_batch=4,
                                     process_index=0, process_count=1, num_input_shards=2, block_docs=32,
                                     use_cached=use_cached, cache_dirs=[embedded_cache])
        return pipe, [next(pipe) for _ in range(60)]   # 31k tokens: past an epoch of cy (26k)

    (streamed, expected), (cached, got) = batches(False), batches(True)
    assert cached.cache_dirs == {LANG: os.path.join(embedded_cache, "madlad_cy")} and not streamed.cache_dirs
    assert cached.get_state()["shards"]["0"][LANG]["epoch"] >= 1
    for want, have in zip(expected, got):
        for key in want:
            np.testing.assert_array_equal(have[key], want[key], err_msg=key)
    assert cached.accounting() == streamed.accounting()


def make_synthetic(root, cache_dir, use_cached, seq_len=32, global_batch=8, num_input_shards=2, **kw):
    return P.make_train_pipeline({"en": 0.5, "fr": 0.3, "yo": 0.2}, vocab="byte", seq_len=seq_len,
                                 global_batch=global_batch, seed=5, root=str(root), block_docs=16,
                                 process_index=0, process_count=1, num_input_shards=num_input_shards,
                                 use_cached=use_cached, cache_dirs=[cache_dir], **kw)


def assert_same_batches(want: list[dict], have: list[dict]) -> None:
    assert len(want) == len(have)
    for step, (a, b) in enumerate(zip(want, have)):
        for key in a:
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"step {step} {key}")


@pytest.mark.parametrize("seq_len,num_input_shards,steps", [(32, 2, 60), (48, 4, 20)])
def test_cached_batches_accounting_and_state_equal_the_streamed_ones(synthetic, seq_len, num_input_shards, steps):
    """File rule (en, fr with S = 2), line rule (yo; everything with S = 4), several epochs; one
    cache serves every sequence length (it holds whole documents)."""
    root, cache_dir = synthetic
    streamed = make_synthetic(root, cache_dir, False, seq_len, num_input_shards=num_input_shards)
    cached = make_synthetic(root, cache_dir, "auto", seq_len, num_input_shards=num_input_shards)
    assert sorted(cached.cache_dirs) == sorted(SYNTHETIC) and streamed.cache_dirs == {}
    want, have = [next(streamed) for _ in range(steps)], [next(cached) for _ in range(steps)]
    assert_same_batches(want, have)
    assert cached.accounting() == streamed.accounting()
    assert cached.accounting().epochs_by_lang["yo"] > 1
    assert cached.get_state() == streamed.get_state()


def test_resume_mid_stream_from_the_cache_or_across_modes(synthetic):
    root, cache_dir = synthetic
    reference = make_synthetic(root, cache_dir, True)
    batches = [next(reference) for _ in range(7)]
    state = reference.get_state()
    batches += [next(reference) for _ in range(8)]
    # a state saved by a cached run resumes a cached or a streamed run, and vice versa
    for use_cached in (True, False):
        resumed = make_synthetic(root, cache_dir, use_cached)
        resumed.set_state(json.loads(json.dumps(state)))
        assert_same_batches(batches[7:], [next(resumed) for _ in range(8)])
        assert resumed.accounting() == reference.accounting()
    streamed = make_synthetic(root, cache_dir, False)
    for _ in range(7):
        next(streamed)
    resumed = make_synthetic(root, cache_dir, True)
    resumed.set_state(streamed.get_state())
    assert_same_batches(batches[7:], [next(resumed) for _ in range(8)])


def test_missing_cache_streams_in_auto_and_is_an_error_when_required(synthetic, tmp_path):
    root, cache_dir = synthetic
    empty = str(tmp_path / "empty")
    assert make_synthetic(root, empty, "auto").cache_dirs == {}
    with pytest.raises(ValueError, match=r"use_cached=True: no complete seqio cache \(COMPLETED\) of "
                                         r"\['madlad_en', 'madlad_fr', 'madlad_yo'\] in the cache folders "
                                         rf"\[.*'{empty}'\].*--languages=en,fr,yo"):
        make_synthetic(root, empty, True)
    # a cache of some languages only: auto streams them all (and says which lack one)
    partial = tmp_path / "partial"
    os.makedirs(partial)
    os.symlink(os.path.join(cache_dir, "madlad_en"), partial / "madlad_en")
    assert make_synthetic(root, str(partial), "auto").cache_dirs == {}
    with pytest.raises(ValueError, match=r"of \['madlad_fr', 'madlad_yo'\]"):
        make_synthetic(root, str(partial), True)
    with pytest.raises(ValueError, match="use_cached must be 'auto', True or False, got 'yes'"):
        make_synthetic(root, cache_dir, "yes")


def test_a_cache_for_another_vocabulary_or_split_is_refused_by_name(synthetic, tmp_path, monkeypatch):
    root, cache_dir = synthetic
    for use_cached in ("auto", True):   # the byte-vocabulary cache read with corpus_spm
        with pytest.raises(task_cache.CacheMismatchError,
                           match=rf"seqio cache {cache_dir}/madlad_en of madlad_en was built for another "
                                 r"configuration \(vocabulary: cache has 'ByteVocabulary:259', this run has "
                                 r"'SentencePieceVocabulary:8192:"):
            P.make_train_pipeline({"en": 0.5, "fr": 0.5}, vocab="corpus_spm", seq_len=32, global_batch=8, root=str(root),
                        process_index=0, process_count=1, use_cached=use_cached, cache_dirs=[cache_dir])
    # the builder refuses to reuse it for another vocabulary too (nothing overwritten)
    with pytest.raises(PreprocessError, match=r"vocabulary: cache has 'ByteVocabulary:259'.*not overwritten"):
        seqio_cache.cache_madlad_tasks(["yo"], cache_dir, root=str(root), vocab_name="corpus_spm")

    # a cache built under another split rule (here: a larger test fraction) holds another train split
    other_split = str(tmp_path / "other_split")
    madlad._thresholds_cached.cache_clear()
    monkeypatch.setattr(stats_lib, "TEST_FRACTION", 0.3)
    seqio_cache.cache_madlad_tasks(["yo"], other_split, root=str(root), vocab_name="byte", splits=["train"])
    monkeypatch.undo()
    madlad._thresholds_cached.cache_clear()
    with pytest.raises(task_cache.CacheMismatchError,
                       match=rf"seqio cache {other_split}/madlad_yo .*split rule: cache has .*'test_fraction': 0\.3.*"
                             r"train/validation/test split thresholds: cache has \{'test': 0\.3, 'validation': 0\.1\}, "
                             r"this run has \{'test': 0\.2, 'validation': 0\.1\}"):
        P.make_train_pipeline(M.monolingual("yo"), vocab="byte", seq_len=32, global_batch=8, root=str(root),
                              process_index=0, process_count=1, use_cached="auto", cache_dirs=[other_split])


def test_a_cache_of_another_tokenisation_or_format_is_refused(synthetic, tmp_path):
    root, cache_dir = synthetic
    copy = tmp_path / "copy"
    shutil.copytree(os.path.join(cache_dir, "madlad_yo"), copy / "madlad_yo")
    stats_path = copy / "madlad_yo" / "stats.train.json"
    counts = json.loads(stats_path.read_text())
    counts["targets_tokens"] -= 5   # as if documents had been trimmed
    stats_path.write_text(json.dumps(counts))
    with pytest.raises(task_cache.CacheMismatchError, match=r"madlad_yo: its train split holds \d+ tokens "
                                                            r"\(EOS included\) but this run counts U = \d+ for 'yo'"):
        P.make_train_pipeline(M.monolingual("yo"), vocab="byte", seq_len=32, global_batch=8, root=str(root),
                              process_index=0, process_count=1, cache_dirs=[str(copy)])
    shutil.copytree(os.path.join(cache_dir, "madlad_en"), copy / "madlad_en")
    os.remove(copy / "madlad_en" / "train.tfrecord-00001-of-00003")
    with pytest.raises(task_cache.CacheMismatchError, match=r"madlad_en is incomplete: .*train.tfrecord-00001-of-00003"):
        P.make_train_pipeline(M.monolingual("en"), vocab="byte", seq_len=32, global_batch=8, root=str(root),
                              process_index=0, process_count=1, cache_dirs=[str(copy)])
    os.remove(copy / "madlad_yo" / task_cache.MANIFEST)   # e.g. seqio's cache_tasks_main output
    with pytest.raises(task_cache.CacheMismatchError, match=r"has no atlas_cache.json: it was not written by "
                                                            r"python -m atlas_t5x.preprocess.seqio_cache"):
        P.make_train_pipeline(M.monolingual("yo"), vocab="byte", seq_len=32, global_batch=8, root=str(root),
                              process_index=0, process_count=1, cache_dirs=[str(copy)])


@pytest.mark.slow   # ~30 s of process start-ups; the fast samples are the single-process tests above
def test_two_processes_read_the_cache_like_one_streaming_process_and_resume(synthetic, tmp_path):
    root, cache_dir = synthetic
    (ref, ref_meta), = _run(root, tmp_path / "streamed", 1, 10, "--state_at=6", "--use_cached=false")
    two = _run(root, tmp_path / "cached", 2, 10, "--state_at=6", f"--cache_dir={cache_dir}", "--use_cached=true")
    for arrays, meta in two:
        assert sorted(meta["cache_dirs"]) == sorted(SYNTHETIC)
        np.testing.assert_array_equal(arrays["full"], ref["full"])
        assert meta["accounting"] == ref_meta["accounting"] and meta["state"] == ref_meta["state"]
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(two[0][1]["state"]))
    for arrays, _ in _run(root, tmp_path / "resumed", 2, 4, f"--state_in={state_file}",
                          f"--cache_dir={cache_dir}", "--use_cached=true"):
        np.testing.assert_array_equal(arrays["full"], ref["full"][6:])


@pytest.mark.slow   # a ~30 s subprocess; the fast sample is the first test (same format, our pipeline)
def test_seqio_cache_tasks_main_caches_our_tasks(tmp_path):
    """The documented seqio command works on our Tasks and gives the same examples as ours."""
    seqio_dir, ours = str(tmp_path / "seqio"), str(tmp_path / "ours")
    result = subprocess.run(
        [sys.executable, "-m", "seqio.scripts.cache_tasks_main", "--module_import=atlas_t5x_tasks",
         "--tasks=madlad_cy", f"--output_cache_dir={seqio_dir}", "--min_shards=2"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(os.path.join(seqio_dir, "madlad_cy", "COMPLETED"))
    seqio_cache.cache_madlad_tasks([LANG], ours)
    rows = {}
    for name, folder in (("seqio", seqio_dir), ("ours", ours)):
        seqio_cache.register_tasks([LANG], None, "corpus_spm", None)
        seqio.set_global_cache_dirs([folder])
        rows[name] = sorted(token_rows(seqio.get_mixture_or_task("madlad_cy"), "train", True))
    assert rows["seqio"] == rows["ours"] and len(rows["ours"]) > 100
    # the trainer refuses seqio's own cache (documents shuffled across shards), naming the fix
    with pytest.raises(task_cache.CacheMismatchError, match="has no atlas_cache.json"):
        P.make_train_pipeline(M.monolingual(LANG), vocab="corpus_spm", seq_len=32, global_batch=2,
                              process_index=0, process_count=1, cache_dirs=[seqio_dir])


def test_cache_bad_input(tmp_path, capsys):
    with pytest.raises(ValueError, match="xx-not"):
        seqio_cache.cache_madlad_tasks(["xx-not"], str(tmp_path / "c"))
    assert seqio_cache.main(["--languages=cy", f"--cache_dir={tmp_path / 'c'}", "--vocab=nope"]) == 2
    assert seqio_cache.main(["--languages=cy", f"--cache_dir={tmp_path / 'c'}", "--splits=train,dev"]) == 2
    assert "unknown split(s) ['dev']" in capsys.readouterr().err
    assert seqio_cache.main(["--languages=all", f"--root={tmp_path / 'nowhere'}", f"--cache_dir={tmp_path / 'c'}"]) == 2
    assert f"MADLAD root {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "c" / "madlad_cy" / "COMPLETED")
