"""Mesh construction, logical→mesh shardings, and 8-device vs 1-device equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn
from jax.sharding import PartitionSpec as P

from atlas_t5x import losses, models, partitioning

VOCAB = 128


def _batch(rows=8, length=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, (rows, length + 1)).astype(np.int32)
    segments = np.where(np.arange(length) < 10, 1, 2)[None].repeat(rows, 0).astype(np.int32)
    positions = np.where(segments == 1, np.arange(length), np.arange(length) - 10).astype(np.int32)
    weights = np.ones((rows, length), np.float32)
    weights[:, -3:] = 0.0  # padding
    return dict(inputs=tokens[:, :-1], targets=tokens[:, 1:], segments=segments,
                positions=positions, weights=weights)


def _loss_fn(model, fused):
    def loss(params, batch):
        inputs = dict(positions=batch["positions"], segment_ids=batch["segments"])
        if fused:
            sum_nll, n_tokens = model.apply({"params": params}, batch["inputs"], batch["targets"],
                                            batch["weights"], chunk_size=4,
                                            method=models.DecoderLM.token_loss, **inputs)
        else:
            logits = model.apply({"params": params}, batch["inputs"], **inputs)
            sum_nll, n_tokens = losses.token_cross_entropy(logits, batch["targets"], batch["weights"])
        return sum_nll / n_tokens
    return jax.value_and_grad(loss)


@pytest.mark.parametrize("fused,scan", [(False, False), (True, False), (True, True)],
                         ids=["logits", "fused_loss", "fused_loss_scanned"])
def test_loss_and_grads_on_8_device_mesh_match_one_device(fused, scan):
    assert jax.device_count() >= 8, "conftest should force 8 host CPU devices"
    cfg = models.get_model_config("tiny1", vocab_size=VOCAB, dropout_rate=0.0, scan_layers=scan)
    model = models.DecoderLM(cfg)
    batch = _batch()
    boxed = jax.jit(model.init)(jax.random.PRNGKey(0), batch["inputs"])["params"]
    params = nn.meta.unbox(boxed)
    value_and_grad = _loss_fn(model, fused)

    single = partitioning.make_mesh(partitioning.MeshConfig(data=1), devices=jax.devices()[:1])
    with partitioning.axis_rules(single):
        loss1, grads1 = jax.jit(value_and_grad)(params, batch)

    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=2, fsdp=2, tensor=2),
                                  devices=jax.devices()[:8])
    shardings = partitioning.params_shardings(boxed, mesh)
    assert shardings["embedding"].spec == P("tensor", "fsdp")
    data = partitioning.batch_sharding(mesh)
    with partitioning.axis_rules(mesh):
        step = jax.jit(value_and_grad, in_shardings=(shardings, data),
                       out_shardings=(partitioning.replicated(mesh), shardings))
        loss8, grads8 = step(jax.device_put(params, shardings), jax.device_put(batch, data))

    assert grads8["embedding"].sharding.spec == P("tensor", "fsdp")
    if scan:  # stacked block parameters: the layer axis unsharded, embed on fsdp, mlp on tensor
        assert grads8["layers"]["mlp"]["wi_0"].sharding.spec == P(None, "fsdp", "tensor")
    assert len(grads8["embedding"].addressable_shards) == 8
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    flat8 = dict(jax.tree_util.tree_leaves_with_path(grads8))
    for path, g1 in jax.tree_util.tree_leaves_with_path(grads1):
        np.testing.assert_allclose(np.asarray(flat8[path]), np.asarray(g1), rtol=1e-4, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))


def test_indivisible_dimension_is_replicated():
    cfg = models.ModelConfig(name="odd", num_heads=3, num_layers=1, d_model=16, d_ff=32, d_kv=8,
                             vocab_size=VOCAB)
    abstract = jax.eval_shape(models.DecoderLM(cfg).init, jax.random.PRNGKey(0),
                              jnp.zeros((1, 4), jnp.int32))
    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=2, fsdp=2, tensor=2))
    specs = jax.tree.map(lambda s: s.spec, partitioning.params_shardings(abstract["params"], mesh))
    assert specs["layers"]["attention"]["query"] == P(None, "fsdp", None, None)  # [layers, embed, heads, kv]
    assert specs["layers"]["mlp"]["wi_0"] == P(None, "fsdp", "tensor")


def test_mesh_minus_one_takes_remaining_devices():
    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=-1, fsdp=2, tensor=1))
    assert dict(mesh.shape) == {"data": jax.device_count() // 2, "fsdp": 2, "tensor": 1}


def test_mesh_that_does_not_divide_devices_states_both_numbers():
    with pytest.raises(ValueError, match=r"mesh product.* = 3 but there are 8 devices"):
        partitioning.make_mesh(partitioning.MeshConfig(data=3), devices=jax.devices()[:8])
    with pytest.raises(ValueError, match=r"8 devices .* product 3"):
        partitioning.make_mesh(partitioning.MeshConfig(data=-1, fsdp=3), devices=jax.devices()[:8])


def test_batch_not_divisible_by_mesh_states_both_numbers():
    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=2, fsdp=2, tensor=2))
    partitioning.check_batch_divisible(12, mesh)
    with pytest.raises(ValueError, match=r"global batch 6 .* data\*fsdp = 4"):
        partitioning.check_batch_divisible(6, mesh)


def test_rules_reject_unknown_mesh_axis():
    with pytest.raises(ValueError, match="'model'"):
        partitioning.get_logical_rules((("heads", "model"),))


def test_distributed_init_is_a_no_op_when_not_configured():
    assert partitioning.maybe_initialize_distributed() is False
    with pytest.raises(ValueError, match="together"):
        partitioning.maybe_initialize_distributed(coordinator_address="localhost:1234")
