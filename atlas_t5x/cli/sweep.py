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
DEFAULT_REHEARSE_TARGET = "tpu_v5e_256"


def build_parser() -> common.ArgumentParser:
    parser = common.ArgumentParser(prog=COMMAND, description=__doc__, allow_abbrev=False)
    parser.add_argument("spec", help="sweep spec (YAML)")
    parser.add_argument("--out", default=None,
                        help="sweep folder (a local path or gs://...); runs go to OUT/runs/<run> "
                             "(required except with --rehearse, which defaults to out/rehearse/<sweep name>)")
    parser.add_argument("--rehearse", action="store_true",
                        help="place every run on a slice of --target, compile its train and eval steps there "
                             "(TPU: the real compiler, no TPU needed) and write OUT/rehearsal.json; exit 2 "
                             "listing every run that cannot run")
    parser.add_argument("--vocab", default=None,
                        help="--print for a cluster: the vocabulary the workers read (gs://.../x.model or a "
                             "registered name), instead of the spec's")
    parser.add_argument("--stats", default=None,
                        help="--print for a cluster: corpus statistics file (gs://...) given to the workers as "
                             "$MADLAD_STATS")
    parser.add_argument("--image", default=None,
                        help="--print, TPU targets: container image of the JobSets (default: left as @IMAGE@, "
                             "filled in by submit_jobsets.sh from $IMAGE)")
    parser.add_argument("--launch_dir", default=None,
                        help="--print with --out gs://...: local folder for the launch files "
                             "(default launch/<sweep name>)")
    parser.add_argument("--rehearsal", default=None,
                        help="--print for a cluster: take each run's slice, plan and eval batch from this "
                             "rehearsal.json (atlas-sweep --rehearse) instead of the analytic placement")
    parser.add_argument("--mfu", type=float, default=None,
                        help="--rehearse/--print: model FLOPs utilisation assumed for step times (default 0.4)")
    parser.add_argument("--max_days", type=float, default=None,
                        help="--rehearse/--print: a run's wall-clock bound when choosing its slice (default 3)")
    parser.add_argument("--no_compile", action="store_true",
                        help="--rehearse: place on the analytic memory estimate only (no compiles)")
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
    if args.rehearse and args.print_only:
        parser.error("--rehearse and --print are separate steps: rehearse first, then --print the launch files")
    if args.out is None and not args.rehearse:
        parser.error("--out is required (except with --rehearse)")
    if args.mfu is not None and not 0 < args.mfu <= 1:
        parser.error(f"--mfu must be in (0, 1], got {args.mfu}")
    if args.max_days is not None and args.max_days <= 0:
        parser.error(f"--max_days must be positive, got {args.max_days}")
    if not (args.rehearse or args.print_only) and (args.mfu is not None or args.max_days is not None
                                                   or args.no_compile):
        parser.error("--mfu, --max_days and --no_compile apply to --rehearse/--print only")
    if args.rehearse:
        refused = [flag for flag, given in (("--subprocess", args.subprocess),) if given]
        if refused:
            parser.error("--rehearse starts nothing: drop --subprocess")
        args.target = args.target or DEFAULT_REHEARSE_TARGET
        from atlas_t5x import plans

        if args.target not in plans.TARGETS:
            parser.error(f"unknown --target {args.target!r}; valid: {', '.join(plans.TARGETS)}")
        return args
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
        parser.error("--target only applies to --print and --rehearse (local runs use this machine's devices)")
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


def portable(target, args: argparse.Namespace) -> bool:
    """Whether --print writes cluster-engine files (JobSet/xpk, per-run SLURM) with no local paths."""
    from atlas_t5x import logio

    return target.platform == "tpu" or logio.is_url(args.out)


