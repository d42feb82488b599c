"""WSD cooldown branches on a tiny model: branch points, schedules, accounting, and a trunk that
continues exactly as without branches."""

import dataclasses
import functools

import gin
import jax
import numpy as np
import pytest

from atlas_t5x import cooldown, models, optim, partitioning, sweeps, trainer
from atlas_t5x.data import synthetic

TINY = models.get_model_config("tiny0", vocab_size=256, dropout_rate=0.0)
TOKENS_PER_STEP = 8 * 32


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


class Recorder:
    every_steps = 2
    evaluates_branches = True

    def __init__(self):
        self.calls = []

    def __call__(self, ctx):
        self.calls.append(dict(run=ctx.run_info.run, run_id=ctx.run_info.run_id, step=ctx.step, phase=ctx.schedule_phase, lr=ctx.lr,
                               tokens=int(ctx.pipeline.accounting().total), branch=ctx.branch,
                               params=jax.device_get(ctx.state.params)))


def _train(path, total_steps=20, decay_fraction=0.2, **kwargs):
    gin.parse_config("make_schedule.warmup_steps = 2\nmake_schedule.peak_lr = 1e-3\n"
                     f"make_schedule.decay_fraction = {decay_fraction}")
    recorder = Recorder()
    factory = functools.partial(synthetic.make_synthetic_pipeline, languages=("en", "fr"), weights=(1.0, 1.0),
                                seq_len=32, global_batch=8)
    result = trainer.train(str(path), model_config=TINY, mesh_config=partitioning.MeshConfig(data=-1),
                           pipeline_factory=factory, total_steps=total_steps, log_every_steps=4,
                           checkpoint_every_steps=100, callbacks=[recorder], peak_flops_per_device=1e12,
                           tensorboard=False, **kwargs)
    gin.clear_config()
    return result, recorder.calls


