"""BigQuery's timing and per-table DML limits in front of the emulator, which has neither.

bqemulator runs one statement at a time in milliseconds. Real BigQuery (facts from
https://cloud.google.com/bigquery/docs/data-manipulation-language, "Concurrent jobs"):

- UPDATE, DELETE and MERGE ("mutating DML"): at most 2 run at once per table, up to 20 more wait as
  PENDING, and a further one fails at once: HTTP 400, reason `resourcesExceeded`, "Resources exceeded
  during query execution: Too many DML statements outstanding against table p:d.t, limit is 20".
- INSERT: the first 1,500 a day per table run at once; after that 10 run at once and 100 queue.
- Two mutating statements on the same table can conflict: the loser fails with HTTP 400, reason
  `invalidQuery`, "Could not serialize access to table p:d.t due to concurrent update"
  (https://cloud.google.com/bigquery/docs/troubleshoot-queries).
- A job id is unique in a project: jobs.insert with an id that exists answers 409 `duplicate` instead of
  running the statement again (the emulator runs it again).
- A small job takes about 0.3-2 s end to end.

`BigQueryRealismProxy` sits between the app and the emulator (point BIGQUERY_EMULATOR_HOST at `url`) and
adds that: a latency per kind of call, end to end (the statement is forwarded at once and its answer
held, in the statement's slot, until its latency has passed since it took the slot), the per-table
running/pending limits with real threads, BigQuery's own refusal bodies,
optional concurrent-update aborts, and job-id uniqueness. It applies to the request that starts a
statement (jobs.query, or jobs.insert), so each statement is delayed and limited exactly once whichever
way the client sends it; polls of a job (getQueryResults, jobs.get) pass straight through.

End to end, because BigQuery's 0.3-2 s include running the statement. Added on top instead (as before),
the emulator's own time counted twice, and under load more: it runs one statement at a time, so every
statement also waited for whatever other tables' statements were queued before it (a flush of 200
tenant-table MERGEs made each central statement about 2 s longer), a contention BigQuery, which runs other
tables' statements side by side, does not have. A statement the emulator takes longer over than its
latency is answered when the emulator answers.

Not modelled: when a write becomes visible (the emulator applies it when forwarded, up to its latency
before its answer; BigQuery commits near the end), jobs.query `requestId` de-duplication,
partition-level conflicts (any two overlapping mutating statements on a table may conflict), slot
contention between tables.

Tests use the `realistic_bigquery` fixture (tests/conftest.py); a bench script uses `realism_proxy`:

    with realism_proxy(emulator.url, scale=0.1) as proxy, override_settings(BIGQUERY_EMULATOR_HOST=proxy.url):
        ...
    print(proxy.counts())
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from tests.support.bigquery_proxy import (
    Exchange,
    LoopbackProxy,
    bigquery_error_body,
    concurrent_update_body,
    job_payload,
    path_project,
    statement_kind,
    statement_table,
    too_many_dml_body,
)

MUTATING = frozenset({"update", "delete", "merge"})
POLL = "poll"


@dataclass(frozen=True)
class Latency:
    """Seconds each kind of call takes end to end (real BigQuery: about 0.3-2 s a job)."""

    select: float = 0.5
    dml: float = 1.5
    ddl: float = 1.0
    metadata: float = 0.2

    def of(self, kind: str) -> float:
        if kind == "select":
            return self.select
        if kind in MUTATING or kind == "insert":
            return self.dml
        return self.ddl if kind == "ddl" else self.metadata


@dataclass(frozen=True)
class DmlLimits:
    """BigQuery's per-table DML concurrency (see the module docstring)."""

    mutating_running: int = 2
    mutating_pending: int = 20
    insert_free_per_day: int = 1500
    insert_running: int = 10
    insert_pending: int = 100


@dataclass(frozen=True)
class Call:
    """What a request does: its kind (select, update, ..., ddl, metadata, poll) and the table it names."""

    kind: str
    table: str
    job_id: str = ""


@dataclass
class Lane:
    """One table's queue for one class of DML: how many run and wait now, and the most that ever ran."""

    running: int = 0
    pending: int = 0
    peak: int = 0
    next_ticket: int = 0
    serving: int = 0


@dataclass
class _Stats:
    counts: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    refusals: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    duplicates: int = 0


