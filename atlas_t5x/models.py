"""The ATLAS decoder-only Transformer family (spec §3) in Flax linen.

Architecture (spec §3, with the [our choice] items marked):

* tied input/output embedding over ``vocab_size`` rows, no biases anywhere;
* **[our choice] parallel block with one RMSNorm per layer**: the spec's parameter
  count has exactly ONE ``d_model`` norm vector per layer and none at the top, so every
  block is ``x + Attn(norm(x)) + MLP(norm(x))`` with a single learned RMSNorm scale
  (the GPT-J / PaLM layout), and the final norm before the output projection is a
  parameter-free RMSNorm. This reproduces every N of the spec's table exactly;
* multi-head causal self-attention with rotary positions **[our choice]**, segment-aware
  for packed sequences;
* SiLU-gated feed-forward with three matrices **[our choice: SiLU]**;
* dropout (``dropout_rate``, 0.1 in the paper) on the embedded input and on the output of
  each attention and feed-forward branch;
* tied output logits are scaled by ``d_model**-0.5`` **[our choice]** (the embedding is
  initialised with unit variance, so input activations have unit RMS and logits start
  near zero), and are always returned in float32.

Parameters are created in ``param_dtype`` and annotated with logical axis names
(``vocab, embed, heads, kv, mlp``); activations carry ``batch, length, embed, heads, kv,
mlp, vocab`` constraints. ``atlas_t5x.partitioning`` maps these names to mesh axes.

Training steps should prefer ``DecoderLM.token_loss`` (fused, chunked output projection
and cross-entropy, no [B, T, V] logits buffer) over ``__call__`` + ``token_cross_entropy``;
figures in benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from atlas_t5x import losses

Array = jax.Array

VOCAB_SIZE = 64512  # 64k SentencePiece pieces + 512 special rows (spec §3).


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of one decoder.

    Attributes:
      name: scale name, e.g. ``"scale34"`` or ``"tiny0"``.
      num_heads: attention heads H.
      num_layers: Transformer blocks L.
      d_model: residual width d (units: features).
      d_ff: hidden width of the gated feed-forward.
      d_kv: width of each attention head.
      vocab_size: embedding rows V (tied with the output projection).
      dropout_rate: dropout probability used when ``deterministic=False``.
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (mixed precision).
      param_dtype: storage dtype of the parameters (keep ``"float32"`` for training).
      remat: rematerialise each block in the backward pass (saves activation memory,
        costs one extra forward pass of the blocks).
    """

    name: str
    num_heads: int
    num_layers: int
    d_model: int
    d_ff: int
    d_kv: int
    vocab_size: int = VOCAB_SIZE
    dropout_rate: float = 0.1
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        for field in ("num_heads", "num_layers", "d_model", "d_ff", "d_kv", "vocab_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig({self.name!r}).{field} must be a positive int, got {value!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"ModelConfig({self.name!r}).dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in ("float32", "bfloat16", "float16"):
                raise ValueError(
                    f"ModelConfig({self.name!r}).{field} must be float32, bfloat16 or float16, "
                    f"got {getattr(self, field)!r}")


# (H, L, d_model, d_ff, d_kv) for the 47 sizes of the spec's table.
_SPEC_TABLE = (
    (4, 3, 128, 512, 32), (7, 4, 224, 896, 32), (7, 5, 288, 1152, 32), (7, 6, 448, 1792, 32),
    (8, 8, 512, 2048, 64), (9, 9, 576, 2304, 64), (10, 10, 640, 2560, 64), (10, 13, 640, 2560, 64),
    (10, 16, 640, 2560, 64), (12, 12, 768, 3072, 64), (12, 15, 768, 3072, 64), (12, 18, 768, 3072, 64),
    (14, 14, 896, 3584, 64), (14, 16, 896, 3584, 64), (14, 18, 896, 3584, 64), (16, 16, 1024, 4096, 64),
    (16, 18, 1024, 4096, 64), (16, 20, 1024, 4096, 64), (10, 18, 1280, 5120, 128),
    (10, 21, 1280, 5120, 128), (11, 18, 1408, 5632, 128), (10, 24, 1280, 5120, 128),
    (11, 21, 1408, 5632, 128), (12, 19, 1536, 6144, 128), (11, 24, 1408, 5632, 128),
    (12, 22, 1536, 6144, 128), (12, 25, 1536, 6144, 128), (14, 20, 1792, 7168, 128),
    (14, 23, 1792, 7168, 128), (14, 26, 1792, 7168, 128), (16, 22, 2048, 8192, 128),
    (17, 22, 2176, 8704, 128), (16, 25, 2048, 8192, 128), (16, 28, 2048, 8192, 128),
    (17, 25, 2176, 8704, 128), (18, 24, 2304, 9216, 128), (17, 28, 2176, 8704, 128),
    (18, 28, 2304, 9216, 128), (18, 32, 2304, 9216, 128), (20, 26, 2560, 10240, 128),
    (20, 30, 2560, 10240, 128), (20, 34, 2560, 10240, 128), (21, 36, 2688, 10752, 128),
    (22, 36, 2816, 11264, 128), (23, 36, 2944, 11776, 128), (24, 36, 3072, 12288, 128),
    (28, 40, 3584, 14336, 128),
)

# CPU sizes for tests and demos [our choice]; use vocab_size=<spm size> for a small vocabulary.
_TINY_TABLE = (
    (2, 1, 32, 64, 16),
    (2, 2, 64, 128, 32),
    (4, 3, 96, 256, 24),
    (4, 4, 128, 512, 32),
)


def _build_scales() -> dict[str, ModelConfig]:
    scales = {}
    for prefix, table in (("scale", _SPEC_TABLE), ("tiny", _TINY_TABLE)):
        for i, (h, l, d, f, kv) in enumerate(table):
            name = f"{prefix}{i}"
            scales[name] = ModelConfig(name=name, num_heads=h, num_layers=l, d_model=d, d_ff=f, d_kv=kv)
    return scales


SCALES: dict[str, ModelConfig] = _build_scales()


def get_model_config(name: str, **overrides) -> ModelConfig:
    """The named size (``scale0``..``scale46``, ``tiny0``..``tiny3``) with fields overridden.

    Raises:
      ValueError: unknown name (the message lists the nearest valid names) or unknown field.
    """
    if name not in SCALES:
        nearest = difflib.get_close_matches(name, list(SCALES), n=3, cutoff=0.0)
        raise ValueError(f"unknown model scale {name!r}; nearest valid names: {', '.join(nearest)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {unknown} for {name!r}; valid: {sorted(fields)}")
    return dataclasses.replace(SCALES[name], **overrides)


def nonembed_param_count(cfg: ModelConfig) -> int:
    """Parameters outside the (tied) embedding: L·(4·d·H·d_kv + 3·d·d_ff + d)."""
    attention = 4 * cfg.d_model * cfg.num_heads * cfg.d_kv
    feed_forward = 3 * cfg.d_model * cfg.d_ff
    norm = cfg.d_model
    return cfg.num_layers * (attention + feed_forward + norm)


def param_count(cfg: ModelConfig) -> int:
    """Total parameters N = V·d + L·(4·d·H·d_kv + 3·d·d_ff + d) (spec §3); equals DecoderLM's."""
    return cfg.vocab_size * cfg.d_model + nonembed_param_count(cfg)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Model training FLOPs per token (forward + backward), attention included.

    Formula (one multiply-add = 2 FLOPs, backward = 2 × forward):

        6·N_matmul + 6·L·H·d_kv·seq_len

    with ``N_matmul = V·d + L·(4·d·H·d_kv + 3·d·d_ff)`` the weights used in matrix
    multiplies (the tied output projection counts once, the embedding gather and the norm
    vectors count zero). The attention term counts the two score/value matmuls
    (``QKᵀ`` and ``PV``, 2·2·H·d_kv FLOPs per query/key pair forward) over the causal
    half of the ``seq_len × seq_len`` square, i.e. ``seq_len/2`` keys per query on
    average: ``3 · 4·L·H·d_kv · seq_len/2``. Units: FLOPs per token.
    """
    n_matmul = cfg.vocab_size * cfg.d_model + cfg.num_layers * (
        4 * cfg.d_model * cfg.num_heads * cfg.d_kv + 3 * cfg.d_model * cfg.d_ff)
    attention = 6 * cfg.num_layers * cfg.num_heads * cfg.d_kv * seq_len
    return float(6 * n_matmul + attention)


# --------------------------------------------------------------------------------------
# Layers.


def _dtype(name: str):
    return jnp.dtype(name)


def rms_normalize(x: Array, eps: float = 1e-6) -> Array:
    """x / RMS(x) over the last axis, computed in float32, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    scale = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return (x32 * scale).astype(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm with one learned scale vector (logical axis ``embed``)."""

    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), _dtype(self.param_dtype))
        return rms_normalize(x).astype(_dtype(self.dtype)) * scale.astype(_dtype(self.dtype))


def apply_rotary(x: Array, positions: Array, max_wavelength: float = 10_000.0) -> Array:
    """Rotary position embedding on x [B, T, H, D] at integer positions [B, T].

    The first and second halves of the head dimension form the rotated pairs.
    """
    half = x.shape[-1] // 2
    freq = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions[:, :, None, None].astype(jnp.float32) * freq  # [B, T, 1, half]
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


def attention_mask(segment_ids: Optional[Array], length: int) -> Array:
    """Boolean [B or 1, 1, T, T]: query i sees key j iff j <= i and both share a segment."""
    causal = jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))[None, None]
    if segment_ids is None:
        return causal
    same_segment = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return causal & same_segment


def _kernel(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...],
            fan_in: int, dtype) -> Array:
    """A bias-free projection matrix, normal(0, fan_in**-0.5) init, logically annotated."""
    init = nn.with_logical_partitioning(nn.initializers.normal(stddev=fan_in ** -0.5), axes)
    return module.param(name, init, shape, _dtype(module.config.param_dtype)).astype(dtype)


def _dense(x: Array, kernel: Array, n_in: int = 1) -> Array:
    """Contract x's last ``n_in`` axes with the kernel's first ``n_in`` as one 2-D matmul.

    Flattening the batch and length axes first matters on CPU: XLA lays out the weight
    gradient of a 2-D matmul without transposing the large activation operand, which it
    does for the equivalent 3-D einsum (measured: 0.91 vs 0.64 of matmul peak for the MLP).
    """
    in_shape, out_shape = kernel.shape[:n_in], kernel.shape[n_in:]
    x2 = x.reshape((-1, math.prod(in_shape)))
    y = x2 @ kernel.reshape((math.prod(in_shape), math.prod(out_shape)))
    return y.reshape(x.shape[:x.ndim - n_in] + out_shape)


class SelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary positions, no biases."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, positions: Array, mask: Array) -> Array:
        cfg = self.config
        dtype = _dtype(cfg.dtype)
        shape, axes = (cfg.d_model, cfg.num_heads, cfg.d_kv), ("embed", "heads", "kv")
        act_axes = ("batch", "length", "heads", "kv")

        def project(name):
            return _dense(x, _kernel(self, name, shape, axes, cfg.d_model, dtype))

        q = nn.with_logical_constraint(apply_rotary(project("query"), positions), act_axes)
        k = nn.with_logical_constraint(apply_rotary(project("key"), positions), act_axes)
        v = nn.with_logical_constraint(project("value"), act_axes)

        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores * (cfg.d_kv ** -0.5)
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
        context = nn.with_logical_constraint(jnp.einsum("bhqk,bkhd->bqhd", probs, v), act_axes)

        out = _kernel(self, "out", (cfg.num_heads, cfg.d_kv, cfg.d_model), ("heads", "kv", "embed"),
                      cfg.num_heads * cfg.d_kv, dtype)
        return _dense(context, out, n_in=2)


class GatedMLP(nn.Module):
    """SiLU-gated feed-forward: wo(silu(x·wi_0) ⊙ (x·wi_1)), three matrices, no biases."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        dtype = _dtype(cfg.dtype)
        d, f = cfg.d_model, cfg.d_ff
        gate = _dense(x, _kernel(self, "wi_0", (d, f), ("embed", "mlp"), d, dtype))
        up = _dense(x, _kernel(self, "wi_1", (d, f), ("embed", "mlp"), d, dtype))
        hidden = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "length", "mlp"))
        return _dense(hidden, _kernel(self, "wo", (f, d), ("mlp", "embed"), f, dtype))


