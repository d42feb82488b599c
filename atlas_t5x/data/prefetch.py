"""Bounded background prefetch of ready (device-placed) train batches, with the resume state of the
last batch the trainer actually took.

`Prefetcher(pipeline, place, depth)` runs one producer thread that calls `next(pipeline)`, records
the pipeline's position right after that batch (`pipeline.snapshot()`: local and cheap, no
collective), applies `place` (host rows → global jax arrays: the device transfer starts here) and
puts (batch, position) on a queue of at most `depth` entries. The consumer's `next()` takes one
entry and remembers its position, so `get_state()` / `accounting()` describe the batches consumed,
not the ones read ahead: a checkpoint resumes at exactly the next unconsumed batch, and
per-language token counts are those of the steps trained. `set_state` stops the producer, drops
what it had read ahead, moves the pipeline and starts again from there (cooldown branches rewind
this way).

What overlaps with the device: JSON parsing, SentencePiece encoding (its batched encoder releases
the GIL), packing (numpy) and the host→device copy, while the main thread dispatches steps and
waits at flush points. The batches and their order are the pipeline's own, so a run with prefetch
gives the same batches, accounting and checkpoints as one without (tests/test_prefetch.py).

The pipeline must offer `snapshot()`, `state_at(snapshot)` and `accounting_at(snapshot)`
(TrainPipeline and SyntheticPipeline do); `wrap` falls back to synchronous reads for one that
does not. A producer error is raised from the consumer's next `next()`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

_STOP_POLL_S = 0.1  # seconds between the producer's checks of the stop flag while the queue is full
_SNAPSHOT_METHODS = ("snapshot", "state_at", "accounting_at")  # what a prefetched pipeline must offer


class _PlacedBatches:
    """What the trainer's loop reads: placed batches, the pipeline's other attributes passed through
    (languages, seq_len, mixture_name, ...) and `wait_s`, the seconds `next` spent waiting for input."""

    def __init__(self, pipeline: Any, place: Callable[[dict], Any]):
        self.pipeline = pipeline
        self._place = place
        self.wait_s = 0.0

    def __getattr__(self, name: str) -> Any:
        if name == "pipeline":
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __iter__(self):
        return self


class Prefetcher(_PlacedBatches):
    """Iterator of placed batches read up to `depth` ahead of the consumer; see the module docstring."""

    def __init__(self, pipeline: Any, place: Callable[[dict], Any], depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        for method in _SNAPSHOT_METHODS:
            if not callable(getattr(pipeline, method, None)):
                raise TypeError(f"{type(pipeline).__name__} has no {method}(): it cannot be prefetched")
        super().__init__(pipeline, place)
        self._depth = depth
        self._position = pipeline.snapshot()  # after the last consumed batch
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __next__(self) -> Any:
        if self._thread is None:
            self._start()
        start = time.perf_counter()
        kind, item, position = self._queue.get()
        self.wait_s += time.perf_counter() - start
        if kind == "error":
            self._join()
            raise item
        self._position = position
        return item

    def get_state(self) -> dict:
        """The pipeline state after the last batch `next` returned (a collective where the pipeline's is)."""
        return self.pipeline.state_at(self._position)

    def accounting(self):
        """Tokens of the batches `next` has returned (not those read ahead)."""
        return self.pipeline.accounting_at(self._position)

    def set_state(self, state: dict) -> None:
        """Drops the batches read ahead and continues from `state`."""
        self.close()
        self.pipeline.set_state(state)
        self._position = self.pipeline.snapshot()

    def close(self) -> None:
        """Stops the producer thread (its read-ahead is discarded); `next` starts a new one."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a producer waiting on a full queue
                self._queue.get(timeout=_STOP_POLL_S)
            except queue.Empty:
                pass
        self._join()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
        self._thread = self._queue = self._stop = None

    def _start(self) -> None:
        self._queue, self._stop = queue.Queue(maxsize=self._depth), threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(self._queue, self._stop),
                                        name="atlas-prefetch", daemon=True)
        self._thread.start()

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                batch = next(self.pipeline)
                entry = ("batch", self._place(batch), self.pipeline.snapshot())
            except BaseException as e:  # noqa: BLE001  (handed to the consumer, raised there)
                entry = ("error", e, None)
            while not stop.is_set():
                try:
                    out.put(entry, timeout=_STOP_POLL_S)
                    break
                except queue.Full:
                    continue
            if entry[0] == "error":
                return


class _Synchronous(_PlacedBatches):
    """The same interface as Prefetcher, reading on the caller's thread (pipelines without snapshot())."""

    def __next__(self) -> Any:
        start = time.perf_counter()
        batch = self._place(next(self.pipeline))
        self.wait_s += time.perf_counter() - start
        return batch

    def get_state(self) -> dict:
        return self.pipeline.get_state()

    def accounting(self):
        return self.pipeline.accounting()

    def set_state(self, state: dict) -> None:
        self.pipeline.set_state(state)

    def close(self) -> None:
        pass


def wrap(pipeline: Any, place: Callable[[dict], Any], depth: int) -> Prefetcher | _Synchronous:
    """A Prefetcher of `depth` batches; synchronous reads when depth is 0 or the pipeline has no snapshot()."""
    if depth > 0 and all(callable(getattr(pipeline, m, None)) for m in _SNAPSHOT_METHODS):
        return Prefetcher(pipeline, place, depth)
    if depth > 0:
        logging.info("%s has no snapshot(): reading batches synchronously", type(pipeline).__name__)
    return _Synchronous(pipeline, place)
