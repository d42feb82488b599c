"""Gin bindings of the short synthetic training run that the checkpoint and fault tests share:
8 steps of gin/runs/smoke.gin, a row per step, a checkpoint every 3 steps (the newest 2 kept)."""

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
