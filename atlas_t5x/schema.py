"""The exported-log schema: the only thing the trainer hooks and the fitter share.

Pure standard library on purpose: `atlas_t5x.scaling` imports this module and must never pull in
TensorFlow or the trainer. See docs/log_schema.md for the meaning and units of every field.
"""

from __future__ import annotations

from typing import Any, Mapping

SCHEMA_VERSION = 1

# field -> (python types accepted, description). Units are in docs/log_schema.md.
EVAL_ROW_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "schema_version": ((int,), "integer schema version of this row"),
    "run": ((str,), "run name (unique within a study)"),
    "step": ((int,), "optimizer steps completed when evaluated"),
    "target": ((str,), "evaluation language code"),
    "loss": ((float, int), "token cross-entropy, nats/token"),
    "loss_unigram_norm": ((float, int), "vocabulary-insensitive loss of Tao et al., nats/token"),
    "bits_per_byte": ((float, int), "cross-entropy in bits per UTF-8 byte"),
    "eval_tokens": ((int,), "target tokens scored for this row"),
    "tokens": ((int,), "total non-padding training tokens seen so far"),
    "tokens_by_lang": ((dict,), "training tokens seen so far, per training language"),
    "unique_by_lang": ((dict,), "unique tokens U in the training split, per training language"),
    "epochs_by_lang": ((dict,), "tokens_by_lang / unique_by_lang"),
    "params": ((int,), "N: parameters including the tied embedding"),
    "params_nonembed": ((int,), "parameters excluding the embedding"),
    "flops": ((float, int), "6 * params * tokens, FLOPs"),
    "mixture": ((dict,), "{'name': str, 'weights': {lang: float}}"),
    "lr": ((float, int), "learning rate at this step"),
    "schedule_phase": ((str,), "warmup | stable | decay | cooldown_end | final"),
    "init": ((str,), "'scratch' or the checkpoint path a finetune started from"),
    "vocab": ((str,), "vocabulary name/path"),
    "vocab_size": ((int,), "vocabulary rows"),
    "seq_len": ((int,), "training sequence length, tokens"),
    "batch": ((int,), "global batch, sequences"),
    "scale": ((str,), "model scale name, e.g. scale0 or tiny2"),
}

# What an evaluated point is (docs/log_schema.md): warmup/stable/decay are points along a schedule;
# "cooldown_end" is the last evaluation of a WSD cooldown branch (a completed schedule for the
# branch's tokens), "final" the last evaluation of a run that finished its schedule. Only the last
# two are valid (N, D) points of a scaling law fitted across runs (Hägele et al. 2024).
SCHEDULE_PHASES = ("warmup", "stable", "decay", "cooldown_end", "final")
END_PHASES = ("cooldown_end", "final")

# Optional fields (readers must not require them; logs written before them still read): the trunk run
# a cooldown branch came from, and the run id.
OPTIONAL_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "trunk": ((str,), "the run a cooldown branch was branched from (its row group)"),
    "branch_tokens": ((int,), "training tokens at which a cooldown branch left its trunk"),
    "run_id": ((str,), "the run's identity: drawn at its first start, kept in its checkpoints and under "
                       "a renamed folder (a cooldown branch: <trunk's run_id>-cd<tokens>)"),
}


class SchemaError(ValueError):
    """A log row or table does not follow the exported-log schema."""


def validate_row(row: Mapping[str, Any], where: str = "row") -> None:
    """Raises SchemaError naming `where` and the offending field if `row` is malformed."""
    for name, (types, _) in EVAL_ROW_FIELDS.items():
        if name not in row:
            raise SchemaError(f"{where}: missing field {name!r}")
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise SchemaError(
                f"{where}: field {name!r} has type {type(value).__name__}, expected "
                + " or ".join(t.__name__ for t in types)
            )
    if row["schema_version"] != SCHEMA_VERSION:
        raise SchemaError(
            f"{where}: schema_version {row['schema_version']} != supported {SCHEMA_VERSION}"
        )
    for name, (types, _) in OPTIONAL_FIELDS.items():
        if name in row and (isinstance(row[name], bool) or not isinstance(row[name], types)):
            raise SchemaError(f"{where}: optional field {name!r} has type {type(row[name]).__name__}, "
                              f"expected {types[0].__name__}")
    if row["schedule_phase"] not in SCHEDULE_PHASES:
        raise SchemaError(f"{where}: schedule_phase {row['schedule_phase']!r} not in {SCHEDULE_PHASES}")
    for key in ("tokens_by_lang", "unique_by_lang", "epochs_by_lang"):
        if set(row[key]) != set(row["tokens_by_lang"]):
            raise SchemaError(f"{where}: {key} languages differ from tokens_by_lang")


