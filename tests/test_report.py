"""The Markdown report builder and the analyses CLIs (plan.py, transfer_matrix.py, report.py)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from atlas_t5x import logio
from atlas_t5x.scaling import report
from _analyses_rows import study_rows

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_logs(root: Path, rows) -> Path:
    for run in sorted({r["run"] for r in rows}):
        logio.append_jsonl(root / run / "logs" / "eval.jsonl", [r for r in rows if r["run"] == run])
    return root


def test_report_covers_every_section(tmp_path):
    path = report.build_report(study_rows(), tmp_path / "rep", laws=("csl",),
                               fit_kwargs={"grid_budget": 300, "n_polish": 1})
    text = path.read_text()
    for title in ("## Runs", "## Fits and held-out R²", "## Cross-lingual transfer",
                  "## Curse of multilinguality", "## Pretrain vs finetune crossover"):
        assert title in text
    assert "Skipped" not in text and "Failed" not in text
    assert "| en → de |" in text and "R²(N)" in text
    assert "K ∈ [1, 2, 4]" in text
    # the paper's two settings: monolingual runs first (what the sanity checks read), then every run
    # (18 points of the three mono_en runs, then 30 with the bilingual and K = 4 runs); each law is
    # its pre-registered variant (α = β imposed, Huber) with the untied fit beside it; model
    # selection is reported (every variant's CV error ± SE) but never decides what is checked
    mono_at, multi_at = text.index("### Monolingual setting"), text.index("### Multilingual setting")
    assert mono_at < text.index("| en | csl tied huber (α = β imposed) | 18 | 1 |") < multi_at
    assert mono_at < text.index("| en | csl untied huber (secondary) | 18 |") < multi_at
    assert multi_at < text.index("| en | csl tied huber (α = β imposed) | 30 |")
    assert text.count("selection would choose") == 2 and "Model selection by extrapolation" in text
    for variant in ("csl tied huber", "csl tied likelihood", "csl untied huber", "csl untied likelihood"):
        assert len(re.findall(rf"{variant} [0-9.]+% ± [0-9.]+", text)) == 2, variant   # both settings
    assert "CSL (monolingual runs) alpha = beta (imposed)" in text.split("## Runs")[0]
    assert "| en | 3e+07 |" in text and "| ok | mono_en_3e+07 | ft_en_3e+07 |" in text
    for png in ("fits_predicted_vs_observed.png", "bts_heatmap.png", "curse_frontier.png", "crossover.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    en = doc["facts"]["fits"]["csl"]["en"]
    assert en["tied"] and en["objective"] == "huber" and en["params"]["alpha"] == en["params"]["beta"]
    assert {"alpha", "beta"} <= set(en["untied"]["params"]) and not en["untied"]["tied"]
    status = {t: v["status"] for t, v in doc["sections"].items()}
    assert status.pop("Sanity checks") in ("ok", "failed")
    assert status == {
        t: "ok" for t in ("Runs", "Fits and held-out R²", "Compute-optimal frontier", "Cross-lingual transfer",
                          "Curse of multilinguality", "Pretrain vs finetune crossover")}
    # the allocation exponent three ways per target: the law's β/(α+β) with its bootstrap interval
    frontier = doc["sections"]["Compute-optimal frontier"]["tables"][0]["rows"]
    par = next(r for r in frontier if r[:2] == ["en", "parametric (csl, untied)"])
    tied = next(r for r in frontier if r[:2] == ["en", "parametric (csl, α = β imposed)"])
    assert tied[2].startswith("0.500")
    a, lo, hi = (float(x) for x in par[2].replace("[", "").replace("]", "").replace(",", "").split())
    assert lo <= a <= hi and 0.3 < a < 0.7
    assert {r[1] for r in frontier if r[0] == "en"} >= {"parametric (csl, untied)", "isoflop", "envelope"}
    # the sanity table comes first; bootstrap-by-run intervals and flags for every parameter
    assert text.split("\n")[4] == "## Sanity checks" and "**Sanity:" in text.split("\n")[6]
    assert "Bootstrap by run (200 replicates" in text and "beta 0.3" in text and "| flags |" in text
    bts = doc["sections"]["Cross-lingual transfer"]["tables"][0]
    row = next(r for r in bts["rows"] if r[0] == "en → de")
    assert bts["columns"][2] == "BTS" and row[2] == pytest.approx(0.436, abs=1e-3)


def test_sanity_checks_pass_and_fail_on_known_facts():
    good = {"fits": {"csl": {"en": {"params": {"E": 1.8, "alpha": 0.3, "beta": 0.35},
                                    "intervals": {"alpha": {"lo": 0.25, "hi": 0.36}, "beta": {"lo": 0.3, "hi": 0.4}},
                                    "flags": {}}}},
            "heldout": {"csl": {"N": 0.7, "D": 0.95}, "atlas": {"N": 0.85, "D": 0.9}},
            "curse_2k": {"total_tokens_ratio": 1.6, "warnings": []}}
    checks = report.sanity_checks(good)
    assert all(ok for _, ok, _ in checks) and len(checks) == 5
    bad = json.loads(json.dumps(good))
    bad["fits"]["csl"]["en"]["intervals"]["alpha"] = {"lo": 0.1, "hi": 0.9}      # not identified
    bad["fits"]["csl"]["en"]["flags"] = {"E": ["at/next to its low bound"]}
    bad["heldout"]["atlas"]["N"] = 0.5
    bad["curse_2k"] = {"total_tokens_ratio": 0.91, "warnings": ["|ψ/β| > 1"]}
    failed = [c for c, ok, _ in report.sanity_checks(bad) if not ok]
    assert len(failed) == 4 and any("alpha" in c for c in failed) and any("E not at a bound" in c for c in failed)
    # a fit that did not converge fails its exponent checks, whatever its numbers
    stuck = json.loads(json.dumps(good))
    stuck["fits"]["csl"]["en"]["converged"] = False
    failed = [(c, d) for c, ok, d in report.sanity_checks(stuck) if not ok]
    assert len(failed) == 2 and all("did NOT converge" in d for _, d in failed)
    # a curse plan with an identification warning fails even at ≥ 1× (issue 21: φ = −0.7 passed)
    spurious = json.loads(json.dumps(good))
    spurious["curse_2k"] = {"total_tokens_ratio": 2.36, "warnings": ["|φ/α| = 1.69 > 1: not identified"]}
    assert [c for c, ok, _ in report.sanity_checks(spurious) if not ok] == [
        "curse plan: 2K identified (no plan warning) and needs ≥ 1× the total tokens"]
    assert len(report.sanity_checks(spurious, curse_check=False)) == 4


def test_a_tied_fit_reports_beta_equal_to_alpha_and_no_selection_when_asked(tmp_path):
    rows = [r for r in study_rows() if r["run"].startswith(("mono_en", "mono_de"))]
    report.build_report(rows, tmp_path / "rep", laws=("csl",), select=False,
                        fit_kwargs={"tied": True, "grid_budget": 300, "n_polish": 1})
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    en = doc["facts"]["fits"]["csl"]["en"]
    assert doc["facts"]["fit_setting"] == "monolingual" and en["variant"] == "csl tied huber"
    assert en["params"]["beta"] == en["params"]["alpha"] and en["intervals"]["beta"] == en["intervals"]["alpha"]
    sanity = doc["sections"]["Sanity checks"]["tables"][0]["rows"]
    # one exponent, one check, said to be imposed
    assert any(r[0].startswith("en: CSL (monolingual runs) alpha = beta (imposed)")
               and "(csl tied huber, α = β imposed)" in r[2] for r in sanity)
    assert not any(r[0].startswith("en: CSL (monolingual runs) beta") for r in sanity)
    assert "Model selection by extrapolation" not in (tmp_path / "rep" / "report.md").read_text()


def test_report_sections_without_their_runs_say_so(tmp_path):
    rows = [r for r in study_rows() if r["run"].startswith("mono_en")]
    text = report.build_report(rows, tmp_path / "rep", laws=()).read_text()
    assert "_Skipped: no from-scratch 50/50 bilingual runs in the logs_" in text
    assert "_Skipped: uniform-K from-scratch runs cover K = [1]" in text
    assert "_Skipped: no monolingual finetune runs" in text
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["sections"]["Pretrain vs finetune crossover"]["status"].startswith("skipped: no monolingual")


def test_cli_report_and_transfer_matrix_read_a_folder_of_runs(tmp_path, capsys):
    logs = _write_logs(tmp_path / "runs", study_rows())
    tm = _script("transfer_matrix")
    assert tm.main([str(logs), "--out", str(tmp_path / "tm")]) == 0
    out = capsys.readouterr().out
    assert "BTS(en->de) = +0.436" in out
    doc = json.loads((tmp_path / "tm" / "transfer.json").read_text())
    assert doc["stats"]["same_script_mean"] == pytest.approx(0.436, abs=1e-3)
    # the matrix CSV has the shared data's layout: fit_atlas.py --transfer_matrix reads it back
    from atlas_t5x.scaling import points as points_lib

    assert (tmp_path / "tm" / "bts_matrix.csv").read_text().startswith("target\\source,de,en")
    assert points_lib.load_transfer_matrix(tmp_path / "tm" / "bts_matrix.csv").loc["de", "en"] == pytest.approx(0.436, abs=1e-3)
    assert tm.main([str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    rep = _script("report")
    assert rep.main([str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_plan_writes_json_and_rejects_bad_input(tmp_path, capsys):
    plan = _script("plan")
    out = tmp_path / "c.json"
    assert plan.main(["compute", "--law", "csl", "--params", "E=1.8,A=482,B=2085,alpha=0.348,beta=0.366",
                      "--flops", "1e21", "--out_json", str(out)]) == 0
    doc = json.loads(out.read_text())
    (p,) = doc["plans"]
    assert p["params"] == pytest.approx(p["closed_form"][0], rel=1e-4) and p["unique_tokens"] is None
    assert plan.main(["crossover", "--params", "2.03e9", "--out_json", str(tmp_path / "x.json")]) == 0
    tokens = json.loads((tmp_path / "x.json").read_text())["at"]["tokens"]
    assert 144e9 <= tokens <= 283e9
    assert plan.main(["languages", "--r", "2", "--out_json", str(tmp_path / "l.json")]) == 0
    assert json.loads((tmp_path / "l.json").read_text())["closed_form"][0]["compute_ratio"] == pytest.approx(1.96, abs=0.02)
    assert plan.main(["languages", "--r", "2", "--k", "4", "--n", "1e9", "--tokens_per_lang", "5e10",
                      "--out_json", str(tmp_path / "l.json")]) == 0
    doc = json.loads((tmp_path / "l.json").read_text())
    (absolute,) = doc["absolute"]
    assert absolute["K"] == 8 and absolute["C"] / doc["baseline"]["C"] == pytest.approx(
        doc["closed_form"][0]["compute_ratio"])
    capsys.readouterr()
    assert plan.main(["compute", "--law", "csl", "--params", "E=1.8,A=482,B=2085,alpha=0.348,beta=0.366",
                      "--flops", "1e9"]) == 2
    assert "too small for the smallest model" in capsys.readouterr().err
    assert plan.main(["compute", "--law", "csl", "--params", "E=oops", "--flops", "1e21"]) == 2
    assert plan.main(["mixture", "--fit", str(tmp_path / "none.json"), "--targets", "sw=1", "--params", "1e9",
                      "--tokens", "1e10", "--unique", "sw=1e9"]) == 2
    assert not (tmp_path / "none.json").exists()
    # a curse fit file without the curse parameters is named, not silently replaced by the paper's
    (tmp_path / "multi.json").write_text(json.dumps({"law": "curse", "params": {"en": {"phi": 0.1}}}))
    assert plan.main(["languages", "--fit", str(tmp_path / "multi.json")]) == 2
    assert "expected curse parameters phi, psi, alpha" in capsys.readouterr().err
    # bad --params: exit 2 before any plot is written
    assert plan.main(["crossover", "--params", "-3", "--out_png", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_analyses_do_not_import_the_trainer_flax_or_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from atlas_t5x.scaling import transfer, curse, crossover, planner, "
            "mixture_planner, live_forecast, report, curves; "
            "print(sorted(m for m in ('tensorflow', 'flax', 'atlas_t5x.trainer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_report_names_a_missing_partner_run_instead_of_failing(tmp_path):
    rows = [r for r in study_rows() if r["run"] != "mono_de_3e+07"]
    text = report.build_report(rows, tmp_path / "rep", laws=()).read_text()
    assert "_Not computed: bilingual run 'bi_en_de_3e+07'" in text and "## Curse of multilinguality" in text


def test_exported_table_gives_the_same_transfer_scores(tmp_path):
    from atlas_t5x import logs
    from atlas_t5x.scaling import transfer

    rows = study_rows()
    logs.write_csv(rows, tmp_path / "logs.csv")
    logs.write_parquet(rows, tmp_path / "logs.parquet")
    direct = {(m.source, m.target): m.bts for m in transfer.measure_bts(rows)}
    for name in ("logs.csv", "logs.parquet"):
        loaded = {(m.source, m.target): m.bts for m in transfer.measure_bts(logs.read_rows(tmp_path / name))}
        assert loaded == pytest.approx(direct)
    with pytest.raises(logs.LogError, match="nope: no eval log found"):
        logs.read_rows(tmp_path / "nope")


def test_report_names_targets_with_too_few_points(tmp_path):
    # 2 runs x 6 points: below the monolingual setting's minimum of 14 (twice DCSL's 7 parameters)
    rows = [r for r in study_rows() if r["run"].startswith("mono_en") and not r["run"].endswith("1e+08")]
    text = report.build_report(rows, tmp_path / "rep", laws=("csl",)).read_text()
    assert "_Skipped: no target has 14 or more points (en: 12)_" in text
    assert "_Skipped: monolingual: no target has 14 or more points (en: 12)_" in text
    assert not (tmp_path / "never").exists()
    with pytest.raises(Exception, match="never"):
        report.build_report(str(tmp_path / "never"), tmp_path / "never_out")
    assert not (tmp_path / "never_out").exists()   # nothing created for unreadable logs
