"""The train loop: logged metrics and accounting, callbacks and eval_step, NaN stop, bad input,
and two processes (jax.distributed, gloo) matching one process on a 4-device mesh."""

from __future__ import annotations

import functools
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atlas_t5x import checkpoints, logio, losses, models, optim, partitioning, trainer
from atlas_t5x.data import synthetic

REPO = Path(__file__).resolve().parents[1]
TINY = models.get_model_config("tiny0", vocab_size=256, dropout_rate=0.0)


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _pipeline_factory(**kwargs):
    defaults = dict(languages=("en", "fr", "sw"), weights=(2.0, 1.0, 1.0), seq_len=32, global_batch=8)
    return functools.partial(synthetic.make_synthetic_pipeline, **{**defaults, **kwargs})


def _expected_tokens_by_lang(steps: int) -> dict[str, int]:
    """Counts non-padding targets per language id directly from the batches."""
    pipeline = _pipeline_factory()()
    counts = np.zeros(len(pipeline.languages), np.int64)
    for _ in range(steps):
        batch = next(pipeline)
        ids = batch["decoder_lang_ids"][batch["decoder_loss_weights"] > 0]
        counts += np.bincount(ids, minlength=len(counts))
    return dict(zip(pipeline.languages, map(int, counts)))


class Recorder:
    every_steps = 3

    def __init__(self):
        self.calls = []

    def __call__(self, ctx):
        batch = next(_pipeline_factory()())
        sum_nll, n_tokens = jax.device_get(ctx.eval_step(ctx.state.params, batch))
        # Same quantities from an unsharded forward pass on one device.
        @jax.jit
        def reference(params, batch):
            logits = ctx.model.apply({"params": params}, batch["decoder_input_tokens"],
                                     positions=batch["decoder_positions"], segment_ids=batch["decoder_segment_ids"])
            return losses.token_cross_entropy_per_example(
                logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"])

        ref_nll, ref_n = reference(jax.device_get(ctx.state.params), batch)
        self.calls.append(dict(step=ctx.step, lr=ctx.lr, phase=ctx.schedule_phase, run_info=ctx.run_info,
                               nll=np.asarray(sum_nll), n=np.asarray(n_tokens), ref_nll=np.asarray(ref_nll),
                               ref_n=np.asarray(ref_n), weights=batch["decoder_loss_weights"]))


def test_train_logs_metrics_accounting_and_calls_callbacks(tmp_path):
    # Gradient accumulation on: a step is still one update on one whole global batch of 8 rows.
    gin.parse_config("make_schedule.warmup_steps = 2\nmake_schedule.peak_lr = 1e-3\n"
                     "train.num_microbatches = 2")
    recorder = Recorder()
    total = 5
    result = trainer.train(
        str(tmp_path), model_config=TINY, mesh_config=partitioning.MeshConfig(data=2, fsdp=2, tensor=2),
        pipeline_factory=_pipeline_factory(), total_steps=total, log_every_steps=2, checkpoint_every_steps=100,
        callbacks=[recorder], peak_flops_per_device=1e12, tensorboard=True,
    )
    assert result.step == total and not result.preempted

    rows = logio.read_jsonl(tmp_path / "logs" / "train.jsonl")
    assert [r["step"] for r in rows] == [2, 3, 4, 5]  # every 2, before the callback at 3, at the end
    schedule = optim.make_schedule(peak_lr=1e-3, warmup_steps=2, total_steps=total)
    expected_tokens = _expected_tokens_by_lang(total)
    flops_per_step = models.flops_per_token(TINY, 32) * 8 * 32
    for row in rows:
        assert math.isfinite(row["loss"]) and row["loss"] > 0
        assert row["lr"] == pytest.approx(float(schedule(row["step"] - 1)))
        assert row["schedule_phase"] == optim.schedule_phase(row["step"] - 1, total, 2)
        assert row["tokens"] == sum(row["tokens_by_lang"].values())
        assert row["flops_per_s"] == pytest.approx(flops_per_step * row["steps_per_s"], rel=1e-9)
        assert row["mfu"] == pytest.approx(row["flops_per_s"] / (1e12 * jax.device_count()), rel=1e-9)
    assert rows[-1]["tokens_by_lang"] == expected_tokens
    adam_counts = {int(x) for x in jax.tree.leaves(jax.device_get(result.state.opt_state)) if np.ndim(x) == 0}
    assert adam_counts == {total}  # one optimizer update per step

    assert [c["step"] for c in recorder.calls] == [3, 5]
    info = recorder.calls[-1]["run_info"]
    assert (info.run, info.scale, info.seq_len, info.global_batch, info.init) == (tmp_path.name, "tiny0", 32, 8, "scratch")
    assert info.mixture_weights == pytest.approx({"en": 0.5, "fr": 0.25, "sw": 0.25})
    assert recorder.calls[0]["lr"] == pytest.approx(float(schedule(2)))
    for call in recorder.calls:
        np.testing.assert_array_equal(call["n"], call["weights"].sum(axis=1))
        np.testing.assert_allclose(call["nll"], call["ref_nll"], rtol=2e-5)

    tb_loss, tb_tags = _tensorboard_scalars(tmp_path / "tb")
    assert {"loss", "lr", "tokens_per_s", "flops_per_s", "mfu", "tokens_by_lang/en"} <= tb_tags
    assert tb_loss == pytest.approx({r["step"]: r["loss"] for r in rows}, rel=1e-6)
    config = (tmp_path / "config.gin").read_text()
    assert "make_schedule.warmup_steps = 2" in config and "train.num_microbatches = 2" in config
    assert checkpoints.complete_steps(tmp_path / "checkpoints") == [total]


def _tensorboard_scalars(folder: Path) -> tuple[dict[int, float], set[str]]:
    """({step: loss}, all scalar tags) from the TensorBoard event files in `folder`."""
    import tensorflow as tf  # already loaded by the trainer's TensorBoard writer

    losses_by_step, tags = {}, set()
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.add(value.tag)
                if value.tag == "loss":
                    losses_by_step[event.step] = float(tf.make_ndarray(value.tensor))
    return losses_by_step, tags


class _PoisonedPipeline(synthetic.SyntheticPipeline):
    """Synthetic stream whose batch `bad_index` has NaN loss weights."""

    bad_index = 4

    def __next__(self):
        index = self.get_state()["batch_index"]
        batch = super().__next__()
        if index == self.bad_index:
            batch["decoder_loss_weights"] = np.full_like(batch["decoder_loss_weights"], np.nan)
        return batch


def test_nonfinite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    def factory():
        return _PoisonedPipeline(["en"], None, 32, 8, 256, 0, 1000, 0, 1)

    gin.parse_config("make_schedule.warmup_steps = 1")
    with pytest.raises(trainer.NonFiniteLossError, match=r"at step 5\b.*Last good checkpoint: step 4") as err:
        trainer.train(str(tmp_path), model_config=TINY, pipeline_factory=factory, total_steps=8,
                      log_every_steps=100, checkpoint_every_steps=2, tensorboard=False)
    assert "loss=nan" in str(err.value)
    # The NaN at step 5 was caught at the step-6 flush, before that checkpoint was written.
    assert checkpoints.complete_steps(tmp_path / "checkpoints") == [2, 4]
    assert [r["step"] for r in logio.read_jsonl(tmp_path / "logs" / "train.jsonl")] == [2, 4]


def test_mesh_not_dividing_devices_or_batch_is_an_error_with_both_numbers(tmp_path):
    run = functools.partial(trainer.train, str(tmp_path / "run"), model_config=TINY, total_steps=2,
                            tensorboard=False)
    with pytest.raises(ValueError, match=r"16 .*8 devices"):
        run(mesh_config=partitioning.MeshConfig(data=16), pipeline_factory=_pipeline_factory())
    with pytest.raises(ValueError, match=r"global batch 4 .*data\*fsdp = 8"):
        run(mesh_config=partitioning.MeshConfig(data=8), pipeline_factory=_pipeline_factory(global_batch=4))
    with pytest.raises(ValueError, match=r"global batch 8 does not split into 3 micro-batches.*multiple of 12"):
        run(mesh_config=partitioning.MeshConfig(data=2, fsdp=2, tensor=2), pipeline_factory=_pipeline_factory(),
            num_microbatches=3)
    gin.parse_config("make_optimizer.accumulation_steps = 2")  # MultiSteps would count micro-batches as steps
    with pytest.raises(ValueError, match=r"bind train.num_microbatches instead"):
        run(pipeline_factory=_pipeline_factory())
    assert not (tmp_path / "run").exists()


def _cli(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen([sys.executable, str(REPO / "scripts/train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_cli_bad_gin_file_or_binding_exits_2_naming_it(tmp_path):
    proc = _cli(["--gin_file=gin/runs/no_such_run.gin", f"--model_dir={tmp_path}"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no_such_run.gin" in err

    proc = _cli(["--gin_file=gin/runs/smoke.gin", "--gin.train.no_such_param=1", f"--model_dir={tmp_path}"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no_such_param" in err and "Traceback" not in err
    assert not (tmp_path / "logs").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_log_the_same_losses_as_one_process_with_four_devices(tmp_path):
    """Also multi-host preemption: SIGTERM reaches process 1 only, yet both stop at the same step."""
    total = 10
    common = ["--gin_file=gin/runs/smoke.gin", f"--gin.train.total_steps={total}", "--gin.train.log_every_steps=1",
              "--gin.train.tensorboard=False", "--gin.make_schedule.warmup_steps=1", "--gin.MeshConfig.data=2",
              "--gin.MeshConfig.fsdp=2"]
    sigterm_process_1 = ["--gin_bindings=import test_checkpoints",
                         "--gin.train.callbacks=[@atlas_tests.SignalAtStep()]",
                         "--gin.atlas_tests.SignalAtStep.step=2",
                         f"--gin.atlas_tests.SignalAtStep.signum={int(signal.SIGTERM)}",
                         "--gin.atlas_tests.SignalAtStep.process=1"]
    port = _free_port()
    workers = [
        _cli([*common, *sigterm_process_1, f"--model_dir={tmp_path / 'two'}",
              f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
             {"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
              "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])})
        for i in range(2)
    ]
    single = _cli([*common, f"--model_dir={tmp_path / 'one'}"], {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    errors = []
    try:
        for proc in [*workers, single]:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            errors.append(err)
    finally:
        for proc in [*workers, single]:
            if proc.poll() is None:
                proc.kill()

    two = logio.read_jsonl(tmp_path / "two" / "logs" / "train.jsonl")
    one = logio.read_jsonl(tmp_path / "one" / "logs" / "train.jsonl")
    stop = two[-1]["step"]
    assert 2 < stop < total  # both processes agreed on a step after the signal (no deadlock in the save)
    for err in errors[:2]:
        assert f"preempted: saved checkpoint at step {stop}" in err
    assert checkpoints.complete_steps(tmp_path / "two" / "checkpoints") == [stop]
    assert [r["step"] for r in two] == list(range(1, stop + 1))
    assert [r["step"] for r in one] == list(range(1, total + 1))
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one[:stop]], rtol=1e-6)
    assert [r["tokens_by_lang"] for r in two] == [r["tokens_by_lang"] for r in one[:stop]]  # global accounting


def test_paper_base_config_binds_the_paper_recipe():
    import atlas_t5x.data.pipeline  # noqa: F401  (the gin file imports it too)

    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings(
        [str(REPO / "gin/models/scale0.gin"), str(REPO / "gin/runs/paper_base.gin")], ["train.total_steps = 100"])
    assert gin.query_parameter("%SEQ_LEN") == 2048
    assert gin.query_parameter("make_train_pipeline.seq_len").scoped_selector == "SEQ_LEN/gin.macro"
    assert gin.query_parameter("make_schedule.peak_lr") == 2e-4
    assert gin.query_parameter("make_schedule.warmup_steps") == 1000
    config = models.ModelConfig()  # all fields from gin/models/scale0.gin + gin/paper.gin
    assert models.param_count(config) == 9_044_352
    assert optim.paper_batch_size() == 256  # bound to %MODEL_SCALE = scale0 (N < 150M)
    assert gin.query_parameter("train.pipeline_factory").selector == "make_train_pipeline"


def test_fused_loss_and_accumulated_microbatches_match_the_plain_step():
    """The fused chunked loss and 2 accumulated micro-batches of 4 rows give the 8-row logits step."""
    model = models.DecoderLM(TINY)
    batch = {k: jnp.asarray(v) for k, v in next(_pipeline_factory()()).items()}
    micro = trainer.split_microbatches(batch, 2)
    assert micro["decoder_input_tokens"].shape == (2, 4, 32)
    np.testing.assert_array_equal(micro["decoder_input_tokens"][1], batch["decoder_input_tokens"][1::2])
    tokens_per_micro = np.asarray(micro["decoder_loss_weights"].sum(axis=(1, 2)))
    assert tokens_per_micro[0] != tokens_per_micro[1]  # unequal padding: a mean of micro-batch means would differ

    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), batch["decoder_input_tokens"])["params"])
    schedule = optim.make_schedule(kind="constant", peak_lr=1e-2, warmup_steps=0, total_steps=10)
    optimizer = optim.make_optimizer(schedule)
    state = trainer.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))
    key = jax.random.PRNGKey(1)
    plain_state, plain = jax.jit(trainer.make_train_step(model, optimizer, schedule))(state, batch, key)
    assert float(plain["n_tokens"]) == float(batch["decoder_loss_weights"].sum()) == tokens_per_micro.sum()
    for microbatches, chunk in ((1, 8), (2, 8)):
        new_state, metrics = jax.jit(trainer.make_train_step(model, optimizer, schedule, microbatches, chunk))(
            state, batch, key)
        np.testing.assert_allclose(metrics["loss"], plain["loss"], rtol=1e-5)
        np.testing.assert_allclose(metrics["grad_norm"], plain["grad_norm"], rtol=1e-4)
        assert float(metrics["n_tokens"]) == float(plain["n_tokens"])
        assert int(new_state.step) == 1
        # Adam's first update is ±lr per element (1e-2 here), so compare at a small fraction of it.
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=2e-5),
                     new_state.params, plain_state.params)


def test_peak_flops_lookup_by_device_kind():
    assert trainer.lookup_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert trainer.lookup_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert trainer.lookup_peak_flops("TPU v5 lite") == 197e12
    assert trainer.lookup_peak_flops("TPU v4") == 275e12
    assert trainer.lookup_peak_flops("cpu") is None  # no MFU on CPU


def test_train_log_on_an_object_store_is_rewritten_whole(tmp_path, monkeypatch):
    import pathlib

    # gs:// objects cannot be appended to: logio rewrites them whole. Exercise that path on a
    # local folder standing in for the bucket.
    monkeypatch.setattr(logio, "_remote", lambda url: pathlib.Path(tmp_path, str(url).split("://", 1)[1]))
    path = "gs://bucket/run/logs/train.jsonl"
    logio.append_jsonl(path, [{"step": 1}, {"step": 2}])
    logio.append_jsonl(path, [{"step": 3, "loss": 1.5}])
    assert logio.read_jsonl(path) == [{"step": 1}, {"step": 2}, {"step": 3, "loss": 1.5}]
    trainer._truncate_log(path, 2)  # resumed from checkpoint 2
    assert logio.read_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert not list(tmp_path.rglob(".*.tmp"))
