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
(``vocab, embed, heads, kv, mlp``, plus ``layers`` on the stacked parameters of the scanned
blocks); activations carry ``batch, length, embed, heads, kv, mlp, vocab`` constraints.
``atlas_t5x.partitioning`` maps these names to mesh axes.

Compute at paper scale (all gin-selectable on ``ModelConfig``): the blocks run as one
``nn.scan`` (``scan_layers``; program size and compile time independent of depth), each block
rematerialised under a named policy (``remat_policy``, ``REMAT_POLICIES``), and attention goes
through ``jax.nn.dot_product_attention`` (XLA or cuDNN flash) or Pallas splash attention on
TPU, or a block-causal einsum attention on CPU (``attention``, ``ATTENTION_IMPLEMENTATIONS``),
with causal + packed-segment masking.

Training steps should prefer ``DecoderLM.token_loss`` (fused, chunked output projection
and cross-entropy, no [B, T, V] logits buffer) over ``__call__`` + ``token_cross_entropy``;
figures in benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from typing import Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from atlas_t5x import losses

Array = jax.Array

VOCAB_SIZE = 64512  # 64k SentencePiece pieces + 512 special rows (spec §3).

# Remat (activation checkpointing) policies by name: None = no remat; otherwise the
# jax.checkpoint policy deciding which intermediate values of a block are saved.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_qkv_proj": jax.checkpoint_policies.save_only_these_names("query_proj", "key_proj", "value_proj"),
}
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash", "blocked", "reference")
# Query rows per block of the "blocked" attention (CPU): keys past a block's last row are skipped.
ATTENTION_BLOCK_SIZE = 128


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
      scan_layers: run the blocks as one ``nn.scan`` over stacked parameters (leading
        ``layers`` axis, parameter tree ``layers/...``) so that the compiled program and its
        compile time do not grow with depth; False = unrolled Python loop, parameters
        ``layer_0/...`` .. ``layer_{L-1}/...`` (the layout of checkpoints written before
        scanning; ``stack_layers``/``unstack_layers`` convert between the two).
      remat_policy: what each block keeps for the backward pass (``REMAT_POLICIES``):
        ``"none"`` keeps everything, ``"full"`` keeps only the block input and recomputes
        the block, ``"dots_saveable"`` / ``"dots_with_no_batch_dims_saveable"`` keep matmul
        outputs (all / weight matmuls only), ``"save_qkv_proj"`` keeps the q, k, v projections.
      attention: attention implementation (``ATTENTION_IMPLEMENTATIONS``): ``"auto"`` picks
        cuDNN flash attention on GPU for 16-bit compute, splash on TPU, the block-causal
        ``"blocked"`` path on CPU, else XLA's ``jax.nn.dot_product_attention``; ``"xla"``,
        ``"cudnn"``, ``"splash"`` (Pallas splash attention, TPU), ``"blocked"`` force one;
        ``"reference"`` is the plain einsum + softmax with float32 [B, H, T, T] scores, kept
        for tests.
      scan_unroll_max_layers: scans of at most this many blocks run unrolled; None = by the
        default backend (``scan_unroll_max_layers()``). An ahead-of-time compile for another
        platform (``atlas_t5x.aot``) sets the target's value, so it compiles the program that
        platform will run.
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
    scan_layers: bool = True
    remat_policy: str = "none"
    attention: str = "auto"
    scan_unroll_max_layers: Optional[int] = None

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
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"ModelConfig({self.name!r}).remat_policy {self.remat_policy!r} is unknown; "
                             f"valid names: {', '.join(REMAT_POLICIES)}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"ModelConfig({self.name!r}).attention {self.attention!r} is unknown; "
                             f"valid names: {', '.join(ATTENTION_IMPLEMENTATIONS)}")


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
# They keep the unrolled layout (scan_layers=False): at 1-4 layers the scan buys nothing and
# costs 5-15% of a CPU step (benchmarks/README.md).
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
            scales[name] = ModelConfig(name=name, num_heads=h, num_layers=l, d_model=d, d_ff=f, d_kv=kv,
                                       scan_layers=prefix == "scale")
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


