"""Per-language corpus statistics of a MADLAD-layout root, and the hash split they parametrise.

The statistics file is the one source of the numbers the data layer needs before reading a
language: its size (which fixes the split thresholds), the size of each split, and U (tokens of
the training split under a vocabulary, one EOS per document included). It is built in two
streaming passes per language (`compute_language_stats`), by `scripts/count_unique.py` on one
host or by the Beam pipeline of issue 15 on many; both call the pure primitives below, so they
write identical files.

Split rule (no global sort, one decision per document):
  * u(text) = first 8 bytes of SHA-256(SPLIT_SALT + UTF-8 text), big endian, / 2**64, in [0, 1).
  * thresholds from the language's total UTF-8 text bytes B, with the pre-tokenisation estimate
    T = B / BYTES_PER_TOKEN: test = min(20M, 20% of T) / T (the paper's MADLAD test split),
    validation = min(5M, 10% of T) / T [our choice]; both fractions of the hash space.
  * split_of(text) = "test" if u < test, "validation" if u < test + validation, else "train".
  The shares are exact in expectation (per-document noise shrinks with the language's size), the
  split is independent of file order, sharding, machine and vocabulary, and exact duplicates
  share a split. Pass 1 (documents, bytes: no vocabulary) gives the thresholds; pass 2 counts
  documents, bytes and tokens per split with the vocabulary.

File format (JSON, written atomically; `FORMAT`, version `VERSION`):
  {"format": "atlas_t5x/madlad-stats", "version": 1,
   "root": <root as given, trailing "/" stripped; absolute for a local folder>,
   "vocab": <accounting.vocab_fingerprint of the vocabulary>,
   "split_rule": {"salt": <hex>, "bytes_per_token": 4.0, "test_fraction": 0.2,
                  "test_max_tokens": 20000000, "validation_fraction": 0.1,
                  "validation_max_tokens": 5000000},
   "languages": {<code>: {
       "files": [[<shard file name>, <size in bytes>], ...]   (sorted by name),
       "documents": <int>, "bytes": <int UTF-8 text bytes>,    (all splits, pass 1)
       "thresholds": {"test": <float>, "validation": <float>},
       "splits": {"train"|"validation"|"test": {"documents": int, "bytes": int, "tokens": int}},
       "unique_tokens": <int = splits.train.tokens>,
       "bad_records": <int records skipped (skip_bad_records=True), else 0>}}}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

FORMAT = "atlas_t5x/madlad-stats"
VERSION = 1
SPLITS: tuple[str, ...] = ("train", "validation", "test")

BYTES_PER_TOKEN = 4.0                 # [our choice] pre-tokenisation estimate, UTF-8 bytes per token
TEST_FRACTION, TEST_MAX_TOKENS = 0.20, 20_000_000                 # paper: min(20M tokens, 20%)
VALIDATION_FRACTION, VALIDATION_MAX_TOKENS = 0.10, 5_000_000      # [our choice]
SPLIT_SALT = b"atlas_t5x/madlad-split/v2\x00"


def add_corpus_flags(parser) -> None:
    """The flags of every command that reads a MADLAD-layout corpus under a vocabulary (an
    argparse parser): --root, --languages (comma-separated codes) and --vocab."""
    parser.add_argument("--root", default=None,
                        help="MADLAD-layout folder or gs:// URL (default: $MADLAD_DIR, else the embedded corpus)")
    parser.add_argument("--languages", default="",
                        help="comma-separated codes (default: every language folder under the root)")
    parser.add_argument("--vocab", default="corpus_spm",
                        help='"corpus_spm", "byte" or a SentencePiece .model path')


class StatsError(ValueError):
    """A statistics file that does not describe the corpus / vocabulary it is used for."""


def split_rule() -> dict[str, Any]:
    """The constants the split depends on (stored in the file; a change invalidates it)."""
    return {"salt": SPLIT_SALT.hex(), "bytes_per_token": BYTES_PER_TOKEN,
            "test_fraction": TEST_FRACTION, "test_max_tokens": TEST_MAX_TOKENS,
            "validation_fraction": VALIDATION_FRACTION, "validation_max_tokens": VALIDATION_MAX_TOKENS}


# ----------------------------------------------------------------------------- pure primitives


@dataclasses.dataclass(frozen=True)
class Counts:
    """Documents, UTF-8 text bytes and tokens (EOS included; 0 when no vocabulary was used)."""

    documents: int = 0
    bytes: int = 0
    tokens: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.documents + other.documents, self.bytes + other.bytes,
                      self.tokens + other.tokens)

    def to_json(self) -> dict[str, int]:
        return {"documents": self.documents, "bytes": self.bytes, "tokens": self.tokens}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> "Counts":
        return cls(int(row["documents"]), int(row["bytes"]), int(row.get("tokens", 0)))


@dataclasses.dataclass(frozen=True)
class SplitThresholds:
    """Fractions of the hash space [0, 1) given to the test and validation splits."""

    test: float
    validation: float

    def to_json(self) -> dict[str, float]:
        return {"test": self.test, "validation": self.validation}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> "SplitThresholds":
        return cls(float(row["test"]), float(row["validation"]))


def hash_position(text: str) -> float:
    """u(text) in [0, 1): the document's salted SHA-256 position (machine-independent)."""
    digest = hashlib.sha256(SPLIT_SALT + text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def thresholds_for(total_bytes: int) -> SplitThresholds:
    """Thresholds of a language with `total_bytes` UTF-8 text bytes (all documents)."""
    if total_bytes <= 0:
        raise ValueError(f"a language needs text to be split, got {total_bytes} bytes")
    tokens = total_bytes / BYTES_PER_TOKEN
    return SplitThresholds(test=min(TEST_MAX_TOKENS, TEST_FRACTION * tokens) / tokens,
                           validation=min(VALIDATION_MAX_TOKENS, VALIDATION_FRACTION * tokens) / tokens)


def split_of(text: str, thresholds: SplitThresholds) -> str:
    """"train", "validation" or "test" for one document (see the module docstring)."""
    u = hash_position(text)
    if u < thresholds.test:
        return "test"
    if u < thresholds.test + thresholds.validation:
        return "validation"
    return "train"


def in_train_fraction(text: str, thresholds: SplitThresholds, fraction: float) -> bool:
    """Whether a training document is in the language's first `fraction` of the training split
    (by its hash position, so the subset is the same on every machine, shard and epoch). A
    data-constrained run trains on that subset: U shrinks by about `fraction`, nothing is read into
    memory, and the validation and test splits are untouched."""
    start = thresholds.test + thresholds.validation
    return hash_position(text) < start + fraction * (1.0 - start)


def size_counts(text: str) -> Counts:
    """Pass-1 counts of one document: 1 document, its UTF-8 bytes, no tokens."""
    return Counts(1, len(text.encode("utf-8")), 0)


def document_counts(text: str, vocab) -> Counts:
    """Pass-2 counts of one document: its UTF-8 bytes and tokens under `vocab` + 1 EOS.

    `vocab`: a seqio.Vocabulary or a name for `vocab.get_vocabulary` (picklable for Beam).
    """
    if isinstance(vocab, str):
        from atlas_t5x.data import vocab as vocab_lib  # noqa: PLC0415

        vocab = vocab_lib.get_vocabulary(vocab)
    return Counts(1, len(text.encode("utf-8")), len(vocab.encode(text)) + 1)


def merge_counts(counts: Iterable[Counts]) -> Counts:
    """Sum of Counts (the CombineFn's merge)."""
    total = Counts()
    for c in counts:
        total = total + c
    return total


def language_entry(files: Sequence[tuple[str, int]], size: Counts, splits: Mapping[str, Counts],
                   bad_records: int = 0) -> dict[str, Any]:
    """The file entry of one language from its shard list, pass-1 size and pass-2 split counts."""
    thresholds = thresholds_for(size.bytes)
    full = {name: splits.get(name, Counts()) for name in SPLITS}
    return {"files": [[str(n), int(s)] for n, s in sorted(files)],
            "documents": size.documents, "bytes": size.bytes,
            "thresholds": thresholds.to_json(),
            "splits": {name: c.to_json() for name, c in full.items()},
            "unique_tokens": full["train"].tokens,
            "bad_records": int(bad_records)}


def new_stats(root: str, vocab_id: str) -> dict[str, Any]:
    """An empty statistics document for `root` (see `normalize_root`) and a vocabulary id."""
    return {"format": FORMAT, "version": VERSION, "root": normalize_root(root), "vocab": vocab_id,
            "split_rule": split_rule(), "languages": {}}


def normalize_root(root: str) -> str:
    """How a root is recorded: a URL as given (no trailing "/"), a local folder absolute."""
    root = str(root).rstrip("/")
    return root if "://" in root else os.path.abspath(root)


# ----------------------------------------------------------------------------- files


def write_stats(path: str, stats: Mapping[str, Any]) -> None:
    """Writes the statistics atomically (temporary file + rename; a remote object whole)."""
    from atlas_t5x import logio  # noqa: PLC0415

    if not str(path).startswith(("gs://", "s3://")):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    logio.write_atomic(path, json.dumps(stats, indent=1, sort_keys=True) + "\n")


def read_stats(path: str) -> dict[str, Any] | None:
    """The file's content, None if it does not exist; StatsError if it is not a statistics file."""
    import tensorflow as tf  # noqa: PLC0415

    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            stats = json.load(f)
    except json.JSONDecodeError as err:
        raise StatsError(f"statistics file {path} is not valid JSON: {err}") from err
    if not isinstance(stats, dict) or stats.get("format") != FORMAT:
        raise StatsError(f"{path} is not an atlas_t5x statistics file (format {FORMAT!r})")
    if stats.get("version") != VERSION:
        raise StatsError(f"statistics file {path} has version {stats.get('version')!r}; this code "
                         f"reads version {VERSION} (recompute it with scripts/count_unique.py)")
    return stats


def check_stats_for(stats: Mapping[str, Any], path: str, root: str, vocab_id: str | None) -> None:
    """StatsError naming the field if `stats` is for another root, vocabulary or split rule."""
    if stats["root"] != normalize_root(root):
        raise StatsError(f"statistics file {path} describes root {stats['root']}, not {normalize_root(root)}")
    if vocab_id is not None and stats["vocab"] != vocab_id:
        raise StatsError(f"statistics file {path} counts tokens with vocabulary {stats['vocab']}, "
                         f"not {vocab_id}")
    if stats.get("split_rule") != split_rule():
        raise StatsError(f"statistics file {path} was made with split rule {stats.get('split_rule')}, "
                         f"this code uses {split_rule()}")


def listed_files(root: str, lang: str) -> list[tuple[str, int]]:
    """(shard name, size in bytes) of a language's shards, sorted: its identity in the file."""
    import tensorflow as tf  # noqa: PLC0415

    from atlas_t5x.data import madlad  # noqa: PLC0415

    return [(p.rsplit("/", 1)[-1], int(tf.io.gfile.stat(p).length)) for p in madlad.shard_paths(root, lang)]


def check_language_files(stats: Mapping[str, Any], path: str, root: str, lang: str) -> None:
    """CorpusError naming the language if its folder no longer matches the statistics."""
    from atlas_t5x.data import madlad  # noqa: PLC0415

    entry = stats["languages"][lang]
    try:
        now = listed_files(root, lang)
    except madlad.CorpusError as err:
        raise madlad.CorpusError(f"language {lang!r} is in statistics file {path} but its folder "
                                 f"cannot be read now: {err}") from err
    saved = [(n, int(s)) for n, s in entry["files"]]
    if now != saved:
        added = sorted(set(now) - set(saved))
        gone = sorted(set(saved) - set(now))
        raise madlad.CorpusError(
            f"language {lang!r}: folder {root.rstrip('/')}/{lang} changed since statistics file {path} "
            f"was written (now not in the file: {added}; in the file but gone or resized: {gone}); "
            f"recompute with scripts/count_unique.py --root={root} --languages={lang}")


def load_stats(path: str, root: str, vocab=None, languages: Sequence[str] | None = None,
               check_files: bool = True) -> dict[str, Any]:
    """Reads `path` and checks it describes `root` (and the vocabulary, if given).

    With `languages`, each must be in the file (StatsError naming the missing ones) and, with
    `check_files`, its shard list and sizes must be unchanged (CorpusError naming the language).
    """
    stats = read_stats(path)
    if stats is None:
        raise StatsError(f"statistics file {path} does not exist (make it with scripts/count_unique.py)")
    vocab_id = None if vocab is None else _vocab_id(vocab)
    check_stats_for(stats, path, root, vocab_id)
    if languages is not None:
        missing = [lang for lang in languages if lang not in stats["languages"]]
        if missing:
            raise StatsError(f"statistics file {path} has no entry for {missing}")
        if check_files:
            for lang in languages:
                check_language_files(stats, path, root, lang)
    return stats


def _vocab_id(vocab) -> str:
    from atlas_t5x.data import accounting  # noqa: PLC0415
    from atlas_t5x.data import vocab as vocab_lib  # noqa: PLC0415

    if isinstance(vocab, str):
        vocab = vocab_lib.get_vocabulary(vocab)
    return accounting.vocab_fingerprint(vocab)


# ----------------------------------------------------------------------------- single process


def compute_language_stats(root: str, lang: str, vocab, skip_bad_records: bool | None = None) -> dict[str, Any]:
    """The file entry of one language: two streaming passes over its shards (memory: one line)."""
    from atlas_t5x.data import madlad  # noqa: PLC0415
    from atlas_t5x.data import vocab as vocab_lib  # noqa: PLC0415

    if isinstance(vocab, str):
        vocab = vocab_lib.get_vocabulary(vocab)
    files = listed_files(root, lang)
    bad = madlad.BadRecords()
    size = Counts()
    for text in madlad.iter_language(root, lang, skip_bad_records, bad):
        size = size + size_counts(text)
    if size.documents == 0:
        raise madlad.CorpusError(f"language {lang!r}: shards under {root.rstrip('/')}/{lang} hold no documents")
    thresholds = thresholds_for(size.bytes)
    splits = {name: Counts() for name in SPLITS}
    eos = 1
    for text in madlad.iter_language(root, lang, skip_bad_records, madlad.BadRecords()):
        ids = vocab.encode(text)
        split = split_of(text, thresholds)
        splits[split] = splits[split] + Counts(1, len(text.encode("utf-8")), len(ids) + eos)
    return language_entry(files, size, splits, bad.total)


def _compute_one(args: tuple) -> tuple[str, dict]:
    root, lang, vocab_name, skip = args
    return lang, compute_language_stats(root, lang, vocab_name, skip)


def compute_stats(root: str, languages: Sequence[str], vocab: str, path: str | None = None,
                  workers: int = 1, skip_bad_records: bool | None = None, progress: bool = True,
                  on_language: Callable[[str, dict], None] | None = None,
                  recount_changed: bool = True) -> dict[str, Any]:
    """Statistics of `languages` under `root` with vocabulary name `vocab`, parallel over languages.

    Resumable: with `path`, languages already in that file with unchanged shards are kept, and
    the file is rewritten (atomically) after every finished language. A file for another root,
    vocabulary or split rule is refused (StatsError), never overwritten. A language whose shards
    changed since the file was written is recounted, or, with recount_changed=False (training),
    a CorpusError naming it.
    """
    stats = read_stats(path) if path else None
    vocab_id = _vocab_id(vocab)
    if stats is None:
        stats = new_stats(root, vocab_id)
    else:
        check_stats_for(stats, path, root, vocab_id)
    todo = []
    for lang in languages:
        entry = stats["languages"].get(lang)
        if entry is not None:
            if not recount_changed:
                check_language_files(stats, path, root, lang)  # CorpusError naming a changed language
                continue
            if [(n, int(s)) for n, s in entry["files"]] == listed_files(root, lang):
                continue
        todo.append(lang)
    from tqdm import tqdm  # noqa: PLC0415

    bar = tqdm(total=len(todo), unit="lang", disable=not progress, desc="statistics")
    jobs = [(root, lang, vocab, skip_bad_records) for lang in todo]

    def finish(lang: str, entry: dict) -> None:
        stats["languages"][lang] = entry
        if entry["bad_records"]:
            logging.warning("language %s: skipped %d bad records", lang, entry["bad_records"])
        if path:
            write_stats(path, stats)
        if on_language:
            on_language(lang, entry)
        bar.update(1)

    if workers > 1 and len(jobs) > 1:
        import multiprocessing  # noqa: PLC0415

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for lang, entry in pool.imap_unordered(_compute_one, jobs):
                finish(lang, entry)
    else:
        for job in jobs:
            finish(*_compute_one(job))
    bar.close()
    return stats
