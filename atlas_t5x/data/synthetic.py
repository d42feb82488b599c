"""A deterministic, resumable synthetic token stream with the train-pipeline interface.

For tests, smoke runs and throughput measurements without a corpus. It yields the same host-local
batch dicts as `atlas_t5x.data.pipeline` and keeps the same GLOBAL token accounting, so the trainer
cannot tell the two apart.

Each row of the global batch is one document of one language, followed by padding. The language of
a row is drawn with the mixture weights; its length uniformly from [seq_len // 2, seq_len]. Tokens
of language i live in their own band of the vocabulary and mostly follow an arithmetic progression
with a language-specific stride (10% are random tokens of the band), so a model can learn them and
the loss falls within a few dozen steps [our choice].

Everything about batch b is a function of (seed, b) only: the row languages and lengths of the whole
global batch come from one generator, the tokens of each row from a generator keyed by the row, so
each process materialises only its own rows but counts tokens for all of them.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import gin
import numpy as np

from atlas_t5x.data.accounting import TokenAccounting

_NOISE_RATE = 0.1
_FIRST_TOKEN = 1  # 0 is the shifted-in BOS / padding id.


class SyntheticPipeline:
    """Iterator over host-local synthetic batches; see the module docstring."""

    def __init__(
        self,
        languages: Sequence[str],
        weights: Sequence[float] | None,
        seq_len: int,
        global_batch: int,
        vocab_size: int,
        seed: int,
        unique_tokens_per_lang: int,
        process_index: int,
        process_count: int,
    ):
        if not languages:
            raise ValueError("synthetic pipeline needs at least one language")
        if weights is None:
            weights = [1.0] * len(languages)
        if len(weights) != len(languages) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights {list(weights)} must be non-negative, one per language {list(languages)}")
        if global_batch % process_count:
            raise ValueError(
                f"global_batch {global_batch} is not divisible by the number of processes {process_count}"
            )
        band = (vocab_size - _FIRST_TOKEN) // len(languages)
        if band < 2:
            raise ValueError(f"vocab_size {vocab_size} is too small for {len(languages)} languages")
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        self.languages = list(languages)
        total = float(sum(weights))
        self.mixture_name = "synthetic"
        self.mixture_weights = {l: float(w) / total for l, w in zip(languages, weights)}
        self.vocab_name = "synthetic"
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.global_batch = global_batch
        self.rows = global_batch // process_count
        self._first_row = process_index * self.rows
        self._seed = seed
        self._probs = np.asarray(weights, np.float64) / total
        self._band = band
        self._strides = 1 + np.arange(len(languages)) * 2  # distinct per language, small.
        self._unique = unique_tokens_per_lang
        self._batch_index = 0
        self._tokens = np.zeros(len(languages), np.int64)

    def _fingerprint(self) -> dict:
        return {
            "languages": self.languages,
            "seq_len": self.seq_len,
            "global_batch": self.global_batch,
            "vocab_size": self.vocab_size,
            "seed": self._seed,
        }

    def _global_layout(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self._seed, index])
        langs = rng.choice(len(self.languages), size=self.global_batch, p=self._probs)
        lengths = rng.integers(self.seq_len // 2, self.seq_len + 1, size=self.global_batch)
        return langs, lengths

    def _row_tokens(self, index: int, row: int, lang: int) -> np.ndarray:
        rng = np.random.default_rng([self._seed, index, row, 1])
        start = rng.integers(self._band)
        walk = (start + self._strides[lang] * np.arange(self.seq_len)) % self._band
        noisy = rng.random(self.seq_len) < _NOISE_RATE
        walk = np.where(noisy, rng.integers(self._band, size=self.seq_len), walk)
        return (_FIRST_TOKEN + lang * self._band + walk).astype(np.int32)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        index = self._batch_index
        langs, lengths = self._global_layout(index)
        rows = range(self._first_row, self._first_row + self.rows)
        positions = np.arange(self.seq_len, dtype=np.int32)[None, :]
        is_token = positions < lengths[list(rows), None]
        targets = np.stack([self._row_tokens(index, r, langs[r]) for r in rows]) * is_token
        inputs = np.concatenate([np.zeros((self.rows, 1), np.int32), targets[:, :-1]], axis=1)
        batch = {
            "decoder_input_tokens": inputs.astype(np.int32),
            "decoder_target_tokens": targets.astype(np.int32),
            "decoder_segment_ids": is_token.astype(np.int32),
            "decoder_positions": np.where(is_token, positions, 0).astype(np.int32),
            "decoder_loss_weights": is_token.astype(np.float32),
            "decoder_lang_ids": np.where(is_token, langs[list(rows), None], -1).astype(np.int32),
        }
        self._tokens += np.bincount(langs, weights=lengths, minlength=len(self.languages)).astype(np.int64)
        self._batch_index += 1
        return batch

    def get_state(self) -> dict:
        """JSON-serialisable position: batches produced and global tokens counted so far."""
        return self.state_at(self.snapshot())

    def snapshot(self) -> dict:
        """The position after the batches produced so far (local, cheap; atlas_t5x.data.prefetch)."""
        return {"batch_index": self._batch_index, "tokens": self._tokens.copy()}

    def state_at(self, snapshot: dict) -> dict:
        """`get_state` of the position `snapshot`."""
        return {
            "kind": "synthetic",
            "config": self._fingerprint(),
            "batch_index": snapshot["batch_index"],
            "tokens_by_lang": dict(zip(self.languages, map(int, snapshot["tokens"]))),
        }

    def set_state(self, state: dict) -> None:
        """Resumes at a position from get_state(); the next batch equals the uninterrupted one."""
        if state.get("kind") != "synthetic" or state.get("config") != self._fingerprint():
            raise ValueError(
                f"pipeline state {state.get('kind')!r} with config {state.get('config')} does not "
                f"match this synthetic pipeline {self._fingerprint()}"
            )
        self._batch_index = int(state["batch_index"])
        self._tokens = np.array([int(state["tokens_by_lang"][l]) for l in self.languages], np.int64)

    def accounting(self) -> TokenAccounting:
        """Global (all processes) non-padding tokens consumed so far, per language."""
        return self.accounting_at(self.snapshot())

    def accounting_at(self, snapshot: dict) -> TokenAccounting:
        """`accounting` at the position `snapshot`."""
        return TokenAccounting(
            tokens_by_lang=dict(zip(self.languages, map(int, snapshot["tokens"]))),
            unique_by_lang={l: self._unique for l in self.languages},
        )


@gin.configurable
def make_synthetic_pipeline(
    languages: Sequence[str] = ("en", "fr"),
    weights: Sequence[float] | None = None,
    seq_len: int = 64,
    global_batch: int = 8,
    vocab_size: int = 256,
    seed: int = 0,
    unique_tokens_per_lang: int = 1_000_000,
    process_index: int | None = None,
    process_count: int | None = None,
) -> SyntheticPipeline:
    """Builds the synthetic train pipeline for this process (gin: `train.pipeline_factory`).

    Args:
      languages: language codes, indices of `decoder_lang_ids`.
      weights: sampling rate per language (normalised; default uniform).
      seq_len: tokens per row.
      global_batch: rows per step over all processes.
      vocab_size: token ids are drawn from [1, vocab_size); must not exceed the model's.
      seed: everything is a function of (seed, batch index).
      unique_tokens_per_lang: U reported by accounting() (synthetic data has no real value).
      process_index, process_count: default to jax.process_index() / jax.process_count().
    """
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return SyntheticPipeline(
        languages, weights, seq_len, global_batch, vocab_size, seed, unique_tokens_per_lang,
        process_index, process_count,
    )
