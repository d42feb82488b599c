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
from typing import Callable, Sequence

from atlas_t5x import models, plans, sweeps

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


# ------------------------------------------------------------------------------------------
# Portable launch files (no paths of this machine): GKE JobSet and xpk for TPU fleets, SLURM with
# per-run node counts for GPU fleets. Every run is placed on its own slice (plans.place).

JOBSET_API = "jobset.x-k8s.io/v1alpha2"
MAX_RESTARTS = 10  # preemptions a run survives; each restart resumes from its newest checkpoint
RUN_GIN_ON_WORKER = "/tmp/atlas_t5x/sweep_run.gin"
CODE_NOTE = ("the workers run an image holding a checkout of this repository (working directory) with "
             "`pip install -e '.[train,tpu]'` (GPU: '.[train]' and jax[cuda12]) installed")


def _is_url(path: str | None) -> bool:
    return bool(path) and "://" in str(path)


def join_url(base: str, *parts: str) -> str:
    """`base`/parts for a URL (gs://...) without touching the local filesystem."""
    return "/".join([str(base).rstrip("/"), *parts])


def check_remote_paths(paths: dict[str, str | None], runner=None) -> list[str]:
    """One line per named remote path: found, missing, or why it was not checked.

    Uses `gcloud storage ls` when gcloud is installed (30 s limit per path); otherwise says
    the path was not checked. Local files or bare names are left to the caller's checks.
    """
    import shutil
    import subprocess

    lines = []
    gcloud = shutil.which("gcloud")
    for what, path in paths.items():
        if not _is_url(path):
            continue
        if not str(path).startswith("gs://") or not gcloud:
            lines.append(f"{what} {path}: not checked (no gcloud client here)")
            continue
        try:
            proc = (runner or subprocess.run)([gcloud, "storage", "ls", str(path)], capture_output=True, text=True,
                                              timeout=30)
            err_text = (proc.stderr or "").strip()
            if proc.returncode == 0:
                lines.append(f"{what} {path}: found")
            elif "authenticat" in err_text.lower() or "credential" in err_text.lower():
                lines.append(f"{what} {path}: not checked (gcloud has no credentials here)")
            else:
                last = err_text.splitlines()[-1] if err_text else f"exit {proc.returncode}"
                lines.append(f"{what} {path}: NOT FOUND or not readable ({last})")
        except (OSError, subprocess.TimeoutExpired) as err:
            lines.append(f"{what} {path}: not checked ({type(err).__name__})")
    return lines


def _portable_vocab(vocab: str) -> tuple[str, list[str]]:
    """(vocabulary value for the workers, problems): a registered name or a URL; never a local path."""
    if _is_url(vocab) or not (vocab.endswith(".model") or os.sep in vocab):
        return vocab, []
    return vocab, [f"vocabulary {vocab!r} is a local path; the workers cannot read it: give --vocab gs://.../x.model"]


@dataclasses.dataclass(frozen=True)
class PortableRun:
    """One run's workload: its slice, plan flags and the shell script every host of it runs."""

    run: sweeps.RunSpec
    index: int
    slice_chips: int
    hosts: int
    plan: plans.Plan
    script: str  # bash script (one line) run on every host, from the image's working directory
    model_dir: str


def portable_script(run: sweeps.RunSpec, out: str, plan: plans.Plan, vocab: str, multi_host: bool,
                    eval_batch: int | None = None) -> tuple[str, str]:
    """(bash script for every host of the run, model_dir). The run's generated gin goes through base64."""
    import base64

    model_dir = join_url(out, "runs", sweeps.check_run_name(run.name, "run"))
    gin_text = sweeps.gin_config(run, out)
    flags = [f"--gin.make_train_pipeline.vocab={json.dumps(vocab)}"]
    if not run.settings.get("vocab_size"):
        flags.append(f"--gin.model_vocab_size.name={json.dumps(vocab)}")
    bound = _bound_names(run)
    flags += [f"--gin.{b.replace(' = ', '=')}" for b in plan.gin_bindings() if b.split(" = ")[0] not in bound]
    from atlas_t5x import rehearsal

    if rehearsal.eval_batch_binding(run) is None:  # PerLanguageEval's default rows, sized to the slice
        flags.append(f"--gin.PerLanguageEval.batch_size="
                     f"{eval_batch or plans.eval_rows(plan, rehearsal.run_config(run).vocab_size, run.batch)}")
    argv = ["python", "-m", "atlas_t5x.cli.train", f"--model_dir={model_dir}",
            *(f"--gin_file={f}" for f in sweeps.gin_files(run)), f"--gin_file={RUN_GIN_ON_WORKER}", *flags]
    if multi_host:
        argv.append(MULTI_HOST_FLAG)
    encoded = base64.b64encode(gin_text.encode()).decode()
    script = (f"set -euo pipefail; mkdir -p {Path(RUN_GIN_ON_WORKER).parent}; "
              f"echo {encoded} | base64 -d > {RUN_GIN_ON_WORKER}; exec {shlex.join(argv)}")
    return script, model_dir


