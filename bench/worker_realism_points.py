"""What one point of worker_realism.py saw, and how it is printed: samples, statement counts, tables.

Kept apart from the bench's driver (worker threads, servers, setup) so that each stays readable.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field

CALLS = ("claim", "heartbeat", "complete")
MUTATING = ("update", "delete", "merge", "insert")


@dataclass(frozen=True)
class Sample:
    """One HTTP call: which, when it started (monotonic), how long, its status and error code."""

    call: str
    started: float
    seconds: float
    status: int
    code: str


@dataclass
class Point:
    """What one point's worker threads saw; filled from several threads under `lock`."""

    workers: int
    seconds: float
    shape: str = ""
    tenant_rows: str = ""  # run_periodic's PERIODIC_TENANT_ROWS_SECONDS/PARTS, when compared
    started: float = 0.0
    deadline: float = 0.0
    drain_deadline: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    completed_in_window: int = 0
    completed_in_drain: int = 0
    abandoned: Counter[str] = field(default_factory=Counter)
    runs_per_claim: Counter[int] = field(default_factory=Counter)
    drain_seconds: float = 0.0
    quiet_seconds: float = 0.0
    # The proxy's statement counts {table: {kind: n}}: of the claiming window, and of the whole point.
    window_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    total_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    window_refusals: dict[str, dict[str, int]] = field(default_factory=dict)
    refusals: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates: int = 0
    check: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)

    def count_completion(self, at: float) -> None:
        with self.lock:
            if at <= self.deadline:
                self.completed_in_window += 1
            else:
                self.completed_in_drain += 1

    @property
    def per_minute(self) -> float:
        return self.completed_in_window * 60.0 / self.seconds

    @property
    def completed(self) -> int:
        return self.completed_in_window + self.completed_in_drain

    @property
    def overall_per_minute(self) -> float:
        """Runs per minute of the whole point, drain included: what the claiming window started."""
        return self.completed * 60.0 / (self.seconds + self.drain_seconds)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else math.nan


def latencies(point: Point, call: str, phase: str = "all") -> list[float]:
    """Seconds of the point's calls of one kind: all, or those started in the window or in the drain."""
    return [
        s.seconds
        for s in point.samples
        if s.call == call and (phase == "all" or (s.started <= point.deadline) == (phase == "window"))
    ]


def p50_p99(values: list[float]) -> str:
    return f"{percentile(values, 0.5):.2f}/{percentile(values, 0.99):.2f}" if values else "-"


def errors_of(point: Point) -> Counter[str]:
    found: Counter[str] = Counter()
    for s in point.samples:
        if not 200 <= s.status < 300:
            found[f"{s.call} {s.status or '-'} {s.code or '-'}"] += 1
    return found


def mutating(counts: dict[str, int]) -> int:
    return sum(counts.get(kind, 0) for kind in MUTATING)


def refused(refusals: dict[str, dict[str, int]], table: str) -> int:
    return sum(refusals.get(table, {}).values())


def statement_lines(point: Point, central: str) -> list[str]:
    """Per central table: statements sent per minute of the window, refusals, mutating ones run per run."""
    per_minute = 60.0 / point.seconds
    runs = max(point.completed, 1)
    kinds = ("select", *MUTATING)
    lines = [
        f"  {'table':<32}"
        + "".join(f"{kind + '/min':>11}" for kind in kinds)
        + f"{'refused/min':>12}{'DML/run':>8}"
    ]
    tenant_window: Counter[str] = Counter()
    tenant_total: Counter[str] = Counter()
    for table in sorted(set(point.window_counts) | set(point.total_counts)):
        window, total = point.window_counts.get(table, {}), point.total_counts.get(table, {})
        if f":{central}." not in table:
            tenant_window.update(window)
            tenant_total.update(total)
            continue
        if mutating(total):
            cells = "".join(f"{window.get(kind, 0) * per_minute:11.1f}" for kind in kinds)
            refused_per_minute = refused(point.window_refusals, table) * per_minute
            ran = mutating(total) - refused(point.refusals, table)
            lines.append(f"  {table.split('.')[-1]:<32}{cells}{refused_per_minute:12.1f}{ran / runs:8.1f}")
    cells = "".join(f"{tenant_window.get(kind, 0) * per_minute:11.1f}" for kind in kinds)
    lines.append(
        f"  {'(tenant datasets, all together)':<32}{cells}{'':12}{mutating(tenant_total) / runs:8.1f}"
    )
    return lines