class DecoderBlock(nn.Module):
    """Parallel pre-norm block: x + Dropout(Attn(n)) + Dropout(MLP(n)), n = RMSNorm(x)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, positions: Array, mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        normed = RMSNorm(dtype=cfg.dtype, param_dtype=cfg.param_dtype, name="norm")(x)
        attn = SelfAttention(cfg, name="attention")(normed, positions, mask)
        mlp = GatedMLP(cfg, name="mlp")(normed)
        drop = nn.Dropout(cfg.dropout_rate)
        x = x + drop(attn, deterministic=deterministic) + drop(mlp, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class DecoderLM(nn.Module):
    """Decoder-only language model; returns float32 logits [B, T, V]."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (cfg.vocab_size, cfg.d_model), _dtype(cfg.param_dtype))
        # Argument 0 is the module itself, so `deterministic` (4th call argument) is index 4.
        block = nn.remat(DecoderBlock, static_argnums=(4,)) if cfg.remat else DecoderBlock
        self.blocks = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def hidden_states(self, tokens: Array, positions: Optional[Array] = None,
                      segment_ids: Optional[Array] = None, deterministic: bool = True) -> Array:
        """Final normalised hidden states [B, T, d_model] in the compute dtype."""
        cfg = self.config
        dtype = _dtype(cfg.dtype)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        mask = attention_mask(segment_ids, tokens.shape[1])
        x = jnp.take(self.embedding, tokens, axis=0).astype(dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        x = self.dropout(x, deterministic=deterministic)
        for block in self.blocks:
            x = block(x, positions, mask, deterministic)
        return rms_normalize(x)

    def logits_from_hidden(self, hidden: Array) -> Array:
        """Tied output projection: hidden [..., d] → float32 logits [..., V]."""
        cfg = self.config
        emb = self.embedding.astype(_dtype(cfg.dtype))
        rows = (hidden * (cfg.d_model ** -0.5)).reshape((-1, hidden.shape[-1]))
        logits = jnp.einsum("nd,vd->nv", rows, emb, preferred_element_type=jnp.float32)
        logits = logits.reshape(hidden.shape[:-1] + (cfg.vocab_size,))
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))

    def __call__(self, tokens: Array, positions: Optional[Array] = None,
                 segment_ids: Optional[Array] = None, deterministic: bool = True) -> Array:
        """Logits [B, T, V] (float32) for int32 tokens [B, T].

        Args:
          tokens: input token ids [B, T].
          positions: position of each token inside its packed segment [B, T]; defaults
            to 0..T-1.
          segment_ids: packed-segment id per token [B, T] (0 = padding); tokens attend only
            to earlier tokens of the same segment. None = one segment per row.
          deterministic: disable dropout (evaluation). Training needs a ``dropout`` rng.
        """
        return self.logits_from_hidden(
            self.hidden_states(tokens, positions, segment_ids, deterministic))

    def token_loss(self, tokens: Array, targets: Array, weights: Array, positions: Optional[Array] = None,
                   segment_ids: Optional[Array] = None, deterministic: bool = True,
                   chunk_size: int = 128) -> tuple[Array, Array]:
        """(sum_nll nats, n_tokens) of the next-token loss without materialising [B, T, V] logits.

        Equals ``losses.token_cross_entropy(self(tokens, ...), targets, weights)``; the tied
        output projection and the cross-entropy run fused, ``chunk_size`` positions at a
        time (``losses.tied_cross_entropy``). The fast path for training steps:
        ``model.apply(variables, tokens, targets, weights, ..., method=DecoderLM.token_loss)``.
        """
        cfg = self.config
        hidden = self.hidden_states(tokens, positions, segment_ids, deterministic)
        return losses.tied_cross_entropy(hidden, self.embedding.astype(_dtype(cfg.dtype)), targets, weights,
                                         logit_scale=cfg.d_model ** -0.5, chunk_size=chunk_size)
