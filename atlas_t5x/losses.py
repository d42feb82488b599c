"""Token-level cross-entropy (nats) with loss weights; no z-loss (spec §3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def token_nll(logits: Array, targets: Array) -> Array:
    """Negative log-likelihood in nats per position [...], float32, via a stable logsumexp."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return log_z - target_logit


def token_cross_entropy_per_example(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
    """Per-example weighted NLL sum (nats) and weight sum (tokens), both float32 [B].

    Args:
      logits: [B, T, V] scores.
      targets: [B, T] int token ids.
      weights: [B, T] loss weights (0 on padding).
    """
    weights = weights.astype(jnp.float32)
    nll = token_nll(logits, targets) * weights
    return jnp.sum(nll, axis=-1), jnp.sum(weights, axis=-1)


def token_cross_entropy(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
    """Weighted NLL summed over the batch (nats) and the number of weighted tokens.

    Mean loss per token is ``sum_nll / n_tokens``; returning both lets callers average
    exactly across micro-batches, hosts and languages.
    """
    sum_nll, n_tokens = token_cross_entropy_per_example(logits, targets, weights)
    return jnp.sum(sum_nll), jnp.sum(n_tokens)
