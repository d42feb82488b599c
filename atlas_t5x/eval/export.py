"""Gathering many runs' `logs/eval.jsonl` into one table (CSV and Parquet) for the fitter.

Only the standard library, pandas and pyarrow: the export sits between the trainer's logs and the
fitter, and must not pull in JAX or TensorFlow. The table has one row per (run, step, target):

- CSV: dict fields flattened into dotted columns (`tokens_by_lang.en`, `mixture.weights.en`,
  `mixture.name`) by `atlas_t5x.schema.flatten_row`; a language a run did not train on is an
  empty cell.
- Parquet: one column per schema field, dict fields kept as JSON strings (sorted keys), so the
  column set does not depend on which languages the runs trained on.

Both files are written through a temporary file and an atomic rename.

Bad values are refused, not exported: a NaN, ±inf or negative `loss` / `bits_per_byte`, or a
non-finite number in any numeric field, raises ExportError naming file, row, field and value
(NaN would otherwise become an empty CSV cell the fitter later calls a missing field). With
`drop_bad_values=True` such rows are dropped instead and counted in one warning. A file that is
not UTF-8 is refused naming the file and line.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from atlas_t5x import logio, schema

EVAL_LOG_RELPATH = os.path.join("logs", "eval.jsonl")


class ExportError(ValueError):
    """Bad input to the export: a path that names no log, or an unreadable table."""


# Losses that cannot be negative (loss_unigram_norm can: it subtracts the unigram log-likelihood).
NONNEGATIVE_FIELDS = ("loss", "bits_per_byte")


def bad_value(row: Mapping[str, Any]) -> str | None:
    """Why a schema-valid row holds a value no fit can use (non-finite number, negative loss), or None."""
    for name, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"field {name!r} is {value}"
        if isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(inner, float) and not math.isfinite(inner):
                    return f"field {name}.{key} is {inner}"
    for name in NONNEGATIVE_FIELDS:
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            return f"field {name!r} is negative ({value})"
    return None


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """`logio.read_jsonl`, with a file that is not UTF-8 reported as ExportError naming file and line."""
    try:
        return logio.read_jsonl(path)
    except UnicodeDecodeError as err:
        data = Path(path).read_bytes()
        line = data[:err.start].count(b"\n") + 1
        raise ExportError(f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") from None


def find_eval_logs(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Resolves each source to eval.jsonl files, sorted and without repeats.

    A source may be an eval.jsonl file, a run folder (MODEL_DIR, holding logs/eval.jsonl), a study
    folder (searched recursively for */logs/eval.jsonl) or a glob pattern of any of these.
    Raises ExportError naming the first source that matches nothing.
    """
    found: dict[Path, None] = {}
    for source in sources:
        source = os.fspath(source)
        matches = sorted(glob.glob(source, recursive=True)) if glob.has_magic(source) else [source]
        hits: list[Path] = []
        for match in matches:
            path = Path(match)
            if path.is_file():
                hits.append(path)
            elif (path / EVAL_LOG_RELPATH).is_file():
                hits.append(path / EVAL_LOG_RELPATH)
            elif path.is_dir():
                hits.extend(sorted(path.rglob(EVAL_LOG_RELPATH)))
        if not hits:
            raise ExportError(
                f"{source}: no eval log found (expected a file, MODEL_DIR/{EVAL_LOG_RELPATH} or a folder of runs)"
            )
        for hit in hits:
            found[hit.resolve()] = None
    return sorted(found)


def gather_rows(log_files: Iterable[str | os.PathLike], drop_bad_values: bool = False) -> list[dict[str, Any]]:
    """Reads, checks and de-duplicates the rows of several eval logs.

    - A truncated last line (crash mid-write) is dropped with one warning per file; every
      complete row is kept (`logio.read_jsonl`).
    - Rows from files with different `schema_version`s raise SchemaError naming the files.
    - Every row must pass `schema.validate_row` (SchemaError names file, line and field).
    - Repeated (run, step, target) keys keep their first row; one warning counts the rest.
    - A non-finite number or negative loss (`bad_value`) raises ExportError naming file, row and
      field; with `drop_bad_values` the row is dropped and one warning counts them.

    Returns rows sorted by (run, step, target).
    """
    per_file: list[tuple[Path, list[dict[str, Any]]]] = []
    versions: dict[str, set[int]] = {}
    for path in map(Path, log_files):
        rows = read_log(path)
        for lineno, row in enumerate(rows, start=1):
            if "schema_version" not in row:
                raise schema.SchemaError(f"{path}: row {lineno}: missing field 'schema_version'")
        versions[str(path)] = {row["schema_version"] for row in rows}
        per_file.append((path, rows))
    nonempty = {src: v for src, v in versions.items() if v}
    if not nonempty:
        raise schema.SchemaError(
            "no rows in " + ", ".join(str(p) for p, _ in per_file) if per_file else "no log files given"
        )
    schema.check_schema_versions(nonempty)

    kept: dict[tuple[str, int, str], dict[str, Any]] = {}
    duplicates: list[tuple[str, tuple[str, int, str]]] = []
    dropped: list[str] = []
    for path, rows in per_file:
        for i, row in enumerate(rows, start=1):
            schema.validate_row(row, where=f"{path}: row {i}")
            problem = bad_value(row)
            if problem is not None:
                if not drop_bad_values:
                    raise ExportError(f"{path}: row {i} (run {row['run']!r}, step {row['step']}, target "
                                      f"{row['target']!r}): {problem}; fix the log or drop such rows "
                                      "(export_logs.py --drop-bad-values)")
                dropped.append(f"{path}: row {i}: {problem}")
                continue
            key = schema.row_key(row)
            if key in kept:
                duplicates.append((str(path), key))
                continue
            kept[key] = row
    if dropped:
        warnings.warn(f"dropped {len(dropped)} row(s) with non-finite or negative values: "
                      + "; ".join(dropped[:3]) + (" ..." if len(dropped) > 3 else ""), stacklevel=2)
    if not kept:
        raise ExportError("no usable rows left after dropping bad values")
    if duplicates:
        examples = ", ".join(f"{k} in {p}" for p, k in duplicates[:3])
        warnings.warn(
            f"dropped {len(duplicates)} duplicate (run, step, target) row(s), keeping the first of "
            f"each: {examples}" + (" ..." if len(duplicates) > 3 else ""),
            stacklevel=2,
        )
    return [kept[k] for k in sorted(kept)]


