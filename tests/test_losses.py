"""Weighted token cross-entropy: values, weights, stability."""

import jax
import jax.numpy as jnp
import numpy as np

from atlas_t5x import losses


def test_matches_log_softmax_and_respects_weights():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (2, 5)).astype(np.int32)
    weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -np.take_along_axis(np.asarray(logp), targets[..., None], -1)[..., 0]
    per_sum, per_n = losses.token_cross_entropy_per_example(logits, targets, weights)
    np.testing.assert_allclose(per_sum, (nll * weights).sum(-1), rtol=1e-5)
    np.testing.assert_array_equal(per_n, [3.0, 5.0])
    total, n = losses.token_cross_entropy(logits, targets, weights)
    np.testing.assert_allclose(total, (nll * weights).sum(), rtol=1e-5)
    assert float(n) == 8.0 and total.dtype == jnp.float32


def test_uniform_logits_give_log_vocab_and_large_logits_stay_finite():
    total, n = losses.token_cross_entropy(jnp.zeros((1, 4, 64)), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4)))
    np.testing.assert_allclose(total / n, np.log(64), rtol=1e-6)
    big = jnp.array([[[8192.0, 0.0, -8192.0]]], jnp.bfloat16)  # exact in bf16
    total, _ = losses.token_cross_entropy(big, jnp.array([[1]]), jnp.ones((1, 1)))
    np.testing.assert_allclose(total, 8192.0, rtol=1e-6)
    grad = jax.grad(lambda x: losses.token_cross_entropy(x, jnp.array([[1]]), jnp.ones((1, 1)))[0])(
        big.astype(jnp.float32))
    assert np.isfinite(np.asarray(grad)).all()


def test_fused_tied_loss_matches_materialised_logits_in_value_and_gradient():
    rng = np.random.default_rng(2)
    hidden = jnp.asarray(rng.normal(size=(2, 12, 8)), jnp.float32)
    embedding = jnp.asarray(rng.normal(size=(37, 8)), jnp.float32)
    targets = rng.integers(0, 37, (2, 12)).astype(np.int32)
    weights = np.ones((2, 12), np.float32)
    weights[1, -5:] = 0.0

    def reference(h, e):
        logits = jnp.einsum("btd,vd->btv", h * 0.3, e)
        return losses.token_cross_entropy(logits, targets, weights)

    def fused(h, e):  # chunk 5 does not divide 12: the largest divisor below it (4) is used
        return losses.tied_cross_entropy(h, e, targets, weights, logit_scale=0.3, chunk_size=5)

    (ref_sum, ref_n), (fused_sum, fused_n) = reference(hidden, embedding), fused(hidden, embedding)
    np.testing.assert_allclose(fused_sum, ref_sum, rtol=1e-5)
    assert float(fused_n) == float(ref_n) == 19.0
    ref_grads = jax.grad(lambda h, e: reference(h, e)[0] * 2.0, argnums=(0, 1))(hidden, embedding)
    fused_grads = jax.grad(lambda h, e: fused(h, e)[0] * 2.0, argnums=(0, 1))(hidden, embedding)
    for a, b in zip(fused_grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