def central_dml_per_run(point: Point, central: str) -> float:
    """UPDATE/DELETE/MERGE/INSERT that ran (sent minus refused) on central tables, per completed run."""
    ran = sum(
        mutating(kinds) - refused(point.refusals, table)
        for table, kinds in point.total_counts.items()
        if f":{central}." in table
    )
    return ran / max(point.completed, 1)


def print_point(point: Point, central: str) -> None:
    rows = f", tenant rows {point.tenant_rows}" if point.tenant_rows else ""
    print(f"\n=== {point.workers} workers, {point.seconds:.0f} s, gunicorn {point.shape}{rows}", flush=True)
    claims = sum(point.runs_per_claim.values())
    print(
        f"runs completed: {point.completed_in_window} in the window ({point.per_minute:.1f}/min), "
        f"{point.completed_in_drain} more in the drain ({point.drain_seconds:.1f} s, then "
        f"{point.quiet_seconds:.0f} s until BigQuery was idle; "
        f"{point.overall_per_minute:.1f}/min over the whole point); claims answered with runs: {claims} "
        f"(runs per answer: {dict(sorted(point.runs_per_claim.items()))}); runs given up: "
        f"{dict(point.abandoned) or 0}"
    )
    print(
        f"  {'call':<10}{'all: n':>8} {'p50/p99 s':>13}{'window: n':>11} {'p50/p99 s':>13}"
        f"{'drain: n':>10} {'p50/p99 s':>13}"
    )
    for call in CALLS:
        cells = "".join(
            f"{len(latencies(point, call, phase)):>{width}} {p50_p99(latencies(point, call, phase)):>13}"
            for phase, width in (("all", 8), ("window", 11), ("drain", 10))
        )
        print(f"  {call:<10}{cells}")
    errors = errors_of(point)
    print(
        "non-2xx (call, status, error.code): "
        + (", ".join(f"{k} x{v}" for k, v in sorted(errors.items())) or "none")
    )
    print(
        "statements per central table: sent per minute of the claiming window (refused ones included), "
        "refused (too many DML outstanding) per minute of the window, and UPDATE/DELETE/MERGE/INSERT that "
        f"ran per completed run over the whole point; 409 duplicate job ids: {point.duplicates}"
    )
    for line in statement_lines(point, central):
        print(line)
    for line in point.check:
        print(line)


def print_summary(points: list[Point], central: str) -> None:
    print("\nSummary (p50/p99 seconds over all calls of the point, drain included)\n")
    header = (
        f"{'gunicorn':>9} {'rows':>6} {'workers':>7} {'runs/min':>8} {'incl. drain':>11} {'claim':>13} "
        f"{'heartbeat':>13} {'complete':>13} {'non-2xx':>8} {'DML/run':>8} {'drain s':>8}"
    )
    print(header)
    print("-" * len(header))
    for p in points:
        cells = "".join(f"{p50_p99(latencies(p, call)):>14}" for call in CALLS)
        print(
            f"{p.shape:>9} {p.tenant_rows or '-':>6} {p.workers:>7} {p.per_minute:>8.1f} "
            f"{p.overall_per_minute:>11.1f}{cells} "
            f"{sum(errors_of(p).values()):>8} {central_dml_per_run(p, central):>8.1f} {p.drain_seconds:>8.1f}"
        )
    print("rows: run_periodic's flush of the reports' rows as SECONDS/PARTS when compared (--tenant-rows).")
    print("runs/min: completed in the claiming window; incl. drain: all completed over window + drain time.")
    print("DML/run: UPDATE/DELETE/MERGE/INSERT that ran on central tables per completed run, whole point.")
