"""Ahead-of-time memory and compile check of the real train step on a simulated mesh (CPU or TPU).

Lowers and compiles `trainer.make_train_step` (AdamW with clipping, fused chunked loss,
gradient accumulation, donated state) with `jax.jit(...).lower(...).compile()` on
ShapeDtypeStructs sharded over a mesh of `--devices` host CPU devices
(`--xla_force_host_platform_device_count`), so nothing of the model's size is allocated.
Prints the plan (`atlas_t5x.plans`), its analytic estimate, XLA's per-device
`memory_analysis()` (arguments, outputs, temporaries, aliased = donated) and the lowering /
compile times; `--compare_unrolled` repeats the compilation with `scan_layers=False`.

    python benchmarks/aot_plan.py --scale=scale34 --devices=256 --chip_gib=16
    python benchmarks/aot_plan.py --scale=scale46 --devices=8 --chip_gb=80 --compare_unrolled
    python benchmarks/aot_plan.py --scale=scale34 --devices=256 --chip_gib=16 --topology=v5e:16x16

`--topology` compiles for a TPU slice on the real compiler (XLA:TPU and Mosaic from libtpu, the
`tpu` extra; no TPU needed: `atlas_t5x.aot.topology_devices`), so the figures are a TPU's.

On CPU the XLA path of attention would hold [B, H, T, T] scores that the accelerator kernels
never build, so the check defaults to `--attention=splash` (the Pallas TPU kernel, lowered
through the Pallas interpreter here); CPU XLA also computes bf16 matmuls through float32
copies, so its temporaries are an upper bound for an accelerator's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", required=True, help="model scale (scale0..scale46, tiny0..tiny3)")
    parser.add_argument("--devices", type=int, required=True, help="simulated devices")
    parser.add_argument("--topology", default=None,
                        help="compile for this TPU topology on the real compiler (libtpu, no TPU needed), "
                             "e.g. v5e:16x16; default: host CPU devices")
    memory = parser.add_mutually_exclusive_group(required=True)
    memory.add_argument("--chip_gib", type=float, help="memory per device, GiB (2**30 bytes)")
    memory.add_argument("--chip_gb", type=float, help="memory per device, GB (1e9 bytes)")
    parser.add_argument("--seq", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the paper's for the scale)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--devices_per_host", type=int, default=8)
    parser.add_argument("--attention", default="splash", help="attention implementation compiled")
    parser.add_argument("--mesh", default=None, help="explicit mesh DATA,FSDP,TENSOR instead of the plan's")
    parser.add_argument("--remat", default=None, help="explicit remat policy instead of the plan's")
    parser.add_argument("--microbatches", type=int, default=None, help="explicit micro-batch count")
    parser.add_argument("--compare_unrolled", action="store_true", help="also compile with scan_layers=False")
    parser.add_argument("--unrolled_only", action="store_true", help="compile only with scan_layers=False")
    parser.add_argument("--lower_only", action="store_true",
                        help="lower without compiling (program size only; no memory figures)")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.seq < 2 or (args.batch is not None and args.batch < 1):
        parser.error("--devices, --seq and --batch must be positive")
    return args


def compile_step(cfg, plan, lower_only: bool = False, devices=None):
    """(lowered text chars, lower seconds, compile seconds, memory analysis) of one train step.

    With `lower_only` the last two are None.
    """
    import jax
    import jax.numpy as jnp

    from atlas_t5x import models, optim, partitioning, trainer

    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=plan.data, fsdp=plan.fsdp, tensor=plan.tensor), devices)
    partitioning.check_batch_divisible(plan.global_batch, mesh, plan.microbatches)
    model = models.DecoderLM(cfg)
    schedule = optim.make_schedule("wsd", total_steps=10_000, warmup_steps=1000)
    optimizer = optim.make_optimizer(schedule)
    abstract_state, state_sh = trainer.state_layout(model, optimizer, mesh,
                                                    jax.ShapeDtypeStruct((1, plan.seq_len), jnp.int32))
    batch_sh = partitioning.batch_sharding(mesh)
    replicated = partitioning.replicated(mesh)
    abstract_batch = {
        k: jax.ShapeDtypeStruct((plan.global_batch, plan.seq_len),
                                jnp.float32 if k == "decoder_loss_weights" else jnp.int32, sharding=batch_sh)
        for k in trainer.MODEL_INPUT_KEYS}
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated)
    step = jax.jit(trainer.make_train_step(model, optimizer, schedule, plan.microbatches, 128),
                   in_shardings=(state_sh, {k: batch_sh for k in trainer.MODEL_INPUT_KEYS}, replicated),
                   out_shardings=(state_sh, {k: replicated for k in ("loss", "n_tokens", "grad_norm", "lr")}),
                   donate_argnums=(0,))
    with partitioning.axis_rules(mesh):
        start = time.perf_counter()
        lowered = step.lower(abstract_state, abstract_batch, key)
        lower_s = time.perf_counter() - start
        chars = len(lowered.as_text())
        if lower_only:
            return chars, lower_s, None, None
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
    return chars, lower_s, compile_s, compiled.memory_analysis()


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.topology:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from atlas_t5x import aot, models, plans

    devices = None
    if args.topology:
        try:
            devices = aot.topology_devices("tpu", args.topology)
        except aot.TopologyError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if len(devices) != args.devices:
            print(f"error: topology {args.topology} has {len(devices)} chips, --devices={args.devices}", file=sys.stderr)
            return 2
    elif jax.device_count() != args.devices:
        print(f"error: asked for {args.devices} devices, JAX sees {jax.device_count()} "
              f"(XLA_FLAGS={os.environ['XLA_FLAGS']!r})", file=sys.stderr)
        return 2
    chip_bytes = args.chip_gib * plans.GiB if args.chip_gib else args.chip_gb * 1e9
    try:
        if args.mesh or args.remat or args.microbatches:
            auto = plans.select_plan(args.scale, args.devices, chip_bytes, args.seq, args.batch, args.dtype,
                                     args.devices_per_host)
            data, fsdp, tensor = ((int(x) for x in args.mesh.split(",")) if args.mesh
                                  else (auto.data, auto.fsdp, auto.tensor))
            plan = plans.evaluate_plan(args.scale, args.devices, chip_bytes, args.seq, auto.global_batch, data,
                                       fsdp, tensor, args.remat or auto.remat_policy,
                                       args.microbatches or auto.microbatches, args.dtype, args.devices_per_host)
        else:
            plan = plans.select_plan(args.scale, args.devices, chip_bytes, args.seq, args.batch, args.dtype,
                                     args.devices_per_host)
        cfg = models.get_model_config(args.scale, dtype=args.dtype, remat_policy=plan.remat_policy,
                                      attention=args.attention)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(plan.describe())
    backend = f"{devices[0].device_kind} ({args.topology})" if devices else f"{jax.devices()[0].platform} backend"
    print(f"XLA memory_analysis per device (attention={args.attention}, {backend}):")
    layouts = [False] if args.unrolled_only else ([True, False] if args.compare_unrolled else [True])
    compile_times = {}
    for scan in layouts:
        layout = "scanned" if scan else "unrolled"
        chars, lower_s, compile_s, mem = compile_step(
            models.get_model_config(args.scale, dtype=args.dtype, remat_policy=plan.remat_policy,
                                    attention=args.attention, scan_layers=scan), plan, args.lower_only, devices)
        if args.lower_only:
            print(f"  {layout:<8} lowered StableHLO {chars:,} chars, lower {lower_s:.1f} s")
            continue
        compile_times[layout] = compile_s
        total = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
        print(f"  {layout:<8} arguments {mem.argument_size_in_bytes / plans.GiB:8.2f} GiB  outputs "
              f"{mem.output_size_in_bytes / plans.GiB:8.2f} GiB  aliased {mem.alias_size_in_bytes / plans.GiB:8.2f} GiB  "
              f"temporaries {mem.temp_size_in_bytes / plans.GiB:8.2f} GiB  total {total / plans.GiB:8.2f} GiB "
              f"({'fits' if total <= chip_bytes else 'DOES NOT FIT'} {chip_bytes / plans.GiB:.1f} GiB)")
        print(f"  {layout:<8} lowered StableHLO {chars:,} chars, lower {lower_s:.1f} s, compile {compile_s:.1f} s")
    if len(compile_times) == 2:
        print(f"compile time scanned / unrolled = {compile_times['scanned'] / compile_times['unrolled']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