def _ordered_columns(columns: Iterable[str]) -> list[str]:
    """Schema fields in schema order, then dotted dict columns (sorted), then extra fields."""
    columns = list(dict.fromkeys(columns))
    fields = list(schema.EVAL_ROW_FIELDS)

    def rank(col: str) -> tuple[int, int, str]:
        if col in schema.EVAL_ROW_FIELDS:
            return (0, fields.index(col), "")
        head = col.split(".", 1)[0]
        if head in schema.EVAL_ROW_FIELDS:
            return (0, fields.index(head), col)
        return (1, 0, col)

    return sorted(columns, key=rank)


def to_flat_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows → the CSV table: dict fields as dotted columns (`tokens_by_lang.en`, ...)."""
    flat = [schema.flatten_row(r) for r in rows]
    columns = _ordered_columns(c for r in flat for c in r)
    return pd.DataFrame(flat, columns=columns)


def to_json_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows → the Parquet table: dict fields as JSON strings with sorted keys."""
    records = [
        {k: (json.dumps(v, sort_keys=True) if k in schema.DICT_FIELDS else v) for k, v in r.items()}
        for r in rows
    ]
    columns = _ordered_columns(c for r in records for c in r)
    return pd.DataFrame(records, columns=columns)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Writes the flat CSV table atomically."""
    logio.write_atomic(path, to_flat_frame(rows).to_csv(index=False))


def write_parquet(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Writes the Parquet table (dict fields as JSON strings) atomically."""
    buf = io.BytesIO()
    to_json_frame(rows).to_parquet(buf, index=False, engine="pyarrow")
    logio.write_atomic(path, buf.getvalue())


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads an exported CSV or Parquet table back into schema rows (validated).

    Raises ExportError naming the file for anything that is not a readable table (not UTF-8,
    malformed CSV/Parquet, a cell that cannot be decoded), SchemaError naming file and row for
    rows that break the schema.
    """
    try:
        return _read_table(Path(path))
    except (ExportError, schema.SchemaError):
        raise
    except (ValueError, KeyError, TypeError, OSError) as err:  # pandas / pyarrow / json decoding errors
        detail = f"not UTF-8 text (byte offset {err.start})" if isinstance(err, UnicodeDecodeError) else (
            f"{type(err).__name__}: {err}")
        raise ExportError(f"{path}: not a readable exported-log table: {detail}") from None


def _read_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        rows = []
        for rec in frame.to_dict(orient="records"):
            row = {}
            for k, v in rec.items():
                if k in schema.DICT_FIELDS:
                    row[k] = json.loads(v)
                elif v is None or (isinstance(v, float) and v != v):
                    continue
                else:
                    row[k] = v.item() if hasattr(v, "item") else v
            rows.append(row)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype={"run": str, "target": str})
        rows = [schema.unflatten_row(rec) for rec in frame.to_dict(orient="records")]
    else:
        raise ExportError(f"{path}: unknown table format {path.suffix!r} (expected .csv or .parquet)")
    for i, row in enumerate(rows, start=1):
        schema.validate_row(row, where=f"{path}: row {i}")
    return rows


def export_logs(
    sources: Sequence[str | os.PathLike],
    csv_path: str | os.PathLike | None = None,
    parquet_path: str | os.PathLike | None = None,
    drop_bad_values: bool = False,
) -> list[dict[str, Any]]:
    """Finds, gathers and writes the logs of `sources`; returns the exported rows."""
    rows = gather_rows(find_eval_logs(sources), drop_bad_values=drop_bad_values)
    if csv_path is not None:
        write_csv(rows, csv_path)
    if parquet_path is not None:
        write_parquet(rows, parquet_path)
    return rows
