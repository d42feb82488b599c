"""The fitter installs and runs alone: no TensorFlow, seqio, gin, Flax, optax or orbax.

1. An import blocker in a clean subprocess: every module of atlas_t5x.scaling, the log reader and
   the fitter-side commands import with the whole training stack refused (JAX included), and
   `atlas-export` + `atlas-fit` run on small generated logs with only JAX allowed (the fitter's
   gradient polish uses JAX's float64 autodiff).
2. A static check: no module under atlas_t5x/scaling imports the trainer, models, data pipeline
   or the training stack, at any depth of the file (lazy imports included).
3. A fresh venv holding only the base install's dependency closure (symlinked from the project
   venv, no network): `import tensorflow` fails there, the fitter runs, and `atlas-train` answers
   with one line naming the `train` extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from atlas_t5x import logio, schema

REPO = Path(__file__).resolve().parents[1]
TRAINING_STACK = ("tensorflow", "tensorflow_text", "tensorflow_datasets", "seqio", "gin", "jax", "jaxlib",
                  "flax", "optax", "orbax", "clu", "sentencepiece", "apache_beam", "absl")
FITTER_COMMANDS = ("fit", "plan", "transfer", "report", "export")
# modules the fitter side must never import (the training side of the package)
TRAINING_MODULES = ("atlas_t5x.trainer", "atlas_t5x.models", "atlas_t5x.partitioning", "atlas_t5x.checkpoints",
                    "atlas_t5x.optim", "atlas_t5x.losses", "atlas_t5x.callbacks", "atlas_t5x.sweeps",
                    "atlas_t5x.launch", "atlas_t5x.plans", "atlas_t5x.data.pipeline", "atlas_t5x.data.madlad",
                    "atlas_t5x.data.mixtures", "atlas_t5x.data.vocab", "atlas_t5x.data.tfds_madlad",
                    "atlas_t5x.eval.callback", "atlas_t5x.eval.writer", "atlas_t5x.eval.live",
                    "atlas_t5x.preprocess", "atlas_t5x_tasks", "tasks")


def fitter_modules() -> list[str]:
    """Every module of atlas_t5x.scaling plus the fitter-side shared modules and commands."""
    scaling = sorted(f"atlas_t5x.scaling.{p.stem}" for p in (REPO / "atlas_t5x" / "scaling").glob("*.py")
                     if p.stem != "__init__")
    return (["atlas_t5x", "atlas_t5x.data", "atlas_t5x.eval", "atlas_t5x.scaling", "atlas_t5x.schema",
             "atlas_t5x.logio", "atlas_t5x.logs", "atlas_t5x.mixture_weights", "atlas_t5x.languages",
             "atlas_t5x.cli.common"] + scaling + [f"atlas_t5x.cli.{c}" for c in FITTER_COMMANDS])


def write_study_logs(root: Path, sizes=(2e7, 5e7, 1.2e8, 3e8), evals: int = 4) -> Path:
    """Eval logs of monolingual runs whose loss follows a Chinchilla law (en and de, no noise);
    each run's last evaluation is its `final` point."""
    for lang, (E, A, B) in {"en": (1.8, 400.0, 2000.0), "de": (2.0, 300.0, 1500.0)}.items():
        for N in sizes:
            run = f"mono_{lang}_N{N:.0e}"
            rows = []
            for i, D in enumerate(N * float(tokens_per_param) for tokens_per_param in (5, 10, 20, 40)[:evals]):
                loss = E + A / N ** 0.34 + B / D ** 0.28
                tokens = int(D)
                rows.append({
                    "schema_version": schema.SCHEMA_VERSION, "run": run, "step": 100 * (i + 1), "target": lang,
                    "loss": loss, "loss_unigram_norm": loss - 1.0, "bits_per_byte": loss / 2.0,
                    "eval_tokens": 4096, "tokens": tokens, "tokens_by_lang": {lang: tokens},
                    "unique_by_lang": {lang: 10 ** 12}, "epochs_by_lang": {lang: tokens / 1e12},
                    "params": int(N), "params_nonembed": int(0.9 * N), "flops": 6.0 * N * tokens,
                    "mixture": {"name": f"monolingual_{lang}", "weights": {lang: 1.0}}, "lr": 1e-3,
                    "schedule_phase": "final" if i == evals - 1 else "cooldown_end", "init": "scratch",
                    "vocab": "byte", "vocab_size": 259, "seq_len": 128, "batch": 8, "scale": "tiny",
                })
            logio.append_jsonl(root / run / "logs" / "eval.jsonl", rows)
    return root


