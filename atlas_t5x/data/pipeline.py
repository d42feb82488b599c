"""The packed, deterministic, resumable train stream over a MADLAD-layout corpus, and eval batches.

Train stream (all numpy; the hot path is a handful of vectorised array operations per batch):
  * Each language's training split is encoded once (`accounting.encode_documents`: vocabulary
    tokens + EOS per document). Its stream is the infinite sequence of epochs; epoch e visits the
    documents in a permutation seeded by (seed, crc32(lang), e).
  * Rows are filled from ONE language each, with consecutive stream tokens: the k-th row of
    language l holds stream positions [k·seq_len, (k+1)·seq_len). [our choice] Documents are
    split across rows (and epochs), so every row is full: no padding in training, loss weight 1
    everywhere, and tokens_by_lang = rows_by_lang · seq_len exactly.
  * Packing: a new segment starts at each document start and at each row start; positions count
    from 0 within a segment. Inputs are the targets shifted right within the stream: 0 (BOS) at a
    document start, the true previous token where a row starts mid-document [our choice: the
    continuation keeps teacher forcing but not the earlier context].
  * The language of each row follows the deterministic divisor-method schedule of
    `mixtures.schedule_next`, so per-language token shares track the mixture rates to within a
    few rows at every step, and `mixtures.plan_tokens` predicts the counts exactly.
  * Every process computes the layout of the whole global batch (cheap) but materialises only its
    own rows [process_index·rows, (process_index+1)·rows); the accounting is global and identical
    on every process.
  * State = rows emitted so far, globally and per language (+ derived epoch and cursor): a restored
    pipeline yields exactly the batches the uninterrupted one would.

Memory: every training language is held as one int32 array (4 bytes per token of U) plus the
current epoch's order; right for the embedded corpus and per-language MADLAD subsets of a few
hundred million tokens, not for streaming the largest MADLAD languages.

Eval sets: the first whole documents of a language's validation (or test) split (in stored order)
up to a token budget, packed the same way, padded to full batches (padding: token 0, segment 0, loss
weight 0, lang id −1).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Iterator, Mapping, Sequence

import gin
import numpy as np

from atlas_t5x.data import accounting as accounting_lib
from atlas_t5x.data import madlad
from atlas_t5x.data import mixtures as mixtures_lib
from atlas_t5x.data import vocab as vocab_lib
from atlas_t5x.data.accounting import EncodedSplit, TokenAccounting

STATE_KIND = "atlas_packed_stream"
STATE_VERSION = 1
_EPOCHS_CACHED = 2  # epoch orders kept per language (a row may straddle two epochs)


class LanguageStream:
    """One language's training tokens as an infinite stream of per-epoch shuffled documents."""

    def __init__(self, lang: str, split: EncodedSplit, seed: int):
        if split.num_tokens == 0:
            raise ValueError(f"language {lang!r} has an empty training split")
        self.lang = lang
        self.split = split
        self._seed = int(seed)
        self._lang_key = zlib.crc32(lang.encode("utf-8"))
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def unique_tokens(self) -> int:
        """U: tokens in one epoch (the training split, EOS included)."""
        return self.split.num_tokens

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int32 [U], document-start flags bool [U]) of one epoch's document order."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self._seed, self._lang_key, epoch])
            offsets = self.split.offsets
            order = rng.permutation(self.split.num_documents)
            lengths = np.diff(offsets)[order]
            new_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            gather = np.arange(self.unique_tokens) + np.repeat(offsets[:-1][order] - new_starts, lengths)
            is_start = np.zeros(self.unique_tokens, dtype=bool)
            is_start[new_starts] = True
            if len(self._epochs) >= _EPOCHS_CACHED:
                del self._epochs[min(self._epochs)]
            self._epochs[epoch] = (self.split.tokens[gather], is_start)
        return self._epochs[epoch]

    def window(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Stream positions [start, stop) (0 <= start), crossing epoch boundaries as needed."""
        tokens, starts = [], []
        position = start
        while position < stop:
            epoch, offset = divmod(position, self.unique_tokens)
            epoch_tokens, epoch_starts = self.epoch(epoch)
            n = min(stop - position, self.unique_tokens - offset)
            tokens.append(epoch_tokens[offset:offset + n])
            starts.append(epoch_starts[offset:offset + n])
            position += n
        return np.concatenate(tokens), np.concatenate(starts)

    def rows(self, first_row: int, n_rows: int, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows first_row .. first_row+n_rows-1 of this language: (targets, inputs, doc_start)."""
        start, stop = first_row * seq_len, (first_row + n_rows) * seq_len
        tokens, starts = self.window(max(start - 1, 0), stop)
        if start == 0:  # stream position 0 starts a document, its input is BOS whatever precedes
            tokens = np.concatenate([[0], tokens]).astype(np.int32)
            starts = np.concatenate([[True], starts])
        targets = tokens[1:].reshape(n_rows, seq_len)
        doc_start = starts[1:].reshape(n_rows, seq_len)
        inputs = np.where(doc_start, 0, tokens[:-1].reshape(n_rows, seq_len))
        return targets, inputs, doc_start


def segments_and_positions(new_segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment ids (1-based per row) and positions from a [rows, T] bool 'segment starts here'."""
    length = new_segment.shape[1]
    columns = np.arange(length, dtype=np.int32)
    segment_ids = np.cumsum(new_segment, axis=1, dtype=np.int32)
    last_start = np.maximum.accumulate(np.where(new_segment, columns, 0), axis=1)
    return segment_ids, (columns - last_start).astype(np.int32)


class TrainPipeline:
    """Iterator over host-local packed train batches; see the module docstring.

    Attributes:
      languages: training languages (mixture order); `decoder_lang_ids` index into it.
      seq_len: tokens per row. global_batch: rows per step over all processes.
      rows: this process's rows per batch (global_batch // process_count).
      mixture: the `mixtures.Mixture` being sampled.
    """

    def __init__(
        self,
        mixture: mixtures_lib.Mixture,
        streams: Mapping[str, LanguageStream],
        seq_len: int,
        global_batch: int,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        vocab_name: str = "",
        vocab_size: int = 0,
    ):
        if seq_len < 1 or global_batch < 1:
            raise ValueError(f"seq_len ({seq_len}) and global_batch ({global_batch}) must be >= 1")
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
        if global_batch % process_count:
            raise ValueError(f"global_batch {global_batch} is not divisible by the number of "
                             f"processes {process_count}")
        missing = [lang for lang in mixture.languages if lang not in streams]
        if missing:
            raise ValueError(f"mixture {mixture.name!r}: no training data for {missing}")
        self.mixture = mixture
        self.languages = mixture.languages
        self.mixture_name = mixture.name
        self.mixture_weights = dict(mixture.weights)
        self.vocab_name = vocab_name
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.global_batch = global_batch
        self.rows = global_batch // process_count
        self.seed = seed
        self._first_row = process_index * self.rows
        self._streams = [streams[lang] for lang in self.languages]
        self._weights = mixture.weight_array()
        self._rows_by_lang = np.zeros(len(self.languages), dtype=np.int64)
        self._rows_total = 0

    @property
    def unique_by_lang(self) -> dict[str, int]:
        return {s.lang: s.unique_tokens for s in self._streams}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        langs = mixtures_lib.schedule_next(self._weights, self._rows_by_lang, self.global_batch)
        host = slice(self._first_row, self._first_row + self.rows)
        host_langs = langs[host]
        targets = np.empty((self.rows, self.seq_len), np.int32)
        inputs = np.empty_like(targets)
        new_segment = np.empty(targets.shape, dtype=bool)
        for lang in np.unique(host_langs):
            local = np.flatnonzero(host_langs == lang)
            # rows of one language are consecutive slots of its stream, also within a host slice
            first_slot = self._rows_by_lang[lang] + np.count_nonzero(langs[: host.start] == lang)
            targets[local], inputs[local], new_segment[local] = self._streams[lang].rows(
                int(first_slot), len(local), self.seq_len)
        new_segment[:, 0] = True
        segment_ids, positions = segments_and_positions(new_segment)
        self._rows_by_lang += np.bincount(langs, minlength=len(self.languages))
        self._rows_total += self.global_batch
        return {
            "decoder_input_tokens": inputs,
            "decoder_target_tokens": targets,
            "decoder_segment_ids": segment_ids,
            "decoder_positions": positions,
            "decoder_loss_weights": np.ones(targets.shape, np.float32),
            "decoder_lang_ids": np.repeat(host_langs[:, None], self.seq_len, axis=1),
        }

    def accounting(self) -> TokenAccounting:
        """GLOBAL tokens consumed so far (all processes): every row is full, seq_len tokens."""
        return accounting_lib.accounting_from_rows(
            dict(zip(self.languages, self._rows_by_lang.tolist())), self.seq_len, self.unique_by_lang)

    def _config(self) -> dict:
        return {
            "mixture": self.mixture.to_json(),
            "seq_len": self.seq_len,
            "global_batch": self.global_batch,
            "seed": self.seed,
            "vocab": self.vocab_name,
            "unique_by_lang": self.unique_by_lang,
        }

    def get_state(self) -> dict:
        """JSON-serialisable position: rows emitted globally and, per language, rows, epoch and
        cursor (token offset into that epoch's order)."""
        per_lang = {}
        for stream, rows in zip(self._streams, self._rows_by_lang.tolist()):
            epoch, cursor = divmod(rows * self.seq_len, stream.unique_tokens)
            per_lang[stream.lang] = {"rows": rows, "epoch": epoch, "cursor": cursor}
        return {"kind": STATE_KIND, "version": STATE_VERSION, "config": self._config(),
                "rows": self._rows_total, "languages": per_lang}

    def set_state(self, state: Mapping) -> None:
        """Resumes at a position from get_state(); the next batch equals the uninterrupted one."""
        if state.get("kind") != STATE_KIND or state.get("version") != STATE_VERSION:
            raise ValueError(f"pipeline state of kind {state.get('kind')!r} version "
                             f"{state.get('version')!r}; expected {STATE_KIND!r} v{STATE_VERSION}")
        config = self._config()
        differing = sorted(k for k in config if state.get("config", {}).get(k) != config[k])
        if differing:
            raise ValueError(f"pipeline state does not match this pipeline in {differing}: saved "
                             f"{ {k: state.get('config', {}).get(k) for k in differing} }, "
                             f"current { {k: config[k] for k in differing} }")
        rows_total = int(state["rows"])
        rows_by_lang = np.array([int(state["languages"][lang]["rows"]) for lang in self.languages],
                                dtype=np.int64)
        expected = mixtures_lib.schedule_counts(self._weights, rows_total)
        if not np.array_equal(rows_by_lang, expected):
            raise ValueError(f"pipeline state is inconsistent: per-language rows {rows_by_lang.tolist()} "
                             f"are not the schedule's {expected.tolist()} after {rows_total} rows")
        self._rows_total = rows_total
        self._rows_by_lang = rows_by_lang


def _resolve_vocab(vocab):
    if isinstance(vocab, str):
        return vocab, vocab_lib.get_vocabulary(vocab)
    return accounting_lib.vocab_fingerprint(vocab), vocab


@gin.configurable
def make_train_pipeline(
    mixture: str | Mapping[str, float] | mixtures_lib.Mixture = gin.REQUIRED,
    vocab="corpus_spm",
    seq_len: int = 512,
    global_batch: int = 8,
    seed: int = 0,
    root: str | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    unique_cache: str | None = None,
) -> TrainPipeline:
    """Builds this process's packed train pipeline over a MADLAD-layout corpus (gin seam).

    Args:
      mixture: a mixture name / spec for `mixtures.get_mixture` (e.g. "12v0", "bilingual_es_pt",
        "unimax" with its gin bindings), a weights mapping, or a Mixture. Sized mixtures (unimax,
        temperature) get U counted with `vocab` over `root` (all its languages unless
        `get_mixture.languages` is bound).
      vocab: vocabulary name for `vocab.get_vocabulary` ("corpus_spm", "byte", a .model path) or a
        seqio.Vocabulary.
      seq_len: tokens per row. global_batch: rows per step over all processes.
      seed: seeds the per-(language, epoch) document orders.
      root: MADLAD-layout folder (None: $MADLAD_DIR, else the embedded corpus).
      process_index, process_count: default jax.process_index() / jax.process_count().
      unique_cache: optional JSON path caching U per language (see scripts/count_unique.py).
    """
    if process_index is None or process_count is None:
        import jax  # noqa: PLC0415

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    root = madlad.resolve_madlad_dir(root)
    vocab_name, vocabulary = _resolve_vocab(vocab)
    encoded: dict[str, EncodedSplit] = {}

    def encode(lang: str) -> EncodedSplit:
        if lang not in encoded:
            encoded[lang] = accounting_lib.encode_documents(madlad.load_split(root, lang, "train"),
                                                            vocabulary)
        return encoded[lang]

    def size_fn(languages: Sequence[str] | None) -> dict[str, int]:
        languages = madlad.available_languages(root) if languages is None else languages
        return accounting_lib.cached_unique_counts(
            root, languages, vocabulary, unique_cache,
            counter=lambda _root, lang, _vocab: encode(lang).num_tokens)

    resolved = mixtures_lib.get_mixture(mixture, size_fn=size_fn)
    streams = {lang: LanguageStream(lang, encode(lang), seed) for lang in resolved.languages}
    return TrainPipeline(resolved, streams, seq_len, global_batch, seed, process_index,
                         process_count, vocab_name=vocab_name, vocab_size=int(vocabulary.vocab_size))


# ----------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class EvalSet:
    """Deterministic eval batches of one language.

    Attributes:
      lang: the language. batches: dicts like the train batches ([batch_size, seq_len]);
        decoder_lang_ids is 0 on scored tokens (the set's only language), −1 on padding.
      n_tokens: scored target tokens (Σ loss weights), EOS included.
      n_bytes: UTF-8 bytes of the scored documents' text (EOS adds no bytes), for bits per byte.
      n_documents: whole documents scored.
    """

    lang: str
    batches: list[dict]
    n_tokens: int
    n_bytes: int
    n_documents: int = 0


def pack_eval_documents(lang: str, texts: Sequence[str], vocab, seq_len: int, batch_size: int,
                        token_budget: int) -> EvalSet:
    """Packs the first whole documents of `texts` totalling at most `token_budget` tokens.

    At least one document is taken even if it alone exceeds the budget [our choice: a language
    is never left unscored]. Documents longer than a row continue in the next row.
    """
    if seq_len < 1 or batch_size < 1 or token_budget < 1:
        raise ValueError(f"eval set for {lang!r}: seq_len ({seq_len}), batch_size ({batch_size}) and "
                         f"token_budget ({token_budget}) must be >= 1")
    if not texts:
        raise ValueError(f"eval set for {lang!r}: the validation split has no documents")
    # encode only as many documents as can fit (each has >= 1 token)
    split = accounting_lib.encode_documents(texts[:token_budget], vocab)
    n_docs = max(1, int(np.searchsorted(split.offsets, token_budget, side="right")) - 1)
    n_tokens = int(split.offsets[n_docs])
    tokens = split.tokens[:n_tokens]
    doc_start = np.zeros(n_tokens, dtype=bool)
    doc_start[split.offsets[:n_docs]] = True

    n_rows = -(-n_tokens // seq_len)
    n_rows = -(-n_rows // batch_size) * batch_size
    size = n_rows * seq_len
    targets = np.zeros(size, np.int32)
    targets[:n_tokens] = tokens
    inputs = np.zeros(size, np.int32)
    inputs[1:n_tokens] = tokens[:-1]
    inputs[:n_tokens][doc_start] = 0
    is_token = np.arange(size) < n_tokens
    new_segment = np.zeros(size, dtype=bool)
    new_segment[:n_tokens] = doc_start
    shape = (n_rows, seq_len)
    new_segment = new_segment.reshape(shape)
    is_token = is_token.reshape(shape)
    new_segment[:, 0] |= is_token[:, 0]
    segment_ids, positions = segments_and_positions(new_segment)
    arrays = {
        "decoder_input_tokens": inputs.reshape(shape),
        "decoder_target_tokens": targets.reshape(shape),
        "decoder_segment_ids": np.where(is_token, segment_ids, 0).astype(np.int32),
        "decoder_positions": np.where(is_token, positions, 0).astype(np.int32),
        "decoder_loss_weights": is_token.astype(np.float32),
        "decoder_lang_ids": np.where(is_token, 0, -1).astype(np.int32),
    }
    batches = [{k: v[i:i + batch_size] for k, v in arrays.items()}
               for i in range(0, n_rows, batch_size)]
    n_bytes = sum(len(text.encode("utf-8")) for text in texts[:n_docs])
    return EvalSet(lang, batches, n_tokens, n_bytes, n_docs)


def make_eval_set(lang: str, vocab, seq_len: int, batch_size: int, token_budget: int,
                  root: str | None = None, split: str = "validation") -> EvalSet:
    """Deterministic eval batches of `lang` (see `pack_eval_documents`) from its validation split,
    or from `split="test"` (the paper's held-out MADLAD test split)."""
    if split not in ("validation", "test"):
        raise ValueError(f"eval set for {lang!r}: split must be 'validation' or 'test', got {split!r}")
    mixtures_lib.check_language(lang)
    root = madlad.resolve_madlad_dir(root)
    _, vocabulary = _resolve_vocab(vocab)
    return pack_eval_documents(lang, madlad.load_split(root, lang, split), vocabulary,
                               seq_len, batch_size, token_budget)
