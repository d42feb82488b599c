"""The packed, deterministic, resumable train stream over MADLAD shards (streamed or seqio-cached), and
eval batches.

Where batches come from: `make_train_pipeline` resolves the mixture with the planners
(`mixtures.get_mixture`: token shares per language), registers it as a seqio Mixture over the
`madlad_{lang}` Tasks (tasks/), and reads each Task's streaming source (`madlad.MadladSource`,
train split by hash) and vocabulary. Which language fills each row follows the deterministic
token-share schedule (`mixtures.schedule_next`) instead of seqio's per-example random sampling
[our choice: exact per-language token accounting and cheap exact resume; the shares are the
Mixture's].

Input shards. The global batch is the concatenation of `num_input_shards` (S) equal sub-batches.
Sub-batch b is produced by input shard b alone, from its own disjoint share of every language
(seqio's ShardInfo rule, `madlad.shard_files`: files i ≡ b mod S when a language has at least S
files, else lines i ≡ b mod S of each file). Process p of P materialises the shards
[p·S/P, (p+1)·S/P): it reads only those documents. S defaults to the process count; the batches
are a function of S, not of P, so any P dividing S (and S dividing the batch) gives the same
global batches: one process with S = 2 produces exactly what two processes produce together.

One language's stream in one input shard (`ShardStream`): epochs over the shard's files, file
order reshuffled per epoch; within a file, blocks of up to `block_docs` training documents are
shuffled [our choice: a local shuffle, memory bounded by a block] with a seed of (seed, language,
shard, epoch, file, first line), encoded (vocabulary tokens + EOS) and concatenated. Rows of one
language are consecutive `seq_len` windows of that stream: documents are split across rows (and
epochs), every row is full (no padding, loss weight 1), and tokens_by_lang = rows · seq_len.

Packing: a new segment starts at each document start and at each row start; positions count from
0 within a segment. Inputs are the targets shifted right within the stream: 0 (BOS) at a document
start, the true previous token where a row starts mid-document. `decoder_lang_ids` gives each
token's language (index into `languages`) for exact per-language accounting.

State (exact resume, per input shard): for every language the cursor (epoch, position in the
epoch's file order, first line of the current block, tokens consumed in the block), plus the
schedule's row counts. A restart re-reads at most one block per language. With several processes
`get_state` all-gathers the shards' cursors, so every process checkpoints the same global state;
a restart restores the shards it owns. A state saved with another S is refused, naming both.

Memory: one block per (language, owned shard) and one open file per stream; it does not grow with
the corpus.

seqio cache (`use_cached`, `CachedShardStream`): when every training language's Task has a
complete cache built by `atlas_t5x.preprocess.seqio_cache` for this vocabulary and split (checked
by `task_cache.check_cache`; found by seqio's own rule, `Task.cache_dir`), the streams read the
token ids from it instead of tokenising: cached shard k is source file k's training documents in line order, each
with its line, so files, blocks, shuffles and cursors are the streamed ones. The batches, the
per-language accounting and the state are identical (a run may switch modes on resume).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zlib
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import gin
import numpy as np

from atlas_t5x.data import accounting as accounting_lib
from atlas_t5x.data import madlad
from atlas_t5x.data import mixtures as mixtures_lib
from atlas_t5x.data import stats as stats_lib
from atlas_t5x.data import vocab as vocab_lib
from atlas_t5x.data.accounting import TokenAccounting
from atlas_t5x_tasks import madlad as madlad_tasks  # the seqio Tasks (repo folder tasks/) / Mixtures the trainer reads
from atlas_t5x_tasks import mixtures as mixture_tasks

STATE_KIND = "atlas_packed_stream"
STATE_VERSION = 2
BLOCK_DOCS = 1024  # [our choice] training documents shuffled together (memory: one block)


def encode_texts(texts: Sequence[str], vocab) -> list[list[int]]:
    """Token ids of each text (no EOS), batched through SentencePiece when the vocabulary has it."""
    tokenizer = getattr(vocab, "tokenizer", None) if hasattr(vocab, "sp_model") else None
    if tokenizer is not None and getattr(vocab, "_extra_ids", 0) == 0:
        return tokenizer.EncodeAsIds(list(texts))
    return [vocab.encode(t) for t in texts]


def tokens_of_documents(texts: Sequence[str], vocab) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32, document-start flags bool): each text's ids followed by EOS, concatenated."""
    eos = int(vocab.eos_id)
    pieces = encode_texts(texts, vocab)
    lengths = np.fromiter((len(p) + 1 for p in pieces), dtype=np.int64, count=len(pieces))
    total = int(lengths.sum())
    tokens = np.full(total, eos, dtype=np.int32)
    starts = np.zeros(total, dtype=bool)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    if total:
        starts[offsets] = True
        flat = np.fromiter((t for p in pieces for t in p), dtype=np.int32, count=total - len(pieces))
        keep = np.ones(total, dtype=bool)
        keep[offsets + lengths - 1] = False
        tokens[keep] = flat
    return tokens, starts


