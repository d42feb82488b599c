"""DecoderLM family: spec parameter counts, FLOPs, masking, packing, numerics."""

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from atlas_t5x import models

# N column of the spec's §3 table (V = 64512), scale0..scale46.
SPEC_N = [
    9_044_352, 17_662_848, 24_847_776, 45_763_200, 66_588_672, 84_939_840, 106_830_080,
    126_492_800, 146_155_520, 162_800_640, 191_114_496, 219_428_352, 237_646_080,
    263_337_984, 289_029_888, 334_512_128, 368_068_608, 401_625_088, 554_457_600,
    633_104_640, 661_807_872, 711_751_680, 756_970_368, 816_345_600, 852_132_864,
    929_596_416, 1_042_847_232, 1_143_245_824, 1_297_391_872, 1_451_537_920,
    1_608_560_640, 1_807_137_536, 1_809_893_376, 2_011_226_112, 2_034_422_912,
    2_187_122_688, 2_261_708_288, 2_526_870_528, 2_866_618_368, 2_891_514_880,
    3_310_955_520, 3_730_396_160, 4_335_303_168, 4_749_364_224, 5_182_299_648,
    5_634_109_440, 8_452_190_208,
]

VOCAB = 97


def _tiny(name="tiny1", **kw):
    kw.setdefault("vocab_size", VOCAB)
    kw.setdefault("dropout_rate", 0.0)
    return models.get_model_config(name, **kw)


class _Jitted:
    """DecoderLM with a jitted ``apply`` (op-by-op execution is slow on CPU)."""

    def __init__(self, cfg):
        self.module = models.DecoderLM(cfg)
        self.apply = jax.jit(self.module.apply, static_argnames=("deterministic",))


def _init(cfg, length=12, batch=2):
    model = _Jitted(cfg)
    tokens = jnp.zeros((batch, length), jnp.int32)
    variables = jax.jit(model.module.init)(jax.random.PRNGKey(0), tokens)
    return model, variables


@pytest.mark.parametrize("index", range(47))
def test_param_count_matches_spec_table(index):
    cfg = models.SCALES[f"scale{index}"]
    assert cfg.vocab_size == 64512
    assert models.param_count(cfg) == SPEC_N[index]
    assert models.param_count(cfg) - models.nonembed_param_count(cfg) == 64512 * cfg.d_model


@pytest.mark.parametrize("name", ["tiny0", "tiny1", "tiny2", "tiny3", "scale0"])
def test_flax_param_tree_size_equals_param_count(name):
    cfg = models.get_model_config(name, vocab_size=300)
    abstract = jax.eval_shape(models.DecoderLM(cfg).init, jax.random.PRNGKey(0),
                              jnp.zeros((1, 8), jnp.int32))
    leaves = jax.tree.leaves(nn.meta.unbox(abstract["params"]))
    assert sum(int(np.prod(x.shape)) for x in leaves) == models.param_count(cfg)


