"""Cluster launch files of `atlas-sweep --print` with --out gs://... (atlas_t5x.launch): GKE
JobSets and xpk for TPU fleets, per-run SLURM jobs for GPU fleets; parsed, not submitted."""

import base64
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from atlas_t5x import plans
from atlas_t5x.cli import sweep as sweep_cli

REPO = Path(__file__).resolve().parents[1]
PAPER = str(REPO / "gin/sweeps/paper.yaml")
RUNS = "mono-en-scale0,mono-en-scale34,unimax-scale34,ft-unimax-scale34-to-en"


def _print(tmp_path, monkeypatch, target, *extra):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")  # no gcloud: remote paths are named as not checked
    return sweep_cli.main([PAPER, "--print", "--target", target, "--out", "gs://bkt/atlas", "--only", RUNS,
                           "--vocab", "gs://bkt/spm64k.model", "--corpus", "gs://bkt/madlad",
                           "--stats", "gs://bkt/stats.json", *extra])


def _no_local_paths(text: str, tmp_path: Path) -> None:
    assert str(tmp_path) not in text and str(REPO) not in text and "/work/" not in text
    assert "gs:/bkt" not in text.replace("gs://bkt", "")  # a URL never collapses into a local 'gs:' path


def _run_gin(script: str) -> str:
    encoded = re.search(r"echo ([A-Za-z0-9+/=]+) \| base64 -d", script).group(1)
    return base64.b64decode(encoded).decode()


