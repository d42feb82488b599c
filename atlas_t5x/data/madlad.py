"""MADLAD-400 layout reader: streamed shards, hash splits, and a streaming seqio data source.

Layout (the public release, "clean" portion): `{root}/{lang}/{lang}_clean_{shard:04d}.jsonl.gz`,
one JSON object per line with a string field "text". Files are streamed line by line through
`tf.io.gfile` (local folder or `gs://` alike); nothing reads a whole language into memory. The
root is, in order: an explicit `root` argument, the gin binding `resolve_madlad_dir.root`,
$MADLAD_DIR, else the embedded corpus (`EMBEDDED_CORPUS_DIR`, built by scripts/build_corpus.py,
same layout, read through the same code).

Splits: each document is assigned on its own by a salted hash of its text against per-language
thresholds (`stats.split_of`; the rule and its constants are documented in atlas_t5x/data/stats.py:
test = min(20M tokens, 20%), validation = min(5M tokens, 10%), in expectation). The thresholds
come from the language's total text bytes, looked up in this order (`language_thresholds`):
  1. the statistics file (`resolve_stats_path`: gin `resolve_stats_path.path`, $MADLAD_STATS), when
     it describes this root and lists the language; a language whose shard list or sizes differ
     from the file is an error naming it (never a silently different split);
  2. a language whose shards total at most `MEASURE_LIMIT_BYTES` of gzip is measured now, by one
     streaming pass (exactly what the statistics file would say);
  3. otherwise the listed-size fallback: text bytes estimated as gzip bytes × GZIP_TEXT_RATIO,
     stated in the log (a WARNING) [our choice; MADLAD's card publishes document counts, not text
     bytes per language, so no published table is shipped].

Bad records: a corrupt gzip stream or a line that is not a JSON object with a string "text" is a
CorpusError naming the file and line. With `skip_bad_records=True` such lines are skipped (a
corrupt gzip stream skips the rest of its file) and counted per language (`BadRecords`, logged).
"""

from __future__ import annotations

import collections
import functools
import gzip
import json
import logging
import os
import re
import zlib
from typing import Iterator, Sequence

import gin
import seqio
import tensorflow as tf

from atlas_t5x import languages
from atlas_t5x.data import stats as stats_lib
from atlas_t5x.data.stats import (BYTES_PER_TOKEN, SPLIT_SALT, SPLITS, TEST_FRACTION,  # noqa: F401
                                  TEST_MAX_TOKENS, VALIDATION_FRACTION, VALIDATION_MAX_TOKENS,
                                  SplitThresholds)

EMBEDDED_CORPUS_DIR: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MADLAD_DIR_ENV = "MADLAD_DIR"
MADLAD_STATS_ENV = "MADLAD_STATS"
MEASURE_LIMIT_BYTES = 256 * 2**20   # [our choice] measure languages up to 256 MiB of gzip on the fly
GZIP_TEXT_RATIO = 3.0               # [our choice] text bytes per gzip byte, listed-size fallback

_SHARD_RE = re.compile(r"^(?P<lang>.+)_clean_(?P<shard>\d{4})\.jsonl\.gz$")


class CorpusError(ValueError):
    """A MADLAD root, language folder or corpus file that cannot be used as it is."""


@gin.configurable("resolve_madlad_dir")
def configured_madlad_dir(root: str | None = None) -> str | None:
    """The gin seam for the MADLAD root: `resolve_madlad_dir.root = "gs://bucket/madlad"`.

    Kept apart from `resolve_madlad_dir` because callers pass `root=None` explicitly, and an
    explicit argument would override a gin binding of the function they call.
    """
    return root


def resolve_madlad_dir(root: str | None = None) -> str:
    """The MADLAD root to read: `root` if given, else the gin binding `resolve_madlad_dir.root`,
    else $MADLAD_DIR, else the embedded corpus."""
    if root:
        return str(root)
    return configured_madlad_dir() or os.environ.get(MADLAD_DIR_ENV) or EMBEDDED_CORPUS_DIR


@gin.configurable("resolve_stats_path")
def configured_stats_path(path: str | None = None) -> str | None:
    """The gin seam for the statistics file: `resolve_stats_path.path = "gs://bucket/stats.json"`."""
    return path


def resolve_stats_path(path: str | None = None) -> str | None:
    """The statistics file to use: `path`, else gin `resolve_stats_path.path`, else $MADLAD_STATS."""
    return path or configured_stats_path() or os.environ.get(MADLAD_STATS_ENV) or None