BLOCKER = textwrap.dedent("""
    import importlib.abc, sys

    class RefuseTrainingStack(importlib.abc.MetaPathFinder):
        def __init__(self, refused):
            self.refused = set(refused)

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.refused:
                raise ImportError(f"refused import of {name} (fitter-only test)")
            return None

    sys.meta_path.insert(0, RefuseTrainingStack(REFUSED))
""")


def _run_blocked(code: str, refused, tmp_path: Path) -> subprocess.CompletedProcess:
    script = f"REFUSED = {tuple(refused)!r}\n" + BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_fitter_modules_import_with_the_training_stack_refused(tmp_path):
    code = f"""
        import importlib
        for name in {fitter_modules()!r}:
            importlib.import_module(name)
        loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set(REFUSED))
        trainer_side = sorted(m for m in sys.modules if m.startswith({TRAINING_MODULES!r}))
        print(loaded, trainer_side)
    """
    result = _run_blocked(code, TRAINING_STACK, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[] []"


def test_export_and_fit_run_with_only_jax_allowed(tmp_path):
    runs = write_study_logs(tmp_path / "runs")
    refused = [m for m in TRAINING_STACK if m not in ("jax", "jaxlib")]
    code = f"""
        from atlas_t5x.cli import export, fit
        assert export.main([{str(runs)!r}, "--out", "logs"]) == 0
        assert fit.main(["--logs", "logs.parquet", "--law", "csl", "--no_select", "--no_plots", "--out", "fit"]) == 0
        print(sorted({{m.split('.')[0] for m in sys.modules}} & set(REFUSED)))
    """
    result = _run_blocked(code, refused, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit["targets"] == ["de", "en"] and fit["n_points"] == 32
    # noiseless Chinchilla data: the fit recovers the exponents it was drawn from
    assert fit["per_target"]["en"]["params"]["alpha"] == pytest.approx(0.34, abs=0.03)
    assert fit["per_target"]["en"]["params"]["beta"] == pytest.approx(0.28, abs=0.03)
    assert fit["r2_in_sample"] > 0.999
    # the first status line comes before the fit's output (progress visible at once)
    assert result.stderr.index("reading points from") < result.stderr.index("fitting csl")


def _imports_of(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_scaling_imports_nothing_of_the_training_side_statically():
    """The layer rule of docs/architecture.md: atlas_t5x.scaling (and the log reader, schema and
    fitter commands) import only the standard library, numpy/scipy/pandas/pyarrow/matplotlib/
    sklearn, JAX (inside functions) and the fitter's own modules."""
    files = sorted((REPO / "atlas_t5x" / "scaling").glob("*.py")) + [
        REPO / "atlas_t5x" / f for f in ("logs.py", "logio.py", "schema.py", "mixture_weights.py")] + [
        REPO / "atlas_t5x" / "cli" / f"{c}.py" for c in FITTER_COMMANDS + ("common",)]
    refused = set(TRAINING_STACK) - {"jax", "jaxlib"}
    problems = []
    for path in files:
        for name in _imports_of(path):
            if name.split(".")[0] in refused or name.startswith(TRAINING_MODULES):
                problems.append(f"{path.relative_to(REPO)} imports {name}")
        if path.parent.name == "scaling":
            top_level = {n for node in ast.parse(path.read_text()).body
                         if isinstance(node, (ast.Import, ast.ImportFrom))
                         for n in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])}
            problems += [f"{path.relative_to(REPO)} imports {n} at import time" for n in top_level
                         if n.split(".")[0] == "jax"]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# A fresh venv holding only the base install's dependency closure


def _parse_requirement(text: str) -> tuple[str, tuple[str, ...], str]:
    """(name, extras, marker) of a requirement such as 'etils[epath]>=1.7; python_version<"3.12"'."""
    spec, _, marker = text.partition(";")
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[([^\]]*)\])?", spec)
    extras = tuple(e.strip() for e in (match.group(2) or "").split(",") if e.strip())
    return match.group(1), extras, marker.strip()


def _marker_holds(marker: str, extra: str = "") -> bool:
    from packaging.markers import Marker

    return not marker or Marker(marker).evaluate({"extra": extra})


