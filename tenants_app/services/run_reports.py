"""Worker reports: complete or fail a held run; the replay of a report that already landed.

A report checks what the worker sent (run_report_checks.py) and its lease, builds the rows of the
tenant's dataset, and hands everything to the report tick (run_report_batches.py), whose
compare-and-set on the queue entry stores those rows with it (run_tenant_rows.py writes them to the
tenant's tables later, a part of the tenants at a time). The compare-and-set is the commit point of
every transition (why that makes one caller win, and how claims take and record concurrent slots:
run_queue.py). The tick releases the run's slot with its compare-and-set's winners, before the run row
follows, so a failure on the run row leaves no slot behind: repeating the report repairs the run row,
and never releases again. A repeat cannot know whether an earlier attempt's release landed: it compares the
usage row's count with the queue's RUNNING entries and releases once if the row counts more
(`quotas.quota_release_if_leaked`), so an outage between the compare-and-set and the release does
not leak the slot.

Retries: `fail` re-queues with exponential backoff (`available_at`) while `retry_count < max_retries`,
then marks the run FAILED. `complete` with FAILED is a final outcome (the pipeline ran and failed).
Reports are not audited (see run_queue.py).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from bigquery_backend.repository import UNCHANGED
from tenants_app.models import (
    RunState,
    RunTrigger,
    TenantDqResult,
    TenantPipelineExecutionQueue,
    TenantPipelineRun,
    TenantScheduledPipelineRun,
    TenantStepLog,
)
from tenants_app.services.actors import actor_masked
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import audit_redact
from tenants_app.services.errors import DoesNotExist, LeaseLost, ValidationFailed
from tenants_app.services.retries import exponential_backoff
from tenants_app.services.run_common import (
    COMPLETION_STATES,
    MAX_ERROR_LENGTH,
    MAX_JSON_BYTES,
    RUN_ID_MAX,
    Candidate,
    candidate_of,
    check_worker_id,
    release_if_leaked,
    reported_candidate,
    scheduled_runs_repository,
)
from tenants_app.services.run_report_batches import (
    NotCommitted,
    ReportCommit,
    config_last_run_record,
    report_commit,
)
from tenants_app.services.run_report_checks import (
    report_dq_results_checked,
    report_json_checked,
    report_size_checked,
    report_step_logs_checked,
    report_text_redacted,
)
from tenants_app.services.run_tenant_rows import TenantRows, tenant_rows_kept

logger = logging.getLogger(__name__)


# --- worker reports ---------------------------------------------------------------------------------
def run_complete(
    *,
    run_id: str,
    worker_id: str,
    credential: str | None = None,
    status: str,
    tenant_id: str | None = None,
    attempt: int | None = None,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    step_logs: Sequence[Mapping[str, Any]] = (),
    dq_results: Sequence[Mapping[str, Any]] = (),
    run_metadata: Mapping[str, Any] | None = None,
    error: str | None = None,
    now: datetime | None = None,
) -> TenantScheduledPipelineRun:
    """Record a finished attempt (final: SUCCEEDED or FAILED) and its logs in the tenant's dataset.

    Idempotent: the same worker repeating the call for a run it already finished gets the run back.
    """
    worker_id = check_worker_id(worker_id)
    now = now or timezone.now()
    errors: dict[str, list[str]] = {}
    if status not in COMPLETION_STATES:
        errors["status"] = [f"Choose one of {', '.join(COMPLETION_STATES)}."]
    ended_at = ended_at or now
    if started_at is not None and started_at > ended_at:
        errors["ended_at"] = ["Must not be before started_at."]
    if ended_at > now + timedelta(minutes=5):
        errors["ended_at"] = ["Must not be in the future."]
    steps = report_step_logs_checked(errors, step_logs)
    checks = report_dq_results_checked(errors, dq_results)
    metadata = report_json_checked(errors, "run_metadata", run_metadata, max_bytes=MAX_JSON_BYTES)
    if error is not None and len(error) > MAX_ERROR_LENGTH:
        errors["error"] = [f"At most {MAX_ERROR_LENGTH} characters."]
    report_size_checked(errors, steps=steps, checks=checks, metadata=metadata, error=error)
    if errors:
        raise ValidationFailed("invalid run completion", errors=errors)
    with bigquery_errors_translated():
        candidate = reported_candidate(
            run_id, tenant_id=tenant_id, worker_id=worker_id, credential=credential, attempt=attempt
        )
        entry = candidate.entry
        if _already_finished(
            entry, worker_id=worker_id, credential=credential, attempt=attempt, states=(status,)
        ):
            release_if_leaked(entry, succeeded=status == RunState.SUCCEEDED)
            return _finish_run_row(candidate, state=status, now=now, error=error, replay=True)
        _require_lease(entry, worker_id=worker_id, credential=credential, attempt=attempt)
        number = entry.attempt or 1
        logging_id = pipeline_logging_id(run_id, number)
        start = started_at or entry.processing_started_at or now
        # The tenant's rows ride on the commit (kept on the entry until run_tenant_rows.py writes them to
        # the tenant's dataset), with ids derived from the run and attempt: a retried request rewrites
        # the same rows, and a report that does not commit leaves none.
        tenant_rows = TenantRows(
            execution=_execution_record(
                candidate,
                logging_id=logging_id,
                status=status,
                start=start,
                end=ended_at,
                metadata=metadata,
                error=report_text_redacted(error),
            ),
            steps=_step_rows(entry.tenant_id, logging_id, steps),
            checks=_dq_rows(entry.tenant_id, logging_id, checks, now=now),
        )
        # The commit (run_report_batches.py): the entry's compare-and-set, then the slot and the run row.
        # If the run row fails after the compare-and-set, the worker's retry takes the replay path,
        # which repairs the run row but (the entry being out of RUNNING) can never release again.
        commit = ReportCommit(
            candidate=candidate,
            worker_id=worker_id,
            queue_values={
                "state": status,
                "available_at": UNCHANGED,
                "tenant_rows": tenant_rows_kept(entry, tenant_rows),
            },
            run_values=_completion_values(
                candidate.entry, state=status, now=now, error=error, logging_id=logging_id
            ),
            succeeded=status == RunState.SUCCEEDED,
            now=now,
        )
        outcome, fresh = _committed(commit, tenant_id=tenant_id, credential=credential)
        if fresh is not None:
            if _already_finished(
                fresh.entry, worker_id=worker_id, credential=credential, attempt=attempt, states=(status,)
            ):
                release_if_leaked(fresh.entry, succeeded=status == RunState.SUCCEEDED)
                return _finish_run_row(fresh, state=status, now=now, error=error, replay=True)
            raise LeaseLost(f"run {run_id} is no longer held by worker {worker_id}")
    return outcome


def run_fail(
    *,
    run_id: str,
    worker_id: str,
    credential: str | None = None,
    error: str,
    tenant_id: str | None = None,
    attempt: int | None = None,
    now: datetime | None = None,
) -> TenantScheduledPipelineRun:
    """A failed attempt: re-queued with exponential backoff while retries remain, else FAILED."""
    worker_id = check_worker_id(worker_id)
    now = now or timezone.now()
    if not isinstance(error, str) or not error.strip():
        raise ValidationFailed("invalid failure report", errors={"error": ["Describe the error."]})
    if len(error) > MAX_ERROR_LENGTH:
        raise ValidationFailed(
            "invalid failure report", errors={"error": [f"At most {MAX_ERROR_LENGTH} characters."]}
        )
    message = report_text_redacted(error)
    with bigquery_errors_translated():
        candidate = reported_candidate(
            run_id, tenant_id=tenant_id, worker_id=worker_id, credential=credential, attempt=attempt
        )
        entry = candidate.entry
        if _already_finished(
            entry,
            worker_id=worker_id,
            credential=credential,
            attempt=attempt,
            states=(RunState.QUEUED, RunState.FAILED),
        ):
            release_if_leaked(entry, succeeded=False)
            return _fail_run_row_repaired(candidate, now=now, message=message)
        _require_lease(entry, worker_id=worker_id, credential=credential, attempt=attempt)
        retry = candidate.retry_count < candidate.max_retries
        state = RunState.QUEUED if retry else RunState.FAILED
        values: dict[str, Any] = {"state": state, "available_at": UNCHANGED}
        if retry:
            values["available_at"] = now + retry_backoff(candidate.retry_count)
        run_values = {
            **_UNCHANGED_RUN,
            **_failed_run_values(candidate, state=state, now=now, message=message),
        }
        tenant_rows = TenantRows(
            execution=_execution_record(
                candidate,
                logging_id=pipeline_logging_id(run_id, entry.attempt or 1),
                status=RunState.FAILED,
                start=entry.processing_started_at or now,
                end=now,
                metadata=None,
                error=message,
            )
        )
        values["tenant_rows"] = tenant_rows_kept(entry, tenant_rows)
        commit = ReportCommit(
            candidate=candidate,
            worker_id=worker_id,
            queue_values=values,
            run_values=run_values,
            succeeded=False,
            now=now,
        )
        outcome, fresh = _committed(commit, tenant_id=tenant_id, credential=credential)
        if fresh is not None:
            if _already_finished(
                fresh.entry,
                worker_id=worker_id,
                credential=credential,
                attempt=attempt,
                states=(RunState.QUEUED, RunState.FAILED),
            ):
                release_if_leaked(fresh.entry, succeeded=False)
                return _fail_run_row_repaired(fresh, now=now, message=message)
            raise LeaseLost(f"run {run_id} is no longer held by worker {worker_id}")
        return outcome


def retry_backoff(retry_count: int) -> timedelta:
    """Delay before retry number `retry_count + 1`: base * 2**retry_count, capped."""
    return exponential_backoff(
        retry_count=retry_count,
        base_seconds=float(settings.PIPELINE_RETRY_BACKOFF_SECONDS),
        cap_seconds=float(settings.PIPELINE_RETRY_BACKOFF_MAX_SECONDS),
    )


def pipeline_logging_id(run_id: str, attempt: int) -> str:
    """The id of one attempt's execution record in the tenant's dataset."""
    suffix = f"_a{attempt}"
    if len(run_id) + len(suffix) > RUN_ID_MAX:
        run_id = (
            run_id[: RUN_ID_MAX - len(suffix) - 13] + "_" + uuid.uuid5(uuid.NAMESPACE_URL, run_id).hex[:12]
        )
    return run_id + suffix


# --- internals: the commit ---------------------------------------------------------------------------
def _committed(
    commit: ReportCommit, *, tenant_id: str | None, credential: str | None
) -> tuple[TenantScheduledPipelineRun, None] | tuple[None, Candidate]:
    """The run after the commit; or, when its compare-and-set did not match, the entry as it is now.

    A report checks the lease on the shared cache's copy of the claim when it has one. If BigQuery
    holds the same attempt for this caller but the copy was stale (a column the copy did not know
    of), the commit is made once more with the entry as read.
    """
    outcome = report_commit(commit)
    if not isinstance(outcome, NotCommitted):
        return outcome, None
    entry = commit.candidate.entry
    fresh = candidate_of(entry.run_id, tenant_id)
    if _holds(fresh.entry, commit.worker_id, credential, entry.attempt):
        outcome = report_commit(dataclasses.replace(commit, candidate=fresh))
        if not isinstance(outcome, NotCommitted):
            return outcome, None
        fresh = candidate_of(entry.run_id, tenant_id)
    return None, fresh


def _holds(
    entry: TenantPipelineExecutionQueue, worker_id: str, credential: str | None, attempt: int | None
) -> bool:
    try:
        _require_lease(entry, worker_id=worker_id, credential=credential, attempt=attempt)
    except LeaseLost:
        return False
    return entry.attempt == attempt


# --- internals: the lease ---------------------------------------------------------------------------
def _require_lease(
    entry: TenantPipelineExecutionQueue, *, worker_id: str, credential: str | None, attempt: int | None
) -> None:
    if entry.state != RunState.RUNNING or entry.lease_owner != worker_id:
        raise LeaseLost(f"run {entry.run_id} is not held by worker {worker_id} (it is {entry.state})")
    if not _same_credential(entry, credential):
        # The worker_id is the caller's free choice: another key or token of the tenant copying it
        # does not hold the lease.
        raise LeaseLost(f"run {entry.run_id} is held by another credential than this one")
    if attempt is not None and entry.attempt != attempt:
        raise LeaseLost(f"run {entry.run_id} is on attempt {entry.attempt}, not {attempt}")


def _already_finished(
    entry: TenantPipelineExecutionQueue,
    *,
    worker_id: str,
    credential: str | None,
    attempt: int | None,
    states: Iterable[str],
) -> bool:
    """A repeat of this worker's own last report (same state, worker, credential and attempt)."""
    return (
        entry.state in tuple(states)
        and entry.state != RunState.RUNNING
        and entry.lease_owner == worker_id
        and _same_credential(entry, credential)
        and (attempt is None or entry.attempt == attempt)
    )


