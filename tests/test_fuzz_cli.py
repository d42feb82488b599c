"""Property-based bad-input tests (Hypothesis) of the CLIs' parsers and the log/table readers.

The property everywhere: whatever the input (random bytes, truncated lines, wrong types, extreme
numbers), a reader returns clean data or raises its own error type naming the file, and a CLI
returns 0 or exits 2 with one `error:` line, never a traceback — and writes nothing when it
fails. Examples are derandomized (a fixed sample, the same on every machine and in CI).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import tempfile
from pathlib import Path

import gin
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _reliability_tally import record
from atlas_t5x import logio, schema
from atlas_t5x import logs
from test_export import make_row

REPO = Path(__file__).resolve().parents[1]
FIXED = settings(derandomize=True, database=None, deadline=None, max_examples=40,
                 suppress_health_check=[HealthCheck.too_slow])


from atlas_t5x.cli import export as export_cli  # noqa: E402
from atlas_t5x.cli import fit as fit_cli  # noqa: E402
from atlas_t5x.cli import plan as plan_cli  # noqa: E402
from atlas_t5x.cli import transfer as transfer_cli  # noqa: E402


def _run_cli(main, argv) -> tuple[int, str]:
    """(exit code, stderr) of a CLI's main; argparse errors count as their exit code."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


def _clean_failure(code: int, stderr: str) -> bool:
    return code == 2 and "Traceback" not in stderr and "error" in stderr


# Lines a crash, a disk error or a hand edit could leave in a log.
junk_lines = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b'{"run": "r", "step": 1'),  # truncated JSON
    st.just(b"[1, 2, 3]"),
    st.just(b'{"loss": NaN}'),
    st.just(b"\xff\xfe\x00\x01"),
)


@FIXED
@given(lines=st.lists(junk_lines, min_size=1, max_size=5), keep_valid=st.booleans())
def test_export_of_damaged_logs_is_clean_or_a_named_error(lines, keep_valid):
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp, "run", "logs", "eval.jsonl")
        log.parent.mkdir(parents=True)
        valid = [json.dumps(make_row("r", 10, "en")).encode()] if keep_valid else []
        log.write_bytes(b"\n".join(valid + lines))
        out = Path(tmp, "table")
        code, err = _run_cli(export_cli.main, [str(log.parent.parent), "--out", str(out)])
        clean = code == 0 or (_clean_failure(code, err) and str(log) in err)
        nothing_written = code == 0 or not any(Path(tmp).glob("table*"))
        record("bad_input", "export_logs: damaged eval.jsonl", tried=1, ok=int(clean and nothing_written))
        assert clean, err
        assert nothing_written
        if code == 0:
            for row in logs.read_table(f"{out}.csv"):
                assert math.isfinite(row["loss"]) and row["loss"] >= 0


extreme = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), -1.0, 1e308, -1e-300, 5e-324]))


@FIXED
@given(field=st.sampled_from(["loss", "bits_per_byte", "flops", "lr", "loss_unigram_norm"]), value=extreme,
       drop=st.booleans())
def test_export_refuses_or_drops_non_finite_and_negative_losses(field, value, drop):
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp, "logs", "eval.jsonl")
        logio.append_jsonl(log, [make_row("r", 10, "en"), make_row("r", 20, "en", **{field: value})])
        bad = not math.isfinite(value) or (field in logs.NONNEGATIVE_FIELDS and value < 0)
        argv = [str(log), "--csv", str(Path(tmp, "t.csv"))] + (["--drop-bad-values"] if drop else [])
        code, err = _run_cli(export_cli.main, argv)
        if bad and not drop:
            ok = _clean_failure(code, err) and "row 2" in err and field in err and not Path(tmp, "t.csv").exists()
        elif bad:
            ok = code == 0 and "dropped 1 row(s)" in err and len(logs.read_table(Path(tmp, "t.csv"))) == 1
        else:
            ok = code == 0 and len(logs.read_table(Path(tmp, "t.csv"))) == 2
        record("bad_input", "export_logs: extreme values", tried=1, ok=int(ok))
        assert ok, (field, value, drop, code, err)


def test_export_names_a_non_utf8_line(tmp_path):
    log = tmp_path / "eval.jsonl"
    log.write_bytes(json.dumps(make_row("r", 10, "en")).encode() + b"\n" + b'{"run": "\xff"}\n')
    code, err = _run_cli(export_cli.main, [str(log), "--csv", str(tmp_path / "t.csv")])
    assert code == 2 and f"{log}:2: not UTF-8" in err and "0xff" in err
    assert not (tmp_path / "t.csv").exists()


number_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.sampled_from(["0", "-0", "-1", "1e400", "-1e-400", "nan", "inf", "abc", "", "1e21", "2", "0.5"]),
)