def test_params_carry_logical_axis_names_of_matching_rank():
    abstract = jax.eval_shape(models.DecoderLM(_tiny()).init, jax.random.PRNGKey(0),
                              jnp.zeros((1, 8), jnp.int32))
    boxes = jax.tree.leaves(abstract["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert boxes and all(isinstance(b, nn.LogicallyPartitioned) for b in boxes)
    for box in boxes:
        assert len(box.names) == box.value.ndim
    assert abstract["params"]["embedding"].names == ("vocab", "embed")


def test_unknown_scale_names_nearest_and_bad_fields_rejected():
    with pytest.raises(ValueError, match="scale4"):
        models.get_model_config("scale4O")
    with pytest.raises(ValueError, match="num_head"):
        models.get_model_config("tiny0", num_head=3)
    with pytest.raises(ValueError, match="d_model"):
        models.get_model_config("tiny0", d_model=0)


def test_flops_per_token_matches_xla_forward_count():
    # XLA counts the full (unmasked) attention square; the model count uses the causal half.
    # Unrolled: XLA's cost analysis counts a loop body once, not once per layer.
    cfg = models.get_model_config("tiny3", vocab_size=512, scan_layers=False)
    batch, length = 2, 64
    model = models.DecoderLM(cfg)
    tokens = jnp.zeros((batch, length), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)
    cost = jax.jit(model.apply).lower(params, tokens).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla_fwd_per_token = cost["flops"] / (batch * length)
    model_fwd_full = (models.flops_per_token(cfg, length) / 3
                      + 2 * cfg.num_layers * cfg.num_heads * cfg.d_kv * length)
    assert xla_fwd_per_token == pytest.approx(model_fwd_full, rel=0.1)
    longer = models.flops_per_token(cfg, 2 * length) - models.flops_per_token(cfg, length)
    assert longer == 6 * cfg.num_layers * cfg.num_heads * cfg.d_kv * length


def test_causal_future_tokens_do_not_change_earlier_logits():
    cfg = _tiny("tiny2")
    model, variables = _init(cfg)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (2, 12)).astype(np.int32)
    changed = tokens.copy()
    changed[:, 7:] = (changed[:, 7:] + 5) % VOCAB
    a = model.apply(variables, tokens)
    b = model.apply(variables, changed)
    assert a.dtype == jnp.float32 and a.shape == (2, 12, VOCAB)
    np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-5)
    assert np.abs(np.asarray(a[:, 7:] - b[:, 7:])).max() > 1e-3


def test_packed_segments_are_isolated_and_positions_restart():
    cfg = _tiny("tiny2")
    model, variables = _init(cfg)
    rng = np.random.default_rng(1)
    first, second = rng.integers(0, VOCAB, 5), rng.integers(0, VOCAB, 7)
    packed = np.concatenate([first, second])[None].astype(np.int32)
    segments = np.array([[1] * 5 + [2] * 7], np.int32)
    positions = np.array([list(range(5)) + list(range(7))], np.int32)
    packed_logits = model.apply(variables, packed, positions=positions, segment_ids=segments)
    alone_first = model.apply(variables, first[None].astype(np.int32))
    alone_second = model.apply(variables, second[None].astype(np.int32))
    np.testing.assert_allclose(packed_logits[:, :5], alone_first, atol=1e-5)
    np.testing.assert_allclose(packed_logits[:, 5:], alone_second, atol=1e-5)


def test_dropout_active_only_when_not_deterministic():
    cfg = _tiny("tiny0", dropout_rate=0.5)
    model, variables = _init(cfg)
    tokens = jnp.arange(24, dtype=jnp.int32).reshape(2, 12)
    det = model.apply(variables, tokens)
    np.testing.assert_array_equal(det, model.apply(variables, tokens, deterministic=True))
    drop = lambda seed: model.apply(variables, tokens, deterministic=False,
                                    rngs={"dropout": jax.random.PRNGKey(seed)})
    np.testing.assert_array_equal(drop(1), drop(1))
    assert np.abs(np.asarray(drop(1) - drop(2))).max() > 1e-3


def test_bfloat16_compute_with_float32_params_tracks_float32():
    cfg32 = _tiny("tiny2")
    model32, variables = _init(cfg32)
    model16 = _Jitted(_tiny("tiny2", dtype="bfloat16"))
    tokens = jnp.arange(24, dtype=jnp.int32).reshape(2, 12) % VOCAB
    logits16 = model16.apply(variables, tokens)
    logits32 = model32.apply(variables, tokens)
    assert logits16.dtype == jnp.float32
    assert jax.tree.leaves(variables)[0].dtype == jnp.float32
    np.testing.assert_allclose(logits16, logits32, atol=0.1)
    assert np.abs(np.asarray(logits16 - logits32)).max() > 0  # bf16 path actually taken


def _packed_batch(rows=2, length=12, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (rows, length)).astype(np.int32)
    cut = length // 2 - 1
    segments = np.where(np.arange(length) < cut, 1, 2)[None].repeat(rows, 0).astype(np.int32)
    segments[:, -2:] = 0  # padding tail
    positions = np.where(segments == 1, np.arange(length), np.arange(length) - cut).astype(np.int32)
    return tokens, positions, segments


