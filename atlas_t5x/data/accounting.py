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
from typing import Mapping, Sequence

import numpy as np




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


def count_unique_tokens(root: str, lang: str, vocab) -> int:
    """U for one language: tokens of its training split with `vocab`, EOS included (streamed)."""
    from atlas_t5x.data import stats  # noqa: PLC0415

    return int(stats.compute_language_stats(root, lang, vocab)["unique_tokens"])


_MEMORY_STATS: dict[tuple, dict] = {}  # (root, lang, vocab id, files) -> language entry


def cached_unique_counts(
    root: str,
    languages: Sequence[str],
    vocab,
    cache_path: str | None = None,
    skip_bad_records: bool | None = None,
    recount_changed: bool = False,
) -> dict[str, int]:
    """U per language, from the statistics file `cache_path` (atlas_t5x/data/stats.py) when given.

    Languages the file lacks are counted by streaming and the file is rewritten atomically after
    each; a language whose shard list or sizes changed since is a CorpusError naming it (recounted
    with recount_changed=True, as scripts/count_unique.py does); a file for another root or
    vocabulary is refused (stats.StatsError). Without a file the entries are kept in memory for
    the process (keyed by the shard list and sizes).
    `skip_bad_records`: see `madlad.iter_shard` (None: the gin default).
    """
    from atlas_t5x.data import stats  # noqa: PLC0415

    if cache_path:
        counted = stats.compute_stats(root, list(languages), vocab, path=cache_path, progress=False,
                                      skip_bad_records=skip_bad_records, recount_changed=recount_changed)
        return {lang: int(counted["languages"][lang]["unique_tokens"]) for lang in languages}
    vocab_id = vocab if isinstance(vocab, str) else vocab_fingerprint(vocab)
    counts = {}
    for lang in languages:
        key = (stats.normalize_root(root), lang, vocab_id, tuple(stats.listed_files(root, lang)))
        if key not in _MEMORY_STATS:
            _MEMORY_STATS[key] = stats.compute_language_stats(root, lang, vocab, skip_bad_records)
        counts[lang] = int(_MEMORY_STATS[key]["unique_tokens"])
    return counts


def accounting_from_rows(rows_by_lang: Mapping[str, int], seq_len: int,
                         unique_by_lang: Mapping[str, int]) -> TokenAccounting:
    """Accounting of a stream whose rows are all full (seq_len target tokens each)."""
    return TokenAccounting({lang: int(r) * seq_len for lang, r in rows_by_lang.items()},
                           {lang: int(unique_by_lang[lang]) for lang in rows_by_lang})