@dataclasses.dataclass
class _Block:
    tokens: np.ndarray
    starts: np.ndarray
    next_line: int
    end_of_file: bool


class ShardStream:
    """One language's training tokens in one input shard, as an infinite, resumable stream."""

    def __init__(self, source: madlad.MadladSource, vocab, shard_index: int, num_shards: int, seed: int,
                 block_docs: int = BLOCK_DOCS, bad: madlad.BadRecords | None = None,
                 train_fraction: float = 1.0):
        self.source = source
        self.train_fraction = float(train_fraction)   # < 1: a data-constrained subset (stats.in_train_fraction)
        self.lang = source.lang
        self.vocab = vocab
        self.shard_index, self.num_shards = shard_index, num_shards
        self.files, self.by_element = madlad.shard_files(source.paths, shard_index, num_shards)
        self.thresholds = source.thresholds()
        self.seed = int(seed)
        self.block_docs = int(block_docs)
        self.bad = bad if bad is not None else madlad.BadRecords()
        self._lang_key = zlib.crc32(self.lang.encode("utf-8"))
        self.epoch, self.file_pos, self.line, self.offset = 0, 0, 0, 0
        self._block: _Block | None = None
        self._reader: tuple[int, int, Iterator] | None = None  # (file index, next line, iterator)
        self._orders: dict[int, list[int]] = {}

    # -- position
    def cursor(self) -> dict[str, int]:
        return {"epoch": self.epoch, "file": self.file_pos, "line": self.line, "offset": self.offset}

    def restore(self, cursor: Mapping[str, int]) -> None:
        self.epoch, self.file_pos = int(cursor["epoch"]), int(cursor["file"])
        self.line, self.offset = int(cursor["line"]), int(cursor["offset"])
        self._block = None
        if not 0 <= self.file_pos < len(self.files):
            raise ValueError(f"language {self.lang!r} input shard {self.shard_index}: saved file position "
                             f"{self.file_pos} is outside its {len(self.files)} file(s)")

    # -- reading
    def _file_order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, self._lang_key, self.shard_index, epoch])
            self._orders = {epoch: [self.files[i] for i in rng.permutation(len(self.files))]}
        return self._orders[epoch]

    def _training_documents(self, file_index: int, start_line: int) -> Iterator[tuple[int, object]]:
        """(line, text) of this input shard's training documents in file `file_index`, from line
        `start_line` on, in line order."""
        for index, text in madlad.iter_shard(self.source.paths[file_index], self.source.skip_bad_records,
                                             self.bad, start_line=start_line):
            if self.by_element and index % self.num_shards != self.shard_index:
                continue
            if stats_lib.split_of(text, self.thresholds) == "train" and (
                    self.train_fraction >= 1.0 or stats_lib.in_train_fraction(text, self.thresholds, self.train_fraction)):
                yield index, text

    def _encode(self, documents: Sequence) -> tuple[np.ndarray, np.ndarray]:
        return tokens_of_documents(documents, self.vocab)

    def _load_block(self) -> _Block:
        file_index = self._file_order(self.epoch)[self.file_pos]
        if self._reader is None or self._reader[:2] != (file_index, self.line):
            self._reader = (file_index, self.line, self._training_documents(file_index, self.line))
        documents = self._reader[2]
        docs: list = []
        next_line, end_of_file = self.line, True
        for index, doc in documents:
            docs.append(doc)
            if len(docs) == self.block_docs:
                next_line, end_of_file = index + 1, False
                break
        self._reader = None if end_of_file else (file_index, next_line, documents)
        rng = np.random.default_rng([self.seed, self._lang_key, self.shard_index, self.epoch,
                                     file_index, self.line])
        docs = [docs[i] for i in rng.permutation(len(docs))]
        tokens, starts = self._encode(docs)
        return _Block(tokens, starts, next_line, end_of_file)

    def _current(self) -> _Block:
        empty_files = 0
        while True:
            if self._block is None:
                self._block = self._load_block()
                if self.offset > len(self._block.tokens):
                    raise ValueError(f"language {self.lang!r}: saved offset {self.offset} lies beyond the "
                                     f"block at {self.cursor()} ({len(self._block.tokens)} tokens); "
                                     f"the data changed since the checkpoint")
            if self.offset < len(self._block.tokens):
                return self._block
            block = self._block
            if len(block.tokens) == 0 and block.end_of_file:
                empty_files += 1
                if empty_files > len(self.files):
                    raise madlad.CorpusError(
                        f"language {self.lang!r}: input shard {self.shard_index} of {self.num_shards} "
                        f"has no training documents (too little data for {self.num_shards} input shards?)")
            if block.end_of_file:
                self.file_pos, self.line = self.file_pos + 1, 0
                if self.file_pos == len(self.files):
                    self.epoch, self.file_pos = self.epoch + 1, 0
            else:
                self.line = block.next_line
            self.offset = 0
            self._block = None

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The next `count` tokens, their document-start flags, and the token before them."""
        tokens, starts = [], []
        previous = None
        while count > 0:
            block = self._current()
            if previous is None:
                previous = int(block.tokens[self.offset - 1]) if self.offset else 0
            n = min(count, len(block.tokens) - self.offset)
            tokens.append(block.tokens[self.offset:self.offset + n])
            starts.append(block.starts[self.offset:self.offset + n])
            self.offset += n
            count -= n
        return np.concatenate(tokens), np.concatenate(starts), previous or 0

    def rows(self, n_rows: int, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next n_rows rows of this stream: (targets, inputs, doc_start), each [n_rows, seq_len]."""
        tokens, starts, previous = self.take(n_rows * seq_len)
        inputs = np.concatenate([[previous], tokens[:-1]]).astype(np.int32)
        inputs[starts] = 0
        shape = (n_rows, seq_len)
        return tokens.reshape(shape), inputs.reshape(shape), starts.reshape(shape)


