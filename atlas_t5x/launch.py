"""Cluster launch files for a sweep (`scripts/sweep.py --print`): commands, SLURM, TPU VM.

Every run gets one `scripts/train.py` command with absolute paths (interpreter, script, gin
files, model_dir), its scale's sharding plan for the target slice as gin flags
(`atlas_t5x.plans.select_plan`, unless the spec binds those names itself), the vocabulary as
an absolute path when it is a file, the corpus as `MADLAD_DIR` (the `--corpus` folder, or the
launching shell's `$MADLAD_DIR`, which must be set), and, on multi-host slices, the multi-host
start (`--gin.maybe_initialize_distributed.auto_detect=True`: SLURM and TPU VMs describe the
job in the environment).

Written under OUT/launch/ (SLURM files for GPU targets, the TPU VM script for TPU targets):

* `sweep.sbatch`: a SLURM array script; task i runs run i with `srun`, one task per host;
* `submit.sh`: submits the from-scratch runs as one array job, then each finetune as its own
  array task with `--dependency=afterok:<source job>_<source index>`;
* `tpu_vm.sh`: one `gcloud compute tpus tpu-vm ssh --worker=all` line per run (all hosts of
  the slice start the same command), finetunes after their sources.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Sequence

from atlas_t5x import plans, sweeps

MULTI_HOST_FLAG = "--gin.maybe_initialize_distributed.auto_detect=True"
PLAN_NAMES = ("MeshConfig.data", "MeshConfig.fsdp", "MeshConfig.tensor", "ModelConfig.remat_policy",
              "train.num_microbatches")
MADLAD_ENV = 'MADLAD_DIR="${MADLAD_DIR:?set MADLAD_DIR to the MADLAD-400 corpus root}"'


@dataclasses.dataclass(frozen=True)
class LaunchRun:
    """One run's launch: its spec, its index in the SLURM array and its argv."""

    run: sweeps.RunSpec
    index: int
    argv: tuple[str, ...]


def _bound_names(run: sweeps.RunSpec) -> set[str]:
    return {b.split("=", 1)[0].strip() for b in run.settings.get("gin_bindings") or ()}


def plan_flags(run: sweeps.RunSpec, target: plans.Target) -> list[str]:
    """`--gin.NAME=VALUE` flags of the run's sharding plan on `target` (spec bindings win).

    Raises:
      SweepError: no plan of the target fits the run (the message gives the figures).
    """
    dtype = (run.settings.get("model_overrides") or {}).get("dtype", "bfloat16")
    try:
        plan = plans.select_plan(sweeps.scale_config(run.scale), target.devices, target.chip_bytes, run.seq_len, run.batch,
                                 dtype=dtype, devices_per_host=target.devices_per_host)
    except plans.PlanError as err:
        raise sweeps.SweepError(f"run {run.name!r} on {target.name}: {err}") from None
    bound = _bound_names(run)
    return [f"--gin.{b.replace(' = ', '=')}" for b in plan.gin_bindings() if b.split(" = ")[0] not in bound]


def _vocab_flags(run: sweeps.RunSpec) -> list[str]:
    vocab = str(run.settings["vocab"])
    if not (vocab.endswith(".model") or os.sep in vocab):
        return [f"--gin.make_train_pipeline.vocab={json.dumps(vocab)}"]
    path = str(Path(vocab).expanduser().resolve())
    flags = [f"--gin.make_train_pipeline.vocab={json.dumps(path)}"]
    if not run.settings.get("vocab_size"):
        flags.append(f"--gin.model_vocab_size.name={json.dumps(path)}")
    return flags


def run_argv(run: sweeps.RunSpec, out_dir: Path, target: plans.Target, python: str) -> list[str]:
    """The absolute-path train command of one run (without the MADLAD_DIR environment)."""
    out_dir = Path(out_dir).resolve()
    model_dir = run.model_dir(out_dir)
    gin_files = [str(Path(f) if os.path.isabs(f) else sweeps.REPO_ROOT / f) for f in sweeps.gin_files(run)]
    argv = [python, str(sweeps.REPO_ROOT / "scripts" / "train.py"), f"--model_dir={model_dir}",
            *(f"--gin_file={f}" for f in gin_files), f"--gin_file={model_dir / sweeps.RUN_GIN}",
            *_vocab_flags(run), *plan_flags(run, target)]
    if target.devices > target.devices_per_host:
        argv.append(MULTI_HOST_FLAG)
    return argv


def _madlad(corpus: str | None) -> str:
    return f"MADLAD_DIR={shlex.quote(str(Path(corpus).resolve()))}" if corpus else MADLAD_ENV


def command_line(argv: Sequence[str], corpus: str | None) -> str:
    """`env MADLAD_DIR=... python .../train.py ...` as one shell line."""
    return f"env {_madlad(corpus)} {shlex.join(argv)}"


def prepare(runs: Sequence[sweeps.RunSpec], out_dir: Path, target: plans.Target,
            python: str | None = None) -> list[LaunchRun]:
    """LaunchRuns in execution order (finetunes after their sources), plans checked for every run."""
    ordered = sweeps.execution_order(runs)
    names = {r.name for r in ordered}
    for r in ordered:
        if r.init_from is not None and r.init_from not in names:
            raise sweeps.SweepError(
                f"finetune {r.name!r} starts from {r.init_from!r}, which is not among the runs printed: "
                "add it (a scheduler could not order them otherwise)")
    python = python or sys.executable
    return [LaunchRun(r, i, tuple(run_argv(r, out_dir, target, python))) for i, r in enumerate(ordered)]