@FIXED
@given(k=number_text, n=number_text, d=number_text, r=number_text, w=number_text)
def test_plan_languages_numbers_give_a_plan_or_exit_2(k, n, d, r, w):
    argv = ["languages", f"--k={k}", f"--n={n}", f"--tokens-per-lang={d}", f"--r={r}", f"--w-n={w}"]
    code, err = _run_cli(plan_cli.main, argv)
    ok = code == 0 or (code == 2 and "Traceback" not in err)
    record("bad_input", "plan.py languages numbers", tried=1, ok=int(ok))
    assert ok, (argv, code, err)
    if code == 0:  # only positive, finite inputs make plans
        assert all(float(x) > 0 and math.isfinite(float(x)) for x in (k, n, d, r)) and 0 < float(w) < 1


@FIXED
@given(content=st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode),
                         st.just(b'{"law": "csl"}'), st.just(b"[]"), st.just(b"\xff{}")))
def test_plan_fit_file_that_is_not_a_fit_is_named(content):
    with tempfile.TemporaryDirectory() as tmp:
        fit = Path(tmp, "fit.json")
        fit.write_bytes(content)
        code, err = _run_cli(plan_cli.main, ["compute", "--fit", str(fit), "--flops", "1e21"])
        ok = code == 0 or (_clean_failure(code, err) and str(fit) in err)
        record("bad_input", "plan.py fit file", tried=1, ok=int(ok))
        assert ok, (content, code, err)


cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=6),
                 st.just(""), st.just("inf"), st.just("nan"), st.just("0.25"))


@FIXED
@given(cells=st.lists(cell, min_size=0, max_size=4), raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_transfer_matrix_input_is_a_finite_matrix_or_a_named_error(cells, raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "m.csv")
        if raw is not None:
            path.write_bytes(raw)
        else:
            padded = (cells + [""] * 4)[:4]
            quoted = [json.dumps(c) for c in padded]  # CSV-quoted so commas/newlines stay in the cell
            path.write_text(f",en,fr\nen,{quoted[0]},{quoted[1]}\nfr,{quoted[2]},{quoted[3]}\n")
        out = Path(tmp, "out")
        code, err = _run_cli(transfer_cli.main, ["--matrix", str(path), "--out", str(out)])
        ok = (code == 0 and out.exists()) or (_clean_failure(code, err) and str(path) in err and not out.exists())
        record("bad_input", "transfer_matrix.py matrix", tried=1, ok=int(ok))
        assert ok, (cells, raw, code, err)
        if code == 0:
            values = transfer_cli.load_matrix(str(path)).to_numpy(dtype=float)
            assert not np.isinf(values).any() and np.isfinite(values).any()


# ------------------------------------------------------------------------------ train.py gin values

from atlas_t5x.cli import train as train_cli  # noqa: E402

train_cli.register_configurables()

gin_value = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["(", "'abc'", "abc", "[1,", "{", "1e3", "@nothing()", "%MISSING", "'", '"', "1 2", ")",
                     "None", "True", "-5", "0", "3.5", "\\", "\n", "#", "= 3"]),
)


@FIXED
@given(value=gin_value, param=st.sampled_from(["total_steps", "log_every_steps", "seed"]))
def test_train_gin_binding_values_parse_or_are_named(value, param):
    binding = f"train.{param}={value}"
    gin.clear_config()
    try:
        train_cli.parse_gin([], [binding], [])
        ok = True
    except train_cli.BadInput as err:
        ok = binding in str(err) or repr(binding) in str(err)  # named (an undefined %MACRO is found when the config is finalized)
    finally:
        gin.clear_config()
    record("bad_input", "train.py gin binding", tried=1, ok=int(ok))
    assert ok, binding


