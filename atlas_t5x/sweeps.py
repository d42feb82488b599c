"""Sweep specs: the paper's experiment families expanded into one gin-configured run each.

A sweep spec (YAML) lists experiment families; each expands into runs (scale × languages/mixture)
with a token budget. Everything is checked before anything trains: scales (`models.SCALES`),
languages (`mixtures.check_language`, and presence in the corpus when running locally), mixture
names (`mixtures.get_mixture`), finetune sources, duplicate run names, unknown keys.

    name: demo
    defaults:                      # any run field below; families may override them
      seq_len: 64                  # tokens per training sequence
      batch: 8                     # sequences per step (global); "paper" = the spec's rule by N;
                                   # or {scale: batch} (smaller models take smaller batches)
      vocab: corpus_spm
      tokens: 200000               # training tokens per run (or {scale: tokens}, or use
                                   # tokens_per_param: 20 for a Chinchilla-style budget, or
                                   # {scale: ratio}, with min_tokens as a floor)
      seed: 0                      # init and data order; a non-zero seed names runs "-s<seed>"
      warmup_steps: 10
      peak_lr: 3.0e-3
      schedule: wsd                # warmup-stable-decay, decay over the last 10% [paper]
      decay_fraction: 0.2          # or another WSD decay (fraction of the steps; default 0.1)
      cooldown_at: [0.25, 0.5]     # WSD cooldown branches leaving the stable trunk at these
      cooldown_fraction: 0.2       # fractions of its steps, each decaying over 20% of its steps
      eval_every: 10               # steps between evaluations
      eval_languages: all          # every corpus language (or a list)
      eval_token_budget: 2048      # target tokens scored per language and evaluation
      gin_files: []                # extra gin files for every run
      gin_bindings: []             # extra gin bindings for every run
    families:
      - {family: monolingual, languages: [en, ru, cy], scales: [tiny0, tiny1, tiny2]}
      - {family: bilingual, pairs: [[en, de], [es, pt]], scales: [tiny1]}
      - {family: capacity, mixtures: [4v0], scales: [scale0]}    # the paper's named mixtures
      - {family: uniform, languages: [en, de, es, ru], scales: [tiny1]}   # uniform-K
      - {family: unimax, languages: all, max_epochs: 4, scales: [tiny1]}
      - {family: finetune, from: unimax-tiny1, languages: [cy], tokens: 50000}

Run names: `mono-<lang>-<scale>`, `bi-<a>_<b>-<scale>`, `cap-<mix>-<scale>`,
`uni<K>-<langs>-<scale>`, `unimax-<scale>`, `ft-<source>-to-<lang>`. A finetune starts from the
source run's final checkpoint with fresh optimiser state and a reset schedule on a new mixture;
its logs record `init` = that checkpoint folder.

Security: a sweep spec is data. Run names must be slugs (`RUN_NAME_PATTERN`: letters, digits,
`.`, `_`, `-`; no `..`), every generated path must resolve inside `--out`, every value written into
the generated gin is a quoted/checked literal, and `gin_bindings` entries must be single
`name.param = value` lines (no `import`/`include`). gin files named in `gin_files` can import and
call Python by design (as in t5x): run only specs and gin files you trust.

Steps per run: total_steps = tokens // (batch · seq_len) (the pipeline packs full rows, so the run
trains on exactly total_steps · batch · seq_len tokens, as `mixtures.plan_tokens` predicts).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from atlas_t5x import models
from atlas_t5x.data import mixtures

FAMILIES = ("monolingual", "bilingual", "capacity", "uniform", "unimax", "finetune")
FINISHED_MARKER = "FINISHED.json"


class SweepError(ValueError):
    """A sweep spec that cannot run: names the file, the family entry and the bad value."""


# Run names become folder names and gin string values: a slug, so no name can leave --out
# (`../x`, `/abs`) or break out of a generated line (newlines, quotes).
RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# A generated-gin binding from the spec: `scope/name.param = value` on one line, no import/include.
GIN_BINDING_PATTERN = re.compile(r"[A-Za-z_][\w.]*(/[A-Za-z_][\w.]*)*\.[A-Za-z_]\w*\s*=\s*\S.*")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
# Every character that ends a line for Python's str.splitlines (and so for a reader of the generated
# gin, an editor or a log viewer): LF, VT, FF, CR, the file/group/record separators, NEL (U+0085)
# and the Unicode line and paragraph separators (U+2028, U+2029).
LINE_BREAKS = frozenset("\n\x0b\x0c\r\x1c\x1d\x1e\x85\u2028\u2029")


def is_one_line(text: str) -> bool:
    """Whether `text` holds no line break of any kind (LINE_BREAKS), not just no newline."""
    return not LINE_BREAKS.intersection(text)


def check_run_name(name: Any, where: str) -> str:
    """`name` if it is a safe run name (slug, no `..`), else SweepError naming it."""
    if not isinstance(name, str) or not RUN_NAME_PATTERN.fullmatch(name) or ".." in name:
        raise SweepError(f"{where}: run name {name!r} is not allowed: use letters, digits, '.', '_' and '-' "
                         "(starting with a letter or digit, no '..', at most 200 characters)")
    return name


def inside(path: str | os.PathLike, root: str | os.PathLike, what: str) -> Path:
    """`path` if it resolves inside `root` (symlinks followed), else SweepError."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise SweepError(f"{what} {path} resolves to {resolved}, outside the sweep's output folder {base}")
    return Path(path)


