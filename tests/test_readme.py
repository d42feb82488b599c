"""The README's command blocks run in a fresh copy of the working tree with nothing beside it.

For each fenced ```bash block of README.md (one test each), the tree (tracked and untracked,
non-ignored files: `git ls-files -co --exclude-standard`) is copied into a fresh temporary folder
that has no ../shared beside it, and the block is executed there with bash (-e, pipefail), so every
README block must work on its own in a fresh clone. The blocks run with:
- `.venv/bin/` replaced by the folder of this interpreter (sys.executable: the checkout's .venv
  under `make test`), a leading `python` by this interpreter, and that folder first on PATH, so
  `.venv/bin/python` and the `.venv/bin/atlas-*` console scripts are this environment's;
- PYTHONPATH = the copy, so the package imported is the copy's, not the editable checkout's;
- XLA_FLAGS unset (conftest's 8 forced CPU devices are for the mesh tests, not for a user's run).

Marker comments in README.md, each on a line of its own between the previous block and a block's
opening fence:
  <!-- readme-test: skip REASON -->      the block cannot run here (a cluster, gs://, Dataflow);
                                         REASON is required (listed when too few commands run)
  <!-- readme-test: slow -->             the block's test is marked slow (the blocks without it
                                         are the fast sample that `make test-fast` runs)
  <!-- readme-test: small OLD => NEW --> small settings: OLD (exact text) is replaced by NEW
                                         before the block runs; OLD must occur in the block
`make ...` lines are not run here: `make test` is this suite itself (CI's .ci/run) and `make demo`
takes about ten minutes; every other command of the README is run or skipped with its reason.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(skip|slow|small)\b(.*?)-->")
FENCE_OPEN = re.compile(r"^```(\w*)\s*$")
MIN_RUN_FRACTION = 2 / 3   # of the README's commands (make lines aside) the full test must run
BLOCK_TIMEOUT_S = 900


@dataclasses.dataclass
class Block:
    """One fenced bash block of the README and the markers before it."""

    line: int                      # 1-based line of the opening fence
    text: str
    skip_reason: str | None = None
    slow: bool = False
    replacements: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def commands(self) -> list[str]:
        """Logical command lines: continuations joined, comments and blank lines dropped."""
        return [c for c in _logical_lines(self.text) if c.strip() and not c.lstrip().startswith("#")]

    def make_lines(self) -> list[str]:
        return [c for c in self.commands() if c.split()[0] == "make"]

    def script(self, python: str) -> str:
        """The block as run here: small settings applied, make lines dropped, `python` and
        `.venv/bin/` pointing at this environment."""
        text = self.text
        for old, new in self.replacements:
            text = text.replace(old, new)
        lines = []
        for command in _logical_lines(text):
            if command.strip() and command.split()[0] == "make":
                continue
            command = re.sub(r"(?<![\w/.])\.venv/bin/", lambda m: str(Path(python).parent) + "/", command)
            command = re.sub(r"^(\s*)python(?=\s)", lambda m: m.group(1) + python, command)
            lines.append(command)
        return "\n".join(lines) + "\n"


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse_readme(text: str) -> list[Block]:
    """The ```bash / ```sh blocks of `text` with their readme-test markers."""
    blocks: list[Block] = []
    pending: list[tuple[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        marker = MARKER.fullmatch(lines[i].strip())   # a whole-line comment, not one quoted in prose
        if marker:
            pending.append((marker.group(1), marker.group(2).strip()))
        opened = FENCE_OPEN.match(lines[i])
        if not opened:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if opened.group(1) in ("bash", "sh", "shell"):
            block = Block(line=i + 1, text="\n".join(lines[i + 1:end]))
            for kind, arg in pending:
                if kind == "skip":
                    if not arg:
                        raise ValueError(f"README.md:{i + 1}: 'readme-test: skip' needs a reason")
                    block.skip_reason = arg
                elif kind == "slow":
                    block.slow = True
                else:
                    old, sep, new = arg.partition("=>")
                    if not sep or not old.strip():
                        raise ValueError(f"README.md:{i + 1}: 'readme-test: small' needs 'OLD => NEW', got {arg!r}")
                    if old.strip() not in block.text:
                        raise ValueError(f"README.md:{i + 1}: small-settings text {old.strip()!r} is not in the block")
                    block.replacements.append((old.strip(), new.strip()))
            blocks.append(block)
        pending = []
        i = end + 1
    return blocks


def copy_tree(destination: Path) -> Path:
    """The working tree's tracked and untracked non-ignored files, copied under `destination`."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs the git checkout to list the working tree's files")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():   # a tracked file deleted in the working tree is not copied
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run_blocks(blocks: list[Block], clone: Path) -> list[tuple[Block, float]]:
    """Runs each block in `clone`; fails naming the README line and the output tail."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(clone), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    timings = []
    for block in blocks:
        start = time.perf_counter()
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.script(sys.executable)],
                              cwd=clone, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        elapsed = time.perf_counter() - start
        output = (proc.stdout + proc.stderr)[-4000:]
        assert proc.returncode == 0, (f"README.md:{block.line}: block exited {proc.returncode} after "
                                      f"{elapsed:.1f} s\n--- block ---\n{block.script(sys.executable)}"
                                      f"--- output (tail) ---\n{output}")
        timings.append((block, elapsed))
    return timings


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    return parse_readme(README.read_text(encoding="utf-8"))


@pytest.fixture
def clone(tmp_path) -> Path:
    if not (Path(sys.executable).parent / "atlas-fit").exists():
        pytest.skip(f"the console scripts are not installed beside {sys.executable} (pip install -e .)")
    clone = copy_tree(tmp_path / "atlas_t5x_clone")
    assert not (clone.parent / "shared").exists() and not (clone / "out").exists()
    return clone


def test_parse_readme_markers_and_commands():
    text = "\n".join([
        "```bash", "make demo   # comment", "make test", "```",
        "<!-- readme-test: skip needs a TPU pod -->",
        "```bash", "python scripts/train.py --a=1 \\", "    --b=2", "```",
        "<!-- readme-test: slow -->", "<!-- readme-test: small --bootstrap 1000 => --bootstrap 5 -->",
        "```bash", "# a comment", ".venv/bin/atlas-plan crossover",
        ".venv/bin/python scripts/fit_atlas.py --bootstrap 1000", "```",
        "```python", "print('not a command block')", "```",
        "Prose quoting `<!-- readme-test: skip REASON -->` marks nothing.", "```bash", "ls", "```",
    ])
    first, skipped, slow, plain = parse_readme(text)
    assert plain.skip_reason is None and not plain.slow and plain.commands() == ["ls"]
    assert first.make_lines() == ["make demo   # comment", "make test"] and first.script("PY").strip() == ""
    assert skipped.skip_reason == "needs a TPU pod" and not skipped.slow
    assert skipped.commands() == ["python scripts/train.py --a=1      --b=2"]
    assert skipped.script("/x/py").startswith("/x/py scripts/train.py --a=1")
    assert slow.script("/v/.venv/bin/python").splitlines()[-2:] == [
        "/v/.venv/bin/atlas-plan crossover", "/v/.venv/bin/python scripts/fit_atlas.py --bootstrap 5"]
    assert slow.slow and slow.skip_reason is None and slow.line == 12
    with pytest.raises(ValueError, match="needs a reason"):
        parse_readme("<!-- readme-test: skip -->\n```bash\nls\n```")
    with pytest.raises(ValueError, match="not in the block"):
        parse_readme("<!-- readme-test: small --nope => --yes -->\n```bash\nls\n```")


def test_readme_blocks_are_accounted_for(blocks):
    """Every command is run by a test here, by CI (make) or skipped with a stated reason; most run."""
    text = README.read_text(encoding="utf-8")
    assert text.startswith("# atlas_t5x\n\n```bash\nmake demo"), "the README opens with make demo / make test"
    assert [c.split("#")[0].strip() for c in blocks[0].commands()] == ["make demo", "make test"]
    assert "../shared" not in text, "the README must not need files beside the checkout"
    assert "docs/atlas.md" in text and (REPO_ROOT / "docs" / "atlas.md").is_file()
    commands = [c for b in blocks for c in b.commands() if c.split()[0] != "make"]
    run = [c for b in blocks if b.skip_reason is None for c in b.commands() if c.split()[0] != "make"]
    skipped = [f"README.md:{b.line} ({b.skip_reason})" for b in blocks if b.skip_reason]
    assert len(commands) >= 15
    assert len(run) >= MIN_RUN_FRACTION * len(commands), (
        f"only {len(run)} of {len(commands)} README commands run in the README test; skipped: {skipped}")
    # the inputs runnable commands name inside the repository are in the tree a clone gets
    listed = set(subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT,
                                capture_output=True, text=True).stdout.split())
    if not listed:
        pytest.skip("needs the git checkout to list the working tree's files")
    named = [path for command in run
             for path in re.findall(r"(?<![\w/.])((?:gin|examples|scripts|docs)/[\w./-]+\.\w+)", command)]
    assert "examples/demo_logs.csv" in named
    missing = sorted({path for path in named if path not in listed})
    assert not missing, f"README commands name files that a clone does not have: {missing}"


def test_example_plain_table_is_what_its_script_writes(tmp_path):
    """examples/demo_ru_runs.csv is reproducible from examples/demo_logs.csv (examples/README.md)."""
    out = tmp_path / "plain.csv"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "make_plain_table.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == (REPO_ROOT / "examples" / "demo_ru_runs.csv").read_text()
    table = pd.read_csv(out)
    assert list(table.columns) == ["Model Size", "Training FLOP", "loss"]
    assert table["Model Size"].nunique() >= 3 and (table["loss"] > 0).all()   # a law in N needs ≥ 3 sizes
    # C = 6·N·D with D the whole-batch token counts of the demo's runs: D is a positive whole number
    tokens = table["Training FLOP"] / (6 * table["Model Size"])
    assert ((tokens - tokens.round()).abs() < 1e-3 * tokens).all() and (tokens > 0).all()


def _block_params() -> list:
    """One test per README bash block: slow ones marked slow, skipped ones skipped with their reason."""
    params = []
    for block in parse_readme(README.read_text(encoding="utf-8")):
        marks = []
        if block.skip_reason:
            marks.append(pytest.mark.skip(reason=f"README.md:{block.line}: {block.skip_reason}"))
        elif not block.script("python").strip():
            marks.append(pytest.mark.skip(reason=f"README.md:{block.line}: only make lines "
                                                 "(make test is this suite; make demo takes minutes)"))
        elif block.slow:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(block, id=f"README.md:{block.line}", marks=marks))
    return params


# What a runnable block leaves behind in the copy, by a pattern of its text (others need exit 0).
EXPECTED_OUTPUTS = {
    r"--model_dir=out/smoke(?![\w/])": ("out/smoke/logs/eval.jsonl",),
    r"--model_dir=out/smoke_cached(?![\w/])": ("out/smoke_cached/logs/train.jsonl",),
    r"--out out/paper --print": ("out/paper/launch/sweep.sbatch",),
    r"atlas-export out/sweep --out out/sweep/logs": ("out/sweep/logs.csv", "out/sweep/logs.parquet"),
    r"atlas-fit --logs examples/demo_logs\.csv": ("out/fit/fit.json", "out/table/fit.json"),
    r"--out_json out/curse\.json --out_png out/frontier\.png": ("out/curse.json", "out/frontier.png"),
    r"atlas-report examples/demo_logs\.csv --out out/report": ("out/report/report.md",),
    r"--vocab=corpus_spm --out=stats\.json": ("stats.json", "spm64k.model"),
}


@pytest.mark.parametrize("block", _block_params())
def test_readme_block_runs_in_a_clean_clone(block, clone):
    """Each block runs on its own in a fresh copy of the tree (README blocks are self-contained);
    the blocks not marked slow are the fast sample (sweep --print, curse and crossover planners)."""
    (_, elapsed), = run_blocks([block], clone)
    print(f"README.md:{block.line}: {elapsed:.1f} s")
    for pattern, outputs in EXPECTED_OUTPUTS.items():
        if re.search(pattern, block.text):
            for made in outputs:
                assert (clone / made).is_file(), f"README.md:{block.line} did not write {made}"


def _number_close(text: str, value: float) -> bool:
    """Whether a figure printed as `text` (e.g. "0.307") is `value` rounded to that many digits."""
    digits = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10 ** -digits + 1e-12


def test_readme_demo_figures_are_the_shipped_example_report():
    """Issue 21: what the README says the demo found is what the shipped example report holds
    (examples/demo_report.json, the report of examples/demo_logs.csv), checked figure by figure."""
    import json

    from atlas_t5x import logs as atlas_logs
    from atlas_t5x.scaling import points as points_lib

    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- demo-figures -->")[1].split("<!-- /demo-figures -->")[0]
    block = " ".join(block.split())
    doc = json.loads((REPO_ROOT / "examples" / "demo_report.json").read_text())
    facts = doc["facts"]
    checks = doc["sections"]["Sanity checks"]["tables"][0]["rows"]
    # the report is the one of the shipped logs: the same runs
    logged = {r["run"] for r in atlas_logs.read_rows(REPO_ROOT / "examples" / "demo_logs.csv")}
    reported = {row[0] for row in doc["sections"]["Runs"]["tables"][0]["rows"]}
    assert reported <= logged and len(reported) >= len(logged) - 3   # the fitted targets' runs

    n_checks = int(re.search(r"all (\d+) sanity checks pass", block).group(1))
    assert n_checks == len(checks) and all(ok for _, ok, _ in checks)
    csl = facts["fits"]["csl"]["ru"]
    m = re.search(r"ru CSL \(α = β imposed\): α = β = ([\d.]+) \[([\d.]+), ([\d.]+)\], E = ([\d.]+)", block)
    assert m, block
    assert csl["tied"] and _number_close(m.group(1), csl["params"]["alpha"])
    assert _number_close(m.group(2), csl["intervals"]["alpha"]["lo"])
    assert _number_close(m.group(3), csl["intervals"]["alpha"]["hi"])
    assert _number_close(m.group(4), csl["params"]["E"])
    m = re.search(r"untied fit \(secondary\): α = ([\d.]+), β = ([\d.]+), E = ([\d.]+)", block)
    assert m and _number_close(m.group(1), csl["untied"]["params"]["alpha"])
    assert _number_close(m.group(2), csl["untied"]["params"]["beta"])
    assert _number_close(m.group(3), csl["untied"]["params"]["E"])
    m = re.search(r"held-out R²\(N\) ([\d.]+) and R²\(D\) ([\d.]+) \(CSL\)", block)
    assert m and _number_close(m.group(1), facts["heldout"]["csl"]["N"])
    assert _number_close(m.group(2), facts["heldout"]["csl"]["D"])
    # the design figures: completed points of the monolingual ru runs, their sizes and span
    rows = atlas_logs.read_rows(REPO_ROOT / "examples" / "demo_logs.csv")
    pts = points_lib.monolingual_points(points_lib.rows_to_points(
        [r for r in rows if r["target"] in r["tokens_by_lang"]], loss_field="loss"))
    pts = pts[pts["target"] == "ru"]
    m = re.search(r"(\d+) completed ru points over (\d+) sizes spanning ([\d.]+)× in N", block)
    assert m and int(m.group(1)) == len(pts) and int(m.group(2)) == pts["N"].nunique()
    assert _number_close(m.group(3), pts["N"].max() / pts["N"].min())
