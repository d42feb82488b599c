"""The scaling-law fitter: laws, fitting engine, held-out splits, bootstrap and profiles.

Depends only on numpy, scipy, pandas, pyarrow, matplotlib, scikit-learn and (for gradients,
inside the engine's functions) JAX, plus the shared `atlas_t5x.schema`, `atlas_t5x.logio` and
`atlas_t5x.logs`. It never imports the trainer, Flax, TensorFlow, seqio or gin
(tests/test_fitter_imports.py; layers in docs/architecture.md).

Modules: `laws`, `objectives`, `engine` (numeric core), `points` (rows → points tables),
`table_fit` (one law per target), `fit_run` (atlas-fit end to end, fit.json), `heldout`,
`selection`, `bootstrap`, `profiles`, `plots`; analyses `curves`, `transfer`, `curse`,
`crossover`, `live_forecast`; planners `planner`, `mixture_planner`; `report`.
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
