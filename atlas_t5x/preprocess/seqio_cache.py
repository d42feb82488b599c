r"""Offline seqio cache of the `madlad_{lang}` Tasks, in seqio's own cache format, on Apache Beam.

  python -m atlas_t5x.preprocess.seqio_cache --languages=yo,cy --cache_dir=gs://B/seqio_cache \
      [--root=gs://B/madlad --vocab=gs://B/spm64k.model --stats=gs://B/madlad_stats.json] [Beam flags]

What is cached: each Task's examples at its `seqio.CacheDatasetPlaceholder` (tasks/madlad.py),
i.e. one example per document with "targets" = token ids WITHOUT EOS (+ "targets_pretokenized"),
per split. The trainer and any seqio user then read them with `use_cached=True` after
`seqio.add_global_cache_dirs([cache_dir])`; EOS and trimming are applied after the cache as before,
so token counts, per-language accounting and U are unchanged.

Layout (seqio's, read by seqio's `_CachedDataSource`):
  {cache_dir}/{task}/{split}.tfrecord-SSSSS-of-NNNNN   tf.Example records
  {cache_dir}/{task}/info.{split}.json                 num_shards and feature shapes / dtypes
  {cache_dir}/{task}/stats.{split}.json                examples, targets_tokens (no EOS), max
  {cache_dir}/{task}/COMPLETED                         written last: the cache is usable

The same files as `python -m seqio.scripts.cache_tasks_main --module_import=tasks
--tasks=madlad_yo --output_cache_dir=DIR`, with one difference [our choice]: seqio shuffles
examples into output shards at random, this pipeline puts source document (file f, line i) of a
split into output shard (f + i) mod N, in (f, i) order within a shard. The cache is then a pure
function of the corpus (byte-identical on every rerun and runner), so a run reading it with
shuffle off, and its resume, see the same order whoever built the cache. An existing COMPLETED
cache is reused.

When to cache: large studies and many runs over the same data and vocabulary (the sweeps), where
tokenising on the fly costs more host CPU than the accelerators allow; not for one short run.
Storage: a tf.Example keeps the ids as varint int64 (2-3 bytes each for a 64k vocabulary) and
the pretokenised text (~4 bytes per token on web text): ~7 bytes per token, ~5x the gzip source,
i.e. ≈ 20 TB for the ~3T-token MADLAD-400 clean split. Measured on the embedded corpus's "cy"
(8k vocabulary, 2.4 text bytes per token): 4.7 bytes per token, 6.1x its gzip shard.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any, Sequence

import apache_beam as beam

from atlas_t5x.preprocess import beam_runtime
from atlas_t5x.preprocess.beam_runtime import PreprocessError

_SHARD_INDEX = "provenance/source_shard_index"
_INDEX_IN_SHARD = "provenance/index_within_shard"
_PROVENANCE = "provenance/"


def register_tasks(languages: Sequence[str], root: str | None, vocab_name: str,
                   stats_path: str | None) -> list[str]:
    """Registers `madlad_{lang}` for the languages over `root` (also run on every worker)."""
    import tasks  # noqa: PLC0415  (registers the default root's tasks; we re-register ours)

    return [tasks.register_madlad_task(lang, root, vocab_name, stats_path) for lang in languages]


def task_cache_dir(cache_dir: str, task_name: str) -> str:
    """Where seqio looks for a Task's cache under a global cache folder."""
    import seqio  # noqa: PLC0415

    return os.path.join(cache_dir, seqio.get_task_dir_from_name(task_name))