def base_dependency_closure(project: str = "atlas_t5x") -> dict[str, importlib.metadata.Distribution]:
    """The distributions the base install needs, resolved recursively from the installed metadata:
    requirement markers evaluated, a dependency's extras followed only where a requirement names
    them (e.g. etils[epath]); the project's own extras (train, test, beam) never."""
    # the installed metadata in site-packages (not a stale atlas_t5x.egg-info in the checkout)
    site_packages = [sysconfig.get_paths()["purelib"]]

    def distribution(name: str) -> importlib.metadata.Distribution:
        found = list(importlib.metadata.distributions(name=name, path=site_packages))
        if not found:
            raise importlib.metadata.PackageNotFoundError(name)
        return found[0]

    closure: dict[str, importlib.metadata.Distribution] = {}
    todo = [r for r in distribution(project).requires or [] if _marker_holds(_parse_requirement(r)[2])]
    while todo:
        name, extras, _ = _parse_requirement(todo.pop())
        dist = distribution(name)
        key = re.sub(r"[-_.]+", "-", name).lower()
        wanted = [r for r in dist.requires or []
                  if any(_marker_holds(_parse_requirement(r)[2], e) for e in ("",) + extras)]
        if key not in closure:
            closure[key] = dist
            todo += [r for r in wanted if _marker_holds(_parse_requirement(r)[2])]
        todo += [r for r in wanted if not _marker_holds(_parse_requirement(r)[2])
                 and re.sub(r"[-_.]+", "-", _parse_requirement(r)[0]).lower() not in closure]
    return closure


def _top_level_entries(dist: importlib.metadata.Distribution) -> set[str]:
    """The first path component of every file a distribution installed into site-packages."""
    entries = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first in ("..", "__pycache__") or first.endswith(".pth"):
            continue
        entries.add(first)
    return entries


@pytest.fixture(scope="module")
def fitter_venv(tmp_path_factory) -> Path:
    """python -m venv (no pip, no network) + symlinks to the closure's files + a .pth for the repo."""
    root = tmp_path_factory.mktemp("fitter_venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = root / "site"
    site.mkdir()
    for dist in base_dependency_closure().values():
        base = Path(dist.locate_file(""))
        for entry in _top_level_entries(dist):
            target = base / entry
            if target.exists() and not (site / entry).exists():
                (site / entry).symlink_to(target)
    assert (site / "numpy").exists() and not (site / "tensorflow").exists() and not (site / "flax").exists()
    # the package itself, as an install would place it (not the checkout root, whose gin/ folder of
    # config files would import as a namespace package named gin)
    (site / "atlas_t5x").symlink_to(REPO / "atlas_t5x")
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    (venv_site / "atlas_fitter_only.pth").write_text(f"{site}\n")
    return venv


def _venv_python(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_base_dependency_closure_holds_no_training_stack():
    names = set(base_dependency_closure())
    assert {"numpy", "scipy", "pandas", "pyarrow", "matplotlib", "jax"} <= names
    training = {"tensorflow", "tensorflow-text", "tensorflow-datasets", "seqio", "gin-config", "flax", "optax",
                "orbax-checkpoint", "clu", "sentencepiece", "apache-beam", "absl-py"}
    assert not names & training, sorted(names & training)


def test_fresh_fitter_venv_has_no_tensorflow_and_fits(fitter_venv, tmp_path):
    runs = write_study_logs(tmp_path / "runs", sizes=(2e7, 5e7, 1.2e8, 3e8))
    probe = _venv_python(fitter_venv, "import sys\n"
                         "for name in ('tensorflow', 'seqio', 'gin', 'flax', 'optax', 'orbax'):\n"
                         "    try:\n        __import__(name)\n    except ImportError:\n        continue\n"
                         "    sys.exit(f'{name} importable')\n"
                         "import atlas_t5x.logs, atlas_t5x.scaling.fit_run; print(sys.prefix)", tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.strip() == str(fitter_venv)
    run = _venv_python(fitter_venv, textwrap.dedent(f"""
        import sys
        from atlas_t5x.cli import export, fit
        assert export.main([{str(runs)!r}, "--out", "logs"]) == 0
        sys.exit(fit.main(["--table", "logs.csv", "--law", "csl", "--no_select", "--no_plots", "--out", "fit"]))
    """), tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit["n_points"] == 32 and fit["per_target"]["de"]["params"]["alpha"] == pytest.approx(0.34, abs=0.03)


def test_fresh_fitter_venv_asked_to_train_names_the_extra(fitter_venv, tmp_path):
    result = subprocess.run([str(fitter_venv / "bin" / "python"), "-m", "atlas_t5x.cli.train",
                             f"--gin_file={REPO / 'gin/runs/smoke.gin'}", f"--model_dir={tmp_path / 'm'}"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'atlas_t5x[train]'" in lines[0] and "tensorflow" in lines[0], lines
    assert not (tmp_path / "m").exists()
