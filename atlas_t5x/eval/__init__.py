"""Scaling-law hooks: per-language evaluation during training and the exported eval logs.

- `unigram`: unigram statistics and the vocabulary-insensitive loss of Tao et al. (2024).
- `writer`: the append-only `MODEL_DIR/logs/eval.jsonl` writer (no duplicate rows on restart)
  and the per-language TensorBoard scalars.
- `callback`: the gin-configurable `PerLanguageEval` train-loop callback.
- `export`: gathering many runs' logs into one CSV/Parquet table (no JAX, no TensorFlow).

Nothing is imported here, so `atlas_t5x.eval.export` stays light for the fitter's side.
"""
