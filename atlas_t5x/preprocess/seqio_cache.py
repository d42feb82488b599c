r"""Offline seqio cache of the `madlad_{lang}` Tasks, in seqio's own cache format, on Apache Beam.

  python -m atlas_t5x.preprocess.seqio_cache --languages=yo,cy --cache_dir=gs://B/seqio_cache/spm64k \
      [--root=gs://B/madlad --vocab=gs://B/spm64k.model --stats=gs://B/madlad_stats.json] \
      [--splits=train] [--keep_text] [Beam flags]      (--languages=all: every language of the root)

What is cached: each Task's examples at its `seqio.CacheDatasetPlaceholder` (tasks/madlad.py),
one example per document: "targets" = token ids WITHOUT EOS and "source_line" = its line in its
shard file (+ "targets_pretokenized", the text, with --keep_text), per split. The trainer reads
the cache by itself (`make_train_pipeline.use_cached`, data/pipeline.py) and seqio users with
`use_cached=True` after `seqio.add_global_cache_dirs([cache_dir])`; EOS and trimming are applied
after the cache as before, so token counts, per-language accounting and U are unchanged.

Layout (seqio's, read by seqio's `_CachedDataSource`):
  {cache_dir}/{task}/{split}.tfrecord-SSSSS-of-NNNNN   tf.Example records
  {cache_dir}/{task}/info.{split}.json                 num_shards and feature shapes / dtypes
  {cache_dir}/{task}/stats.{split}.json                examples, targets_tokens (no EOS), max
  {cache_dir}/{task}/atlas_cache.json                  what it was built from (data/task_cache.py)
  {cache_dir}/{task}/COMPLETED                         written last: the cache is usable

The same files as `python -m seqio.scripts.cache_tasks_main --module_import=atlas_t5x_tasks
--tasks=madlad_yo --output_cache_dir=DIR`, with one difference [our choice]: seqio shuffles
examples into output shards at random; here output shard k of a split holds source file k's
documents of that split in line order (N = the number of source files). The cache is then a pure
function of the corpus (byte-identical on every rerun and runner), and the trainer can replay
from it exactly the order it streams (data/task_cache.py). An existing COMPLETED cache is reused
if its manifest matches (vocabulary, split rule and thresholds, source files), else refused.

When to cache and what it costs: README "Preprocessing at MADLAD scale". Measured on the embedded
corpus (8k vocabulary): 2.30 bytes per token without the text (1.95 bytes of varint per id plus
~63 bytes per document), 5.66 with --keep_text; ≈ 7–10 TB for the ~3T-token clean split with a
64k vocabulary (ids ≥ 16,384 take 3 bytes).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any, Sequence

import apache_beam as beam

from atlas_t5x.data import madlad, task_cache
from atlas_t5x.preprocess import beam_runtime
from atlas_t5x.preprocess.beam_runtime import PreprocessError

_SHARD_INDEX = "provenance/source_shard_index"
_INDEX_IN_SHARD = "provenance/index_within_shard"
_PROVENANCE = "provenance/"


def register_tasks(languages: Sequence[str], root: str | None, vocab_name: str,
                   stats_path: str | None) -> list[str]:
    """Registers `madlad_{lang}` for the languages over `root` (also run on every worker)."""
    import atlas_t5x_tasks as tasks  # noqa: PLC0415  (registers the default root's tasks; we re-register ours)

    return [tasks.register_madlad_task(lang, root, vocab_name, stats_path) for lang in languages]


def task_cache_dir(cache_dir: str, task_name: str) -> str:
    """Where seqio looks for a Task's cache under a global cache folder."""
    import seqio  # noqa: PLC0415

    return os.path.join(cache_dir, seqio.get_task_dir_from_name(task_name))


class _KeyedExamples(beam.DoFn):
    """(source file index, (index within that file's split, numpy example without provenance))."""

    def __init__(self, keep_text: bool):
        self._keep_text = keep_text

    def process(self, example: dict[str, Any]):
        clean = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in example.items()
                 if not k.startswith(_PROVENANCE) and (self._keep_text or not k.endswith("_pretokenized"))}
        yield int(example[_SHARD_INDEX]), (int(example[_INDEX_IN_SHARD]), clean)


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


def _write_completed(_, task_dir: str, manifest: dict, *_waits) -> None:
    _write_json(manifest, os.path.join(task_dir, task_cache.MANIFEST))
    _write_json({}, os.path.join(task_dir, "COMPLETED"))


