"""Optional train-loop callback: predict the run's final loss from its curve so far.

`LiveLossPrediction` (atlas_t5x.callbacks.Callback) reads the run's own MODEL_DIR/logs/eval.jsonl
(written by `PerLanguageEval`; list this callback after it so it sees the step's rows), refits a
law per target with `atlas_t5x.scaling.live_forecast.predict_final_loss`, and appends one row per target
to MODEL_DIR/logs/live_prediction.jsonl:

  {"run", "step", "target", "tokens", "final_tokens", "predicted_final_loss", "lower", "upper",
   "level", "n_points", "law", "params", "loss_field"}

so a user can stop a run whose predicted final loss is not worth the remaining compute. Warmup
points are left out (off the scaling curve) [our choice]. The planned final token count is
`final_tokens`, or `total_steps` × the tokens per step observed so far. Only process 0 writes;
a (run, step, target) already in the file is not written again (resumed runs repeat callbacks).

Use it from gin after the evaluation callback:

  import atlas_t5x.eval.live
  train.callbacks = [@PerLanguageEval(), @LiveLossPrediction()]
  LiveLossPrediction.every_steps = 20      # the eval period
  LiveLossPrediction.total_steps = 200     # the run's planned steps

Prior runs contribute only completed schedules (the fitter's default point set: cooldown ends and
final evaluations). Caveat: the fit assumes the loss keeps following a power law in tokens; with a WSD schedule the
final decay phase lowers the loss below that curve, so predictions made in the stable phase are
conservative (too high) for the end of a decayed run.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import gin

from atlas_t5x import logio
from atlas_t5x.callbacks import StepContext
from atlas_t5x.scaling import live_forecast as live

LIVE_LOG_RELPATH = os.path.join("logs", "live_prediction.jsonl")
EVAL_LOG_RELPATH = os.path.join("logs", "eval.jsonl")


def _is_writer() -> bool:
    try:
        import jax

        return jax.process_index() == 0
    except ImportError:  # pragma: no cover - jax is a core dependency
        return True


@gin.configurable
class LiveLossPrediction:
    """Refits the run's loss curve at every call and logs the predicted final loss with an interval.

    Args:
      every_steps: call period in optimizer steps (use the eval period).
      total_steps: the run's planned optimizer steps (or give `final_tokens`).
      final_tokens: the run's planned total training tokens.
      targets: languages to predict (default: every target in eval.jsonl).
      loss_field: "loss", "loss_unigram_norm" or "bits_per_byte".
      prior_logs: eval.jsonl files / folders / tables of finished runs on the same mixture; their
        points make the fit a CSL law across sizes (scaling.live_forecast).
      level: interval probability; min_points: points needed before predicting.
    """

    def __init__(self, every_steps: int = 100, total_steps: int | None = None,
                 final_tokens: float | None = None, targets: Sequence[str] | None = None,
                 loss_field: str = "loss", prior_logs: Sequence[str] = (), level: float = 0.8,
                 min_points: int = 4, n_boot: int = 100):
        if every_steps <= 0:
            raise ValueError(f"every_steps must be positive, got {every_steps}")
        if total_steps is None and final_tokens is None:
            raise ValueError("LiveLossPrediction needs total_steps or final_tokens")
        self.every_steps = int(every_steps)
        self.total_steps = total_steps
        self.final_tokens = final_tokens
        self.targets = list(targets) if targets else None
        self.loss_field = loss_field
        self.level = level
        self.min_points = min_points
        self.n_boot = n_boot
        self._prior_rows: list[dict[str, Any]] | None = None
        self._prior_sources = list(prior_logs)

    def _prior(self, target: str):
        if not self._prior_sources:
            return None
        if self._prior_rows is None:
            from atlas_t5x import logs
            from atlas_t5x.scaling import points as fit_data

            # finished runs enter as the fitter's points: completed schedules only (cooldown ends
            # and final evaluations; atlas_t5x.scaling.points.select_point_rows)
            self._prior_rows = fit_data.select_point_rows(
                [r for src in self._prior_sources for r in logs.read_rows(src)], "default")
        rows = [r for r in self._prior_rows if r.get("target") == target and r.get("tokens", 0) > 0]
        return {"N": [float(r["params"]) for r in rows], "D": [float(r["tokens"]) for r in rows],
                "loss": [float(r[self.loss_field]) for r in rows]}

    def predict(self, model_dir: str, run: str, step: int) -> list[dict[str, Any]]:
        """Prediction rows for `run` from MODEL_DIR/logs/eval.jsonl (no writing)."""
        path = os.path.join(model_dir, EVAL_LOG_RELPATH)
        if not logio.exists(path):  # local file or object-store URL
            return []
        rows = [r for r in logio.read_jsonl(path) if r.get("run") == run and r.get("step", 0) <= step]
        targets = self.targets or sorted({r["target"] for r in rows})
        out = []
        for target in targets:
            pts = sorted((r for r in rows if r["target"] == target and r.get("schedule_phase") != "warmup"
                          and r.get("tokens", 0) > 0), key=lambda r: r["step"])
            if len(pts) < self.min_points:
                continue
            final = self.final_tokens
            if final is None:
                last = pts[-1]
                final = float(self.total_steps) * float(last["tokens"]) / max(int(last["step"]), 1)
            try:
                pred = live.predict_final_loss(
                    [r["tokens"] for r in pts], [r[self.loss_field] for r in pts], final,
                    params=pts[-1].get("params"), prior=self._prior(target), level=self.level,
                    n_boot=self.n_boot, min_points=self.min_points)
            except (live.LiveError, ValueError) as err:
                warnings.warn(f"live prediction for run {run!r}, target {target!r} at step {step}: {err}")
                continue
            out.append({"run": run, "step": int(step), "target": target, "tokens": pred.tokens_so_far,
                        "final_tokens": pred.final_tokens, "predicted_final_loss": pred.predicted_final_loss,
                        "lower": pred.lower, "upper": pred.upper, "level": pred.level,
                        "n_points": pred.n_points, "law": pred.law, "params": pred.params,
                        "loss_field": self.loss_field})
        return out

    def __call__(self, ctx: StepContext) -> None:
        if not _is_writer():
            return
        path = os.path.join(ctx.run_info.model_dir, LIVE_LOG_RELPATH)
        step = int(ctx.step)
        if logio.exists(path):  # a resumed run calls again at a step it already predicted at
            done = {(r.get("run"), r.get("step"), r.get("target")) for r in logio.read_jsonl(path)}
        else:
            done = set()
        rows = [r for r in self.predict(ctx.run_info.model_dir, ctx.run_info.run, step)
                if (r["run"], r["step"], r["target"]) not in done]
        if rows:
            logio.append_jsonl(path, rows)