def resolve_attention(implementation: str, dtype, length: int) -> str:
    """The concrete attention implementation ``"auto"`` stands for on this backend.

    GPU with 16-bit compute → ``"cudnn"`` (flash attention); TPU with a sequence length
    that is a multiple of 128 → ``"splash"`` (Pallas); CPU → ``"blocked"`` (block-causal
    einsum attention with a custom VJP, the fastest on XLA:CPU); otherwise ``"xla"``
    (``jax.nn.dot_product_attention``'s XLA path, which does hold the [B, H, T, T] scores).
    """
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; valid names: "
                         f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if implementation != "auto":
        return implementation
    backend = jax.default_backend()
    if backend == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    if backend == "tpu" and length % 128 == 0:
        return "splash"
    if backend == "cpu":
        return "blocked"
    return "xla"


def _reference_attention(q: Array, k: Array, v: Array, segment_ids: Optional[Array]) -> Array:
    """Einsum attention with float32 [B, H, T, T] scores: the plain definition, for tests."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    scores = scores * (q.shape[-1] ** -0.5)
    scores = jnp.where(attention_mask(segment_ids, q.shape[1]), scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def _block_bounds(length: int, block_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each query block: the largest divisor of ``length`` not above the size."""
    block = max(1, min(block_size, length))
    while length % block:
        block -= 1
    return [(start, start + block) for start in range(0, length, block)]


def _block_mask(segment_ids: Optional[Array], start: int, stop: int) -> Array:
    """Boolean [B or 1, 1, stop - start, stop]: the causal + same-segment mask of one query block."""
    rows = jnp.arange(stop)
    mask = (rows[start:stop, None] >= rows[None, :stop])[None, None]
    if segment_ids is not None:
        mask = mask & (segment_ids[:, None, start:stop, None] == segment_ids[:, None, None, :stop])
    return mask


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _blocked_attention_heads_first(qh: Array, kh: Array, vh: Array, segment_ids: Optional[Array],
                                   block_size: int) -> Array:
    return _blocked_fwd(qh, kh, vh, segment_ids, block_size)[0]