def _same_credential(entry: TenantPipelineExecutionQueue, credential: str | None) -> bool:
    """Whether `credential` may act on the lease: the one that claimed it. Callers inside the app pass
    None (they act for no credential); entries claimed before leases recorded theirs have None."""
    return credential is None or entry.lease_credential is None or entry.lease_credential == credential


# --- internals: completion --------------------------------------------------------------------------
def _execution_record(
    candidate: Candidate,
    *,
    logging_id: str,
    status: str,
    start: datetime,
    end: datetime,
    metadata: Any,
    error: str | None,
) -> TenantPipelineRun:
    """The attempt's row in the tenant's `tenant_pipeline_runs` (GenAI-visible: nothing secret)."""
    entry = candidate.entry
    return TenantPipelineRun(
        pipeline_logging_id=logging_id,
        tenant_id=entry.tenant_id,
        pipeline_id=entry.pipeline_id,
        status=status,
        trigger_type=candidate.trigger_type or RunTrigger.SCHEDULE,
        # Who started a manual run, as the tenant may see it (staff masked); a schedule's config.
        trigger_by=actor_masked(candidate.trigger_by)
        if candidate.trigger_by
        else (f"config:{entry.config_id}" if entry.config_id else None),
        start_time=start,
        end_time=end,
        duration_ms=max(0, int((end - start).total_seconds() * 1000)),
        run_date=start.date(),
        # The config's parameters are the tenant's own, but a secret-named key never reaches this
        # GenAI-visible dataset.
        parameters=audit_redact(candidate.parameters) if candidate.parameters is not None else None,
        run_metadata=metadata,
        error_message=error,
    )