def prepare_portable(runs: Sequence[sweeps.RunSpec], out: str, target: plans.Target, vocab: str | None = None,
                     placements: dict | None = None, max_days: float | None = plans.DEFAULT_MAX_DAYS,
                     mfu: float = plans.DEFAULT_MFU) -> list[PortableRun]:
    """PortableRuns in execution order, each on the smallest slice that fits (analytic unless
    `placements` {run name: (slice_chips, Plan, eval batch)} come from a rehearsal:
    `placements_from_rehearsal`).

    Raises:
      SweepError: --out or the vocabulary is a local path, a finetune's source is missing, or a
        run fits no slice (each named).
    """
    if not _is_url(out):
        raise sweeps.SweepError(f"--out {out!r} is a local path; cluster workers cannot write it: "
                                "give --out gs://BUCKET/FOLDER")
    ordered = sweeps.execution_order(runs)
    names = {r.name for r in ordered}
    launched, problems = [], []
    for i, r in enumerate(ordered):
        if r.init_from is not None and r.init_from not in names:
            problems.append(f"finetune {r.name!r} starts from {r.init_from!r}, which is not among the runs printed")
            continue
        run_vocab, vocab_problems = _portable_vocab(vocab or str(r.settings["vocab"]))
        problems += [f"run {r.name!r}: {p}" for p in vocab_problems]
        from atlas_t5x import rehearsal

        cfg = rehearsal.run_config(r)
        eval_batch = None
        if placements and r.name in placements:
            chips, plan, eval_batch = placements[r.name]
        else:
            try:
                placed = plans.place(cfg, target, r.seq_len, r.batch, r.total_steps, max_days=max_days, mfu=mfu)
            except plans.PlanError as err:
                problems.append(f"run {r.name!r}: {err}")
                continue
            chips, plan = placed.slice_chips, placed.plan
        hosts = target.hosts(chips)
        script, model_dir = portable_script(r, out, plan, run_vocab, hosts > 1, eval_batch)
        launched.append(PortableRun(r, i, chips, hosts, plan, script, model_dir))
    if problems:
        raise sweeps.SweepError("cannot write launch files:\n  " + "\n  ".join(problems))
    return launched


def placements_from_rehearsal(record: dict, target: plans.Target) -> dict:
    """{run: (slice_chips, Plan, eval batch)} of the placed runs of a rehearsal.json record.

    Raises:
      SweepError: the record was made for another target.
    """
    if record.get("target", {}).get("name") != target.name:
        raise sweeps.SweepError(f"the rehearsal was made for target {record.get('target', {}).get('name')!r}, "
                                f"not {target.name!r}")
    out = {}
    for row in record.get("runs", []):
        if not row.get("fits"):
            continue
        data, fsdp, tensor = row["mesh"]
        cfg = models.get_model_config(row["scale"], dtype="bfloat16") if row["scale"] in models.SCALES else None
        memory = (plans.estimate_memory(cfg, row["seq_len"], row["global_batch"], data, fsdp, tensor,
                                        row["remat_policy"], row["microbatches"]) if cfg else None)
        plan = plans.Plan(row["scale"], row["slice_chips"], target.chip_bytes, row["seq_len"], row["global_batch"],
                          data, fsdp, tensor, row["remat_policy"], row["microbatches"], memory)
        out[row["run"]] = (row["slice_chips"], plan, row.get("eval_batch"))
    return out


