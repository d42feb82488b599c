"""Sweep specs (atlas_t5x.sweeps, scripts/sweep.py): expansion, validation, and a real smoke sweep."""

from __future__ import annotations

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
    families = {r.family for r in sweep.runs}
    assert {"monolingual", "bilingual"} <= families
    if name == "paper.yaml":
        assert families == set(sweeps.FAMILIES) - {"uniform"}  # capacity mixtures are the uniform ones
        raw = yaml.safe_load(path.read_text())
        capacity = [f for f in raw["families"] if f["family"] == "capacity"][0]["mixtures"]
        assert set(capacity) == set(__import__("atlas_t5x.data.mixtures", fromlist=["x"]).CAPACITY_MIXTURES)