class CachedShardStream(ShardStream):
    """`ShardStream` over the seqio cache of the language's Task: the same documents, order,
    blocks, seeds and cursor, token ids read from the cache instead of tokenised.

    Cached train shard k holds source file k's training documents in line order with their
    "source_line" (`data/task_cache.py`). The stream reads that one file with TensorFlow's record
    reader and parses each tf.Example, then appends EOS as the Task's post-cache step does.
    [our choice: seqio's own reader, `Task.get_dataset(use_cached=True, shard_info=...)`, gives
    the same examples but starts ~45 threads per open file and reads ~10x slower per document;
    a 419-language run keeps one open file per (language, input shard).] A restart skips the
    records before the saved line (parsing only, no tokenisation).
    """

    def __init__(self, task, *args, **kwargs):
        super().__init__(task.source, *args, **kwargs)
        self.task_dir = task.cache_dir
        self.eos_id = int(self.vocab.eos_id)

    def _training_documents(self, file_index: int, start_line: int) -> Iterator[tuple[int, np.ndarray]]:
        import tensorflow as tf  # noqa: PLC0415
        from tensorflow.python.util import deprecation  # noqa: PLC0415

        from atlas_t5x.data import task_cache  # noqa: PLC0415

        path = task_cache.shard_path(self.task_dir, "train", file_index, len(self.source.paths))
        line_key = madlad_tasks.SOURCE_LINE
        with deprecation.silence():  # the v1 name is the thread-free reader; its notice is noise here
            records = tf.compat.v1.io.tf_record_iterator(path)
        for record in records:
            feature = tf.train.Example.FromString(record).features.feature
            line = int(feature[line_key].int64_list.value[0])
            if line < start_line or (self.by_element and line % self.num_shards != self.shard_index):
                continue
            ids = feature["targets"].int64_list.value
            document = np.empty(len(ids) + 1, np.int32)
            document[:-1] = ids
            document[-1] = self.eos_id
            yield line, document

    def _encode(self, documents: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if not documents:
            return np.zeros(0, np.int32), np.zeros(0, bool)
        tokens = np.concatenate(documents)  # each ends with EOS
        starts = np.zeros(len(tokens), dtype=bool)
        starts[np.cumsum([0] + [len(d) for d in documents[:-1]])] = True
        return tokens, starts


def segments_and_positions(new_segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment ids (1-based per row) and positions from a [rows, T] bool 'segment starts here'."""
    length = new_segment.shape[1]
    columns = np.arange(length, dtype=np.int32)
    segment_ids = np.cumsum(new_segment, axis=1, dtype=np.int32)
    last_start = np.maximum.accumulate(np.where(new_segment, columns, 0), axis=1)
    return segment_ids, (columns - last_start).astype(np.int32)


def allgather_json(local: Mapping, process_count: int) -> list[dict]:
    """Every process's JSON-serialisable `local`, in process order (a collective)."""
    if process_count == 1:
        return [json.loads(json.dumps(local))]
    from jax.experimental import multihost_utils  # noqa: PLC0415

    blob = np.frombuffer(json.dumps(local, sort_keys=True).encode(), dtype=np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([blob.size], np.int32))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:blob.size] = blob
    gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, lengths)]