def k8s_name(run_name: str) -> str:
    """A DNS-1123 name (lower case, digits, '-', at most 40 characters so JobSet's pod names fit)."""
    name = re.sub(r"[^a-z0-9-]+", "-", run_name.lower()).strip("-")
    if len(name) > 40:
        import hashlib

        name = name[:33].rstrip("-") + "-" + hashlib.sha1(run_name.encode()).hexdigest()[:6]
    return name or "run"


def _env(corpus: str | None, stats: str | None) -> list[dict]:
    env = []
    if corpus:
        env.append({"name": "MADLAD_DIR", "value": str(corpus)})
    if stats:
        env.append({"name": "MADLAD_STATS", "value": str(stats)})
    return env


def jobset(item: PortableRun, target: plans.Target, image: str, corpus: str | None, stats: str | None) -> dict:
    """A GKE JobSet for one run: one Job of `hosts` pods on a slice of its topology, restarted on failure."""
    topology = target.topology(item.slice_chips).split(":", 1)[-1]
    per_host = target.chips_per_host(item.slice_chips)
    pod = {
        "restartPolicy": "Never",
        "nodeSelector": {"cloud.google.com/gke-tpu-accelerator": target.gke_accelerator,
                         "cloud.google.com/gke-tpu-topology": topology},
        "containers": [{
            "name": "train",
            "image": image,
            "command": ["bash", "-c", item.script],
            "env": _env(corpus, stats),
            "resources": {"limits": {"google.com/tpu": per_host}},
        }],
    }
    return {
        "apiVersion": JOBSET_API,
        "kind": "JobSet",
        "metadata": {"name": k8s_name(item.run.name),
                     "labels": {"atlas-t5x/run": k8s_name(item.run.name)},
                     "annotations": {"alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool",
                                     "atlas-t5x/run-name": item.run.name,
                                     "atlas-t5x/model-dir": item.model_dir}},
        "spec": {
            "failurePolicy": {"maxRestarts": MAX_RESTARTS},
            "replicatedJobs": [{
                "name": "slice",
                "replicas": 1,
                "template": {"spec": {
                    "parallelism": item.hosts, "completions": item.hosts, "completionMode": "Indexed",
                    "backoffLimit": 0,
                    "template": {"spec": pod},
                }},
            }],
        },
    }


def _sources_then_finetunes(launched: Sequence[PortableRun], submit: Callable[[PortableRun], str],
                            after_source: Callable[[PortableRun, str], str]) -> list[str]:
    """Script lines: every from-scratch run submitted at once, then each finetune in the background
    once its source (by its Kubernetes name) completed, then `wait`."""
    by_name = {item.run.name: item for item in launched}
    lines = [submit(item) for item in launched if item.run.init_from is None]
    lines += [after_source(item, k8s_name(by_name[item.run.init_from].run.name))
              for item in launched if item.run.init_from is not None]
    return lines + ["wait"]


def jobset_submit_script(launched: Sequence[PortableRun], files: dict[str, str]) -> str:
    """submit_jobsets.sh: applies the from-scratch JobSets, then each finetune once its source completed."""
    lines = ["#!/bin/bash", "# Submits the sweep's JobSets (kubectl, context = the GKE cluster with the JobSet "
             "controller).", "# " + CODE_NOTE + "; set IMAGE to it.",
             "set -euo pipefail", 'cd "$(dirname "$0")"', ': "${IMAGE:?set IMAGE to the training image}"',
             'apply() { sed "s|@IMAGE@|$IMAGE|g" "$1" | kubectl apply -f -; }',
             "wait_done() {  # a source must complete (not just stop) before its finetunes start",
             '  kubectl wait --for=condition=Completed "jobset/$1" --timeout=-1s',
             "}"]
    lines += _sources_then_finetunes(
        launched, lambda item: f"apply {files[item.run.name]}  # {item.slice_chips} chips",
        lambda item, source: f"(wait_done {source} && apply {files[item.run.name]}) &  # {item.run.name} after "
                             f"{item.run.init_from}")
    return "\n".join(lines) + "\n"


