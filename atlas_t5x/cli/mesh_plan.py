"""atlas-mesh-plan: the sharding plan (mesh, remat policy, micro-batches) and per-device memory of a scale.

  atlas-mesh-plan --scale=scale34 --devices=256 --chip_gib=16
  atlas-mesh-plan --scale=scale46 --target=gpu_8x80gb
  atlas-mesh-plan --scale=scale46 --devices=8 --chip_gb=80 --mesh=1,8,1 --remat=none --microbatches=1
  atlas-mesh-plan --write_gin            # regenerate gin/plans/<target>/<scale>.gin

(`python scripts/mesh_plan.py ...` is the same command.)

Without --mesh/--remat/--microbatches it selects the cheapest plan that fits
(`atlas_t5x.plans.select_plan`); with them it checks that plan and, when it does not fit,
prints its memory figures and the nearest plan that fits (exit 2). The last lines are the gin
flags that apply the plan to `atlas-train`. Estimates are analytic (no TensorFlow, no compilation);
`benchmarks/aot_plan.py` compiles the real step and reads XLA's figures.

Exit codes: 0 a plan that fits, 2 bad input or no plan fits (the message says why).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from atlas_t5x.cli import common

COMMAND = "atlas-mesh-plan"
REPO_ROOT = Path(__file__).resolve().parents[2]
PLANS_DIR = REPO_ROOT / "gin" / "plans"
REMAT_HELP = "none, full, dots_saveable, dots_with_no_batch_dims_saveable, save_qkv_proj"  # models.REMAT_POLICIES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.ArgumentParser(prog=COMMAND, description=__doc__, allow_abbrev=False)
    parser.add_argument("--scale", help="model scale (scale0..scale46, tiny0..tiny3)")
    parser.add_argument("--target", help="a named slice instead of --devices/--chip_* (atlas_t5x.plans.TARGETS, "
                                         "e.g. gpu_8x80gb, tpu_256x16gib)")
    parser.add_argument("--devices", type=int, help="accelerator count")
    parser.add_argument("--chip_gib", type=float, help="memory per device, GiB (2**30 bytes)")
    parser.add_argument("--chip_gb", type=float, help="memory per device, GB (1e9 bytes)")
    parser.add_argument("--devices_per_host", type=int, default=8, help="tensor parallelism stays within a host")
    parser.add_argument("--seq", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the paper's)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="compute dtype")
    parser.add_argument("--mesh", default=None, help="check this mesh DATA,FSDP,TENSOR")
    parser.add_argument("--remat", default=None, help=f"check this remat policy ({REMAT_HELP})")
    parser.add_argument("--microbatches", type=int, default=None, help="check this micro-batch count")
    parser.add_argument("--write_gin", action="store_true", help="write gin/plans/<target>/<scale>.gin for all")
    args = parser.parse_args(argv)
    common.require_training_stack(COMMAND)
    from atlas_t5x import models, plans  # JAX and flax (model shapes), after --help

    if args.target is not None and args.target not in plans.TARGETS:
        parser.error(f"argument --target: invalid choice: {args.target!r} (choose from "
                     f"{', '.join(sorted(plans.TARGETS))})")
    if args.write_gin:
        return args
    if not args.scale:
        parser.error("--scale is required (or --write_gin)")
    if args.scale not in models.SCALES:
        parser.error(str(_scale_error(args.scale)))
    if args.target:
        if args.devices or args.chip_gib or args.chip_gb:
            parser.error("--target replaces --devices/--chip_gib/--chip_gb: give one or the other")
        target = plans.TARGETS[args.target]
        args.devices, args.chip_bytes, args.devices_per_host = target.devices, target.chip_bytes, target.devices_per_host
    else:
        if not args.devices or args.devices < 1:
            parser.error("--devices must be a positive integer (or use --target)")
        if (args.chip_gib is None) == (args.chip_gb is None):
            parser.error("give the memory per device with exactly one of --chip_gib or --chip_gb")
        args.chip_bytes = args.chip_gib * plans.GiB if args.chip_gib else args.chip_gb * 1e9
        if args.chip_bytes <= 0:
            parser.error("memory per device must be positive")
    if args.remat is not None and args.remat not in models.REMAT_POLICIES:
        parser.error(f"unknown remat policy {args.remat!r}; valid names: {', '.join(models.REMAT_POLICIES)}")
    if args.mesh is not None:
        try:
            args.mesh = tuple(int(x) for x in args.mesh.split(","))
            assert len(args.mesh) == 3 and min(args.mesh) >= 1
        except (ValueError, AssertionError):
            parser.error(f"--mesh must be DATA,FSDP,TENSOR positive integers, got {args.mesh!r}")
    return args


def _scale_error(name: str) -> ValueError | None:
    from atlas_t5x import models

    try:
        models.get_model_config(name)
    except ValueError as err:
        return err
    return None


def write_gin_plans(out_dir: Path = PLANS_DIR) -> list[Path]:
    """gin/plans/<target>/<scale>.gin for every target and spec scale (paper seq and batch)."""
    from atlas_t5x import logio, models, plans

    written = []
    for target in plans.TARGETS.values():
        for i in range(len([s for s in models.SCALES if s.startswith("scale")])):
            scale = f"scale{i}"
            plan = plans.select_plan(scale, target.devices, target.chip_bytes,
                                     devices_per_host=target.devices_per_host)
            path = out_dir / target.name / f"{scale}.gin"
            path.parent.mkdir(parents=True, exist_ok=True)
            logio.write_atomic(path, plans.gin_plan_text(plan, target))
            written.append(path)
    return written


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    from atlas_t5x import plans

    if args.write_gin:
        try:
            paths = write_gin_plans()
        except plans.PlanError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {len(paths)} plan files under {PLANS_DIR}")
        return 0
    try:
        if args.mesh or args.remat or args.microbatches:
            auto = None
            try:
                auto = plans.select_plan(args.scale, args.devices, args.chip_bytes, args.seq, args.batch,
                                         args.dtype, args.devices_per_host)
            except plans.PlanError:
                pass
            batch = args.batch or models_paper_batch(args.scale)
            data, fsdp, tensor = args.mesh or ((auto.data, auto.fsdp, auto.tensor) if auto else (1, args.devices, 1))
            plan = plans.evaluate_plan(
                args.scale, args.devices, args.chip_bytes, args.seq, batch, data, fsdp, tensor,
                args.remat or (auto.remat_policy if auto else "full"),
                args.microbatches or (auto.microbatches if auto else 1), args.dtype, args.devices_per_host)
        else:
            plan = plans.select_plan(args.scale, args.devices, args.chip_bytes, args.seq, args.batch, args.dtype,
                                     args.devices_per_host)
    except plans.PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(plan.describe())
    print("gin flags: " + shlex.join(f"--gin.{b.replace(' = ', '=')}" for b in plan.gin_bindings()))
    return 0


def models_paper_batch(scale: str) -> int:
    from atlas_t5x import optim

    return optim.paper_batch_size(scale)


def main(argv: list[str] | None = None) -> int:
    """atlas-mesh-plan; `argv` without the program name (default sys.argv[1:]). Returns the exit code."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