def classify(method: str, path: str, body: bytes) -> Call:
    """The kind of call a request is and the table it names (`project:dataset.table`, '' if none)."""
    bare = path.split("?")[0]
    project = path_project(bare)
    payload = job_payload(method, bare, body)
    if payload:
        sql = str(
            payload.get("query") or payload.get("configuration", {}).get("query", {}).get("query") or ""
        )
        job_id = str(payload.get("jobReference", {}).get("jobId") or "")
        if sql:
            return Call(kind=statement_kind(sql), table=statement_table(sql, project=project), job_id=job_id)
        return Call(kind="metadata", table=project, job_id=job_id)
    if "/queries/" in bare or "/jobs/" in bare:
        return Call(kind=POLL, table="")  # getQueryResults, jobs.get, jobs.cancel of a running statement
    return Call(kind="metadata", table=_resource(bare, project))


def _resource(path: str, project: str) -> str:
    """`p:d.t` of a table call, `p:d` of a dataset call, `p` otherwise (IAM suffixes dropped)."""
    parts = path.split("/")
    names = {parts[i - 1]: parts[i].split(":")[0] for i in range(1, len(parts)) if parts[i - 1]}
    dataset, table = names.get("datasets"), names.get("tables")
    if dataset and table:
        return f"{project}:{dataset}.{table}"
    return f"{project}:{dataset}" if dataset else project


