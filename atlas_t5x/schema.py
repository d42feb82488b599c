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
    "schedule_phase": ((str,), "warmup | stable | decay"),
    "init": ((str,), "'scratch' or the checkpoint path a finetune started from"),
    "vocab": ((str,), "vocabulary name/path"),
    "vocab_size": ((int,), "vocabulary rows"),
    "seq_len": ((int,), "training sequence length, tokens"),
    "batch": ((int,), "global batch, sequences"),
    "scale": ((str,), "model scale name, e.g. scale0 or tiny2"),
}

SCHEDULE_PHASES = ("warmup", "stable", "decay")


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
    if row["schedule_phase"] not in SCHEDULE_PHASES:
        raise SchemaError(f"{where}: schedule_phase {row['schedule_phase']!r} not in {SCHEDULE_PHASES}")
    for key in ("tokens_by_lang", "unique_by_lang", "epochs_by_lang"):
        if set(row[key]) != set(row["tokens_by_lang"]):
            raise SchemaError(f"{where}: {key} languages differ from tokens_by_lang")
