"""seqio Tasks `madlad_{lang}`: one per MADLAD-400 language under a root, tokenised for a decoder LM.

Each Task streams `atlas_t5x.data.madlad.MadladSource(lang, root)` (hash splits train /
validation / test; seqio.ShardInfo honoured; no step reads a whole language) and produces one
feature, "targets": the document's text tokenised with the chosen vocabulary (the shipped corpus
SentencePiece model by default), with EOS appended after any trimming to the requested sequence
length, plus "source_line" (the document's line in its shard file: the position the trainer's
exact stream and resume use). A `seqio.CacheDatasetPlaceholder` after tokenisation lets seqio's
`cache_tasks_main` (or the Beam pipeline, `atlas_t5x.preprocess.seqio_cache`) cache the token ids,
one example per document; the trainer reads such a cache (`make_train_pipeline.use_cached`). Any of the MADLAD-400 codes in
`atlas_t5x.languages.LANGUAGES` can be registered for a root that holds it.

`import atlas_t5x_tasks` registers the languages of the root resolved at import time; to use a root bound
later with gin, call `register_madlad_tasks()` (gin-configurable) after parsing the config.
"""

from __future__ import annotations

import functools

import gin
import seqio

from atlas_t5x.data import madlad
from atlas_t5x.data import vocab as vocab_lib

TASK_PREFIX = "madlad_"
SOURCE_LINE = "source_line"  # int64: the document's 0-based line in its shard file (provenance)


def task_name(lang: str) -> str:
    """The seqio Task name of a language, e.g. "madlad_de"."""
    return f"{TASK_PREFIX}{lang}"


def madlad_task(lang: str, root: str | None = None, vocab_name="corpus_spm",
                stats_path: str | None = None, skip_bad_records: bool | None = None) -> seqio.Task:
    """The (unregistered) seqio Task `madlad_{lang}` over `root`.

    `vocab_name`: a name for `vocab.get_vocabulary` or a seqio.Vocabulary. `stats_path`: the
    statistics file giving the split thresholds (None: gin / $MADLAD_STATS / measured).

    Raises ValueError for a code that is not a MADLAD-400 language (naming the nearest codes) and
    madlad.CorpusError if the root has no data for it.
    """
    source = madlad.MadladSource(lang, root, stats_path, skip_bad_records)  # checks code and folder
    vocabulary = vocab_lib.get_vocabulary(vocab_name) if isinstance(vocab_name, str) else vocab_name
    return seqio.Task(
        task_name(source.lang),
        source=source,
        preprocessors=[
            functools.partial(seqio.preprocessors.rekey,
                              key_map={"targets": "text", SOURCE_LINE: "line"}),
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features={"targets": seqio.Feature(vocabulary, add_eos=True)},
    )


def register_madlad_task(lang: str, root: str | None = None, vocab_name="corpus_spm",
                         stats_path: str | None = None) -> str:
    """Registers (or re-registers) `madlad_task(...)` under its name; returns the name."""
    task = madlad_task(lang, root, vocab_name, stats_path)
    if task.name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(task.name)
    seqio.TaskRegistry.add_provider(task.name, task)
    return task.name


@gin.configurable
def register_madlad_tasks(root: str | None = None, languages: tuple[str, ...] | None = None,
                          vocab_name: str = "corpus_spm") -> list[str]:
    """Registers `madlad_{lang}` for `languages` (default: every language under the root)."""
    root = madlad.resolve_madlad_dir(root)
    if languages:
        return [register_madlad_task(lang, root, vocab_name) for lang in languages]
    langs = madlad.available_languages(root)
    for lang in langs:  # a stray folder is named, not just its code
        try:
            madlad.check_language_code(lang)
        except ValueError as err:
            raise madlad.CorpusError(f"folder {root.rstrip('/')}/{lang} under the MADLAD root: {err}") from err
    return [register_madlad_task(lang, root, vocab_name) for lang in langs]