def _loss_and_grads(cfg, params, tokens, positions, segments):
    model = models.DecoderLM(cfg)

    def loss(p):
        logits = model.apply({"params": p}, tokens, positions=positions, segment_ids=segments)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[..., 0])

    return jax.jit(jax.value_and_grad(loss))(params)


DEEP = models.scan_unroll_max_layers() + 2  # deeper than the fully unrolled short scans: a real loop


def _deep(**kw):
    """DEEP blocks: deeper than scan_unroll_max_layers(), so the scan runs as a real loop."""
    return models.ModelConfig(name="deep", num_heads=2, num_layers=DEEP, d_model=32, d_ff=64, d_kv=16,
                              vocab_size=VOCAB, dropout_rate=0.0, **kw)


@pytest.fixture(scope="module")
def unrolled_reference():
    """DEEP unrolled blocks: (params, loss, grads) on a packed batch, shared by the scan tests."""
    tokens, positions, segments = _packed_batch()
    unrolled_cfg = _deep(scan_layers=False, remat_policy="none")
    params = nn.meta.unbox(jax.jit(models.DecoderLM(unrolled_cfg).init)(jax.random.PRNGKey(0), tokens)["params"])
    return params, *_loss_and_grads(unrolled_cfg, params, tokens, positions, segments)


@pytest.mark.parametrize("policy", sorted(models.REMAT_POLICIES))
def test_scanned_layers_give_unrolled_loss_and_gradients(policy, unrolled_reference):
    tokens, positions, segments = _packed_batch()
    params, loss_u, grads_u = unrolled_reference
    assert {f"layer_{i}" for i in range(DEEP)} <= set(params)

    scanned_cfg = _deep(scan_layers=True, remat_policy=policy)
    scanned_abstract = jax.eval_shape(models.DecoderLM(scanned_cfg).init, jax.random.PRNGKey(0), tokens)["params"]
    stacked = models.stack_layers(params)
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, nn.meta.unbox(scanned_abstract))
    assert scanned_abstract["layers"]["attention"]["query"].names == ("layers", "embed", "heads", "kv")
    loss_s, grads_s = _loss_and_grads(scanned_cfg, stacked, tokens, positions, segments)

    np.testing.assert_allclose(loss_s, loss_u, rtol=1e-6)
    flat_u = dict(jax.tree_util.tree_leaves_with_path(models.stack_layers(grads_u)))
    for path, g in jax.tree_util.tree_leaves_with_path(grads_s):
        np.testing.assert_allclose(g, flat_u[path], rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    assert float(jnp.abs(grads_s["layers"]["mlp"]["wo"][DEEP - 1]).max()) > 0  # last layer trained
    assert "while" in jax.jit(lambda p: models.DecoderLM(scanned_cfg).apply(
        {"params": p}, tokens)).lower(stacked).as_text()  # a loop, not DEEP copies
    round_trip = models.unstack_layers(stacked)
    np.testing.assert_array_equal(round_trip["layer_1"]["mlp"]["wo"],
                                  params["layer_1"]["mlp"]["wo"])


def test_scanned_program_does_not_grow_with_depth():
    def program_chars(num_layers, scan):
        cfg = models.ModelConfig(name="deep", num_heads=2, num_layers=num_layers, d_model=32, d_ff=64, d_kv=16,
                                 vocab_size=VOCAB, scan_layers=scan)
        model = models.DecoderLM(cfg)
        tokens = jnp.zeros((1, 8), jnp.int32)
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)
        grad = jax.grad(lambda p: jnp.sum(model.apply(p, tokens)))
        return len(jax.jit(grad).lower(params).as_text())

    shallow = models.scan_unroll_max_layers() + 1  # deeper than the fully unrolled short scans
    deep = max(16, 3 * shallow)
    assert program_chars(deep, scan=True) < 1.1 * program_chars(shallow, scan=True)
    assert program_chars(deep, scan=False) > 2 * program_chars(shallow, scan=False)


@pytest.mark.parametrize("implementation,dtype,atol", [
    ("xla", "float32", 1e-5), ("xla", "bfloat16", 2e-2), ("splash", "float32", 1e-5),
    ("blocked", "float32", 1e-5), ("blocked", "bfloat16", 2e-2)])