def _step_rows(tenant_id: str, logging_id: str, steps: list[TenantStepLog]) -> list[TenantStepLog]:
    for step in steps:
        step.tenant_id, step.pipeline_logging_id = tenant_id, logging_id
        step.step_logging_id = f"{logging_id}_s{step.step_index}"
    return steps


def _dq_rows(
    tenant_id: str, logging_id: str, checks: list[TenantDqResult], *, now: datetime
) -> list[TenantDqResult]:
    for index, check in enumerate(checks):
        check.tenant_id, check.pipeline_logging_id = tenant_id, logging_id
        check.dq_result_id = f"{logging_id}_dq{index}"
        check.ingestion_date = now.date()
    return checks


def _finish_run_row(
    candidate: Candidate,
    *,
    state: str,
    now: datetime,
    error: str | None,
    logging_id: str | None = None,
    replay: bool = False,
) -> TenantScheduledPipelineRun:
    run_id = candidate.entry.run_id
    runs = scheduled_runs_repository()
    if replay:
        # The first report's tick may have failed after its commit point: the config's last run too.
        config_last_run_record(config_id=candidate.entry.config_id, state=state, now=now)
        existing = runs.find(run_id)
        if existing is not None and existing.state == state:
            return existing
        # The first report's run-row UPDATE failed after the entry moved: write it now.
        logging_id = pipeline_logging_id(run_id, candidate.entry.attempt or 1)
    values = _completion_values(candidate.entry, state=state, now=now, error=error, logging_id=logging_id)
    if candidate.has_run_row:
        runs.update_where({k: v for k, v in values.items() if v is not UNCHANGED}, filters={"run_id": run_id})
    found = runs.find(run_id)
    if found is None:
        raise DoesNotExist(f"run {run_id!r} has no scheduled-run row")
    return found


