"""Sharding plans (atlas_t5x.plans), scripts/mesh_plan.py and the launch files of sweep --print."""

import importlib.util
import math
import re
import shlex
from pathlib import Path

import gin
import pytest
import yaml

from atlas_t5x import models, plans

REPO = Path(__file__).resolve().parents[1]
GPU, TPU = plans.TARGETS["gpu_8x80gb"], plans.TARGETS["tpu_256x16gib"]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_cli", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("scale", ["scale34", "scale46"])
@pytest.mark.parametrize("target", [GPU, TPU], ids=lambda t: t.name)
def test_paper_scales_get_a_plan_that_fits_and_divides(scale, target):
    cfg = models.get_model_config(scale)
    for batch in (1024, 2048):
        plan = plans.select_plan(scale, target.devices, target.chip_bytes, 2048, batch,
                                 devices_per_host=target.devices_per_host)
        assert plan.fits and plan.memory.total <= 0.9 * target.chip_bytes
        assert plan.data * plan.fsdp * plan.tensor == target.devices
        assert cfg.d_model % plan.fsdp == 0 and cfg.num_heads % plan.tensor == 0
        assert batch % (plan.data * plan.fsdp * plan.microbatches) == 0
        # The plan is the cheapest that fits: the same mesh without remat and micro-batches does not.
        if (plan.remat_policy, plan.microbatches) != ("none", 1):
            bare = plans.estimate_memory(models.get_model_config(scale, dtype="bfloat16"), 2048, batch, plan.data,
                                         plan.fsdp, plan.tensor, "none", 1)
            assert bare.total > 0.9 * target.chip_bytes


def test_state_is_sharded_like_the_parameters_sixteen_bytes_each():
    cfg = models.get_model_config("scale46", dtype="bfloat16")
    n = models.param_count(cfg)
    memory = plans.estimate_memory(cfg, 2048, 2048, data=1, fsdp=8, tensor=1, remat_policy="full", microbatches=1)
    assert memory.params == 4 * n / 8 and memory.optimizer == 8 * n / 8 and memory.gradients == 4 * n / 8
    # scale34's d_model = 2176 = 17 * 128: fsdp = 256 cannot split it, so the planner uses 128.
    plan = plans.select_plan("scale34", 256, 16 * plans.GiB, 2048, 2048)
    assert (plan.data, plan.fsdp) == (2, 128)
    replicated = plans.estimate_memory(models.get_model_config("scale34", dtype="bfloat16"), 2048, 2048, 1, 256, 1,
                                       "full", 1)
    assert replicated.params == 4 * models.param_count(models.get_model_config("scale34"))
    # Remat shrinks activations in the documented order.
    by_policy = [plans.estimate_memory(cfg, 2048, 2048, 1, 8, 1, p, 16).activations for p in plans.REMAT_ORDER]
    assert by_policy == sorted(by_policy, reverse=True)


def test_small_scale_keeps_everything_and_one_micro_batch():
    plan = plans.select_plan("scale0", 8, 80e9, 2048, 256)
    assert (plan.remat_policy, plan.microbatches, plan.tensor) == ("none", 1, 1)
    assert plan.gin_bindings() == ["MeshConfig.data = 1", "MeshConfig.fsdp = 8", "MeshConfig.tensor = 1",
                                   'ModelConfig.remat_policy = "none"', "train.num_microbatches = 1"]


def test_bad_plans_name_every_number_and_the_nearest_plan_that_fits():
    with pytest.raises(plans.PlanError) as err:
        plans.evaluate_plan("scale34", 8, 80e9, 2048, 1000, data=1, fsdp=3, tensor=2, remat_policy="full",
                            microbatches=1)
    message = str(err.value)
    assert "1*3*2 = 6 but there are 8 devices" in message
    assert "tensor = 2 does not divide num_heads = 17" in message
    assert "global batch 1000 is not a multiple of data*fsdp*num_microbatches = 1*3*1 = 3" in message
    with pytest.raises(plans.PlanError, match=r"(?s)does not fit.*activations .*nearest plan that fits.*"
                                              r"remat_policy=full, num_microbatches=16"):
        plans.evaluate_plan("scale46", 8, 80e9, 2048, 2048, 1, 8, 1, "none", 1)
    with pytest.raises(plans.PlanError, match=r"no plan for scale46 fits 8 devices .* 16 devices would fit"):
        plans.select_plan("scale46", 8, 16e9, 2048, 2048)
    with pytest.raises(ValueError, match="valid names: none, full, dots_saveable"):
        plans.evaluate_plan("scale0", 8, 80e9, 2048, 256, 1, 8, 1, "dots", 1)