@FIXED
@given(value=st.one_of(st.text(max_size=5), st.floats(), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
def test_trainer_rejects_non_integer_step_counts_before_writing(value):
    from atlas_t5x import trainer

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp, "run")
        with pytest.raises(ValueError, match=r"train.total_steps must be an integer"):
            trainer.train(str(model_dir), model_config=None, pipeline_factory=None, total_steps=value)
        ok = not model_dir.exists()
        record("bad_input", "train total_steps type", tried=1, ok=int(ok))
        assert ok


@pytest.mark.parametrize("binding,expected", [
    ("--gin.train.total_steps=(", "cannot parse the value"),
    ("--gin.train.total_steps='abc'", "train.total_steps must be an integer, got 'abc'"),
])
def test_train_cli_malformed_gin_values_exit_2_without_traceback(tmp_path, binding, expected):
    import subprocess

    proc = subprocess.run([sys.executable, str(REPO / "scripts/train.py"), "--gin_file=gin/runs/smoke.gin", binding,
                           f"--model_dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    ok = proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr
    record("bad_input", "train.py malformed gin value (CLI)", tried=1, ok=int(ok and not (tmp_path / "run").exists()))
    assert ok, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ fit_atlas.py


def test_fit_checks_out_before_fitting_and_warns_with_counts(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("N,D,U,loss\n" + "".join(f"{n},{d},{d},{2 + 1e3 / n ** 0.3 + 1e3 / d ** 0.3}\n"
                                              for n in (1e6, 3e6, 1e7) for d in (1e8, 1e9)))
    not_a_folder = tmp_path / "fit.json"
    not_a_folder.write_text("{}")
    code, err = _run_cli(fit_cli.main, ["--table", str(table), "--map", "N=N,D=D,U=U,loss=loss", "--law", "csl",
                                        "--out", str(not_a_folder), "--no_plots"])
    assert code == 2 and f"--out {not_a_folder}: exists and is not a folder" in err
    assert not_a_folder.read_text() == "{}"

    # Values near the float limit: the fit cannot be trusted, so it must not say it converged.
    with table.open("a") as f:
        f.write("1e307,1e307,1e307,1.7e308\n" * 2)
    out = tmp_path / "fit"
    code, err = _run_cli(fit_cli.main, ["--table", str(table), "--map", "N=N,D=D,U=U,loss=loss", "--law", "csl",
                                        "--out", str(out), "--no_plots", "--no_select", "--bootstrap", "0"])
    assert code == 0, err
    assert "1 duplicate point(s)" in err and "2 point(s) with |loss| above 100" in err and "2 point(s) with N beyond" in err
    fit = json.loads((out / "fit.json").read_text())
    assert fit["converged"] is False and not all(e["converged"] for e in fit["per_target"].values())

    import pandas as pd

    points = pd.DataFrame({"target": ["en"] * 4, "N": [1e6, 1e6, 1e30, 2e6], "D": [1e8, 1e8, 1e8, 1e8],
                           "loss": [3.0, 3.0, 3.0, 1e6]})
    found = fit_cli.input_warnings(points)
    assert any(m.startswith("1 duplicate point") for m in found)
    assert any(m.startswith("1 point(s) with |loss| above") for m in found)
    assert any(m.startswith("1 point(s) with N beyond") for m in found)
    record("bad_input", "fit_atlas.py --out file / near-limit values / duplicates / magnitudes", tried=5, ok=5)


# ------------------------------------------------------------------------------ the probe's cases, pinned


@pytest.mark.parametrize("argv,message", [
    (["languages", "--k=-4", "--n=1e8", "--tokens-per-lang=2e9"], "--k must be a finite number > 0, got -4"),
    (["languages", "--k=0", "--n=1e8", "--tokens-per-lang=2e9"], "--k must be a finite number > 0, got 0"),
    (["languages", "--k=4", "--n=0", "--tokens-per-lang=2e9"], "--n must be a finite number > 0, got 0"),
    (["languages", "--k=4", "--n=-1e8", "--tokens-per-lang=2e9"], "--n must be a finite number > 0"),
    (["languages", "--w-n=-3"], "--w_n must be a finite number > 0 and < 1, got -3"),
    (["languages", "--alpha=-1"], "exponent alpha must be > 0"),
    (["languages", "--r", "-2"], "must be > 0"),
    (["compute", "--law", "csl", "--params", "E=1.8,A=482,B=2085,alpha=0.35,beta=0.37", "--flops=-1e21"],
     "--flops must be > 0"),
])
def test_plan_rejects_non_positive_sizes_and_exponents(argv, message):
    code, err = _run_cli(plan_cli.main, argv)
    ok = code == 2 and message in err and "Traceback" not in err
    record("bad_input", "plan.py pinned case", tried=1, ok=int(ok))
    assert ok, err


@pytest.mark.parametrize("content,message", [(b"not json", "fit file is not valid JSON (line 1, column 1"),
                                             (b"\xff\xfe{}", "fit file is not a JSON file (not UTF-8 text: byte 0xff")])
def test_plan_names_a_fit_file_that_is_not_json(tmp_path, content, message):
    fit = tmp_path / "fit.json"
    fit.write_bytes(content)
    code, err = _run_cli(plan_cli.main, ["compute", "--fit", str(fit), "--flops", "1e21"])
    assert code == 2 and f"{fit}: {message}" in err


@pytest.mark.parametrize("text,message", [
    (",en,fr\nen,,inf\nfr,0.1,\n", "cell (target en, source fr) is inf"),
    (",en,fr\nen,,0.2\nfr,nan,\n", "cell (target fr, source en) is nan"),
    (",en,fr\nen,,-inf\nfr,0.1,\n", "is -inf"),
    (",en,fr\nen,,abc\nfr,0.1,\n", "cell (target en, source fr) = 'abc' is not a number"),
    ("", "not a CSV matrix"),
    (",en,fr\n", "the matrix is empty"),
    (",en,fr\nen,,\nfr,,\n", "has no measured score"),
])
def test_transfer_matrix_refuses_bad_matrices_naming_the_file(tmp_path, text, message):
    path = tmp_path / "m.csv"
    path.write_text(text)
    code, err = _run_cli(transfer_cli.main, ["--matrix", str(path), "--out", str(tmp_path / "out")])
    ok = code == 2 and f"{path}: " in err and message in err and not (tmp_path / "out").exists()
    record("bad_input", "transfer_matrix.py pinned case", tried=1, ok=int(ok))
    assert ok, err


_GOOD_TABLE = None


def _good_table() -> bytes:
    global _GOOD_TABLE
    if _GOOD_TABLE is None:
        import pandas as pd

        _GOOD_TABLE = pd.DataFrame([schema.flatten_row(make_row("r", 10, "en"))]).to_csv(index=False).encode()
    return _GOOD_TABLE


table_bytes = st.one_of(
    st.binary(max_size=100),
    st.integers(0, 400).map(lambda i: _good_table()[:i]),  # truncated tables
    st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=3)).map(  # one spot overwritten
        lambda t: _good_table()[:t[0]] + t[1] + _good_table()[t[0] + 1:]),
)


@FIXED
@given(data=table_bytes)
def test_table_reader_returns_schema_rows_or_a_named_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "t.csv")
        path.write_bytes(data)
        try:
            rows = logs.read_table(path)
            ok = all(isinstance(r, dict) for r in rows)
        except (logs.LogError, schema.SchemaError) as err:
            ok = str(path) in str(err)
        record("bad_input", "exported table reader", tried=1, ok=int(ok))
        assert ok


@pytest.mark.parametrize("value,shown", [('"abc"', "'abc'"), ("null", "null"), ("[1]", "[1]"), ("true", "true")])
def test_plan_names_the_field_and_value_of_a_non_number_in_a_fit_file(tmp_path, value, shown):
    fit = tmp_path / "fit.json"
    params = {"E": 1.8, "A": 482, "B": 2085, "alpha": json.loads(value), "beta": 0.37}
    fit.write_text(json.dumps({"law": "csl", "targets": ["en"], "per_target": {"en": {"params": params}}}))
    code, err = _run_cli(plan_cli.main, ["compute", "--fit", str(fit), "--flops", "1e21"])
    assert _clean_failure(code, err), err
    assert f"{fit}: field per_target.en.params.alpha = {shown} is not a number" in err
    # the same file with a number there plans
    fit.write_text(json.dumps({"law": "csl", "targets": ["en"],
                               "per_target": {"en": {"params": {**params, "alpha": 0.35}}}}))
    assert _run_cli(plan_cli.main, ["compute", "--fit", str(fit), "--flops", "1e21"])[0] == 0


def test_fit_names_a_header_only_table(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("N,D,loss\n")
    code, err = _run_cli(fit_cli.main, ["--table", str(plain), "--map", "N=N,D=D,loss=loss", "--law", "csl",
                                        "--out", str(tmp_path / "o1"), "--no_plots"])
    assert _clean_failure(code, err) and f"{plain}: no points to fit (the table has a header but no rows)" in err, err
    exported = tmp_path / "logs.csv"
    logs.write_csv([make_row("a", 6, "en")], exported)
    exported.write_text(exported.read_text().splitlines()[0] + "\n")
    for flag in ("--logs", "--table"):
        code, err = _run_cli(fit_cli.main, [flag, str(exported), "--law", "csl", "--out", str(tmp_path / "o2"),
                                            "--no_plots"])
        assert _clean_failure(code, err) and f"{exported}: no rows (the table holds a header only)" in err, err
    # logs with rows but no usable point: the message names the source
    log = tmp_path / "eval.jsonl"
    logio.append_jsonl(log, [make_row("a", 6, "en")])   # a stable-phase row: not in the default point set
    code, err = _run_cli(fit_cli.main, ["--logs", str(log), "--law", "csl", "--out", str(tmp_path / "o3"),
                                        "--no_plots"])
    assert _clean_failure(code, err) and f"{log}: no usable points in point set 'default'" in err, err
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_equal_points_without_run_ids_are_counted_and_their_runs_named(capsys):
    import pandas as pd

    points = pd.DataFrame({"run": ["mono_en", "mono_en_copy", "mono_de"], "target": ["en", "en", "de"],
                           "N": [1e6, 1e6, 1e6], "D": [1e8, 1e8, 1e8], "U": [1e9, 1e9, 1e9],
                           "loss": [3.0, 3.0, 3.0]})
    found = fit_cli.input_warnings(points)
    assert found[0] == ("1 duplicate point(s) (same target, N, D, U, loss) in the input: each counts twice in the "
                        "fit; runs 'mono_en' and 'mono_en_copy'")
    assert "runs 'mono_en' and 'mono_en_copy'" in capsys.readouterr().err