def check_language_code(lang: str) -> str:
    """The MADLAD-400 code for `lang` (aliases such as pt_BR resolve to pt); ValueError naming the
    nearest valid codes if there is none (atlas_t5x.languages.resolve_language)."""
    return languages.resolve_language(lang).code


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def shard_paths(root: str, lang: str) -> list[str]:
    """Sorted shard files of one language; CorpusError naming the folder if it has none."""
    lang_dir = _join(root, lang)
    if not tf.io.gfile.isdir(lang_dir):
        raise CorpusError(f"language {lang!r}: folder {lang_dir} does not exist under MADLAD root {root}")
    names = sorted(n for n in tf.io.gfile.listdir(lang_dir)
                   if (m := _SHARD_RE.match(n.rstrip("/"))) and m.group("lang") == lang)
    if not names:
        raise CorpusError(f"language {lang!r}: folder {lang_dir} holds no "
                          f"{lang}_clean_NNNN.jsonl.gz shards")
    return [_join(lang_dir, n) for n in names]


def available_languages(root: str | None = None) -> list[str]:
    """Sorted language codes under a MADLAD root that have at least one shard file."""
    root = resolve_madlad_dir(root)
    if not tf.io.gfile.isdir(root):
        raise CorpusError(f"MADLAD root {root} does not exist or is not a folder")
    langs = []
    for entry in tf.io.gfile.listdir(root):
        lang = entry.rstrip("/")
        lang_dir = _join(root, lang)
        if tf.io.gfile.isdir(lang_dir) and any(
                (m := _SHARD_RE.match(n)) and m.group("lang") == lang
                for n in tf.io.gfile.listdir(lang_dir)):
            langs.append(lang)
    return sorted(langs)


# ----------------------------------------------------------------------------- streaming reads


class BadRecords:
    """Counts of skipped bad records per file (skip_bad_records=True)."""

    def __init__(self):
        self.by_file: collections.Counter[str] = collections.Counter()

    def add(self, path: str, message: str) -> None:
        if not self.by_file[path]:
            logging.warning("skipping bad record(s) in %s, first: %s", path, message)
        self.by_file[path] += 1

    @property
    def total(self) -> int:
        return int(sum(self.by_file.values()))


@gin.configurable("madlad_reading")
def configured_skip_bad_records(skip_bad_records: bool = False) -> bool:
    """The gin default of `skip_bad_records` (`madlad_reading.skip_bad_records = True`)."""
    return bool(skip_bad_records)