def print_portable(args: argparse.Namespace, sweep, only: list[str] | None) -> int:
    """--print for a cluster: per-run workloads on right-sized slices, no paths of this machine."""
    from atlas_t5x import launch, logio, plans, sweeps

    target = plans.TARGETS[args.target]
    runs = [r for r in sweep.runs if only is None or r.name in only]
    for what, value in (("--corpus", args.corpus), ("--stats", args.stats)):
        if value and not logio.is_url(value):
            raise common.UsageError(f"{what} {value!r} is a local path; cluster workers cannot read it: "
                                    "give a gs:// URL")
    try:
        placements = None
        if args.rehearsal:
            import json

            try:
                placements = launch.placements_from_rehearsal(json.loads(Path(args.rehearsal).read_text()), target)
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise sweeps.SweepError(f"--rehearsal {args.rehearsal}: cannot use it: {err}") from None
            missing = sorted(r.name for r in runs if r.name not in placements)
            if missing:
                raise sweeps.SweepError(f"--rehearsal {args.rehearsal} has no placement for {missing}: rehearse them")
        launched = launch.prepare_portable(
            runs, args.out, target, vocab=args.vocab, placements=placements,
            max_days=plans.DEFAULT_MAX_DAYS if args.max_days is None else args.max_days,
            mfu=plans.DEFAULT_MFU if args.mfu is None else args.mfu)
    except sweeps.SweepError as err:
        raise common.UsageError(str(err)) from err
    folder = Path(args.launch_dir or (Path("launch") / sweep.name))
    files = launch.write_portable_files(launched, folder, target, args.corpus, args.stats, args.image or "@IMAGE@")
    for item in launched:
        print(f"# {item.run.name}: {item.slice_chips} chips ({item.hosts} host(s)), mesh "
              f"{item.plan.data}x{item.plan.fsdp}x{item.plan.tensor}, remat {item.plan.remat_policy}, "
              f"{item.plan.microbatches} micro-batch(es)")
        print(item.script)
    vocabs = {args.vocab} if args.vocab else {str(r.settings["vocab"]) for r in runs}
    checks = launch.check_remote_paths({"--out": args.out, "--corpus": args.corpus, "--stats": args.stats,
                                        **{f"vocabulary": v for v in vocabs}})
    if not args.corpus:
        checks.append("corpus: not given (--corpus gs://...); the workers need $MADLAD_DIR in the image")
    for line in checks:
        print(f"# {line}", file=sys.stderr)
    print(f"# {len(launched)} runs for {target.description}; launch files under {folder}: "
          + ", ".join(sorted(files)[:3]) + (" ..." if len(files) > 3 else "") + f"; {launch.CODE_NOTE}",
          file=sys.stderr)
    return common.EXIT_OK


def print_commands(args: argparse.Namespace, sweep, only: list[str] | None) -> int:
    """--print: gin files, launch files and one command per run (finetunes after their sources)."""
    from atlas_t5x import launch, plans, sweeps

    if portable(plans.TARGETS[args.target], args):
        return print_portable(args, sweep, only)
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


def rehearse(args: argparse.Namespace, sweep, only: list[str] | None) -> int:
    """--rehearse: place and compile every run on --target; OUT/rehearsal.json; 2 if any run cannot run."""
    import json

    from atlas_t5x import logio, plans, rehearsal

    target = plans.TARGETS[args.target]
    runs = [r for r in sweep.runs if only is None or r.name in only]
    out = args.out or str(Path("out") / "rehearse" / sweep.name)
    started = time.monotonic()
    record = rehearsal.rehearse(
        runs, target, compile_steps=not args.no_compile,
        mfu=plans.DEFAULT_MFU if args.mfu is None else args.mfu,
        max_days=plans.DEFAULT_MAX_DAYS if args.max_days is None else args.max_days,
        progress=None if args.no_progress else common.status)
    record["totals"]["wall_s"] = round(time.monotonic() - started, 1)
    path = f"{out.rstrip('/')}/rehearsal.json" if logio.is_url(out) else str(Path(out) / "rehearsal.json")
    logio.write_atomic(path, json.dumps(record, indent=1) + "\n")
    print(rehearsal.table(record))
    print(f"# rehearsal of {len(runs)} run(s) in {record['totals']['wall_s']:.0f} s: {path}", file=sys.stderr)
    if record["problems"]:
        lines = [f"  {p['run']}: {'; '.join(p['reasons'])}" for p in record["problems"]]
        raise common.UsageError(f"{len(record['problems'])} run(s) cannot run on {target.name}:\n" + "\n".join(lines))
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
    if args.rehearse:
        common.require_training_stack(COMMAND)  # the compile needs Flax and optax
    elif not args.print_only:
        common.require_training_stack(COMMAND)
        from atlas_t5x import train_progress

        train_progress.quiet_library_logs()  # before TensorFlow loads: no C++ INFO chatter
        if not args.no_progress:
            common.status(f"{COMMAND}: checking {args.spec} against the corpus "
                          "(loads JAX, TensorFlow and the data layer)")
    from atlas_t5x import sweeps

    try:
        corpus_languages = None
        if not (args.print_only or args.rehearse):
            from atlas_t5x.data import madlad

            corpus_languages = madlad.available_languages(madlad.resolve_madlad_dir(args.corpus))
        sweep = sweeps.load_sweep(args.spec, corpus_languages=corpus_languages)
        sweeps.check_runnable(sweep, local=not (args.print_only or args.rehearse))
        only = None
        if args.only:
            only = [name.strip() for name in args.only.split(",") if name.strip()]
            unknown = sorted(set(only) - {r.name for r in sweep.runs})
            if unknown:
                raise sweeps.SweepError(f"--only names unknown run(s) {unknown}")
    except (sweeps.SweepError, ValueError, OSError) as err:
        raise common.UsageError(str(err)) from err
    if args.rehearse:
        return rehearse(args, sweep, only)
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
