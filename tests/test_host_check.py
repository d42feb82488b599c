"""benchmarks/host_check.py: the per-host input rate a sweep's hungriest run needs on a slice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import host_check  # noqa: E402

from atlas_t5x import models, plans  # noqa: E402


def test_need_is_mfu_times_host_peak_over_flops_of_the_cheapest_run():
    target = plans.TARGETS["tpu_256x16gib"]
    peak, source = host_check.chip_peak(target, None)
    assert (peak, source) == (197e12, "data sheet, TPU v5e")
    hungry = host_check.hungriest_run(str(REPO / "gin/sweeps/paper.yaml"), target, 0.5, peak)
    # The paper sweep's smallest model, at its seq_len and its 64,512 embedding rows.
    assert hungry["run"].scale == "scale0" and hungry["run"].seq_len == 2048 and hungry["vocab_size"] == 64512
    flops = models.flops_per_token(models.get_model_config("scale0", vocab_size=64512), 2048)
    assert hungry["flops_per_token"] == flops
    assert hungry["need"] == pytest.approx(0.5 * 197e12 * 4 / flops, rel=1e-12)
    assert host_check.chip_peak(target, 1e15) == (1e15, "--peak_flops")