def iter_shard(path: str, skip_bad_records: bool | None = None, bad: BadRecords | None = None,
               start_line: int = 0) -> Iterator[tuple[int, str]]:
    """(0-based line index, text) of one shard, streamed from line `start_line` on.

    Bad lines raise CorpusError naming file and (1-based) line, or are skipped and counted in
    `bad` with skip_bad_records=True (None: the gin default `madlad_reading.skip_bad_records`).
    """
    if skip_bad_records is None:
        skip_bad_records = configured_skip_bad_records()
    bad = bad if bad is not None else BadRecords()
    index = -1
    try:
        with tf.io.gfile.GFile(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as lines:
            for index, line in enumerate(lines):
                if index < start_line:
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                        raise CorpusError(f"{path}:{index + 1}: row has no string field 'text'")
                except (UnicodeDecodeError, json.JSONDecodeError, CorpusError) as err:
                    message = str(err) if isinstance(err, CorpusError) else \
                        f"{path}:{index + 1}: not a valid JSON line: {err}"
                    if not skip_bad_records:
                        raise CorpusError(message) from err
                    bad.add(path, message)
                    continue
                yield index, row["text"]
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        message = f"{path}: not valid gzip (failed after line {index + 1}): {err}"
        if not skip_bad_records:
            raise CorpusError(message) from err
        bad.add(path, message + "; rest of the file skipped")


def read_shard(path: str) -> list[str]:
    """Texts of one shard, in file order (small files and tests; streams otherwise)."""
    return [text for _, text in iter_shard(path, skip_bad_records=False)]


def iter_language(root: str, lang: str, skip_bad_records: bool | None = None,
                  bad: BadRecords | None = None) -> Iterator[str]:
    """Every document of a language, streamed in shard and line order."""
    for path in shard_paths(root, lang):
        for _, text in iter_shard(path, skip_bad_records, bad):
            yield text


def read_language(root: str, lang: str) -> list[str]:
    """All documents of a language in a list (small corpora and tests only)."""
    docs = list(iter_language(root, lang, skip_bad_records=False))
    if not docs:
        raise CorpusError(f"language {lang!r}: shards under {_join(root, lang)} hold no documents")
    return docs


# ----------------------------------------------------------------------------- splits


def estimate_tokens(text: str) -> float:
    """Pre-tokenisation token estimate of a text: UTF-8 bytes / BYTES_PER_TOKEN."""
    return len(text.encode("utf-8")) / BYTES_PER_TOKEN


def split_documents(docs: Sequence[str], thresholds: SplitThresholds | None = None) -> dict[str, list[str]]:
    """Assigns documents to train / validation / test with `stats.split_of`, in input order.

    Thresholds default to those of `docs` taken as a whole language. Raises CorpusError if any
    split comes out empty.
    """
    if thresholds is None:
        thresholds = stats_lib.thresholds_for(sum(len(t.encode("utf-8")) for t in docs) or 1)
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for text in docs:
        splits[stats_lib.split_of(text, thresholds)].append(text)
    empty = [name for name in SPLITS if not splits[name]]
    if empty:
        raise CorpusError(f"{len(docs)} documents are too few to fill the {', '.join(empty)} split(s) "
                          f"(test / validation take {thresholds.test:.1%} / {thresholds.validation:.1%} "
                          f"of the hash space)")
    return splits


def _thresholds(root: str, lang: str, stats_path: str | None,
                skip_bad_records: bool) -> tuple[SplitThresholds, str]:
    # keyed by the shard list and sizes too: a folder that changes in-process is measured again
    return _thresholds_cached(root, lang, stats_path, skip_bad_records,
                              tuple(stats_lib.listed_files(root, lang)))


@functools.lru_cache(maxsize=1024)
def _thresholds_cached(root: str, lang: str, stats_path: str | None, skip_bad_records: bool,
                       files: tuple[tuple[str, int], ...]) -> tuple[SplitThresholds, str]:
    if stats_path:
        stats = stats_lib.read_stats(stats_path)
        if stats is not None and stats["root"] == stats_lib.normalize_root(root) \
                and lang in stats["languages"]:
            stats_lib.check_stats_for(stats, stats_path, root, None)
            stats_lib.check_language_files(stats, stats_path, root, lang)
            return SplitThresholds.from_json(stats["languages"][lang]["thresholds"]), f"statistics {stats_path}"
    gzip_bytes = sum(size for _, size in files)
    if gzip_bytes <= MEASURE_LIMIT_BYTES:
        text_bytes = sum(len(t.encode("utf-8")) for t in iter_language(root, lang, skip_bad_records))
        if not text_bytes:
            raise CorpusError(f"language {lang!r}: shards under {_join(root, lang)} hold no documents")
        return stats_lib.thresholds_for(text_bytes), "measured"
    estimate = int(gzip_bytes * GZIP_TEXT_RATIO)
    logging.warning("language %s: no statistics file lists it (%s); split thresholds from the listed "
                    "shard sizes (%d gzip bytes x %.1f = %d text bytes, an estimate). Run "
                    "scripts/count_unique.py for exact thresholds.", lang, stats_path or "none configured",
                    gzip_bytes, GZIP_TEXT_RATIO, estimate)
    return stats_lib.thresholds_for(estimate), "listed-size estimate"


def _skip(skip_bad_records: bool | None) -> bool:
    return configured_skip_bad_records() if skip_bad_records is None else bool(skip_bad_records)


def language_thresholds(root: str | None, lang: str, stats_path: str | None = None,
                        skip_bad_records: bool | None = None) -> SplitThresholds:
    """The split thresholds of a language (see the module docstring for where they come from)."""
    root = resolve_madlad_dir(root)
    return _thresholds(root, check_language_code(lang), resolve_stats_path(stats_path),
                       _skip(skip_bad_records))[0]


def thresholds_source(root: str | None, lang: str, stats_path: str | None = None,
                      skip_bad_records: bool | None = None) -> str:
    """Where `language_thresholds` took its numbers: statistics file, measured or estimated."""
    root = resolve_madlad_dir(root)
    return _thresholds(root, check_language_code(lang), resolve_stats_path(stats_path),
                       _skip(skip_bad_records))[1]


def iter_split(root: str | None, lang: str, split: str, skip_bad_records: bool | None = None,
               bad: BadRecords | None = None, stats_path: str | None = None) -> Iterator[str]:
    """Documents of one language's split, streamed in shard and line order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = resolve_madlad_dir(root)
    lang = check_language_code(lang)
    thresholds = language_thresholds(root, lang, stats_path, skip_bad_records)
    for text in iter_language(root, lang, skip_bad_records, bad):
        if stats_lib.split_of(text, thresholds) == split:
            yield text


def load_split(root: str | None, lang: str, split: str) -> list[str]:
    """Documents of one language's split in shard and line order (memory: that split).

    Raises ValueError for an unknown language code (listing the nearest valid codes) or split,
    CorpusError for a missing/empty language folder or a bad corpus file.
    """
    docs = list(iter_split(root, lang, split))
    if not docs:
        raise CorpusError(f"language {lang!r} under {_join(resolve_madlad_dir(root), lang)}: its "
                          f"{split} split is empty (too few documents)")
    return docs


def split_fingerprint(docs: Sequence[str]) -> str:
    """SHA-256 over the sorted hash positions of a set of documents (independent of their order)."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256()
    for key in sorted(hashlib.sha256(SPLIT_SALT + t.encode("utf-8")).digest() for t in docs):
        digest.update(key)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- seqio source


def shard_files(paths: Sequence[str], shard_index: int, num_shards: int) -> tuple[list[int], bool]:
    """seqio's ShardInfo rule: (indices of the files this shard reads, by_element).

    With at least `num_shards` files each shard reads files i ≡ shard_index (mod num_shards);
    with fewer, every shard reads every file and keeps its lines i ≡ shard_index (mod
    num_shards) (0-based line index within each file; by_element=True).
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} is not in [0, {num_shards})")
    if len(paths) >= num_shards:
        return list(range(shard_index, len(paths), num_shards)), False
    return list(range(len(paths))), True


class MadladSource(seqio.DataSource):
    """A streaming seqio source of one language: {"text": tf.string, "line": tf.int64} per
    document of a split ("line": its 0-based line in its shard file, which the seqio cache keeps
    so the trainer can replay the streamed order from the cache).

    Reads shards line by line in a Python generator (errors name file and line), keeps the
    split's documents by hash, and honours seqio.ShardInfo (see `shard_files`). With
    shuffle=True the file order is shuffled and documents go through a bounded shuffle buffer.
    """

    SHUFFLE_BUFFER = 1024

    def __init__(self, lang: str, root: str | None = None, stats_path: str | None = None,
                 skip_bad_records: bool | None = None):
        self.root = resolve_madlad_dir(root)
        self.lang = check_language_code(lang)
        self.stats_path = resolve_stats_path(stats_path)
        self.skip_bad_records = skip_bad_records
        self.paths = shard_paths(self.root, self.lang)
        super().__init__(splits=SPLITS)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def thresholds(self) -> SplitThresholds:
        """This language's split thresholds (`language_thresholds`)."""
        return language_thresholds(self.root, self.lang, self.stats_path, self.skip_bad_records)

    def list_shards(self, split: str) -> Sequence[str]:
        return list(self.paths)

    def documents(self, split: str, shard_index: int = 0, num_shards: int = 1,
                  file_order: Sequence[int] | None = None,
                  bad: BadRecords | None = None) -> Iterator[str]:
        """The split's documents of one input shard, streamed (file order optional)."""
        for _, text in self.numbered_documents(split, shard_index, num_shards, file_order, bad):
            yield text

    def numbered_documents(self, split: str, shard_index: int = 0, num_shards: int = 1,
                           file_order: Sequence[int] | None = None,
                           bad: BadRecords | None = None) -> Iterator[tuple[int, str]]:
        """(0-based line within its shard file, text) of `documents(...)`."""
        thresholds = self.thresholds()
        files, by_element = shard_files(self.paths, shard_index, num_shards)
        order = files if file_order is None else [files[i] for i in file_order]
        for file_index in order:
            for line, text in iter_shard(self.paths[file_index], self.skip_bad_records, bad):
                if by_element and line % num_shards != shard_index:
                    continue
                if stats_lib.split_of(text, thresholds) == split:
                    yield line, text

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                    use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        index, count = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
        self.thresholds()  # fail now, not inside tf.data
        files, _ = shard_files(self.paths, index, count)
        order = None
        if shuffle:
            import numpy as np  # noqa: PLC0415

            order = np.random.default_rng(seed).permutation(len(files)).tolist()

        def generate():
            for line, text in self.numbered_documents(split, index, count, order):
                yield {"text": text, "line": line}

        ds = tf.data.Dataset.from_generator(
            generate, output_signature={"text": tf.TensorSpec((), tf.string),
                                        "line": tf.TensorSpec((), tf.int64)})
        if shuffle:
            ds = ds.shuffle(self.SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=False)
        return ds


def madlad_data_source(lang: str, root: str | None = None) -> MadladSource:
    """The streaming seqio source of one language (checks the code and its folder now)."""
    return MadladSource(lang, root)
