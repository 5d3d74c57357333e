"""Group commit: items gathered into ticks, each with its own result; ticks of a lane spaced across
processes (two lanes on one cache stand for two processes)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.core.cache import cache

from bigquery_backend.batching import GroupCommit, LaneTimeout, SharedLane
from bigquery_backend.exceptions import Busy


class Flusher:
    """A flush that records its batches and holds the first one until `release()`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.first_started = threading.Event()
        self._go = threading.Event()

    def release(self) -> None:
        self._go.set()

    def __call__(self, items: list[int]) -> list[Any]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.first_started.set()
            assert self._go.wait(30)
        return [ValueError(f"odd {item}") if item % 2 else item * 10 for item in items]


def submit_all(
    group: GroupCommit[int, int], items: list[int]
) -> tuple[dict[int, Any], list[threading.Thread]]:
    outcomes: dict[int, Any] = {}

    def one(item: int) -> None:
        try:
            outcomes[item] = group.submit(item)
        except ValueError as exc:
            outcomes[item] = str(exc)

    threads = [threading.Thread(target=one, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    return outcomes, threads


def test_it_gathers_the_items_that_arrive_during_a_tick_into_the_next_one() -> None:
    flusher = Flusher()
    group: GroupCommit[int, int] = GroupCommit(flusher)
    first, first_threads = submit_all(group, [2])
    assert flusher.first_started.wait(30)
    later, later_threads = submit_all(group, [4, 5, 6, 8])
    while len(group._queued) < 4:  # all four wait behind the running tick
        threading.Event().wait(0.01)
    flusher.release()
    for thread in first_threads + later_threads:
        thread.join(30)

    assert flusher.batches[0] == [2]
    assert sorted(flusher.batches[1]) == [4, 5, 6, 8]
    assert len(flusher.batches) == 2
    # Each item gets its own result or its own exception.
    assert first == {2: 20}
    assert later == {4: 40, 5: "odd 5", 6: 60, 8: 80}


def test_it_fails_every_item_of_a_tick_whose_flush_raised() -> None:
    def broken(items: list[int]) -> list[int]:
        raise Busy("BigQuery refused", retry_after=3)

    group: GroupCommit[int, int] = GroupCommit(broken)
    with pytest.raises(Busy):
        group.submit(1)
    # The next caller leads a tick of its own: a failed tick leaves no leader behind.
    with pytest.raises(Busy):
        group.submit(2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_it_starts_ticks_of_a_lane_a_spacing_apart_whichever_process_runs_them() -> None:
    clock = Clock()
    first = SharedLane(cache, "test:spacing", spacing=5.0, clock=clock.time, sleep=clock.sleep)
    second = SharedLane(cache, "test:spacing", spacing=5.0, clock=clock.time, sleep=clock.sleep)

    with first.hold(wait=10):
        clock.now += 1.5  # the tick's statements
    with second.hold(wait=10):
        started = clock.now

    assert clock.slept == [pytest.approx(3.5)]
    assert started == pytest.approx(1005.0)


def test_it_refuses_with_a_retryable_error_when_the_lane_stays_taken() -> None:
    clock = Clock()
    holder = SharedLane(cache, "test:taken", spacing=0.0, clock=clock.time, sleep=clock.sleep)
    other = SharedLane(
        cache, "test:taken", spacing=0.0, clock=clock.time, sleep=clock.sleep, poll_seconds=1.0
    )

    with holder.hold(wait=1), pytest.raises(LaneTimeout) as refused, other.hold(wait=3):
        pass

    assert isinstance(refused.value, Busy)
    assert refused.value.retry_after > 0
    # Released: the other process gets it at once.
    with other.hold(wait=0):
        pass
