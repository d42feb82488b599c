"""The per-language statistics file of a MADLAD-layout root, computed on Apache Beam.

Same numbers, same file as the single-process `atlas_t5x.data.stats.compute_stats`: both call the
data layer's per-document primitives (`size_counts`, `thresholds_for`, `split_of`,
`document_counts`, `merge_counts`, `language_entry`) and its writer, so the two files are equal
byte for byte. The pipeline mirrors the two streaming passes of the single-process path, with one
shard file as the unit of parallel work:

  pass 1  shard -> (language, documents and UTF-8 bytes, bad records)  summed per language
          -> the language's split thresholds (a side input of pass 2; no vocabulary needed)
  pass 2  shard -> ((language, split), documents, bytes, tokens + 1 EOS per document)  summed
  join    per language: `language_entry(files, size, splits, bad_records)`
  write   every entry (plus those reused from an existing file) in one atomic write at the end.

Each pass reads the shards once (gzip JSON lines, through tf.io.gfile: local or gs://), so the
text is never materialised between stages; pass 2 holds one vocabulary per worker.

Before any work the driver checks the input (`plan_statistics`): a root without language folders,
an unknown language code or vocabulary, or an output file that holds statistics for another root,
vocabulary or split rule is a PreprocessError / StatsError naming it. A language already in the
output file with an unchanged shard list (names and sizes) is reused, not recounted; a rerun over
an unchanged root runs no pipeline at all.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import apache_beam as beam

from atlas_t5x.data import madlad
from atlas_t5x.data import stats as stats_lib
from atlas_t5x.data import vocab as vocab_lib
from atlas_t5x.preprocess import beam_runtime
from atlas_t5x.preprocess.beam_runtime import PreprocessError

Counts = stats_lib.Counts


@dataclasses.dataclass(frozen=True)
class StatisticsPlan:
    """What a statistics run reads and writes, checked on the driver before the pipeline starts.

    Attributes:
      root: the MADLAD-layout root (local folder or URL).
      vocab_name: "corpus_spm", "byte" or a SentencePiece .model path (loaded once per worker).
      out: the statistics file to write.
      todo: languages to count, with their sorted shard paths.
      files: (shard name, size in bytes) per language in `todo`, as the file records them.
      base: the statistics document the new entries are added to (an existing file's reused
        entries, or an empty document for this root and vocabulary).
      reused: languages taken unchanged from the existing file.
    """

    root: str
    vocab_name: str
    out: str
    todo: dict[str, list[str]]
    files: dict[str, list[tuple[str, int]]]
    base: dict[str, Any]
    reused: list[str]


def resolve_languages(root: str, languages: Sequence[str] | None) -> list[str]:
    """The languages to process: the given codes (checked), else every language folder of `root`.

    PreprocessError if the root has no language folders; ValueError naming the nearest codes for
    an unknown code (also for a folder under the root whose name is not a MADLAD-400 code).
    """
    if languages:
        return [madlad.check_language_code(lang) for lang in languages]
    found = madlad.available_languages(root)
    if not found:
        raise PreprocessError(f"MADLAD root {root} holds no language folders "
                              "({lang}/{lang}_clean_NNNN.jsonl.gz)")
    for lang in found:
        try:
            madlad.check_language_code(lang)
        except ValueError as err:
            raise PreprocessError(f"folder {root.rstrip('/')}/{lang} under the MADLAD root: {err}") from err
    return found


def plan_statistics(root: str, languages: Sequence[str] | None, vocab_name: str, out: str) -> StatisticsPlan:
    """Checks the input and decides what to count (see the module docstring).

    Raises PreprocessError / CorpusError / StatsError / ValueError / FileNotFoundError (all bad
    input) naming the root, language folder, vocabulary or output file.
    """
    langs = resolve_languages(root, languages)
    vocab_id = stats_lib._vocab_id(vocab_name)  # noqa: SLF001  (the file's vocabulary id, as documented)
    existing = stats_lib.read_stats(out)
    if existing is None:
        base = stats_lib.new_stats(root, vocab_id)
    else:
        stats_lib.check_stats_for(existing, out, root, vocab_id)
        base = existing
    todo, files, reused = {}, {}, []
    for lang in langs:
        listed = stats_lib.listed_files(root, lang)
        entry = base["languages"].get(lang)
        if entry is not None and [(n, int(s)) for n, s in entry["files"]] == listed:
            reused.append(lang)
            continue
        todo[lang] = madlad.shard_paths(root, lang)
        files[lang] = listed
    return StatisticsPlan(root, vocab_name, out, todo, files, base, reused)


def _sum_sizes(values: Iterable[tuple[Counts, int]]) -> tuple[Counts, int]:
    size, bad = Counts(), 0
    for counts, skipped in values:
        size, bad = size + counts, bad + skipped
    return size, bad


class _ShardSizes(beam.DoFn):
    """Pass 1: (language, (documents and bytes of one shard, bad records skipped))."""

    def __init__(self, skip_bad_records: bool):
        self._skip = skip_bad_records

    def process(self, shard: tuple[str, str]):
        lang, path = shard
        bad = madlad.BadRecords()
        size = stats_lib.merge_counts(stats_lib.size_counts(text)
                                      for _, text in madlad.iter_shard(path, self._skip, bad))
        yield lang, (size, bad.total)


class _ShardSplitCounts(beam.DoFn):
    """Pass 2: ((language, split), documents, bytes and tokens of one shard's split)."""

    def __init__(self, vocab_name: str, skip_bad_records: bool):
        self._vocab_name = vocab_name
        self._skip = skip_bad_records
        self._vocab = None

    def setup(self):
        self._vocab = vocab_lib.get_vocabulary(self._vocab_name)

    def process(self, shard: tuple[str, str], sizes: Mapping[str, tuple[Counts, int]]):
        lang, path = shard
        thresholds = None   # a language without text fails in the join, naming it
        by_split: dict[str, Counts] = {}
        for _, text in madlad.iter_shard(path, self._skip, madlad.BadRecords()):
            thresholds = thresholds or stats_lib.thresholds_for(sizes[lang][0].bytes)
            split = stats_lib.split_of(text, thresholds)
            by_split[split] = by_split.get(split, Counts()) + stats_lib.document_counts(text, self._vocab)
        for split, counts in by_split.items():
            yield (lang, split), counts


def _language_entry(joined: tuple[str, dict], files: Mapping[str, list[tuple[str, int]]],
                    root: str) -> tuple[str, dict]:
    lang, groups = joined
    (size, bad), = list(groups["sizes"])
    if size.documents == 0:
        raise madlad.CorpusError(f"language {lang!r}: shards under {root.rstrip('/')}/{lang} hold no documents")
    splits = dict(groups["splits"])
    return lang, stats_lib.language_entry(files[lang], size, splits, bad)


def _write_statistics(entries: list[tuple[str, dict]], out: str, base: Mapping[str, Any]) -> str:
    doc = dict(base)
    doc["languages"] = {**base["languages"], **dict(entries)}
    stats_lib.write_stats(out, doc)
    return out


class LanguageStatistics(beam.PTransform):
    """PCollection of (language, statistics entry) for the languages of a plan (see module doc)."""

    def __init__(self, plan: StatisticsPlan, skip_bad_records: bool = False):
        super().__init__()
        self._plan = plan
        self._skip = skip_bad_records

    def expand(self, pipeline):
        plan = self._plan
        shards = [(lang, path) for lang, paths in sorted(plan.todo.items()) for path in paths]
        # Reshuffle spreads the shard list over the workers (Create alone is one bundle).
        shards = pipeline | "ListShards" >> beam.Create(shards) | "SpreadShards" >> beam.Reshuffle()
        sizes = (shards
                 | "Pass1Sizes" >> beam.ParDo(_ShardSizes(self._skip))
                 | "SumSizes" >> beam.CombinePerKey(_sum_sizes))
        splits = (shards
                  | "Pass2SplitCounts" >> beam.ParDo(_ShardSplitCounts(plan.vocab_name, self._skip),
                                                     sizes=beam.pvalue.AsDict(sizes))
                  | "SumSplits" >> beam.CombinePerKey(stats_lib.merge_counts)
                  | "ByLanguage" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1]))))
        return ({"sizes": sizes, "splits": splits}
                | "Join" >> beam.CoGroupByKey()
                | "Entry" >> beam.Map(_language_entry, files=plan.files, root=plan.root))


def build_statistics(pipeline: beam.Pipeline, plan: StatisticsPlan, skip_bad_records: bool = False):
    """Adds the statistics pipeline for `plan` to `pipeline`: counts, then one atomic write."""
    return (pipeline
            | "Statistics" >> LanguageStatistics(plan, skip_bad_records)
            | "AllLanguages" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_statistics, out=plan.out, base=plan.base))


def run_statistics(root: str | None, languages: Sequence[str] | None, vocab_name: str, out: str,
                   beam_args: Sequence[str] = (), skip_bad_records: bool = False) -> StatisticsPlan:
    """Checks the input, runs the pipeline if anything needs counting, and returns the plan.

    The statistics file at `out` then lists every language of the plan (counted or reused).
    Raises the bad-input errors of `plan_statistics`, and PreprocessError for a corrupt shard or
    an empty language found by the workers (nothing is written then).
    """
    root = madlad.resolve_madlad_dir(root)
    plan = plan_statistics(root, languages, vocab_name, out)
    if plan.todo:
        beam_runtime.run(lambda p: build_statistics(p, plan, skip_bad_records),
                         beam_runtime.pipeline_options(beam_args))
    return plan