# Every column a report may set on the run row: one statement for every report of a tick.
_UNCHANGED_RUN: dict[str, Any] = dict.fromkeys(
    (
        "state",
        "worker_id",
        "pipeline_logging_id",
        "completed_at",
        "failed_at",
        "error_message",
        "retry_count",
    ),
    UNCHANGED,
)


def _completion_values(
    entry: TenantPipelineExecutionQueue,
    *,
    state: str,
    now: datetime,
    error: str | None,
    logging_id: str | None,
) -> dict[str, Any]:
    """The run row after a completion report (columns it leaves alone are UNCHANGED)."""
    values: dict[str, Any] = {**_UNCHANGED_RUN, "state": state, "worker_id": entry.lease_owner}
    if logging_id is not None:
        values["pipeline_logging_id"] = logging_id
    if state == RunState.SUCCEEDED:
        values["completed_at"] = now
    else:
        values["failed_at"] = now
        values["error_message"] = report_text_redacted(error) or "The pipeline reported FAILED."
    return values


def _failed_run_values(
    candidate: Candidate, *, state: str, now: datetime, message: str | None
) -> dict[str, Any]:
    """The run row after a failed attempt: re-queued (one more retry counted) or FAILED."""
    values: dict[str, Any] = {"state": state, "failed_at": now, "error_message": message}
    if state == RunState.QUEUED:
        values["retry_count"] = candidate.retry_count + 1
    return values


def _fail_run_row_repaired(
    candidate: Candidate, *, now: datetime, message: str | None
) -> TenantScheduledPipelineRun:
    """A repeated failure report: the run row, brought up to date if its UPDATE failed the first time."""
    runs = scheduled_runs_repository()
    config_last_run_record(config_id=candidate.entry.config_id, state=candidate.entry.state, now=now)
    run = runs.get(candidate.entry.run_id)
    if run.state == RunState.RUNNING:
        # The entry left RUNNING but the row did not follow; its retry_count is still the old one.
        values = _failed_run_values(candidate, state=candidate.entry.state, now=now, message=message)
        runs.update_where(values, filters={"run_id": run.run_id, "state": RunState.RUNNING})
        run = runs.get(run.run_id)
    return run
