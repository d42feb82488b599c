"""One writer per run: the model_dir lock a trainer holds for as long as it trains.

Two trainers on one model_dir would interleave their log rows and race inside orbax's temporary
checkpoint folders. `ModelDirLock` makes the second one stop before it writes anything, with a
message naming the owner. The lock is the JSON file `MODEL_DIR/RUN_LOCK.json`:

    {"host": "node-7", "pid": 4242, "started": 1764670000.1, "started_utc": "2026-12-02T10:06:40Z",
     "renewed": 1764670300.4, "lease_s": 600.0, "token": "9f1c..."}

- Local folders: the record is written to a private file and hard-linked into place (atomic and
  exclusive on local disks), so of two trainers started together exactly one gets it. A lock left by a process that died (SIGKILL, OOM, power loss) is
  stale and taken over: on the same host when its pid no longer runs; from another host (a shared
  file system) when its lease ran out (`renewed` + `lease_s` in the past).
- Object stores (`gs://...`, through etils.epath): objects cannot be created exclusively, so the
  lock is a lease object with the same fields. A trainer writes its lease, waits `settle_s` and
  reads it back; if another trainer's lease replaced it, it backs off. A holder renews its lease
  every `lease_s / 3` seconds from a background thread; an expired lease is stale.
- Multi-host jobs: only process 0 takes the lock (the whole job is one writer); the outcome is
  broadcast so every process stops if the model_dir is taken (`acquire_for_job`).

Release removes the lock only if it still holds this holder's token.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from etils import epath

LOCK_NAME = "RUN_LOCK.json"
DEFAULT_LEASE_S = 600.0  # a dead holder on another host blocks the folder this long at most
_UNREADABLE_GRACE_S = 10.0  # an unreadable lock record younger than this may still be being written


class RunLockedError(RuntimeError):
    """The model_dir is held by another live trainer (the message names it)."""


@dataclasses.dataclass(frozen=True)
class LockOwner:
    """Who holds a model_dir: host name, process id, start and last renewal (Unix seconds)."""

    host: str
    pid: int
    started: float
    renewed: float
    lease_s: float
    token: str

    @property
    def started_utc(self) -> str:
        return dt.datetime.fromtimestamp(self.started, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "started_utc": self.started_utc}, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "LockOwner":
        """Raises ValueError on anything but a complete lock record."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(host=str(doc["host"]), pid=int(doc["pid"]), started=float(doc["started"]),
                       renewed=float(doc["renewed"]), lease_s=float(doc["lease_s"]), token=str(doc["token"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"incomplete lock record: {err}") from err

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host!r}, started {self.started_utc}"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a process we may not signal still counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_time(pid: int) -> float | None:
    """Unix time process `pid` started (Linux /proc), or None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start, clock ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def stale_reason(owner: LockOwner, now: float, host: str) -> str | None:
    """Why `owner`'s lock may be taken over (None: it is live)."""
    if owner.host == host and not pid_alive(owner.pid):
        return f"pid {owner.pid} no longer runs on {host!r}"
    if owner.host == host:
        started = process_start_time(owner.pid)
        if started is not None and started > owner.started + 2.0:  # btime and ticks: ~1 s resolution
            return f"pid {owner.pid} on {host!r} is a newer process than the one that took the lock"
    if now > owner.renewed + owner.lease_s:
        return f"its lease ran out {now - owner.renewed - owner.lease_s:.0f} s ago"
    return None


