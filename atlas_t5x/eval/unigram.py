"""Unigram statistics and the vocabulary-insensitive loss of Tao et al. (2024).

The loss in the ATLAS spec (§3) is

    L_u = -(1/T) * sum_i log( p(w_i | w_<i) / p_uni(w_i) )
        = CE + (1/T) * sum_i log p_uni(w_i),

with CE the token cross-entropy in nats/token. Subtracting the unigram surprisal removes most of
the loss's dependence on how the vocabulary cuts text into tokens, so losses of models with
different vocabularies (or of languages that a vocabulary splits finely) become comparable.

`p_uni` are the token frequencies of the *training* split of the target language, counted with
the run's vocabulary and smoothed with add-alpha (Laplace, alpha=1 by default) smoothing over all
V rows, so tokens never seen in training still get a finite log-probability:

    p_uni(w) = (count(w) + alpha) / (total + alpha * V).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def count_unigrams(token_arrays: Iterable[np.ndarray], vocab_size: int) -> np.ndarray:
    """Counts token ids over `token_arrays` → int64 array [vocab_size].

    Ids outside [0, vocab_size) raise ValueError (they mean the wrong vocabulary was used).
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    for arr in token_arrays:
        ids = np.asarray(arr).reshape(-1)
        if ids.size == 0:
            continue
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(
                f"token id out of range [0, {vocab_size}): min {ids.min()}, max {ids.max()}"
            )
        counts += np.bincount(ids, minlength=vocab_size).astype(np.int64)
    return counts


def unigram_log_probs(counts: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Add-`alpha` smoothed unigram log-probabilities (nats) from counts [V] → float64 [V]."""
    counts = np.asarray(counts, dtype=np.float64)
    if alpha <= 0 and np.any(counts == 0):
        raise ValueError("alpha must be > 0 when some tokens have zero count")
    return np.log(counts + alpha) - np.log(counts.sum() + alpha * counts.size)


def sum_unigram_log_prob(
    log_probs: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """sum_i weight_i * log p_uni(target_i), nats (weights are 0 on padding)."""
    targets = np.asarray(targets)
    lp = np.asarray(log_probs, dtype=np.float64)[targets]
    if weights is not None:
        lp = lp * np.asarray(weights, dtype=np.float64)
    return float(lp.sum())


def unigram_normalized_loss(sum_nll: float, sum_unigram_lp: float, n_tokens: float) -> float:
    """Tao et al.'s vocabulary-insensitive loss, nats/token: (sum_nll + sum log p_uni) / T."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    return (float(sum_nll) + float(sum_unigram_lp)) / float(n_tokens)


def bits_per_byte(sum_nll: float, n_bytes: int) -> float:
    """Cross-entropy of the scored text in bits per UTF-8 byte (sum_nll in nats)."""
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    return float(sum_nll) / (np.log(2.0) * float(n_bytes))
