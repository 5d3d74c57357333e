"""Worker reports' commit, group-committed: every report of a tick is one statement per central table.

A report (run_reports.py) checks what the worker sent and builds its rows, then hands them here.
The tick (bigquery_backend/batching.py) commits every report that arrived meanwhile:

1. ONE MERGE moves the queue entries out of RUNNING, each with its own compare-and-set (state,
   worker, credential and attempt as the report read them), tagged with the tick's `tick_id`. It also
   stores each report's rows for the tenant's dataset on its entry (`tenant_rows`, written to the
   tenant's tables by run_tenant_rows.py), so a report commits with its rows or not at all. Only
   reports carrying more than a statement takes (repository.MAX_BATCH_BYTES) make more than one;
2. when fewer rows matched than were sent, one read of the tag tells which reports won (a repeat of
   a report that already landed, a lease lost to a cleanup or a cancel did not);
3. side by side: ONE UPDATE frees the winners' slots and counts their outcomes on the usage rows
   (quota_batches.quota_release_many), and ONE MERGE moves their scheduled runs;
4. one read of those run rows answers every report as BigQuery now holds it; runs that failed for
   good are notified (queued in the cache), and ONE MERGE records each config's last run.

The guarantees are run_reports.py's: the compare-and-set is the commit point, the slot is freed only
by the report that won it, and a report that failed after its compare-and-set is repaired by its
repeat (the replay path, which frees a slot only if the usage row still counts it). Reports of the
same run in one tick are committed once; the others take the replay path.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bigquery_backend.batching import GroupCommit
from bigquery_backend.exceptions import BackendUnavailable
from bigquery_backend.repository import RowChange, batched
from tenants_app.log_context import ContextThreadPoolExecutor
from tenants_app.models import RunState, TenantPipelineConfig, TenantScheduledPipelineRun
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.errors import DoesNotExist
from tenants_app.services.notifications import notify_run_failed
from tenants_app.services.quota_batches import Release, quota_release_many
from tenants_app.services.run_common import (
    FINISHED_STATES,
    LANE_WAIT_SECONDS,
    Candidate,
    lease_forget,
    queue_repository,
    release_outcome_unknown,
    reports_lane,
    scheduled_runs_repository,
    unblock_tenant,
)

logger = logging.getLogger(__name__)

# A burst of workers reports together: 128 workers finishing 10 runs each are 1,280 reports, which at
# 500 a tick took three ticks one after another (the last reports waited about 18 s in the bench). The
# statements per tick stay the same whatever the batch, but for one past a statement's size: the queue
# and run MERGEs are cut by `_by_payload` (2,000 failures with 10,000-character errors are 20 MB).
_MAX_REPORTS_PER_TICK = 2000


@dataclass(frozen=True)
class ReportCommit:
    """One report's commit: the entry as read, what it becomes, and what its run row becomes.

    `queue_values` and `run_values` name the same columns in every report (bigquery_backend's
    `UNCHANGED` where a report leaves one alone), so a tick is one statement per table.
    """

    candidate: Candidate
    worker_id: str
    queue_values: Mapping[str, Any]
    run_values: Mapping[str, Any]
    succeeded: bool | None
    now: datetime


class NotCommitted:
    """The report's compare-and-set did not match: a repeat, or the lease is gone (the caller reads)."""


NOT_COMMITTED = NotCommitted()


def report_commit(commit: ReportCommit) -> TenantScheduledPipelineRun | NotCommitted:
    """Commit one report in the next tick; the run row after it, or NOT_COMMITTED."""
    with bigquery_errors_translated():
        return _reports.submit(commit)


def _tick(commits: list[ReportCommit]) -> list[TenantScheduledPipelineRun | NotCommitted | BaseException]:
    results: list[TenantScheduledPipelineRun | NotCommitted | BaseException] = [NOT_COMMITTED] * len(commits)
    first: dict[str, int] = {}
    for index, commit in enumerate(commits):
        # A MERGE matches each row to one source row: a second report of the run replays after this one.
        first.setdefault(commit.candidate.entry.run_id, index)
    batch = [commits[index] for index in first.values()]
    try:
        with bigquery_errors_translated():
            won = _move_entries(batch)
            if not won:
                return results
            lease_forget(*(commit.candidate.entry.run_id for commit in won))
            rows = _follow(won)
    except Exception as exc:
        for index in first.values():
            results[index] = exc
        return results
    for index in first.values():
        run_id = commits[index].candidate.entry.run_id
        if any(commit.candidate.entry.run_id == run_id for commit in won):
            row = rows.get(run_id)
            results[index] = (
                row if row is not None else DoesNotExist(f"run {run_id!r} has no scheduled-run row")
            )
    return results