class BigQueryRealismProxy(LoopbackProxy):
    """The emulator behind BigQuery's latency, per-table DML limits and refusals (module docstring)."""

    def __init__(
        self,
        upstream: str,
        *,
        latency: Latency = Latency(),
        scale: float = 1.0,
        limits: DmlLimits = DmlLimits(),
        conflict_probability: float = 0.0,
        seed: int | None = None,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] | None = None,
    ) -> None:
        super().__init__(upstream)
        self.latency = latency
        self.scale = scale
        self.limits = limits
        self.conflict_probability = conflict_probability
        self._random = random.Random(seed)  # noqa: S311 - a simulation, not a secret
        # Injected by tests that hold statements in their slots; by default a wait that stop() ends.
        self._sleep = sleep or self._stopping.wait
        self._clock = clock
        self._today = today or (lambda: datetime.now(UTC).date())
        self._cond = threading.Condition()
        self._lanes: dict[tuple[str, str], Lane] = defaultdict(Lane)
        self._inserts_per_day: Counter[tuple[str, date]] = Counter()
        self._job_ids: set[str] = set()
        self._stats = _Stats()

    def start(self) -> BigQueryRealismProxy:
        super().start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._cond.notify_all()
        super().stop()

    # --- what happened ------------------------------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        """Statements (and metadata calls) received per table and kind: {table: {kind: n}}."""
        with self._cond:
            return {table: dict(kinds) for table, kinds in self._stats.counts.items()}

    def refusals(self) -> dict[str, dict[str, int]]:
        """Statements refused per table: {table: {"too_many_dml" | "concurrent_update": n}}."""
        with self._cond:
            return {table: dict(kinds) for table, kinds in self._stats.refusals.items()}

    @property
    def duplicates(self) -> int:
        """jobs.insert requests answered 409 because their job id existed."""
        with self._cond:
            return self._stats.duplicates

    def lane(self, table: str, lane: str = "mutating") -> Lane:
        """A copy of the table's `mutating` (UPDATE/DELETE/MERGE) or `insert` lane."""
        with self._cond:
            current = self._lanes[(table, lane)]
            return Lane(current.running, current.pending, current.peak, current.next_ticket, current.serving)

    def reset(self) -> None:
        """Forget the counts, refusals and peaks (not the day's INSERT allowance or known job ids)."""
        with self._cond:
            self._stats = _Stats()
            for current in self._lanes.values():
                current.peak = current.running

    def wait_until(self, condition: Callable[[BigQueryRealismProxy], bool], *, timeout: float = 30.0) -> None:
        """Block until `condition(self)` holds (checked whenever a lane changes), or AssertionError."""
        deadline = time.monotonic() + timeout
        with self._cond:  # an RLock underneath: `condition` may read the proxy
            while not condition(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"realism proxy: condition not met within {timeout} s")
                self._cond.wait(min(remaining, 0.05))

    # --- one request --------------------------------------------------------------------------------
    def handle(self, exchange: Exchange) -> None:
        call = classify(exchange.method, exchange.path, exchange.body)
        if call.kind == POLL:
            exchange.relay()
            return
        if call.job_id and not self._claim_job_id(call.job_id):
            exchange.answer_json(409, _duplicate_body(exchange.path, call.job_id))
            return
        with self._cond:
            self._stats.counts[call.table][call.kind] += 1
        lane, running, pending = self._lane_limits(call)
        if lane is None:
            self._run(exchange, call)
            return
        if not self._admit(call.table, lane, running, pending):
            self._refuse(call, "too_many_dml")
            self._release_job_id(call.job_id)  # refused before it became a job
            exchange.answer_json(400, too_many_dml_body(call.table, pending))
            return
        try:
            if lane == "mutating" and self._loses_conflict(call.table):
                self._sleep(self.latency.dml * self.scale)  # it ran, then aborted; nothing changed
                self._refuse(call, "concurrent_update")
                exchange.answer_json(400, concurrent_update_body(call.table))
                return
            self._run(exchange, call)
        finally:
            self._leave(call.table, lane)

    def _run(self, exchange: Exchange, call: Call) -> None:
        """Forward at once; answer once the call's latency has passed since it took its slot (end to end)."""
        arrived = self._clock()
        answer = exchange.forward()
        left = self.latency.of(call.kind) * self.scale - (self._clock() - arrived)
        if left > 0:
            self._sleep(left)
        exchange.answer(*answer)

    def _lane_limits(self, call: Call) -> tuple[str | None, int, int]:
        """Which lane limits the call, with its running and pending limits (None: not limited)."""
        if call.kind in MUTATING:
            return "mutating", self.limits.mutating_running, self.limits.mutating_pending
        if call.kind != "insert":
            return None, 0, 0
        with self._cond:
            key = (call.table, self._today())
            self._inserts_per_day[key] += 1
            free = self._inserts_per_day[key] <= self.limits.insert_free_per_day
        # Free inserts still take their place in the lane, so the limit counts them once it applies.
        return "insert", (10**9 if free else self.limits.insert_running), self.limits.insert_pending

    def _admit(self, table: str, lane_name: str, running: int, pending: int) -> bool:
        """Take a running slot, waiting in FIFO order among at most `pending`; False: refused at once."""
        with self._cond:
            lane = self._lanes[(table, lane_name)]
            if lane.running >= running or lane.pending > 0:
                if lane.pending >= pending:
                    return False
                ticket = lane.next_ticket
                lane.next_ticket += 1
                lane.pending += 1
                self._cond.notify_all()
                while not self._stopping.is_set() and (lane.serving != ticket or lane.running >= running):
                    self._cond.wait(0.5)
                lane.serving += 1
                lane.pending -= 1
            lane.running += 1
            lane.peak = max(lane.peak, lane.running)
            self._cond.notify_all()
            return True

    def _leave(self, table: str, lane_name: str) -> None:
        with self._cond:
            self._lanes[(table, lane_name)].running -= 1
            self._cond.notify_all()

    def _loses_conflict(self, table: str) -> bool:
        """Another mutating statement on the table is running too: this later one may abort."""
        with self._cond:
            overlapping = self._lanes[(table, "mutating")].running > 1
            return overlapping and self._random.random() < self.conflict_probability

    def _refuse(self, call: Call, reason: str) -> None:
        with self._cond:
            self._stats.refusals[call.table][reason] += 1

    def _claim_job_id(self, job_id: str) -> bool:
        with self._cond:
            if job_id in self._job_ids:
                self._stats.duplicates += 1
                return False
            self._job_ids.add(job_id)
            return True

    def _release_job_id(self, job_id: str) -> None:
        with self._cond:
            self._job_ids.discard(job_id)


def _duplicate_body(path: str, job_id: str) -> bytes:
    return bigquery_error_body(409, "duplicate", f"Already Exists: Job {path_project(path)}:US.{job_id}")


@contextmanager
def realism_proxy(upstream: str, **options: object) -> Iterator[BigQueryRealismProxy]:
    """A started `BigQueryRealismProxy` in front of `upstream`, stopped at the end of the block."""
    proxy = BigQueryRealismProxy(upstream, **options).start()  # type: ignore[arg-type]
    try:
        yield proxy
    finally:
        proxy.stop()