def xpk_script(launched: Sequence[PortableRun], target: plans.Target, corpus: str | None, stats: str | None) -> str:
    """xpk.sh: one `xpk workload create` per run on its slice type; finetunes wait for their sources."""
    env = " ".join(f"{e['name']}={shlex.quote(e['value'])}" for e in _env(corpus, stats))
    lines = ["#!/bin/bash", "# Submits the sweep through xpk (https://github.com/AI-Hypercomputer/xpk).",
             "# " + CODE_NOTE + "; set IMAGE to it.",
             "set -euo pipefail", ': "${CLUSTER:?set CLUSTER to the xpk cluster}" "${IMAGE:?set IMAGE}"']

    def create(item: PortableRun) -> str:
        command = f"env {env} bash -c {shlex.quote(item.script)}" if env else f"bash -c {shlex.quote(item.script)}"
        return (f'xpk workload create --cluster "$CLUSTER" --workload {k8s_name(item.run.name)} '
                f"--tpu-type {target.xpk_prefix}-{item.slice_chips} --num-slices 1 "
                f'--max-restarts {MAX_RESTARTS} --docker-image "$IMAGE" --command {shlex.quote(command)}')

    lines += _sources_then_finetunes(
        launched, lambda item: create(item) + f"  # {item.run.name}",
        lambda item, source: f'(xpk workload list --cluster "$CLUSTER" --wait-for-job-completion={source} && '
                             f"{create(item)}) &  # {item.run.name} after {item.run.init_from}")
    return "\n".join(lines) + "\n"


def slurm_portable_scripts(launched: Sequence[PortableRun], target: plans.Target, corpus: str | None,
                           stats: str | None) -> dict[str, str]:
    """slurm/<index>-<run>.sbatch (its own node count, requeued on preemption) and slurm/submit.sh."""
    files, submit = {}, ["#!/bin/bash", "set -euo pipefail", 'cd "$(dirname "$0")"',
                         "# " + CODE_NOTE + " on every node; set ATLAS_T5X_DIR to that checkout."]
    job_var = {}
    for item in launched:
        name = f"{item.index:03d}-{k8s_name(item.run.name)}.sbatch"
        exports = [f"export {e['name']}={shlex.quote(e['value'])}" for e in _env(corpus, stats)]
        files[name] = "\n".join([
            "#!/bin/bash",
            f"#SBATCH --job-name={k8s_name(item.run.name)}",
            f"#SBATCH --nodes={item.hosts}",
            "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --gpus-per-node={target.chips_per_host(item.slice_chips)}",
            "#SBATCH --requeue",  # a preempted job goes back to the queue; the trainer resumes
            "#SBATCH --signal=TERM@120",  # the trainer checkpoints on SIGTERM before the job is stopped
            "set -euo pipefail",
            'cd "${ATLAS_T5X_DIR:?set ATLAS_T5X_DIR to the atlas_t5x checkout on the nodes}"',
            *exports,
            f"srun --nodes={item.hosts} --ntasks-per-node=1 bash -c {shlex.quote(item.script)}",
        ]) + "\n"
        var = f"J{item.index}"
        dep = ""
        if item.run.init_from is not None:
            dep = f" --dependency=afterok:${{{job_var[item.run.init_from]}}}"
        submit.append(f"{var}=$(sbatch --parsable{dep} {name})  # {item.run.name}, {item.hosts} node(s)")
        job_var[item.run.name] = var
    files["submit.sh"] = "\n".join(submit) + "\n"
    return files


def write_portable_files(launched: Sequence[PortableRun], folder: Path, target: plans.Target, corpus: str | None,
                         stats: str | None, image: str = "@IMAGE@") -> dict[str, Path]:
    """Writes the engine files under `folder` (a local folder); returns {relative name: path}."""
    import yaml

    from atlas_t5x import logio

    texts: dict[str, str] = {}
    if target.platform == "tpu":
        names = {}
        for item in launched:
            rel = f"jobsets/{item.index:03d}-{k8s_name(item.run.name)}.yaml"
            names[item.run.name] = rel
            texts[rel] = yaml.safe_dump(jobset(item, target, image, corpus, stats), sort_keys=False, width=1 << 16)
        texts["submit_jobsets.sh"] = jobset_submit_script(launched, names)
        texts["xpk.sh"] = xpk_script(launched, target, corpus, stats)
    else:
        texts.update({f"slurm/{k}": v for k, v in slurm_portable_scripts(launched, target, corpus, stats).items()})
    paths = {}
    for rel, text in texts.items():
        path = Path(folder) / rel
        logio.write_atomic(path, text)
        if rel.endswith(".sh") or rel.endswith(".sbatch"):
            path.chmod(0o755)
        paths[rel] = path
    return paths
