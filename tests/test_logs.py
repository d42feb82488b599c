"""atlas_t5x.logs: exported tables round-trip through the one reader (property test)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas_t5x import logs, schema

LANGS = ("en", "de", "sw", "yo", "kaa_Latn", "zh")
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
COUNT = st.integers(0, 2 ** 53)
POSITIVE = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def log_rows(draw) -> list[dict]:
    """Schema rows of a few runs with per-run language sets, numbers of any size, odd run names."""
    rows = []
    for run in draw(st.lists(TEXT, min_size=1, max_size=3, unique=True)):
        langs = draw(st.lists(st.sampled_from(LANGS), min_size=1, max_size=4, unique=True))
        unique = {lang: draw(st.integers(1, 2 ** 53)) for lang in langs}
        weights = {lang: draw(st.floats(0.0, 1.0)) for lang in langs}
        trunk = draw(st.one_of(st.none(), TEXT))
        for step in draw(st.lists(st.integers(0, 10 ** 9), min_size=1, max_size=3, unique=True)):
            tokens = {lang: draw(COUNT) for lang in langs}
            for target in draw(st.lists(st.sampled_from(LANGS), min_size=1, max_size=2, unique=True)):
                row = {
                    "schema_version": schema.SCHEMA_VERSION, "run": run, "step": step, "target": target,
                    "loss": draw(POSITIVE), "loss_unigram_norm": draw(st.floats(-10, 10)),
                    "bits_per_byte": draw(POSITIVE), "eval_tokens": draw(COUNT), "tokens": sum(tokens.values()),
                    "tokens_by_lang": tokens, "unique_by_lang": unique,
                    "epochs_by_lang": {lang: tokens[lang] / unique[lang] for lang in langs},
                    "params": draw(st.integers(1, 2 ** 53)), "params_nonembed": draw(COUNT),
                    "flops": draw(POSITIVE), "mixture": {"name": draw(TEXT), "weights": weights},
                    "lr": draw(st.floats(0, 1)), "schedule_phase": draw(st.sampled_from(schema.SCHEDULE_PHASES)),
                    "init": draw(st.sampled_from(["scratch", "gs://b/ckpt/10", "NA"])), "vocab": draw(TEXT),
                    "vocab_size": draw(st.integers(1, 10 ** 6)), "seq_len": 128, "batch": 8, "scale": draw(TEXT),
                }
                if trunk is not None:
                    row.update(trunk=trunk, branch_tokens=draw(COUNT))
                schema.validate_row(row)
                rows.append(row)
    return rows


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log_rows())
def test_csv_and_parquet_round_trip_through_the_reader(rows):
    with tempfile.TemporaryDirectory() as tmp:
        csv, parquet = Path(tmp, "t.csv"), Path(tmp, "t.parquet")
        logs.write_csv(rows, csv)
        logs.write_parquet(rows, parquet)
        assert logs.read_table(parquet) == rows            # native columns: exact, types included
        back = logs.read_rows(csv)
        assert len(back) == len(rows)
        for got, want in zip(back, rows):
            assert set(got) == set(want)
            for field, value in want.items():
                if field == "mixture":
                    assert got["mixture"]["name"] == value["name"]
                    assert got["mixture"]["weights"] == pytest.approx(value["weights"], rel=1e-15)
                elif isinstance(value, float) or field == "epochs_by_lang":
                    assert got[field] == pytest.approx(value, rel=1e-15, abs=0), field
                else:
                    assert got[field] == value and type(got[field]) is type(value), field


def test_sources_resolve_by_the_documented_patterns(tmp_path):
    from test_export import make_row

    from atlas_t5x import logio

    for run in ("mono_en", "mono_de", "bi_en_de"):
        logio.append_jsonl(tmp_path / "study" / run / "logs" / "eval.jsonl", [make_row(run, 10, "en")])
    logio.append_jsonl(tmp_path / "loose.jsonl", [make_row("loose", 10, "en")])
    runs = lambda rows: sorted({r["run"] for r in rows})  # noqa: E731
    assert runs(logs.read_rows(tmp_path / "study")) == ["bi_en_de", "mono_de", "mono_en"]        # study folder
    assert runs(logs.read_rows(tmp_path / "study" / "mono_en")) == ["mono_en"]                   # run folder
    assert runs(logs.read_rows(str(tmp_path / "study" / "mono_*"))) == ["mono_de", "mono_en"]    # glob of folders
    assert runs(logs.read_rows(tmp_path / "loose.jsonl")) == ["loose"]                           # any file name
    assert runs(logs.read_rows([tmp_path / "study", tmp_path / "study" / "mono_en"])) == [      # read once
        "bi_en_de", "mono_de", "mono_en"]
    logs.write_csv(logs.read_rows(tmp_path / "study"), tmp_path / "t.csv")
    assert runs(logs.read_rows(tmp_path / "t.csv")) == ["bi_en_de", "mono_de", "mono_en"]       # a table
    with pytest.raises(logs.LogError, match=r"t\.csv: an exported table, not an eval log"):
        logs.read_rows(str(tmp_path / "t*"))
    with pytest.raises(logs.LogError, match="nowhere: no eval log found"):
        logs.read_rows(tmp_path / "nowhere")
