"""Token accounting: encoding a split into token arrays, U (unique tokens) and its on-disk cache.

Definitions (used by the train pipeline, `scripts/count_unique.py` and the exported logs):
  * A document is encoded with the run's vocabulary and followed by one EOS token [our choice:
    EOS marks document boundaries in the packed stream, so it is a trained target like any other].
  * U_l ("unique tokens") is the number of tokens of language l's *training* split, EOS included:
    the size of one epoch over the language's data.
  * tokens_by_lang counts non-padding target tokens consumed so far over the whole global batch;
    epochs = tokens / U.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable, Mapping, Sequence

import numpy as np

from atlas_t5x import logio

COUNT_VERSION = 1  # bump when the encoding rule above changes: invalidates every cached count


@dataclasses.dataclass
class TokenAccounting:
    """Training tokens consumed so far over the whole global batch (identical on every process).

    Attributes:
      tokens_by_lang: non-padding target tokens consumed per training language.
      unique_by_lang: U, tokens in each training language's training split (EOS included).
    """

    tokens_by_lang: dict[str, int]
    unique_by_lang: dict[str, int]

    @property
    def total(self) -> int:
        """All training tokens consumed so far."""
        return int(sum(self.tokens_by_lang.values()))

    @property
    def epochs_by_lang(self) -> dict[str, float]:
        """tokens / U per language (passes over the language's unique data)."""
        return {lang: n / max(self.unique_by_lang.get(lang, 0), 1)
                for lang, n in self.tokens_by_lang.items()}


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """A split as one flat token array: document i is tokens[offsets[i]:offsets[i+1]] (EOS last)."""

    tokens: np.ndarray  # int32 [U]
    offsets: np.ndarray  # int64 [n_docs + 1], offsets[0] = 0, offsets[-1] = U

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1


def encode_documents(texts: Sequence[str], vocab) -> EncodedSplit:
    """Encodes each text with `vocab` (a seqio.Vocabulary) and appends EOS; concatenates."""
    eos = int(vocab.eos_id)
    pieces = []
    for text in texts:
        ids = vocab.encode(text)
        pieces.append(np.asarray(ids, dtype=np.int32))
    lengths = np.array([len(p) + 1 for p in pieces], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.full(int(offsets[-1]), eos, dtype=np.int32)
    for piece, start in zip(pieces, offsets[:-1]):
        tokens[start:start + len(piece)] = piece
    return EncodedSplit(tokens, offsets)


def vocab_fingerprint(vocab) -> str:
    """A string identifying a vocabulary's token mapping (class, size, model bytes if any)."""
    parts = [type(vocab).__name__, str(vocab.vocab_size)]
    model = getattr(vocab, "sp_model", None)
    if model:
        parts.append(hashlib.sha256(model).hexdigest()[:16])
    return ":".join(parts)


def source_fingerprint(root: str, lang: str) -> dict:
    """What U depends on besides the vocabulary: every shard's (name, bytes, mtime in ns) and the
    split rule of `madlad` (salt and budgets)."""
    import tensorflow as tf  # noqa: PLC0415  (lazy: TokenAccounting users need no TensorFlow)

    from atlas_t5x.data import madlad  # noqa: PLC0415

    files = []
    for path in madlad.shard_paths(root, lang):
        stat = tf.io.gfile.stat(path)
        files.append([path.rsplit("/", 1)[-1], int(stat.length), int(stat.mtime_nsec)])
    split_rule = [madlad.SPLIT_SALT.hex(), madlad.BYTES_PER_TOKEN, madlad.TEST_FRACTION,
                  madlad.TEST_MAX_TOKENS, madlad.VALIDATION_FRACTION, madlad.VALIDATION_MAX_TOKENS]
    return {"files": files, "split_rule": split_rule}


def count_unique_tokens(root: str, lang: str, vocab) -> int:
    """U for one language: tokens of its training split with `vocab`, EOS included."""
    from atlas_t5x.data import madlad  # noqa: PLC0415

    return encode_documents(madlad.load_split(root, lang, "train"), vocab).num_tokens


def _cache_key(root: str, lang: str, vocab_id: str, source: dict) -> str:
    blob = json.dumps({"version": COUNT_VERSION, "root": os.path.abspath(root), "lang": lang,
                       "vocab": vocab_id, "source": source}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_unique_counts(
    root: str,
    languages: Sequence[str],
    vocab,
    cache_path: str | None = None,
    counter: Callable[[str, str, object], int] = count_unique_tokens,
) -> dict[str, int]:
    """U per language, read from / written to a JSON cache when `cache_path` is given.

    An entry is keyed by the absolute root, the language, the vocabulary fingerprint and every
    shard's (name, size, mtime), so a changed corpus or vocabulary is recounted, never served
    stale. The cache file is rewritten atomically.
    """
    vocab_id = vocab_fingerprint(vocab)
    entries: dict = {}
    if cache_path and os.path.exists(cache_path):
        try:
            with open(cache_path, encoding="utf-8") as f:
                entries = json.load(f).get("entries", {})
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"unique-count cache {cache_path} is not valid JSON: {err}") from err
    counts, dirty = {}, False
    for lang in languages:
        key = _cache_key(root, lang, vocab_id, source_fingerprint(root, lang))
        if key in entries:
            counts[lang] = int(entries[key]["unique_tokens"])
            continue
        counts[lang] = int(counter(root, lang, vocab))
        entries = {k: e for k, e in entries.items()  # drop the stale entry this one replaces
                   if (e.get("root"), e.get("lang"), e.get("vocab"))
                   != (os.path.abspath(root), lang, vocab_id)}
        entries[key] = {"root": os.path.abspath(root), "lang": lang, "vocab": vocab_id,
                        "unique_tokens": counts[lang]}
        dirty = True
    if cache_path and dirty:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        logio.write_atomic(cache_path, json.dumps({"version": COUNT_VERSION, "entries": entries},
                                                  indent=1, sort_keys=True) + "\n")
    return counts


def accounting_from_rows(rows_by_lang: Mapping[str, int], seq_len: int,
                         unique_by_lang: Mapping[str, int]) -> TokenAccounting:
    """Accounting of a stream whose rows are all full (seq_len target tokens each)."""
    return TokenAccounting({lang: int(r) * seq_len for lang, r in rows_by_lang.items()},
                           {lang: int(unique_by_lang[lang]) for lang in rows_by_lang})