class _KeyedExamples(beam.DoFn):
    """(output shard, ((source file index, line index), numpy example without provenance))."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(self, example: dict[str, Any]):
        file_index = int(example[_SHARD_INDEX])
        index = int(example[_INDEX_IN_SHARD])
        clean = {k: (v.numpy() if hasattr(v, "numpy") else v)
                 for k, v in example.items() if not k.startswith(_PROVENANCE)}
        yield (file_index + index) % self._num_shards, ((file_index, index), clean)


def _write_tfrecord_shard(group: tuple[int, Any], prefix: str, num_shards: int) -> int:
    import seqio  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    shard, rows = group
    path = f"{prefix}-{shard:05d}-of-{num_shards:05d}"
    count = 0
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for _, example in sorted((row for row in rows if row is not None), key=lambda row: row[0]):
            writer.write(seqio.dict_to_tfexample(example).SerializeToString())
            count += 1
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return count


def _write_json(value: dict, path: str, *_waits) -> None:
    from atlas_t5x import logio  # noqa: PLC0415

    logio.write_atomic(path, json.dumps(value, indent=2, sort_keys=True))


def build_cache(pipeline: beam.Pipeline, task_names: Sequence[str], cache_dir: str,
                num_shards: int, setup_fn) -> None:
    """Adds, per Task and split: preprocess, deterministic shard write, info, stats, COMPLETED."""
    import seqio  # noqa: PLC0415
    from seqio import beam_utils  # noqa: PLC0415

    for name in task_names:
        task = seqio.TaskRegistry.get(name)
        out = task_cache_dir(cache_dir, name)
        done = []
        for split in task.splits:
            label = f"{name}_{split}"
            keyed = (pipeline
                     | f"{label}_preprocess" >> beam_utils.PreprocessTask(task, split, setup_fn=setup_fn,
                                                                          add_provenance=True)
                     | f"{label}_key" >> beam.ParDo(_KeyedExamples(num_shards)))
            examples = keyed | f"{label}_values" >> beam.Map(lambda kv: kv[1][1])
            markers = pipeline | f"{label}_all_shards" >> beam.Create([(i, None) for i in range(num_shards)])
            written = ((keyed, markers) | f"{label}_with_empty" >> beam.Flatten()
                       | f"{label}_by_shard" >> beam.GroupByKey()
                       | f"{label}_write" >> beam.Map(
                           _write_tfrecord_shard, prefix=seqio.get_cached_tfrecord_prefix(out, split),
                           num_shards=num_shards))
            info = (examples | f"{label}_info" >> beam_utils.GetInfo(num_shards)
                    | f"{label}_write_info" >> beam.Map(
                        _write_json, path=seqio.get_cached_info_path(out, split)))
            stats = (examples | f"{label}_stats" >> beam_utils.GetStats(task.output_features)
                     | f"{label}_write_stats" >> beam.Map(
                         _write_json, path=seqio.get_cached_stats_path(out, split)))
            done += [written, info, stats]
        _ = (pipeline | f"{name}_completed" >> beam.Create([{}])
             | f"{name}_write_completed" >> beam.Map(
                 _write_json, os.path.join(out, "COMPLETED"),
                 *[beam.pvalue.AsList(pc) for pc in done]))


def cache_madlad_tasks(languages: Sequence[str], cache_dir: str, root: str | None = None,
                       vocab_name: str = "corpus_spm", stats_path: str | None = None,
                       beam_args: Sequence[str] = (), num_shards: int = 16) -> dict[str, bool]:
    """Caches `madlad_{lang}` for `languages` under `cache_dir`; {task: True if built, False if reused}.

    Raises the data layer's bad-input errors (unknown code, missing folder, bad vocabulary) before
    any work, and PreprocessError for a corrupt shard met by a worker (no COMPLETED is written).
    """
    import tensorflow as tf  # noqa: PLC0415

    if num_shards <= 0:
        raise PreprocessError(f"--num_shards must be > 0, got {num_shards}")
    names = register_tasks(languages, root, vocab_name, stats_path)
    todo = [n for n in names if not tf.io.gfile.exists(os.path.join(task_cache_dir(cache_dir, n), "COMPLETED"))]
    for name in todo:   # leftovers of an interrupted build (no COMPLETED) are replaced
        if tf.io.gfile.exists(task_cache_dir(cache_dir, name)):
            tf.io.gfile.rmtree(task_cache_dir(cache_dir, name))
        tf.io.gfile.makedirs(task_cache_dir(cache_dir, name))
    if todo:
        setup_fn = functools.partial(register_tasks, list(languages), root, vocab_name, stats_path)
        beam_runtime.run(lambda p: build_cache(p, todo, cache_dir, num_shards, setup_fn),
                         beam_runtime.pipeline_options(beam_args))
    return {name: name in todo for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", required=True, help="comma-separated codes")
    parser.add_argument("--cache_dir", required=True, help="global seqio cache folder (local or gs://)")
    parser.add_argument("--root", default=None, help="MADLAD root (default: $MADLAD_DIR or the embedded corpus)")
    parser.add_argument("--vocab", default="corpus_spm", help='"corpus_spm", "byte" or a .model path')
    parser.add_argument("--stats", default=None, help="statistics file for the split thresholds")
    parser.add_argument("--num_shards", type=int, default=16, help="output TFRecord files per split")
    args, beam_args = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    try:
        built = cache_madlad_tasks(languages, args.cache_dir, args.root, args.vocab, args.stats,
                                   beam_args, args.num_shards)
    except (ValueError, FileNotFoundError) as err:
        print(f"seqio_cache: error: {err}", file=sys.stderr)
        return 2
    for name, fresh in built.items():
        print(f"{name}: {'cached' if fresh else 'already cached, reused'} in {task_cache_dir(args.cache_dir, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
