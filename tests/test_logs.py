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
        with_id = draw(st.booleans())   # logs written before run ids have none
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
                if with_id:
                    row["run_id"] = f"{len(run):x}{run}"   # one id per run name (none repeat a point)
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


def _copied_run(tmp_path):
    """A run 'mono_en' (run id a1b2) logged steps 2, 4, 6; its folder was copied to 'mono_en_copy',
    which resumed from checkpoint 4 and logged steps 6 and 8 again under the new name."""
    from test_export import make_row

    from atlas_t5x import logio

    original = [make_row("mono_en", step, "en", run_id="a1b2") for step in (2, 4, 6)]
    copied = [make_row("mono_en_copy", step, "en", run_id="a1b2", loss=make_row("x", step, "en")["loss"] + 1e-7)
              for step in (6, 8)]
    logio.append_jsonl(tmp_path / "study" / "mono_en" / "logs" / "eval.jsonl", original)
    logio.append_jsonl(tmp_path / "study" / "mono_en_copy" / "logs" / "eval.jsonl", original[:2] + copied)
    return tmp_path / "study"


def test_a_point_logged_under_two_run_names_counts_once_with_a_warning_naming_both(tmp_path):
    study = _copied_run(tmp_path)
    with pytest.warns(logs.DuplicatePointWarning) as caught:
        rows = logs.read_rows(study)
    assert [(r["run"], r["step"]) for r in rows] == [("mono_en", 2), ("mono_en", 4), ("mono_en", 6),
                                                     ("mono_en_copy", 8)]
    message = str(caught[0].message)
    assert len(caught) == 1 and "run 'mono_en_copy' repeats run 'mono_en' (1 row(s), step 6, run id a1b2" in message
    assert "largest loss difference 1e-07 nats/token): kept 'mono_en'" in message

    # the export and the fitter read the same rows: the table holds each point once, and reads back quietly
    logs.write_csv(rows, tmp_path / "t.csv")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", logs.DuplicatePointWarning)
        assert len(logs.read_rows(tmp_path / "t.csv")) == 4
    from atlas_t5x.scaling import points as points_lib

    with pytest.warns(logs.DuplicatePointWarning):
        points = points_lib.load_points(study, points="all")
    assert sorted(zip(points["run"], points["step"])) == [("mono_en", 2), ("mono_en", 4), ("mono_en", 6),
                                                          ("mono_en_copy", 8)]


def test_rows_that_differ_in_their_point_or_carry_no_run_id_are_not_collapsed():
    from test_export import make_row

    base = make_row("a", 6, "en", run_id="a1b2")
    others = [make_row("b", 6, "en", run_id="ffff"),                 # another run (its own id)
              make_row("c", 6, "en", run_id="a1b2", lr=5e-4),        # one lineage, another schedule there
              make_row("d", 6, "de", run_id="a1b2"),                 # another target
              make_row("e", 6, "en", run_id="a1b2", params=99)]      # another model
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", logs.DuplicatePointWarning)
        assert len(logs.collapse_renamed_copies([base, *others])) == 5
        # logs written before run ids: equal numbers under two names are kept (the fitter names them)
        assert len(logs.collapse_renamed_copies([make_row("a", 6, "en"), make_row("b", 6, "en")])) == 2
    # a trunk's cooldown branches follow its id: a renamed trunk's branch is the same point
    branches = [make_row("a-cd1024", 6, "en", run_id="a1b2-cd1024", trunk="a", branch_tokens=1024),
                make_row("b-cd1024", 6, "en", run_id="a1b2-cd1024", trunk="b", branch_tokens=1024)]
    with pytest.warns(logs.DuplicatePointWarning, match="run 'b-cd1024' repeats run 'a-cd1024'"):
        assert [r["run"] for r in logs.collapse_renamed_copies(branches)] == ["a-cd1024"]


def test_header_only_table_is_an_error_naming_the_file(tmp_path):
    from test_export import make_row

    logs.write_csv([make_row("a", 6, "en")], tmp_path / "t.csv")
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    (tmp_path / "h.csv").write_text(header + "\n")
    with pytest.raises(logs.LogError, match=r"h\.csv: no rows \(the table holds a header only\)"):
        logs.read_rows(tmp_path / "h.csv")
