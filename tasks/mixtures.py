"""seqio Mixtures over the `madlad_{lang}` Tasks (tasks/madlad.py), named `madlad_{mixture}`.

  * capacity mixtures of the paper: madlad_4v0 ... madlad_50v0 (uniform rates)
  * bilingual 50/50 pairs:          madlad_bilingual_{a}_{b}  (a < b)
  * monolingual:                    madlad_monolingual_{lang}

The weights of `atlas_t5x.data.mixtures` are TOKEN shares, but a seqio Mixture samples whole
examples (documents) at its rates. Each Task's rate is therefore a callable that seqio evaluates
lazily: weight / mean tokens per document, the mean taken over the first SAMPLE_DOCUMENTS
documents of the Task's train split with its vocabulary (EOS included) [our choice: an estimate
from a sample, so large MADLAD languages are not read in full]. Sampled documents then carry
tokens in the mixture's proportions (before any trimming to a sequence length).

A mixture is registered only when every one of its Tasks is registered (with the embedded corpus,
e.g. 4v0, 4v1 and 6v0 but not 12v0); `register_mixtures` can be called again after registering
more Tasks. The repository's train stream (`atlas_t5x.data.pipeline.make_train_pipeline`) takes its Mixture
from here (`seqio_mixture`) and reads the Tasks' streaming sources, realising the token shares
exactly with a deterministic row schedule; these registrations make the mixtures available to any
seqio-based consumer too (`seqio.get_mixture_or_task("madlad_4v0").get_dataset(...)`).
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import gin
import numpy as np
import seqio

from atlas_t5x.data import mixtures as mixtures_lib
from .madlad import task_name

MIXTURE_PREFIX = "madlad_"
SAMPLE_DOCUMENTS = 1000  # documents per Task for the mean-tokens-per-document estimate

@functools.lru_cache(maxsize=None)  # seqio.Task hashes by identity: once per registered Task object
def mean_document_tokens(task: seqio.Task, max_documents: int = SAMPLE_DOCUMENTS) -> float:
    """Mean tokens per example of a Task's train split (first `max_documents`, untrimmed, EOS
    included), computed once per registered Task object."""
    ds = task.get_dataset(sequence_length=None, split="train", shuffle=False, use_cached=False)
    lengths = [len(ex["targets"]) for ex in ds.take(max_documents).as_numpy_iterator()]
    if not lengths or not sum(lengths):
        raise ValueError(f"seqio Task {task.name!r}: its train split yields no tokens")
    return float(np.mean(lengths))


def token_share_rate(token_share: float, task: seqio.Task) -> float:
    """seqio example rate giving `token_share` of the tokens: share / mean tokens per document."""
    return token_share / mean_document_tokens(task)


def mixture_name(mixture: mixtures_lib.Mixture) -> str:
    """The seqio name of a mixture, e.g. "madlad_bilingual_es_pt"."""
    return f"{MIXTURE_PREFIX}{mixture.name}"


def register_mixture(mixture: mixtures_lib.Mixture) -> str:
    """Registers (or re-registers) one mixture over madlad_{lang} Tasks; returns its name.

    Task rates are `token_share_rate` callables (see the module docstring).

    Raises ValueError naming the languages whose Task is not registered.
    """
    registered = set(seqio.TaskRegistry.names())
    missing = [lang for lang in mixture.languages if task_name(lang) not in registered]
    if missing:
        raise ValueError(f"mixture {mixture.name!r}: no seqio Task registered for {missing} "
                         f"(register them with atlas_t5x_tasks.madlad.register_madlad_task)")
    name = mixture_name(mixture)
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, [(task_name(lang), functools.partial(token_share_rate, share))
                                     for lang, share in mixture.weights.items()])
    return name


def seqio_mixture(mixture: mixtures_lib.Mixture, tasks: Mapping[str, seqio.Task]) -> seqio.Mixture:
    """An unregistered seqio Mixture of `mixture` over the given Tasks (one per language), with
    the same `token_share_rate` rates as the registered mixtures. Leaves the registries alone."""
    missing = [lang for lang in mixture.languages if lang not in tasks]
    if missing:
        raise ValueError(f"mixture {mixture.name!r}: no seqio Task given for {missing}")
    return seqio.Mixture(mixture_name(mixture), [(tasks[lang], functools.partial(token_share_rate, share))
                                                 for lang, share in mixture.weights.items()])


@gin.configurable
def register_mixtures(languages: Sequence[str] | None = None) -> list[str]:
    """Registers every capacity, bilingual and monolingual mixture whose Tasks all exist.

    Args:
      languages: languages for the bilingual pairs and monolingual mixtures (default: every
        language with a registered madlad_{lang} Task).
    """
    registered = set(seqio.TaskRegistry.names())
    if languages is None:
        languages = sorted(name[len("madlad_"):] for name in registered
                           if name.startswith("madlad_") and name not in seqio.MixtureRegistry.names())
    languages = [lang for lang in languages if task_name(lang) in registered]
    candidates = [mixtures_lib.capacity(name) for name in mixtures_lib.CAPACITY_MIXTURES]
    candidates += mixtures_lib.bilingual_pairs(languages)
    candidates += [mixtures_lib.monolingual(lang) for lang in languages]
    return [register_mixture(m) for m in candidates
            if all(task_name(lang) in registered for lang in m.languages)]


MADLAD_MIXTURES: list[str] = register_mixtures()
