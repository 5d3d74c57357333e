"""Worker reports: complete or fail a held run, checks on what workers send, tenant-dataset writes.

Each report is one compare-and-set on the queue entry, the commit point of every transition (why
that makes one caller win, and how claims take and record concurrent slots: run_queue.py). A report
releases the run's slot straight after its compare-and-set, before the run row follows, so a
failure on the run row leaves no slot behind: repeating the report repairs the run row, and never
releases again. A repeat cannot know whether an earlier attempt's release landed: it compares the
usage row's count with the queue's RUNNING entries and releases once if the row counts more
(`quotas.quota_release_if_leaked`), so an outage between the compare-and-set and the release does
not leak the slot.

Retries: `fail` re-queues with exponential backoff (`available_at`) while `retry_count < max_retries`,
then marks the run FAILED. `complete` with FAILED is a final outcome (the pipeline ran and failed).
Reports are not audited (see run_queue.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from bigquery_backend.repository import UNCHANGED
from tenants_app.models import (
    DataQualityStatus,
    RunState,
    RunTrigger,
    TenantDqResult,
    TenantPipelineExecutionQueue,
    TenantPipelineRun,
    TenantScheduledPipelineRun,
    TenantStepLog,
)
from tenants_app.secrets import find_secret_paths, redact_secrets
from tenants_app.services.actors import actor_masked
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import audit_redact
from tenants_app.services.errors import DoesNotExist, LeaseLost, ValidationFailed
from tenants_app.services.run_common import (
    COMPLETION_STATES,
    MAX_DQ_RESULTS,
    MAX_ERROR_LENGTH,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_STEP_LOGS,
    MAX_STEP_METADATA_BYTES,
    RUN_ID_MAX,
    STEP_STATES,
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
    TenantRows,
    config_last_run_record,
    report_commit,
)

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
    steps = _check_step_logs(errors, step_logs)
    checks = _check_dq_results(errors, dq_results)
    metadata = _check_json(errors, "run_metadata", run_metadata, max_bytes=MAX_JSON_BYTES)
    if error is not None and len(error) > MAX_ERROR_LENGTH:
        errors["error"] = [f"At most {MAX_ERROR_LENGTH} characters."]
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
        # Tenant data first (in the tick, a few statements per tenant for all its reports), with ids
        # derived from the run and attempt: a retried request rewrites the same rows, and a request that
        # fails after that leaves nothing half-counted.
        tenant_rows = TenantRows(
            execution=_execution_record(
                candidate,
                logging_id=logging_id,
                status=status,
                start=start,
                end=ended_at,
                metadata=metadata,
                error=_redacted(error),
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
            tenant_rows=tenant_rows,
            queue_values={"state": status, "available_at": UNCHANGED},
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
    message = _redacted(error)
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
        commit = ReportCommit(
            candidate=candidate,
            worker_id=worker_id,
            tenant_rows=tenant_rows,
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
                return _fail_run_row_repaired(fresh, now=now, message=message)
            raise LeaseLost(f"run {run_id} is no longer held by worker {worker_id}")
        return outcome


def retry_backoff(retry_count: int) -> timedelta:
    """Delay before retry number `retry_count + 1`: base * 2**retry_count, capped."""
    base = float(settings.PIPELINE_RETRY_BACKOFF_SECONDS)
    cap = float(settings.PIPELINE_RETRY_BACKOFF_MAX_SECONDS)
    return timedelta(seconds=min(cap, base * (2 ** min(retry_count, 30))))


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
        values["error_message"] = _redacted(error) or "The pipeline reported FAILED."
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


# --- internals: checks ------------------------------------------------------------------------------
def _check_step_logs(errors: dict[str, list[str]], items: Sequence[Mapping[str, Any]]) -> list[TenantStepLog]:
    if len(items) > MAX_STEP_LOGS:
        errors["step_logs"] = [f"At most {MAX_STEP_LOGS} steps."]
        return []
    steps: list[TenantStepLog] = []
    indexes: set[int] = set()
    for position, item in enumerate(items):
        name = f"step_logs[{position}]"
        index = item.get("step_index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            errors[f"{name}.step_index"] = ["A whole number, 0 or more."]
            continue
        if index in indexes:
            errors[f"{name}.step_index"] = [f"Step index {index} appears twice."]
        indexes.add(index)
        if item.get("status") not in STEP_STATES:
            errors[f"{name}.status"] = [f"Choose one of {', '.join(STEP_STATES)}."]
        start, end = item.get("start_time"), item.get("end_time")
        if not isinstance(start, datetime) or start.tzinfo is None:
            errors[f"{name}.start_time"] = ["A timestamp with a time zone."]
            continue
        if end is not None and (not isinstance(end, datetime) or end < start):
            errors[f"{name}.end_time"] = ["Must not be before start_time."]
            continue
        for text in ("step_name", "step_type"):
            if not isinstance(item.get(text), str) or not item[text].strip():
                errors[f"{name}.{text}"] = ["Required."]
        message = item.get("error_message")
        if message is not None and len(str(message)) > MAX_ERROR_LENGTH:
            errors[f"{name}.error_message"] = [f"At most {MAX_ERROR_LENGTH} characters."]
        metadata = _check_json(
            errors, f"{name}.metadata", item.get("metadata"), max_bytes=MAX_STEP_METADATA_BYTES
        )
        rows = item.get("rows_processed")
        if rows is not None and (not isinstance(rows, int) or rows < 0):
            errors[f"{name}.rows_processed"] = ["A whole number, 0 or more."]
        duration = item.get("duration_ms")
        if duration is None and end is not None:
            duration = int((end - start).total_seconds() * 1000)
        steps.append(
            TenantStepLog(
                step_logging_id="pending",
                tenant_id="pending",
                pipeline_logging_id="pending",
                step_name=str(item.get("step_name", "")).strip()[:200],
                step_type=str(item.get("step_type", "")).strip()[:64],
                step_index=index,
                status=item.get("status"),
                start_time=start,
                end_time=end,
                duration_ms=duration,
                rows_processed=rows,
                error_message=_redacted(message),
                metadata=metadata,
            )
        )
    return steps


def _check_dq_results(
    errors: dict[str, list[str]], items: Sequence[Mapping[str, Any]]
) -> list[TenantDqResult]:
    if len(items) > MAX_DQ_RESULTS:
        errors["dq_results"] = [f"At most {MAX_DQ_RESULTS} results."]
        return []
    checks: list[TenantDqResult] = []
    for position, item in enumerate(items):
        name = f"dq_results[{position}]"
        executed = item.get("executed_at")
        if not isinstance(executed, datetime) or executed.tzinfo is None:
            errors[f"{name}.executed_at"] = ["A timestamp with a time zone."]
            continue
        if item.get("overall_status") not in DataQualityStatus.values:
            errors[f"{name}.overall_status"] = [f"Choose one of {', '.join(DataQualityStatus.values)}."]
        counts = {}
        for count in ("expectations_passed", "expectations_failed"):
            value = item.get(count)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                errors[f"{name}.{count}"] = ["A whole number, 0 or more."]
            counts[count] = value
        for text in ("target_table", "dq_config_id"):
            if not isinstance(item.get(text), str) or not item[text].strip():
                errors[f"{name}.{text}"] = ["Required."]
        failed = _check_json(
            errors, f"{name}.failed_expectations", item.get("failed_expectations"), max_bytes=MAX_JSON_BYTES
        )
        checks.append(
            TenantDqResult(
                dq_result_id="pending",
                pipeline_logging_id="pending",
                tenant_id="pending",
                target_table=str(item.get("target_table", "")).strip()[:1024],
                dq_config_id=str(item.get("dq_config_id", "")).strip()[:128],
                executed_at=executed,
                expectations_passed=counts["expectations_passed"],
                expectations_failed=counts["expectations_failed"],
                failed_expectations=failed,
                overall_status=item.get("overall_status"),
                ingestion_date=executed.date(),
            )
        )
    return checks


def _check_json(errors: dict[str, list[str]], name: str, value: Any, *, max_bytes: int) -> Any:
    """Worker-supplied JSON: size-limited, and refused when it carries something that looks secret."""
    if value is None:
        return None
    if _nested_deeper_than(value, MAX_JSON_DEPTH):
        errors[name] = [f"Nest at most {MAX_JSON_DEPTH} levels deep."]
        return None
    try:
        encoded = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        errors[name] = ["Not JSON-serialisable."]
        return None
    if len(encoded.encode()) > max_bytes:
        errors[name] = [f"At most {max_bytes // 1024} KiB of JSON."]
        return None
    # It lands in the tenant's dataset, which GenAI tools may read: keys that name a secret and values
    # that look like one are refused (the worker gets a 400 naming the field).
    found = find_secret_paths(value, name)
    if found:
        errors[name] = [
            "Looks like it holds a secret (tenant datasets are readable by GenAI tools): "
            + ", ".join(secret.path for secret in found[:5])
        ]
        return None
    return value


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` deep; iterative, so any depth is safe to ask."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _redacted(text: str | None) -> str | None:
    """Error text from a worker, with anything that looks like a secret replaced."""
    if text is None:
        return None
    # Worker errors quote connection strings, headers and tracebacks (bearer tokens, JWTs, URL
    # passwords, service-account JSON...).
    return redact_secrets(str(text))[:MAX_ERROR_LENGTH]
