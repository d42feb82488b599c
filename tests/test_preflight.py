"""Eval batch vs mesh before step 0 (atlas_t5x.preflight): unit rules, every shipped plan with
gin/runs/paper_base.gin, and the trainer refusing a bad binding with exit 2 before it trains."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from atlas_t5x import preflight

REPO = Path(__file__).resolve().parents[1]


class PerLanguageEval:  # the binding is named after the callback's class
    def __init__(self, batch_size):
        self.batch_size = batch_size


def test_eval_batch_rule_names_binding_and_a_valid_value():
    assert preflight.eval_batch_problem(32, {"data": 2, "fsdp": 16, "tensor": 1}) is None
    problem = preflight.eval_batch_problem(32, {"data": 2, "fsdp": 128, "tensor": 1})
    assert "PerLanguageEval.batch_size = 32" in problem and "data*fsdp = 256" in problem
    assert "bind PerLanguageEval.batch_size = 256" in problem
    assert preflight.valid_eval_batch(300, 256) == 512 and preflight.valid_eval_batch(3, 8) == 8
    assert preflight.eval_batch_problem(16, {"data": 1, "fsdp": 8, "tensor": 2}) is None  # tensor does not split rows
    with pytest.raises(ValueError, match=r"PerLanguageEval.batch_size = 4 .*bind PerLanguageEval.batch_size = 8"):
        preflight.check_eval_batches([PerLanguageEval(4)], {"data": 8}, global_batch=8)
    preflight.check_eval_batches([PerLanguageEval(None)], {"data": 8}, global_batch=64)  # None: the train batch
    preflight.check_eval_batches([object()], {"data": 8}, global_batch=64)  # callbacks without a batch


def _binding(text: str, name: str) -> str | None:
    found = re.findall(rf"^\s*{re.escape(name)}\s*=\s*(\S+)", text, flags=re.M)
    return found[-1] if found else None


@pytest.mark.parametrize("plan_file", sorted((REPO / "gin" / "plans").glob("*/*.gin")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_paper_base_eval_batch_splits_on_every_shipped_plan(plan_file):
    """paper_base.gin, then the plan file (README order): the eval batch in force splits the mesh, and
    its float32 logits rows per chip stay within a third of the chip (what plans.eval_rows allows)."""
    base = int(_binding((REPO / "gin/runs/paper_base.gin").read_text(), "PerLanguageEval.batch_size"))
    text = plan_file.read_text()
    mesh = {axis: int(_binding(text, f"MeshConfig.{axis}")) for axis in ("data", "fsdp", "tensor")}
    for eval_batch in (base, int(_binding(text, "PerLanguageEval.batch_size") or base)):
        assert preflight.eval_batch_problem(eval_batch, mesh) is None
    chip = 80e9 if plan_file.parent.name == "gpu_8x80gb" else 16 * 2**30
    rows_per_chip = eval_batch // (mesh["data"] * mesh["fsdp"])
    assert 1 <= rows_per_chip and rows_per_chip * 3 * 4 * 2048 * 64512 / mesh["tensor"] <= 0.3 * chip


def test_trainer_refuses_an_eval_batch_the_mesh_cannot_split_before_step_0(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts/train.py"), "--gin_file=gin/runs/smoke.gin",
         "--gin_bindings=import atlas_t5x.eval.callback", "--gin.train.callbacks=[@PerLanguageEval()]",
         "--gin.PerLanguageEval.batch_size=4", "--gin.MeshConfig.data=8", f"--model_dir={tmp_path / 'run'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "PerLanguageEval.batch_size = 4" in proc.stderr and "bind PerLanguageEval.batch_size = 8" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "logs" / "train.jsonl").exists()
