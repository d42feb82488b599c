"""atlas-sweep: expand a sweep spec into gin-configured training runs; run them locally or print them.

  atlas-sweep gin/sweeps/demo.yaml --out out/sweep            # run locally, in sequence
  atlas-sweep gin/sweeps/paper.yaml --out /data/atlas --print # commands for a scheduler

(`python scripts/sweep.py ...` is the same command.)

Every language, scale, mixture and finetune source is checked before anything trains (exit 2
naming the bad value). Locally, finished runs are skipped and unfinished ones resume from their
newest checkpoint; by default all runs share this Python process (and JAX's compile cache);
`--subprocess` starts one `scripts/train.py` per run instead. A line on stderr says which run starts
and how it ended (a bar in a terminal; `--no_progress` turns both off).

`--print` writes each run's generated gin file (MODEL_DIR/sweep_run.gin) and prints one command per
line, finetunes after their sources: absolute paths, the vocabulary, `MADLAD_DIR` (`--corpus`, else
the shell's `$MADLAD_DIR`) and the scale's sharding plan for `--target` (mesh, remat, micro-batches;
`atlas_t5x.plans`), plus the multi-host start on multi-host slices. It also writes
OUT/launch/sweep.sbatch and submit.sh (SLURM, GPU targets) or OUT/launch/tpu_vm.sh (TPU targets;
`atlas_t5x.launch`). Options `--print` cannot honour (`--subprocess`, `--no_progress`) are refused.
It imports neither TensorFlow nor the training data layer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from atlas_t5x.cli import common

COMMAND = "atlas-sweep"
DEFAULT_TARGET = "gpu_8x80gb"


def build_parser() -> common.ArgumentParser:
    parser = common.ArgumentParser(prog=COMMAND, description=__doc__, allow_abbrev=False)
    parser.add_argument("spec", help="sweep spec (YAML)")
    parser.add_argument("--out", required=True, help="sweep folder; runs go to OUT/runs/<run>")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the train commands instead of running them")
    parser.add_argument("--subprocess", action="store_true", help="one scripts/train.py process per run")
    parser.add_argument("--only", default=None, help="comma-separated run names to run")
    parser.add_argument("--corpus", default=None,
                        help="MADLAD-layout corpus root (default: $MADLAD_DIR or embedded)")
    parser.add_argument("--no_progress", action="store_true", deprecated=("--no-progress",),
                        help="no progress bar or per-run lines")
    parser.add_argument("--target", default=None,
                        help=f"--print: the accelerator slice the plans are made for (default {DEFAULT_TARGET}; "
                             "see atlas_t5x.plans.TARGETS)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.print_only:
        refused = [flag for flag, given in (("--subprocess", args.subprocess), ("--no_progress", args.no_progress))
                   if given]
        if refused:
            parser.error(f"--print cannot honour {', '.join(refused)} (it starts nothing): drop "
                         f"{'it' if len(refused) == 1 else 'them'}")
        args.target = args.target or DEFAULT_TARGET
        from atlas_t5x import plans

        if args.target not in plans.TARGETS:
            parser.error(f"unknown --target {args.target!r}; valid: {', '.join(plans.TARGETS)}")
    elif args.target is not None:
        parser.error("--target only applies to --print (local runs use this machine's devices)")
    return args


def summary(sweep) -> str:
    """The sweep's runs in execution order: scale, mixture, tokens, steps, finetune source."""
    from atlas_t5x import sweeps

    lines = [f"sweep {sweep.name!r} from {sweep.source}: {len(sweep.runs)} runs",
             f"  {'run':<34} {'scale':<8} {'mixture':<22} {'tokens':>14} {'steps':>7}  init"]
    for r in sweeps.execution_order(sweep.runs):
        lines.append(f"  {r.name:<34} {r.scale:<8} {r.mixture:<22} {r.tokens:>14,} {r.total_steps:>7}  "
                     f"{r.init_from or 'scratch'}")
    return "\n".join(lines)


def print_commands(args: argparse.Namespace, sweep, only: list[str] | None) -> int:
    """--print: gin files, launch files and one command per run (finetunes after their sources)."""
    from atlas_t5x import launch, plans, sweeps

    out = Path(args.out).resolve()
    target = plans.TARGETS[args.target]
    runs = [r for r in sweep.runs if only is None or r.name in only]
    try:
        launched = launch.prepare(runs, out, target)
        for item in launched:
            sweeps.write_run_gin(item.run, out)
    except sweeps.SweepError as err:
        raise common.UsageError(str(err)) from err
    files = launch.write_launch_files(launched, sweep.name, out, target, args.corpus)
    for item in launched:
        print(launch.command_line(item.argv, args.corpus))
    print(f"# {len(launched)} runs for {target.description}; gin files under {out / 'runs'}; launch files: "
          + ", ".join(str(p) for p in files.values()), file=sys.stderr)
    return common.EXIT_OK


def run_sweep(args: argparse.Namespace, sweep, only: list[str] | None) -> int:
    """Trains the runs here, in sequence; 0 when all finished, 1 when one was preempted."""
    from atlas_t5x import sweeps

    print(summary(sweep), flush=True)
    if args.corpus:
        os.environ["MADLAD_DIR"] = args.corpus
    if not args.subprocess:
        sweeps.enable_compile_cache(Path(args.out) / "jax_cache")
    in_terminal = sys.stderr.isatty()  # a bar there; one line per run start/end in logs
    status = sweeps.run_locally(sweep, args.out, in_process=not args.subprocess,
                                progress=not args.no_progress and in_terminal, only=only,
                                report=None if args.no_progress or in_terminal else common.status)
    counts = {s: sum(1 for v in status.values() if v == s) for s in ("finished", "skipped", "preempted")}
    print(f"sweep {sweep.name!r}: {counts['finished']} trained, {counts['skipped']} already finished, "
          f"{counts['preempted']} preempted; logs under {Path(args.out) / 'runs'}/*/logs/eval.jsonl")
    return common.EXIT_OK if not counts["preempted"] else common.EXIT_FAILURE


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if not args.print_only:
        common.require_training_stack(COMMAND)
        from atlas_t5x import train_progress

        train_progress.quiet_library_logs()  # before TensorFlow loads: no C++ INFO chatter
        if not args.no_progress:
            common.status(f"{COMMAND}: checking {args.spec} against the corpus "
                          "(loads JAX, TensorFlow and the data layer)")
    from atlas_t5x import sweeps

    try:
        corpus_languages = None
        if not args.print_only:
            from atlas_t5x.data import madlad

            corpus_languages = madlad.available_languages(madlad.resolve_madlad_dir(args.corpus))
        sweep = sweeps.load_sweep(args.spec, corpus_languages=corpus_languages)
        sweeps.check_runnable(sweep, local=not args.print_only)
        only = None
        if args.only:
            only = [name.strip() for name in args.only.split(",") if name.strip()]
            unknown = sorted(set(only) - {r.name for r in sweep.runs})
            if unknown:
                raise sweeps.SweepError(f"--only names unknown run(s) {unknown}")
    except (sweeps.SweepError, ValueError, OSError) as err:
        raise common.UsageError(str(err)) from err
    if args.print_only:
        return print_commands(args, sweep, only)
    if not args.no_progress:
        common.status(f"{COMMAND}: spec checked in {time.monotonic() - started:.1f} s")
    return run_sweep(args, sweep, only)


def main(argv: list[str] | None = None) -> int:
    """atlas-sweep; `argv` without the program name (default sys.argv[1:]). Returns the exit code."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
