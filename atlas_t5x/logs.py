"""The one reader (and table writer) of evaluation logs, for both the export and the fitter.

Standard library, pandas and pyarrow only: no JAX, no TensorFlow (the fitter-only install reads
logs through this module). Rows follow the exported-log schema (`atlas_t5x.schema`,
docs/log_schema.md): one row per (run, step, target).

Sources (`find_eval_logs`, `read_rows`)
  - an `eval.jsonl` file (any file name: a file given by name is read as JSONL);
  - a folder: searched recursively for files named `eval.jsonl` (a run folder holds
    `MODEL_DIR/logs/eval.jsonl`, a study folder many of them);
  - a glob pattern (`runs/mono_*`, `runs/*/logs/eval.jsonl`, `**` allowed) whose matches are files
    or folders as above;
  - an exported table, `*.csv` or `*.parquet` (`read_table`).
  A source that matches nothing is a LogError naming it. The same file reached twice is read once.

Duplicates: a row's identity is (run, step, target) (`schema.row_key`).
  - identical rows with one key are one row (a log reached through two copies);
  - differing rows with one key in ONE file: the last write wins (the later line is the newer
    measurement, e.g. a step re-evaluated after a restart); one warning counts them;
  - differing rows with one key in TWO files: LogError naming both files (two runs share a name;
    combining them would mix two models).

One point, one row (`collapse_renamed_copies`): a copied or renamed run folder that resumed logs
the same steps again under a second run name (the run name is the folder's name). Rows of two run
names that carry the same `run_id` (the run's identity: drawn at its first start, kept in its
checkpoints and under a rename; a cooldown branch's is `<trunk's run_id>-cd<tokens>`) and agree
on the step, target, token counts, schedule phase, learning rate, model, vocabulary, batch and
mixture measure one point: they are collapsed into one row with one DuplicatePointWarning naming
both run names (and the largest loss difference: a re-evaluation may differ in its last bits).
The row kept is the one of the run name that started first (its earliest logged step is the
lowest; ties: the name that sorts first). Rows without a `run_id` (logs written before it) are
never collapsed: equal numbers there cannot tell a copy from a coincidence; the fitter still
counts equal points and names their runs (`atlas_t5x.scaling.fit_run.input_warnings`).

Tables
  - CSV: dict fields flattened into dotted columns (`tokens_by_lang.en`, `unique_by_lang.en`,
    `epochs_by_lang.en`, `mixture.name`, `mixture.weights.en`; `schema.flatten_row`); a language a
    run did not train on is an empty cell.
  - Parquet: one column per field with native Arrow types: the per-language fields are
    `map<string, int64>` (tokens_by_lang, unique_by_lang) or `map<string, double>`
    (epochs_by_lang), `mixture` is `struct<name: string, weights: map<string, double>>`. (Tables
    exported before these native columns held the dict fields as JSON text; they still read.)
  Both are written through a temporary file and an atomic rename, and read back into the same
  schema rows (`read_table`).

Bad values are refused, not exported: a NaN, ±inf or negative `loss` / `bits_per_byte`, or a
non-finite number in any numeric field, raises LogError naming file, row, field and value. With
`drop_bad_values=True` such rows are dropped instead and counted in one warning.
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

from atlas_t5x import logio, schema

EVAL_LOG_NAME = "eval.jsonl"
EVAL_LOG_RELPATH = os.path.join("logs", EVAL_LOG_NAME)   # inside a MODEL_DIR
TABLE_SUFFIXES = (".csv", ".parquet")

# Losses that cannot be negative (loss_unigram_norm can: it subtracts the unigram log-likelihood).
NONNEGATIVE_FIELDS = ("loss", "bits_per_byte")


class LogError(ValueError):
    """Logs or tables that cannot be read or combined (names the file, row, field or value)."""


# ---------------------------------------------------------------------------------------------
# Finding and reading eval.jsonl files


def find_eval_logs(sources: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Resolves sources (files, folders, globs; see the module doc) to eval logs, sorted, no repeats."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: dict[Path, None] = {}
    for source in sources:
        source = os.fspath(source)
        matches = sorted(glob.glob(source, recursive=True)) if glob.has_magic(source) else [source]
        hits: list[Path] = []
        for match in map(Path, matches):
            if match.is_file() and match.suffix in TABLE_SUFFIXES:
                raise LogError(f"{match}: an exported table, not an eval log; read one table on its own "
                               "(a single .csv/.parquet path)")
            if match.is_file():
                hits.append(match)
            elif match.is_dir():
                hits.extend(sorted(p for p in match.rglob(EVAL_LOG_NAME) if p.is_file()))
        if not hits:
            raise LogError(f"{source}: no eval log found (expected an {EVAL_LOG_NAME} file, a run folder "
                           f"holding {EVAL_LOG_RELPATH}, a folder of runs or a glob of these)")
        for hit in hits:
            found[hit.resolve()] = None
    return sorted(found)


def read_eval_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete rows of one JSONL log (`logio.read_jsonl`: a truncated last line is dropped
    with a warning); a file that is not UTF-8 is a LogError naming file and line."""
    try:
        return logio.read_jsonl(path)
    except UnicodeDecodeError as err:
        data = Path(path).read_bytes()
        line = data[:err.start].count(b"\n") + 1
        raise LogError(f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") from None


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


def gather_rows(log_files: Iterable[str | os.PathLike], drop_bad_values: bool = False) -> list[dict[str, Any]]:
    """Reads, validates and de-duplicates the rows of several eval logs; sorted by (run, step, target).

    Every row must pass `schema.validate_row` (SchemaError names file, row and field) and all files
    must share one `schema_version`. Duplicates follow the module doc's rule. A non-finite number or
    negative loss (`bad_value`) is a LogError naming file, row and field; with `drop_bad_values`
    the row is dropped and one warning counts them.
    """
    per_file: list[tuple[Path, list[dict[str, Any]]]] = []
    versions: dict[str, set[int]] = {}
    for path in map(Path, log_files):
        rows = read_eval_log(path)
        for lineno, row in enumerate(rows, start=1):
            if "schema_version" not in row:
                raise schema.SchemaError(f"{path}: row {lineno}: missing field 'schema_version'")
        versions[str(path)] = {row["schema_version"] for row in rows}
        per_file.append((path, rows))
    nonempty = {src: v for src, v in versions.items() if v}
    if not nonempty:
        raise LogError("no rows in " + ", ".join(str(p) for p, _ in per_file) if per_file else "no log files given")
    schema.check_schema_versions(nonempty)

    kept: dict[tuple[str, int, str], tuple[Path, dict[str, Any]]] = {}
    replaced: list[str] = []
    dropped: list[str] = []
    for path, rows in per_file:
        for i, row in enumerate(rows, start=1):
            schema.validate_row(row, where=f"{path}: row {i}")
            problem = bad_value(row)
            if problem is not None:
                if not drop_bad_values:
                    raise LogError(f"{path}: row {i} (run {row['run']!r} step {row['step']} target "
                                   f"{row['target']!r}): {problem}; fix the log or drop such rows "
                                   "(atlas-export --drop_bad_values)")
                dropped.append(f"{path}: row {i}: {problem}")
                continue
            key = schema.row_key(row)
            if key in kept and kept[key][1] != row:
                if kept[key][0] != path:
                    raise LogError(f"run {key[0]!r} step {key[1]} target {key[2]!r} has different rows in "
                                   f"{kept[key][0]} and {path}: two runs share the name {key[0]!r}; "
                                   "rename one or read one of the folders")
                replaced.append(f"{key} in {path}")
            kept[key] = (path, row)
    if dropped:
        warnings.warn(f"dropped {len(dropped)} row(s) with non-finite or negative values: "
                      + "; ".join(dropped[:3]) + (" ..." if len(dropped) > 3 else ""), stacklevel=2)
    if not kept:
        raise LogError("no usable rows left after dropping bad values")
    if replaced:
        warnings.warn(f"dropped {len(replaced)} duplicate (run, step, target) row(s), keeping the last "
                      f"write of each: {', '.join(replaced[:3])}" + (" ..." if len(replaced) > 3 else ""),
                      stacklevel=2)
    return collapse_renamed_copies([kept[k][1] for k in sorted(kept)])


# ---------------------------------------------------------------------------------------------
# One point, one row: the same point logged under two run names


class DuplicatePointWarning(UserWarning):
    """Rows of two run names measured the same point (a copied or renamed run folder); one was kept."""


# What a row's point is, apart from its run's name (see the module doc).
_POINT_FIELDS = ("step", "target", "tokens", "tokens_by_lang", "unique_by_lang", "schedule_phase", "lr",
                 "branch_tokens", "params", "params_nonembed", "vocab", "vocab_size", "seq_len", "batch",
                 "scale", "init", "mixture")


def point_identity(row: Mapping[str, Any]) -> str | None:
    """The identity of the point a row measures, without its run name: its run id and what the
    point is (_POINT_FIELDS); None for a row without a run id."""
    if not row.get("run_id"):
        return None
    return f"{row['run_id']}\x00" + json.dumps({f: row.get(f) for f in _POINT_FIELDS}, sort_keys=True, default=str)


def collapse_renamed_copies(rows: Sequence[Mapping[str, Any]], where: str = "") -> list[dict[str, Any]]:
    """`rows` with every point logged under a second run name dropped (module doc: "One point, one
    row"), in their order; one DuplicatePointWarning names each (kept, dropped) pair of run names,
    how many rows and steps, and the largest loss difference (nats/token)."""
    rows = [dict(r) for r in rows]
    first: dict[str, tuple[int, str]] = {}
    for row in rows:
        name = str(row["run"])
        first[name] = min(first.get(name, (int(row["step"]), name)), (int(row["step"]), name))
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        identity = point_identity(row)
        if identity is not None:
            groups.setdefault(identity, []).append(i)
    dropped: set[int] = set()
    pairs: dict[tuple[str, str], list[tuple[int, float, str]]] = {}
    for members in groups.values():
        names = {str(rows[i]["run"]) for i in members}
        if len(names) < 2:
            continue
        keep = min(names, key=lambda n: first[n])
        kept = next(rows[i] for i in members if str(rows[i]["run"]) == keep)
        for i in members:
            if str(rows[i]["run"]) != keep:
                dropped.add(i)
                diff = abs(float(rows[i]["loss"]) - float(kept["loss"]))
                pairs.setdefault((keep, str(rows[i]["run"])), []).append((int(rows[i]["step"]), diff,
                                                                           str(kept.get("run_id", ""))))
    if not dropped:
        return rows
    described = []
    for (keep, other), found in sorted(pairs.items()):
        steps = sorted({s for s, _, _ in found})
        ids = sorted({i for _, _, i in found if i})
        described.append(
            f"run {other!r} repeats run {keep!r} ({len(found)} row(s), step{'s' if len(steps) > 1 else ''} "
            f"{steps[0]}{f'–{steps[-1]}' if len(steps) > 1 else ''}"
            + f", run id {', '.join(ids)}, largest loss difference "
            f"{max(d for _, d, _ in found):.3g} nats/token): kept {keep!r}")
    warnings.warn(f"{where + ': ' if where else ''}{len(dropped)} row(s) measure a point already logged under "
                  "another run name (a copied or renamed run folder that resumed); each point counts once. "
                  + "; ".join(described[:5]) + (f"; ... ({len(described)} pairs)" if len(described) > 5 else ""),
                  DuplicatePointWarning, stacklevel=2)
    return [row for i, row in enumerate(rows) if i not in dropped]


# ---------------------------------------------------------------------------------------------
# Any source → rows


def is_table(source: str | os.PathLike) -> bool:
    """Whether `source` names an exported table (by suffix) rather than logs."""
    return Path(source).suffix in TABLE_SUFFIXES


def read_rows(source: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Mapping[str, Any]],
              drop_bad_values: bool = False) -> list[dict[str, Any]]:
    """Schema rows from any source: rows already in memory (copied as they are), an exported table,
    or eval logs (a file, folder, glob, or a list of these); see the module doc."""
    if isinstance(source, (str, os.PathLike)):
        if is_table(source) and not glob.has_magic(os.fspath(source)):
            return read_table(source)
        return gather_rows(find_eval_logs([source]), drop_bad_values=drop_bad_values)
    items = list(source)
    if items and all(isinstance(s, (str, os.PathLike)) for s in items):
        tables = [s for s in items if is_table(s)]
        if tables:
            raise LogError(f"{tables[0]}: read an exported table on its own, not together with other sources")
        return gather_rows(find_eval_logs(items), drop_bad_values=drop_bad_values)
    return [dict(r) for r in items]


