"""Mixture sampling rates over languages and token planning (pure numpy; no TensorFlow).

A `Mixture` is a name plus normalised sampling rates per language. Rates are *token* shares: the
train pipeline (`atlas_t5x/data/pipeline.py`) fills every row of `seq_len` tokens from one language
and picks the language of each row with the deterministic schedule defined here
(`schedule_counts` / `schedule_next`), so the tokens a language contributes are known exactly
before training (`plan_tokens`).

Builders:
  explicit(weights)                  user-given rates (normalised; zero-weight languages dropped)
  temperature(sizes, T)              p_l ∝ n_l^(1/T)          (mT5 / MADLAD style)
  unimax(U, budget, max_epochs)      Chung et al. 2023: as uniform as possible, ≤ max_epochs per language
  uniform(langs), capacity("12v0")   uniform over K languages; the paper's capacity mixtures (spec §4)
  bilingual(a, b), monolingual(l)    50/50 pairs and single languages

Row schedule [our choice]: a divisor-method (Sainte-Laguë / Webster) order. The j-th row of
language l (j = 0, 1, ...) is due at time (j + 0.5) / w_l; rows are emitted in order of due time,
ties broken by language index. After R rows every language has round(R * w_l) rows up to a small
bounded deviation, the counts never decrease as R grows (house monotone), and the counts after any
R are computable in closed form, which is what makes `plan_tokens` exact.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from typing import Callable, Mapping, Sequence

import gin
import numpy as np

from atlas_t5x import mixture_weights
from atlas_t5x.languages import resolve_language

# The paper's capacity mixtures (spec §4, Table B.1): uniform over the listed languages.
CAPACITY_MIXTURES: dict[str, tuple[str, ...]] = {
    "4v0": ("de", "es", "fr", "pt"),
    "4v1": ("de", "en", "es", "fr"),
    "4v2": ("hi", "ja", "vi", "zh"),
    "4v3": ("en", "hi", "pt", "ru"),
    "6v0": ("de", "en", "es", "fr", "pt", "ru"),
    "8v0": ("de", "en", "es", "fr", "pt", "ru", "vi", "zh"),
    "8v1": ("de", "en", "fr", "hi", "ja", "ru", "vi", "zh"),
    "12v0": ("de", "en", "es", "fr", "hi", "it", "ja", "pl", "pt", "ru", "vi", "zh"),
    "16v0": ("de", "en", "es", "fr", "hi", "id", "it", "ja", "nl", "pl", "pt", "ru", "sv", "tr",
             "vi", "zh"),
    "24v0": ("cs", "da", "de", "en", "es", "fa", "fi", "fr", "hi", "hu", "id", "it", "ja", "nl",
             "pl", "pt", "ro", "ru", "sv", "th", "tr", "uk", "vi", "zh"),
    "32v0": ("ar", "bg", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "hi", "hu",
             "id", "it", "ja", "ko", "lt", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sv", "th",
             "tr", "uk", "vi", "zh"),
    "50v0": ("af", "ar", "ba", "bm", "bn", "ca", "ckb", "cy", "de", "ee", "el", "en", "es", "fa",
             "fil", "fr", "gn", "gu", "ha", "he", "hi", "hr", "id", "it", "ja", "jv", "kk", "ko",
             "mr", "ms", "my", "nl", "no", "om", "pl", "ps", "pt", "ro", "ru", "sm", "sv", "sw",
             "te", "th", "tr", "uk", "ur", "vi", "yo", "zh"),
}

def check_language(code: str) -> str:
    """The canonical MADLAD-400 code of `code` (aliases resolved).

    Raises ValueError naming the nearest valid codes for an unknown code.
    """
    if not isinstance(code, str):
        raise ValueError(f"language code must be a string, got {code!r}")
    return resolve_language(code).code


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Sampling rates (token shares) per language; weights are positive and sum to 1.

    Languages are kept in sorted code order; that order is the language index used by the
    pipeline (`decoder_lang_ids`) and the schedule's tie-break.
    """

    name: str
    weights: Mapping[str, float]

    def __post_init__(self):
        normalised = _normalise(self.weights, self.name)
        object.__setattr__(self, "weights", normalised)

    @property
    def languages(self) -> list[str]:
        return list(self.weights)

    def weight_array(self) -> np.ndarray:
        """Weights in `languages` order, float64."""
        return np.array([self.weights[lang] for lang in self.languages], dtype=np.float64)

    def to_json(self) -> dict:
        """{"name": ..., "weights": {...}}, as written into the exported logs."""
        return {"name": self.name, "weights": dict(self.weights)}