def _number(value: Any, field: str, where: str, integer: bool = False, minimum: float | None = None,
            allow_none: bool = False) -> Any:
    """A run field's number (YAML may read `3e-3` as a string: numeric strings are accepted)."""
    if value is None and allow_none:
        return None
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        kind = "an integer" if integer else "a number"
        raise SweepError(f"{where}: {field!r} must be {kind}, got {value!r}")
    if integer and float(number) != int(number):
        raise SweepError(f"{where}: {field!r} must be an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise SweepError(f"{where}: {field!r} must be at least {minimum:g}, got {value!r}")
    if integer:
        return int(number)
    return float(number) if isinstance(value, str) else value  # numbers as given (ints stay ints)


def check_settings(settings: dict[str, Any], where: str) -> None:
    """Types and ranges of a run's fields (file and family entry in `where`), before expansion.
    Numbers given as strings (`3e-3`) are replaced by the numbers, in `settings` itself."""
    if isinstance(settings["batch"], Mapping):
        settings["batch"] = {scale: _number(value, f"batch[{scale}]", where, integer=True, minimum=1)
                             for scale, value in settings["batch"].items()}
    elif settings["batch"] != "paper":
        settings["batch"] = _number(settings["batch"], "batch", where, integer=True, minimum=1)
    settings["seq_len"] = _number(settings["seq_len"], "seq_len", where, integer=True, minimum=2)
    tokens = settings["tokens"]
    if isinstance(tokens, Mapping):
        settings["tokens"] = {scale: _number(value, f"tokens[{scale}]", where, minimum=1)
                              for scale, value in tokens.items()}
    else:
        settings["tokens"] = _number(tokens, "tokens", where, minimum=1, allow_none=True)
    if isinstance(settings["tokens_per_param"], Mapping):   # per scale, like batch
        settings["tokens_per_param"] = {scale: _number(value, f"tokens_per_param[{scale}]", where, minimum=0)
                                        for scale, value in settings["tokens_per_param"].items()}
    else:
        settings["tokens_per_param"] = _number(settings["tokens_per_param"], "tokens_per_param", where,
                                               minimum=0, allow_none=True)
    settings["min_tokens"] = _number(settings["min_tokens"], "min_tokens", where, minimum=0, allow_none=True)
    settings["warmup_steps"] = _number(settings["warmup_steps"], "warmup_steps", where, integer=True, minimum=0)
    settings["peak_lr"] = _number(settings["peak_lr"], "peak_lr", where)
    if settings["peak_lr"] <= 0:
        raise SweepError(f"{where}: 'peak_lr' must be positive, got {settings['peak_lr']!r}")
    for field in ("eval_every", "eval_token_budget"):
        settings[field] = _number(settings[field], field, where, integer=True, minimum=1)
    for field in ("checkpoint_every", "vocab_size"):
        settings[field] = _number(settings[field], field, where, integer=True, minimum=1, allow_none=True)
    settings["seed"] = _number(settings["seed"], "seed", where, integer=True)
    fractions = settings["unique_fraction"] or {}
    if not isinstance(fractions, Mapping):
        raise SweepError(f"{where}: 'unique_fraction' must be a mapping of language to a fraction in (0, 1], "
                         f"got {fractions!r}")
    settings["unique_fraction"] = {str(lang): _number(f, f"unique_fraction[{lang}]", where)
                                   for lang, f in fractions.items()}
    for lang, f in settings["unique_fraction"].items():
        if not 0 < f <= 1:
            raise SweepError(f"{where}: 'unique_fraction[{lang}]' must be in (0, 1], got {f!r}")
    if settings["decay_fraction"] is not None:
        settings["decay_fraction"] = _number(settings["decay_fraction"], "decay_fraction", where)
        if not 0 < settings["decay_fraction"] <= 1:
            raise SweepError(f"{where}: 'decay_fraction' must be in (0, 1], got {settings['decay_fraction']!r}")
    for field in ("vocab", "schedule"):
        if not isinstance(settings[field], str) or not settings[field] or not is_one_line(settings[field]):
            raise SweepError(f"{where}: {field!r} must be a one-line name, got {settings[field]!r}")
    overrides = settings["model_overrides"] or {}
    if not isinstance(overrides, Mapping):
        raise SweepError(f"{where}: 'model_overrides' must be a mapping of ModelConfig fields, got {overrides!r}")
    for key, value in overrides.items():
        if not isinstance(key, str) or not _IDENTIFIER.fullmatch(key):
            raise SweepError(f"{where}: model_overrides key {key!r} is not a ModelConfig field name")
        if not isinstance(value, (bool, int, float, str, type(None))) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise SweepError(f"{where}: model_overrides.{key} must be a finite number, string or boolean, "
                             f"got {value!r}")
    for field in ("gin_files", "gin_bindings"):
        values = settings[field] or []
        if isinstance(values, str) or not isinstance(values, (list, tuple)) or not all(
                isinstance(v, str) for v in values):
            raise SweepError(f"{where}: {field!r} must be a list of strings, got {values!r}")
    for binding in settings["gin_bindings"] or []:
        if binding.strip().startswith("make_schedule.decay_fraction"):
            raise SweepError(f"{where}: set the trunk's decay with the 'decay_fraction' field, not the gin "
                             f"binding {binding!r} (the sweep checks cooldown branch points against it)")
        if not is_one_line(binding) or not GIN_BINDING_PATTERN.fullmatch(binding.strip()):
            raise SweepError(f"{where}: gin_bindings entry {binding!r} is not one 'configurable.param = value' "
                             "line (import/include and multi-line text are not allowed in a sweep spec)")


# Run fields that `defaults:` and family entries may set, with their defaults.
RUN_DEFAULTS: dict[str, Any] = {
    "seq_len": 64,
    "batch": 8,
    "vocab": "corpus_spm",
    "tokens": None,
    "tokens_per_param": None,
    "min_tokens": 0,
    "warmup_steps": 10,
    "peak_lr": 3e-3,
    "schedule": "wsd",
    "eval_every": 10,
    "eval_languages": "all",
    "eval_token_budget": 2048,
    "checkpoint_every": None,  # None = only the final checkpoint (plus preemption saves)
    "vocab_size": None,  # embedding rows; None = the vocabulary's size padded (model_vocab_size)
    "seed": 0,
    "model_overrides": {},  # ModelConfig fields, e.g. {dropout_rate: 0.0}
    "gin_files": [],
    "gin_bindings": [],
    # WSD cooldown branches (atlas_t5x/cooldown.py): fractions of the run's steps at which a branch
    # leaves the stable trunk, each decaying over cooldown_fraction × its steps (None: the trunk's
    # decay_fraction) and logging one completed point ("cooldown_end").
    "cooldown_at": [],
    "cooldown_fraction": None,
    # The trunk's WSD decay, as a fraction of its steps (None: the schedule's default, 0.1).
    "decay_fraction": None,
    # {language: f in (0, 1]}: data-constrained runs train that language on a fixed first f of its
    # training split (make_train_pipeline.unique_fraction); the run name gets "-u<lang><f>".
    "unique_fraction": {},
}
FAMILY_KEYS: dict[str, set[str]] = {
    "monolingual": {"languages", "scales"},
    "bilingual": {"pairs", "scales"},
    "capacity": {"mixtures", "scales"},
    "uniform": {"languages", "scales", "name"},
    "unimax": {"languages", "scales", "max_epochs"},
    "finetune": {"from", "languages", "mixtures", "pairs"},
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep (everything `scripts/train.py` needs, via gin).

    Attributes:
      name: run name (also the model_dir's basename and the logs' `run`).
      family: the experiment family it came from.
      scale: model scale name (`models.SCALES`).
      mixture: a `mixtures.get_mixture` name: monolingual_<l>, bilingual_<a>_<b>, a capacity
        name (4v0 …), "uniform" or "unimax".
      mixture_languages: languages for "uniform"/"unimax" (None = all corpus languages).
      max_epochs: Unimax epoch cap.
      tokens: training tokens the run consumes (= total_steps · batch · seq_len).
      total_steps: optimizer steps.
      batch, seq_len: global batch (sequences) and sequence length (tokens).
      init_from: name of the run whose final checkpoint this finetune starts from, or a
        checkpoint path; None = from scratch.
      settings: the remaining run fields (vocab, lr, schedule, eval settings, gin extras).
    """

    name: str
    family: str
    scale: str
    mixture: str
    mixture_languages: tuple[str, ...] | None
    max_epochs: float | None
    tokens: int
    total_steps: int
    batch: int
    seq_len: int
    init_from: str | None
    settings: Mapping[str, Any]

    @property
    def training_languages(self) -> list[str] | None:
        """The languages this run trains on (None: all corpus languages, unimax over 'all')."""
        if self.mixture_languages is not None:
            return list(self.mixture_languages)
        if self.mixture == "unimax":
            return None
        return mixtures.get_mixture(self.mixture).languages

    def model_dir(self, out_dir: str | os.PathLike) -> Path:
        """OUT/runs/NAME; SweepError if that resolves outside OUT (a name with a path in it)."""
        return inside(Path(out_dir) / "runs" / check_run_name(self.name, "run"), out_dir, f"run {self.name!r}: folder")


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    runs: tuple[RunSpec, ...]
    source: str

    def run(self, name: str) -> RunSpec:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)


# ------------------------------------------------------------------------------------------
# Loading and expansion


def load_sweep(path: str | os.PathLike, corpus_languages: Sequence[str] | None = None) -> Sweep:
    """Reads a YAML sweep spec and expands it (see `expand_sweep`)."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SweepError(f"{path}: cannot read sweep spec: {err}") from err
    except UnicodeDecodeError as err:
        raise SweepError(f"{path}: not a YAML text file (not UTF-8: byte offset {err.start})") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML: {err}") from err
    return expand_sweep(spec, source=str(path), corpus_languages=corpus_languages)


def expand_sweep(
    spec: Mapping[str, Any], source: str = "<spec>", corpus_languages: Sequence[str] | None = None
) -> Sweep:
    """Expands a sweep spec into runs, validating every name before anything trains.

    Args:
      spec: the parsed YAML mapping (`name`, `defaults`, `families`).
      source: where the spec came from, for error messages.
      corpus_languages: if given, every training and evaluation language must be among them
        (local runs on a corpus); "all" languages resolve to this list.

    Raises:
      SweepError naming the file, the family entry and the unknown language, scale, mixture,
      key or finetune source.
    """
    if not isinstance(spec, Mapping):
        raise SweepError(f"{source}: a sweep spec must be a mapping with 'families'")
    unknown_top = sorted(set(spec) - {"name", "defaults", "families", "description"})
    if unknown_top:
        raise SweepError(f"{source}: unknown top-level key(s) {unknown_top}")
    defaults = dict(RUN_DEFAULTS)
    user_defaults = spec.get("defaults") or {}
    _check_keys(user_defaults, set(RUN_DEFAULTS), f"{source}: defaults")
    defaults.update(user_defaults)
    families = spec.get("families")
    if not families or not isinstance(families, list):
        raise SweepError(f"{source}: 'families' must be a non-empty list")

    runs: list[RunSpec] = []
    for i, entry in enumerate(families):
        where = f"{source}: families[{i}]"
        if not isinstance(entry, Mapping) or "family" not in entry:
            raise SweepError(f"{where}: each entry needs a 'family' ({', '.join(FAMILIES)})")
        family = entry["family"]
        if family not in FAMILIES:
            raise SweepError(f"{where}: unknown family {family!r}; known: {', '.join(FAMILIES)}")
        where = f"{where} ({family})"
        _check_keys(entry, FAMILY_KEYS[family] | set(RUN_DEFAULTS) | {"family"}, where)
        settings = {**defaults, **{k: v for k, v in entry.items() if k in RUN_DEFAULTS}}
        check_settings(settings, where)
        if family == "uniform" and entry.get("name") is not None:
            check_run_name(entry["name"], f"{where}: name")
        settings["eval_languages"] = _eval_languages(settings["eval_languages"], corpus_languages, where)
        if family == "finetune":
            runs.extend(_expand_finetune(entry, settings, runs, corpus_languages, where))
        else:
            runs.extend(_expand_family(family, entry, settings, corpus_languages, where))

    seen: dict[str, int] = {}
    for r in runs:
        check_run_name(r.name, source)
        if r.name in seen:
            raise SweepError(f"{source}: run name {r.name!r} appears twice (two families make the same run)")
        seen[r.name] = 1
    return Sweep(name=str(spec.get("name", Path(source).stem)), runs=tuple(runs), source=source)


def _check_keys(entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in entry:
        if key not in allowed:
            nearest = difflib.get_close_matches(str(key), sorted(allowed), n=2)
            raise SweepError(f"{where}: unknown key {key!r}" + (f"; did you mean {nearest}?" if nearest else ""))


def _language(code: Any, corpus_languages: Sequence[str] | None, where: str) -> str:
    if not isinstance(code, str):
        hint = " (YAML reads unquoted no/yes/on/off as booleans: write 'no')" if isinstance(code, bool) else ""
        raise SweepError(f"{where}: language {code!r} is not a language code{hint}")
    try:
        mixtures.check_language(code)
    except ValueError as err:
        raise SweepError(f"{where}: {err}") from None
    if corpus_languages is not None and code not in corpus_languages:
        raise SweepError(
            f"{where}: language {code!r} is not in the corpus (available: {', '.join(corpus_languages)})"
        )
    return code


def _languages(value: Any, corpus_languages, where: str, allow_all: bool) -> tuple[str, ...] | None:
    if value == "all" and allow_all:
        return tuple(corpus_languages) if corpus_languages is not None else None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise SweepError(f"{where}: 'languages' must be a list of codes" + (" or 'all'" if allow_all else ""))
    value = list(value)
    if not value:
        raise SweepError(f"{where}: 'languages' is empty")
    return tuple(_language(code, corpus_languages, where) for code in value)


def _eval_languages(value: Any, corpus_languages, where: str) -> tuple[str, ...] | None:
    if value in (None, "all"):
        return tuple(corpus_languages) if corpus_languages is not None else None
    return _languages(value, corpus_languages, f"{where}: eval_languages", allow_all=False)


_GIN_INT_FIELD = re.compile(r"^ModelConfig\.(\w+)\s*=\s*(-?\d+)\s*$")


def gin_file_scale(scale: str) -> models.ModelConfig | None:
    """A size defined only by its gin file gin/models/<scale>.gin (e.g. the demo's demo0..demo3,
    which models.SCALES does not list): its integer ModelConfig bindings, or None when no such file."""
    path = REPO_ROOT / "gin" / "models" / f"{scale}.gin"
    if not re.fullmatch(r"[A-Za-z0-9_]+", str(scale)) or not path.is_file():
        return None
    fields = {m.group(1): int(m.group(2)) for line in path.read_text(encoding="utf-8").splitlines()
              if (m := _GIN_INT_FIELD.match(line.strip()))}
    try:
        return models.ModelConfig(name=str(scale), **fields)
    except TypeError as err:
        raise SweepError(f"{path}: not a complete ModelConfig ({err})") from None


def scale_config(scale: str, **overrides) -> models.ModelConfig:
    """The ModelConfig of a scale: models.SCALES, else a gin-file-only size (`gin_file_scale`)."""
    if scale in models.SCALES:
        return models.get_model_config(scale, **overrides)
    cfg = gin_file_scale(scale)
    if cfg is None:
        return models.get_model_config(scale, **overrides)   # raises, naming the nearest sizes
    return dataclasses.replace(cfg, **overrides)


def _scales(entry: Mapping[str, Any], where: str) -> list[str]:
    scales = entry.get("scales")
    if not scales or isinstance(scales, str):
        raise SweepError(f"{where}: 'scales' must be a non-empty list of scale names")
    for scale in scales:
        if scale not in models.SCALES and gin_file_scale(scale) is None:
            nearest = difflib.get_close_matches(str(scale), list(models.SCALES), n=3, cutoff=0.0)
            raise SweepError(f"{where}: unknown scale {scale!r}; nearest valid names: {', '.join(nearest)}")
    return list(scales)


def _budget(settings: Mapping[str, Any], scale: str, name: str, where: str) -> tuple[int, int, int]:
    """(tokens, total_steps, batch) for one run."""
    batch = settings["batch"]
    if isinstance(batch, Mapping):
        if scale not in batch:
            raise SweepError(f"{where}: 'batch' gives no batch size for scale {scale!r} (has {sorted(batch)})")
        batch = batch[scale]
    try:
        cfg = scale_config(scale, **(settings["model_overrides"] or {}))
    except (ValueError, TypeError) as err:
        raise SweepError(f"{where}: model_overrides: {err}") from None
    if batch == "paper":
        from atlas_t5x import optim

        batch = optim.paper_batch_size(models.param_count(scale_config(scale)))
    seq_len = settings["seq_len"]
    if not (isinstance(batch, int) and batch > 0 and isinstance(seq_len, int) and seq_len > 1):
        raise SweepError(f"{where}: batch ({batch!r}) and seq_len ({seq_len!r}) must be positive integers")
    tokens = settings["tokens"]
    per_param = settings["tokens_per_param"]
    if isinstance(per_param, Mapping):
        if scale not in per_param:
            raise SweepError(f"{where}: 'tokens_per_param' gives no ratio for scale {scale!r} (has {sorted(per_param)})")
        per_param = per_param[scale]
    if per_param is not None:
        tokens = int(float(per_param) * models.param_count(cfg))
    elif isinstance(tokens, Mapping):
        if scale not in tokens:
            raise SweepError(f"{where}: 'tokens' gives no budget for scale {scale!r} (has {sorted(tokens)})")
        tokens = tokens[scale]
    if tokens is None:
        raise SweepError(f"{where}: run {name!r} has no token budget (set 'tokens' or 'tokens_per_param')")
    tokens = max(int(float(tokens)), int(float(settings["min_tokens"] or 0)))
    steps = tokens // (batch * seq_len)
    if steps < 1:
        raise SweepError(
            f"{where}: run {name!r}: budget {tokens} tokens is less than one step of "
            f"{batch} x {seq_len} tokens"
        )
    return steps * batch * seq_len, steps, batch


def _check_cooldown(settings: Mapping[str, Any], steps: int, batch: int, name: str, where: str) -> None:
    """Branch points inside the run's stable phase (after warmup, before the decay): the trainer's
    own rule (`cooldown.branch_steps`), checked before anything runs."""
    from atlas_t5x import cooldown, optim

    at = settings.get("cooldown_at") or []
    fraction = settings.get("cooldown_fraction")
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise SweepError(f"{where}: run {name!r}: cooldown_fraction {fraction!r} must be in (0, 1]")
    if not isinstance(at, (list, tuple)):
        raise SweepError(f"{where}: run {name!r}: cooldown_at must be a list of fractions of the run's steps")
    tokens_per_step = batch * int(settings["seq_len"])
    branch_at = []
    for f in at:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise SweepError(f"{where}: run {name!r}: cooldown_at {f!r} must be a fraction of the run's steps in (0, 1)")
        branch_at.append(int(round(f * steps)) * tokens_per_step)
    trunk_decay, branch_decay = decay_fractions(settings)
    rule = dict(tokens_per_step=tokens_per_step, total_steps=steps, warmup_steps=settings["warmup_steps"],
                decay_start=optim.decay_start_step(steps, trunk_decay), cooldown_fraction=branch_decay)
    for f, tokens in zip(at, branch_at):
        try:
            cooldown.branch_steps([tokens], **rule)
        except ValueError as err:
            raise SweepError(f"{where}: run {name!r}: cooldown_at {f!r} is not a valid branch point: {err}") from None
    try:
        cooldown.branch_steps(branch_at, **rule)
    except ValueError as err:
        raise SweepError(f"{where}: run {name!r}: cooldown_at {list(at)!r} are not valid branch points: {err}") from None


def branch_points(run: RunSpec) -> list[int]:
    """Token counts at which the run's cooldown branches leave its trunk (whole steps)."""
    tokens_per_step = run.batch * run.seq_len
    return sorted(int(round(float(f) * run.total_steps)) * tokens_per_step
                  for f in run.settings.get("cooldown_at") or [])


def decay_fractions(settings: Mapping[str, Any]) -> tuple[float, float]:
    """(trunk, branch) decay fractions as the trainer reads them: the trunk's `decay_fraction`
    (the schedule's default when unset); a branch's `cooldown_fraction`, else the trunk's."""
    from atlas_t5x import optim

    trunk = settings.get("decay_fraction") or optim.DEFAULT_DECAY_FRACTION
    return trunk, settings.get("cooldown_fraction") or trunk


def branch_steps_total(run: RunSpec) -> int:
    """Extra optimizer steps the run's cooldown branches train (for time estimates)."""
    from atlas_t5x import optim

    fraction = decay_fractions(run.settings)[1]
    return sum(optim.cooldown_steps(t // (run.batch * run.seq_len), fraction) for t in branch_points(run))


def _make_run(family, name, scale, mixture, langs, max_epochs, settings, where, init_from=None) -> RunSpec:
    tokens, steps, batch = _budget(settings, scale, name, where)
    _check_cooldown(settings, steps, batch, name, where)
    run = RunSpec(
        name=name, family=family, scale=scale, mixture=mixture,
        mixture_languages=tuple(langs) if langs is not None else None,
        max_epochs=max_epochs, tokens=tokens, total_steps=steps, batch=batch,
        seq_len=int(settings["seq_len"]), init_from=init_from,
        settings={k: v for k, v in settings.items() if k not in ("batch", "seq_len")},
    )
    # a data-constrained variant of the run keeps only its own languages' fractions and is named for them
    trained = run.training_languages
    limited = {lang: f for lang, f in sorted(settings["unique_fraction"].items())
               if f < 1 and (trained is None or lang in trained)}
    suffix = "-u" + "-".join(f"{lang}{f:g}" for lang, f in limited.items()) if limited else ""
    if int(settings.get("seed") or 0) != 0:   # another seed of the same run: init and data order
        suffix += f"-s{int(settings['seed'])}"
    return dataclasses.replace(run, name=name + suffix, settings={**run.settings, "unique_fraction": limited})


def _check_mixture(name: str, where: str, **kwargs) -> None:
    try:
        mixtures.get_mixture(name, **kwargs)
    except ValueError as err:
        raise SweepError(f"{where}: {err}") from None


def _mixture_runs(family, entry, corpus_languages, where) -> list[tuple[str, str, tuple | None, float | None]]:
    """(run-name stem, mixture name, languages or None, max_epochs) for a non-finetune family."""
    out = []
    if family == "monolingual":
        for lang in _languages(entry.get("languages"), corpus_languages, where, allow_all=True) or ():
            out.append((f"mono-{lang}", f"monolingual_{lang}", None, None))
        if entry.get("languages") == "all" and corpus_languages is None:
            raise SweepError(f"{where}: 'languages: all' needs a corpus (local run)")
    elif family == "bilingual":
        pairs = entry.get("pairs")
        if not pairs:
            raise SweepError(f"{where}: 'pairs' must be a non-empty list of [a, b]")
        for pair in pairs:
            if isinstance(pair, str) or len(pair) != 2:
                raise SweepError(f"{where}: bilingual pair {pair!r} must be two language codes")
            a, b = (_language(code, corpus_languages, where) for code in pair)
            _check_mixture(f"bilingual_{a}_{b}", where)
            out.append((f"bi-{a}_{b}", f"bilingual_{a}_{b}", None, None))
    elif family == "capacity":
        names = entry.get("mixtures")
        if not names or isinstance(names, str):
            raise SweepError(f"{where}: 'mixtures' must be a list of capacity mixture names")
        for name in names:
            if name not in mixtures.CAPACITY_MIXTURES:
                nearest = difflib.get_close_matches(str(name), list(mixtures.CAPACITY_MIXTURES), n=3)
                raise SweepError(
                    f"{where}: unknown mixture {name!r}; nearest: {nearest}; "
                    f"known: {', '.join(mixtures.CAPACITY_MIXTURES)}"
                )
            for lang in mixtures.CAPACITY_MIXTURES[name]:
                _language(lang, corpus_languages, f"{where}: mixture {name}")
            out.append((f"cap-{name}", name, None, None))
    elif family == "uniform":
        langs = _languages(entry.get("languages"), corpus_languages, where, allow_all=False)
        _check_mixture("uniform", where, languages=list(langs))
        stem = entry.get("name") or f"uni{len(langs)}-" + "_".join(sorted(langs))
        out.append((stem, "uniform", langs, None))
    elif family == "unimax":
        langs = _languages(entry.get("languages", "all"), corpus_languages, where, allow_all=True)
        max_epochs = float(entry.get("max_epochs", 4.0))
        if max_epochs <= 0:
            raise SweepError(f"{where}: max_epochs must be positive, got {max_epochs}")
        out.append(("unimax", "unimax", langs, max_epochs))
    return out


def _expand_family(family, entry, settings, corpus_languages, where) -> list[RunSpec]:
    scales = _scales(entry, where)
    runs = []
    for stem, mixture, langs, max_epochs in _mixture_runs(family, entry, corpus_languages, where):
        for scale in scales:
            runs.append(_make_run(family, f"{stem}-{scale}", scale, mixture, langs, max_epochs, settings, where))
    return runs


def _expand_finetune(entry, settings, earlier: list[RunSpec], corpus_languages, where) -> list[RunSpec]:
    source = entry.get("from")
    if not source or not isinstance(source, str):
        raise SweepError(f"{where}: 'from' must name an earlier run of this sweep or a checkpoint path")
    by_name = {r.name: r for r in earlier}
    if source in by_name:
        src = by_name[source]
        scale, label = src.scale, source
        # The finetune keeps the source's architecture and tokenisation.
        settings = {**settings, "seq_len": src.seq_len, "vocab": src.settings["vocab"],
                    "model_overrides": src.settings["model_overrides"]}
    elif os.path.sep in source or os.path.exists(source):
        raise SweepError(
            f"{where}: finetuning from an external checkpoint {source!r} is not supported in a sweep "
            "spec; name an earlier run of the sweep"
        )
    else:
        nearest = difflib.get_close_matches(source, list(by_name), n=3)
        raise SweepError(
            f"{where}: finetune source {source!r} is not an earlier run of this sweep"
            + (f"; nearest: {nearest}" if nearest else "")
        )
    targets = []
    if entry.get("languages") is not None:
        for lang in _languages(entry["languages"], corpus_languages, where, allow_all=False):
            targets.append((f"ft-{label}-to-{lang}", f"monolingual_{lang}"))
    for pair in entry.get("pairs") or ():
        a, b = (_language(code, corpus_languages, where) for code in pair)
        targets.append((f"ft-{label}-to-{a}_{b}", f"bilingual_{a}_{b}"))
    for name in entry.get("mixtures") or ():
        if name not in mixtures.CAPACITY_MIXTURES:
            raise SweepError(f"{where}: unknown mixture {name!r}; known: {', '.join(mixtures.CAPACITY_MIXTURES)}")
        targets.append((f"ft-{label}-to-{name}", name))
    if not targets:
        raise SweepError(f"{where}: a finetune needs 'languages', 'pairs' or 'mixtures' to train on")
    return [
        _make_run("finetune", name, scale, mixture, None, None, settings, where, init_from=source)
        for name, mixture in targets
    ]


# ------------------------------------------------------------------------------------------
# gin configuration and commands

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_GIN = "sweep_run.gin"


def _gin_value(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_gin_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_gin_value(k)}: {_gin_value(v)}" for k, v in value.items()) + "}"
    raise SweepError(f"cannot write {value!r} as a gin value")


def model_gin_file(run: RunSpec) -> str:
    """The model-size gin file of a run, relative to the repository root."""
    return f"gin/models/{run.scale}.gin"


def gin_files(run: RunSpec) -> list[str]:
    """gin files of a run before its generated bindings: the model size, then the spec's extras."""
    return [model_gin_file(run), *run.settings.get("gin_files", ())]


def gin_config(run: RunSpec, out_dir: str | os.PathLike) -> str:
    """The generated gin bindings of one run (parsed after `gin_files(run)`)."""
    s = run.settings
    lines = [
        f"# Generated by atlas_t5x.sweeps: run {check_run_name(run.name, 'run')} ({run.family}), "
        f"{run.tokens} tokens = {run.total_steps} steps x {run.batch} x {run.seq_len}.",
        "import atlas_t5x.data.pipeline",
        "import atlas_t5x.data.vocab",
        "import atlas_t5x.eval.callback",
        "",
        "train.model_config = @ModelConfig()",
        f"ModelConfig.name = {_gin_value(run.scale)}",
    ]
    if s.get("vocab_size"):
        lines.append(f"ModelConfig.vocab_size = {int(s['vocab_size'])}")
    else:
        lines.append("ModelConfig.vocab_size = @model_vocab_size()")
        lines.append(f"model_vocab_size.name = {_gin_value(s['vocab'])}")
    for field, value in (s.get("model_overrides") or {}).items():
        lines.append(f"ModelConfig.{field} = {_gin_value(value)}")
    lines += [
        "train.pipeline_factory = @make_train_pipeline",
        f"make_train_pipeline.mixture = {_gin_value(run.mixture)}",
        f"make_train_pipeline.vocab = {_gin_value(s['vocab'])}",
        f"make_train_pipeline.seq_len = {run.seq_len}",
        f"make_train_pipeline.global_batch = {run.batch}",
        f"make_train_pipeline.seed = {int(s['seed'])}",
    ]
    if run.mixture in ("uniform", "unimax"):
        langs = list(run.mixture_languages) if run.mixture_languages else None  # None: whole corpus
        lines.append(f"get_mixture.languages = {_gin_value(langs)}")
    if run.mixture == "unimax":
        lines.append(f"get_mixture.token_budget = {float(run.tokens)}")
        lines.append(f"get_mixture.max_epochs = {float(run.max_epochs)}")
    lines += [
        f"train.total_steps = {run.total_steps}",
        f"train.seed = {int(s['seed'])}",
        f"train.run_name = {_gin_value(run.name)}",
        f"train.checkpoint_every_steps = {int(s['checkpoint_every'] or run.total_steps)}",
        f"make_schedule.kind = {_gin_value(s['schedule'])}",
        f"make_schedule.peak_lr = {float(s['peak_lr'])}",
        f"make_schedule.warmup_steps = {int(min(s['warmup_steps'], max(run.total_steps - 1, 0)))}",
        *([f"make_schedule.decay_fraction = {float(s['decay_fraction'])}"] if s.get("decay_fraction") else []),
        *([f"make_train_pipeline.unique_fraction = {_gin_value(dict(s['unique_fraction']))}"]
          if s.get("unique_fraction") else []),
        "train.callbacks = [@PerLanguageEval()]",
        f"PerLanguageEval.every_steps = {int(s['eval_every'])}",
        f"PerLanguageEval.languages = {_gin_value(list(s['eval_languages']) if s['eval_languages'] else None)}",
        f"PerLanguageEval.token_budget = {int(s['eval_token_budget'])}",
        # Unigram counts of each target's training split, shared by all runs of the sweep.
        f"PerLanguageEval.cache_dir = {_gin_value(_out_path(out_dir, 'cache', 'unigram'))}",
    ]
    if run.init_from is not None:
        lines.append(f"train.init_from = {_gin_value(str(finetune_source_dir(run, out_dir)))}")
    if s.get("cooldown_at"):
        lines.append(f"train.cooldown_at_tokens = {_gin_value(branch_points(run))}")
        if s.get("cooldown_fraction") is not None:
            lines.append(f"train.cooldown_fraction = {float(s['cooldown_fraction'])}")
    lines += list(s.get("gin_bindings") or ())
    return "\n".join(lines) + "\n"


def _out_path(out_dir: str | os.PathLike, *parts: str) -> str:
    """OUT/parts as text; a URL (gs://...) stays a URL instead of becoming a local 'gs:' folder."""
    if "://" in str(out_dir):
        return "/".join([str(out_dir).rstrip("/"), *parts])
    return str(Path(out_dir).joinpath(*parts))


def finetune_source_dir(run: RunSpec, out_dir: str | os.PathLike) -> Path | str:
    """The model_dir of the run a finetune starts from (its newest checkpoint is loaded); a URL
    when `out_dir` is one."""
    name = check_run_name(run.init_from, f"run {run.name!r}: finetune source")
    if "://" in str(out_dir):
        return _out_path(out_dir, "runs", name)
    return inside(Path(out_dir) / "runs" / name, out_dir, f"run {run.name!r}: finetune source folder")


def write_run_gin(run: RunSpec, out_dir: str | os.PathLike) -> Path:
    """Writes MODEL_DIR/sweep_run.gin (atomically) and returns its path."""
    from atlas_t5x import logio

    path = run.model_dir(out_dir) / RUN_GIN
    logio.write_atomic(path, gin_config(run, out_dir))
    return path


def command(run: RunSpec, out_dir: str | os.PathLike, python: str = "python") -> list[str]:
    """The `scripts/train.py` command line of a run (run from the repository root)."""
    model_dir = run.model_dir(out_dir)
    return [
        python, "scripts/train.py", f"--model_dir={model_dir}",
        *(f"--gin_file={f}" for f in gin_files(run)),
        f"--gin_file={model_dir / RUN_GIN}",
    ]


def check_runnable(sweep: Sweep, local: bool = True) -> None:
    """Checks what expansion cannot: gin files exist; locally, every vocabulary loads.

    Raises SweepError naming the run and the missing file or vocabulary, before anything trains.
    """
    for run in sweep.runs:
        for f in gin_files(run):
            if not (Path(f) if os.path.isabs(f) else REPO_ROOT / f).is_file():
                raise SweepError(f"{sweep.source}: run {run.name!r}: gin file {f!r} not found")
    if local:
        from atlas_t5x.data import vocab as vocab_lib

        for name in sorted({r.settings["vocab"] for r in sweep.runs}):
            try:
                vocab_lib.get_vocabulary(name)
            except (ValueError, OSError) as err:
                raise SweepError(f"{sweep.source}: vocabulary {name!r} cannot be loaded: {err}") from None


# ------------------------------------------------------------------------------------------
# Running locally


def is_finished(run: RunSpec, out_dir: str | os.PathLike) -> bool:
    """A run is finished when the sweep wrote its marker after a complete, unpreempted train()."""
    return (run.model_dir(out_dir) / FINISHED_MARKER).is_file()


def mark_finished(run: RunSpec, out_dir: str | os.PathLike, **extra: Any) -> None:
    import json

    from atlas_t5x import logio

    record = {"run": run.name, "total_steps": run.total_steps, "tokens": run.tokens, **extra}
    logio.write_atomic(run.model_dir(out_dir) / FINISHED_MARKER, json.dumps(record, indent=1) + "\n")


def execution_order(runs: Sequence[RunSpec]) -> list[RunSpec]:
    """Runs ordered so that every finetune comes after its source (otherwise spec order)."""
    names = {r.name for r in runs}
    done: set[str] = set()
    ordered: list[RunSpec] = []
    pending = list(runs)
    while pending:
        progressed = False
        for r in list(pending):
            if r.init_from is None or r.init_from not in names or r.init_from in done:
                ordered.append(r)
                done.add(r.name)
                pending.remove(r)
                progressed = True
        if not progressed:
            raise SweepError(f"finetune sources form a cycle: {[r.name for r in pending]}")
    return ordered


def enable_compile_cache(cache_dir: str | os.PathLike) -> None:
    """Persistent XLA compilation cache, so runs of one size compile once per machine."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.fspath(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def train_in_process(run: RunSpec, out_dir: str | os.PathLike) -> Any:
    """Trains one run in this Python process through gin (the same config the command uses)."""
    import gin

    from atlas_t5x import trainer
    from atlas_t5x.eval import callback as eval_callback  # noqa: F401  (registers PerLanguageEval)

    gin_path = write_run_gin(run, out_dir)
    files = [str(REPO_ROOT / f) if not os.path.isabs(f) else f for f in gin_files(run)] + [str(gin_path)]
    gin.clear_config()
    gin.parse_config_files_and_bindings(files, [], finalize_config=False)
    # Built here (with the run's gin bindings) rather than by gin inside train(), so its
    # TensorBoard writer can be closed when the run ends.
    evaluator = eval_callback.PerLanguageEval()
    try:
        return trainer.train(model_dir=str(run.model_dir(out_dir)), callbacks=[evaluator])
    finally:
        evaluator.close()
        gin.clear_config()


def run_locally(
    sweep: Sweep,
    out_dir: str | os.PathLike,
    in_process: bool = True,
    progress: bool = True,
    python: str | None = None,
    only: Sequence[str] | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Runs the sweep's runs in sequence; returns {run: "skipped" | "finished" | "preempted"}.

    Finished runs (marker present) are skipped; unfinished ones resume from their newest
    checkpoint (train() does that for a model_dir that has one). Finetunes run after their
    sources. `in_process` trains in this process (runs share JAX's compile cache); otherwise each
    run is a `scripts/train.py` subprocess. `progress`: a tqdm bar; `report`: called with one line
    as each run starts and ends ("[2/5] run-name: training", "... finished in 12.3 s"), for logs.
    """
    import subprocess
    import sys

    from tqdm import tqdm

    runs = execution_order([r for r in sweep.runs if only is None or r.name in only])
    status: dict[str, str] = {}
    bar = tqdm(runs, desc=f"sweep {sweep.name}", unit="run", disable=not progress)
    for index, run in enumerate(bar, start=1):
        bar.set_postfix_str(run.name)
        where = f"[{index}/{len(runs)}] {run.name}"
        if is_finished(run, out_dir):
            status[run.name] = "skipped"
            if report:
                report(f"{where}: already finished, skipped")
            continue
        if run.init_from is not None and not is_finished(sweep.run(run.init_from), out_dir):
            raise SweepError(f"run {run.name!r}: its finetune source {run.init_from!r} has not finished")
        started = time.monotonic()
        if report:
            report(f"{where}: training ({run.total_steps} steps, {run.tokens:,} tokens)")
        if in_process:
            result = train_in_process(run, out_dir)
            preempted = bool(result.preempted) or int(result.step) < run.total_steps
        else:
            write_run_gin(run, out_dir)
            proc = subprocess.run(command(run, out_dir, python or sys.executable), cwd=REPO_ROOT)
            if proc.returncode != 0:
                raise SweepError(f"run {run.name!r} failed with exit code {proc.returncode}")
            from atlas_t5x import checkpoints

            steps = checkpoints.complete_steps(run.model_dir(out_dir) / checkpoints.CHECKPOINT_SUBDIR)
            preempted = not steps or max(steps) < run.total_steps
        if preempted:
            status[run.name] = "preempted"
            if report:
                report(f"{where}: preempted after {time.monotonic() - started:.1f} s")
            break
        mark_finished(run, out_dir)
        status[run.name] = "finished"
        if report:
            report(f"{where}: finished in {time.monotonic() - started:.1f} s")
    bar.close()
    return status
