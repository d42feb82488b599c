"""atlas-fit (atlas_t5x.cli.fit, scripts/fit_atlas.py) end to end: tables, exported logs, held-out splits, bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from atlas_t5x import logio, logs, schema
from atlas_t5x.cli import fit as fit_atlas
from atlas_t5x.scaling import points as points_lib, table_fit


def _csl_table(tmp_path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(1e7, 3e9, 8), n // 8)
    D = np.tile(np.geomspace(1e9, 3e11, n // 8), 8)
    loss = 1.8 + 400 / N**0.34 + 2000 / D**0.3
    frame = pd.DataFrame({"params": N, "flops": 6 * N * D, "val": loss * np.exp(0.003 * rng.standard_normal(n))})
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _write_logs(tmp_path):
    """eval.jsonl files (one per run) from a small synthetic multilingual study."""
    points, _ = points_lib.synthetic_study(languages=("en", "de", "fr"), sizes=(3e7, 1.5e8, 8e8, 4e9), seed=6)
    root = tmp_path / "runs"
    for run, sub in points.groupby("run"):
        rows = []
        for rec in sub.itertuples():
            tokens = {k: int(v) for k, v in rec.D_by_lang.items()}
            unique = {k: int(v) for k, v in rec.U_by_lang.items()}
            rows.append({
                "schema_version": 1, "run": run, "step": int(rec.step), "target": rec.target,
                "loss": float(rec.loss) + 0.3, "loss_unigram_norm": float(rec.loss), "bits_per_byte": 1.0,
                "eval_tokens": 1000, "tokens": int(rec.D_total), "tokens_by_lang": tokens,
                "unique_by_lang": unique, "epochs_by_lang": {k: tokens[k] / unique[k] for k in tokens},
                "params": int(rec.N), "params_nonembed": int(rec.N * 0.9), "flops": 6.0 * rec.N * rec.D_total,
                "mixture": {"name": rec.mixture, "weights": dict(rec.weights)}, "lr": 1e-4,
                "schedule_phase": rec.phase, "init": "scratch", "vocab": "corpus_spm", "vocab_size": 64512,
                "seq_len": 1024, "batch": 256, "scale": "tiny0"})
        for r in rows:
            schema.validate_row(r)
        logio.append_jsonl(root / run / "logs" / "eval.jsonl", rows)
    return root


def test_table_fit_writes_json_and_plots(tmp_path, capsys):
    path, _ = _csl_table(tmp_path)
    out = tmp_path / "fit"
    rc = fit_atlas.main(["--table", str(path), "--map", "N=params,C=flops,loss=val", "--law", "csl",
                         "--holdout", "random", "C", "--bootstrap", "50", "--out", str(out)])
    assert rc == 0
    fit = json.loads((out / "fit.json").read_text())
    for key in ("law", "params", "objective", "converged", "n_points", "heldout", "r2_in_sample", "runner_ups"):
        assert key in fit
    assert fit["law"] == "csl" and fit["n_points"] == 40 and fit["converged"]
    assert fit["params"]["alpha"] == pytest.approx(0.34, abs=0.03)
    assert fit["r2_in_sample"] > 0.99
    assert set(fit["heldout"]) == {"random", "C"}
    assert fit["heldout"]["C"]["n"] == 8 and fit["heldout"]["C"]["mape"] < 2.0
    assert "alpha" in fit["bootstrap"]["intervals"]
    assert (out / "fit_curves.png").stat().st_size > 1000 and (out / "residuals.png").is_file()
    printed = capsys.readouterr().out
    assert "held out      C" in printed and "R² in sample" in printed
    # model selection by extrapolation: every variant's CV error in fit.json and on stdout
    assert set(fit["selection"]["cv_error_percent"]) == {
        f"csl {t} {o}" for t in ("tied", "untied") for o in ("huber", "likelihood")}
    assert fit["selection"]["chosen"] in fit["selection"]["cv_error_percent"]
    assert "model selection" in printed and "<- chosen" in printed
    assert "gradient test" in fit["convergence_criteria"]


def test_all_fixed_only_evaluates(tmp_path):
    path, frame = _csl_table(tmp_path)
    out = tmp_path / "fit"
    fixes = ["E=1.8", "A=400", "B=2000", "alpha=0.34", "beta=0.3"]
    rc = fit_atlas.main(["--table", str(path), "--map", "N=params,C=flops,loss=val", "--law", "csl",
                         "--out", str(out), "--no_plots"] + [a for f in fixes for a in ("--fix", f)])
    assert rc == 0
    fit = json.loads((out / "fit.json").read_text())
    assert fit["params"] == {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.3}
    assert fit["per_target"]["all"]["free_params"] == []
    assert fit["r2_in_sample"] > 0.99


def test_logs_folder_multilingual_atlas(tmp_path):
    root = _write_logs(tmp_path)
    out = tmp_path / "fit"
    rc = fit_atlas.main(["--logs", str(root), "--law", "atlas", "--target", "de", "--holdout", "M",
                         "--compare", "csl,atlas", "--out", str(out), "--no_plots", "--no_select",
                         "--loss_field", "loss_unigram_norm"])
    assert rc == 0
    fit = json.loads((out / "fit.json").read_text())
    table = {(r["law"], r["split"]): r for r in fit["comparison"]}
    assert set(table) == {(law, split) for law in ("csl", "atlas") for split in ("in_sample", "M")}
    assert table["atlas", "M"]["r2"] == pytest.approx(fit["heldout"]["M"]["r2"])
    assert table["atlas", "M"]["mape"] < table["csl", "M"]["mape"]
    assert set(fit["params"]) == {"E", "A", "B", "alpha", "beta", "lambda", "tau_en", "tau_fr", "tau_other"}
    assert fit["r2_in_sample"] > 0.99 and fit["heldout"]["M"]["r2"] > 0.9
    assert fit["options"]["loss_field"] == "loss_unigram_norm"


@pytest.mark.parametrize("args, message", [
    (["--map", "N=params,C=flop,loss=val"], "column 'flop' (for C) not found"),
    (["--map", "N=params,C=flops,loss=val", "--law", "chinchilla"], "unknown law 'chinchilla'"),
    (["--map", "N=params,C=flops,loss=val", "--law", "csl", "--fix", "gamma=1"], "unknown parameter"),
    (["--map", "N=params,C=flops,loss=val", "--law", "csl", "--holdout", "sideways"], "unknown held-out split"),
    (["--map", "N=params,C=flops,loss=val", "--objective", "l1"], "unknown objective"),
    (["--map", "N=params,C=flops,loss=val", "--compare", "csl,gpt"], "--compare: unknown law 'gpt'"),
    (["--map", "N=params,C=flops,loss=val,bogus=x"], "--map key 'bogus' unknown"),
    (["--map", "N=params,loss=val"], "D (tokens) or C (FLOPs)"),
    (["--map", "N=params,C=flops,loss=val", "--law", "csl", "--tied", "--fix", "beta=0.3"],
     "fix alpha instead of beta"),
    (["--map", "N=params,C=flops,loss=val", "--law", "csl", "--bound", "alpha=0.5:0.1"],
     "--bound alpha: LO '0.5' must be below HI '0.1'"),
    (["--map", "N=params,C=flops,loss=val", "--law", "csl", "--bound", "tau_en=0:1"],
     "--bound names unknown parameter(s) ['tau_en']"),
    (["--map", "N=params,C=flops,loss=val", "--law", "msl"], "law 'msl' reads p"),
    (["--map", "N=params,C=flops,loss=val", "--compare", "csl,curse"], "law 'curse' reads K"),
    (["--map", "N=params,C=flops,loss=val", "--law", "atlas", "--transfer_matrix", "nothing.csv"],
     "transfer matrix nothing.csv: no such file"),
    (["--map", "N=params,C=flops,loss=val", "--drop_highest", "40"], "cannot drop the 40 highest losses of 40 rows"),
    (["--map", "N=params,C=flops,loss=val", "--n_transfer", "-1"], "--n_transfer must be ≥ 0"),
])
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    path, _ = _csl_table(tmp_path)
    out = tmp_path / "fit"
    rc = fit_atlas.main(["--table", str(path), "--out", str(out)] + args)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.assign(params=f["params"].where(f.index != 3, -5.0)), "'params' (N) must be positive; row 4"),
    (lambda f: f.assign(val=f["val"].where(f.index != 7, np.nan)),
     "'val' (loss) has a missing, non-numeric or infinite value at row 8: nan"),
    (lambda f: f.assign(flops=f["flops"].where(f.index != 2, 0.0)), "'flops' (C) must be positive; row 3 has 0.0"),
    (lambda f: f.iloc[:4], "4 points are fewer than the 5 free parameters"),
])
def test_bad_values_exit_2(tmp_path, capsys, mutate, message):
    path, frame = _csl_table(tmp_path)
    mutate(frame).to_csv(path, index=False)
    out = tmp_path / "fit"
    rc = fit_atlas.main(["--table", str(path), "--map", "N=params,C=flops,loss=val", "--law", "csl",
                         "--out", str(out)])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_holdout_leaving_nothing_to_fit_is_explained_not_crashed(tmp_path, capsys):
    path, frame = _csl_table(tmp_path)
    frame.assign(mix="cap4v0", run=[f"r{i}" for i in range(len(frame))]).to_csv(path, index=False)
    out = tmp_path / "fit"
    rc = fit_atlas.main(["--table", str(path), "--map", "N=params,C=flops,loss=val,mixture=mix",
                         "--law", "csl", "--holdout", "M", "D", "--no_select", "--out", str(out)])
    assert rc == 0
    assert "held out      M: not scored: held-out split 'M' holds out every point" in capsys.readouterr().out
    result = json.loads((out / "fit.json").read_text())
    assert "holds out every point" in result["heldout"]["M"]["error"]
    assert result["heldout"]["D"]["r2_mean_over_targets"] > 0.9
    assert result["heldout_headline"] == "r2_mean_over_targets"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_exported_table_from_logs(tmp_path, fmt):
    root = _write_logs(tmp_path)
    rows = logs.read_rows(str(root))
    # an evaluation of a language the run never trained on: dropped for CSL, with a note
    extra = dict(rows[0], target="sw", step=rows[0]["step"])
    rows.append(extra)
    if fmt == "csv":
        path = tmp_path / "logs.csv"
        pd.DataFrame([schema.flatten_row(r) for r in rows]).to_csv(path, index=False)
    else:
        path = tmp_path / "logs.parquet"
        frame = pd.DataFrame([{k: (json.dumps(v) if k in schema.DICT_FIELDS else v) for k, v in r.items()}
                              for r in rows])
        frame.to_parquet(path)
    out = tmp_path / "fit"
    rc = fit_atlas.main(["--table", str(path), "--law", "csl", "--target", "en,fr", "--out", str(out),
                         "--no_plots"])
    assert rc == 0
    fit = json.loads((out / "fit.json").read_text())
    assert fit["targets"] == ["en", "fr"] and set(fit["params"]) == {"en", "fr"}
    n_expected = sum(1 for r in rows if r["target"] in ("en", "fr"))
    assert fit["n_points"] == n_expected
    assert fit["options"]["loss_field"] == "loss"
    assert fit["per_target"]["en"]["converged"]
    rc = fit_atlas.main(["--table", str(path), "--law", "csl", "--target", "sw", "--out", str(tmp_path / "sw")])
    assert rc == 2 and not (tmp_path / "sw").exists()


def test_log_sources_file_folder_glob_and_bad_rows(tmp_path):
    root = _write_logs(tmp_path)
    files = sorted(root.rglob("eval.jsonl"))
    by_folder = points_lib.load_points(str(root))
    by_glob = points_lib.load_points(str(root / "*" / "logs" / "eval.jsonl"))
    one = points_lib.load_points(str(files[0]))
    assert len(by_folder) == len(by_glob) > len(one) > 0
    mono = points_lib.load_points(str(root / "mono_*"))     # a glob of run folders
    assert set(mono["mixture"]) == {"mono_en", "mono_de", "mono_fr"}
    assert len(mono) == (by_folder["mixture"].str.startswith("mono_")).sum()
    assert set(one["run"]) == {files[0].parents[1].name}
    assert {"N", "D", "U", "D_total", "C", "p", "K", "mixture", "run", "step", "target", "loss"} <= set(one.columns)
    # the default is the cross-entropy `loss` (loss_unigram_norm is 0.3 lower in these logs)
    norm = points_lib.load_points(str(files[0]), loss_field="loss_unigram_norm")
    np.testing.assert_allclose(one["loss"], norm["loss"] + 0.3)
    # a crash-truncated last line is dropped with a warning, the complete rows are kept
    with open(files[0], "a") as f:
        f.write('{"schema_version": 1, "run": "trunc')
    with pytest.warns(UserWarning, match="truncated"):
        assert len(points_lib.load_points(str(files[0]))) == len(one)
    # a row missing a schema field is an error naming the file and line
    bad = tmp_path / "bad" / "eval.jsonl"
    row = logio.read_jsonl(files[1])[0]
    del row["params"]
    logio.append_jsonl(bad, [row])
    with pytest.raises(schema.SchemaError, match=r"eval.jsonl: row 1: missing field 'params'"):
        points_lib.load_points(str(bad))
    with pytest.raises(logs.LogError, match=r"nothing\*: no eval log found"):
        points_lib.load_points(str(tmp_path / "nothing*"))


@pytest.mark.parametrize("field, value, message", [
    ("loss_unigram_norm", -0.4, "'loss_unigram_norm' = -0.4 must be a positive finite loss"),
    ("loss", float("nan"), "field 'loss' is nan"),   # refused by the log reader (atlas_t5x.logs)
    ("params", 0, "'params' (N) = 0 must be positive"),
    ("unique_by_lang", 0, "unique_by_lang['de'] (U) = 0 must be positive"),
    ("tokens_by_lang", -5, "tokens_by_lang['de'] = -5 must be non-negative"),
])
def test_bad_log_values_exit_2_naming_the_row(tmp_path, capsys, field, value, message):
    root = _write_logs(tmp_path)
    path = sorted(root.glob("mono_de_*/logs/eval.jsonl"))[0]
    rows = logio.read_jsonl(path)
    row = next(r for r in rows if r["target"] == "de" and r["step"] == 2)
    if field.endswith("_by_lang"):
        row[field] = {k: value for k in row[field]}
    else:
        row[field] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loss_field = ["--loss_field", "loss_unigram_norm"] if field == "loss_unigram_norm" else []
    out = tmp_path / "fit"
    rc = fit_atlas.main(["--logs", str(root), "--law", "atlas", "--out", str(out)] + loss_field)
    assert rc == 2
    err = capsys.readouterr().err
    assert f"run {row['run']!r} step 2 target 'de'" in err and message in err
    assert not out.exists()


def test_bounds_hold_and_are_recorded(tmp_path):
    path, _ = _csl_table(tmp_path)
    out = tmp_path / "fit"
    rc = fit_atlas.main(["--table", str(path), "--map", "N=params,C=flops,loss=val", "--law", "csl",
                         "--bound", "alpha=0.1:0.3", "--fix", "E=1.8", "--bootstrap", "16", "--out", str(out),
                         "--no_plots"])
    assert rc == 0
    fit = json.loads((out / "fit.json").read_text())
    assert fit["params"]["alpha"] == pytest.approx(0.3)      # the data want 0.34
    assert fit["options"]["bounds"] == {"alpha": [0.1, 0.3]}
    assert fit["per_target"]["all"]["at_bounds"] == {"alpha": "high"}
    assert "alpha at its high bound 0.3" in fit["per_target"]["all"]["convergence_message"]
    # bootstrap replicates respect the fit's bounds; a fixed parameter gets no interval but
    # every sample (read by scripts/plan.py) holds it
    assert fit["bootstrap"]["intervals"]["alpha"]["hi"] <= 0.3 + 1e-12
    assert "E" not in fit["bootstrap"]["intervals"]
    samples = fit["bootstrap"]["samples"]
    assert len(samples) >= 12 and all(s["E"] == 1.8 and set(s) == set(fit["params"]) for s in samples)
    # the one conversion every fit (per target, dcsl base stage, leave-one-language-out) uses
    spec = table_fit.FitSpec(bounds=(("alpha", 0.1, 0.3), ("E", 1.0, 2.0)))
    assert spec.bounds_for() == {"alpha": (0.1, 0.3), "E": (1.0, 2.0)}
    assert spec.bounds_for(["alpha", "beta"]) == {"alpha": (0.1, 0.3)}
    assert spec.bounds_for(["beta"]) is None and table_fit.FitSpec().bounds_for() is None


def test_finetune_runs_are_left_out_of_fits_unless_asked(tmp_path):
    root = _write_logs(tmp_path)
    src = sorted(root.rglob("eval.jsonl"))[0]
    rows = logio.read_jsonl(src)
    finetune = [dict(r, run="ft-" + r["run"], init=f"/ckpt/{r['run']}/checkpoints/10") for r in rows]
    logio.append_jsonl(root / "ft" / "logs" / "eval.jsonl", finetune)
    default = points_lib.load_points(str(root))
    assert not default["run"].str.startswith("ft-").any()
    both = points_lib.load_points(str(root), include_finetunes=True)
    assert len(both) == len(default) + len(finetune)
    with pytest.raises(points_lib.DataError, match="finetunes"):
        points_lib.load_points(str(root / "ft"))


def test_compare_with_untrained_target_points_drops_them_for_every_law(tmp_path, capsys):
    root = _write_logs(tmp_path)
    src = sorted(root.rglob("eval.jsonl"))[0]
    rows = logio.read_jsonl(src)
    trained = set(rows[0]["tokens_by_lang"])
    other = next(t for t in ("en", "de", "fr") if t not in trained)
    # the same run also evaluated on a language it never trained on (D_t = 0)
    first = sorted(trained)[0]   # one row per step: (run, step, target) stays unique
    logio.append_jsonl(src, [dict(r, target=other, step=r["step"]) for r in rows if r["target"] == first])
    out = tmp_path / "cmp"
    # --no_select: the drop happens before any fit; model selection's CV (covered elsewhere) would
    # only multiply the fits here
    rc = fit_atlas.main(["--logs", str(root), "--law", "atlas", "--holdout", "random", "--compare", "csl,atlas",
                         "--no_select", "--no_plots", "--out", str(out)])
    assert rc == 0
    assert "whose target had no training tokens" in capsys.readouterr().out
    fit = json.loads((out / "fit.json").read_text())
    assert {r["law"] for r in fit["comparison"]} >= {"csl", "atlas"}