def _normalise(weights: Mapping[str, float], name: str) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"mixture {name!r}: weights must be a non-empty mapping lang -> weight")
    weights = {check_language(lang): w for lang, w in weights.items()}
    bad = {}
    for lang, w in weights.items():
        try:
            value = float(w)
        except (TypeError, ValueError):
            bad[lang] = w
            continue
        if not math.isfinite(value) or value < 0:
            bad[lang] = w
    if bad:
        raise ValueError(f"mixture {name!r}: weights must be finite and >= 0; bad weights: {bad}")
    total = math.fsum(float(w) for w in weights.values())
    if total <= 0:
        raise ValueError(f"mixture {name!r}: weights sum to {total}, need a positive sum: "
                         f"{dict(weights)}")
    return {lang: float(weights[lang]) / total for lang in sorted(weights) if float(weights[lang]) > 0}


# ----------------------------------------------------------------------------- builders


def explicit(weights: Mapping[str, float], name: str = "explicit") -> Mixture:
    """User-given rates; normalised to sum 1. Languages with weight 0 are dropped."""
    return Mixture(name, weights)


def temperature(sizes: Mapping[str, float], temperature: float, name: str | None = None) -> Mixture:
    """Temperature sampling: p_l ∝ n_l^(1/T) (equivalently (n_l/Σn)^(1/T) renormalised).

    Args:
      sizes: n_l per language (tokens, or any size measure), > 0.
      temperature: T > 0; T = 1 is proportional to size, T → ∞ tends to uniform.
    """
    rates = mixture_weights.temperature_rates(sizes, temperature)
    return Mixture(name or f"temperature_T{temperature:g}", rates)


def unimax(unique_tokens_by_lang: Mapping[str, int], token_budget: float, max_epochs: float,
           name: str = "unimax") -> Mixture:
    """Unimax (Chung et al. 2023): a token budget spread as uniformly as possible over languages.

    Languages are visited in order of increasing U (ties by code). Each gets the remaining budget
    divided by the number of languages still unvisited, capped at max_epochs * U_l; what a capped
    language cannot take stays in the remaining budget and so is redistributed over the larger
    languages. Rates are the allocations divided by their sum. A budget above the sum of all caps
    (max_epochs * ΣU) is a ValueError: a run that trains on the whole budget would then take every
    language past the cap, whatever the rates [our choice: refuse rather than silently exceed it;
    `unimax_allocation` still returns the capped allocations for planning].

    Args:
      unique_tokens_by_lang: U_l, unique tokens of each language's training split (> 0).
      token_budget: total training tokens (> 0).
      max_epochs: the cap on epochs over each language's unique data (> 0).
    """
    if not token_budget > 0:
        raise ValueError(f"unimax: token_budget must be > 0, got {token_budget!r}")
    if not max_epochs > 0:
        raise ValueError(f"unimax: max_epochs must be > 0, got {max_epochs!r}")
    allocation = unimax_allocation(unique_tokens_by_lang, token_budget, max_epochs)
    capacity = max_epochs * math.fsum(float(u) for u in unique_tokens_by_lang.values())
    if token_budget > capacity * (1 + 1e-9):
        raise ValueError(
            f"unimax: token_budget {token_budget:,.0f} tokens exceeds max_epochs x total unique "
            f"tokens = {max_epochs:g} x {capacity / max_epochs:,.0f} = {capacity:,.0f}, so every "
            f"language would pass the {max_epochs:g}-epoch cap; lower the budget or raise max_epochs")
    return Mixture(name, allocation)


def unimax_allocation(unique_tokens_by_lang: Mapping[str, int], token_budget: float,
                      max_epochs: float) -> dict[str, float]:
    """The Unimax token allocation per language (tokens, before normalisation); see `unimax`."""
    return mixture_weights.unimax_allocation(unique_tokens_by_lang, token_budget, max_epochs)


def uniform(langs: Sequence[str], name: str | None = None) -> Mixture:
    """Equal rates over `langs` (no duplicates)."""
    langs = [check_language(lang) for lang in langs]
    duplicates = sorted({lang for lang in langs if langs.count(lang) > 1})
    if not langs or duplicates:
        raise ValueError(f"uniform mixture needs distinct languages; got {langs} "
                         f"(duplicates: {duplicates})")
    return Mixture(name or f"uniform{len(langs)}_" + "_".join(sorted(langs)),
                   {lang: 1.0 for lang in langs})


def capacity(name: str) -> Mixture:
    """One of the paper's capacity mixtures ("4v0" ... "50v0"), uniform over its languages."""
    if name not in CAPACITY_MIXTURES:
        raise ValueError(f"unknown capacity mixture {name!r}; known: {sorted(CAPACITY_MIXTURES)}")
    return uniform(CAPACITY_MIXTURES[name], name=name)


def bilingual(a: str, b: str) -> Mixture:
    """50/50 mixture of two different languages, named bilingual_{a}_{b}."""
    a, b = check_language(a), check_language(b)
    if a == b:
        raise ValueError(f"bilingual mixture needs two different languages, got {a!r} twice")
    return Mixture(f"bilingual_{a}_{b}", {a: 0.5, b: 0.5})


