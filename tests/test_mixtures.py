"""Mixture rates match their definitions; the row schedule and plan_tokens are exact."""

import math

import numpy as np
import pytest

from atlas_t5x.data import mixtures as M

SPEC_CAPACITY = {  # spec §4, transcribed independently of the module's table
    "4v0": "de es fr pt", "4v1": "de en es fr", "4v2": "hi ja vi zh", "4v3": "en hi pt ru",
    "6v0": "de en es fr pt ru", "8v0": "de en es fr pt ru vi zh", "8v1": "de en fr hi ja ru vi zh",
    "12v0": "de en es fr hi it ja pl pt ru vi zh",
    "16v0": "de en es fr hi id it ja nl pl pt ru sv tr vi zh",
    "24v0": "cs da de en es fa fi fr hi hu id it ja nl pl pt ro ru sv th tr uk vi zh",
    "32v0": "ar bg ca cs da de el en es fa fi fr hi hu id it ja ko lt nl no pl pt ro ru sk sv th tr "
            "uk vi zh",
    "50v0": "af ar ba bm bn ca ckb cy de ee el en es fa fil fr gn gu ha he hi hr id it ja jv kk ko "
            "mr ms my nl no om pl ps pt ro ru sm sv sw te th tr uk ur vi yo zh",
}


def test_capacity_mixtures_match_spec_lists():
    assert set(M.CAPACITY_MIXTURES) == set(SPEC_CAPACITY)
    for name, members in SPEC_CAPACITY.items():
        langs = members.split()
        k = int(name.split("v")[0])
        mixture = M.get_mixture(name)
        assert len(langs) == k and mixture.name == name
        assert mixture.languages == sorted(langs)
        assert all(math.isclose(w, 1 / k) for w in mixture.weights.values())


def test_temperature_matches_hand_computation():
    sizes = {"en": 900, "fr": 90, "yo": 10}
    # T = 2: sqrt(0.9), sqrt(0.09), sqrt(0.01) = 0.9487, 0.3, 0.1 → renormalised
    expected = np.array([0.9486833, 0.3, 0.1])
    expected /= expected.sum()
    mixture = M.temperature(sizes, 2.0)
    np.testing.assert_allclose([mixture.weights[k] for k in ("en", "fr", "yo")], expected, rtol=1e-6)
    assert M.temperature(sizes, 1.0).weights["fr"] == pytest.approx(0.09)
    assert max(M.temperature(sizes, 1e6).weights.values()) == pytest.approx(1 / 3, rel=1e-4)


def test_unimax_caps_redistributes_and_conserves_budget():
    unique = {"yo": 10, "sw": 100, "fr": 2_000, "en": 10_000}
    budget, max_epochs = 6_000, 4
    alloc = M.unimax_allocation(unique, budget, max_epochs)
    # yo and sw hit their caps (40, 400); the rest (5560) is split evenly over fr and en
    assert alloc == pytest.approx({"yo": 40, "sw": 400, "fr": 2780, "en": 2780})
    assert sum(alloc.values()) == pytest.approx(budget)
    assert all(alloc[k] <= max_epochs * unique[k] + 1e-9 for k in unique)
    # a larger cap on fr binds again: fr capped at 2 epochs = 4000 → en gets the excess
    alloc = M.unimax_allocation(unique, 20_000, 2)
    assert alloc == pytest.approx({"yo": 20, "sw": 200, "fr": 4000, "en": 15780})
    mixture = M.unimax(unique, 20_000, 2)
    assert mixture.weights["en"] == pytest.approx(15780 / 20_000)
    plan = M.plan_tokens(mixture, 20_000, unique)
    assert all(plan[k].epochs <= 2 + 1e-3 for k in unique)


def test_unimax_budget_beyond_every_cap_is_an_error():
    # all capped: the allocation is the caps (∝ U), but training on the budget would break them
    assert M.unimax_allocation({"en": 300, "fr": 100}, 10_000, 2) == {"fr": 200, "en": 600}
    with pytest.raises(ValueError, match=r"10,000 tokens exceeds .* 2 x 400 = 800"):
        M.unimax({"en": 300, "fr": 100}, 10_000, 2)
    exactly_full = M.unimax({"en": 300, "fr": 100}, 800, 2)  # the budget fills every cap exactly
    assert exactly_full.weights == pytest.approx({"en": 0.75, "fr": 0.25})
    plan = M.plan_tokens(exactly_full, 800, {"en": 300, "fr": 100})
    assert {k: p.epochs for k, p in plan.items()} == {"en": 2.0, "fr": 2.0}


def test_bilingual_monolingual_uniform():
    assert M.get_mixture("bilingual_es_pt").weights == {"es": 0.5, "pt": 0.5}
    assert M.get_mixture("monolingual_en").weights == {"en": 1.0}
    assert M.get_mixture("uniform", languages=["fr", "de", "en"]).weights == pytest.approx(
        {"de": 1 / 3, "en": 1 / 3, "fr": 1 / 3})
    assert len(M.bilingual_pairs(["de", "en", "fr"])) == 3


