"""Reading and appending JSONL logs safely (standard library only for local files; the fitter uses
this too).

A crash can leave the last line of a log half-written. Readers keep every complete row and warn
once per file; writers append whole lines with a single write and fsync, and rewrite files via a
temporary file and an atomic rename.

Paths with a URL scheme (`gs://bucket/run/logs/eval.jsonl`) go through `etils.epath`, imported
only then. Object stores replace objects whole (so a write is atomic) but cannot append: an
append there rewrites the object with the new rows.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping


class LogFormatError(ValueError):
    """A log line that is complete (newline-terminated) but is not a JSON object."""


def to_jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as JSONL text: one sorted-key JSON object per line, each ending in a newline."""
    return "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows)


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` names an object in a remote store (`gs://...`, `s3://...`)."""
    return "://" in str(path)


def _remote(path: str | os.PathLike):
    from etils import epath  # only for URLs: keeps local use standard-library only

    return epath.Path(str(path))


def _read_text(path: str | os.PathLike) -> str:
    if is_url(path):
        return _remote(path).read_text()
    return Path(path).read_text(encoding="utf-8")


def exists(path: str | os.PathLike) -> bool:
    """Whether the local file or remote object exists."""
    return _remote(path).exists() if is_url(path) else Path(path).exists()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Returns the complete rows of a JSONL file.

    A final line without a trailing newline that does not parse (a crash mid-write) is dropped
    with one warning. A malformed line anywhere else raises LogFormatError naming file and line.
    """
    text = _read_text(path)
    lines = text.split("\n")
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_last_unterminated = lineno == len(lines) and not text.endswith("\n")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if is_last_unterminated:
                warnings.warn(
                    f"{path}: dropping truncated last line {lineno} (incomplete write): {err}",
                    stacklevel=2,
                )
                break
            raise LogFormatError(f"{path}:{lineno}: not valid JSON: {err}") from err
        if not isinstance(row, dict):
            raise LogFormatError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def append_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Appends rows as whole lines in one write, then fsyncs.

    If the file ends in a truncated line (a crash mid-write), the file is first rewritten without
    it so the new rows start on a line of their own.
    """
    payload = to_jsonl(rows)
    if not payload:
        return
    if is_url(path):
        if exists(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kept = read_jsonl(path)
        else:
            kept = []
        write_atomic(path, to_jsonl(kept) + payload)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    kept = read_jsonl(path)
                write_atomic(path, to_jsonl(kept))
    with open(path, "a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask is process-wide, so toggling it later could race with other threads.
_UMASK = _read_umask()


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and an atomic rename
    (a remote object is replaced whole)."""
    if is_url(path):
        remote = _remote(path)
        remote.parent.mkdir(parents=True, exist_ok=True)
        remote.write_bytes(data) if isinstance(data, bytes) else remote.write_text(data)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jsonable(obj: Any) -> Any:
    """`obj` with numpy scalars as Python numbers, tuples as lists, keys as strings and non-finite
    floats as None (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():   # a numpy scalar
        obj = obj.item()
    elif hasattr(obj, "tolist"):                                        # a numpy array
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Writes `obj` as JSON (sorted keys, `jsonable`) atomically: the one JSON writer of the fit,
    report, transfer and plan outputs."""
    write_atomic(path, json.dumps(jsonable(obj), indent=indent, sort_keys=True) + "\n")


def write_png(path: str | os.PathLike, fig: Any, dpi: int = 110, **savefig_kwargs: Any) -> None:
    """Renders a matplotlib figure to PNG and writes it atomically, then closes the figure: the one
    figure writer of the fit, report, transfer and plan outputs."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, **savefig_kwargs)
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())