def test_attention_implementations_match_reference_with_segments(implementation, dtype, atol):
    rng = np.random.default_rng(3)
    rows, length, heads, head_dim = 2, 128, 2, 16
    q, k, v = (jnp.asarray(rng.normal(size=(rows, length, heads, head_dim)), dtype) for _ in range(3))
    segments = np.repeat(np.where(np.arange(length) < 50, 1, 2)[None], rows, 0)
    segments[1, 90:] = 3
    segments[:, -5:] = 0
    segments = jnp.asarray(segments, jnp.int32)

    def summed(impl):
        return lambda q, k, v: jnp.sum(jnp.sin(models.dot_product_attention(q, k, v, segments, impl)
                                               .astype(jnp.float32)))

    ref = models.dot_product_attention(q, k, v, segments, "reference")
    out = models.dot_product_attention(q, k, v, segments, implementation)
    assert out.shape == ref.shape and out.dtype == q.dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32), atol=atol)
    # Segment 2 of row 0 does not see segment 1: changing segment-1 keys leaves it unchanged.
    k2 = k.at[0, :50].set(0)
    changed = models.dot_product_attention(q, k2, v, segments, implementation)
    np.testing.assert_array_equal(np.asarray(changed[0, 50:], np.float32), np.asarray(out[0, 50:], np.float32))
    grads = jax.grad(summed(implementation), argnums=(0, 1, 2))(q, k, v)
    grads_ref = jax.grad(summed("reference"), argnums=(0, 1, 2))(q, k, v)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(g_ref, np.float32), atol=5 * atol)


@pytest.mark.parametrize("block_size", [16, 32, 48, 128])
@pytest.mark.parametrize("with_segments", [True, False])
def test_blocked_attention_matches_reference_values_and_gradients(block_size, with_segments):
    """Several query blocks (48 → 32, the largest divisor of 128 not above it), packed segments
    that start and end inside blocks, padding (segment 0), or no segments at all."""
    rng = np.random.default_rng(5)
    rows, length, heads, head_dim = 2, 128, 3, 8
    q, k, v = (jnp.asarray(rng.normal(size=(rows, length, heads, head_dim)), jnp.float32) for _ in range(3))
    cotangent = jnp.asarray(rng.normal(size=(rows, length, heads, head_dim)), jnp.float32)
    segments = None
    if with_segments:
        segments = np.repeat(np.where(np.arange(length) < 37, 1, 2)[None], rows, 0)
        segments[1, 70:] = 3
        segments[:, -9:] = 0
        segments = jnp.asarray(segments, jnp.int32)
    assert [stop - start for start, stop in models._block_bounds(length, block_size)][0] == min(
        {48: 32}.get(block_size, block_size), length)

    def blocked(q, k, v):
        return models._blocked_attention(q, k, v, segments, block_size)

    def reference(q, k, v):
        return models.dot_product_attention(q, k, v, segments, "reference")

    out, vjp = jax.vjp(jax.jit(blocked), q, k, v)
    out_ref, vjp_ref = jax.vjp(reference, q, k, v)
    np.testing.assert_allclose(out, out_ref, atol=1e-5, rtol=1e-5)
    for g, g_ref in zip(vjp(cotangent), vjp_ref(cotangent)):
        np.testing.assert_allclose(g, g_ref, atol=1e-5, rtol=1e-5)


def test_blocked_attention_is_cpu_auto_and_keeps_model_gradients(monkeypatch):
    monkeypatch.setattr(models, "ATTENTION_BLOCK_SIZE", 5)  # length 12 → 3 blocks of 4 positions
    tokens, positions, segments = _packed_batch()
    cfg = _tiny("tiny2", attention="reference", scan_layers=True, remat_policy="full")
    ref_model, variables = _init(cfg)
    blocked = models.DecoderLM(_tiny("tiny2", attention="auto", scan_layers=True, remat_policy="full"))
    assert models.resolve_attention("auto", jnp.float32, tokens.shape[1]) == "blocked"

    def loss(module):
        def f(params):
            logits = module.apply({"params": params}, tokens, positions=positions, segment_ids=segments)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 0])
        return jax.jit(jax.value_and_grad(f))

    (value, grads), (value_ref, grads_ref) = loss(blocked)(variables["params"]), loss(ref_model.module)(
        variables["params"])
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4), grads, grads_ref)