def test_branches_decay_evaluate_and_leave_the_trunk_unchanged(tmp_path):
    plain, plain_calls = _train(tmp_path / "plain")
    result, calls = _train(tmp_path / "branched", cooldown_at_tokens=[4 * TOKENS_PER_STEP, 8 * TOKENS_PER_STEP],
                           cooldown_fraction=0.5)
    trunk = [c for c in calls if c["run"] == "branched"]
    branches = [c for c in calls if c["run"] != "branched"]
    assert [(c["step"], c["phase"]) for c in trunk] == [(s, "warmup" if s == 2 else "decay" if s > 16 else "stable")
                                                         for s in range(2, 20, 2)] + [(20, "final")]
    # branch at step 4 decays over 2 steps, at step 8 over 4: logged with the branch's own steps and
    # tokens (the trunk's data stream continued: the tokens the trunk has at that step)
    plain_tokens = {c["step"]: c["tokens"] for c in plain_calls}
    assert [(c["run"], c["step"], c["phase"], c["tokens"]) for c in branches] == [
        ("branched-cd1024", 6, "cooldown_end", plain_tokens[6]),
        ("branched-cd2048", 12, "cooldown_end", plain_tokens[12])]
    assert branches[0]["branch"] == {"trunk": "branched", "branch_tokens": 1024}
    # a branch's run id follows its trunk's (one id per run: a renamed copy keeps them all)
    trunk_id = trunk[0]["run_id"]
    assert len(trunk_id) == 16 and {c["run_id"] for c in trunk} == {trunk_id}
    assert [c["run_id"] for c in branches] == [f"{trunk_id}-cd1024", f"{trunk_id}-cd2048"]
    assert plain_calls[0]["run_id"] != trunk_id   # each fresh start draws its own
    assert branches[0]["lr"] == pytest.approx(1e-3 * 0.5) and branches[1]["lr"] == pytest.approx(1e-3 * 0.25)
    # the trunk resumes where it was: same tokens, and the same parameters as a run without branches
    assert {c["step"]: c["tokens"] for c in trunk} == plain_tokens
    for a, b in zip(jax.tree.leaves(jax.device_get(result.state.params)),
                    jax.tree.leaves(jax.device_get(plain.state.params))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # a branch is the run that decays there: a 12-step WSD run decaying over its last 4 steps
    decayed, _ = _train(tmp_path / "decayed", total_steps=12, decay_fraction=4 / 12)
    for a, b in zip(jax.tree.leaves(branches[1]["params"]), jax.tree.leaves(jax.device_get(decayed.state.params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    at12 = next(c for c in trunk if c["step"] == 12)["params"]
    assert not np.allclose(jax.tree.leaves(branches[1]["params"])[0], jax.tree.leaves(at12)[0])


def test_branch_points_must_lie_in_the_stable_phase():
    with pytest.raises(ValueError, match="5000 tokens = step 20 lies outside the trunk's stable phase"):
        cooldown.branch_steps([5000], 250, 20, 2, 16, 0.2)
    with pytest.raises(ValueError, match="rounds to step 4, as another branch does"):
        cooldown.branch_steps([1000, 1010], 250, 20, 2, 16, 0.2)
    assert cooldown.branch_steps([2000, 1000], 250, 20, 2, 16, 0.2) == [4, 8]
    assert optim.cooldown_steps(40, 0.2) == 8
    schedule = optim.cooldown_schedule(1.0, 10, 4)
    assert [float(schedule(s)) for s in (9, 10, 12, 14)] == pytest.approx([1.0, 1.0, 0.5, 0.0])


def test_sweep_expands_cooldown_branches_into_gin(tmp_path):
    spec = {"name": "t", "defaults": {"tokens": 100 * 8 * 64, "seq_len": 64, "batch": 8, "warmup_steps": 5,
                                      "cooldown_at": [0.25, 0.5, 0.75], "cooldown_fraction": 0.2},
            "families": [{"family": "monolingual", "languages": ["en"], "scales": ["tiny0"]}]}
    sweep = sweeps.expand_sweep(spec)
    (run,) = sweep.runs
    assert sweeps.branch_points(run) == [25 * 512, 50 * 512, 75 * 512]
    assert sweeps.branch_steps_total(run) == 5 + 10 + 15
    text = sweeps.gin_config(run, tmp_path)
    assert "train.cooldown_at_tokens = [12800, 25600, 38400]" in text
    assert "train.cooldown_fraction = 0.2" in text
    bad = {**spec, "defaults": {**spec["defaults"], "cooldown_at": [0.95]}}
    with pytest.raises(sweeps.SweepError, match=r"cooldown_at 0.95 .* stable phase"):
        sweeps.expand_sweep(bad)


def test_sweep_checks_branches_against_the_trunks_own_decay(tmp_path):
    # the trunk decays over its last 20%: a branch at 0.8 would leave at the first decay step; the
    # sweep refuses it before anything trains (it used to pass the check and fail in the worker)
    spec = {"name": "t", "defaults": {"tokens": 100 * 8 * 64, "seq_len": 64, "batch": 8, "warmup_steps": 5,
                                      "decay_fraction": 0.2, "cooldown_at": [0.4, 0.8]},
            "families": [{"family": "monolingual", "languages": ["en"], "scales": ["tiny0"]}]}
    with pytest.raises(sweeps.SweepError, match=r"cooldown_at 0.8 .*steps 5…79 of 100"):
        sweeps.expand_sweep(spec)
    ok = {**spec, "defaults": {**spec["defaults"], "cooldown_at": [0.4, 0.75]}}
    (run,) = sweeps.expand_sweep(ok).runs
    assert "make_schedule.decay_fraction = 0.2" in sweeps.gin_config(run, tmp_path)
    # without cooldown_fraction a branch decays like the trunk (the trainer's rule), here over 20%
    assert sweeps.branch_steps_total(run) == optim.cooldown_steps(40, 0.2) + optim.cooldown_steps(75, 0.2) == 23
    binding = {**spec, "defaults": {**spec["defaults"], "decay_fraction": None,
                                    "gin_bindings": ["make_schedule.decay_fraction = 0.2"]}}
    with pytest.raises(sweeps.SweepError, match="'decay_fraction' field"):
        sweeps.expand_sweep(binding)
    with pytest.raises(sweeps.SweepError, match="'decay_fraction' must be in"):
        sweeps.expand_sweep({**spec, "defaults": {**spec["defaults"], "decay_fraction": 1.5}})


def test_branch_rows_name_their_trunk_and_pass_the_schema():
    from types import SimpleNamespace

    from atlas_t5x import schema
    from atlas_t5x.callbacks import RunInfo
    from atlas_t5x.eval import callback

    acc = SimpleNamespace(tokens_by_lang={"en": 1536}, unique_by_lang={"en": 10_000}, epochs_by_lang={"en": 0.1536},
                          total=1536)
    info = RunInfo(run="t-cd1024", mixture_name="monolingual_en", mixture_weights={"en": 1.0}, init="scratch",
                   vocab="byte", vocab_size=256, seq_len=32, global_batch=8, scale="tiny0", model_dir="/tmp/x")
    ctx = SimpleNamespace(pipeline=SimpleNamespace(accounting=lambda: acc), run_info=info, model_config=TINY,
                          step=6, lr=5e-4, schedule_phase="cooldown_end", branch={"trunk": "t", "branch_tokens": 1024})
    row = {**callback.run_fields(ctx), "target": "en", "eval_tokens": 8192, "loss": 2.0,
           "loss_unigram_norm": -1.0, "bits_per_byte": 2.9}
    schema.validate_row(row)
    assert (row["run"], row["trunk"], row["branch_tokens"], row["schedule_phase"]) == ("t-cd1024", "t", 1024,
                                                                                       "cooldown_end")
    trunk_row = callback.run_fields(SimpleNamespace(**{**vars(ctx), "branch": None}))
    assert "trunk" not in trunk_row
    assert "run_id" not in row   # a RunInfo without a run id (written before them): no field, rows still valid
    with_id = callback.run_fields(SimpleNamespace(**{**vars(ctx), "run_info": dataclasses.replace(info, run_id="ab12")}))
    assert with_id["run_id"] == "ab12"
    schema.validate_row({**with_id, "target": "en", "eval_tokens": 8192, "loss": 2.0, "loss_unigram_norm": -1.0,
                         "bits_per_byte": 2.9})
    assert callback.PerLanguageEval.evaluates_branches