def _blocked_fwd(qh, kh, vh, segment_ids, block_size):
    length, head_dim = qh.shape[2], qh.shape[3]
    outputs, probs_per_block = [], []
    for start, stop in _block_bounds(length, block_size):
        scores = jnp.einsum("bhqd,bhkd->bhqk", qh[:, :, start:stop], kh[:, :, :stop],
                            preferred_element_type=jnp.float32) * (head_dim ** -0.5)
        scores = jnp.where(_block_mask(segment_ids, start, stop), scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(qh.dtype)
        probs_per_block.append(probs)
        outputs.append(jnp.einsum("bhqk,bhkd->bhqd", probs, vh[:, :, :stop]))
    out = jnp.concatenate(outputs, axis=2)
    return out, (qh, kh, vh, segment_ids, out, probs_per_block)


def _blocked_bwd(block_size, residuals, d_out):
    qh, kh, vh, segment_ids, out, probs_per_block = residuals
    length, head_dim = qh.shape[2], qh.shape[3]
    f32 = jnp.float32
    # Softmax backward as in flash attention: dS = P * (dP - rowsum(dO * O)), the row sum over
    # the head dimension instead of over the keys (no [.., T, T] reduction).
    delta = jnp.sum(d_out.astype(f32) * out.astype(f32), axis=-1, keepdims=True)
    d_q_blocks, d_k, d_v = [], jnp.zeros(kh.shape, f32), jnp.zeros(vh.shape, f32)
    for (start, stop), probs in zip(_block_bounds(length, block_size), probs_per_block):
        d_o = d_out[:, :, start:stop]
        d_v = d_v.at[:, :, :stop].add(jnp.einsum("bhqk,bhqd->bhkd", probs, d_o, preferred_element_type=f32))
        d_p = jnp.einsum("bhqd,bhkd->bhqk", d_o, vh[:, :, :stop], preferred_element_type=f32)
        d_s = (probs.astype(f32) * (d_p - delta[:, :, start:stop]) * (head_dim ** -0.5)).astype(qh.dtype)
        d_q_blocks.append(jnp.einsum("bhqk,bhkd->bhqd", d_s, kh[:, :, :stop], preferred_element_type=f32))
        d_k = d_k.at[:, :, :stop].add(jnp.einsum("bhqk,bhqd->bhkd", d_s, qh[:, :, start:stop],
                                                 preferred_element_type=f32))
    d_q = jnp.concatenate(d_q_blocks, axis=2)
    return d_q.astype(qh.dtype), d_k.astype(kh.dtype), d_v.astype(vh.dtype), None


_blocked_attention_heads_first.defvjp(_blocked_fwd, _blocked_bwd)


def _blocked_attention(q: Array, k: Array, v: Array, segment_ids: Optional[Array],
                       block_size: Optional[int] = None) -> Array:
    """Block-causal attention (the CPU path): query block i attends only to keys 0 .. end of block i.

    Same result as ``_reference_attention``: the keys it skips are causally masked, with
    probability exactly 0 there. Heads-first [B, H, T, D] batched matmuls, one query block of
    ``block_size`` rows (default ``ATTENTION_BLOCK_SIZE``) at a time, so the key blocks above the
    diagonal cost neither matmul FLOPs nor softmax passes (4 blocks: 10/16 of the [T, T] square).
    A custom VJP keeps each block's float32 probabilities and forms the softmax backward as
    ``P * (dP - rowsum(dO * O))``. Measured on CPU (benchmarks/README.md): a scale4 layer's
    attention forward + backward 0.95 s with the XLA path, 0.71 s reference, 0.53 s blocked.
    """
    heads_first = lambda t: jnp.swapaxes(t, 1, 2)
    out = _blocked_attention_heads_first(heads_first(q), heads_first(k), heads_first(v), segment_ids,
                                         int(block_size or ATTENTION_BLOCK_SIZE))
    return heads_first(out)


def _splash_attention(q: Array, k: Array, v: Array, segment_ids: Optional[Array]) -> Array:
    """Pallas splash attention (TPU): causal + segment masking inside the kernel.

    The kernel runs per device on its rows (``jax.shard_map`` over the batch axes when a
    mesh is set); heads stay whole on each device. Off TPU the kernel runs in the Pallas
    interpreter (slow; for tests on CPU).
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    _, length, heads, head_dim = q.shape
    mask = splash.MultiHeadMask([splash.CausalMask((length, length)) for _ in range(heads)])
    block = min(512, length)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block,
                              block_kv_dq=block)
    kernel = splash.make_splash_mha(mask, head_shards=1, q_seq_shards=1, block_sizes=sizes,
                                    interpret=jax.default_backend() != "tpu")
    if segment_ids is None:
        segment_ids = jnp.ones(q.shape[:2], jnp.int32)

    def local(q, k, v, seg):
        to_heads_first = lambda t: t.transpose(0, 2, 1, 3)
        out = jax.vmap(lambda q1, k1, v1, s1: kernel(q1, k1, v1, segment_ids=splash.SegmentIds(q=s1, kv=s1)))(
            to_heads_first(q * (head_dim ** -0.5)), to_heads_first(k), to_heads_first(v), seg)
        return to_heads_first(out)

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return local(q, k, v, segment_ids)
    from jax.sharding import PartitionSpec

    batch_axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
    if q.shape[0] % math.prod(mesh.shape[a] for a in batch_axes):
        batch_axes = None  # e.g. the one-row init batch: every device computes all rows
    qkv_spec, seg_spec = PartitionSpec(batch_axes, None, None, None), PartitionSpec(batch_axes, None)
    return jax.shard_map(local, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, seg_spec),
                         out_specs=qkv_spec, check_vma=False)(q, k, v, segment_ids)


def dot_product_attention(q: Array, k: Array, v: Array, segment_ids: Optional[Array],
                          implementation: str = "xla") -> Array:
    """Causal, segment-masked attention: q, k, v [B, T, H, D] → context [B, T, H, D].

    Query i attends to key j iff j <= i and both carry the same segment id (packed
    sequences; ``segment_ids`` [B, T] or None for one segment per row). Scores are scaled by
    D**-0.5. ``implementation``: one of ``ATTENTION_IMPLEMENTATIONS`` (``"auto"`` resolved
    by ``resolve_attention``). ``"xla"``/``"cudnn"`` go through
    ``jax.nn.dot_product_attention``; ``"cudnn"`` needs a GPU and 16-bit inputs, and turns the
    segment mask into one additive [B, 1, T, T] bias in the compute dtype (the kernel never
    holds per-head float32 scores); ``"splash"`` masks segments inside the Pallas kernel;
    ``"blocked"`` (``_blocked_attention``) skips the key blocks above the causal diagonal.
    """
    implementation = resolve_attention(implementation, q.dtype, q.shape[1])
    if implementation == "reference":
        return _reference_attention(q, k, v, segment_ids)
    if implementation == "splash":
        return _splash_attention(q, k, v, segment_ids)
    if implementation == "blocked":
        return _blocked_attention(q, k, v, segment_ids)
    same_segment = None
    if segment_ids is not None:
        same_segment = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=same_segment, is_causal=True,
                                        implementation=implementation)


class SelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary positions, no biases."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, positions: Array, segment_ids: Optional[Array]) -> Array:
        cfg = self.config
        dtype = _dtype(cfg.dtype)
        shape, axes = (cfg.d_model, cfg.num_heads, cfg.d_kv), ("embed", "heads", "kv")
        act_axes = ("batch", "length", "heads", "kv")

        def project(name):
            return _dense(x, _kernel(self, name, shape, axes, cfg.d_model, dtype))

        q = nn.with_logical_constraint(apply_rotary(project("query"), positions), act_axes)
        k = nn.with_logical_constraint(apply_rotary(project("key"), positions), act_axes)
        v = nn.with_logical_constraint(project("value"), act_axes)
        q, k, v = (checkpoint_name(t, f"{n}_proj") for t, n in ((q, "query"), (k, "key"), (v, "value")))

        context = dot_product_attention(q, k, v, segment_ids, cfg.attention)
        context = nn.with_logical_constraint(context, act_axes)

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
    def __call__(self, x: Array, positions: Array, segment_ids: Optional[Array], deterministic: bool) -> Array:
        cfg = self.config
        normed = RMSNorm(dtype=cfg.dtype, param_dtype=cfg.param_dtype, name="norm")(x)
        attn = SelfAttention(cfg, name="attention")(normed, positions, segment_ids)
        mlp = GatedMLP(cfg, name="mlp")(normed)
        drop = nn.Dropout(cfg.dropout_rate)
        x = x + drop(attn, deterministic=deterministic) + drop(mlp, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class ScannedDecoderBlock(DecoderBlock):
    """A DecoderBlock in ``nn.scan``'s (carry, output) form: the residual stream is the carry."""

    @nn.compact
    def __call__(self, x: Array, positions: Array, segment_ids: Optional[Array],
                 deterministic: bool) -> tuple[Array, None]:
        return super().__call__(x, positions, segment_ids, deterministic), None


def block_class(cfg: ModelConfig) -> type[nn.Module]:
    """The block module of ``cfg``: scanned or not, wrapped in ``nn.remat`` with its policy."""
    block = ScannedDecoderBlock if cfg.scan_layers else DecoderBlock
    if cfg.remat_policy == "none":
        return block
    # Argument 0 is the module itself, so `deterministic` (4th call argument) is index 4.
    # Inside a scan the loop already stops XLA from merging recomputation away (prevent_cse off).
    return nn.remat(block, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers,
                    static_argnums=(4,))


class DecoderLM(nn.Module):
    """Decoder-only language model; returns float32 logits [B, T, V]."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (cfg.vocab_size, cfg.d_model), _dtype(cfg.param_dtype))
        block = block_class(cfg)
        if cfg.scan_layers:
            scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                              in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                              metadata_params={nn.PARTITION_NAME: "layers"},
                              unroll=cfg.num_layers if cfg.num_layers <= scan_unroll_max_layers(cfg) else 1)
            self.layers = scanned(cfg, name=SCANNED_LAYERS)
        else:
            self.blocks = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def hidden_states(self, tokens: Array, positions: Optional[Array] = None,
                      segment_ids: Optional[Array] = None, deterministic: bool = True) -> Array:
        """Final normalised hidden states [B, T, d_model] in the compute dtype."""
        cfg = self.config
        dtype = _dtype(cfg.dtype)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        x = jnp.take(self.embedding, tokens, axis=0).astype(dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        x = self.dropout(x, deterministic=deterministic)
        if cfg.scan_layers:
            x, _ = self.layers(x, positions, segment_ids, deterministic)
        else:
            for block in self.blocks:
                x = block(x, positions, segment_ids, deterministic)
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


# --------------------------------------------------------------------------------------
# Parameter layouts.

SCANNED_LAYERS = "layers"  # parameter subtree of the scanned blocks (leading axis: layer)
# Scans of at most this many blocks are unrolled inside the scan (same parameter layout): XLA:CPU
# ran a 3-block loop 8% slower than straight-line code (scale0, CPU time), unrolled 4%; the program
# stays bounded by four block bodies.
SCAN_UNROLL_MAX_LAYERS = 4
# On CPU the limit is higher: unrolling scale4's 8 blocks took 3% off its fp32 training step
# (single core, 21.9 → 21.2 s, benchmarks/README.md "Against PyTorch"); deeper scans stay loops.
SCAN_UNROLL_MAX_LAYERS_CPU = 8


def scan_unroll_max_layers(cfg: Optional[ModelConfig] = None, platform: Optional[str] = None) -> int:
    """Scans of at most this many blocks run unrolled: the config's own limit if it sets one, else
    the limit of `platform` (default: the default backend)."""
    if cfg is not None and cfg.scan_unroll_max_layers is not None:
        return cfg.scan_unroll_max_layers
    return SCAN_UNROLL_MAX_LAYERS_CPU if (platform or jax.default_backend()) == "cpu" else SCAN_UNROLL_MAX_LAYERS


_UNROLLED_LAYER = re.compile(r"layer_(\d+)")


def stack_layers(params: dict) -> dict:
    """Unrolled parameters (``layer_0`` .. ``layer_{L-1}``) → the scanned layout (``layers``).

    Works on plain (unboxed) parameter trees, e.g. to load an unrolled checkpoint into a
    ``scan_layers=True`` model; ``unstack_layers`` is the inverse.
    """
    indexed = sorted((int(m.group(1)), k) for k in params if (m := _UNROLLED_LAYER.fullmatch(k)))
    if [i for i, _ in indexed] != list(range(len(indexed))) or not indexed:
        raise ValueError(f"unrolled parameters need layer_0..layer_{{L-1}}; found {[k for _, k in indexed]}")
    out = {k: v for k, v in params.items() if not _UNROLLED_LAYER.fullmatch(k)}
    out[SCANNED_LAYERS] = jax.tree.map(lambda *xs: jnp.stack(xs), *[params[k] for _, k in indexed])
    return out


def unstack_layers(params: dict) -> dict:
    """Scanned parameters (``layers`` with a leading layer axis) → ``layer_0`` .. ``layer_{L-1}``."""
    if SCANNED_LAYERS not in params:
        raise ValueError(f"scanned parameters need a {SCANNED_LAYERS!r} subtree; found {sorted(params)}")
    stacked = params[SCANNED_LAYERS]
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    out = {k: v for k, v in params.items() if k != SCANNED_LAYERS}
    for i in range(num_layers):
        out[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return out
