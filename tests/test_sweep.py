"""Sweep specs (atlas_t5x.sweeps, scripts/sweep.py): expansion, validation, and a real smoke sweep."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from atlas_t5x import sweeps

REPO = Path(__file__).resolve().parents[1]


def spec(*families, **defaults) -> dict:
    base = {"seq_len": 16, "batch": 8, "tokens": 16 * 8 * 4, "eval_every": 2}
    base.update(defaults)
    return {"name": "t", "defaults": base, "families": list(families)}


def test_families_expand_to_named_runs_with_token_budgets() -> None:
    sweep = sweeps.expand_sweep(spec(
        {"family": "monolingual", "languages": ["en", "cy"], "scales": ["tiny0", "tiny1"]},
        {"family": "bilingual", "pairs": [["es", "pt"]], "scales": ["tiny1"], "tokens": 1000},
        {"family": "capacity", "mixtures": ["4v0"], "scales": ["tiny0"]},
        {"family": "uniform", "languages": ["en", "de", "ru"], "scales": ["tiny0"]},
        {"family": "unimax", "languages": ["en", "cy"], "max_epochs": 3, "scales": ["tiny0"]},
        {"family": "finetune", "from": "unimax-tiny0", "languages": ["cy"], "tokens": 300},
    ))
    by_name = {r.name: r for r in sweep.runs}
    assert list(by_name) == [
        "mono-en-tiny0", "mono-en-tiny1", "mono-cy-tiny0", "mono-cy-tiny1", "bi-es_pt-tiny1",
        "cap-4v0-tiny0", "uni3-de_en_ru-tiny0", "unimax-tiny0", "ft-unimax-tiny0-to-cy",
    ]
    mono = by_name["mono-en-tiny0"]
    assert (mono.mixture, mono.total_steps, mono.tokens, mono.init_from) == ("monolingual_en", 4, 512, None)
    # 1000 tokens at 8 x 16 per step: 7 whole steps, 896 tokens.
    assert (by_name["bi-es_pt-tiny1"].total_steps, by_name["bi-es_pt-tiny1"].tokens) == (7, 896)
    assert by_name["cap-4v0-tiny0"].training_languages == ["de", "es", "fr", "pt"]
    assert by_name["unimax-tiny0"].max_epochs == 3.0
    ft = by_name["ft-unimax-tiny0-to-cy"]
    assert (ft.init_from, ft.scale, ft.mixture, ft.total_steps) == ("unimax-tiny0", "tiny0", "monolingual_cy", 2)


def test_tokens_per_param_and_paper_batch() -> None:
    from atlas_t5x import models

    sweep = sweeps.expand_sweep(spec(
        {"family": "monolingual", "languages": ["en"], "scales": ["scale0"]},
        tokens=None, tokens_per_param=20, batch="paper", seq_len=2048,
    ))
    (run,) = sweep.runs
    n = models.param_count(models.get_model_config("scale0"))
    assert run.batch == 256
    assert run.total_steps == (20 * n) // (256 * 2048)
    assert run.tokens == run.total_steps * 256 * 2048


def test_batch_per_scale() -> None:
    sweep = sweeps.expand_sweep(spec(
        {"family": "monolingual", "languages": ["en"], "scales": ["tiny0", "tiny1"]},
        tokens=64 * 8 * 40, batch={"tiny0": 4, "tiny1": 8}, seq_len=64,
    ))
    assert {r.scale: (r.batch, r.total_steps) for r in sweep.runs} == {"tiny0": (4, 80), "tiny1": (8, 40)}
    with pytest.raises(sweeps.SweepError, match=r"'batch' gives no batch size for scale 'tiny1' \(has \['tiny0'\]\)"):
        sweeps.expand_sweep(spec({"family": "monolingual", "languages": ["en"], "scales": ["tiny0", "tiny1"]},
                                 tokens=64 * 8 * 40, batch={"tiny0": 4}, seq_len=64))
    with pytest.raises(sweeps.SweepError, match=r"'batch\[tiny0\]' must be at least 1"):
        sweeps.expand_sweep(spec({"family": "monolingual", "languages": ["en"], "scales": ["tiny0"]},
                                 tokens=64 * 8 * 40, batch={"tiny0": 0}, seq_len=64))


def test_tokens_per_param_per_scale_and_seeds_named_apart() -> None:
    """The demo trains smaller sizes at higher token-per-parameter ratios, and a second seed of
    a trunk is a run of its own ("-s1"), seeded for init and data order."""
    from atlas_t5x import models

    sweep = sweeps.expand_sweep(spec(
        {"family": "monolingual", "languages": ["en"], "scales": ["tiny0", "tiny1"]},
        {"family": "monolingual", "languages": ["en"], "scales": ["tiny0"], "seed": 3},
        tokens=None, tokens_per_param={"tiny0": 40, "tiny1": 10}, seq_len=16,
    ))
    by_name = {r.name: r for r in sweep.runs}
    assert list(by_name) == ["mono-en-tiny0", "mono-en-tiny1", "mono-en-tiny0-s3"]
    for name, ratio in (("mono-en-tiny0", 40), ("mono-en-tiny1", 10)):
        run = by_name[name]
        n = models.param_count(models.get_model_config(run.scale))
        assert run.total_steps == (ratio * n) // (8 * 16)
    assert by_name["mono-en-tiny0-s3"].tokens == by_name["mono-en-tiny0"].tokens
    gin_text = sweeps.gin_config(by_name["mono-en-tiny0-s3"], "out")
    assert "train.seed = 3" in gin_text and "make_train_pipeline.seed = 3" in gin_text
    with pytest.raises(sweeps.SweepError, match=r"'tokens_per_param' gives no ratio for scale 'tiny1'"):
        sweeps.expand_sweep(spec({"family": "monolingual", "languages": ["en"], "scales": ["tiny0", "tiny1"]},
                                 tokens=None, tokens_per_param={"tiny0": 40}))
    with pytest.raises(sweeps.SweepError, match=r"tokens_per_param\[tiny0\]"):
        sweeps.expand_sweep(spec({"family": "monolingual", "languages": ["en"], "scales": ["tiny0"]},
                                 tokens=None, tokens_per_param={"tiny0": "many"}))


def test_unique_fraction_makes_named_data_constrained_runs(tmp_path) -> None:
    sweep = sweeps.expand_sweep(spec(
        {"family": "monolingual", "languages": ["en", "de"], "scales": ["tiny0"]},
        {"family": "monolingual", "languages": ["en"], "scales": ["tiny0"], "unique_fraction": {"en": 0.1}},
    ))
    runs = {r.name: r for r in sweep.runs}
    assert set(runs) == {"mono-en-tiny0", "mono-de-tiny0", "mono-en-tiny0-uen0.1"}
    assert "make_train_pipeline.unique_fraction = {'en': 0.1}" in sweeps.gin_config(runs["mono-en-tiny0-uen0.1"], tmp_path)
    assert "make_train_pipeline.unique_fraction" not in sweeps.gin_config(runs["mono-en-tiny0"], tmp_path)
    with pytest.raises(sweeps.SweepError, match=r"'unique_fraction\[en\]' must be in \(0, 1\], got 1.5"):
        sweeps.expand_sweep(spec({"family": "monolingual", "languages": ["en"], "scales": ["tiny0"],
                                  "unique_fraction": {"en": 1.5}}))


@pytest.mark.parametrize(
    "family, message",
    [
        ({"family": "monolingual", "languages": ["en", "xx"], "scales": ["tiny0"]}, "'xx'"),
        ({"family": "monolingual", "languages": ["en"], "scales": ["tiny9"]}, "unknown scale 'tiny9'"),
        ({"family": "capacity", "mixtures": ["4v9"], "scales": ["tiny0"]}, "unknown mixture '4v9'"),
        ({"family": "bilingual", "pairs": [["en", "en"]], "scales": ["tiny0"]}, "two different languages"),
        ({"family": "finetune", "from": "nope", "languages": ["en"]}, "finetune source 'nope'"),
        ({"family": "monolingual", "languages": ["en"], "scales": ["tiny0"], "tokenz": 5}, "unknown key 'tokenz'"),
        ({"family": "monolingual", "languages": ["en", False], "scales": ["tiny0"]}, "write 'no'"),
        ({"family": "monolingual", "languages": ["en"], "scales": ["tiny0"], "tokens": 10}, "less than one step"),
    ],
)
def test_bad_specs_name_the_problem(family, message) -> None:
    with pytest.raises(sweeps.SweepError, match=message):
        sweeps.expand_sweep(spec(family), source="bad.yaml")


def test_corpus_languages_are_checked_for_local_runs() -> None:
    with pytest.raises(sweeps.SweepError, match="'sw' is not in the corpus"):
        sweeps.expand_sweep(
            spec({"family": "monolingual", "languages": ["sw"], "scales": ["tiny0"]}),
            corpus_languages=["en", "de"],
        )
    sweep = sweeps.expand_sweep(
        spec({"family": "monolingual", "languages": "all", "scales": ["tiny0"]}, eval_languages="all"),
        corpus_languages=["en", "de"],
    )
    assert [r.name for r in sweep.runs] == ["mono-en-tiny0", "mono-de-tiny0"]
    assert sweep.runs[0].settings["eval_languages"] == ("en", "de")


@pytest.mark.parametrize("name", ["paper.yaml", "demo.yaml", "study.yaml"])
def test_shipped_specs_expand(name: str) -> None:
    path = REPO / "gin" / "sweeps" / name
    sweep = sweeps.load_sweep(path)
    sweeps.check_runnable(sweep, local=name != "paper.yaml")  # gin files exist, vocabularies load
    families = {r.family for r in sweep.runs}
    assert {"monolingual", "bilingual"} <= families
    if name == "paper.yaml":
        assert families == set(sweeps.FAMILIES) - {"uniform"}  # capacity mixtures are the uniform ones
        raw = yaml.safe_load(path.read_text())
        capacity = [f for f in raw["families"] if f["family"] == "capacity"][0]["mixtures"]
        assert set(capacity) == set(__import__("atlas_t5x.data.mixtures", fromlist=["x"]).CAPACITY_MIXTURES)
        _check_paper_inventory(sweep)


S_FULL = {0, 1, 2, 4, 6, 8, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 42, 46}
S_PART = {0, 4, 8, 12, 16, 20, 24, 28, 34, 42, 46}
CROSSOVER_LANGUAGES = {"en", "ja", "pt", "de", "ru", "vi", "es", "zh"}  # spec §1.7, at 2B


def _check_paper_inventory(sweep) -> None:
    """gin/sweeps/paper.yaml against the spec's inventory (§4, Table B.1; §1.7; §2.2)."""
    from collections import Counter

    from atlas_t5x import models

    by_family: dict[str, list] = {}
    for r in sweep.runs:
        by_family.setdefault(r.family, []).append(r)
    scale_no = lambda r: int(r.scale.removeprefix("scale"))  # noqa: E731
    mono = Counter(r.training_languages[0] for r in by_family["monolingual"])
    seven = [lang for lang, n in mono.items() if n == len(S_FULL)]
    assert len(seven) == 7 and all({scale_no(r) for r in by_family["monolingual"]
                                    if r.training_languages[0] == lang} == S_FULL for lang in seven)
    assert {scale_no(r) for r in by_family["unimax"]} == S_FULL and len(by_family["unimax"]) == 20
    assert all(r.mixture_languages is None for r in by_family["unimax"])  # all 420 languages
    bilingual = by_family["bilingual"]
    assert sum(scale_no(r) == 34 for r in bilingual) >= 20  # pairs at 2B
    assert {scale_no(r) for r in bilingual} == S_PART  # and across S_part
    assert {len(r.training_languages) for r in by_family["capacity"]} == {4, 6, 8, 12, 16, 24, 32, 50}
    # Finetunes of the 2B Unimax checkpoint: every source language of the 38x38 transfer matrix.
    matrix = (REPO.parent / "shared" / "data" / "atlas_bts_38x38.csv")
    finetunes = by_family["finetune"]
    assert {r.init_from for r in finetunes} == {"unimax-scale34"}
    if matrix.exists():
        header = matrix.read_text().splitlines()[0].split(",")[1:]
        assert {r.training_languages[0] for r in finetunes} == set(header)
    # Crossover (spec §1.7): finetune and from-scratch 2B runs of each crossover language train
    # past the latest crossover the paper reports at 2B (283B target tokens).
    for lang in CROSSOVER_LANGUAGES:
        assert sweep.run(f"ft-unimax-scale34-to-{lang}").tokens > 283e9
        assert sweep.run(f"mono-{lang}-scale34").tokens > 283e9
    # Every other run: at least 20 tokens per parameter or 10B tokens.
    for r in sweep.runs:
        n = models.param_count(models.get_model_config(r.scale))
        assert r.tokens >= min(20 * n, 1e10) * 0.999, r.name
    assert Counter(r.family for r in sweep.runs) == {
        "monolingual": 145, "unimax": 20, "bilingual": 64, "capacity": 84, "finetune": 38}


