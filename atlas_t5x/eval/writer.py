"""The append-only eval log `MODEL_DIR/logs/eval.jsonl` and its TensorBoard mirror.

One row per (run, step, target) as in docs/log_schema.md. Every row is checked with
`schema.validate_row` before it is written, and the writer reads the keys already in the log
when it opens it, so a run restarted from an earlier checkpoint re-evaluates only what is
missing and never writes a row twice. Rows are appended as whole lines with one write and an
fsync (`logio.append_jsonl`); a half-written last line left by a crash is dropped on the next
append.

`model_dir` may be a local folder or a URL (`gs://...`; `logio` handles both).

TensorBoard gets the same losses per language under `MODEL_DIR/tb/eval`
(`eval/<target>/loss`, `eval/<target>/loss_unigram_norm`, `eval/<target>/bits_per_byte`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Sequence

from etils import epath

from atlas_t5x import logio, schema

SCALAR_FIELDS = ("loss", "loss_unigram_norm", "bits_per_byte")


def eval_log_path(model_dir: str | os.PathLike) -> epath.Path:
    """MODEL_DIR/logs/eval.jsonl (local path or URL)."""
    return epath.Path(model_dir) / "logs" / "eval.jsonl"


class EvalLogWriter:
    """Appends validated eval rows to MODEL_DIR/logs/eval.jsonl, never repeating a key.

    Args:
      model_dir: the run's folder.
      tensorboard: also write per-language scalars with a clu `SummaryWriter` under
        MODEL_DIR/tb/eval.
      is_writer: False on processes other than 0 of a multi-host job (they keep the key set
        but write nothing).
    """

    def __init__(self, model_dir: str | os.PathLike, tensorboard: bool = True, is_writer: bool = True):
        self.path = eval_log_path(model_dir)
        self.is_writer = is_writer
        self._keys: set[tuple[str, int, str]] = set()
        if logio.exists(self.path):
            with warnings.catch_warnings():
                # A truncated last line is a crash mid-write: its row is re-evaluated.
                warnings.simplefilter("ignore")
                rows = logio.read_jsonl(self.path)
            self._keys = {schema.row_key(r) for r in rows}
        self._tb = None
        if tensorboard and is_writer:
            from clu import metric_writers  # TensorFlow-backed; only imported when used.

            self._tb = metric_writers.SummaryWriter(str(epath.Path(model_dir) / "tb" / "eval"))

    def has(self, run: str, step: int, target: str) -> bool:
        """Whether the log already holds the row (run, step, target)."""
        return (run, int(step), target) in self._keys

    @property
    def keys(self) -> frozenset[tuple[str, int, str]]:
        return frozenset(self._keys)

    def write(self, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Validates all `rows`, then appends those whose key is new. Returns the rows written.

        Raises schema.SchemaError (nothing written) if any row is malformed or two of `rows`
        share a key.
        """
        new: list[Mapping[str, Any]] = []
        seen: set[tuple[str, int, str]] = set()
        for row in rows:
            key = schema.row_key(row)
            schema.validate_row(row, where=f"eval row {key}")
            if key in seen:
                raise schema.SchemaError(f"eval row {key} given twice in one write")
            seen.add(key)
            if key not in self._keys:
                new.append(row)
        if self.is_writer and new:
            logio.append_jsonl(self.path, new)
            if self._tb is not None:
                for row in new:
                    self._tb.write_scalars(
                        row["step"], {f"eval/{row['target']}/{f}": float(row[f]) for f in SCALAR_FIELDS}
                    )
                self._tb.flush()
        self._keys.update(schema.row_key(r) for r in new)
        return new

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
