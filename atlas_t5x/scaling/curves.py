"""Loss curves of runs in exported logs, run summaries (mixture, size, init), and log-token interpolation.

Shared by the analyses (transfer, curse, crossover, live forecast). Rows are read by
`atlas_t5x.logs.read_rows`; they follow the
exported-log schema (docs/log_schema.md): one row per (run, step, target). A *curve* is one run's
loss on one target as a function of a token count (total tokens, or one language's tokens).

Nothing here imports the trainer, Flax or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

# Two mixture rates closer than this are equal (uniform-K and 50/50 bilingual detection).
RATE_TOL = 1e-3


class CurveError(ValueError):
    """Rows that cannot form the curves an analysis needs (names the run/target/field)."""


def _field(row: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in row:
        raise CurveError(f"{where}: row of run {row.get('run')!r} has no field {name!r}")
    return row[name]


# ---------------------------------------------------------------------------------------------
# Runs


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What the analyses need to know about one run (constant over its rows)."""

    run: str
    weights: dict[str, float]   # mixture sampling rates (> 0 only)
    params: int                 # N
    init: str                   # "scratch" or a checkpoint path
    scale: str
    unique_by_lang: dict[str, int]
    trunk: str = ""             # a WSD cooldown branch: the run it branched from ("" otherwise)

    @property
    def is_branch(self) -> bool:
        """A cooldown branch: part of its trunk's curve (`curve`), not a run of its own."""
        return bool(self.trunk)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self.weights))

    @property
    def is_scratch(self) -> bool:
        return self.init == "scratch"

    @property
    def is_monolingual(self) -> bool:
        return len(self.weights) == 1

    @property
    def is_uniform(self) -> bool:
        rates = list(self.weights.values())
        return len(rates) >= 1 and max(rates) - min(rates) <= RATE_TOL

    @property
    def is_bilingual_5050(self) -> bool:
        return len(self.weights) == 2 and self.is_uniform


def run_summaries(rows: Iterable[Mapping[str, Any]]) -> dict[str, RunSummary]:
    """RunSummary per run name, taken from each run's last row (by step)."""
    last: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        run = _field(row, "run", "rows")
        if run not in last or int(row.get("step", 0)) >= int(last[run].get("step", 0)):
            last[run] = row
    infos = {}
    for run, row in last.items():
        mixture = row.get("mixture") or {}
        weights = {k: float(v) for k, v in dict(mixture.get("weights", {})).items() if float(v) > 0}
        if not weights:  # fall back to the languages trained on
            weights = {k: 1.0 for k, v in dict(row.get("tokens_by_lang", {})).items() if v}
        total = sum(weights.values()) or 1.0
        infos[run] = RunSummary(
            run=run,
            weights={k: v / total for k, v in weights.items()},
            params=int(_field(row, "params", f"run {run!r}")),
            init=str(row.get("init", "scratch")),
            scale=str(row.get("scale", "")),
            unique_by_lang={k: int(v) for k, v in dict(row.get("unique_by_lang", {})).items()},
            trunk=str(row.get("trunk") or ""),
        )
    return infos


# ---------------------------------------------------------------------------------------------
# Curves


@dataclasses.dataclass(frozen=True)
class Curve:
    """Loss on `target` of `run` against a token count `x` (strictly increasing, > 0)."""

    run: str
    target: str
    x: np.ndarray       # tokens
    loss: np.ndarray    # nats/token (or whatever loss field was chosen)
    x_name: str

    def __post_init__(self):
        if self.x.size == 0:
            raise CurveError(f"run {self.run!r}, target {self.target!r}: no points with {self.x_name} > 0")

    @property
    def x_range(self) -> tuple[float, float]:
        return float(self.x[0]), float(self.x[-1])

    def loss_at(self, x: float) -> float:
        """Loss at `x` tokens by linear interpolation in log-tokens; NaN outside the measured range."""
        return float(interp_log(self.x, self.loss, x))


# Schedule phases a curve (one run's trajectory) keeps by default: everything after warmup,
# including the run's final evaluation and, for a cooldown-branch run, its end [our choice].
DEFAULT_PHASES = ("stable", "decay", "cooldown_end", "final")


def curve(rows: Iterable[Mapping[str, Any]], run: str, target: str, x: str = "tokens",
          loss_field: str = "loss", phases: Sequence[str] | None = DEFAULT_PHASES) -> Curve:
    """The curve of `run` on `target`.

    `x` is "tokens" (total training tokens) or "lang:<code>" (tokens of one training language).
    Points with x = 0 (an evaluation before training) are dropped: the curve lives in log-tokens.
    `phases`: schedule phases kept (None: all; rows without `schedule_phase` are kept).
    A trunk with WSD cooldown branches is read as its completed-schedule curve: the ends of its
    branches (rows whose `trunk` is `run`) and its final evaluation, not its stable points.
    Repeated x values keep the later step.
    """
    mine = [r for r in rows if r.get("target") == target and (r.get("run") == run or r.get("trunk") == run)]
    if any(r.get("trunk") == run for r in mine):
        mine = [r for r in mine if r.get("schedule_phase") in ("cooldown_end", "final")]
    pts: dict[float, tuple[int, float]] = {}
    for row in mine:
        if phases is not None and row.get("schedule_phase", phases[0]) not in phases:
            continue
        where = f"run {run!r}, target {target!r}"
        if x == "tokens":
            xv = float(_field(row, "tokens", where))
        elif x.startswith("lang:"):
            xv = float(dict(_field(row, "tokens_by_lang", where)).get(x[5:], 0))
        else:
            raise ValueError(f"x must be 'tokens' or 'lang:<code>', got {x!r}")
        loss = float(_field(row, loss_field, where))
        step = int(row.get("step", 0))
        if xv > 0 and math.isfinite(loss) and (xv not in pts or step >= pts[xv][0]):
            pts[xv] = (step, loss)
    xs = np.array(sorted(pts), dtype=np.float64)
    return Curve(run, target, xs, np.array([pts[v][1] for v in xs], dtype=np.float64), x)


def targets_of(rows: Iterable[Mapping[str, Any]], run: str) -> list[str]:
    """The evaluation languages a run has rows for."""
    return sorted({r["target"] for r in rows if r.get("run") == run})


def interp_log(x: np.ndarray, y: np.ndarray, at) -> np.ndarray:
    """y interpolated linearly in log(x) at `at`; NaN outside [x[0], x[-1]] (never extrapolates)."""
    at = np.asarray(at, dtype=np.float64)
    lx = np.log(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        la = np.log(at)
    out = np.interp(la, lx, y)
    inside = (at >= x[0] * (1 - 1e-12)) & (at <= x[-1] * (1 + 1e-12))
    return np.where(inside, out, np.nan)


def first_crossing_log(x: np.ndarray, y: np.ndarray, level: float) -> tuple[float, str]:
    """Smallest x where the piecewise log-linear curve y(x) first reaches `level` from above.

    Returns (x*, status): status "ok", "never" (the curve stays above `level` over its range;
    x* NaN) or "before_start" (already at or below `level` at the first point, so the crossing
    lies before the measured range; x* NaN). Never extrapolates.
    """
    if y.size == 0:
        return math.nan, "never"
    if y[0] <= level:
        return math.nan, "before_start"
    below = np.nonzero(y <= level)[0]
    if below.size == 0:
        return math.nan, "never"
    i = int(below[0])
    lx0, lx1 = math.log(x[i - 1]), math.log(x[i])
    frac = (y[i - 1] - level) / (y[i - 1] - y[i])
    return math.exp(lx0 + frac * (lx1 - lx0)), "ok"