# ---------------------------------------------------------------------------------------------
# Tables: CSV (flattened) and Parquet (native map/struct columns)


def _ordered_columns(columns: Iterable[str]) -> list[str]:
    """Schema fields in schema order (dotted columns after their field, sorted), then extra fields."""
    columns = list(dict.fromkeys(columns))
    fields = list(schema.EVAL_ROW_FIELDS) + list(schema.OPTIONAL_FIELDS)

    def rank(col: str) -> tuple[int, int, str]:
        if col in fields:
            return (0, fields.index(col), "")
        head = col.split(".", 1)[0]
        if head in fields:
            return (0, fields.index(head), col)
        return (1, 0, col)

    return sorted(columns, key=rank)


def to_flat_frame(rows: Sequence[Mapping[str, Any]]):
    """Rows → the CSV table (pandas): dict fields as dotted columns (`tokens_by_lang.en`, ...)."""
    import pandas as pd

    flat = [schema.flatten_row(r) for r in rows]
    return pd.DataFrame(flat, columns=_ordered_columns(c for r in flat for c in r))


_MAP_VALUE_TYPES = {"tokens_by_lang": int, "unique_by_lang": int, "epochs_by_lang": float}


def _arrow_type(name: str, values: list[Any]):
    import pyarrow as pa

    if name in _MAP_VALUE_TYPES:
        return pa.map_(pa.string(), pa.int64() if _MAP_VALUE_TYPES[name] is int else pa.float64())
    if name == "mixture":
        return pa.struct([("name", pa.string()), ("weights", pa.map_(pa.string(), pa.float64()))])
    spec = schema.EVAL_ROW_FIELDS.get(name) or schema.OPTIONAL_FIELDS.get(name)
    if spec is not None:
        return {int: pa.int64(), float: pa.float64(), str: pa.string()}.get(spec[0][0])
    return None   # an extra field: let Arrow infer it