# ------------------------------------------------------------------------------------------
# A real smoke sweep: 2 tiny runs on the embedded corpus, trained in this process.

SMOKE_EVAL = ["en", "cy", "de"]


def smoke_spec(*families) -> dict:
    return spec(
        *families,
        seq_len=16, batch=8, tokens=16 * 8 * 6, eval_every=2, eval_languages=SMOKE_EVAL,
        eval_token_budget=64, warmup_steps=2, checkpoint_every=2, model_overrides={"dropout_rate": 0.0},
    )


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """The runs below share one model shape: JAX's persistent cache compiles it once."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    sweeps.enable_compile_cache(tmp_path_factory.mktemp("jax_cache"))
    yield
    jax.config.update("jax_compilation_cache_dir", previous)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, compile_cache):
    from atlas_t5x.data import madlad

    out = tmp_path_factory.mktemp("smoke")
    sweep = sweeps.expand_sweep(
        smoke_spec(
            {"family": "monolingual", "languages": ["en"], "scales": ["tiny0"]},
            {"family": "bilingual", "pairs": [["en", "cy"]], "scales": ["tiny0"]},
            {"family": "finetune", "from": "mono-en-tiny0", "languages": ["cy"], "tokens": 16 * 8 * 2},
        ),
        corpus_languages=madlad.available_languages(),
    )
    status = sweeps.run_locally(sweep, out, progress=False)
    return sweep, out, status


def test_smoke_sweep_logs_pass_the_schema_and_match_planned_tokens(smoke) -> None:
    from atlas_t5x.data import accounting, madlad, mixtures, pipeline, vocab
    from atlas_t5x import logs as export

    sweep, out, status = smoke
    assert status == {"mono-en-tiny0": "finished", "bi-en_cy-tiny0": "finished",
                      "ft-mono-en-tiny0-to-cy": "finished"}
    rows = export.gather_rows(export.find_eval_logs([out]))  # validates every row
    assert {(r["run"], r["step"]) for r in rows} == {
        (run, step) for run in ("mono-en-tiny0", "bi-en_cy-tiny0") for step in (2, 4, 6)
    } | {("ft-mono-en-tiny0-to-cy", 2)}
    unique = {
        lang: accounting.count_unique_tokens(madlad.resolve_madlad_dir(), lang, vocab.get_vocabulary("corpus_spm"))
        for lang in ("en", "cy")
    }
    for run in sweep.runs[:2]:
        mixture = mixtures.get_mixture(run.mixture)
        run_rows = [r for r in rows if r["run"] == run.name]
        assert sorted({r["target"] for r in run_rows}) == sorted(SMOKE_EVAL)
        for r in run_rows:
            planned = mixtures.plan_tokens(mixture, r["step"] * run.batch * run.seq_len, unique,
                                           seq_len=run.seq_len, global_batch=run.batch)
            assert r["tokens_by_lang"] == {lang: p.tokens for lang, p in planned.items()}
            assert r["unique_by_lang"] == {lang: unique[lang] for lang in planned}
            assert r["tokens"] == r["step"] * run.batch * run.seq_len
            assert r["mixture"] == mixture.to_json()
            assert (r["init"], r["scale"], r["seq_len"], r["batch"]) == ("scratch", "tiny0", 16, 8)
            assert r["flops"] == pytest.approx(6.0 * r["params"] * r["tokens"])
            eval_set = pipeline.make_eval_set(r["target"], "corpus_spm", 16, 8, 64)
            assert 0 < r["eval_tokens"] == eval_set.n_tokens
            # Bounded cost: whole documents up to the budget (one document even if it is longer).
            assert r["eval_tokens_budget"] == 64 and (r["eval_tokens"] <= 64 or eval_set.n_documents == 1)
        final = max(run_rows, key=lambda r: r["step"])
        assert final["tokens"] == run.tokens
    # The finetune starts from the source's final checkpoint with a reset schedule; its logs say so.
    ft_rows = [r for r in rows if r["run"] == "ft-mono-en-tiny0-to-cy"]
    source = sweep.run("mono-en-tiny0").model_dir(out)
    assert {r["init"] for r in ft_rows} == {str(source / "checkpoints" / "6")}
    assert {r["step"]: r["tokens_by_lang"] for r in ft_rows} == {2: {"cy": 2 * 8 * 16}}
    # Finished runs are skipped on a second pass (and each is reported as skipped).
    reports: list[str] = []
    assert set(sweeps.run_locally(sweep, out, progress=False, report=reports.append).values()) == {"skipped"}
    assert reports == [f"[{i}/3] {name}: already finished, skipped" for i, name in
                       enumerate(["mono-en-tiny0", "bi-en_cy-tiny0", "ft-mono-en-tiny0-to-cy"], start=1)]


def test_logged_unigram_normalised_loss_matches_an_independent_recount(smoke) -> None:
    import numpy as np

    from atlas_t5x.data import accounting, madlad, pipeline, vocab

    sweep, out, _ = smoke
    from atlas_t5x import logio

    row = logio.read_jsonl(sweep.run("mono-en-tiny0").model_dir(out) / "logs" / "eval.jsonl")[-1]
    target = row["target"]
    spm = vocab.get_vocabulary("corpus_spm")
    train_ids = accounting.encode_documents(madlad.load_split(None, target, "train"), spm).tokens
    counts = np.bincount(train_ids, minlength=row["vocab_size"]).astype(np.float64)
    log_p_uni = np.log((counts + 1.0) / (counts.sum() + row["vocab_size"]))  # add-one smoothing
    eval_set = pipeline.make_eval_set(target, spm, 16, 8, 64)
    mean_log_p_uni = sum(
        float((log_p_uni[b["decoder_target_tokens"]] * b["decoder_loss_weights"]).sum()) for b in eval_set.batches
    ) / eval_set.n_tokens
    assert row["loss_unigram_norm"] == pytest.approx(row["loss"] + mean_log_p_uni, rel=1e-9)
    assert row["bits_per_byte"] == pytest.approx(
        row["loss"] * eval_set.n_tokens / (np.log(2) * eval_set.n_bytes), rel=1e-9)


def test_a_run_killed_mid_evaluation_resumes_without_duplicate_or_missing_rows(smoke, monkeypatch) -> None:
    from atlas_t5x.data import madlad
    from atlas_t5x.eval import callback as eval_callback

    reference_sweep, reference_out, _ = smoke
    out = reference_out.parent / "killed"
    sweep = sweeps.expand_sweep(
        smoke_spec({"family": "monolingual", "languages": ["en"], "scales": ["tiny0"]}),
        corpus_languages=madlad.available_languages(),
    )
    real_score = eval_callback.score
    calls = []

    def crashing_score(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # step 4, second language: the process dies mid-evaluation
            raise KeyboardInterrupt("simulated kill")
        return real_score(*args, **kwargs)

    monkeypatch.setattr(eval_callback, "score", crashing_score)
    with pytest.raises(KeyboardInterrupt):
        sweeps.run_locally(sweep, out, progress=False)
    (run,) = sweep.runs
    log = run.model_dir(out) / "logs" / "eval.jsonl"
    from atlas_t5x import logio, schema

    # Rows are appended one language at a time: step 4's first language made it to disk.
    assert [schema.row_key(r) for r in logio.read_jsonl(log)][-2:] == [
        ("mono-en-tiny0", 2, "de"), ("mono-en-tiny0", 4, "en")]
    assert not sweeps.is_finished(run, out)

    monkeypatch.setattr(eval_callback, "score", real_score)
    reports: list[str] = []  # the per-run lines atlas-sweep prints outside a terminal
    assert sweeps.run_locally(sweep, out, progress=False, report=reports.append) == {"mono-en-tiny0": "finished"}
    assert reports[0] == f"[1/1] mono-en-tiny0: training ({run.total_steps} steps, {run.tokens:,} tokens)"
    assert len(reports) == 2 and re.fullmatch(r"\[1/1\] mono-en-tiny0: finished in \d+\.\d s", reports[1])
    rows = logio.read_jsonl(log)
    keys = [schema.row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 9
    assert set(keys) == {("mono-en-tiny0", s, t) for s in (2, 4, 6) for t in SMOKE_EVAL}
    # The resumed run reproduces the uninterrupted one (same config, seed and data order).
    reference = {schema.row_key(r): r for r in logio.read_jsonl(
        reference_sweep.run("mono-en-tiny0").model_dir(reference_out) / "logs" / "eval.jsonl")}
    for r in rows:
        assert r["loss"] == pytest.approx(reference[schema.row_key(r)]["loss"], rel=1e-5)
        assert r["tokens_by_lang"] == reference[schema.row_key(r)]["tokens_by_lang"]


def test_demo_plan_shrinks_every_budget_by_one_factor_to_fit_the_time() -> None:
    from atlas_t5x.cli import demo

    sweep = sweeps.expand_sweep(spec(
        {"family": "monolingual", "languages": ["en", "yi"], "scales": ["tiny0", "tiny1"]},
        tokens=16 * 8 * 400, eval_every=50,
    ))
    timings = {
        "tiny0": {"steps_per_s": 20.0, "eval_s_per_language": 0.01, "n_eval_languages": 10},
        "tiny1": {"steps_per_s": 10.0, "eval_s_per_language": 0.02, "n_eval_languages": 10},
    }
    full = sum(demo.estimate_seconds(r, timings[r.scale]) for r in sweep.runs)
    same, factor, estimate = demo.plan(sweep, timings, seconds_left=full + 1)
    assert (same, factor) == (sweep, 1.0) and estimate == pytest.approx(full)
    # Two training processes: the sweep ends when the busier one does (longest run first).
    start = demo.WORKER_START_S
    assert demo.makespan([5.0, 4.0, 3.0, 3.0, 1.0], workers=2) == start + 8.0   # 5+3 | 4+3+1
    assert demo.makespan([5.0, 4.0, 3.0], workers=1) == 12.0
    each = [demo.estimate_seconds(r, timings[r.scale]) for r in sweep.runs]
    _, factor, estimate = demo.plan(sweep, timings, seconds_left=full / 2 + start + 1, workers=2)
    assert factor == 1.0 and estimate == pytest.approx(demo.makespan(each, 2)) and estimate < full
    scaled, factor, estimate = demo.plan(sweep, timings, seconds_left=full * 0.7)
    assert demo.MIN_FACTOR < factor < 0.7  # per-run overheads do not shrink with the budget
    steps = [r.total_steps for r in scaled.runs]
    assert len(set(steps)) == 1 and 200 < steps[0] < 280
    assert all(r.tokens == r.total_steps * 16 * 8 for r in scaled.runs)
    assert full * 0.7 * 0.9 < estimate <= full * 0.7
    # The evaluation period and warmup shrink with the steps: the curves keep their points.
    assert all(abs(r.total_steps / r.settings["eval_every"] - 8) < 0.5 for r in scaled.runs)  # 400 / 50
    assert all(r.settings["warmup_steps"] < sweep.runs[0].settings["warmup_steps"] for r in scaled.runs)
    # never below MIN_FACTOR (the trunks keep half their tokens and every branch): over budget instead
    tiny, factor, estimate = demo.plan(sweep, timings, seconds_left=1.0)
    assert factor == demo.MIN_FACTOR and [r.total_steps for r in tiny.runs] == [200] * 4 and estimate > 1.0
    # Calibration speed: steps over time of every logged window after the first (compile).
    rows = [{"step": 6, "steps_per_s": 2.0}, {"step": 10, "steps_per_s": 20.0}, {"step": 12, "steps_per_s": 10.0}]
    assert demo.steady_steps_per_s(rows) == pytest.approx(6 / (4 / 20 + 2 / 10))


def test_demo_workers_train_and_calibrate_pinned_to_a_core_each(tmp_path: Path) -> None:
    # The defect: calibrated on both cores, then two unpinned workers ran up to 1.8x slower than
    # the plan. Each worker now has a core of its own, and calibration runs in such a worker.
    import dataclasses
    import multiprocessing
    import os
    import time
    from concurrent.futures import ProcessPoolExecutor

    from atlas_t5x.cli import demo

    plain = sweeps.expand_sweep(spec({"family": "monolingual", "languages": ["en"], "scales": ["tiny0"]}))
    assert demo.training_workers(plain, 2) == 2 and demo.training_workers(plain, 0) == 1
    source = plain.runs[0]
    finetune = sweeps.Sweep("ft", (source, dataclasses.replace(source, name="ft", init_from=source.name)), "test")
    assert demo.training_workers(finetune, 2) == 1   # a finetune waits for its source: one process
    context = multiprocessing.get_context("spawn")
    assert demo._worker_cores(1, context) is None
    assert demo._worker_cores(demo.usable_cores() + 1, context) is None   # cannot give each a core
    if not hasattr(os, "sched_setaffinity") or demo.usable_cores() < 2:
        pytest.skip("needs two usable cores and the affinity API")
    with ProcessPoolExecutor(2, mp_context=context, initializer=demo._start_worker,
                             initargs=(str(tmp_path / "jax_cache"), demo._worker_cores(2, context))) as pool:
        pids: set[int] = set()
        deadline = time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline:   # a pid comes back once its initializer ran
            pids.update(job.result() for job in [pool.submit(os.getpid) for _ in range(4)])
        affinities = {pid: tuple(os.sched_getaffinity(pid)) for pid in pids}
    assert len(affinities) == 2, affinities
    cores = sorted(c for affinity in affinities.values() for c in affinity)
    assert all(len(a) == 1 for a in affinities.values()) and len(set(cores)) == 2
    assert set(cores) <= set(os.sched_getaffinity(0))


def test_cli_refuses_a_bad_spec_before_training(tmp_path: Path, capsys) -> None:
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("sweep_cli", REPO / "scripts" / "sweep.py")
    cli = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(cli)
    bad = tmp_path / "bad.yaml"
    for families, message in (
        ([{"family": "monolingual", "languages": ["en", "sw"], "scales": ["tiny0"]}], "'sw' is not in the corpus"),
        ([{"family": "capacity", "mixtures": ["4v7"], "scales": ["tiny0"]}], "unknown mixture '4v7'"),
        ([{"family": "monolingual", "languages": ["en"], "scales": ["tiny0"], "vocab": "nope"}],
         "vocabulary 'nope' cannot be loaded"),
    ):
        bad.write_text(yaml.safe_dump(spec(*families)))
        assert cli.main([str(bad), "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_demo_checks_flag_what_a_reader_checks_first() -> None:
    import math
    import types

    from test_export import make_row

    from atlas_t5x.cli import demo

    rows = []
    # yi: U = 1000 unique tokens, 100 tokens a step; the larger model is better, except at the end.
    for run, params, losses in (("small", 10, [6.0, 5.0, 4.5, 4.4]), ("big", 20, [5.5, 4.5, 4.4, 4.6])):
        for step, loss in zip((10, 20, 40, 80), losses):
            for target in ("yi", "en"):
                rows.append(make_row(run, step, target, langs=("yi",), loss=loss, params=params,
                                     scale=run, epochs_by_lang={"yi": step / 10},
                                     schedule_phase="final" if step == 80 else "stable"))
    rows[-1]["loss"] = math.nan  # last row: big on en
    fit = types.SimpleNamespace(fits={"yi": types.SimpleNamespace(params={"E": 1e-12, "lambda": 0.5},
                                                                  at_bounds={"E": "low"})})
    text = "\n".join(demo.sanity_checks(rows, {"atlas": fit}, ["yi"]))
    assert "| non-finite losses | 1 of 16 rows |" in text
    assert "| evaluations missing a language | 0 of 8 (run, step) pairs, 2 languages each |" in text
    assert "yi: final loss falls with N (monolingual) | **no**: small 4.400 > big 4.600" in text
    assert "5 of 6 steps; least monotone curve: big on yi (67%)" in text
    # big: 8 epochs at the end (8000 tokens of U = 1000); S_0.5(8000; 1000) = 1000 (1 + (1 - e^-3.5) / 0.5).
    effective = 1 + (1 - math.exp(-0.5 * 7)) / 0.5
    assert "8.00 epochs of U_t = 1,000 tokens; loss drop over the last doubling of D_t: -0.200" in text
    assert f"ATLAS λ = 0.5 counts them as {effective:.2f} effective epochs" in text
    assert "parameters at or next to a bound | atlas on yi: E (low)" in text
    # the report's held-out facts as the demo's heldout.csv: one row per setting, law and split
    facts = {"settings": {"monolingual": {
        "fits": {"csl": {"yi": {"variant": "csl tied huber"}}},
        "heldout": {"csl": {"N": 0.91, "D": math.nan}}}}}
    table = demo.heldout_frame(facts)
    assert table[["setting", "variant", "split"]].values.tolist() == [
        ["monolingual", "csl tied huber", "N"], ["monolingual", "csl tied huber", "D"]]
    assert table["r2_mean_over_targets"].iloc[0] == 0.91
