"""Sweep specs that cannot escape: run names, generated paths and generated gin (Hypothesis + the
attacks found by the reliability probe: path traversal, absolute paths, gin injection)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _reliability_tally import record
from atlas_t5x import sweeps

REPO = Path(__file__).resolve().parents[1]
FIXED = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                 suppress_health_check=[HealthCheck.too_slow])


def _spec(family: dict | None = None, **defaults) -> dict:
    return {"name": "t", "defaults": {"tokens": 4096, "seq_len": 32, "batch": 8, **defaults},
            "families": [family or {"family": "monolingual", "languages": ["en"], "scales": ["tiny0"]}]}


def _sweep_cli():
    spec = importlib.util.spec_from_file_location("sweep_cli_fuzz", REPO / "scripts" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A generated gin line is a comment, blank, one of the fixed imports, or `name = value`.
GIN_LINE = re.compile(r"(#[^\n]*|import atlas_t5x\.[\w.]+|[A-Za-z_][\w./]*\s*=\s*\S[^\n]*|)")


def _assert_contained(sweep: sweeps.Sweep, out: Path) -> None:
    for run in sweep.runs:
        assert sweeps.RUN_NAME_PATTERN.fullmatch(run.name) and ".." not in run.name
        model_dir = run.model_dir(out).resolve()
        assert out.resolve() in model_dir.parents
        text = sweeps.gin_config(run, out)
        for line in text.splitlines():
            assert GIN_LINE.fullmatch(line), line
            assert not line.startswith(("include", "import")) or line.startswith("import atlas_t5x.")


@pytest.mark.parametrize("name", ["../../x", "../escape", "/tmp/abs", "a/b", "ok\ninclude '/tmp/evil.gin'",
                                  "x'\ntrain.total_steps = 1\n#", "..", ".hidden", "", "a" * 300, "tab\there"])
def test_unsafe_run_names_are_refused(name, tmp_path):
    family = {"family": "uniform", "languages": ["en", "fr"], "scales": ["tiny0"], "name": name}
    with pytest.raises(sweeps.SweepError, match="run name .* is not allowed") as err:
        sweeps.expand_sweep(_spec(family), source="spec.yaml")
    assert "spec.yaml: families[0] (uniform)" in str(err.value)
    assert not any(tmp_path.iterdir())
    record("bad_input", "sweep: unsafe run name", tried=1, ok=1)


def test_a_run_folder_outside_out_is_refused_even_through_a_symlink(tmp_path):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "mono-en-tiny0").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    run = sweeps.expand_sweep(_spec()).runs[0]
    with pytest.raises(sweeps.SweepError, match="outside the sweep's output folder"):
        sweeps.write_run_gin(run, out)
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("binding", ["include '/tmp/evil.gin'", "import os", "train.total_steps = 1\nimport os",
                                     "no_equals_sign", "train.seed = 1\r\n"])
def test_gin_bindings_in_a_spec_are_single_binding_lines(binding):
    with pytest.raises(sweeps.SweepError, match="gin_bindings entry"):
        sweeps.expand_sweep(_spec(gin_bindings=[binding]))
    record("bad_input", "sweep: gin injection through gin_bindings", tried=1, ok=1)


@pytest.mark.parametrize("separator", sorted(sweeps.LINE_BREAKS))
def test_every_unicode_line_break_is_refused_in_bindings_and_names(separator):
    # str.splitlines breaks at each of these: a reader of the generated gin would see two lines
    assert len(f"train.seed = 1{separator}import os".splitlines()) == 2
    with pytest.raises(sweeps.SweepError, match="gin_bindings entry"):
        sweeps.expand_sweep(_spec(gin_bindings=[f"train.seed = 1{separator}import os"]))
    with pytest.raises(sweeps.SweepError, match="gin_bindings entry"):
        sweeps.expand_sweep(_spec(gin_bindings=[f"train.seed = 1{separator}"]))
    with pytest.raises(sweeps.SweepError, match="'vocab' must be a one-line name"):
        sweeps.expand_sweep(_spec(vocab=f"corpus{separator}spm"))


def test_the_line_break_set_is_exactly_what_splitlines_breaks_at():
    breaks = {chr(c) for c in range(0x110000) if len(f"a{chr(c)}a".splitlines()) > 1}
    assert breaks == set(sweeps.LINE_BREAKS) and {"\u2028", "\x85", "\x0b", "\x0c"} <= breaks
    sweeps.expand_sweep(_spec(gin_bindings=["train.seed = 1"]))   # a plain binding still passes


@pytest.mark.parametrize("field,value,message", [
    ("peak_lr", "abc", "'peak_lr' must be a number, got 'abc'"),
    ("tokens", "lots", "'tokens' must be a number, got 'lots'"),
    ("seq_len", 3.5, "'seq_len' must be an integer, got 3.5"),
    ("warmup_steps", -1, "'warmup_steps' must be at least 0"),
    ("seed", [1], "'seed' must be an integer"),
    ("model_overrides", {"x\ny": 1}, "model_overrides key"),
    ("vocab", "a\nb", "'vocab' must be a one-line name"),
])
def test_bad_field_values_name_file_and_field(tmp_path, field, value, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_spec(**{field: value})))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = _sweep_cli().main([str(path), "--out", str(tmp_path / "out"), "--print"])
    ok = code == 2 and f"{path}: defaults" not in err.getvalue() and str(path) in err.getvalue() \
        and message in err.getvalue() and "Traceback" not in err.getvalue() and not (tmp_path / "out").exists()
    record("bad_input", "sweep: bad field value", tried=1, ok=int(ok))
    assert ok, err.getvalue()


def test_yaml_shorthand_numbers_still_work():
    # YAML 1.1 reads 3e-3 and 2e5 as strings: numeric strings are accepted as numbers.
    run = sweeps.expand_sweep(_spec(peak_lr="3e-3", tokens="2e5", warmup_steps="5", seq_len="32")).runs[0]
    text = sweeps.gin_config(run, "/tmp/out")
    assert "make_schedule.peak_lr = 0.003" in text and "make_schedule.warmup_steps = 5" in text
    assert run.tokens == 2e5 // (8 * 32) * 8 * 32


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


@FIXED
@given(field=st.sampled_from(sorted(sweeps.RUN_DEFAULTS)), value=json_values)
def test_any_field_value_expands_safely_or_is_a_named_error(field, value):
    out = Path(tempfile.gettempdir()) / "atlas_fuzz_out"
    try:
        sweep = sweeps.expand_sweep(_spec(**{field: value}), source="fuzz.yaml")
    except sweeps.SweepError as err:
        ok = str(err).startswith("fuzz.yaml")
        record("bad_input", "sweep: fuzzed field value", tried=1, ok=int(ok))
        assert ok, err
        return
    _assert_contained(sweep, out)
    record("bad_input", "sweep: fuzzed field value", tried=1, ok=1)


@FIXED
@given(name=st.text(max_size=30))
def test_any_uniform_name_is_contained_or_refused(name):
    family = {"family": "uniform", "languages": ["en", "fr"], "scales": ["tiny0"], "name": name}
    try:
        sweep = sweeps.expand_sweep(_spec(family), source="fuzz.yaml")
    except sweeps.SweepError:
        record("bad_input", "sweep: fuzzed run name", tried=1, ok=1)
        return
    _assert_contained(sweep, Path(tempfile.gettempdir()) / "atlas_fuzz_out")
    record("bad_input", "sweep: fuzzed run name", tried=1, ok=1)


@FIXED
@given(content=st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode)))
def test_a_spec_file_of_random_bytes_is_a_named_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "spec.yaml")
        path.write_bytes(content)
        try:
            sweeps.load_sweep(path)
            ok = False  # random bytes are never a complete spec
        except sweeps.SweepError as err:
            ok = str(path) in str(err)
        record("bad_input", "sweep: random spec file", tried=1, ok=int(ok))
        assert ok