def to_arrow_table(rows: Sequence[Mapping[str, Any]]):
    """Rows → the Parquet table (pyarrow): native map and struct columns for the dict fields."""
    import pyarrow as pa

    columns = _ordered_columns(c for r in rows for c in r)
    arrays, fields = [], []
    for name in columns:
        values = [r.get(name) for r in rows]
        if name in _MAP_VALUE_TYPES:
            cast = _MAP_VALUE_TYPES[name]
            values = [None if v is None else sorted((k, cast(x)) for k, x in dict(v).items()) for v in values]
        elif name == "mixture":
            values = [None if v is None else {"name": v.get("name"), "weights": sorted((k, float(x)) for k, x in dict(v.get("weights", {})).items())}
                      for v in values]
        arrow_type = _arrow_type(name, values)
        if arrow_type is not None and pa.types.is_floating(arrow_type):
            values = [None if v is None else float(v) for v in values]
        array = pa.array(values, type=arrow_type)
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Writes the flat CSV table atomically."""
    logio.write_atomic(path, to_flat_frame(rows).to_csv(index=False))


def write_parquet(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Writes the Parquet table (native map/struct columns) atomically."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(to_arrow_table(rows), buf)
    logio.write_atomic(path, buf.getvalue())


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """An exported CSV or Parquet table → schema rows (validated), in file order.

    Raises LogError naming the file for anything that is not a readable table (missing, not UTF-8,
    malformed CSV/Parquet, a cell that cannot be decoded), SchemaError naming file and row for rows
    that break the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise LogError(f"{path}: no such file")
    try:
        rows = _read_table(path)
    except (LogError, schema.SchemaError):
        raise
    except (ValueError, KeyError, TypeError, OSError) as err:  # pandas / pyarrow decoding errors
        detail = f"not UTF-8 text (byte offset {err.start})" if isinstance(err, UnicodeDecodeError) else (
            f"{type(err).__name__}: {err}")
        raise LogError(f"{path}: not a readable exported-log table: {detail}") from None
    if not rows:
        raise LogError(f"{path}: no rows (the table holds a header only): no points to fit or export")
    for i, row in enumerate(rows, start=1):
        schema.validate_row(row, where=f"{path}: row {i}")
    return collapse_renamed_copies(rows, where=str(path))


