"""atlas-export and atlas_t5x.logs (the one log reader): many runs' eval logs → one CSV/Parquet table."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from atlas_t5x import logio, logs, schema

REPO = Path(__file__).resolve().parents[1]


def _load_cli():
    from atlas_t5x.cli import export as export_cli

    return export_cli


def make_row(run: str, step: int, target: str, langs=("en", "sw"), **overrides) -> dict:
    tokens_by_lang = {lang: 100 * step * (i + 1) for i, lang in enumerate(langs)}
    unique_by_lang = {lang: 1000 * (i + 1) for i, lang in enumerate(langs)}
    row = {
        "schema_version": schema.SCHEMA_VERSION,
        "run": run,
        "step": step,
        "target": target,
        "loss": 3.0 + 1.0 / (step + 1),
        "loss_unigram_norm": -1.5 + 1.0 / (step + 1),
        "bits_per_byte": 1.2,
        "eval_tokens": 512,
        "tokens": sum(tokens_by_lang.values()),
        "tokens_by_lang": tokens_by_lang,
        "unique_by_lang": unique_by_lang,
        "epochs_by_lang": {k: tokens_by_lang[k] / unique_by_lang[k] for k in langs},
        "params": 123456,
        "params_nonembed": 23456,
        "flops": 6.0 * 123456 * sum(tokens_by_lang.values()),
        "mixture": {"name": "pair", "weights": {lang: 1.0 / len(langs) for lang in langs}},
        "lr": 1e-3,
        "schedule_phase": "stable",
        "init": "scratch",
        "vocab": "byte",
        "vocab_size": 259,
        "seq_len": 64,
        "batch": 8,
        "scale": "tiny0",
    }
    row.update(overrides)
    return row


def write_run(root: Path, run: str, rows) -> Path:
    path = root / run / "logs" / "eval.jsonl"
    logio.append_jsonl(path, rows)
    return path


@pytest.fixture
def study(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    write_run(root, "a", [make_row("a", s, t) for s in (0, 10) for t in ("en", "sw", "yo")])
    write_run(root, "b", [make_row("b", s, t, langs=("yo",)) for s in (0, 10, 20) for t in ("en", "yo")])
    return root


def test_export_round_trips_through_csv_and_parquet(study: Path, tmp_path: Path) -> None:
    rows = logs.export_logs([study], csv_path=tmp_path / "t.csv", parquet_path=tmp_path / "t.parquet")
    assert len(rows) == 6 + 6
    csv = pd.read_csv(tmp_path / "t.csv")
    # Dict fields flattened; languages a run did not train on are empty cells.
    assert {"tokens_by_lang.en", "tokens_by_lang.yo", "mixture.name", "mixture.weights.sw"} <= set(csv.columns)
    b_rows = csv[csv["run"] == "b"]
    assert b_rows["tokens_by_lang.en"].isna().all()
    assert (b_rows["tokens_by_lang.yo"] == b_rows["step"] * 100).all()
    # Parquet: per-language fields are native map columns, the mixture a struct
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "t.parquet")
    assert table.schema.field("tokens_by_lang").type == pa.map_(pa.string(), pa.int64())
    assert table.schema.field("epochs_by_lang").type == pa.map_(pa.string(), pa.float64())
    assert table.schema.field("mixture").type == pa.struct(
        [("name", pa.string()), ("weights", pa.map_(pa.string(), pa.float64()))])
    first = table.slice(0, 1).to_pylist()[0]
    assert dict(first["tokens_by_lang"]) == rows[0]["tokens_by_lang"]
    expected = sorted((r["run"], r["step"], r["target"]) for r in rows)
    for path in ("t.csv", "t.parquet"):
        back = logs.read_table(tmp_path / path)
        assert [schema.row_key(r) for r in back] == expected
        by_key = {schema.row_key(r): r for r in back}
        for r in rows:
            got = by_key[schema.row_key(r)]
            for field in ("tokens_by_lang", "unique_by_lang", "mixture", "params", "init"):
                assert got[field] == r[field], (path, field)
            assert got["loss"] == pytest.approx(r["loss"], rel=1e-12)


def test_truncated_last_line_keeps_complete_rows_and_warns_once(study: Path, tmp_path: Path) -> None:
    log = study / "a" / "logs" / "eval.jsonl"
    with open(log, "a") as f:
        f.write(json.dumps(make_row("a", 20, "en"))[:57])  # crash mid-write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = logs.export_logs([log], csv_path=tmp_path / "t.csv")
    truncation = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1 and str(log) in str(truncation[0].message)
    assert sorted((r["step"], r["target"]) for r in rows) == [
        (s, t) for s in (0, 10) for t in ("en", "sw", "yo")
    ]


def test_duplicate_keys_last_write_wins_within_a_file(study: Path) -> None:
    log = study / "a" / "logs" / "eval.jsonl"
    logio.append_jsonl(log, [make_row("a", 10, "en", loss=99.0)])
    with pytest.warns(UserWarning, match=r"dropped 1 duplicate.*keeping the last write.*\('a', 10, 'en'\)"):
        rows = logs.gather_rows(logs.find_eval_logs([study]))
    kept = [r for r in rows if schema.row_key(r) == ("a", 10, "en")]
    assert len(kept) == 1 and kept[0]["loss"] == 99.0
    assert len(rows) == 12


def test_identical_duplicates_are_one_row_and_differing_ones_across_files_are_refused(study: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / "a" / "logs" / "eval.jsonl"
    copy.parent.mkdir(parents=True)
    copy.write_bytes((study / "a" / "logs" / "eval.jsonl").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # identical rows: no warning
        rows = logs.gather_rows(logs.find_eval_logs([study, copy]))
    assert len(rows) == 12
    logio.append_jsonl(copy, [make_row("a", 20, "en")])
    assert len(logs.gather_rows(logs.find_eval_logs([study, copy]))) == 13   # new key: kept
    other = tmp_path / "other" / "a" / "logs" / "eval.jsonl"
    logio.append_jsonl(other, [make_row("a", 10, "en", loss=5.0)])
    with pytest.raises(logs.LogError, match=r"run 'a' step 10 target 'en' has different rows in .*two runs share the name"):
        logs.gather_rows(logs.find_eval_logs([study, other]))


def test_mixed_schema_versions_are_refused(study: Path, tmp_path: Path) -> None:
    write_run(study, "c", [make_row("c", 0, "en", schema_version=2)])
    mixed = r"mixed schema versions.*schema_version 2 in .*c/logs/eval.jsonl"
    with pytest.raises(schema.SchemaError, match=mixed):
        logs.export_logs([study])
    cli = _load_cli()
    assert cli.main([str(study), "--out", str(tmp_path / "t")]) == 2
    assert not (tmp_path / "t.csv").exists() and not (tmp_path / "t.parquet").exists()


def test_invalid_row_and_missing_source_exit_2(study: Path, tmp_path: Path, capsys) -> None:
    bad = make_row("d", 0, "en")
    del bad["tokens_by_lang"]
    write_run(study, "d", [bad])
    cli = _load_cli()
    assert cli.main([str(study), "--csv", str(tmp_path / "t.csv")]) == 2
    assert "missing field 'tokens_by_lang'" in capsys.readouterr().err
    assert cli.main([str(tmp_path / "nowhere"), "--csv", str(tmp_path / "t.csv")]) == 2
    assert "no eval log found" in capsys.readouterr().err


def test_cli_accepts_globs_and_prints_a_summary(study: Path, tmp_path: Path, capsys) -> None:
    cli = _load_cli()
    assert cli.main([str(study / "*" / "logs" / "eval.jsonl"), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "exported 12 rows from 2 log file(s): 2 runs, 3 targets" in out
    assert len(pd.read_parquet(tmp_path / "t.parquet")) == 12


def test_write_atomic_gives_files_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os
    from atlas_t5x import logio

    target = tmp_path / "out.json"
    logio.write_atomic(target, "{}")
    assert target.read_text() == "{}"
    assert (target.stat().st_mode & 0o777) == 0o666 & ~logio._UMASK
    assert not [p for p in tmp_path.iterdir() if p.name != "out.json"]  # no temp file left


def test_logio_treats_urls_as_whole_object_stores(tmp_path, monkeypatch):
    """gs://-style paths go through etils.epath: appends rewrite the object, reads see every row."""
    import pathlib
    from atlas_t5x import logio

    bucket = tmp_path / "bucket"
    opened = []

    def fake_remote(path):
        opened.append(str(path))
        return pathlib.Path(bucket, str(path).split("://", 1)[1])

    monkeypatch.setattr(logio, "_remote", fake_remote)
    url = "gs://b/run/logs/eval.jsonl"
    assert logio.is_url(url) and not logio.is_url(tmp_path / "x.jsonl")
    assert not logio.exists(url)
    logio.append_jsonl(url, [{"step": 1}])
    logio.append_jsonl(url, [{"step": 2}, {"step": 3}])
    assert logio.exists(url)
    assert [r["step"] for r in logio.read_jsonl(url)] == [1, 2, 3]
    assert opened and all(p == url for p in opened)
    assert (bucket / "b/run/logs/eval.jsonl").read_text().count("\n") == 3