class TrainPipeline:
    """Iterator over host-local packed train batches; see the module docstring.

    Attributes:
      languages: training languages (mixture order); `decoder_lang_ids` index into it.
      seq_len: tokens per row. global_batch: rows per step over all processes.
      rows: this process's rows per batch (global_batch // process_count).
      num_input_shards: S, the input shards the global batch is made of.
      mixture: the `mixtures.Mixture` being sampled.
      cache_dirs: {language: seqio cache folder} of the languages read from a seqio cache
        (`cached_tasks`: {language: its seqio Task with a usable cache}); the others are streamed.
        Both give the same batches and the same state.
    """

    def __init__(
        self,
        mixture: mixtures_lib.Mixture,
        sources: Mapping[str, madlad.MadladSource],
        vocab,
        seq_len: int,
        global_batch: int,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        num_input_shards: int | None = None,
        unique_by_lang: Mapping[str, int] | None = None,
        vocab_name: str = "",
        block_docs: int = BLOCK_DOCS,
        gather: Callable[[Mapping], list[dict]] | None = None,
        cached_tasks: Mapping[str, object] | None = None,
        train_fractions: Mapping[str, float] | None = None,
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
        shards = int(num_input_shards or process_count)
        if shards % process_count or global_batch % shards:
            raise ValueError(f"num_input_shards {shards} must be a multiple of the process count "
                             f"{process_count} and divide global_batch {global_batch}")
        missing = [lang for lang in mixture.languages if lang not in sources]
        if missing:
            raise ValueError(f"mixture {mixture.name!r}: no training data for {missing}")
        self.mixture = mixture
        self.languages = mixture.languages
        self.mixture_name = mixture.name
        self.mixture_weights = dict(mixture.weights)
        self.vocab = vocab
        self.vocab_name = vocab_name or accounting_lib.vocab_fingerprint(vocab)
        self.vocab_size = int(vocab.vocab_size)
        self.seq_len = seq_len
        self.global_batch = global_batch
        self.rows = global_batch // process_count
        self.seed = int(seed)
        self.process_index, self.process_count = process_index, process_count
        self.num_input_shards = shards
        self.rows_per_shard = global_batch // shards
        per_process = shards // process_count
        self.owned_shards = list(range(process_index * per_process, (process_index + 1) * per_process))
        self.sources = {lang: sources[lang] for lang in self.languages}
        self.bad_records = {lang: madlad.BadRecords() for lang in self.languages}
        self.block_docs = int(block_docs)
        self._gather = gather or (lambda local: allgather_json(local, process_count))
        cached_tasks = dict(cached_tasks or {})
        self.cache_dirs = {lang: cached_tasks[lang].cache_dir for lang in self.languages if lang in cached_tasks}

        self.train_fractions = {lang: float(f) for lang, f in (train_fractions or {}).items() if f < 1.0}
        if set(self.train_fractions) & set(cached_tasks):
            raise ValueError(f"languages {sorted(set(self.train_fractions) & set(cached_tasks))} train on a "
                             "fraction of their data and cannot be read from the seqio cache")

        def stream(b: int, lang: str) -> ShardStream:
            args = (vocab, b, shards, self.seed, block_docs, self.bad_records[lang])
            if lang in cached_tasks:
                return CachedShardStream(cached_tasks[lang], *args)
            return ShardStream(self.sources[lang], *args, train_fraction=self.train_fractions.get(lang, 1.0))

        self._streams = {(b, lang): stream(b, lang) for b in self.owned_shards for lang in self.languages}
        self._unique = dict(unique_by_lang) if unique_by_lang is not None else {
            lang: count_unique_tokens(self.sources[lang], vocab, self.train_fractions.get(lang, 1.0))
            for lang in self.languages}
        self._weights = mixture.weight_array()
        self._shard_rows_by_lang = np.zeros(len(self.languages), dtype=np.int64)  # per input shard
        self._rows_total = 0

    @property
    def unique_by_lang(self) -> dict[str, int]:
        return {lang: int(self._unique[lang]) for lang in self.languages}

    def bad_records_by_lang(self) -> dict[str, int]:
        """Records skipped so far per language by this process (skip_bad_records=True)."""
        return {lang: bad.total for lang, bad in self.bad_records.items()}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        langs = mixtures_lib.schedule_next(self._weights, self._shard_rows_by_lang, self.rows_per_shard)
        shape = (self.rows, self.seq_len)
        targets, inputs = np.empty(shape, np.int32), np.empty(shape, np.int32)
        new_segment = np.empty(shape, dtype=bool)
        for k, shard in enumerate(self.owned_shards):
            base = k * self.rows_per_shard
            for lang in np.unique(langs):
                local = base + np.flatnonzero(langs == lang)
                targets[local], inputs[local], new_segment[local] = self._streams[
                    shard, self.languages[lang]].rows(len(local), self.seq_len)
        new_segment[:, 0] = True
        segment_ids, positions = segments_and_positions(new_segment)
        self._shard_rows_by_lang += np.bincount(langs, minlength=len(self.languages))
        self._rows_total += self.global_batch
        host_langs = np.tile(langs, len(self.owned_shards)).astype(np.int32)
        return {
            "decoder_input_tokens": inputs,
            "decoder_target_tokens": targets,
            "decoder_segment_ids": segment_ids,
            "decoder_positions": positions,
            "decoder_loss_weights": np.ones(shape, np.float32),
            "decoder_lang_ids": np.repeat(host_langs[:, None], self.seq_len, axis=1),
        }

    def accounting(self) -> TokenAccounting:
        """GLOBAL tokens consumed so far (all processes): every row is full, seq_len tokens."""
        return self.accounting_at(self.snapshot())

    def snapshot(self) -> dict:
        """This process's position after the batches produced so far: local and cheap (no collective),
        for `atlas_t5x.data.prefetch`, which keeps the position of the last batch the trainer used."""
        return {"rows_total": self._rows_total, "shard_rows": self._shard_rows_by_lang.copy(),
                "cursors": {key: stream.cursor() for key, stream in self._streams.items()}}

    def accounting_at(self, snapshot: Mapping) -> TokenAccounting:
        """GLOBAL tokens consumed at `snapshot` (see `accounting`)."""
        rows = snapshot["shard_rows"] * self.num_input_shards
        return accounting_lib.accounting_from_rows(dict(zip(self.languages, rows.tolist())),
                                                   self.seq_len, self.unique_by_lang)

    def _config(self) -> dict:
        extra = {"train_fractions": self.train_fractions} if self.train_fractions else {}   # absent: old states match
        return {
            **extra,
            "mixture": self.mixture.to_json(),
            "seq_len": self.seq_len,
            "global_batch": self.global_batch,
            "seed": self.seed,
            "vocab": self.vocab_name,
            "unique_by_lang": self.unique_by_lang,
            "num_input_shards": self.num_input_shards,
            "block_docs": self.block_docs,
            "split_thresholds": {lang: s.thresholds().to_json() for lang, s in self.sources.items()},
        }

    def get_state(self) -> dict:
        """JSON-serialisable GLOBAL position (a collective with several processes): rows emitted,
        rows per language, and every input shard's per-language cursor."""
        return self.state_at(self.snapshot())

    def state_at(self, snapshot: Mapping) -> dict:
        """`get_state` of the position `snapshot` (a collective with several processes)."""
        local = {str(b): {lang: dict(snapshot["cursors"][b, lang]) for lang in self.languages}
                 for b in self.owned_shards}
        shards: dict[str, dict] = {}
        for part in self._gather(local):
            shards.update(part)
        rows = (snapshot["shard_rows"] * self.num_input_shards).tolist()
        return {"kind": STATE_KIND, "version": STATE_VERSION, "config": self._config(),
                "rows": snapshot["rows_total"],
                "languages": {lang: {"rows": r} for lang, r in zip(self.languages, rows)},
                "shards": shards}

    def set_state(self, state: Mapping) -> None:
        """Resumes at a position from get_state(); the next batch equals the uninterrupted one."""
        if state.get("kind") != STATE_KIND or state.get("version") != STATE_VERSION:
            raise ValueError(f"pipeline state of kind {state.get('kind')!r} version "
                             f"{state.get('version')!r}; expected {STATE_KIND!r} v{STATE_VERSION}")
        saved = state.get("config", {})
        if saved.get("num_input_shards") != self.num_input_shards:
            raise ValueError(
                f"pipeline state was saved with num_input_shards={saved.get('num_input_shards')} and this "
                f"run has num_input_shards={self.num_input_shards} ({self.process_count} process(es)); "
                f"resume with make_train_pipeline.num_input_shards={saved.get('num_input_shards')} on a "
                f"process count that divides it")
        config = self._config()
        keys = set(config) | ({"train_fractions"} & set(saved))   # a subset run resumes only as one
        differing = sorted(k for k in keys if saved.get(k) != config.get(k))
        if differing:
            raise ValueError(f"pipeline state does not match this pipeline in {differing}: saved "
                             f"{ {k: saved.get(k) for k in differing} }, "
                             f"current { {k: config.get(k) for k in differing} }")
        rows_total = int(state["rows"])
        rows_by_lang = np.array([int(state["languages"][lang]["rows"]) for lang in self.languages],
                                dtype=np.int64)
        expected = mixtures_lib.schedule_counts(self._weights, rows_total // self.num_input_shards)
        if rows_total % self.num_input_shards or not np.array_equal(rows_by_lang, expected * self.num_input_shards):
            raise ValueError(f"pipeline state is inconsistent: per-language rows {rows_by_lang.tolist()} "
                             f"are not the schedule's {(expected * self.num_input_shards).tolist()} after "
                             f"{rows_total} rows")
        for b in self.owned_shards:
            cursors = state["shards"].get(str(b))
            if cursors is None:
                raise ValueError(f"pipeline state has no cursor for input shard {b}")
            for lang in self.languages:
                self._streams[b, lang].restore(cursors[lang])
        self._rows_total = rows_total
        self._shard_rows_by_lang = expected


def count_unique_tokens(source: madlad.MadladSource, vocab, train_fraction: float = 1.0) -> int:
    """U of one language by streaming its training split (tokens + one EOS per document); with
    `train_fraction` < 1, of the subset a data-constrained run trains on (`stats.in_train_fraction`)."""
    total = 0
    batch: list[str] = []
    thresholds = source.thresholds() if train_fraction < 1.0 else None
    for text in source.documents("train"):
        if thresholds is not None and not stats_lib.in_train_fraction(text, thresholds, train_fraction):
            continue
        batch.append(text)
        if len(batch) == 1024:
            total += sum(len(ids) + 1 for ids in encode_texts(batch, vocab))
            batch = []
    return total + sum(len(ids) + 1 for ids in encode_texts(batch, vocab))


def cached_tasks_for(tasks: Mapping[str, object], use_cached, cache_dirs: Sequence[str] = (),
                     unique_by_lang: Mapping[str, int] | None = None) -> dict[str, object]:
    """{language: Task} of the languages the pipeline reads from a seqio cache.

    `cache_dirs` are put first in seqio's global cache folders (like t5x's
    `--seqio_additional_cache_dirs`) and each Task's cache is found by seqio's rule
    (`Task.cache_dir`: the first of those folders holding `{task}/COMPLETED`).
    use_cached=False: none. True: every language, else a ValueError naming the Tasks without a
    cache and the folders searched. "auto": every language if each has one, else none (streaming;
    a WARNING names the languages lacking one when some have one). A cache found for another
    vocabulary, split, corpus or layout is a `task_cache.CacheMismatchError` in both modes
    (`task_cache.check_cache`).
    """
    import seqio  # noqa: PLC0415

    from atlas_t5x.data import task_cache  # noqa: PLC0415

    if not (use_cached == "auto" or isinstance(use_cached, (bool, np.bool_))):
        raise ValueError(f"make_train_pipeline.use_cached must be 'auto', True or False, got {use_cached!r}")
    use_cached = use_cached if use_cached == "auto" else bool(use_cached)
    if use_cached is False:
        return {}
    if isinstance(cache_dirs, str):
        cache_dirs = [cache_dirs]
    configured = [str(d) for d in cache_dirs]   # searched first, then the other global dirs
    seqio.set_global_cache_dirs(configured + [d for d in seqio.get_global_cache_dirs() if d not in configured])
    if not seqio.get_global_cache_dirs() and use_cached == "auto":
        return {}   # nowhere to look (and no per-Task "not cached" lines from seqio)
    found = {lang: task.cache_dir for lang, task in tasks.items()}
    missing = sorted(task.name for lang, task in tasks.items() if not found[lang])
    for lang, task in tasks.items():
        if found[lang]:
            task_cache.check_cache(found[lang], task_cache.manifest_for(task),
                                   (unique_by_lang or {}).get(lang))
    if missing:
        searched = seqio.get_global_cache_dirs()
        message = (f"no complete seqio cache (COMPLETED) of {missing} in the cache folders {searched} "
                   f"(make_train_pipeline.cache_dirs and seqio's global cache dirs); build it with "
                   f"{task_cache.BUILD_HINT} --languages={','.join(t[len(madlad_tasks.TASK_PREFIX):] for t in missing)} "
                   f"--cache_dir=DIR")
        if use_cached is True:
            raise ValueError(f"make_train_pipeline.use_cached=True: {message}")
        if len(missing) < len(tasks):
            logging.warning("train pipeline: streaming every language: %s", message)
        return {}
    return dict(tasks)


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
    num_input_shards: int | None = None,
    stats_path: str | None = None,
    skip_bad_records: bool | None = None,
    block_docs: int = BLOCK_DOCS,
    min_vocab_size: int = 0,
    use_cached: bool | str = "auto",
    cache_dirs: Sequence[str] = (),
    unique_fraction: Mapping[str, float] | None = None,
) -> TrainPipeline:
    """Builds this process's packed train pipeline over a MADLAD-layout corpus (gin seam).

    Args:
      mixture: a mixture name / spec for `mixtures.get_mixture` (e.g. "12v0", "bilingual_es_pt",
        "unimax" with its gin bindings), a weights mapping, or a Mixture. Sized mixtures (unimax,
        temperature) take U from the statistics (all languages under `root` unless
        `get_mixture.languages` is bound).
      vocab: vocabulary name for `vocab.get_vocabulary` ("corpus_spm", "byte", a .model path) or a
        seqio.Vocabulary.
      seq_len: tokens per row. global_batch: rows per step over all processes.
      seed: seeds the file and block orders.
      root: MADLAD-layout folder (None: gin/$MADLAD_DIR, else the embedded corpus).
      process_index, process_count: default jax.process_index() / jax.process_count().
      unique_cache: old name of `stats_path` (kept for configs that bind it).
      num_input_shards: S (see the module docstring); None = the process count.
      stats_path: statistics file (atlas_t5x/data/stats.py) giving thresholds and U; languages it
        lacks are counted by streaming and added to it. None: gin/$MADLAD_STATS, else in memory.
      skip_bad_records: skip (and count) bad corpus records instead of failing; None = the gin
        default `madlad_reading.skip_bad_records`.
      block_docs: training documents shuffled together per block.
      min_vocab_size: refuse a vocabulary with fewer pieces (gin/runs/paper_base.gin sets 64,000
        so a paper run cannot silently use the embedded corpus's 8,192-piece vocabulary).
      use_cached: read the token ids from the seqio cache of the `madlad_{lang}` Tasks
        (`python -m atlas_t5x.preprocess.seqio_cache`) instead of tokenising the shards: "auto"
        when every training language has a complete cache for this vocabulary and split, True to
        require it (error naming what is missing), False to stream. Same batches, accounting and
        resume state either way (a run may switch between the two on resume).
      cache_dirs: folders holding such caches (added to seqio's global cache dirs).
      unique_fraction: {language: f in (0, 1]}: a data-constrained run trains that language on the
        first f of its training split by document hash (`stats.in_train_fraction`; U is counted
        on that subset by streaming it), so it repeats f⁻¹ times more often. Such languages are
        streamed, not read from the seqio cache (use_cached=True is refused).
    """
    if process_index is None or process_count is None:
        import jax  # noqa: PLC0415

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    root = madlad.resolve_madlad_dir(root)
    stats_path = madlad.resolve_stats_path(stats_path or unique_cache)
    vocab_name, vocabulary = _resolve_vocab(vocab)
    if int(vocabulary.vocab_size) < min_vocab_size:
        raise ValueError(
            f"make_train_pipeline: vocabulary {vocab_name!r} has {int(vocabulary.vocab_size)} pieces, fewer "
            f"than min_vocab_size={min_vocab_size}. A paper run needs the 64k MADLAD-400 SentencePiece "
            f"(train it with scripts/train_vocab.py, see README); bind make_train_pipeline.min_vocab_size = 0 "
            f"to run with this vocabulary anyway")

    def size_fn(languages: Sequence[str] | None) -> dict[str, int]:
        languages = madlad.available_languages(root) if languages is None else languages
        return accounting_lib.cached_unique_counts(root, languages, vocab if isinstance(vocab, str) else vocabulary,
                                                   stats_path, skip_bad_records)

    resolved = mixtures_lib.get_mixture(mixture, size_fn=size_fn)
    tasks = {lang: madlad_tasks.madlad_task(lang, root, vocabulary, stats_path, skip_bad_records)
             for lang in resolved.languages}
    seqio_mixture = mixture_tasks.seqio_mixture(resolved, tasks)
    sources, task_vocab = {}, vocabulary
    for task in seqio_mixture.tasks:
        lang = task.name[len(madlad_tasks.TASK_PREFIX):]
        sources[lang] = task.source
        task_vocab = task.output_features["targets"].vocabulary
    fractions = {}
    for lang, fraction in dict(unique_fraction or {}).items():
        if lang not in sources:
            raise ValueError(f"make_train_pipeline.unique_fraction: {lang!r} is not a language of mixture "
                             f"{resolved.name!r} ({', '.join(sources)})")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"make_train_pipeline.unique_fraction[{lang!r}] must be in (0, 1], got {fraction!r}")
        if fraction < 1:
            fractions[lang] = float(fraction)
    if fractions and use_cached is True:
        raise ValueError(f"make_train_pipeline: languages {sorted(fractions)} train on a fraction of their "
                         "data (unique_fraction), which the seqio cache does not hold; use_cached=True is refused")
    unique = {**size_fn([lang for lang in resolved.languages if lang not in fractions]),
              **{lang: count_unique_tokens(sources[lang], task_vocab, f) for lang, f in fractions.items()}}
    cached = {} if fractions else cached_tasks_for({lang: tasks[lang] for lang in sources}, use_cached,
                                                    cache_dirs, unique)
    logging.info("train pipeline: seqio mixture %s over %d languages, %d input shards, %s; split "
                 "thresholds from: %s", seqio_mixture.name, len(sources), int(num_input_shards or process_count),
                 f"token ids from the seqio cache ({sorted({os.path.dirname(t.cache_dir) for t in cached.values()})})"
                 if cached else "tokenising the streamed shards",
                 sorted({madlad.thresholds_source(root, lang, stats_path, skip_bad_records) for lang in sources}))
    return TrainPipeline(resolved, sources, task_vocab, seq_len, global_batch, seed, process_index,
                         process_count, num_input_shards, unique, vocab_name=vocab_name,
                         block_docs=block_docs, cached_tasks=cached, train_fractions=fractions)


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