def _ranges(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5, 7, 8] → "0-2,5,7-8" (SLURM --array syntax)."""
    parts, start = [], None
    for i, k in enumerate(indices):
        if start is None:
            start = k
        if i + 1 == len(indices) or indices[i + 1] != k + 1:
            parts.append(str(start) if start == k else f"{start}-{k}")
            start = None
    return ",".join(parts)


def slurm_array_script(launch: Sequence[LaunchRun], name: str, out_dir: Path, target: plans.Target,
                       corpus: str | None) -> str:
    """sweep.sbatch: array task i runs launch[i] on every host of its allocation through srun."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(name))[:64] or "sweep"  # a spec's name is data
    hosts = max(1, target.devices // target.devices_per_host)
    lines = [
        "#!/bin/bash",
        f"# Sweep {name}: {len(launch)} runs on {target.description}. Submit with submit.sh",
        "# (from-scratch runs as one array, finetunes after their sources).",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={hosts}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --array={_ranges([r.index for r in launch])}",
        f"#SBATCH --output={Path(out_dir).resolve() / 'launch' / 'logs' / '%A_%a.out'}",
    ]
    lines.append(f"#SBATCH --gpus-per-node={target.devices_per_host}")
    lines += ["set -euo pipefail"]
    if corpus:
        lines.append(f"export {_madlad(corpus)}")
    else:
        lines.append(f"export {MADLAD_ENV}")
    lines += ['case "$SLURM_ARRAY_TASK_ID" in']
    for r in launch:
        argv = list(r.argv) + ([] if MULTI_HOST_FLAG in r.argv else [MULTI_HOST_FLAG])
        lines.append(f"  {r.index}) CMD=({shlex.join(argv)}) ;;  # {r.run.name}")
    lines += [
        '  *) echo "no run for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;',
        "esac",
        'srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 "${CMD[@]}"',
    ]
    return "\n".join(lines) + "\n"


def slurm_submit_script(launch: Sequence[LaunchRun]) -> str:
    """submit.sh: the scratch runs as one array job, each finetune with afterok on its source's task."""
    by_name = {r.run.name: r for r in launch}
    job_of: dict[str, str] = {}
    scratch = [r for r in launch if r.run.init_from is None]
    lines = ["#!/bin/bash", "set -euo pipefail", 'cd "$(dirname "$0")"']
    if scratch:
        lines.append(f"SCRATCH=$(sbatch --parsable --array={_ranges([r.index for r in scratch])} sweep.sbatch)")
        lines.append('echo "from-scratch runs: array job $SCRATCH"')
        job_of.update({r.run.name: "SCRATCH" for r in scratch})
    for r in launch:
        if r.run.init_from is None:
            continue
        source = by_name[r.run.init_from]
        var = f"FT_{r.index}"
        lines.append(f"{var}=$(sbatch --parsable --array={r.index} "
                     f"--dependency=afterok:${{{job_of[source.run.name]}}}_{source.index} sweep.sbatch)"
                     f"  # {r.run.name} after {source.run.name}")
        job_of[r.run.name] = var
    return "\n".join(lines) + "\n"


def tpu_vm_script(launch: Sequence[LaunchRun], corpus: str | None) -> str:
    """tpu_vm.sh: per run, one ssh to all workers of $TPU_NAME starting the same command."""
    lines = ["#!/bin/bash", "# Runs the sweep on a TPU VM slice: every worker starts the same command.",
             "set -euo pipefail", ': "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"']
    if not corpus:
        lines.append(': "${MADLAD_DIR:?set MADLAD_DIR to the MADLAD-400 corpus root (same path on every worker)}"')
    for r in launch:
        argv = list(r.argv) + ([] if MULTI_HOST_FLAG in r.argv else [MULTI_HOST_FLAG])
        madlad = f"MADLAD_DIR={shlex.quote(str(Path(corpus).resolve()))}" if corpus else 'MADLAD_DIR="$MADLAD_DIR"'
        remote = f"env {madlad} {shlex.join(argv)}"
        lines.append(f'gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all '
                     f'--command={_double_quote(remote)}  # {r.run.name}')
    return "\n".join(lines) + "\n"


def _double_quote(text: str) -> str:
    """`text` inside double quotes for bash, expanding only $MADLAD_DIR locally."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return '"' + escaped.replace("$", "\\$").replace('\\$MADLAD_DIR', "$MADLAD_DIR") + '"'


def is_tpu(target: plans.Target) -> bool:
    return target.name.startswith("tpu")


def write_launch_files(launch: Sequence[LaunchRun], name: str, out_dir: Path, target: plans.Target,
                       corpus: str | None) -> dict[str, Path]:
    """Writes OUT/launch/{sweep.sbatch, submit.sh} (GPU targets) or tpu_vm.sh (TPU targets).

    Files are written atomically and made executable; returns {file name: path}.
    """
    from atlas_t5x import logio

    folder = Path(out_dir).resolve() / "launch"
    if is_tpu(target):
        files = {"tpu_vm.sh": tpu_vm_script(launch, corpus)}
    else:
        files = {
            "sweep.sbatch": slurm_array_script(launch, name, out_dir, target, corpus),
            "submit.sh": slurm_submit_script(launch),
        }
    paths = {}
    for file_name, text in files.items():
        path = folder / file_name
        logio.write_atomic(path, text)
        path.chmod(0o755)
        paths[file_name] = path
    if not is_tpu(target):
        (folder / "logs").mkdir(exist_ok=True)
    return paths
