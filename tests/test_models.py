"""DecoderLM family: spec parameter counts, FLOPs, masking, packing, numerics."""

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
    cfg = models.get_model_config("tiny3", vocab_size=512)
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


def test_remat_gives_same_gradients():
    tokens = jnp.arange(24, dtype=jnp.int32).reshape(2, 12) % VOCAB
    grads = []
    for remat in (False, True):
        model, variables = _init(_tiny("tiny0", remat=remat))
        loss = lambda v: jnp.mean(jax.nn.logsumexp(model.apply(v, tokens), axis=-1))
        grads.append(jax.jit(jax.grad(loss))(variables))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_every_gin_model_file_builds_its_named_scale():
    import gin
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "gin" / "models").glob("*.gin"))
    assert {f.stem for f in files} == set(models.SCALES)  # 47 spec scales + the tiny sizes
    for path in files:
        gin.clear_config()
        try:
            gin.parse_config_file(str(path))
            assert models.ModelConfig() == models.SCALES[path.stem], path.name
        finally:
            gin.clear_config()
