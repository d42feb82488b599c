"""seqio cache of the madlad_{lang} Tasks (atlas_t5x/preprocess/seqio_cache.py and seqio's own
cache_tasks_main): seqio's cache format, read back with use_cached=True with the same tokens, and the
cache's counts agree with the statistics file (exact per-language accounting)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

pytest.importorskip("apache_beam")

import seqio  # noqa: E402

from atlas_t5x.data import madlad  # noqa: E402
from atlas_t5x.data import stats as stats_lib  # noqa: E402
from atlas_t5x.preprocess import seqio_cache  # noqa: E402

LANG = "cy"   # the embedded corpus's smallest language: 163 documents


@pytest.fixture
def global_cache_dirs():
    """Restores seqio's global cache folders and re-registers the Task (it memoises its cache)."""
    saved = list(seqio.get_global_cache_dirs())
    yield
    seqio.set_global_cache_dirs(saved)
    seqio_cache.register_tasks([LANG], None, "corpus_spm", None)


def token_rows(task, split, use_cached):
    ds = task.get_dataset(None, split=split, use_cached=use_cached, shuffle=False)
    return [tuple(ex["targets"].tolist()) for ex in ds.as_numpy_iterator()]


def test_cached_task_reads_the_same_tokens_and_matches_the_statistics(tmp_path, global_cache_dirs):
    cache_dir = str(tmp_path / "cache")
    built = seqio_cache.cache_madlad_tasks([LANG], cache_dir, num_shards=3)
    assert built == {"madlad_cy": True}
    task_dir = os.path.join(cache_dir, "madlad_cy")
    names = sorted(os.listdir(task_dir))
    assert "COMPLETED" in names and "info.train.json" in names and "stats.test.json" in names
    assert [n for n in names if n.startswith("train.tfrecord")] == [
        f"train.tfrecord-0000{i}-of-00003" for i in range(3)]

    seqio.add_global_cache_dirs([cache_dir])
    task = seqio.get_mixture_or_task("madlad_cy")
    assert task.cache_dir == task_dir
    stats = stats_lib.compute_language_stats(madlad.EMBEDDED_CORPUS_DIR, LANG, "corpus_spm")
    for split in madlad.SPLITS:
        cached, streamed = token_rows(task, split, True), token_rows(task, split, False)
        assert sorted(cached) == sorted(streamed) and len(cached) > 0
        # the cache holds ids without EOS; the Task appends it after the cache point
        assert all(row[-1] == 1 for row in cached)
        counts = task.get_cached_stats(split)
        assert counts["examples"] == stats["splits"][split]["documents"]
        assert counts["targets_tokens"] + counts["examples"] == stats["splits"][split]["tokens"]

    # a rerun reuses the cache; a second build elsewhere (two workers) is byte-identical
    assert seqio_cache.cache_madlad_tasks([LANG], cache_dir, num_shards=3) == {"madlad_cy": False}
    again = str(tmp_path / "again")
    seqio_cache.cache_madlad_tasks([LANG], again, num_shards=3,
                                   beam_args=["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    for path in sorted(glob.glob(os.path.join(task_dir, "*.tfrecord-*"))):
        with open(path, "rb") as a, open(os.path.join(again, "madlad_cy", os.path.basename(path)), "rb") as b:
            assert a.read() == b.read(), path


@pytest.mark.slow   # a ~30 s subprocess; the fast sample is the test above (same format, our pipeline)
def test_seqio_cache_tasks_main_caches_our_tasks(tmp_path, global_cache_dirs):
    """The documented seqio command works on our Tasks and gives the same examples as ours."""
    seqio_dir, ours = str(tmp_path / "seqio"), str(tmp_path / "ours")
    result = subprocess.run(
        [sys.executable, "-m", "seqio.scripts.cache_tasks_main", "--module_import=tasks",
         "--tasks=madlad_cy", f"--output_cache_dir={seqio_dir}", "--min_shards=2"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(os.path.join(seqio_dir, "madlad_cy", "COMPLETED"))
    seqio_cache.cache_madlad_tasks([LANG], ours, num_shards=2)
    rows = {}
    for name, folder in (("seqio", seqio_dir), ("ours", ours)):
        seqio_cache.register_tasks([LANG], None, "corpus_spm", None)
        seqio.set_global_cache_dirs([folder])
        rows[name] = sorted(token_rows(seqio.get_mixture_or_task("madlad_cy"), "train", True))
    assert rows["seqio"] == rows["ours"] and len(rows["ours"]) > 100


def test_cache_bad_input(tmp_path):
    with pytest.raises(ValueError, match="xx-not"):
        seqio_cache.cache_madlad_tasks(["xx-not"], str(tmp_path / "c"))
    assert seqio_cache.main(["--languages=cy", f"--cache_dir={tmp_path / 'c'}", "--vocab=nope"]) == 2
    assert not os.path.exists(tmp_path / "c" / "madlad_cy" / "COMPLETED")
