"""Dependent tasks side by side: order, concurrency, what a failure leaves, and the traced critical path."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tenants_app.log_context import current_log_context, log_context
from tenants_app.task_graph import Task, run_tasks, task_path, task_trace

# A guard against a hang, never a timing assertion: side by side, a barrier's parties meet at once.
MEET_WITHIN = 10.0


class Boom(Exception):
    pass


def recording(events: list[str], name: str, result: object = None) -> Callable[[], object]:
    def run() -> object:
        events.append(name)
        return result

    return run


def failing(error: Exception, *, first: Callable[[], object] = lambda: None) -> Callable[[], object]:
    def run() -> object:
        first()
        raise error

    return run


@pytest.mark.parametrize("workers", [1, 4])
def test_it_starts_a_task_only_after_those_it_comes_after(workers: int) -> None:
    events: list[str] = []
    tasks = {
        "a": Task(recording(events, "a", 1)),
        "b": Task(recording(events, "b", 2), after=("a",)),
        "c": Task(recording(events, "c", 3), after=("a",)),
        "d": Task(recording(events, "d", 4), after=("b", "c")),
    }

    results = run_tasks(tasks, max_workers=workers, thread_name_prefix="test")

    assert results == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert list(results) == ["a", "b", "c", "d"]
    assert events[0] == "a"
    assert events[-1] == "d"


def test_it_runs_independent_tasks_at_the_same_time() -> None:
    both = threading.Barrier(2, timeout=MEET_WITHIN)
    tasks = {"left": Task(both.wait), "right": Task(both.wait)}

    run_tasks(tasks, max_workers=2, thread_name_prefix="test")

    assert not both.broken


def test_it_runs_every_task_in_the_calling_thread_in_order_with_one_worker() -> None:
    threads: list[tuple[str, int]] = []
    tasks = {
        name: Task(lambda name=name: threads.append((name, threading.get_ident())))
        for name in ("a", "b", "c")
    }

    run_tasks(tasks, max_workers=1, thread_name_prefix="test")

    assert threads == [(name, threading.get_ident()) for name in ("a", "b", "c")]


@pytest.mark.parametrize("workers", [1, 4])
def test_it_finishes_every_task_that_does_not_depend_on_a_failure_then_raises_it(workers: int) -> None:
    events: list[str] = []
    failed = threading.Event()
    # `slow` is still running when `bad` fails (side by side); `late` becomes ready only after that.
    tasks = {
        "start": Task(recording(events, "start")),
        "bad": Task(failing(Boom("bad"), first=failed.set), after=("start",)),
        "slow": Task(lambda: failed.wait(MEET_WITHIN) and events.append("slow"), after=("start",)),
        "late": Task(recording(events, "late"), after=("slow",)),
        "after_bad": Task(recording(events, "after_bad"), after=("bad",)),
        "after_all": Task(recording(events, "after_all"), after=("late", "after_bad")),
    }

    with pytest.raises(Boom, match="bad"):
        run_tasks(tasks, max_workers=workers, thread_name_prefix="test")

    assert sorted(events) == ["late", "slow", "start"]


@pytest.mark.parametrize("workers", [1, 4])
def test_it_raises_the_failure_of_the_first_declared_task_whichever_failed_first(workers: int) -> None:
    second_failed = threading.Event()
    wait_for_second = (lambda: second_failed.wait(MEET_WITHIN)) if workers > 1 else (lambda: None)
    tasks = {
        "first": Task(failing(Boom("first"), first=wait_for_second)),
        "second": Task(failing(Boom("second"), first=second_failed.set)),
    }

    with pytest.raises(Boom, match="first"):
        run_tasks(tasks, max_workers=workers, thread_name_prefix="test")

    assert second_failed.is_set()


def test_it_refuses_a_task_declared_before_one_it_comes_after() -> None:
    with pytest.raises(ValueError, match="'early' comes after"):
        run_tasks(
            {"early": Task(lambda: None, after=("late",)), "late": Task(lambda: None)},
            max_workers=2,
            thread_name_prefix="test",
        )


def test_it_keeps_the_callers_log_context_and_names_the_running_task_in_every_thread() -> None:
    seen: dict[str, tuple[object, ...]] = {}

    def look(name: str) -> None:
        seen[name] = (current_log_context().get("request_id"), task_path())

    def outer() -> None:
        inner = {name: Task(lambda name=name: look(name)) for name in ("x", "y")}
        run_tasks(inner, max_workers=2, thread_name_prefix="test")

    with log_context(request_id="req-1"):
        run_tasks(
            {"outer": Task(outer), "other": Task(lambda: look("other"))},
            max_workers=2,
            thread_name_prefix="t",
        )

    assert seen == {
        "x": ("req-1", ("outer", "x")),
        "y": ("req-1", ("outer", "y")),
        "other": ("req-1", ("other",)),
    }


def test_it_computes_the_longest_chain_of_a_traced_run_with_nested_graphs() -> None:
    def dataset() -> None:
        run_tasks({"t1": Task(lambda: None), "t2": Task(lambda: None)}, max_workers=2, thread_name_prefix="t")

    with task_trace() as trace:
        run_tasks({"check": Task(lambda: None)}, max_workers=2, thread_name_prefix="t")
        run_tasks(
            {
                "profile": Task(lambda: None),
                "rows": Task(lambda: None, after=("profile",)),
                "dataset": Task(dataset, after=("profile",)),
                "key": Task(lambda: None, after=("rows", "dataset")),
            },
            max_workers=4,
            thread_name_prefix="t",
        )

    cost = {
        ("check",): 0.5,
        ("profile",): 1.5,
        ("rows",): 1.5,
        ("dataset",): 0.4,  # its own calls, then its tables side by side
        ("dataset", "t1"): 0.4,
        ("dataset", "t2"): 0.6,
        ("key",): 3.0,
    }
    # check, profile, then rows (1.5) beats dataset (0.4 + 0.6), then the key.
    assert trace.critical_path(cost) == pytest.approx(0.5 + 1.5 + 1.5 + 3.0)
    assert trace.critical_chain(cost) == [("check",), ("profile",), ("rows",), ("key",)]
    cost[("dataset", "t2")] = 1.2
    assert trace.critical_path(cost) == pytest.approx(0.5 + 1.5 + 1.6 + 3.0)
    assert trace.critical_chain(cost) == [("check",), ("profile",), ("dataset",), ("dataset", "t2"), ("key",)]
