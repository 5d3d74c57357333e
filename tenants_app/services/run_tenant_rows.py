"""Reports' rows for the tenants' datasets: kept on the run's queue entry, written there a part at a time.

A report makes rows for the tenant's own tables: the attempt's execution record, its step logs and its
DQ results. Written in the report's request, they cost one MERGE per tenant table per report (grouped
only with the tenant's reports arriving while its last write ran), and the report waited for them
before its commit. Instead:

1. the report tick's compare-and-set (run_report_batches.py) stores them in the entry's `tenant_rows`,
   in the statement that commits the report: a 2xx means they are durable in BigQuery, and a report
   that did not commit stored none;
2. `tenant_rows_flush`, run by `manage.py run_periodic`, reads the entries holding rows (one SELECT),
   writes each tenant's rows with one MERGE per tenant table (tenants side by side: separate tables),
   and clears what it wrote (one MERGE on the queue, only where the entry's `tick_id` is still the one
   read, so rows a report added meanwhile stay for the next flush).
3. The flushes are spread over PERIODIC_TENANT_ROWS_SECONDS: the tenants are cut into
   PERIODIC_TENANT_ROWS_PARTS stable parts (by a fingerprint of their id, `Part`), and each flush takes
   the next part. All tenants written at once every period would be a burst of three statements per
   tenant, all at the same second, taking its turn with the claims and reports of that second; a part
   at a time keeps BigQuery's load steady, for the price of a queue SELECT and clear per part.

So a tenant table gets at most one statement per period, whatever the number of reports, and rows reach
the tenant's dataset within a period and a flush. Until then the run's page and `GET runs/{id}` show
them from the entry (`tenant_rows_merged`). Writes replace rows on ids derived from run and attempt: a
flush repeated after a failure between its writes and its clear rewrites the same rows.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bigquery_backend.client import get_gateway
from bigquery_backend.exceptions import NotFound as BackendNotFound
from bigquery_backend.models import model_as_json, model_from_json
from bigquery_backend.repository import Part, RowChange, batched
from tenants_app.log_context import ContextThreadPoolExecutor
from tenants_app.models import TenantDqResult, TenantPipelineExecutionQueue, TenantPipelineRun, TenantStepLog
from tenants_app.repositories import tenant_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.datasets import tenant_dataset
from tenants_app.services.run_common import queue_repository
from tenants_app.task_graph import Task, run_tasks

logger = logging.getLogger(__name__)

# Entries read per round, and rounds per flush: a backlog (after an outage) drains over a few flushes.
_ENTRIES_PER_ROUND = 2000
_MAX_ROUNDS = 5
# Tenants written at a time: each is its own tables, so BigQuery runs them side by side.
_TENANTS_AT_ONCE = 8
EVERY_TENANT = Part(0, of=1)


@dataclass(frozen=True)
class TenantRows:
    """What one report writes to the tenant's own dataset: the attempt's record, its steps and checks."""

    execution: TenantPipelineRun
    steps: list[TenantStepLog] = field(default_factory=list)
    checks: list[TenantDqResult] = field(default_factory=list)

    @property
    def logging_id(self) -> str:
        return self.execution.pipeline_logging_id

    def as_json(self) -> dict[str, Any]:
        return {
            "execution": model_as_json(self.execution),
            "steps": [model_as_json(step) for step in self.steps],
            "checks": [model_as_json(check) for check in self.checks],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TenantRows:
        return cls(
            execution=model_from_json(TenantPipelineRun, value["execution"]),
            steps=[model_from_json(TenantStepLog, step) for step in value.get("steps") or []],
            checks=[model_from_json(TenantDqResult, check) for check in value.get("checks") or []],
        )


@dataclass
class TenantRowsReport:
    """What one flush did (or several: `add`)."""

    entries: int = 0
    tenants: int = 0
    attempts: int = 0
    failed_tenants: list[str] = field(default_factory=list)
    more_left: bool = False

    def add(self, other: TenantRowsReport) -> None:
        """Count another flush's work in this report (the parts of one periodic run)."""
        self.entries += other.entries
        self.tenants += other.tenants
        self.attempts += other.attempts
        self.failed_tenants += other.failed_tenants
        self.more_left = self.more_left or other.more_left


