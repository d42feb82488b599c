"""Gin bindings of the short synthetic training run that the checkpoint and fault tests share:
8 steps of gin/runs/smoke.gin, a row per step, a checkpoint every 3 steps (the newest 2 kept);
`train_smoke_run` runs it in-process and `snapshot` tells whether a folder was written to."""

TOTAL_STEPS = 8
SHORT_RUN_BINDINGS = [
    f"train.total_steps = {TOTAL_STEPS}",
    "train.log_every_steps = 1",
    "train.checkpoint_every_steps = 3",
    "train.keep_checkpoints = 2",
    "train.tensorboard = False",
    "make_schedule.warmup_steps = 2",
    "make_synthetic_pipeline.seq_len = 32",
]


def train_smoke_run(model_dir, bindings, **kwargs):
    """`trainer.train(model_dir, **kwargs)` on gin/runs/smoke.gin with `bindings`; gin cleared before and after."""
    from pathlib import Path

    import gin

    from atlas_t5x import trainer
    from atlas_t5x.data import synthetic  # noqa: F401  registers make_synthetic_pipeline

    repo = Path(__file__).resolve().parents[1]
    gin.clear_config()
    gin.add_config_file_search_path(str(repo))
    try:
        gin.parse_config_files_and_bindings([str(repo / "gin/runs/smoke.gin")], list(bindings))
        return trainer.train(str(model_dir), **kwargs)
    finally:
        gin.clear_config()


def snapshot(folder):
    """{relative path: (bytes, mtime ns)} of every file under `folder`: equal before and after = nothing written."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}
