"""Group commit: many callers' writes to the same tables gathered into one statement per table per tick.

Real BigQuery runs at most 2 UPDATE/DELETE/MERGE statements per table at a time and queues 20; every
statement takes about a second. One statement per event therefore caps a table at about a hundred
events a minute and then refuses the rest. With group commit the cost of a hot path is a constant
number of statements per tick, however many events the tick carries.

- `GroupCommit` gathers items within one process. The first caller that finds no tick running leads
  it: it waits for its lane, takes every item queued meanwhile (up to `max_batch`) and flushes them in
  one call; the others wait for their result. When a tick ends with items still queued, the oldest
  waiter leads the next one. No background thread: a process that serves no traffic runs no tick.
- `SharedLane` spaces the ticks of one kind across every process that shares the cache (one machine's
  gunicorn workers through the embedded cache, several machines through Redis): one tick at a time,
  and a minimum time between their starts. So the statements per table per minute are bounded by
  (statements per tick) x 60 / spacing, whatever the number of processes and requests.

Nothing here knows what the items are: the caller's `flush` turns a batch into one result (or
exception) per item, in order.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from bigquery_backend.exceptions import Busy

logger = logging.getLogger(__name__)

_MAX_POLL_SECONDS = 0.25

I = TypeVar("I")  # noqa: E741 - the conventional name of an item type
R = TypeVar("R")


class SharedCache(Protocol):
    """What the lane needs of a cache shared by the processes (Django's cache API)."""

    def add(self, key: str, value: Any, timeout: float | None = ...) -> bool: ...
    def get(self, key: str, default: Any = ...) -> Any: ...
    def set(self, key: str, value: Any, timeout: float | None = ...) -> None: ...
    def delete(self, key: str) -> Any: ...


class LaneTimeout(Busy):
    """The lane stayed taken longer than the caller may wait; the tick did not run (a 503 to retry)."""


@dataclass
class SharedLane:
    """One tick of a kind at a time across processes, starts at least `spacing` seconds apart.

    The lock is an `add` of a key that expires after `hold_seconds`: a process that dies mid-tick
    delays the others by that much at most, never for good.
    """

    cache: SharedCache
    name: str
    spacing: float
    hold_seconds: float = 120.0
    poll_seconds: float = 0.02
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    @contextmanager
    def hold(self, *, wait: float, spaced: bool = True) -> Iterator[None]:
        """The lane to ourselves; `spaced=False` for work between ticks that needs no spacing."""
        token = uuid.uuid4().hex
        deadline = self.clock() + wait
        pause = self.poll_seconds
        while not self.cache.add(self._lock_key, token, timeout=self.hold_seconds):
            if self.clock() >= deadline:
                raise LaneTimeout(f"lane {self.name} stayed taken for {wait:.0f} s", retry_after=5)
            # Backing off with jitter: waiters of every process poll a shared cache.
            self.sleep(pause * (0.5 + random.random()))  # noqa: S311 - jitter, not a secret
            pause = min(pause * 2, _MAX_POLL_SECONDS)
        try:
            if spaced:
                # Spacing counts from the previous tick's start, whichever process ran it.
                started = self.cache.get(self._start_key)
                if started is not None:
                    self.sleep(max(0.0, min(float(started) + self.spacing - self.clock(), self.spacing)))
                self.cache.set(self._start_key, self.clock(), timeout=max(self.spacing * 2, 60))
            yield
        finally:
            self._release(token)

    def _release(self, token: str) -> None:
        # Only our own lock (after hold_seconds another process may hold it rightfully). Never raises:
        # the work done under the lane is committed, and its callers must hear so.
        try:
            if self.cache.get(self._lock_key) == token:
                self.cache.delete(self._lock_key)
        except Exception:
            logger.warning(
                "lane %s: could not release; it frees itself after %.0f s", self.name, self.hold_seconds
            )

    @property
    def _lock_key(self) -> str:
        return f"cvg:lane:v1:{self.name}:lock"

    @property
    def _start_key(self) -> str:
        return f"cvg:lane:v1:{self.name}:started"


@dataclass(eq=False)
class _Waiter(Generic[I, R]):
    item: I
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    finished: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommit(Generic[I, R]):
    """Gathers `submit`ted items into batches flushed one tick at a time (see the module docstring)."""

    def __init__(
        self,
        flush: Callable[[list[I]], Sequence[R | BaseException]],
        *,
        lane: Callable[[], SharedLane] | None = None,
        max_batch: int = 500,
        lane_wait: float = 60.0,
    ) -> None:
        self._flush = flush
        self._lane = lane
        self._max_batch = max_batch
        self._lane_wait = lane_wait
        self._lock = threading.Lock()
        self._queued: list[_Waiter[I, R]] = []
        self._leading = False

    def submit(self, item: I) -> R:
        """Flush `item` in the next tick and return its result (or raise its exception)."""
        waiter: _Waiter[I, R] = _Waiter(item)
        with self._lock:
            self._queued.append(waiter)
            if not self._leading:
                self._leading = waiter.lead = True
        while not waiter.finished:
            if waiter.lead:
                waiter.lead = False
                self._tick()
                continue
            waiter.wake.wait()
            waiter.wake.clear()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def _tick(self) -> None:
        batch: list[_Waiter[I, R]] = []
        answered = False
        try:
            lane = self._lane() if self._lane is not None else None
            with lane.hold(wait=self._lane_wait) if lane is not None else _nothing():
                # Taken after the lane: items that arrived while it waited ride along.
                with self._lock:
                    batch, self._queued = self._queued[: self._max_batch], self._queued[self._max_batch :]
                outcomes = list(self._flush([waiter.item for waiter in batch]))
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"flush returned {len(outcomes)} results for {len(batch)} items")
                # Recorded before the lane is let go: what the flush committed is what callers hear.
                for waiter, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        waiter.error = outcome
                    else:
                        waiter.result = outcome
                answered = True
        except BaseException as exc:  # every waiter of the tick gets the failure, raised in its thread
            with self._lock:
                if not batch:  # the lane was never ours: fail what was queued, as it would have been
                    batch, self._queued = self._queued[: self._max_batch], self._queued[self._max_batch :]
            if not answered:
                for waiter in batch:
                    waiter.error = exc
        finally:
            self._hand_over(batch)

    def _hand_over(self, batch: list[_Waiter[I, R]]) -> None:
        with self._lock:
            successor = self._queued[0] if self._queued else None
            self._leading = successor is not None
            if successor is not None:
                successor.lead = True
        for waiter in batch:
            waiter.finished = True
            waiter.wake.set()
        if successor is not None:
            successor.wake.set()


@contextmanager
def _nothing() -> Iterator[None]:
    yield