def build_cache(pipeline: beam.Pipeline, task_names: Sequence[str], cache_dir: str, setup_fn,
                keep_text: bool = False, splits: Sequence[str] | None = None) -> None:
    """Adds, per Task and split: preprocess, one output shard per source file, info, stats; then
    the manifest and COMPLETED."""
    import seqio  # noqa: PLC0415
    from seqio import beam_utils  # noqa: PLC0415

    for name in task_names:
        task = seqio.TaskRegistry.get(name)
        out = task_cache_dir(cache_dir, name)
        done = []
        for split in splits or task.splits:
            label = f"{name}_{split}"
            num_shards = len(task.source.list_shards(split))
            keyed = (pipeline
                     | f"{label}_preprocess" >> beam_utils.PreprocessTask(task, split, setup_fn=setup_fn,
                                                                          add_provenance=True)
                     | f"{label}_key" >> beam.ParDo(_KeyedExamples(keep_text)))
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
                 _write_completed, out, task_cache.manifest_for(task),
                 *[beam.pvalue.AsList(pc) for pc in done]))


def cache_madlad_tasks(languages: Sequence[str], cache_dir: str, root: str | None = None,
                       vocab_name: str = "corpus_spm", stats_path: str | None = None,
                       beam_args: Sequence[str] = (), keep_text: bool = False,
                       splits: Sequence[str] | None = None) -> dict[str, bool]:
    """Caches `madlad_{lang}` for `languages` under `cache_dir`; {task: True if built, False if reused}.

    `keep_text`: also store each document's text ("targets_pretokenized", as seqio's
    cache_tasks_main does); the trainer does not need it and it more than doubles the cache.
    `splits`: the splits to cache (default all three; the trainer reads only "train").

    Raises the data layer's bad-input errors (unknown code, missing folder, bad vocabulary) before
    any work, PreprocessError for a COMPLETED cache there built for another vocabulary, split or
    corpus (naming it; nothing is overwritten) and for a corrupt shard met by a worker (no
    COMPLETED is written).
    """
    import seqio  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    unknown = sorted(set(splits or ()) - set(madlad.SPLITS))
    if unknown:
        raise PreprocessError(f"unknown split(s) {unknown}; expected some of {list(madlad.SPLITS)}")
    names = register_tasks(languages, root, vocab_name, stats_path)
    todo = []
    for name in names:
        folder = task_cache_dir(cache_dir, name)
        if tf.io.gfile.exists(os.path.join(folder, "COMPLETED")):
            try:
                task_cache.check_cache(folder, task_cache.manifest_for(seqio.TaskRegistry.get(name)))
            except task_cache.CacheMismatchError as err:
                raise PreprocessError(f"{err}; not overwritten: remove it or choose another --cache_dir") from err
            continue
        todo.append(name)
        if tf.io.gfile.exists(folder):  # leftovers of an interrupted build (no COMPLETED) are replaced
            tf.io.gfile.rmtree(folder)
        tf.io.gfile.makedirs(folder)
    if todo:
        setup_fn = functools.partial(register_tasks, list(languages), root, vocab_name, stats_path)
        beam_runtime.run(lambda p: build_cache(p, todo, cache_dir, setup_fn, keep_text, splits),
                         beam_runtime.pipeline_options(beam_args))
    return {name: name in todo for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", required=True,
                        help='comma-separated codes, or "all": every language under the root')
    parser.add_argument("--cache_dir", required=True, help="global seqio cache folder (local or gs://)")
    parser.add_argument("--root", default=None, help="MADLAD root (default: $MADLAD_DIR or the embedded corpus)")
    parser.add_argument("--vocab", default="corpus_spm", help='"corpus_spm", "byte" or a .model path')
    parser.add_argument("--stats", default=None, help="statistics file for the split thresholds")
    parser.add_argument("--splits", default=",".join(madlad.SPLITS),
                        help="comma-separated splits to cache (the trainer reads only train)")
    parser.add_argument("--keep_text", action="store_true",
                        help="also store each document's text (targets_pretokenized); the trainer does not need it")
    args, beam_args = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    if languages == ["all"]:
        try:
            languages = madlad.available_languages(args.root)
        except (ValueError, FileNotFoundError) as err:
            print(f"seqio_cache: error: {err}", file=sys.stderr)
            return 2
    if not languages:
        print(f"seqio_cache: error: --languages={args.languages!r} names no language", file=sys.stderr)
        return 2
    try:
        built = cache_madlad_tasks(languages, args.cache_dir, args.root, args.vocab, args.stats,
                                   beam_args, args.keep_text,
                                   [split.strip() for split in args.splits.split(",") if split.strip()])
    except (ValueError, FileNotFoundError) as err:
        print(f"seqio_cache: error: {err}", file=sys.stderr)
        return 2
    for name, fresh in built.items():
        print(f"{name}: {'cached' if fresh else 'already cached, reused'} in {task_cache_dir(args.cache_dir, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
