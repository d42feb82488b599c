"""MADLAD-400 layout reader with deterministic per-language train / validation / test splits.

Layout (the public release, "clean" portion): `{root}/{lang}/{lang}_clean_{shard:04d}.jsonl.gz`,
one JSON object per line with a string field "text". Files are read through `tf.io.gfile`, so a
local folder and a `gs://` bucket work alike. The root is, in order: an explicit `root` argument,
the gin binding `resolve_madlad_dir.root`, $MADLAD_DIR, else the embedded corpus
(`EMBEDDED_CORPUS_DIR`, built by scripts/build_corpus.py, same layout).

Splits. Every document gets a position from the SHA-256 of its UTF-8 text (salted with
SPLIT_SALT), never from file order or Python's `hash()`, so the splits are identical on every
machine, for any sharding or listing order of the files. Walking documents in that order:
  * test: the first documents until their tokens reach min(20M tokens, 20% of the language), as in
    the paper's MADLAD evaluation split;
  * validation [our choice]: the next documents until min(5M tokens, 10% of the language);
  * train: everything else.
A split takes a document while its running total is still below the budget, so it overshoots by
less than one document. Exact duplicates share a hash and therefore a split (no leakage).

Token estimate [our choice]: the budgets are applied before tokenisation, with
tokens = UTF-8 bytes / BYTES_PER_TOKEN. The 20% and 10% shares are therefore exact shares of the
language's bytes whatever the constant; the constant only decides where the 20M / 5M caps bite
(4 bytes per token is typical of a 64k SentencePiece vocabulary on Latin-script web text).

A language is read in full to split it (memory grows with the language): right for the embedded
corpus and per-language MADLAD subsets, not for streaming the largest MADLAD languages. Splits are
cached per (root, language) for the life of the process (files are assumed not to change).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import zlib
from typing import Sequence

import gin
import seqio
import tensorflow as tf

from atlas_t5x import languages

EMBEDDED_CORPUS_DIR: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
MADLAD_DIR_ENV = "MADLAD_DIR"
SPLITS: tuple[str, ...] = ("train", "validation", "test")

BYTES_PER_TOKEN = 4.0                 # [our choice] pre-tokenisation estimate, UTF-8 bytes per token
TEST_FRACTION, TEST_MAX_TOKENS = 0.20, 20_000_000                 # paper: min(20M tokens, 20%)
VALIDATION_FRACTION, VALIDATION_MAX_TOKENS = 0.10, 5_000_000      # [our choice]
SPLIT_SALT = b"atlas_t5x/madlad-split/v1\x00"

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


def read_shard(path: str) -> list[str]:
    """Texts of one shard, in file order; CorpusError naming file and line on any bad row."""
    texts = []
    lineno = 0
    try:
        with tf.io.gfile.GFile(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as lines:
            for lineno, line in enumerate(lines, start=1):
                try:
                    row = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise CorpusError(f"{path}:{lineno}: not a valid JSON line: {err}") from err
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise CorpusError(f"{path}:{lineno}: row has no string field 'text'")
                texts.append(row["text"])
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise CorpusError(f"{path}: not valid gzip (failed after line {lineno}): {err}") from err
    return texts


def read_language(root: str, lang: str) -> list[str]:
    """All documents of a language across its shards, in shard and line order."""
    paths = shard_paths(root, lang)
    docs = [text for path in paths for text in read_shard(path)]
    if not docs:
        raise CorpusError(f"language {lang!r}: shards under {_join(root, lang)} hold no documents")
    return docs


def estimate_tokens(text: str) -> float:
    """Pre-tokenisation token estimate of a text: UTF-8 bytes / BYTES_PER_TOKEN."""
    return len(text.encode("utf-8")) / BYTES_PER_TOKEN


def split_key(text: str) -> bytes:
    """The document's position in split order (machine- and file-order-independent)."""
    return hashlib.sha256(SPLIT_SALT + text.encode("utf-8")).digest()


def split_documents(docs: Sequence[str]) -> dict[str, list[str]]:
    """Assigns documents to train / validation / test (see the module docstring).

    Each split lists its documents in split-key order, so the result does not depend on the order
    of `docs`. Raises CorpusError if any split would be empty.
    """
    ordered = sorted(docs, key=lambda t: (split_key(t), t))
    total = sum(estimate_tokens(t) for t in ordered)
    budgets = {"test": min(TEST_MAX_TOKENS, TEST_FRACTION * total),
               "validation": min(VALIDATION_MAX_TOKENS, VALIDATION_FRACTION * total)}
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    pos = 0
    for name in ("test", "validation"):
        taken = 0.0
        while pos < len(ordered) and taken < budgets[name]:
            splits[name].append(ordered[pos])
            taken += estimate_tokens(ordered[pos])
            pos += 1
    splits["train"] = ordered[pos:]
    empty = [name for name in SPLITS if not splits[name]]
    if empty:
        raise CorpusError(f"{len(docs)} documents ({total:.0f} estimated tokens) are too few to "
                          f"fill the {', '.join(empty)} split(s)")
    return splits


@functools.lru_cache(maxsize=64)
def _language_splits(root: str, lang: str) -> dict[str, tuple[str, ...]]:
    docs = read_language(root, lang)
    try:
        splits = split_documents(docs)
    except CorpusError as err:
        raise CorpusError(f"language {lang!r} under {_join(root, lang)}: {err}") from err
    return {name: tuple(texts) for name, texts in splits.items()}


def load_split(root: str | None, lang: str, split: str) -> list[str]:
    """Documents of one language's split ("train", "validation" or "test"), deterministic.

    Raises ValueError for an unknown language code (listing the nearest valid codes) or split,
    CorpusError for a missing/empty language folder or a bad corpus file.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    lang = check_language_code(lang)
    return list(_language_splits(resolve_madlad_dir(root), lang)[split])


def split_fingerprint(docs: Sequence[str]) -> str:
    """SHA-256 over the sorted split keys of a set of documents (independent of their order)."""
    digest = hashlib.sha256()
    for key in sorted(split_key(t) for t in docs):
        digest.update(key)
    return digest.hexdigest()


def madlad_data_source(lang: str, root: str | None = None) -> seqio.DataSource:
    """A seqio data source yielding {"text": tf.string} per document of one language's splits.

    Checks the language code and its folder now; the documents are read on first use. With
    `shuffle_files=True` the split's documents are shuffled with the given seed.
    """
    root = resolve_madlad_dir(root)
    lang = check_language_code(lang)
    shard_paths(root, lang)

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        docs = load_split(root, lang, split)
        ds = tf.data.Dataset.from_tensor_slices({"text": tf.constant(docs, dtype=tf.string)})
        if shuffle_files:
            ds = ds.shuffle(len(docs), seed=seed, reshuffle_each_iteration=False)
        return ds

    return seqio.FunctionDataSource(dataset_fn, splits=SPLITS)
