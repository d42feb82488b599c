"""Synthetic exported-log rows for the analyses tests (schema-complete, no training)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from atlas_t5x import schema


def run_rows(run: str, weights: Mapping[str, float], targets: Sequence[str],
             loss_fn: Callable[[str, dict, float], float], totals: Sequence[float],
             params: int = 100_000_000, init: str = "scratch", unique: float = 1e15,
             scale: str = "tiny0") -> list[dict]:
    """Rows of one run: at each total token count, one row per target with loss_fn(target,
    tokens_by_lang, total)."""
    rows = []
    total_w = sum(weights.values())
    for step, total in enumerate(totals, start=1):
        by_lang = {l: int(round(total * w / total_w)) for l, w in weights.items()}
        for t in targets:
            row = {
                "schema_version": schema.SCHEMA_VERSION, "run": run, "step": step * 100, "target": t,
                "loss": float(loss_fn(t, by_lang, float(total))), "loss_unigram_norm": 0.0,
                "bits_per_byte": 1.0, "eval_tokens": 1000, "tokens": int(total),
                "tokens_by_lang": by_lang, "unique_by_lang": {l: int(unique) for l in weights},
                "epochs_by_lang": {l: by_lang[l] / unique for l in weights},
                "params": int(params), "params_nonembed": int(params) // 2,
                "flops": 6.0 * params * total,
                "mixture": {"name": run, "weights": {l: w / total_w for l, w in weights.items()}},
                "lr": 1e-3, "schedule_phase": "stable", "init": init, "vocab": "byte",
                "vocab_size": 256, "seq_len": 128, "batch": 8, "scale": scale,
            }
            schema.validate_row(row)
            rows.append(row)
    return rows


def log_grid(lo: float, hi: float, n: int) -> np.ndarray:
    return np.geomspace(lo, hi, n)