def test_explicit_normalises_and_rejects_bad_weights():
    assert M.explicit({"en": 3, "fr": 1, "de": 0}).weights == {"en": 0.75, "fr": 0.25}
    with pytest.raises(ValueError, match="fr"):
        M.explicit({"en": 1, "fr": -0.5})
    with pytest.raises(ValueError, match="sum"):
        M.explicit({"en": 0, "fr": 0})
    with pytest.raises(ValueError, match="nan|bad weights"):
        M.explicit({"en": float("nan")})
    with pytest.raises(ValueError, match="xx"):
        M.explicit({"xx-YY": 1})


def test_get_mixture_errors_name_the_problem():
    with pytest.raises(ValueError, match="4v9"):
        M.get_mixture("4v9")
    with pytest.raises(ValueError, match="token_budget"):
        M.get_mixture("unimax", unique_by_lang={"en": 10})
    with pytest.raises(ValueError, match="sizes"):
        M.get_mixture("temperature")
    with pytest.raises(ValueError, match="different"):
        M.get_mixture("bilingual_en_en")


def test_sized_mixtures_through_size_fn():
    calls = []

    def size_fn(langs):
        calls.append(langs)
        return {"en": 1000, "fr": 10}

    mixture = M.get_mixture("unimax", size_fn=size_fn, token_budget=500, max_epochs=5)
    assert calls == [None] and mixture.weights == pytest.approx({"en": 0.9, "fr": 0.1})
    t = M.get_mixture("temperature", unique_by_lang={"en": 1000, "fr": 10, "de": 5},
                      languages=["en", "fr"], temperature_value=1.0)
    assert t.weights == pytest.approx({"en": 1000 / 1010, "fr": 10 / 1010})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_schedule_counts_equal_incremental_schedule(seed):
    rng = np.random.default_rng(seed)
    weights = rng.random(7) ** 3 + 1e-3
    weights /= weights.sum()
    counts = np.zeros(7, np.int64)
    total = 0
    for n in rng.integers(1, 50, size=40):
        counts += np.bincount(M.schedule_next(weights, counts, int(n)), minlength=7)
        total += int(n)
        np.testing.assert_array_equal(M.schedule_counts(weights, total), counts)
    assert np.abs(counts - total * weights).max() < 2


def test_plan_tokens_exact_split():
    mixture = M.explicit({"en": 0.5, "fr": 0.3, "yo": 0.2})
    unique = {"en": 10_000, "fr": 5_000, "yo": 100}
    plan = M.plan_tokens(mixture, 1_000_003, unique)
    assert sum(p.tokens for p in plan.values()) == 1_000_003
    assert plan["yo"].tokens == pytest.approx(200_000.6, abs=1)
    assert plan["yo"].epochs == plan["yo"].tokens / 100
    # in rows of 128 tokens, whole global batches of 8: floor(1_000_003 / 1024) = 976 steps
    rows = M.plan_tokens(mixture, 1_000_003, unique, seq_len=128, global_batch=8)
    assert sum(p.tokens for p in rows.values()) == 976 * 8 * 128
    assert all(p.tokens % 128 == 0 for p in rows.values())
    with pytest.raises(ValueError, match="yo"):
        M.plan_tokens(mixture, 1000, {"en": 1, "fr": 1})
    # a paper-size budget is planned in closed form, exactly
    big = M.plan_tokens(M.get_mixture("50v0"), 10**12 + 7, {lang: 10**9 for lang in
                                                             M.CAPACITY_MIXTURES["50v0"]})
    assert sum(p.tokens for p in big.values()) == 10**12 + 7
    assert max(p.tokens for p in big.values()) - min(p.tokens for p in big.values()) <= 1


def test_language_codes_are_checked_and_canonical():
    with pytest.raises(ValueError, match="nearest valid codes: .*qu"):
        M.monolingual("qq")
    with pytest.raises(ValueError, match="different"):
        M.bilingual("pt_br", "pt")  # an alias of the same language
    assert M.get_mixture("bilingual_iw_en").weights == {"en": 0.5, "he": 0.5}
    with pytest.raises(ValueError, match="duplicates"):
        M.uniform(["en", "fr", "en"])


def test_schedule_next_closed_form_path_matches_merge(monkeypatch):
    rng = np.random.default_rng(7)
    weights = rng.random(420) ** 4 + 1e-4  # a long tail like the paper's 420-language Unimax
    weights /= weights.sum()
    counts = M.schedule_counts(weights, 123_457)
    monkeypatch.setattr(M, "_MERGE_LIMIT", 10**9)
    merged = M.schedule_next(weights, counts, 2048)
    monkeypatch.setattr(M, "_MERGE_LIMIT", 0)
    np.testing.assert_array_equal(M.schedule_next(weights, counts, 2048), merged)
    np.testing.assert_array_equal(counts + np.bincount(merged, minlength=420),
                                  M.schedule_counts(weights, 123_457 + 2048))
