"""Scaling-law hooks: per-language evaluation during training and the exported eval logs.

- `unigram`: unigram statistics and the vocabulary-insensitive loss of Tao et al. (2024).
- `writer`: the append-only `MODEL_DIR/logs/eval.jsonl` writer (no duplicate rows on restart)
  and the per-language TensorBoard scalars.
- `callback`: the gin-configurable `PerLanguageEval` train-loop callback.
- exported tables: `atlas_t5x.logs` (the one reader and table writer of eval logs; no JAX, no TensorFlow).

Nothing is imported here: importing `atlas_t5x.eval` pulls in no TensorFlow or JAX.
"""
