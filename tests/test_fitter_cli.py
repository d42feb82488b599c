"""The fitter-side console scripts (atlas-export, atlas-fit, atlas-plan, atlas-transfer,
atlas-report) as a user runs them: `--help`, one real invocation each on generated data, old flag
spellings (deprecated, still working), unknown flags (exit 2 naming the closest flag)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_fitter_imports import write_study_logs

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMANDS = ("atlas-export", "atlas-fit", "atlas-plan", "atlas-transfer", "atlas-report")


def atlas(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    executable = BIN / command
    if not executable.exists():
        pytest.skip(f"{executable} not installed: run pip install --no-deps -e .")
    return subprocess.run([str(executable), *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_the_command_and_snake_case_flags(command, tmp_path):
    result = atlas(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {command}")
    flags = [token.strip("[],") for token in result.stdout.split() if token.startswith(("--", "[--"))]
    assert flags and not [f for f in flags if "-" in f.lstrip("-[").split("=")[0]], flags


def test_export_fit_plan_report_on_generated_logs(tmp_path):
    runs = write_study_logs(tmp_path / "runs")
    export = atlas("atlas-export", str(runs), "--out", "logs", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert "exported 32 rows from 8 log file(s): 8 runs, 2 targets (de, en)" in export.stdout
    assert "reading 8 eval log(s)" in export.stderr.splitlines()[0]

    # every parameter fixed at the generating law: atlas-fit only evaluates (fast), R² = 1
    fixed = ["--fix", "E=1.8", "--fix", "A=400", "--fix", "B=2000", "--fix", "alpha=0.34", "--fix", "beta=0.28"]
    fit = atlas("atlas-fit", "--logs", "logs.csv", "--law", "csl", "--target", "en", "--no_select",
                "--no_plots", "--out", "fit", *fixed, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    doc = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert doc["targets"] == ["en"] and doc["n_points"] == 16
    assert doc["r2_in_sample"] == pytest.approx(1.0, abs=1e-9)
    assert doc["per_target"]["en"]["fit_range"]["N"] == [2e7, 3e8]

    plan = atlas("atlas-plan", "compute", "--fit", "fit/fit.json", "--target", "en", "--flops", "1e21",
                 "--out_json", "plan.json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    answer = json.loads((tmp_path / "plan.json").read_text())
    (en,) = answer["plans"]
    # Chinchilla's closed form for the law the logs were drawn from: N* = G (C/6)^(β/(α+β))
    alpha, beta, A, B = 0.34, 0.28, 400.0, 2000.0
    n_opt = (alpha * A / (beta * B)) ** (1 / (alpha + beta)) * (1e21 / 6) ** (beta / (alpha + beta))
    assert en["target"] == "en" and en["params"] == pytest.approx(n_opt, rel=1e-4)
    assert 6 * en["params"] * en["tokens"] == pytest.approx(1e21, rel=1e-6)
    assert any("outside the fitted range" in w for w in en["warnings"])   # fit_range read from fit.json
    # the old spelling still works, with a message naming the new one
    old = atlas("atlas-plan", "compute", "--fit", "fit/fit.json", "--target", "en", "--flops", "1e21",
                "--out-json", "plan_old.json", cwd=tmp_path)
    assert old.returncode == 0, old.stderr
    assert "--out-json is deprecated" in old.stderr and "use --out_json" in old.stderr
    assert json.loads((tmp_path / "plan_old.json").read_text()) == answer

    report = atlas("atlas-report", "logs.parquet", "--out", "report", "--laws", "--loss-field", "loss", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert report.stderr.splitlines()[0].startswith("warning: --loss-field is deprecated")
    assert "building the report from logs.parquet" in report.stderr
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "report.json").is_file()


def test_transfer_on_a_matrix_and_unknown_flags(tmp_path):
    (tmp_path / "m.csv").write_text(",en,de,fr\nen,,0.2,0.1\nde,0.3,,-0.1\nfr,0.25,0.05,\n")
    result = atlas("atlas-transfer", "--matrix", "m.csv", "--out", "tr", "--top", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tr" / "bts_matrix.csv").is_file() and (tmp_path / "tr" / "bts_heatmap.png").is_file()
    stats = json.loads((tmp_path / "tr" / "transfer.json").read_text())["stats"]
    assert stats["top5_source_counts"] == {"en": 2, "de": 1}
    bad = atlas("atlas-transfer", "--matrix", "m.csv", "--out", "tr2", "--d-monoo", "3", cwd=tmp_path)
    assert bad.returncode == 2 and "--d_mono" in bad.stderr and not (tmp_path / "tr2").exists()
