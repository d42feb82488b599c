"""Sweep dress rehearsal: place every run on a slice of a target and compile its steps there.

`rehearse(runs, target)` gives each run the smallest slice of the target's fleet whose step
fits (`plans.place`), checking every candidate with a deviceless compile of the train and eval
steps on the real compiler (`atlas_t5x.aot`, TPU targets) — each distinct (model, batch,
slice, plan, eval batch) is compiled once — and reports per run and for the sweep: slice,
mesh, bytes per chip, estimated step time and chip-hours at a stated MFU, and the input
tokens/s each host must deliver. Runs that cannot run (nothing fits, an indivisible train or
eval batch, a gin file or finetune source that is not there) are listed in `problems`.
Targets without a compiler here (GPU) are placed on the analytic estimate, labelled as such.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from atlas_t5x import plans, preflight, sweeps

_EVAL_BATCH = re.compile(r"^\s*PerLanguageEval\.batch_size\s*=\s*(\S+)\s*(#.*)?$")
_INCLUDE = re.compile(r"""^\s*include\s+['"]([^'"]+)['"]""")


def _gin_lines(path: Path, seen: set) -> list[str]:
    """Lines of a gin file with its includes expanded (paths relative to the repository root)."""
    if path in seen or not path.is_file():
        return []
    seen.add(path)
    out = []
    for line in path.read_text().splitlines():
        m = _INCLUDE.match(line)
        if m:
            inc = Path(m.group(1))
            out += _gin_lines(inc if inc.is_absolute() else sweeps.REPO_ROOT / inc, seen)
        else:
            out.append(line)
    return out


def eval_batch(run: sweeps.RunSpec) -> int:
    """The run's eval batch rows: the last `PerLanguageEval.batch_size` binding of its gin files
    and spec bindings (None or absent: the run's global batch, as PerLanguageEval does)."""
    bound = eval_batch_binding(run)
    return run.batch if bound is None else bound


def eval_batch_binding(run: sweeps.RunSpec) -> Optional[int]:
    """The run's `PerLanguageEval.batch_size` binding (gin files, includes, spec bindings), or None."""
    lines: list[str] = []
    seen: set = set()
    for f in sweeps.gin_files(run):
        lines += _gin_lines(Path(f) if Path(f).is_absolute() else sweeps.REPO_ROOT / f, seen)
    lines += list(run.settings.get("gin_bindings") or ())
    value = None
    for line in lines:
        m = _EVAL_BATCH.match(line)
        if m:
            value = m.group(1)
    if value is None or value == "None":
        return None
    try:
        return int(value)
    except ValueError:
        raise sweeps.SweepError(f"run {run.name!r}: PerLanguageEval.batch_size = {value!r} is not an integer") from None


def run_config(run: sweeps.RunSpec):
    """The run's ModelConfig as its generated gin sets it: scale, vocabulary rows, model overrides
    (compute dtype bfloat16 unless overridden)."""
    overrides = {"dtype": "bfloat16", **dict(run.settings.get("model_overrides") or {})}
    if run.settings.get("vocab_size"):
        overrides["vocab_size"] = int(run.settings["vocab_size"])
    return sweeps.scale_config(run.scale, **overrides)


@dataclasses.dataclass
class _Compiled:
    bytes_per_chip: int
    eval_bytes_per_chip: Optional[int]
    device_kind: str
    compile_s: float
    eval_batch: Optional[int]
    eval_error: Optional[str]


def rehearse(runs: Sequence[sweeps.RunSpec], target: plans.Target, compile_steps: bool = True,
             mfu: float = plans.DEFAULT_MFU, max_days: Optional[float] = plans.DEFAULT_MAX_DAYS,
             progress: Optional[Callable[[str], None]] = None, usable_fraction: float = 0.9) -> dict[str, Any]:
    """The rehearsal record (rehearsal.json): {"target", "assumptions", "runs", "totals", "problems"}.

    Args:
      runs: the runs, any order (reported in execution order: finetunes after their sources).
      target: the fleet (plans.TARGETS); TPU targets compile when `compile_steps`.
      mfu: model FLOPs utilisation assumed for step times and chip-hours.
      max_days: a run's wall-clock bound when choosing its slice (plans.place).
      progress: called with one line per compile (start and result).
    """
    from atlas_t5x import aot

    compiler = compile_steps and target.platform == "tpu"
    cache: dict[tuple, _Compiled | str] = {}
    names = {r.name for r in runs}
    rows, problems = [], []

    def compile_check(run, cfg, bound):
        def check(plan: plans.Plan) -> Optional[str]:
            if bound is not None:
                problem = preflight.eval_batch_problem(bound, {"data": plan.data, "fsdp": plan.fsdp})
                if problem:
                    return problem
                tries = [bound]
            else:  # PerLanguageEval's default (the global batch), made small enough for the eval logits
                first = plans.eval_rows(plan, cfg.vocab_size, run.batch, usable_fraction / 3)
                ways = plan.data * plan.fsdp
                tries = [first] + [ways * k for k in (8, 4, 2, 1) if ways * k < first]
            check.eval_batch[plan.devices] = tries[0]
            if not compiler:
                return None
            topology = target.topology(plan.devices)
            if not topology:
                return f"no libtpu topology known for {plan.devices} chips"
            key = (cfg, run.seq_len, run.batch, topology, plan.data, plan.fsdp, plan.tensor, plan.remat_policy,
                   plan.microbatches, tuple(tries))
            if key not in cache:
                if progress:
                    progress(f"compiling {cfg.name} on {topology} (mesh {plan.data}x{plan.fsdp}x{plan.tensor}, "
                             f"remat {plan.remat_policy}, {plan.microbatches} micro-batches, eval batch {' or '.join(map(str, tries))}) "
                             f"[{len(cache) + 1} compile(s)]")
                try:
                    res = aot.compile_steps(cfg, "tpu", topology, plan.data, plan.fsdp, plan.tensor, run.batch,
                                            run.seq_len, plan.remat_policy, plan.microbatches, eval_batches=tries,
                                            eval_limit_bytes=usable_fraction * target.chip_bytes)
                    cache[key] = _Compiled(res.bytes_per_chip, res.eval_bytes_per_chip, res.device_kind, res.compile_s,
                                           res.eval_batch, res.eval_error)
                    if progress:
                        evaluated = (f"eval batch {res.eval_batch}: {res.eval_bytes_per_chip / plans.GiB:.2f} GiB"
                                     if res.eval is not None else f"eval NOT compiled: {res.eval_error}")
                        progress(f"  {res.device_kind}: {res.bytes_per_chip / plans.GiB:.2f} GiB per chip "
                                 f"({evaluated}), {res.compile_s:.0f} s")
                except (aot.TopologyError, ValueError) as err:
                    cache[key] = f"compile failed: {err}"
                except Exception as err:  # XLA refusing the program (e.g. out of memory at compile time)
                    cache[key] = f"compile failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
            got = cache[key]
            if isinstance(got, str):
                return got
            usable = usable_fraction * target.chip_bytes
            if got.bytes_per_chip > usable:
                return (f"compiled train step needs {got.bytes_per_chip / plans.GiB:.2f} GiB per chip > "
                        f"{usable / plans.GiB:.2f} usable")
            if got.eval_batch is None:
                return f"no eval batch compiles within {usable / plans.GiB:.2f} GiB per chip ({got.eval_error})"
            check.compiled[plan.devices] = got
            check.eval_batch[plan.devices] = got.eval_batch
            return None

        check.compiled, check.eval_batch = {}, {}
        return check

    for run in sweeps.execution_order(list(runs)):
        reasons = []
        for f in sweeps.gin_files(run):
            if not (Path(f) if Path(f).is_absolute() else sweeps.REPO_ROOT / f).is_file():
                reasons.append(f"gin file {f!r} not found")
        if run.init_from is not None and run.init_from not in names and "/" not in run.init_from:
            reasons.append(f"finetune source {run.init_from!r} is not among the rehearsed runs")
        try:
            bound = eval_batch_binding(run)
        except sweeps.SweepError as err:
            reasons.append(str(err))
            bound = None
        cfg = run_config(run)
        check = compile_check(run, cfg, bound)
        placement = None
        if not reasons:
            try:
                placement = plans.place(cfg, target, run.seq_len, run.batch, run.total_steps, check,
                                        usable_fraction, max_days, mfu)
            except plans.PlanError as err:
                reasons.append(str(err))
        if placement is None:
            problems.append({"run": run.name, "reasons": reasons})
            rows.append({"run": run.name, "scale": run.scale, "fits": False, "problems": reasons})
            continue
        plan, chips = placement.plan, placement.slice_chips
        got = check.compiled.get(chips)
        step_s = plans.step_seconds(cfg, run.seq_len, run.batch, chips, target.peak_flops, mfu) \
            if target.peak_flops else None
        row = {
            "run": run.name, "scale": run.scale, "init_from": run.init_from,
            "slice_chips": chips, "hosts": placement.hosts,
            "topology": target.topology(chips) or None,
            "mesh": [plan.data, plan.fsdp, plan.tensor],
            "remat_policy": plan.remat_policy, "microbatches": plan.microbatches,
            "global_batch": run.batch, "seq_len": run.seq_len, "eval_batch": check.eval_batch.get(chips),
            "eval_batch_bound": bound is not None, "total_steps": run.total_steps,
            "device_kind": got.device_kind if got else f"analytic ({target.description})",
            "memory_source": "compiled" if got else "analytic",
            "bytes_per_chip": got.bytes_per_chip if got else int(plan.memory.total),
            "eval_bytes_per_chip": got.eval_bytes_per_chip if got else None,
            "analytic_bytes_per_chip": int(plan.memory.total),
            "chip_bytes": int(target.chip_bytes),
            "fits": True,
            "eval_compiled": bool(got and got.eval_bytes_per_chip is not None),
            "compile_s": round(got.compile_s, 1) if got else None,
            "est_step_s": step_s,
            "est_days": step_s * run.total_steps / 86400 if step_s else None,
            "within_deadline": placement.within_deadline,
            "chip_hours": step_s * run.total_steps * chips / 3600 if step_s else None,
            "host_input_tokens_per_s": run.batch * run.seq_len / step_s / placement.hosts if step_s else None,
            "passed_over": list(placement.tried),
        }
        rows.append(row)
    placed = [r for r in rows if r["fits"]]
    chip_hours = sum(r["chip_hours"] or 0 for r in placed)
    totals = {
        "runs": len(rows), "placed": len(placed), "cannot_run": len(problems),
        "chip_hours": chip_hours,
        "fleet_days_lower_bound": chip_hours / target.devices / 24 if target.devices else None,
        "slices": {str(c): sum(1 for r in placed if r["slice_chips"] == c) for c in target.slices},
        "compiles": len(cache),
        "compile_s": round(sum(v.compile_s for v in cache.values() if isinstance(v, _Compiled)), 1),
    }
    return {
        "target": {"name": target.name, "description": target.description, "platform": target.platform,
                   "chip_bytes": int(target.chip_bytes), "slices": list(target.slices),
                   "peak_flops_per_chip": target.peak_flops},
        "assumptions": {"mfu": mfu, "max_days": max_days, "usable_fraction": usable_fraction,
                        "bytes_per_chip": "arguments + outputs - aliased + temporaries (XLA memory_analysis) "
                                          "when compiled, else plans.estimate_memory",
                        "memory": ("compiled" if compiler else "analytic (--no_compile)" if target.platform == "tpu"
                                   else "analytic (no compiler for this target here)")},
        "runs": rows, "totals": totals, "problems": problems,
    }


def table(record: dict[str, Any]) -> str:
    """The rehearsal as a text table, one line per run plus totals."""
    g = plans.GiB
    lines = [f"rehearsal on {record['target']['name']} ({record['target']['description']}); "
             f"memory {record['assumptions']['memory']}; MFU {record['assumptions']['mfu']:.0%}",
             f"{'run':<30} {'chips':>5} {'mesh d,f,t':>12} {'remat':<8} {'mb':>3} {'GiB/chip':>8} {'eval':>6} {'ev.rows':>7} "
             f"{'step s':>7} {'days':>6} {'chip-h':>9} {'tok/s/host':>10}  device"]
    for r in record["runs"]:
        if not r["fits"]:
            lines.append(f"{r['run']:<30} CANNOT RUN: {'; '.join(r['problems'])}")
            continue
        ev = f"{r['eval_bytes_per_chip'] / g:6.2f}" if r["eval_bytes_per_chip"] is not None else "     -"
        step = r["est_step_s"]
        lines.append(
            f"{r['run']:<30} {r['slice_chips']:>5} {','.join(map(str, r['mesh'])):>12} {r['remat_policy'][:8]:<8} "
            f"{r['microbatches']:>3} {r['bytes_per_chip'] / g:8.2f} {ev} {r['eval_batch'] or '-':>7} "
            + (f"{step:7.2f} {r['est_days']:6.2f} {r['chip_hours']:9.0f} {r['host_input_tokens_per_s']:10.0f}"
               if step else f"{'-':>7} {'-':>6} {'-':>9} {'-':>10}")
            + f"  {r['device_kind']}")
    t = record["totals"]
    lines.append(f"totals: {t['placed']}/{t['runs']} runs placed, {t['chip_hours']:.0f} chip-hours "
                 f"(>= {t['fleet_days_lower_bound']:.1f} days on {record['target']['slices'][-1]} chips), "
                 f"{t['compiles']} compile(s) in {t['compile_s']:.0f} s; runs per slice "
                 + ", ".join(f"{k}: {v}" for k, v in t["slices"].items() if v))
    return "\n".join(lines)
