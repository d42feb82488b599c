"""The seqio cache of the `madlad_{lang}` Tasks as the trainer sees it: manifest, discovery, checks.

Written by `atlas_t5x.preprocess.seqio_cache` (Beam), read by `pipeline.make_train_pipeline`
(`use_cached`). This module imports neither Beam nor the trainer.

A cached Task is seqio's format (`{cache_dir}/madlad_{lang}/{split}.tfrecord-SSSSS-of-NNNNN`,
`info.{split}.json`, `stats.{split}.json`, `COMPLETED`) plus our manifest `atlas_cache.json`,
written just before COMPLETED, which says what the cache was built from:

* layout: output shard k of a split holds the split's documents of source file k (the k-th
  `{lang}_clean_NNNN.jsonl.gz`), in line order, each with its line ("source_line"). With it the
  trainer replays exactly the streamed order (file order per epoch, blocks, seeds and the
  input-shard rule all use (file, line)), so cached and streamed runs give identical batches and
  share one resume state.
* vocabulary (`accounting.vocab_fingerprint`: class, size, SentencePiece model hash), split rule
  and this language's split thresholds, the source files (names, sizes) and the root.

A cache is usable by a run when all of these equal the run's and its train token count equals the
run's U for the language (whole documents: a seqio cache never depends on the sequence length,
seqio forbids sequence-length-dependent steps before `CacheDatasetPlaceholder`; a cache whose
documents were trimmed or tokenised differently fails the count). Anything else is a
`CacheMismatchError` naming the cache folder, the field, and both values.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

MANIFEST = "atlas_cache.json"
FORMAT = "atlas_t5x.seqio_cache"
VERSION = 1
LAYOUT = "split shard k = source file k, documents in line order, with source_line"
BUILD_HINT = "python -m atlas_t5x.preprocess.seqio_cache"


class CacheMismatchError(ValueError):
    """A seqio cache that cannot serve this run (wrong vocabulary, split, files, format)."""


def manifest_for(task) -> dict[str, Any]:
    """The manifest a cache of `task` (a `madlad_{lang}` seqio Task over a MadladSource) must have."""
    from atlas_t5x.data import accounting  # noqa: PLC0415
    from atlas_t5x.data import stats as stats_lib  # noqa: PLC0415

    source = task.source
    return {
        "format": FORMAT,
        "version": VERSION,
        "task": task.name,
        "language": source.lang,
        "root": stats_lib.normalize_root(source.root),
        "vocab": accounting.vocab_fingerprint(task.output_features["targets"].vocabulary),
        "split_rule": stats_lib.split_rule(),
        "split_thresholds": source.thresholds().to_json(),
        "files": [[name, size] for name, size in stats_lib.listed_files(source.root, source.lang)],
        "layout": LAYOUT,
    }


def read_json(path: str) -> dict | None:
    """A JSON file's object, or None if the file does not exist."""
    import tensorflow as tf  # noqa: PLC0415

    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


# fields whose difference makes a cache unusable, with the words an error uses for them
_CHECKED = {
    "format": "format",
    "version": "format version",
    "vocab": "vocabulary",
    "split_rule": "split rule",
    "split_thresholds": "train/validation/test split thresholds",
    "files": "source files (name, bytes)",
    "layout": "layout",
}


def check_cache(task_dir: str, expected: Mapping[str, Any], unique_tokens: int | None = None) -> dict:
    """The cache's manifest if the cache in `task_dir` can serve a run expecting `expected`.

    Raises CacheMismatchError naming `task_dir` and every differing field (saved and expected
    values), a missing manifest (a cache not written by our pipeline, e.g. by seqio's
    cache_tasks_main, whose shards mix source files at random), a missing train split, a shard
    count that is not one per source file, and a train token count that is not `unique_tokens`.
    """
    manifest = read_json(os.path.join(task_dir, MANIFEST))
    if manifest is None:
        raise CacheMismatchError(
            f"seqio cache {task_dir} has no {MANIFEST}: it was not written by {BUILD_HINT} (seqio's "
            f"cache_tasks_main shuffles documents across shards, so the exact training order cannot "
            f"be replayed from it); rebuild it with {BUILD_HINT} --languages={expected['language']} "
            f"--cache_dir={os.path.dirname(task_dir.rstrip('/'))}")
    differing = [field for field in _CHECKED if manifest.get(field) != expected.get(field)]
    if differing:
        details = "; ".join(f"{_CHECKED[f]}: cache has {manifest.get(f)!r}, this run has {expected.get(f)!r}"
                            for f in differing)
        raise CacheMismatchError(f"seqio cache {task_dir} of {expected['task']} was built for another "
                                 f"configuration ({details}); rebuild it ({BUILD_HINT}) into a folder "
                                 f"for this configuration, or train with make_train_pipeline.use_cached=False")
    info = read_json(os.path.join(task_dir, "info.train.json"))
    counts = read_json(os.path.join(task_dir, "stats.train.json"))
    if info is None or counts is None:
        raise CacheMismatchError(f"seqio cache {task_dir} has no train split (info.train.json / "
                                 f"stats.train.json missing)")
    if int(info["num_shards"]) != len(expected["files"]):
        raise CacheMismatchError(f"seqio cache {task_dir}: {info['num_shards']} train shard(s) for "
                                 f"{len(expected['files'])} source file(s); the layout needs one per file")
    import tensorflow as tf  # noqa: PLC0415

    n_files = len(expected["files"])
    present = set(tf.io.gfile.glob(os.path.join(task_dir, f"train.tfrecord-*-of-{n_files:05d}")))
    absent = [path for path in (shard_path(task_dir, "train", k, n_files) for k in range(n_files))
              if path not in present]
    if absent:
        raise CacheMismatchError(f"seqio cache {task_dir} is incomplete: {absent[:3]} "
                                 f"({len(absent)} train shard file(s)) missing")
    cached_tokens = int(counts["targets_tokens"]) + int(counts["examples"])  # + one EOS per document
    if unique_tokens is not None and cached_tokens != int(unique_tokens):
        raise CacheMismatchError(
            f"seqio cache {task_dir}: its train split holds {cached_tokens} tokens (EOS included) but "
            f"this run counts U = {unique_tokens} for {expected['language']!r} (other tokenisation or "
            f"trimmed documents?); rebuild it with {BUILD_HINT}")
    return manifest


def shard_path(task_dir: str, split: str, index: int, num_shards: int) -> str:
    """seqio's name of a cached split's output shard `index` of `num_shards`."""
    return os.path.join(task_dir, f"{split}.tfrecord-{index:05d}-of-{num_shards:05d}")