def first_documents(texts: Iterable[str], vocab, token_budget: int) -> list[str]:
    """The leading documents of a stream whose tokens (EOS included) total at most `token_budget`
    (at least one document); stops reading as soon as the budget is reached."""
    taken: list[str] = []
    total = 0
    for text in texts:
        n = len(vocab.encode(text)) + 1
        if taken and total + n > token_budget:
            break
        taken.append(text)
        total += n
        if total >= token_budget:
            break
    return taken


@gin.configurable
def make_eval_set(lang: str, vocab, seq_len: int, batch_size: int, token_budget: int,
                  root: str | None = None, split: str = "validation") -> EvalSet:
    """Deterministic eval batches of `lang` (see `pack_eval_documents`): the first documents of its
    validation split (or `split="test"`, the paper's held-out MADLAD test split) in shard and line
    order, up to `token_budget` tokens. Streams the split and stops at the budget."""
    if split not in ("validation", "test"):
        raise ValueError(f"eval set for {lang!r}: split must be 'validation' or 'test', got {split!r}")
    mixtures_lib.check_language(lang)
    root = madlad.resolve_madlad_dir(root)
    _, vocabulary = _resolve_vocab(vocab)
    docs = first_documents(madlad.iter_split(root, lang, split), vocabulary, token_budget)
    return pack_eval_documents(lang, docs, vocabulary, seq_len, batch_size, token_budget)
