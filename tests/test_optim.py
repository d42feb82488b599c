"""Schedules, phases, the AdamW chain, gradient accumulation and the paper batch rule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from atlas_t5x import models, optim

PEAK = 2e-4


def _lrs(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_wsd_values_at_key_steps():
    s = optim.make_schedule("wsd", peak_lr=PEAK, total_steps=1000, warmup_steps=100, decay_fraction=0.1)
    steps = [0, 50, 100, 500, 899, 900, 950, 1000]
    expected = [0.0, PEAK / 2, PEAK, PEAK, PEAK, PEAK, PEAK / 2, 0.0]
    np.testing.assert_allclose(_lrs(s, steps), expected, rtol=1e-6, atol=1e-12)


def test_wsd_final_lr_fraction_and_rounded_decay_start():
    s = optim.make_schedule("wsd", peak_lr=PEAK, total_steps=105, warmup_steps=10,
                            decay_fraction=0.1, final_lr_fraction=0.1)
    assert optim.decay_start_step(105, 0.1) == 95  # round(10.5) = 10 decay steps
    np.testing.assert_allclose(_lrs(s, [94, 95, 100, 105]), [PEAK, PEAK, 0.55 * PEAK, 0.1 * PEAK], rtol=1e-5)


def test_cosine_and_constant():
    cos = optim.make_schedule("cosine", peak_lr=PEAK, total_steps=1100, warmup_steps=100)
    np.testing.assert_allclose(_lrs(cos, [50, 100, 600, 1100]), [PEAK / 2, PEAK, PEAK / 2, 0.0],
                               rtol=1e-5, atol=1e-12)
    const = optim.make_schedule("constant", peak_lr=PEAK, total_steps=10, warmup_steps=4)
    np.testing.assert_allclose(_lrs(const, [2, 4, 10, 10_000]), [PEAK / 2, PEAK, PEAK, PEAK], rtol=1e-6)


def test_schedule_phases():
    phase = lambda step, kind="wsd": optim.schedule_phase(step, 1000, 100, kind=kind)
    assert [phase(s) for s in (0, 99, 100, 899, 900, 999)] == [
        "warmup", "warmup", "stable", "stable", "decay", "decay"]
    assert phase(500, "cosine") == "decay" and phase(999, "constant") == "stable"
    assert phase(50, "cosine") == "warmup"


def test_bad_schedule_arguments_are_named():
    with pytest.raises(ValueError, match="'linear'"):
        optim.make_schedule("linear", total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        optim.make_schedule("wsd")
    with pytest.raises(ValueError, match="warmup_steps 1000 exceeds the 18 steps"):
        optim.make_schedule("wsd", total_steps=20, warmup_steps=1000)


def _params():
    return {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) / 10, "scale": jnp.ones(3)}


def test_weight_decay_on_matrices_only():
    opt = optim.make_optimizer(optax.constant_schedule(0.1), weight_decay=0.5)
    params = _params()
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * params["w"], rtol=1e-6)
    np.testing.assert_array_equal(updates["scale"], 0.0)


def test_clipping_bounds_the_first_update():
    # First Adam step is lr·sign(g) regardless of scale, so look at the clipped gradient itself.
    clip = optim.make_optimizer(optax.constant_schedule(1.0), clip_norm=1.0, weight_decay=0.0)
    grads = {"w": jnp.full((2, 3), 100.0), "scale": jnp.zeros(3)}
    state = clip.init(_params())
    _, new_state = clip.update(grads, state, _params())
    mu = new_state[1][0].mu["w"]  # chain(clip, adamw): adamw's first moment = (1-b1)·clipped grad
    np.testing.assert_allclose(float(jnp.linalg.norm(mu / 0.1)), 1.0, rtol=1e-5)


def test_gradient_accumulation_equals_one_step_on_the_mean_gradient():
    sched = optim.make_schedule("constant", peak_lr=0.01, total_steps=10, warmup_steps=0)
    params = _params()
    g1 = {"w": jnp.ones((2, 3)), "scale": jnp.array([1.0, -2.0, 3.0])}
    g2 = {"w": -3 * jnp.ones((2, 3)), "scale": jnp.array([0.5, 0.0, -1.0])}

    acc = optim.make_optimizer(sched, accumulation_steps=2)
    state = acc.init(params)
    p = params
    for g in (g1, g2):
        u, state = acc.update(g, state, p)
        p = optax.apply_updates(p, u)

    one = optim.make_optimizer(sched)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    u, _ = one.update(mean, one.init(params), params)
    expected = optax.apply_updates(params, u)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(p["w"], params["w"])


def test_paper_batch_size_thresholds():
    assert [optim.paper_batch_size(n) for n in (149_999_999, 150_000_000, 999_999_999,
                                                1_000_000_000, 1_999_999_999, 2_000_000_000)] == [
        256, 512, 512, 1024, 1024, 2048]
    # scale8 = 146M, scale9 = 163M, scale32 = 1.81B, scale33 = 2.01B, scale46 = 8.45B.
    assert [optim.paper_batch_size(f"scale{i}") for i in (8, 9, 32, 33, 46)] == [256, 512, 1024, 2048, 2048]
    assert optim.paper_batch_size(models.SCALES["scale0"]) == 256