# --- on the entry ---------------------------------------------------------------------------------------
def tenant_rows_kept(entry: TenantPipelineExecutionQueue, rows: TenantRows) -> list[dict[str, Any]]:
    """The entry's `tenant_rows` with a report's rows added: an earlier attempt's rows not written yet
    stay; a repeat of the same attempt replaces its own."""
    try:
        held = _items(entry)
    except ValueError:
        # Never written by this module as it is: refusing every report of the run would not mend it.
        logger.error("run %s: tenant rows unreadable, replaced by its report's", entry.run_id)
        held = []
    kept = [item for item in held if _logging_id(item) != rows.logging_id]
    return [*kept, rows.as_json()]


def tenant_rows_pending(
    entry: TenantPipelineExecutionQueue | None, *, strict: bool = False
) -> list[TenantRows]:
    """The rows an entry holds for its tenant's dataset (not written there yet). Rows that cannot be
    read show as none (logged), so a page still opens; `strict` raises instead (the flush)."""
    if entry is None:
        return []
    try:
        return [TenantRows.from_json(item) for item in _items(entry)]
    except Exception:
        if strict:
            raise
        logger.error("run %s: tenant rows unreadable, not shown", entry.run_id)
        return []


def tenant_rows_waiting(*, tenant_id: str, limit: int = 200) -> list[TenantRows]:
    """A tenant's rows not yet written to its dataset, from every entry holding some (one SELECT)."""
    entries = queue_repository().list(
        filters={"tenant_id": tenant_id, "tenant_rows__isnull": False}, fields=["tenant_rows"], limit=limit
    )
    return [rows for entry in entries for rows in tenant_rows_pending(entry)]


def tenant_rows_merged(
    *,
    executions: Sequence[TenantPipelineRun],
    steps: Sequence[TenantStepLog],
    checks: Sequence[TenantDqResult],
    pending: Sequence[TenantRows],
) -> tuple[list[TenantPipelineRun], list[TenantStepLog], list[TenantDqResult]]:
    """Rows read from the tenant's tables with the pending ones in place of theirs: an attempt's pending
    rows are newer than any copy already written (a repeated flush, a retried report)."""
    newer = {rows.logging_id: rows for rows in pending}
    return (
        [row for row in executions if row.pipeline_logging_id not in newer]
        + [rows.execution for rows in newer.values()],
        [row for row in steps if row.pipeline_logging_id not in newer]
        + [step for rows in newer.values() for step in rows.steps],
        [row for row in checks if row.pipeline_logging_id not in newer]
        + [check for rows in newer.values() for check in rows.checks],
    )


def tenant_rows_drop(*, tenant_id: str) -> int:
    """Forget a tenant's rows not yet written (its dataset was purged); how many entries held some."""
    return queue_repository().update_where(
        {"tenant_rows": None}, filters={"tenant_id": tenant_id, "tenant_rows__isnull": False}
    )


# --- the flush ------------------------------------------------------------------------------------------
def tenant_rows_flush(*, part: Part = EVERY_TENANT) -> TenantRowsReport:
    """Write the pending rows of the tenants in `part` to their datasets, then clear them from the entries.

    A tenant whose write fails keeps its rows for the next flush, and the others go on: rounds page on
    `run_id`, so a failing tenant's entries are not read again in the same flush. A tenant without a
    dataset (purged at offboarding) has them dropped, as nothing could ever read them.
    """
    report = TenantRowsReport()
    after = ""
    # The whole table needs no part: no fingerprint to compute on every row.
    in_part = {"tenant_id__part": part} if part.of > 1 else {}
    with bigquery_errors_translated():
        for _ in range(_MAX_ROUNDS):
            entries = queue_repository().list(
                filters={"tenant_rows__isnull": False, "run_id__gt": after, **in_part},
                fields=["run_id", "tenant_id", "tick_id", "tenant_rows"],
                order_by=("run_id",),
                limit=_ENTRIES_PER_ROUND,
            )
            if not entries:
                break
            _flush_round(entries, report)
            after = entries[-1].run_id
            report.more_left = len(entries) == _ENTRIES_PER_ROUND
            if not report.more_left:
                break
    return report


