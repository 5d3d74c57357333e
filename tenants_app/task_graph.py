"""Run a few dependent tasks side by side: each starts once the tasks it comes after have succeeded.

A real BigQuery call costs 0.2-1.5 s, so a flow that makes its calls one after another (onboarding:
about 20) takes the sum of them, while only its longest chain of dependent calls is forced on it.
`run_tasks` runs a small graph of tasks (each a few calls) in a `ContextThreadPoolExecutor`, so the
request's log context, audit source and idempotency flags follow every task into its thread.

What a failure leaves must not depend on timing, because a repeat of the same request has to finish
the job: a failed task stops only the tasks that come after it (directly or not); every other task
still runs, and once nothing runs any more the first failed task's exception (in declaration order)
is raised. So a failed run always leaves exactly "every task but the failed ones and those after
them", and with idempotent tasks a repeat does precisely what is left.

`max_workers=1` runs the same graph in the calling thread in declaration order (which must list every
task after those it comes after): the sequential path, for benches and comparisons.

`task_trace()` records the graphs run inside it, nested ones included, and `task_path()` names the
task running now, so that a bench or test can attribute each BigQuery call to its task and compute
the longest chain of dependent calls (`TaskTrace.critical_path`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tenants_app.log_context import ContextThreadPoolExecutor

T = TypeVar("T")
TaskPath = tuple[str, ...]

_path: contextvars.ContextVar[TaskPath] = contextvars.ContextVar("task_path", default=())
_trace: contextvars.ContextVar[TaskTrace | None] = contextvars.ContextVar("task_trace", default=None)


@dataclass(frozen=True)
class Task(Generic[T]):
    """One unit of work and the names of the tasks that must have succeeded before it starts."""

    run: Callable[[], T]
    after: tuple[str, ...] = ()


def run_tasks(tasks: Mapping[str, Task[Any]], *, max_workers: int, thread_name_prefix: str) -> dict[str, Any]:
    """Every task's result by name, in declaration order; or the first failure (module docstring)."""
    _check_order(tasks)
    trace = _trace.get()
    if trace is not None:
        trace.add(task_path(), {name: task.after for name, task in tasks.items()})
    if max_workers <= 1 or len(tasks) <= 1:
        results, failures = _run_in_order(tasks)
    else:
        results, failures = _run_side_by_side(tasks, max_workers, thread_name_prefix)
    for name in tasks:
        if name in failures:
            raise failures[name]
    return {name: results[name] for name in tasks}


def task_path() -> TaskPath:
    """Names of the tasks running now in this context, outermost first (() outside any task)."""
    return _path.get()


def _check_order(tasks: Mapping[str, Task[Any]]) -> None:
    seen: set[str] = set()
    for name, task in tasks.items():
        unknown = [before for before in task.after if before not in seen]
        if unknown:
            raise ValueError(f"task {name!r} comes after {unknown}, which are not declared before it")
        seen.add(name)


def _run_one(name: str, task: Task[T]) -> T:
    token = _path.set((*_path.get(), name))
    try:
        return task.run()
    finally:
        _path.reset(token)


def _run_in_order(tasks: Mapping[str, Task[Any]]) -> tuple[dict[str, Any], dict[str, Exception]]:
    results: dict[str, Any] = {}
    failures: dict[str, Exception] = {}
    for name, task in tasks.items():
        if all(before in results for before in task.after):
            try:
                results[name] = _run_one(name, task)
            except Exception as exc:
                failures[name] = exc
    return results, failures


def _run_side_by_side(
    tasks: Mapping[str, Task[Any]], max_workers: int, thread_name_prefix: str
) -> tuple[dict[str, Any], dict[str, Exception]]:
    results: dict[str, Any] = {}
    failures: dict[str, Exception] = {}
    waiting = dict(tasks)
    running: dict[Future[Any], str] = {}
    with ContextThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix) as pool:
        while True:
            for name, task in list(waiting.items()):
                if all(before in results for before in task.after):
                    running[pool.submit(_run_one, name, task)] = name
                    del waiting[name]
            # Nothing running: what still waits comes after a failure and never starts.
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                try:
                    results[name] = future.result()
                except Exception as exc:
                    failures[name] = exc
    return results, failures


# --- tracing (benches and tests) -------------------------------------------------------------------
@dataclass
class TaskTrace:
    """The graphs run inside `task_trace()`: (path of the task that ran it, {task: tasks it comes after})."""

    graphs: list[tuple[TaskPath, dict[str, tuple[str, ...]]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, parent: TaskPath, graph: dict[str, tuple[str, ...]]) -> None:
        with self._lock:
            self.graphs.append((parent, graph))

    def critical_path(self, own_cost: Mapping[TaskPath, float]) -> float:
        """The cost of the longest chain of dependent work, given each task's own calls' cost by path.

        A task's own calls run one after another in its thread, and so do the graphs it runs; `()` is
        the caller's own.
        """
        return own_cost.get((), 0.0) + _length(self.critical_chain(own_cost), own_cost)

    def critical_chain(self, own_cost: Mapping[TaskPath, float]) -> list[TaskPath]:
        """The tasks along that chain, in order; a task that ran a graph is followed by its chain."""
        return self._nested_chain((), own_cost)

    def _nested_chain(self, path: TaskPath, own_cost: Mapping[TaskPath, float]) -> list[TaskPath]:
        with self._lock:
            nested = [graph for parent, graph in self.graphs if parent == path]
        return [task for graph in nested for task in self._longest(path, graph, own_cost)]

    def _longest(
        self, parent: TaskPath, graph: dict[str, tuple[str, ...]], own_cost: Mapping[TaskPath, float]
    ) -> list[TaskPath]:
        chains: dict[str, list[TaskPath]] = {}
        for name, after in graph.items():
            before = max((chains[first] for first in after), key=lambda c: _length(c, own_cost), default=[])
            path = (*parent, name)
            chains[name] = [*before, path, *self._nested_chain(path, own_cost)]
        return max(chains.values(), key=lambda chain: _length(chain, own_cost), default=[])


def _length(chain: list[TaskPath], own_cost: Mapping[TaskPath, float]) -> float:
    return sum(own_cost.get(path, 0.0) for path in chain)


@contextmanager
def task_trace() -> Iterator[TaskTrace]:
    """Record the graphs `run_tasks` runs inside the block, in any thread it starts."""
    trace = TaskTrace()
    token = _trace.set(trace)
    try:
        yield trace
    finally:
        _trace.reset(token)
