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
                # each evaluation stands for a completed schedule (a cooldown end; the last: final)
                "lr": 1e-3, "schedule_phase": "final" if step == len(totals) else "cooldown_end",
                "init": init, "vocab": "byte",
                "vocab_size": 256, "seq_len": 128, "batch": 8, "scale": scale,
            }
            schema.validate_row(row)
            rows.append(row)
    return rows


def log_grid(lo: float, hi: float, n: int) -> np.ndarray:
    return np.geomspace(lo, hi, n)


def study_rows() -> list[dict]:
    """A small study: monolingual en/de at three sizes, a 50/50 en+de run, a uniform 4-language
    run and an en finetune of a multilingual checkpoint; losses from one ATLAS-like law."""
    E, A, B, alpha, beta, tau = 1.9, 300.0, 900.0, 0.32, 0.3, 0.3

    def law(N):
        def fn(t, by, tot):
            other = sum(v for l, v in by.items() if l != t)
            return E + A / N ** alpha + B / (by.get(t, 0) + tau * other) ** beta
        return fn

    rows = []
    for N in (1e7, 3e7, 1e8):
        for lang in ("en", "de"):
            rows += run_rows(f"mono_{lang}_{N:.0e}", {lang: 1.0}, [lang], law(N),
                             log_grid(2e8, 6e9, 6), params=int(N))
    rows += run_rows("bi_en_de_3e+07", {"en": 0.5, "de": 0.5}, ["en", "de"], law(3e7),
                     log_grid(4e8, 1.2e10, 6), params=int(3e7))
    rows += run_rows("k4_3e+07", {l: 0.25 for l in ("en", "de", "fr", "es")}, ["en", "de"], law(3e7),
                     log_grid(8e8, 2.4e10, 6), params=int(3e7))
    head_start = law(3e7)("en", {"en": 0, "de": 3e9}, 0)  # the checkpoint's loss on en

    def finetune(t, by, tot):
        return min(head_start, law(3e7)(t, {"en": by["en"] + 2e8}, 0) + 0.05)

    rows += run_rows("ft_en_3e+07", {"en": 1.0}, ["en"], finetune, log_grid(2e8, 6e9, 6),
                     params=int(3e7), init="/ckpt/unimax")
    return rows