def test_shipped_gin_plans_match_the_planner():
    for target in (GPU, TPU):
        files = sorted((REPO / "gin" / "plans" / target.name).glob("scale*.gin"))
        assert len(files) == 47
        for path in files:
            plan = plans.select_plan(path.stem, target.devices, target.chip_bytes,
                                     devices_per_host=target.devices_per_host)
            assert path.read_text() == plans.gin_plan_text(plan, target), f"{path}: rerun mesh_plan.py --write_gin"
    gin.clear_config()
    try:
        import atlas_t5x.trainer  # noqa: F401  registers train, MeshConfig, ModelConfig

        gin.parse_config_files_and_bindings([str(REPO / "gin/models/scale46.gin"),
                                             str(REPO / "gin/plans/tpu_256x16gib/scale46.gin")], [])
        from atlas_t5x import partitioning

        plan = plans.select_plan("scale46", 256, 16 * plans.GiB, devices_per_host=4)
        assert partitioning.MeshConfig() == partitioning.MeshConfig(plan.data, plan.fsdp, plan.tensor)
        assert models.ModelConfig().remat_policy == plan.remat_policy
        assert gin.query_parameter("train.num_microbatches") == plan.microbatches
    finally:
        gin.clear_config()


def test_mesh_plan_cli_prints_plan_and_flags(capsys):
    cli = _load_script("mesh_plan")
    assert cli.main(["--scale=scale46", "--devices=256", "--chip_gib=16", "--devices_per_host=4"]) == 0
    out = capsys.readouterr().out
    plan = plans.select_plan("scale46", 256, 16 * plans.GiB, devices_per_host=4)
    assert f"mesh data={plan.data} fsdp={plan.fsdp} tensor={plan.tensor}" in out
    assert re.search(r"total\s+" + re.escape(f"{plan.memory.total / plans.GiB:.2f}") + " GiB", out)
    flags = shlex.split(out.strip().splitlines()[-1].removeprefix("gin flags: "))
    assert flags == [f"--gin.{b.replace(' = ', '=')}" for b in plan.gin_bindings()]

    assert cli.main(["--scale=scale46", "--target=gpu_8x80gb", "--mesh=1,8,1", "--remat=none",
                     "--microbatches=1"]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "nearest plan that fits" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--scale=scale46", "--target=gpu_8x80gb", "--remat=dots"])
    assert exit_info.value.code == 2
    assert "valid names: none, full" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# scripts/sweep.py --print


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "name": "launch test\nx",
        "defaults": {"seq_len": 2048, "batch": "paper", "tokens": 2048 * 2048 * 4, "vocab": "spm/my.model",
                     "vocab_size": 64512, "eval_languages": ["en"], "gin_files": ["gin/paper.gin"]},
        "families": [
            {"family": "monolingual", "languages": ["en", "de"], "scales": ["scale34"]},
            {"family": "monolingual", "languages": ["fr"], "scales": ["scale0"],
             "gin_bindings": ["train.num_microbatches = 3"]},
            {"family": "finetune", "from": "mono-de-scale34", "languages": ["cy"]},
        ]}))
    return path


def _commands(out: str) -> list[list[str]]:
    return [shlex.split(line) for line in out.strip().splitlines()]