def monolingual(lang: str) -> Mixture:
    """A single language, named monolingual_{lang}."""
    lang = check_language(lang)
    return Mixture(f"monolingual_{lang}", {lang: 1.0})


# ----------------------------------------------------------------------------- gin entry


_SIZED_KINDS = ("unimax", "temperature")
_NAMED_KINDS = ("explicit", "uniform", *_SIZED_KINDS, "bilingual_<a>_<b>", "monolingual_<lang>",
                *CAPACITY_MIXTURES)


@gin.configurable
def get_mixture(
    name_or_spec: str | Mapping[str, float] | Mixture = gin.REQUIRED,
    *,
    languages: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    unique_by_lang: Mapping[str, int] | None = None,
    size_fn: Callable[[Sequence[str] | None], Mapping[str, int]] | None = None,
    token_budget: float | None = None,
    max_epochs: float = 4.0,
    temperature_value: float = 3.33,
) -> Mixture:
    """Builds a mixture from a name, a weights mapping or a Mixture (the gin seam).

    Names: "4v0" ... "50v0" (capacity), "bilingual_es_pt", "monolingual_en", "uniform" (needs
    `languages`), "explicit" (needs `weights`), "unimax" (needs `token_budget`; max_epochs) and
    "temperature" (temperature_value = T). The last two need per-language sizes: `unique_by_lang`
    if given (restricted to `languages` when both are set), else `size_fn(languages)`, which the
    train pipeline supplies (it counts U with the run's vocabulary; languages=None means every
    language under the MADLAD root).
    """
    if isinstance(name_or_spec, Mixture):
        return name_or_spec
    if isinstance(name_or_spec, Mapping):
        return explicit(name_or_spec)
    if not isinstance(name_or_spec, str):
        raise ValueError(f"mixture must be a name, a weights mapping or a Mixture, "
                         f"got {name_or_spec!r}")
    name = name_or_spec
    if name in CAPACITY_MIXTURES:
        return capacity(name)
    if name == "explicit":
        if not weights:
            raise ValueError("mixture 'explicit' needs weights={lang: weight}")
        return explicit(weights)
    if name == "uniform":
        if not languages:
            raise ValueError("mixture 'uniform' needs languages=[...]")
        return uniform(languages)
    if name.startswith("monolingual_"):
        return monolingual(check_language(name[len("monolingual_"):]))
    if name.startswith("bilingual_"):
        return bilingual(*_split_pair(name[len("bilingual_"):], name))
    if name in _SIZED_KINDS:
        sizes = _sizes_for(name, languages, unique_by_lang, size_fn)
        if name == "temperature":
            return temperature(sizes, temperature_value)
        if token_budget is None:
            raise ValueError("mixture 'unimax' needs token_budget (tokens)")
        return unimax(sizes, token_budget, max_epochs)
    nearest = difflib.get_close_matches(name, list(_NAMED_KINDS), n=3, cutoff=0.5)
    raise ValueError(f"unknown mixture {name!r}; nearest: {nearest}; known kinds: {list(_NAMED_KINDS)}")


def _split_pair(pair: str, name: str) -> tuple[str, str]:
    """Splits "es_pt" (or "hi_Latn_en") at the one underscore leaving two valid codes."""
    parts = pair.split("_")
    candidates = []
    for cut in range(1, len(parts)):
        a, b = "_".join(parts[:cut]), "_".join(parts[cut:])
        try:
            candidates.append((check_language(a), check_language(b)))
        except ValueError:
            continue
    if len(candidates) != 1:
        raise ValueError(f"mixture {name!r}: expected bilingual_<lang>_<lang> with two valid "
                         f"language codes, found {len(candidates)} readings")
    return candidates[0]


def _sizes_for(kind, languages, unique_by_lang, size_fn) -> dict[str, int]:
    if unique_by_lang is not None:
        sizes = dict(unique_by_lang)
        if languages is not None:
            missing = sorted(set(languages) - set(sizes))
            if missing:
                raise ValueError(f"mixture {kind!r}: no unique-token count for {missing}")
            sizes = {lang: sizes[lang] for lang in languages}
        return sizes
    if size_fn is None:
        raise ValueError(f"mixture {kind!r} needs per-language sizes (unique_by_lang or size_fn)")
    return dict(size_fn(list(languages) if languages is not None else None))


# ----------------------------------------------------------------------------- row schedule