class ModelDirLock:
    """The lock of one model_dir (see the module docstring).

    Args:
      model_dir: local folder or URL.
      lease_s: seconds a lease stays valid without renewal.
      lease_mode: None = lease object for URLs, exclusive file for local folders; True forces the
        lease protocol (tests stand a local folder in for a bucket).
      settle_s: lease protocol: wait between writing the lease and reading it back.
    """

    def __init__(self, model_dir: str | os.PathLike, lease_s: float = DEFAULT_LEASE_S,
                 lease_mode: bool | None = None, settle_s: float = 1.0):
        self.model_dir = epath.Path(model_dir)
        self.path = self.model_dir / LOCK_NAME
        self.lease_s = float(lease_s)
        self.lease_mode = ("://" in str(model_dir)) if lease_mode is None else bool(lease_mode)
        self.settle_s = settle_s
        self.host = socket.gethostname()
        self.owner: LockOwner | None = None
        self._created_dir = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------------

    def read_owner(self) -> LockOwner | None:
        """The current holder, or None when there is no lock. An unreadable record counts as a
        holder still writing it for `_UNREADABLE_GRACE_S` seconds after its last write, then as
        one that died doing so (stale)."""
        try:
            if not self.path.exists():  # checked first: cloud backends raise their own not-found errors
                return None
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return LockOwner.from_json(text)
        except ValueError:
            pass
        try:  # a record being written right now (exclusive-create fallback) is live for a few seconds
            written = self.path.stat().mtime
        except (OSError, AttributeError):
            written = 0.0
        return LockOwner(host="(unreadable record)", pid=-1, started=written, renewed=written,
                         lease_s=_UNREADABLE_GRACE_S, token="unreadable")

    # -- taking and giving back -------------------------------------------------------------

    def acquire(self) -> "ModelDirLock":
        """Takes the lock or raises RunLockedError naming the holder."""
        if self.owner is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        if not self.model_dir.exists():
            self.model_dir.mkdir(parents=True, exist_ok=True)
            self._created_dir = True
        try:
            for _ in range(5):  # a takeover can race with another trainer's: look again
                now = time.time()
                mine = LockOwner(host=self.host, pid=os.getpid(), started=now, renewed=now,
                                 lease_s=self.lease_s, token=uuid.uuid4().hex)
                if self._try_create(mine):
                    self.owner = mine
                    break
                holder = self.read_owner()
                if holder is None:
                    continue  # released meanwhile
                reason = stale_reason(holder, time.time(), self.host)
                if reason is None:
                    raise RunLockedError(
                        f"{self.model_dir} is in use by another trainer ({holder.describe()}; lock file "
                        f"{self.path}). One trainer per model_dir: wait for it, stop it, or use another "
                        "model_dir. If that trainer is gone, delete the lock file.")
                logging.warning("taking over the stale lock %s of %s: %s", self.path, holder.describe(), reason)
                self._remove_if(holder.token)
            else:
                raise RunLockedError(f"{self.model_dir}: could not take the lock {self.path} (contended)")
        except BaseException:
            self._remove_created_dir()
            raise
        if self.lease_mode or self.lease_s > 0:
            self._renewer = threading.Thread(target=self._renew_loop, name="atlas-run-lock", daemon=True)
            self._renewer.start()
        return self

    def _try_create(self, mine: LockOwner) -> bool:
        if not self.lease_mode:
            # Written whole to a private file, then hard-linked into place: the link fails if a
            # lock exists, and a reader never sees a half-written record.
            private = f"{os.fspath(self.path)}.{mine.token}.tmp"
            with open(private, "w", encoding="utf-8") as f:
                f.write(mine.to_json())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(private, os.fspath(self.path))
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: exclusive create, then write
                return self._create_exclusive(mine)
            finally:
                os.unlink(private)
            return True
        if self.path.exists():
            return False
        self.path.write_text(mine.to_json())
        time.sleep(self.settle_s)  # a trainer that wrote at the same moment overwrote one of us
        holder = self.read_owner()
        return holder is not None and holder.token == mine.token

    def _create_exclusive(self, mine: LockOwner) -> bool:
        try:
            fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(mine.to_json())
            f.flush()
            os.fsync(f.fileno())
        return True

    def _remove_if(self, token: str) -> None:
        holder = self.read_owner()
        if holder is not None and holder.token == token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def _renew_loop(self) -> None:
        interval = max(self.lease_s / 3.0, 0.05)
        while not self._stop.wait(interval):
            owner = self.owner
            if owner is None:
                return
            holder = self.read_owner()
            if holder is None or holder.token != owner.token:
                logging.error("lost the model_dir lock %s (now %s)", self.path,
                              holder.describe() if holder else "absent")
                return
            renewed = dataclasses.replace(owner, renewed=time.time())
            try:
                self._write(renewed)
                self.owner = renewed
            except OSError as err:  # a transient store error; the lease is still valid for a while
                logging.warning("could not renew the model_dir lock %s: %s", self.path, err)

    def _write(self, owner: LockOwner) -> None:
        if self.lease_mode:
            self.path.write_text(owner.to_json())
            return
        from atlas_t5x import logio

        logio.write_atomic(os.fspath(self.path), owner.to_json())

    def release(self) -> None:
        """Gives the lock back (only if this holder still has it); removes a model_dir that
        `acquire` created and nothing was written to."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
            self._renewer = None
        if self.owner is not None:
            self._remove_if(self.owner.token)
            self.owner = None
        self._remove_created_dir()

    def _remove_created_dir(self) -> None:
        if self._created_dir:
            try:
                if self.model_dir.is_dir() and not any(self.model_dir.iterdir()):
                    self.model_dir.rmdir()
            except OSError:
                pass
            self._created_dir = False

    def __enter__(self) -> "ModelDirLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class _NoLock:
    def release(self) -> None:
        pass


def acquire_for_job(model_dir: str | os.PathLike, **kwargs: Any) -> ModelDirLock | _NoLock:
    """Process 0 takes `model_dir`'s lock; in a multi-host job every process learns the outcome,
    so all of them raise RunLockedError when the folder is taken. Returns what to `release()`."""
    import jax

    if jax.process_count() == 1:
        return ModelDirLock(model_dir, **kwargs).acquire()
    import numpy as np
    from jax.experimental import multihost_utils

    lock: ModelDirLock | _NoLock = _NoLock()
    error = ""
    if jax.process_index() == 0:
        try:
            lock = ModelDirLock(model_dir, **kwargs).acquire()
        except RunLockedError as err:
            error = str(err)
    encoded = np.zeros(2048, np.uint8)
    raw = error.encode()[:2048]
    encoded[:len(raw)] = np.frombuffer(raw, np.uint8)
    shared = bytes(np.asarray(multihost_utils.broadcast_one_to_all(encoded))).rstrip(b"\0").decode(errors="replace")
    if shared:
        raise RunLockedError(shared)
    return lock