_reports: GroupCommit[ReportCommit, TenantScheduledPipelineRun | NotCommitted] = GroupCommit(
    _tick, lane=reports_lane, max_batch=_MAX_REPORTS_PER_TICK, lane_wait=LANE_WAIT_SECONDS
)


def _move_entries(batch: list[ReportCommit]) -> list[ReportCommit]:
    """Step 1-2: the compare-and-set of every report; the reports that won it."""
    tick_id = f"report:{uuid.uuid4().hex}"
    changes = []
    for commit in batch:
        entry = commit.candidate.entry
        changes.append(
            RowChange(
                key=entry.run_id,
                values={**commit.queue_values, "heartbeat_at": commit.now},
                # As read (the report checked the lease): an entry claimed before leases recorded
                # their credential has none, and matches with none.
                expected={
                    "state": RunState.RUNNING,
                    "lease_owner": commit.worker_id,
                    "lease_credential": entry.lease_credential,
                    "attempt": entry.attempt,
                },
            )
        )
    queue = queue_repository()
    shared = {"lease_expires_at": None, "tick_id": tick_id}
    if sum(queue.update_many(chunk, shared=shared) for chunk in _by_payload(changes)) == len(changes):
        return batch
    ours = queue.list(
        filters={"run_id__in": [c.candidate.entry.run_id for c in batch], "tick_id": tick_id},
        fields=["run_id"],
    )
    matched = {entry.run_id for entry in ours}
    return [commit for commit in batch if commit.candidate.entry.run_id in matched]


def _by_payload(changes: list[RowChange]) -> Iterator[list[RowChange]]:
    """The changes in as few MERGEs as their values allow (one, unless reports carry megabytes: tenant
    rows, error messages)."""
    return batched(changes, size=lambda change: len(json.dumps(change.values, default=str)))


def _follow(won: list[ReportCommit]) -> dict[str, TenantScheduledPipelineRun]:
    """Step 3-4: slots and outcomes, run rows (side by side); then the run rows as they are now."""
    releases = [
        Release(c.candidate.entry.tenant_id, c.candidate.entry.usage_date, c.succeeded)
        for c in won
        if c.candidate.entry.usage_date is not None
    ]
    runs = scheduled_runs_repository()
    changes = [
        RowChange(key=c.candidate.entry.run_id, values=c.run_values) for c in won if c.candidate.has_run_row
    ]
    with ContextThreadPoolExecutor(3) as pool:
        freed = pool.submit(quota_release_many, releases=releases)
        moved = pool.submit(_move_runs, changes) if changes else None
        stamped = pool.submit(_stamp_configs, won)
        # All awaited before a failure is raised: the slot release must not be abandoned because the
        # run rows failed (the repeat's replay repairs the rows and configs, and frees nothing twice).
        freed_error = freed.exception()
        moved_error = moved.exception() if moved is not None else None
        stamped_error = stamped.exception()
    if freed_error is not None:
        if isinstance(freed_error, BackendUnavailable) and freed_error.job_id:
            release_outcome_unknown(freed_error.job_id, *(c.candidate.entry.run_id for c in won))
        raise freed_error
    for tenant in sorted({release.tenant_id for release in releases}):
        unblock_tenant(tenant)
    if moved_error is not None:
        raise moved_error
    if stamped_error is not None:
        raise stamped_error
    found = runs.list(filters={"run_id__in": [c.candidate.entry.run_id for c in won]})
    for row in found:
        if row.state == RunState.FAILED:
            notify_run_failed(run=row)
    return {row.run_id: row for row in found}


def _move_runs(changes: list[RowChange]) -> None:
    """The run rows (ONE MERGE; more only past one statement's size: a tick of failures with long errors)."""
    for chunk in _by_payload(changes):
        scheduled_runs_repository().update_many(chunk)


def _stamp_configs(won: list[ReportCommit]) -> None:
    """Each config's `last_run_time` and `last_run_status` from the runs of the tick that ended (ONE
    MERGE); a report's replay writes its own again (config_last_run_record)."""
    latest: dict[str, ReportCommit] = {}
    for commit in won:
        config_id = commit.candidate.entry.config_id
        if config_id is not None and commit.queue_values["state"] in FINISHED_STATES:
            latest[config_id] = commit
    if latest:
        changes = [
            RowChange(
                config_id, {"last_run_time": commit.now, "last_run_status": commit.queue_values["state"]}
            )
            for config_id, commit in sorted(latest.items())
        ]
        central_repository(TenantPipelineConfig).update_many(changes)


def config_last_run_record(*, config_id: str | None, state: str, now: datetime) -> None:
    """One config's last run, for the replay of a report whose tick failed after its commit point."""
    if config_id is not None and state in FINISHED_STATES:
        central_repository(TenantPipelineConfig).update_where(
            {"last_run_time": now, "last_run_status": state}, filters={"config_id": config_id}
        )
