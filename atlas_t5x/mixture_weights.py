"""Mixture sampling-rate maths shared by the training mixtures and the mixture planner.

Standard library and numpy only (no gin, no TensorFlow): `atlas_t5x.data.mixtures` builds its
`Mixture` objects from these rates, and the fitter-side planner (`atlas_t5x.scaling.
mixture_planner`) compares its optimised mixture with them.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np


def temperature_rates(sizes: Mapping[str, float], temperature: float) -> dict[str, float]:
    """Temperature sampling rates p_l ∝ n_l^(1/T), normalised to sum 1, keyed in sorted order.

    Args:
      sizes: n_l per language (tokens, or any size measure), > 0.
      temperature: T > 0; T = 1 is proportional to size, T → ∞ tends to uniform.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    langs = sorted(sizes)
    n = np.array([float(sizes[lang]) for lang in langs])
    nonpositive = {lang: sizes[lang] for lang, v in zip(langs, n) if not v > 0}
    if not langs or nonpositive:
        raise ValueError(f"temperature mixture needs sizes > 0 for every language; bad: {nonpositive}")
    log_p = np.log(n) / temperature
    p = np.exp(log_p - log_p.max())
    return {lang: float(v) for lang, v in zip(langs, p / p.sum())}


def unimax_allocation(unique_tokens_by_lang: Mapping[str, float], token_budget: float,
                      max_epochs: float) -> dict[str, float]:
    """The Unimax token allocation per language (tokens, before normalisation; Chung et al. 2023).

    Languages are visited in order of increasing U (ties by code). Each gets the remaining budget
    divided by the number of languages still unvisited, capped at max_epochs * U_l (tokens); what a
    capped language cannot take stays in the remaining budget for the larger languages.
    """
    bad = {lang: u for lang, u in unique_tokens_by_lang.items() if not u > 0}
    if not unique_tokens_by_lang or bad:
        raise ValueError(f"unimax needs U > 0 for every language; bad: {bad}")
    order = sorted(unique_tokens_by_lang, key=lambda lang: (unique_tokens_by_lang[lang], lang))
    remaining = float(token_budget)
    allocation = {}
    for i, lang in enumerate(order):
        fair_share = remaining / (len(order) - i)
        allocation[lang] = min(fair_share, max_epochs * float(unique_tokens_by_lang[lang]))
        remaining -= allocation[lang]
    return allocation
