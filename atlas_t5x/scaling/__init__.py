"""The scaling-law fitter: laws, fitting engine, held-out splits, bootstrap and profiles.

Depends only on numpy, scipy, pandas, matplotlib and (for gradients) JAX, plus the shared
`atlas_t5x.schema` / `atlas_t5x.logio`. It never imports the trainer, Flax or TensorFlow.
"""

from atlas_t5x.scaling.laws import (
    LAW_NAMES,
    LAWS,
    Law,
    atlas_effective_data,
    bts_to_tau,
    chinchilla,
    chinchilla_optimal_params,
    make_law,
    saturate,
)

__all__ = [
    "LAW_NAMES",
    "LAWS",
    "Law",
    "atlas_effective_data",
    "bts_to_tau",
    "chinchilla",
    "chinchilla_optimal_params",
    "make_law",
    "saturate",
]