def test_model_attention_choice_does_not_change_logits():
    tokens, positions, segments = _packed_batch()
    ref_model, variables = _init(_tiny("tiny2", attention="reference", scan_layers=True))
    xla_model = _Jitted(_tiny("tiny2", attention="xla", scan_layers=True))
    np.testing.assert_allclose(xla_model.apply(variables, tokens, positions=positions, segment_ids=segments),
                               ref_model.apply(variables, tokens, positions=positions, segment_ids=segments),
                               atol=1e-5)


def test_unknown_remat_policy_or_attention_lists_valid_names():
    with pytest.raises(ValueError, match="dots_with_no_batch_dims_saveable"):
        _tiny("tiny0", remat_policy="dots")
    with pytest.raises(ValueError, match="cudnn.*splash.*reference"):
        _tiny("tiny0", attention="flash")
    with pytest.raises(ValueError, match="xla"):
        models.dot_product_attention(*(jnp.zeros((1, 4, 1, 8)),) * 3, None, "flash")


def test_auto_attention_is_blocked_on_cpu():
    assert models.resolve_attention("auto", jnp.bfloat16, 2048) == "blocked"
    assert models.resolve_attention("auto", jnp.float32, 512) == "blocked"
    assert models.resolve_attention("cudnn", jnp.float32, 64) == "cudnn"


def test_scan_unroll_limit_follows_the_target_platform_unless_the_config_sets_it():
    # an ahead-of-time TPU compile on this CPU host must build the program a TPU runs (atlas_t5x.aot)
    assert models.scan_unroll_max_layers(platform="cpu") == models.SCAN_UNROLL_MAX_LAYERS_CPU
    assert models.scan_unroll_max_layers(platform="tpu") == models.SCAN_UNROLL_MAX_LAYERS
    assert models.scan_unroll_max_layers() == models.SCAN_UNROLL_MAX_LAYERS_CPU   # tests run on CPU
    cfg = _tiny("tiny2", scan_layers=True)
    assert models.scan_unroll_max_layers(cfg, "tpu") == models.SCAN_UNROLL_MAX_LAYERS
    pinned = dataclasses.replace(cfg, scan_unroll_max_layers=1)
    assert models.scan_unroll_max_layers(pinned, "cpu") == 1
    # a pinned limit changes the program, not the result
    tokens = jnp.arange(24, dtype=jnp.int32).reshape(2, 12) % VOCAB
    model, variables = _init(cfg)
    np.testing.assert_allclose(models.DecoderLM(pinned).apply(variables, tokens), model.apply(variables, tokens),
                               rtol=1e-5, atol=1e-5)


def test_scanned_dropout_depends_only_on_the_key():
    cfg = _tiny("tiny2", dropout_rate=0.5, scan_layers=True)
    model, variables = _init(cfg)
    tokens = jnp.arange(24, dtype=jnp.int32).reshape(2, 12) % VOCAB
    run = lambda seed: model.apply(variables, tokens, deterministic=False, rngs={"dropout": jax.random.PRNGKey(seed)})
    np.testing.assert_array_equal(run(1), run(1))
    assert np.abs(np.asarray(run(1) - run(2))).max() > 1e-3


def test_every_gin_model_file_builds_its_named_scale():
    import gin
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "gin" / "models").glob("*.gin"))
    files = [f for f in files if f.stem.startswith(("scale", "tiny"))]  # demo sizes: gin-only, see sweeps
    assert {f.stem for f in files} == set(models.SCALES)  # 47 spec scales + the tiny sizes
    for path in files:
        gin.clear_config()
        try:
            gin.parse_config_file(str(path))
            assert models.ModelConfig() == models.SCALES[path.stem], path.name
        finally:
            gin.clear_config()