def test_tpu_jobsets_are_sized_per_run_and_retry(tmp_path, monkeypatch, capsys):
    assert _print(tmp_path, monkeypatch, "tpu_v5e_256") == 0
    err = capsys.readouterr().err
    assert "--corpus gs://bkt/madlad: not checked (no gcloud client here)" in err
    assert not any(p.name.startswith("gs") for p in tmp_path.iterdir())  # no local gs: folder
    folder = tmp_path / "launch" / "atlas_paper"
    docs = {p.name: yaml.safe_load(p.read_text()) for p in sorted((folder / "jobsets").glob("*.yaml"))}
    assert list(docs) == ["000-mono-en-scale0.yaml", "001-mono-en-scale34.yaml", "002-unimax-scale34.yaml",
                          "003-ft-unimax-scale34-to-en.yaml"]
    target = plans.TARGETS["tpu_v5e_256"]
    for name, doc in docs.items():
        _no_local_paths((folder / "jobsets" / name).read_text(), tmp_path)
        assert doc["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and doc["kind"] == "JobSet"
        assert doc["spec"]["failurePolicy"]["maxRestarts"] >= 3
        job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
        pod = job["template"]["spec"]
        topology = pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"]
        chips = math_prod(topology)
        assert chips in target.slices and pod["nodeSelector"]["cloud.google.com/gke-tpu-accelerator"] == \
            "tpu-v5-lite-podslice"
        container = pod["containers"][0]
        assert job["parallelism"] == job["completions"] == target.hosts(chips)
        assert container["resources"]["limits"]["google.com/tpu"] * job["parallelism"] == chips
        assert {"name": "MADLAD_DIR", "value": "gs://bkt/madlad"} in container["env"]
        script = container["command"][2]
        words = shlex.split(script.rsplit("exec ", 1)[1])
        assert words[:3] == ["python", "-m", "atlas_t5x.cli.train"]
        run = doc["metadata"]["annotations"]["atlas-t5x/run-name"]
        assert f"--model_dir=gs://bkt/atlas/runs/{run}" in words
        assert '--gin.make_train_pipeline.vocab="gs://bkt/spm64k.model"' in words
        mesh = [int(next(w for w in words if w.startswith(f"--gin.MeshConfig.{a}=")).split("=")[1])
                for a in ("data", "fsdp", "tensor")]
        assert mesh[0] * mesh[1] * mesh[2] == chips
        eval_rows = int(next(w for w in words if w.startswith("--gin.PerLanguageEval.batch_size=")).split("=")[1])
        assert eval_rows % (mesh[0] * mesh[1]) == 0 and eval_rows <= int(doc["metadata"]["annotations"].get(
            "atlas-t5x/global-batch", 2048))
        assert ("--gin.maybe_initialize_distributed.auto_detect=True" in words) == (target.hosts(chips) > 1)
        gin_text = _run_gin(script)
        assert "PerLanguageEval.cache_dir = 'gs://bkt/atlas/cache/unigram'" in gin_text
    chips = {n: math_prod(d["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["nodeSelector"]
                          ["cloud.google.com/gke-tpu-topology"]) for n, d in docs.items()}
    assert chips["000-mono-en-scale0.yaml"] <= 32 and chips["000-mono-en-scale0.yaml"] < chips["001-mono-en-scale34.yaml"]
    ft = docs["003-ft-unimax-scale34-to-en.yaml"]["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert "train.init_from = 'gs://bkt/atlas/runs/unimax-scale34'" in _run_gin(
        ft["template"]["spec"]["containers"][0]["command"][2])

    submit = (folder / "submit_jobsets.sh").read_text().splitlines()
    applies = [l for l in submit if l.startswith("apply ")]
    assert [l.split()[1] for l in applies] == ["jobsets/000-mono-en-scale0.yaml", "jobsets/001-mono-en-scale34.yaml",
                                              "jobsets/002-unimax-scale34.yaml"]
    assert any(l.startswith("(wait_done unimax-scale34 && apply jobsets/003-ft-unimax-scale34-to-en.yaml)")
               for l in submit)

    xpk = [shlex.split(l.split("  # ")[0]) for l in (folder / "xpk.sh").read_text().splitlines()
           if l.startswith("xpk workload create")]
    assert len(xpk) == 3
    for words in xpk:
        assert words[words.index("--tpu-type") + 1] in {f"v5litepod-{c}" for c in target.slices}
        assert int(words[words.index("--max-restarts") + 1]) >= 3
        _no_local_paths(words[words.index("--command") + 1], tmp_path)
    assert "--wait-for-job-completion=unimax-scale34" in (folder / "xpk.sh").read_text()


def math_prod(topology: str) -> int:
    a, b = topology.split("x")
    return int(a) * int(b)


def test_gpu_fleet_gets_per_run_slurm_jobs(tmp_path, monkeypatch, capsys):
    assert _print(tmp_path, monkeypatch, "gpu_h100_64") == 0
    folder = tmp_path / "launch" / "atlas_paper" / "slurm"
    submit = (folder / "submit.sh").read_text()
    assert re.search(r"^J3=\$\(sbatch --parsable --dependency=afterok:\$\{J2\} 003-ft-unimax-scale34-to-en\.sbatch\)",
                     submit, flags=re.M)
    nodes = {}
    for path in sorted(folder.glob("*.sbatch")):
        text = path.read_text()
        _no_local_paths(text, tmp_path)
        assert "#SBATCH --requeue" in text and "#SBATCH --gpus-per-node=8" in text
        nodes[path.name] = int(re.search(r"#SBATCH --nodes=(\d+)", text).group(1))
        assert f"srun --nodes={nodes[path.name]} " in text
    assert nodes["000-mono-en-scale0.sbatch"] == 1 and nodes["001-mono-en-scale34.sbatch"] > 1


@pytest.mark.parametrize("extra, message", [
    (["--corpus", "/data/madlad"], "--corpus '/data/madlad' is a local path"),
    (["--vocab", "spm/local.model"], "is a local path; the workers cannot read it"),
])
def test_local_paths_are_refused_for_cluster_files(tmp_path, monkeypatch, capsys, extra, message):
    assert _print(tmp_path, monkeypatch, "tpu_v5e_256", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "launch").exists()


def test_print_takes_slices_and_eval_batch_from_a_rehearsal(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    only = "mono-en-scale0,mono-en-scale34"
    assert sweep_cli.main([PAPER, "--rehearse", "--no_compile", "--target", "tpu_v5e_256", "--only", only,
                           "--out", "reh", "--no_progress"]) == 0
    record = yaml.safe_load((tmp_path / "reh" / "rehearsal.json").read_text())
    row = next(r for r in record["runs"] if r["run"] == "mono-en-scale0")
    row["slice_chips"], row["mesh"], row["eval_batch"] = 16, [1, 16, 1], 48  # as if a compile had moved it
    (tmp_path / "reh" / "rehearsal.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert sweep_cli.main([PAPER, "--print", "--target", "tpu_v5e_256", "--out", "gs://bkt/atlas", "--only", only,
                           "--vocab", "gs://bkt/v.model", "--rehearsal", "reh/rehearsal.json"]) == 0
    doc = yaml.safe_load((tmp_path / "launch/atlas_paper/jobsets/000-mono-en-scale0.yaml").read_text())
    pod = doc["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "4x4"
    words = shlex.split(pod["containers"][0]["command"][2].rsplit("exec ", 1)[1])
    assert "--gin.MeshConfig.fsdp=16" in words and "--gin.PerLanguageEval.batch_size=48" in words
    assert sweep_cli.main([PAPER, "--print", "--target", "gpu_h100_64", "--out", "gs://bkt/atlas", "--only", only,
                           "--vocab", "gs://bkt/v.model", "--rehearsal", "reh/rehearsal.json"]) == 2
    assert "made for target 'tpu_v5e_256'" in capsys.readouterr().err