def _read_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = []
        for record in pq.read_table(path).to_pylist():
            row: dict[str, Any] = {}
            for name, value in record.items():
                if value is None:
                    continue
                if name in schema.DICT_FIELDS and isinstance(value, str):
                    value = json.loads(value)   # tables exported before the native columns: JSON text
                elif name in _MAP_VALUE_TYPES:
                    value = dict(value)
                elif name == "mixture":
                    value = {"name": value["name"], "weights": dict(value["weights"] or [])}
                row[name] = value
            rows.append(row)
        return rows
    if path.suffix == ".csv":
        import pandas as pd

        # every cell as text, converted by the schema's types (integers stay exact beyond 2**53);
        # only an empty cell is missing: a run or vocabulary named "NA" or "nan" stays text
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        return [schema.unflatten_row(rec) for rec in frame.to_dict(orient="records")]
    raise LogError(f"{path}: unknown table format {path.suffix!r} (expected .csv or .parquet)")


def export_logs(
    sources: Sequence[str | os.PathLike],
    csv_path: str | os.PathLike | None = None,
    parquet_path: str | os.PathLike | None = None,
    drop_bad_values: bool = False,
) -> list[dict[str, Any]]:
    """Finds, gathers and writes the logs of `sources` (atlas-export); returns the exported rows."""
    rows = gather_rows(find_eval_logs(sources), drop_bad_values=drop_bad_values)
    if csv_path is not None:
        write_csv(rows, csv_path)
    if parquet_path is not None:
        write_parquet(rows, parquet_path)
    return rows
