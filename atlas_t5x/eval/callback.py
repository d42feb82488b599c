"""Per-language evaluation during training: the callback that produces the scaling-law curves.

`PerLanguageEval` is a train-loop callback (atlas_t5x.callbacks.Callback). Every `every_steps`
steps, and at the final step, it scores the model on the validation split of every evaluation
language — by default the training languages, any `extra_languages`, and every corpus language
when the corpus is small (the embedded one), so transfer to unseen languages is measured too;
never all 419 MADLAD-400 languages unless listed — and appends one row per (run, step, target) to
MODEL_DIR/logs/eval.jsonl (docs/log_schema.md) plus TensorBoard scalars.

Cost is bounded per language: `pipeline.make_eval_set` streams the validation split and packs its
first `token_budget` target tokens (gin `PerLanguageEval.token_budget`) into fixed batches, identical at every evaluation and for every
run with the same vocabulary and sequence length (deterministic, so curves are comparable).

Losses, per target:
- `loss`: token cross-entropy, nats/token (sum of `ctx.eval_step`'s per-example NLL over tokens).
- `bits_per_byte`: the same NLL in bits per UTF-8 byte of the scored text.
- `loss_unigram_norm`: Tao et al.'s vocabulary-insensitive loss (spec §3),
  L_u = −(1/T)·Σ log(p(w_i|w_<i) / p_uni(w_i)) = loss + (1/T)·Σ log p_uni(w_i), with `p_uni` the
  add-one smoothed token frequencies of the target's *training* split counted with the run's
  vocabulary (atlas_t5x/eval/unigram.py). [our choice] add-one (alpha=1) smoothing over all V
  vocabulary rows; counts are cached per (corpus, language, vocabulary) in the process and,
  with `cache_dir`, on disk.

Eval sets and unigram counts are cached at module level, so the many small runs of a sweep that
share one Python process build them once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

import gin
import jax
import numpy as np

from atlas_t5x import schema
from atlas_t5x.callbacks import RunInfo, StepContext
from atlas_t5x.eval import unigram
from atlas_t5x.eval.writer import EvalLogWriter


@dataclasses.dataclass
class _PreparedEvalSet:
    """An eval set with its (parameter-independent) unigram term precomputed."""

    eval_set: Any  # pipeline.EvalSet
    n_tokens: float  # Σ loss weights over the batches
    sum_unigram_lp: float  # Σ weight_i · log p_uni(target_i), nats


_UNIGRAM_CACHE: dict[tuple, np.ndarray] = {}
UNIGRAM_MAX_TOKENS = 100_000_000  # [our choice] training tokens counted for p_uni per language
MAX_IMPLICIT_EVAL_LANGUAGES = 64  # corpora up to this size are evaluated in full by default
_EVAL_SET_CACHE: dict[tuple, _PreparedEvalSet] = {}


def training_unigram_counts(
    lang: str, vocab_name: str, vocab_size: int, root: str | None = None, cache_dir: str | None = None,
    max_tokens: int | None = None,
) -> np.ndarray:
    """Token counts [vocab_size] of `lang`'s training split under vocabulary `vocab_name`: the
    whole split, or its first documents (shard and line order) up to about `max_tokens` tokens
    (default UNIGRAM_MAX_TOKENS, counted in chunks of 256 documents).

    Cached in memory per (corpus root, lang, vocabulary, V) and, if `cache_dir` is given, as
    `.npy` files there (keyed by a hash of the same).
    """
    from atlas_t5x.data import accounting, madlad, vocab as vocab_lib

    root = madlad.resolve_madlad_dir(root)
    max_tokens = UNIGRAM_MAX_TOKENS if max_tokens is None else int(max_tokens)
    key = (os.path.abspath(root), lang, vocab_name, int(vocab_size), max_tokens)
    if key in _UNIGRAM_CACHE:
        return _UNIGRAM_CACHE[key]
    cache_file = None
    if cache_dir:
        digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"unigram_{lang}_{digest}.npy"
        if cache_file.exists():
            counts = np.load(cache_file)
            if counts.shape == (vocab_size,):
                _UNIGRAM_CACHE[key] = counts
                return counts
    vocabulary = vocab_lib.get_vocabulary(vocab_name)
    # Encoded exactly as the train stream sees it (documents followed by EOS), streamed in chunks
    # of documents and stopped after max_tokens (bounded work for the largest MADLAD languages).
    counts = np.zeros(vocab_size, dtype=np.int64)
    seen, chunk = 0, []

    def add(texts):
        split = accounting.encode_documents(texts, vocabulary)
        counts[:] += unigram.count_unigrams([split.tokens], vocab_size)
        return split.num_tokens

    for text in madlad.iter_split(root, lang, "train"):
        chunk.append(text)
        if len(chunk) == 256:
            seen += add(chunk)
            chunk = []
            if seen >= max_tokens:
                break
    if chunk and seen < max_tokens:
        add(chunk)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, counts)
        os.replace(tmp, cache_file)
    _UNIGRAM_CACHE[key] = counts
    return counts


def prepare_eval_set(
    lang: str,
    vocab_name: str,
    vocab_size: int,
    seq_len: int,
    batch_size: int,
    token_budget: int,
    root: str | None = None,
    alpha: float = 1.0,
    cache_dir: str | None = None,
) -> _PreparedEvalSet:
    """The deterministic eval batches of `lang` and their unigram log-probability sum (cached)."""
    from atlas_t5x.data import madlad, pipeline, vocab as vocab_lib

    root = madlad.resolve_madlad_dir(root)
    key = (os.path.abspath(root), lang, vocab_name, vocab_size, seq_len, batch_size, token_budget, alpha)
    if key in _EVAL_SET_CACHE:
        return _EVAL_SET_CACHE[key]
    vocabulary = vocab_lib.get_vocabulary(vocab_name)
    eval_set = pipeline.make_eval_set(lang, vocabulary, seq_len, batch_size, token_budget, root=root)
    log_probs = unigram.unigram_log_probs(
        training_unigram_counts(lang, vocab_name, vocab_size, root, cache_dir), alpha=alpha
    )
    n_tokens = 0.0
    sum_lp = 0.0
    for batch in eval_set.batches:
        weights = np.asarray(batch["decoder_loss_weights"], dtype=np.float64)
        n_tokens += float(weights.sum())
        sum_lp += unigram.sum_unigram_log_prob(log_probs, batch["decoder_target_tokens"], weights)
    if n_tokens <= 0:
        raise ValueError(f"eval set for {lang!r} is empty (validation split has no tokens?)")
    prepared = _PreparedEvalSet(eval_set=eval_set, n_tokens=n_tokens, sum_unigram_lp=sum_lp)
    _EVAL_SET_CACHE[key] = prepared
    return prepared


def score(eval_step, params, prepared: _PreparedEvalSet) -> tuple[float, float]:
    """Runs `eval_step` over the eval batches → (Σ NLL in nats, Σ scored tokens)."""
    sum_nll = 0.0
    n_tokens = 0.0
    for batch in prepared.eval_set.batches:
        nll, count = eval_step(params, batch)
        sum_nll += float(np.asarray(jax.device_get(nll), dtype=np.float64).sum())
        n_tokens += float(np.asarray(jax.device_get(count), dtype=np.float64).sum())
    return sum_nll, n_tokens


def losses_from_sums(sum_nll: float, n_tokens: float, sum_unigram_lp: float, n_bytes: int) -> dict[str, float]:
    """loss (nats/token), loss_unigram_norm (nats/token), bits_per_byte from the sums of one target."""
    return {
        "loss": float(sum_nll) / float(n_tokens),
        "loss_unigram_norm": unigram.unigram_normalized_loss(sum_nll, sum_unigram_lp, n_tokens),
        "bits_per_byte": unigram.bits_per_byte(sum_nll, n_bytes),
    }


def run_fields(ctx: StepContext) -> dict[str, Any]:
    """The fields every row of this (run, step) repeats: accounting, size, schedule, run info."""
    from atlas_t5x import models

    acc = ctx.pipeline.accounting()
    info = ctx.run_info
    tokens_by_lang = {str(k): int(v) for k, v in acc.tokens_by_lang.items()}
    unique_by_lang = {str(k): int(acc.unique_by_lang[k]) for k in tokens_by_lang}
    epochs_by_lang = {str(k): float(v) for k, v in acc.epochs_by_lang.items()}
    params = int(models.param_count(ctx.model_config))
    tokens = int(acc.total)
    # a cooldown branch's rows name their trunk (held-out splits and the bootstrap group by it)
    branch = {"trunk": str(ctx.branch["trunk"]), "branch_tokens": int(ctx.branch["branch_tokens"])} \
        if getattr(ctx, "branch", None) else {}
    # the run's identity, kept under a renamed folder: one point logged under two names is one point
    identity = {"run_id": str(info.run_id)} if getattr(info, "run_id", "") else {}
    return {**branch, **identity,
        "schema_version": schema.SCHEMA_VERSION,
        "run": info.run,
        "step": int(ctx.step),
        "tokens": tokens,
        "tokens_by_lang": tokens_by_lang,
        "unique_by_lang": unique_by_lang,
        "epochs_by_lang": epochs_by_lang,
        "params": params,
        "params_nonembed": int(models.nonembed_param_count(ctx.model_config)),
        "flops": 6.0 * params * tokens,
        "mixture": {
            "name": info.mixture_name,
            "weights": {str(k): float(v) for k, v in info.mixture_weights.items()},
        },
        "lr": float(ctx.lr),
        "schedule_phase": str(ctx.schedule_phase),
        "init": info.init,
        "vocab": info.vocab,
        "vocab_size": int(info.vocab_size),
        "seq_len": int(info.seq_len),
        "batch": int(info.global_batch),
        "scale": info.scale,
    }


@gin.configurable
class PerLanguageEval:
    """Evaluates every `every_steps` steps on each evaluation language; writes eval.jsonl rows.

    Args:
      every_steps: evaluation period in optimizer steps (the trainer also calls at the end).
      languages: evaluation languages; None = the run's training languages + `extra_languages`,
        plus every corpus language when the corpus holds at most MAX_IMPLICIT_EVAL_LANGUAGES
        (the embedded corpus); never all of a MADLAD-400 root unless listed.
      extra_languages: evaluation languages added to the training ones when `languages` is None
        (e.g. the paper's 48 evaluation languages for a paper run).
      token_budget: target tokens scored per language and evaluation (upper bound; the eval
        set is the first this-many tokens of the validation split, packed).
      batch_size: eval batch rows; None = the run's global batch (divides the mesh).
      corpus_root: MADLAD-layout folder; None = $MADLAD_DIR or the embedded corpus.
      unigram_alpha: add-alpha smoothing of the unigram frequencies [our choice: 1].
      tensorboard: also write per-language TensorBoard scalars under MODEL_DIR/tb/eval.
      cache_dir: optional folder for on-disk unigram count caches.
    """

    def __init__(
        self,
        every_steps: int = 100,
        languages: Sequence[str] | None = None,
        token_budget: int = 16384,
        extra_languages: Sequence[str] = (),
        batch_size: int | None = None,
        corpus_root: str | None = None,
        unigram_alpha: float = 1.0,
        tensorboard: bool = True,
        cache_dir: str | None = None,
    ):
        if every_steps <= 0:
            raise ValueError(f"every_steps must be positive, got {every_steps}")
        if token_budget <= 0:
            raise ValueError(f"token_budget must be positive, got {token_budget}")
        self.every_steps = int(every_steps)
        self.languages = list(languages) if languages is not None else None
        self.extra_languages = list(extra_languages)
        self.token_budget = int(token_budget)
        self.batch_size = batch_size
        self.corpus_root = corpus_root
        self.unigram_alpha = unigram_alpha
        self.tensorboard = tensorboard
        self.cache_dir = cache_dir
        self._writer: EvalLogWriter | None = None
        self._writer_dir: str | None = None

    # the trainer calls it at the end of WSD cooldown branches too (atlas_t5x/cooldown.py)
    evaluates_branches = True

    def eval_languages(self, training_languages: Sequence[str] = ()) -> list[str]:
        """The configured languages, or the default set (see the class docstring), checked
        against the corpus."""
        import logging

        from atlas_t5x.data import madlad

        root = madlad.resolve_madlad_dir(self.corpus_root)
        available = madlad.available_languages(root)
        if self.languages is not None:
            wanted = list(self.languages)
        else:
            wanted = list(dict.fromkeys([*training_languages, *self.extra_languages]))
            if len(available) <= MAX_IMPLICIT_EVAL_LANGUAGES:
                wanted = list(dict.fromkeys([*available, *wanted]))
            elif not getattr(self, "_logged_default", False):
                logging.warning("PerLanguageEval: corpus %s holds %d languages; evaluating the %d training "
                                "+ extra languages only (bind PerLanguageEval.extra_languages or "
                                ".languages for more)", root, len(available), len(wanted))
                self._logged_default = True
        unknown = [lang for lang in wanted if lang not in available]
        if unknown:
            shown = ", ".join(available) if len(available) <= 50 else f"{len(available)} languages"
            raise ValueError(f"evaluation language(s) {unknown} not in corpus {root} (available: {shown})")
        return wanted

    def _get_writer(self, model_dir: str) -> EvalLogWriter:
        if self._writer is None or self._writer_dir != model_dir:
            if self._writer is not None:
                self._writer.close()
            # Reads the keys already logged: a restarted run skips what it has written.
            self._writer = EvalLogWriter(
                model_dir, tensorboard=self.tensorboard, is_writer=jax.process_index() == 0
            )
            self._writer_dir = model_dir
        return self._writer

    def check_inputs(self, info: RunInfo, model_config: Any) -> None:
        """Builds every evaluation language's eval set and unigram counts now (the trainer calls
        this before step 0), so a missing or corrupt split of an eval-only language stops the run
        before it trains rather than at its first evaluation. The sets are cached for the run."""
        batch_size = int(self.batch_size or info.global_batch)
        for target in self.eval_languages(list(info.mixture_weights)):
            prepare_eval_set(target, info.vocab, int(model_config.vocab_size), int(info.seq_len), batch_size,
                             self.token_budget, root=self.corpus_root, alpha=self.unigram_alpha,
                             cache_dir=self.cache_dir)

    def __call__(self, ctx: StepContext) -> None:
        info = ctx.run_info
        writer = self._get_writer(info.model_dir)
        languages = self.eval_languages(list(info.mixture_weights))
        missing = np.array([not writer.has(info.run, ctx.step, t) for t in languages])
        if jax.process_count() > 1:
            # eval_step is a collective: every process must score the same languages, and only
            # process 0 has read the log.
            from jax.experimental import multihost_utils

            missing = np.asarray(multihost_utils.broadcast_one_to_all(missing))
        todo = [t for t, m in zip(languages, missing) if m]
        if not todo:
            return
        shared = run_fields(ctx)
        batch_size = int(self.batch_size or info.global_batch)
        for target in todo:
            start = time.perf_counter()
            prepared = prepare_eval_set(
                target, info.vocab, int(ctx.model_config.vocab_size), int(info.seq_len), batch_size,
                self.token_budget, root=self.corpus_root, alpha=self.unigram_alpha, cache_dir=self.cache_dir,
            )
            sum_nll, n_tokens = score(ctx.eval_step, ctx.state.params, prepared)
            if abs(n_tokens - prepared.n_tokens) > 0.5:
                raise RuntimeError(
                    f"eval_step scored {n_tokens} tokens of {target!r}, the eval set has {prepared.n_tokens}"
                )
            row = dict(shared)
            row.update(
                target=target,
                eval_tokens=int(round(n_tokens)),
                eval_tokens_budget=self.token_budget,
                eval_wallclock_s=time.perf_counter() - start,
                **losses_from_sums(sum_nll, n_tokens, prepared.sum_unigram_lp, prepared.eval_set.n_bytes),
            )
            writer.write([row])  # one language at a time: a crash keeps the finished ones

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