def _flush_round(entries: list[TenantPipelineExecutionQueue], report: TenantRowsReport) -> None:
    by_tenant: dict[str, list[TenantPipelineExecutionQueue]] = defaultdict(list)
    rows: dict[str, list[TenantRows]] = defaultdict(list)
    for entry in entries:
        try:
            rows[entry.tenant_id].extend(tenant_rows_pending(entry, strict=True))
        except Exception:  # whatever an entry holds, it must not stop the others
            # Kept as it is (not cleared, never guessed at) and the others go on; needs a look.
            logger.error("run %s: tenant rows unreadable, left on its queue entry", entry.run_id)
            continue
        by_tenant[entry.tenant_id].append(entry)
    written: list[TenantPipelineExecutionQueue] = []
    with ContextThreadPoolExecutor(_TENANTS_AT_ONCE, thread_name_prefix="tenant-rows") as pool:
        futures = {
            tenant_id: pool.submit(_write_tenant, tenant_id, rows[tenant_id])
            for tenant_id in sorted(by_tenant)
        }
        for tenant_id, future in futures.items():
            try:
                report.attempts += future.result()
            except Exception as exc:
                # Kept for the next flush; the error's class only (its text may quote a row).
                logger.warning(
                    "tenant %s: rows not written (%s), kept for the next flush", tenant_id, type(exc).__name__
                )
                report.failed_tenants.append(tenant_id)
                continue
            written.extend(by_tenant[tenant_id])
            report.tenants += 1
    _clear(written)
    report.entries += len(written)


def _write_tenant(tenant_id: str, rows: list[TenantRows]) -> int:
    """One MERGE per tenant table for a batch of attempts (more only past one statement's size)."""
    # An attempt's rows may sit on the entry twice (kept after a failed clear, then added to): once each.
    unique = list({item.logging_id: item for item in rows}.values())
    try:
        for batch in batched(unique, rows=_row_count, size=_byte_count):
            _write_batch(tenant_id, batch)
    except BackendNotFound:
        if _dataset_exists(tenant_id):
            raise  # a table missing, say: kept until bootstrap_bigquery puts it back
        logger.error(
            "tenant %s has no dataset: %d runs' execution records and logs dropped", tenant_id, len(unique)
        )
    return len(unique)


def _row_count(item: TenantRows) -> int:
    return max(1, len(item.steps), len(item.checks))


def _byte_count(item: TenantRows) -> int:
    return len(json.dumps(item.as_json(), default=str))


def _dataset_exists(tenant_id: str) -> bool:
    try:
        get_gateway().get_dataset(tenant_dataset(tenant_id))
    except BackendNotFound:
        return False
    return True


def _write_batch(tenant_id: str, rows: list[TenantRows]) -> None:
    """Each attempt's rows replace any earlier copy (a rewrite never duplicates), side by side."""
    ids = [item.logging_id for item in rows]
    with_steps = [item for item in rows if item.steps]
    with_checks = [item for item in rows if item.checks]
    writes: dict[str, Task[Any]] = {
        "executions": Task(
            lambda: tenant_repository(TenantPipelineRun, tenant_id).replace_group(
                [item.execution for item in rows], group={"pipeline_logging_id__in": ids}
            )
        )
    }
    if with_steps:
        writes["steps"] = Task(
            lambda: tenant_repository(TenantStepLog, tenant_id).replace_group(
                [step for item in with_steps for step in item.steps],
                group={"pipeline_logging_id__in": [item.logging_id for item in with_steps]},
            )
        )
    if with_checks:
        writes["checks"] = Task(
            lambda: tenant_repository(TenantDqResult, tenant_id).replace_group(
                [check for item in with_checks for check in item.checks],
                group={"pipeline_logging_id__in": [item.logging_id for item in with_checks]},
            )
        )
    run_tasks(writes, max_workers=3, thread_name_prefix="tenant-rows")


def _clear(entries: list[TenantPipelineExecutionQueue]) -> None:
    """ONE MERGE: the rows leave each entry still as read (a report since then changed its `tick_id`)."""
    for batch in batched(entries):
        changes = [
            RowChange(key=entry.run_id, values={}, expected={"tick_id": entry.tick_id}) for entry in batch
        ]
        queue_repository().update_many(changes, shared={"tenant_rows": None})


def _items(entry: TenantPipelineExecutionQueue | None) -> list[Mapping[str, Any]]:
    value = entry.tenant_rows if entry is not None else None
    if value is None:
        return []
    # Only this module writes the column: anything else is a bug, never to be overwritten or dropped.
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ValueError(f"run {entry.run_id if entry else None}: tenant_rows is not a list of objects")
    return value


def _logging_id(item: Mapping[str, Any]) -> Any:
    execution = item.get("execution")
    return execution.get("pipeline_logging_id") if isinstance(execution, Mapping) else None