def test_sweep_print_commands_slurm_array_and_dependencies(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = _load_script("sweep")
    assert cli.main([str(_spec(tmp_path)), "--out", "out", "--print"]) == 0
    commands = _commands(capsys.readouterr().out)
    names = [next(a for a in c if a.startswith("--model_dir=")).rsplit("/", 1)[1] for c in commands]
    assert names == ["mono-en-scale34", "mono-de-scale34", "mono-fr-scale0", "ft-mono-de-scale34-to-cy"]
    for argv, name in zip(commands, names):
        assert argv[0] == "env" and argv[1] == "MADLAD_DIR=${MADLAD_DIR:?set MADLAD_DIR to the MADLAD-400 corpus root}"
        assert Path(argv[2]).is_absolute() and argv[3] == str(REPO / "scripts" / "train.py")
        files = [a.removeprefix("--gin_file=") for a in argv if a.startswith("--gin_file=")]
        assert all(Path(f).is_absolute() and Path(f).is_file() for f in files)
        assert files[-1] == str(tmp_path / "out" / "runs" / name / "sweep_run.gin")
        assert f'--gin.make_train_pipeline.vocab="{tmp_path / "spm" / "my.model"}"' in argv
        assert not any("auto_detect" in a for a in argv)  # one host
    scale = {"mono-en-scale34": "scale34", "mono-fr-scale0": "scale0"}
    for index, name in ((0, "mono-en-scale34"), (2, "mono-fr-scale0")):
        batch = 2048 if scale[name] == "scale34" else 256
        plan = plans.select_plan(scale[name], 8, 80e9, 2048, batch)
        bindings = [a.removeprefix("--gin.") for a in commands[index] if a.startswith("--gin.") and "Config." in a
                    or a.startswith("--gin.train.")]
        expected = [b.replace(" = ", "=") for b in plan.gin_bindings()]
        if name == "mono-fr-scale0":  # the spec binds train.num_microbatches itself: the plan leaves it alone
            expected = [b for b in expected if not b.startswith("train.num_microbatches")]
        assert bindings == expected

    # The first command's gin files and flags configure train() with the scale and its plan.
    gin.clear_config()
    try:
        import atlas_t5x.data.pipeline  # noqa: F401  (make_train_pipeline)
        import atlas_t5x.trainer  # noqa: F401
        from atlas_t5x import partitioning

        argv = commands[0]
        gin.parse_config_files_and_bindings(
            [a.removeprefix("--gin_file=") for a in argv if a.startswith("--gin_file=")],
            [a.removeprefix("--gin.") for a in argv if a.startswith("--gin.")], skip_unknown=False)
        plan = plans.select_plan("scale34", 8, 80e9, 2048, 2048)
        config = models.ModelConfig()
        assert (config.name, config.remat_policy, config.dtype) == ("scale34", plan.remat_policy, "bfloat16")
        assert partitioning.MeshConfig() == partitioning.MeshConfig(plan.data, plan.fsdp, plan.tensor)
        assert gin.query_parameter("train.num_microbatches") == plan.microbatches
        assert gin.query_parameter("make_train_pipeline.vocab") == str(tmp_path / "spm" / "my.model")
    finally:
        gin.clear_config()

    launch = tmp_path / "out" / "launch"
    sbatch = (launch / "sweep.sbatch").read_text()
    assert "#SBATCH --job-name=launch_test_x" in sbatch  # the spec's name, made a safe job name
    assert "#SBATCH --array=0-3" in sbatch and "#SBATCH --nodes=1" in sbatch and "#SBATCH --ntasks-per-node=1" in sbatch
    cases = {index: cmd for index, cmd in re.findall(r"^  (\d+)\) CMD=\((.*)\) ;;", sbatch, flags=re.M)}
    assert sorted(cases) == ["0", "1", "2", "3"]
    for i, argv in enumerate(commands):
        assert shlex.split(cases[str(i)]) == argv[2:] + ["--gin.maybe_initialize_distributed.auto_detect=True"]
    assert 'srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 "${CMD[@]}"' in sbatch
    submit = (launch / "submit.sh").read_text().splitlines()
    assert "SCRATCH=$(sbatch --parsable --array=0-2 sweep.sbatch)" in submit
    assert any(line.startswith("FT_3=$(sbatch --parsable --array=3 --dependency=afterok:${SCRATCH}_1 sweep.sbatch)")
               for line in submit)


def test_sweep_print_tpu_target_needs_a_bucket(tmp_path, capsys):
    """TPU launch files run on cluster workers (tests/test_launch.py): a local --out is refused."""
    cli = _load_script("sweep")
    assert cli.main([str(_spec(tmp_path)), "--out", str(tmp_path / "out"), "--print", "--target=tpu_256x16gib",
                     "--corpus", "gs://b/madlad"]) == 2
    assert "is a local path" in capsys.readouterr().err and "gs://" in capsys.readouterr().err + "gs://"
    assert not (tmp_path / "out").exists()


def test_sweep_print_refuses_what_it_cannot_honour(tmp_path, capsys):
    cli = _load_script("sweep")
    spec = str(_spec(tmp_path))
    for extra, message in ((["--subprocess"], "--print cannot honour --subprocess"),
                           (["--target=tpu_v9"], "unknown --target 'tpu_v9'")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([spec, "--out", str(tmp_path / "o"), "--print", *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert cli.main([spec, "--out", str(tmp_path / "o"), "--print", "--only", "ft-mono-de-scale34-to-cy"]) == 2
    assert "not among the runs printed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_trainer_preflight_names_heads_and_memory_before_allocating():
    cfg = models.get_model_config("tiny0", vocab_size=256)
    with pytest.raises(plans.PlanError, match=r"tensor = 4 does not divide tiny0's num_heads = 2 and d_ff = 64 "
                                              r"\(divisors of num_heads: \[1, 2\]\).*2\*1\*4 devices"):
        plans.check_run(cfg, {"data": 2, "fsdp": 1, "tensor": 4}, 64, 8, 1)
    assert plans.check_run(cfg, {"data": 8, "fsdp": 1, "tensor": 1}, 64, 8, 1) is None  # CPU: no memory limit
    big = models.get_model_config("scale46", dtype="bfloat16")
    with pytest.raises(plans.PlanError, match=r"(?s)does not fit the device memory \(74\.5 GiB.*"
                                              r"activations.*nearest plan that fits.*num_microbatches=16"):
        plans.check_run(big, {"data": 1, "fsdp": 8, "tensor": 1}, 2048, 2048, 1, chip_bytes=80e9)
    fits = plans.check_run(models.get_model_config("scale46", dtype="bfloat16", remat_policy="full"),
                           {"data": 1, "fsdp": 8, "tensor": 1}, 2048, 2048, 16, chip_bytes=80e9)
    assert fits.total < 80e9


def test_scanned_remat_model_trains_sharded_and_checkpoints_its_layout(tmp_path):
    import jax
    from jax.sharding import PartitionSpec as P

    from atlas_t5x import checkpoints, logio, partitioning, trainer
    from atlas_t5x.data import synthetic

    cfg = models.get_model_config("tiny1", vocab_size=256, dropout_rate=0.1, scan_layers=True, remat_policy="full")
    gin.clear_config()
    try:
        gin.parse_config("make_schedule.warmup_steps = 1\nmake_schedule.peak_lr = 3e-3\ntrain.num_microbatches = 2")
        result = trainer.train(
            str(tmp_path), model_config=cfg, mesh_config=partitioning.MeshConfig(data=2, fsdp=2, tensor=2),
            pipeline_factory=lambda: synthetic.make_synthetic_pipeline(seq_len=32, global_batch=8, vocab_size=256),
            total_steps=6, log_every_steps=2, checkpoint_every_steps=6, peak_flops_per_device=1e12,
            tensorboard=False)
    finally:
        gin.clear_config()
    rows = logio.read_jsonl(tmp_path / "logs" / "train.jsonl")
    assert result.step == 6 and all(math.isfinite(r["loss"]) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    kernel = result.state.params["layers"]["mlp"]["wi_0"]
    assert kernel.shape == (2, 64, 128) and kernel.sharding.spec == P(None, "fsdp", "tensor")
    meta = checkpoints.read_metadata(tmp_path / "checkpoints", 6)
    assert meta["param_layout"] == "scanned" and meta["model_config"]["remat_policy"] == "full"
    assert len(jax.tree.leaves(result.state.params)) == 1 + 8  # embedding + q, k, v, out, wi_0, wi_1, wo, norm (stacked)


def test_a_size_defined_only_by_its_gin_file_gets_a_plan_and_sweep_print_works(tmp_path, capsys):
    from atlas_t5x import sweeps

    cfg = sweeps.scale_config("demo0")
    plan = plans.select_plan(cfg, 8, 80e9, seq_len=64, global_batch=8)
    assert plan.scale == "demo0" and plan.fits
    assert plan.data * plan.fsdp * plan.tensor == 8
    sweep_cli = _load_script("sweep")
    import yaml

    # the demo at batch 1: no 8-device mesh splits it (demo0 has 2 heads, so tensor <= 2), and
    # --print says so, naming the batch and the size
    demo = yaml.safe_load((REPO / "gin" / "sweeps" / "demo.yaml").read_text())
    demo["defaults"]["batch"] = 1
    unsplittable = tmp_path / "demo_batch1.yaml"
    unsplittable.write_text(yaml.safe_dump(demo))
    assert sweep_cli.main([str(unsplittable), "--out", str(tmp_path), "--print"]) == 2
    assert "no mesh of 8 devices splits global batch 1 of demo0" in capsys.readouterr().err
    # the shipped demo (batch 4) prints: data 4 x tensor 2 splits it at every size
    assert sweep_cli.main([str(REPO / "gin/sweeps/demo.yaml"), "--out", str(tmp_path / "shipped"), "--print"]) == 0
    capsys.readouterr()
    demo["defaults"]["batch"] = 8
    spec = tmp_path / "demo_batch8.yaml"
    spec.write_text(yaml.safe_dump(demo))
    assert sweep_cli.main([str(spec), "--out", str(tmp_path), "--print"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if "scripts/train.py" in line]
    assert len(printed) == len(demo_runs := sweeps.load_sweep(str(spec)).runs) == 12, demo_runs   # 4 + 3 seeds × 2 + 2
    assert all("--gin.MeshConfig.fsdp=" in line for line in printed)