def _due_times(slot: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Due time of the slot-th row (0-based) of each language: (slot + 0.5) / w. float64."""
    return (slot.astype(np.float64) + 0.5) / weights


def _rows_due_by(t: float, weights: np.ndarray) -> np.ndarray:
    """Per language, the number of rows with due time <= t (exactly, in float64)."""
    n = np.maximum(np.floor(t * weights + 0.5), 0).astype(np.int64)
    while True:  # the estimate is off by at most a row or two from rounding; correct it
        over = (n > 0) & (_due_times(n - 1, weights) > t)
        under = _due_times(n, weights) <= t
        if not over.any() and not under.any():
            return n
        n = n - over + under


def schedule_counts(weights: Sequence[float] | np.ndarray, n_rows: int) -> np.ndarray:
    """Rows per language after the first `n_rows` rows of the schedule (int64, sums to n_rows).

    `weights` are positive, in language-index order. Closed form (bisection on the due time), so
    it is cheap for any n_rows; identical to running `schedule_next` from zero.
    """
    w = np.asarray(weights, dtype=np.float64)
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if n_rows == 0:
        return np.zeros(len(w), np.int64)
    lo, hi = 0.0, (n_rows + 0.5) / w.min()  # fewer than n_rows are due by lo, at least by hi
    while True:
        mid = lo + (hi - lo) / 2
        if not lo < mid < hi:
            break
        if _rows_due_by(mid, w).sum() >= n_rows:
            hi = mid
        else:
            lo = mid
    counts = _rows_due_by(lo, w)
    due_at_hi = np.flatnonzero(_rows_due_by(hi, w) > counts)  # due exactly at hi; index order
    counts[due_at_hi[: n_rows - counts.sum()]] += 1
    return counts


_MERGE_LIMIT = 1 << 16  # above this many (language, row) candidates, use the closed form


def schedule_next(weights: Sequence[float] | np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """Language indices of the next `n` rows, given the schedule's rows per language so far.

    `counts` must be the schedule's own state (schedule_counts(weights, counts.sum())), as the
    pipeline keeps it. Small cases merge the next n due times of every language; large ones
    (many languages x a large batch) take the per-language increments from `schedule_counts` and
    sort only those n rows. Both give the same order.
    """
    w = np.asarray(weights, dtype=np.float64)
    counts = np.asarray(counts, np.int64)
    if len(w) * n <= _MERGE_LIMIT:
        slots = counts[:, None] + np.arange(n, dtype=np.int64)[None, :]
        times = _due_times(slots, w[:, None]).ravel()
        langs = np.repeat(np.arange(len(w), dtype=np.int32), n)
        return langs[np.lexsort((langs, times))[:n]]
    added = schedule_counts(w, int(counts.sum()) + n) - counts
    langs = np.repeat(np.arange(len(w), dtype=np.int32), added)
    first = np.cumsum(added) - added
    slots = np.repeat(counts - first, added) + np.arange(n, dtype=np.int64)
    return langs[np.lexsort((langs, _due_times(slots, w[langs])))]


# ----------------------------------------------------------------------------- planning


@dataclasses.dataclass(frozen=True)
class PlannedLanguage:
    """What one language contributes to a run: tokens (int) and epochs over its unique data."""

    tokens: int
    epochs: float


def plan_tokens(mixture: Mixture, token_budget: int, unique_by_lang: Mapping[str, int],
                seq_len: int = 1, global_batch: int = 1) -> dict[str, PlannedLanguage]:
    """Tokens each language will contribute to a run, exactly as the train pipeline delivers them.

    The pipeline fills whole rows of `seq_len` tokens (no padding) and steps consume whole global
    batches, so the run trains on floor(token_budget / (seq_len * global_batch)) steps; the rows
    are split over languages by the row schedule. With the defaults (seq_len = global_batch = 1)
    the split is per token and sums to token_budget exactly.

    Returns {lang: PlannedLanguage(tokens, epochs = tokens / U_lang)} in mixture language order.
    """
    for arg, value in (("token_budget", token_budget), ("seq_len", seq_len),
                       ("global_batch", global_batch)):
        if not (isinstance(value, (int, np.integer)) and value >= (0 if arg == "token_budget" else 1)):
            raise ValueError(f"plan_tokens: {arg} must be a non-negative integer "
                             f"(positive for sizes), got {value!r}")
    missing = [lang for lang in mixture.languages if not unique_by_lang.get(lang, 0) > 0]
    if missing:
        raise ValueError(f"plan_tokens: mixture {mixture.name!r} has no positive unique-token count "
                         f"for {missing}")
    steps = int(token_budget) // (seq_len * global_batch)
    rows = schedule_counts(mixture.weight_array(), steps * global_batch)
    return {lang: PlannedLanguage(int(r) * seq_len, int(r) * seq_len / unique_by_lang[lang])
            for lang, r in zip(mixture.languages, rows)}


def bilingual_pairs(langs: Sequence[str]) -> list[Mixture]:
    """Every unordered pair of `langs` as a 50/50 mixture (codes in sorted order)."""
    return [bilingual(a, b) for a, b in itertools.combinations(sorted(langs), 2)]