# ---------------------------------------------------------------------------------------------
# Table form (atlas-export; read and written by `atlas_t5x.logs`). CSV flattens the dict fields into
# dotted columns (`tokens_by_lang.en`, `mixture.name`, `mixture.weights.en`); Parquet keeps them as
# native map / struct columns.

DICT_FIELDS = ("tokens_by_lang", "unique_by_lang", "epochs_by_lang", "mixture")
# value type inside each per-language dict
_DICT_VALUE_TYPES: dict[str, type] = {
    "tokens_by_lang": int,
    "unique_by_lang": int,
    "epochs_by_lang": float,
    "mixture.weights": float,
}


def row_key(row: Mapping[str, Any]) -> tuple[str, int, str]:
    """The identity of a row: (run, step, target). A log never holds two rows with one key."""
    return (row["run"], int(row["step"]), row["target"])


def check_schema_versions(versions_by_source: Mapping[str, set[int]]) -> int:
    """Returns the single schema version used by all sources, or raises SchemaError naming them.

    `versions_by_source` maps a source (e.g. a log file path) to the versions found in it.
    """
    found: dict[int, list[str]] = {}
    for source, versions in versions_by_source.items():
        for v in versions:
            found.setdefault(v, []).append(source)
    if not found:
        raise SchemaError("no rows: cannot determine a schema_version")
    if len(found) > 1:
        detail = "; ".join(
            f"schema_version {v} in {', '.join(sorted(srcs)[:3])}"
            + (f" (+{len(srcs) - 3} more)" if len(srcs) > 3 else "")
            for v, srcs in sorted(found.items())
        )
        raise SchemaError(f"mixed schema versions, refusing to combine them: {detail}")
    (version,) = found
    if version != SCHEMA_VERSION:
        raise SchemaError(f"schema_version {version} is not the supported version {SCHEMA_VERSION}")
    return version


def flatten_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A log row → one flat CSV record (dict fields become dotted columns)."""
    flat: dict[str, Any] = {}
    for name, value in row.items():
        if name == "mixture" and isinstance(value, Mapping):
            flat["mixture.name"] = value.get("name")
            for lang, w in dict(value.get("weights", {})).items():
                flat[f"mixture.weights.{lang}"] = w
        elif name in DICT_FIELDS and isinstance(value, Mapping):
            for lang, v in value.items():
                flat[f"{name}.{lang}"] = v
        else:
            flat[name] = value
    return flat


def _is_missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and value != value)


def _to_int(value: Any) -> int:
    """An integer cell, exactly: "9007199254740993" stays that number (no trip through float);
    "1e9" or 1e9 (a hand-written table) is accepted when it is integral."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            value = float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def _number_or_text(value: Any) -> Any:
    """A cell of a column the schema does not know: an int or float when the text is one."""
    if not isinstance(value, str):
        return value
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def unflatten_row(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_row` for one CSV record (strings or numbers).

    Missing cells (a language another run trained on) are dropped; scalar fields are coerced to
    the types in EVAL_ROW_FIELDS so the result passes `validate_row`.
    """
    row: dict[str, Any] = {f: {} for f in DICT_FIELDS if f != "mixture"}
    mixture: dict[str, Any] = {"name": None, "weights": {}}
    for col, value in flat.items():
        if _is_missing(value):
            continue
        if col == "mixture.name":
            mixture["name"] = str(value)
        elif col.startswith("mixture.weights."):
            mixture["weights"][col[len("mixture.weights."):]] = float(value)
        elif "." in col and col.split(".", 1)[0] in DICT_FIELDS:
            field, lang = col.split(".", 1)
            row[field][lang] = _to_int(value) if _DICT_VALUE_TYPES[field] is int else float(value)
        elif col in EVAL_ROW_FIELDS or col in OPTIONAL_FIELDS:
            types = (EVAL_ROW_FIELDS.get(col) or OPTIONAL_FIELDS[col])[0]
            if types[0] is int:
                row[col] = _to_int(value)
            elif types[0] is float:
                row[col] = float(value)
            else:
                row[col] = value
        else:
            row[col] = _number_or_text(value)
    row["mixture"] = mixture
    return row
