"""The execution queue seen from the worker side: claim, heartbeat, complete, fail, reap; plus run reads.

A run is two rows with the same `run_id`: the scheduled run (`tenant_scheduled_pipeline_runs`: what
ran, its retries, outcome) and its queue entry (`tenant_pipeline_execution_queue`: who holds it and
until when). The queue entry is the commit point of every transition: each one is ONE conditional
UPDATE on it (compare-and-set on `state`, `lease_owner` and `attempt`), so of two workers, two
cleanups, or a worker and a cleanup, exactly one wins; the scheduled run row follows.

Concurrent slots. A RUNNING entry with `usage_date` set holds one concurrent slot on that usage row
(`quotas.quota_admit` at claim time). Whoever moves an entry out of RUNNING (complete, fail, cancel,
lease expiry) releases that slot, once, because only that caller's compare-and-set matched; it releases
straight after that compare-and-set, before the run row follows, so a failure on the run row leaves
no slot behind (repeating the report or cancel repairs the run row, and never releases again). A claim
admits AFTER winning its compare-and-set (so racing workers never count a run that did not start), and
only then writes `usage_date`, only while the entry is still its claim: if it was cancelled or taken
over meanwhile, whoever moved it saw no slot, so the claim releases its own and is lost. A crash
between the steps leaks a slot (too few runs admitted until the next `roll_over_usage`, which counts a new
day's slots from the queue's RUNNING entries), never frees one that is still in use. A report or its
repeat cannot know whether an earlier attempt's release landed: the repeat compares the usage row's
count with the queue's RUNNING entries and releases once if the row counts more
(`quotas.quota_release_if_leaked`), so an outage between the compare-and-set and the release does
not leak the slot.

Priority: 1 is the most urgent; claims take the lowest priority number first, then the earliest
scheduled time. Leases: a claim holds the run for `lease_seconds`; heartbeats extend it; past it, the
run is re-queued (consuming a retry) by the next claim that meets it, which then takes it, or by
`cleanup_orphaned_runs`, after which other workers can claim it a minute later (`_REAP_HOLD`). Either
moves an entry only as it read it (same attempt, same slot).
Retries: `fail` re-queues with exponential backoff (`available_at`) while `retry_count < max_retries`,
then marks the run FAILED. `complete` with FAILED is a final outcome (the pipeline ran and failed).

Worker progress (claim, heartbeat, complete, fail) is not audited: the run rows and the tenant's own
dataset are its record. Changes people or commands make (cancel, requeue, orphan cleanup) are.
"""

from __future__ import annotations

import json
import logging
import random
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.exceptions import NotFound as BackendNotFound
from bigquery_backend.identifiers import quote_column
from bigquery_backend.repository import Page, Repository
from tenants_app.models import (
    DataQualityStatus,
    RunState,
    TenantDqResult,
    TenantPipelineExecutionQueue,
    TenantPipelineRun,
    TenantScheduledPipelineRun,
    TenantStepLog,
)
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.secrets import find_secret_paths, redact_secrets
from tenants_app.services.api_keys import bigquery_errors_translated
from tenants_app.services.audit import audit_record, audit_redact
from tenants_app.services.errors import (
    DoesNotExist,
    LeaseLost,
    RunStateConflict,
    ServiceError,
    ServiceUnavailable,
    ValidationFailed,
)
from tenants_app.services.quotas import quota_admit, quota_release, quota_release_if_leaked

logger = logging.getLogger(__name__)

FINISHED_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)
COMPLETION_STATES = (RunState.SUCCEEDED, RunState.FAILED)
STEP_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED")
MAX_PAGE_SIZE = 200
MAX_STEP_LOGS = 200
MAX_DQ_RESULTS = 200
MAX_ERROR_LENGTH = 10_000
MAX_JSON_BYTES = 64 * 1024  # run_metadata, each failed_expectations
MAX_STEP_METADATA_BYTES = 16 * 1024
MAX_JSON_DEPTH = 10  # as pipeline parameters; the secret check below walks it recursively
MIN_LEASE_SECONDS = 10
# Candidates read per claim query, and how many queries one claim may make when candidates are lost
# to other workers or blocked by quota: bounded, so a claim never scans the queue.
CLAIM_BATCH = 10
CLAIM_ROUNDS = 3
# How long an entry a cleanup moved back to the queue stays unclaimable by others: long enough for the
# cleanup to read back which entries it moved (see _reap).
_REAP_HOLD = timedelta(seconds=60)
_WORKER_ID = re.compile(r"^[A-Za-z0-9._:@/-]{1,200}$")
_RUN_ID_MAX = 128
_BLOCKED_CACHE_KEY = "cvg:runs:quota_blocked:v1"


# --- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimedRun:
    """What a worker needs to run a pipeline, and the lease it holds."""

    run_id: str
    tenant_id: str
    pipeline_id: str
    config_id: str | None
    parameters: Any
    priority: int
    scheduled_time: datetime
    attempt: int
    worker_id: str
    lease_expires_at: datetime
    retry_count: int
    max_retries: int
    usage_date: date


@dataclass(frozen=True)
class RunLease:
    run_id: str
    worker_id: str
    attempt: int
    lease_expires_at: datetime


@dataclass(frozen=True)
class RunDetail:
    """A run, its queue entry, and what its attempts wrote into the tenant's dataset."""

    run: TenantScheduledPipelineRun
    entry: TenantPipelineExecutionQueue | None
    executions: list[TenantPipelineRun]
    step_logs: list[TenantStepLog]
    dq_results: list[TenantDqResult]


@dataclass
class ReapReport:
    """What an orphan cleanup found and did."""

    dry_run: bool
    found: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    released: int = 0


@dataclass(frozen=True)
class _Candidate:
    """A queue entry joined with its scheduled run's retry figures and parameters."""

    entry: TenantPipelineExecutionQueue
    retry_count: int
    max_retries: int
    parameters: Any
    has_run_row: bool


# --- worker protocol --------------------------------------------------------------------------------
def run_claim(
    *,
    worker_id: str,
    tenant_id: str | None = None,
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> ClaimedRun | None:
    """Claim the most urgent claimable run (of one tenant, or any), admitted against its quota; or None.

    Restricted to one tenant, a claim that found runs but was refused by the tenant's quota or
    subscription raises that refusal (QuotaExceeded has `retry_after`) instead of returning None.
    """
    worker_id = _check_worker_id(worker_id)
    lease = _lease(lease_seconds)
    now = now or timezone.now()
    refusals: dict[str, ServiceError] = {}
    seen: set[str] = set()
    with bigquery_errors_translated():
        for _ in range(CLAIM_ROUNDS):
            excluded = set(refusals) | (_blocked_tenants(now) if tenant_id is None else set())
            candidates = _claim_candidates(
                now=now, tenant_id=tenant_id, exclude_tenants=excluded, exclude_runs=seen
            )
            pending = list(candidates)
            contended = False
            while pending:
                candidate = pending.pop(_next_candidate(pending, contended=contended))
                entry = candidate.entry
                seen.add(entry.run_id)
                if entry.tenant_id in refusals:
                    continue
                if entry.state == RunState.RUNNING:
                    # A dead worker's run: re-queue it (releasing its slot) before taking it over.
                    report = _reap([candidate], now=now, cutoff=now, actor="system:claim")
                    if entry.run_id not in report.requeued:
                        continue
                    candidate = replace(
                        candidate,
                        entry=_replace_entry(entry, state=RunState.QUEUED),
                        retry_count=candidate.retry_count + 1,
                    )
                try:
                    claimed = _try_claim(candidate, worker_id=worker_id, lease=lease, now=now)
                except ServiceUnavailable:
                    raise
                except ServiceError as refusal:
                    refusals[entry.tenant_id] = refusal
                    _block_tenant(entry.tenant_id, refusal, now)
                    continue
                if claimed is not None:
                    return claimed
                contended = True
            if len(candidates) < CLAIM_BATCH:
                break
    if tenant_id is not None and tenant_id in refusals:
        raise refusals[tenant_id]
    return None


def run_heartbeat(
    *,
    run_id: str,
    worker_id: str,
    tenant_id: str | None = None,
    attempt: int | None = None,
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> RunLease:
    """Extend the lease of a run this worker holds; LeaseLost when it no longer does."""
    worker_id = _check_worker_id(worker_id)
    lease = _lease(lease_seconds)
    now = now or timezone.now()
    expires = now + lease
    filters: dict[str, Any] = {"run_id": run_id, "state": RunState.RUNNING, "lease_owner": worker_id}
    if tenant_id is not None:
        filters["tenant_id"] = tenant_id
    if attempt is not None:
        filters["attempt"] = attempt
    with bigquery_errors_translated():
        # No expiry condition: a late heartbeat revives a lease nobody has taken over yet, and a
        # takeover's own compare-and-set requires the lease to be expired, so only one of them wins.
        matched = _dml_update(_queue(), {"lease_expires_at": expires, "heartbeat_at": now}, filters)
        if matched == 0:
            _raise_not_held(run_id=run_id, tenant_id=tenant_id, worker_id=worker_id)
        entry = _queue().get(run_id)
    return RunLease(run_id=run_id, worker_id=worker_id, attempt=entry.attempt or 0, lease_expires_at=expires)


def run_complete(
    *,
    run_id: str,
    worker_id: str,
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
    worker_id = _check_worker_id(worker_id)
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
        candidate = _candidate(run_id, tenant_id)
        entry = candidate.entry
        if _already_finished(entry, worker_id=worker_id, attempt=attempt, states=(status,)):
            _release_if_leaked(entry, succeeded=status == RunState.SUCCEEDED)
            return _finish_run_row(candidate, state=status, now=now, error=error, replay=True)
        _require_lease(entry, worker_id=worker_id, attempt=attempt)
        number = entry.attempt or 1
        logging_id = pipeline_logging_id(run_id, number)
        start = started_at or entry.processing_started_at or now
        # Tenant data first, with ids derived from the run and attempt: a retried request rewrites
        # the same rows, and a request that fails after this point leaves nothing half-counted.
        with _tenant_dataset_guard(entry.tenant_id):
            _write_execution(
                candidate,
                logging_id=logging_id,
                status=status,
                start=start,
                end=ended_at,
                metadata=metadata,
                error=_redacted(error),
            )
            _write_step_logs(entry.tenant_id, logging_id, steps)
            _write_dq_results(entry.tenant_id, logging_id, checks, now=now)
        matched = _dml_update(
            _queue(),
            {"state": status, "lease_expires_at": None, "heartbeat_at": now},
            _held_filters(entry, worker_id),
        )
        if matched == 0:
            fresh = _candidate(run_id, tenant_id)
            if _already_finished(fresh.entry, worker_id=worker_id, attempt=attempt, states=(status,)):
                return _finish_run_row(fresh, state=status, now=now, error=error, replay=True)
            raise LeaseLost(f"run {run_id} is no longer held by worker {worker_id}")
        # The slot first: if the run row's UPDATE fails, the worker's retry takes the replay path,
        # which repairs the run row but (the entry being out of RUNNING) can never release again.
        _release(entry, succeeded=status == RunState.SUCCEEDED)
        run = _finish_run_row(candidate, state=status, now=now, error=error, logging_id=logging_id)
    return run


def run_fail(
    *,
    run_id: str,
    worker_id: str,
    error: str,
    tenant_id: str | None = None,
    attempt: int | None = None,
    now: datetime | None = None,
) -> TenantScheduledPipelineRun:
    """A failed attempt: re-queued with exponential backoff while retries remain, else FAILED."""
    worker_id = _check_worker_id(worker_id)
    now = now or timezone.now()
    if not isinstance(error, str) or not error.strip():
        raise ValidationFailed("invalid failure report", errors={"error": ["Describe the error."]})
    if len(error) > MAX_ERROR_LENGTH:
        raise ValidationFailed(
            "invalid failure report", errors={"error": [f"At most {MAX_ERROR_LENGTH} characters."]}
        )
    message = _redacted(error)
    with bigquery_errors_translated():
        candidate = _candidate(run_id, tenant_id)
        entry = candidate.entry
        if _already_finished(
            entry, worker_id=worker_id, attempt=attempt, states=(RunState.QUEUED, RunState.FAILED)
        ):
            _release_if_leaked(entry, succeeded=False)
            return _fail_run_row_repaired(candidate, now=now, message=message)
        _require_lease(entry, worker_id=worker_id, attempt=attempt)
        retry = candidate.retry_count < candidate.max_retries
        state = RunState.QUEUED if retry else RunState.FAILED
        values: dict[str, Any] = {"state": state, "lease_expires_at": None, "heartbeat_at": now}
        if retry:
            values["available_at"] = now + retry_backoff(candidate.retry_count)
        with _tenant_dataset_guard(entry.tenant_id):
            _write_execution(
                candidate,
                logging_id=pipeline_logging_id(run_id, entry.attempt or 1),
                status=RunState.FAILED,
                start=entry.processing_started_at or now,
                end=now,
                metadata=None,
                error=message,
            )
        if _dml_update(_queue(), values, _held_filters(entry, worker_id)) == 0:
            fresh = _candidate(run_id, tenant_id)
            if _already_finished(
                fresh.entry, worker_id=worker_id, attempt=attempt, states=(RunState.QUEUED, RunState.FAILED)
            ):
                return _fail_run_row_repaired(fresh, now=now, message=message)
            raise LeaseLost(f"run {run_id} is no longer held by worker {worker_id}")
        # The slot first, as in run_complete: a retry after a failed run-row UPDATE repairs the row.
        _release(entry, succeeded=False)
        _dml_update(
            _scheduled_runs(),
            _failed_run_values(candidate, state=state, now=now, message=message),
            {"run_id": run_id},
        )
        return _scheduled_runs().get(run_id)


def retry_backoff(retry_count: int) -> timedelta:
    """Delay before retry number `retry_count + 1`: base * 2**retry_count, capped."""
    base = float(settings.PIPELINE_RETRY_BACKOFF_SECONDS)
    cap = float(settings.PIPELINE_RETRY_BACKOFF_MAX_SECONDS)
    return timedelta(seconds=min(cap, base * (2 ** min(retry_count, 30))))


def pipeline_logging_id(run_id: str, attempt: int) -> str:
    """The id of one attempt's execution record in the tenant's dataset."""
    suffix = f"_a{attempt}"
    if len(run_id) + len(suffix) > _RUN_ID_MAX:
        run_id = (
            run_id[: _RUN_ID_MAX - len(suffix) - 13] + "_" + uuid.uuid5(uuid.NAMESPACE_URL, run_id).hex[:12]
        )
    return run_id + suffix


# --- staff and tenant actions -----------------------------------------------------------------------
def run_cancel(
    *, tenant_id: str, run_id: str, actor: str, reason: str = "", now: datetime | None = None
) -> TenantScheduledPipelineRun:
    """Cancel a queued or running run (its worker learns at its next heartbeat); audited; retry-safe."""
    now = now or timezone.now()
    reason = _check_reason(reason)
    with bigquery_errors_translated():
        candidate = _candidate(run_id, tenant_id)
        entry = candidate.entry
        # Who cancelled is in the audit log; the run row is shown to the tenant, who never sees staff names.
        message = "Cancelled" + (f": {reason}" if reason else "")
        if entry.state == RunState.CANCELLED:
            finished = _cancel_finished(candidate, actor=actor, reason=reason, message=message)
            if finished is not None:
                return finished
        if entry.state not in (RunState.QUEUED, RunState.RUNNING):
            raise RunStateConflict(
                f"run {run_id} is {entry.state}; only QUEUED or RUNNING runs can be cancelled",
                errors={"state": [f"Run is {entry.state}."]},
            )
        filters = _version_filters(entry)
        values: dict[str, Any] = {"state": RunState.CANCELLED, "lease_expires_at": None}
        if _dml_update(_queue(), values, filters) == 0:
            raise RunStateConflict(f"run {run_id} changed meanwhile; reload", errors={"state": ["Changed."]})
        # The slot first: if the run row's UPDATE fails, a repeated cancel finishes the run row and
        # the audit entry (see _cancel_finished), but could never release again.
        if entry.state == RunState.RUNNING:
            _release(entry, succeeded=None)
        _dml_update(
            _scheduled_runs(),
            {"state": RunState.CANCELLED, "error_message": message},
            {"run_id": run_id},
        )
        audit_record(
            action="run.cancel",
            actor=actor,
            tenant_id=entry.tenant_id,
            target_type="run",
            target_id=run_id,
            before={"state": entry.state},
            after={"state": RunState.CANCELLED, "reason": reason or None},
        )
        return _scheduled_runs().get(run_id)


def run_requeue(*, tenant_id: str, run_id: str, actor: str) -> TenantScheduledPipelineRun:
    """Put a FAILED or CANCELLED run back in the queue with its retries reset; audited."""
    with bigquery_errors_translated():
        candidate = _candidate(run_id, tenant_id)
        entry = candidate.entry
        if entry.state not in (RunState.FAILED, RunState.CANCELLED):
            raise RunStateConflict(
                f"run {run_id} is {entry.state}; only FAILED or CANCELLED runs can be re-queued",
                errors={"state": [f"Run is {entry.state}."]},
            )
        values: dict[str, Any] = {"state": RunState.QUEUED, "available_at": None, "lease_expires_at": None}
        if _dml_update(_queue(), values, _version_filters(entry)) == 0:
            raise RunStateConflict(f"run {run_id} changed meanwhile; reload", errors={"state": ["Changed."]})
        _dml_update(
            _scheduled_runs(),
            {"state": RunState.QUEUED, "retry_count": 0, "completed_at": None},
            {"run_id": run_id},
        )
        audit_record(
            action="run.requeue",
            actor=actor,
            tenant_id=entry.tenant_id,
            target_type="run",
            target_id=run_id,
            before={"state": entry.state, "retry_count": candidate.retry_count},
            after={"state": RunState.QUEUED, "retry_count": 0},
        )
        return _scheduled_runs().get(run_id)


def _cancel_finished(
    candidate: _Candidate, *, actor: str, reason: str, message: str
) -> TenantScheduledPipelineRun | None:
    """Finish a cancel whose queue entry moved but whose run row did not (its UPDATE failed); or None."""
    run_id = candidate.entry.run_id
    run = _scheduled_runs().find(run_id)
    if run is None or run.state not in (RunState.QUEUED, RunState.RUNNING):
        return None
    # Conditional, so of two repeats only one records the cancel.
    repaired = _dml_update(
        _scheduled_runs(),
        {"state": RunState.CANCELLED, "error_message": message},
        {"run_id": run_id, "state": run.state},
    )
    if repaired == 0:
        return None
    audit_record(
        action="run.cancel",
        actor=actor,
        tenant_id=candidate.entry.tenant_id,
        target_type="run",
        target_id=run_id,
        before={"state": run.state},
        after={"state": RunState.CANCELLED, "reason": reason or None},
    )
    return _scheduled_runs().get(run_id)


def runs_reap_orphaned(
    *,
    now: datetime | None = None,
    timeout: timedelta | None = None,
    dry_run: bool = False,
    actor: str = "system:cleanup_orphaned_runs",
    limit: int = 1000,
) -> ReapReport:
    """Re-queue (or fail, when out of retries) RUNNING runs whose worker is gone; slots released once.

    Orphaned: the lease expired, or, for entries without a lease (written by the original system), no
    sign of life (heartbeat, else start) for `timeout`. A constant number of statements per call,
    plus one slot release per run and one audit entry per tenant.
    """
    now = now or timezone.now()
    if timeout is None:
        timeout = timedelta(minutes=settings.PIPELINE_ORPHAN_TIMEOUT_MINUTES)
    if timeout <= timedelta(0):
        raise ValidationFailed("invalid timeout", errors={"timeout": ["Must be positive."]})
    cutoff = now - timeout
    with bigquery_errors_translated():
        candidates = _orphan_candidates(now=now, cutoff=cutoff, limit=limit)
        if dry_run:
            return ReapReport(dry_run=True, found=[c.entry.run_id for c in candidates])
        report = _reap(candidates, now=now, cutoff=cutoff, actor=actor)
    report.found = [c.entry.run_id for c in candidates]
    return report


# --- reads ------------------------------------------------------------------------------------------
def run_list(
    *,
    tenant_id: str | None,
    state: str | None = None,
    config_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[TenantScheduledPipelineRun]:
    """Scheduled runs, newest slot first, with the total: two BigQuery jobs."""
    errors = _page_errors(limit, offset)
    if state is not None and state not in RunState.values:
        errors["state"] = [f"Choose one of {', '.join(RunState.values)}."]
    if since is not None and until is not None and since > until:
        errors["until"] = ["Must not be before 'since'."]
    if errors:
        raise ValidationFailed("invalid run filter", errors=errors)
    filters: dict[str, Any] = {}
    for name, value in (("tenant_id", tenant_id), ("state", state), ("config_id", config_id)):
        if value:
            filters[name] = value
    if since is not None:
        filters["scheduled_time__gte"] = since
    if until is not None:
        filters["scheduled_time__lt"] = until
    with bigquery_errors_translated():
        return _scheduled_runs().page(
            filters=filters, order_by=("-scheduled_time",), limit=limit, offset=offset
        )


def queue_list(
    *, tenant_id: str | None = None, state: str | None = None, limit: int = 50, offset: int = 0
) -> Page[TenantPipelineExecutionQueue]:
    """Queue entries in claim order (priority, then scheduled time), with the total: two jobs."""
    errors = _page_errors(limit, offset)
    if state is not None and state not in RunState.values:
        errors["state"] = [f"Choose one of {', '.join(RunState.values)}."]
    if errors:
        raise ValidationFailed("invalid queue filter", errors=errors)
    filters: dict[str, Any] = {}
    if tenant_id:
        filters["tenant_id"] = tenant_id
    if state:
        filters["state"] = state
    with bigquery_errors_translated():
        return _queue().page(
            filters=filters, order_by=("priority", "scheduled_time"), limit=limit, offset=offset
        )


def run_get(*, tenant_id: str, run_id: str) -> RunDetail:
    """One run with its queue entry, and each attempt's record, step logs and DQ results."""
    if len(run_id) > _RUN_ID_MAX:
        raise DoesNotExist(f"run {run_id!r} does not exist")
    with bigquery_errors_translated():
        runs = _scheduled_runs().list(filters={"run_id": run_id, "tenant_id": tenant_id}, limit=1)
        if not runs:
            raise DoesNotExist(f"run {run_id!r} does not exist")
        run = runs[0]
        entry = _queue().find(run_id)
        attempts = max(entry.attempt or 0, 1) if entry is not None else 1
        logging_ids = [pipeline_logging_id(run_id, number) for number in range(1, attempts + 1)]
        if run.pipeline_logging_id and run.pipeline_logging_id not in logging_ids:
            logging_ids.append(run.pipeline_logging_id)
        try:
            where = {"pipeline_logging_id__in": logging_ids}
            executions = tenant_repository(TenantPipelineRun, tenant_id).list(
                filters=where, order_by=("start_time",)
            )
            steps = tenant_repository(TenantStepLog, tenant_id).list(
                filters=where, order_by=("pipeline_logging_id", "step_index")
            )
            checks = tenant_repository(TenantDqResult, tenant_id).list(
                filters=where, order_by=("pipeline_logging_id", "executed_at")
            )
        except BackendNotFound:
            # A tenant whose dataset was purged at offboarding: its central rows remain, its logs do not.
            executions, steps, checks = [], [], []
    return RunDetail(run=run, entry=entry, executions=executions, step_logs=steps, dq_results=checks)


# --- internals: claiming ----------------------------------------------------------------------------
def _claim_candidates(
    *, now: datetime, tenant_id: str | None, exclude_tenants: set[str], exclude_runs: set[str]
) -> list[_Candidate]:
    """The most urgent claimable entries: queued and due, or running with an expired lease (one job)."""
    conditions = [
        "((q.state = @queued AND (q.available_at IS NULL OR q.available_at <= @now) "
        "AND q.scheduled_time <= @now) OR (q.state = @running AND q.lease_expires_at < @now))"
    ]
    params: list[Any] = [
        bigquery.ScalarQueryParameter("queued", "STRING", RunState.QUEUED),
        bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING),
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
    ]
    if tenant_id is not None:
        conditions.append("q.tenant_id = @tenant_id")
        params.append(bigquery.ScalarQueryParameter("tenant_id", "STRING", tenant_id))
    if exclude_tenants:
        conditions.append("q.tenant_id NOT IN UNNEST(@exclude_tenants)")
        params.append(bigquery.ArrayQueryParameter("exclude_tenants", "STRING", sorted(exclude_tenants)))
    if exclude_runs:
        conditions.append("q.run_id NOT IN UNNEST(@exclude_runs)")
        params.append(bigquery.ArrayQueryParameter("exclude_runs", "STRING", sorted(exclude_runs)))
    order = "ORDER BY q.priority, q.scheduled_time, q.run_id"
    return _select_candidates(" AND ".join(conditions), params, suffix=f"{order} LIMIT {CLAIM_BATCH}")


def _next_candidate(pending: list[_Candidate], *, contended: bool) -> int:
    """Which candidate to try next: the most urgent, or after a lost race a random one as urgent.

    Without contention claims follow the order exactly. Once another worker won a race, every worker
    that read the same list would otherwise race for the same next run too (each loser costing a
    statement): spreading them over the runs of the top priority keeps the priority order (within
    it, scheduled times may then be taken out of order, as concurrent claims are anyway) and turns
    W workers' W*W lost races into about W.
    """
    if not contended:
        return 0
    top = pending[0].entry.priority
    same = [index for index, candidate in enumerate(pending) if candidate.entry.priority == top]
    return random.choice(same)  # noqa: S311 - spreads load, nothing secret depends on it


def _try_claim(
    candidate: _Candidate, *, worker_id: str, lease: timedelta, now: datetime
) -> ClaimedRun | None:
    """Compare-and-set the entry to RUNNING for this worker, then admit it; None if another won."""
    entry = candidate.entry
    previous = entry.attempt or 0
    attempt = previous + 1
    expires = now + lease
    filters: dict[str, Any] = {"run_id": entry.run_id, "state": RunState.QUEUED}
    if entry.attempt is None:
        filters["attempt__isnull"] = True
    else:
        filters["attempt"] = entry.attempt
    values = {
        "state": RunState.RUNNING,
        "lease_owner": worker_id,
        "lease_expires_at": expires,
        "heartbeat_at": now,
        "processing_started_at": now,
        "attempt": attempt,
        "usage_date": None,
    }
    if _dml_update(_queue(), values, filters) == 0:
        return None
    mine = {"run_id": entry.run_id, "state": RunState.RUNNING, "lease_owner": worker_id, "attempt": attempt}
    try:
        admission = quota_admit(tenant_id=entry.tenant_id, now=now)
    except Exception:
        # Refused (or BigQuery failed): hand the run back exactly as it was, for a later claim.
        _dml_update(
            _queue(),
            {
                "state": RunState.QUEUED,
                "lease_owner": entry.lease_owner,
                "lease_expires_at": None,
                "heartbeat_at": entry.heartbeat_at,
                "processing_started_at": entry.processing_started_at,
                "attempt": entry.attempt,
            },
            mine,
        )
        raise
    if _dml_update(_queue(), {"usage_date": admission.usage_date}, mine) == 0:
        # Lost during admission: cancelled, or the lease ran out and another claim or cleanup took
        # the run. Whoever moved it saw no slot recorded, so the slot just admitted is ours to free.
        quota_release(tenant_id=entry.tenant_id, usage_date=admission.usage_date, succeeded=None)
        _unblock_tenant(entry.tenant_id)
        return None
    if candidate.has_run_row:
        _dml_update(
            _scheduled_runs(),
            {"state": RunState.RUNNING, "started_at": now, "worker_id": worker_id},
            # Never over a cancel that landed after our usage_date write: the cancel owns the row then.
            {"run_id": entry.run_id, "state__in": [RunState.QUEUED, RunState.RUNNING]},
        )
    return ClaimedRun(
        run_id=entry.run_id,
        tenant_id=entry.tenant_id,
        pipeline_id=entry.pipeline_id,
        config_id=entry.config_id,
        parameters=candidate.parameters,
        priority=entry.priority,
        scheduled_time=entry.scheduled_time,
        attempt=attempt,
        worker_id=worker_id,
        lease_expires_at=expires,
        retry_count=candidate.retry_count,
        max_retries=candidate.max_retries,
        usage_date=admission.usage_date,
    )


def _blocked_tenants(now: datetime) -> set[str]:
    """Tenants a recent claim found over quota: skipped until their retry time (or a release)."""
    blocked: dict[str, float] = cache.get(_BLOCKED_CACHE_KEY) or {}
    moment = now.timestamp()
    return {tenant for tenant, until in blocked.items() if until > moment}


def _block_tenant(tenant_id: str, refusal: ServiceError, now: datetime) -> None:
    # Only an optimisation (saves each claim a doomed compare-and-set, admission and undo), so the
    # lossy read-modify-write across processes is fine; capped, since limits can be raised meanwhile.
    # A refusal without a retry time (subscription suspended, tenant not active) is skipped for the
    # whole period: those change by a staff action, not by a run ending.
    cap = int(settings.PIPELINE_QUOTA_BLOCK_SECONDS)
    seconds = min(int(getattr(refusal, "retry_after", None) or cap), cap)
    if seconds <= 0:
        return
    moment = now.timestamp()
    blocked: dict[str, float] = cache.get(_BLOCKED_CACHE_KEY) or {}
    blocked = {tenant: until for tenant, until in blocked.items() if until > moment}
    blocked[tenant_id] = moment + seconds
    cache.set(_BLOCKED_CACHE_KEY, blocked, timeout=settings.PIPELINE_QUOTA_BLOCK_SECONDS)


def _unblock_tenant(tenant_id: str) -> None:
    blocked: dict[str, float] = cache.get(_BLOCKED_CACHE_KEY) or {}
    if tenant_id in blocked:
        blocked.pop(tenant_id)
        cache.set(_BLOCKED_CACHE_KEY, blocked, timeout=settings.PIPELINE_QUOTA_BLOCK_SECONDS)


# --- internals: reaping -----------------------------------------------------------------------------
def _orphan_candidates(*, now: datetime, cutoff: datetime, limit: int) -> list[_Candidate]:
    params: list[Any] = [
        bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING),
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
        bigquery.ScalarQueryParameter("cutoff", "TIMESTAMP", cutoff),
    ]
    where = f"q.state = @running AND {_ORPHANED.format(alias='q.')}"
    return _select_candidates(where, params, suffix=f"ORDER BY q.priority, q.run_id LIMIT {int(limit)}")


# Orphaned: lease expired, or no lease at all and no sign of life since the cutoff.
_ORPHANED = (
    "({alias}lease_expires_at < @now OR ({alias}lease_expires_at IS NULL AND "
    "COALESCE({alias}heartbeat_at, {alias}processing_started_at, {alias}added_at) < @cutoff))"
)


# Which claim of an entry a cleanup read: run, attempt and recorded slot. `#` cannot occur in the
# last two parts, so different entries never share a version.
_REAP_VERSION = (
    "CONCAT(run_id, '#', IFNULL(CAST(attempt AS STRING), '-'), '#', IFNULL(CAST(usage_date AS STRING), '-'))"
)


def _reap_version(entry: TenantPipelineExecutionQueue) -> str:
    attempt = "-" if entry.attempt is None else str(entry.attempt)
    usage_date = "-" if entry.usage_date is None else entry.usage_date.isoformat()
    return f"{entry.run_id}#{attempt}#{usage_date}"


def _reap(candidates: Sequence[_Candidate], *, now: datetime, cutoff: datetime, actor: str) -> ReapReport:
    """Move orphaned RUNNING entries back to QUEUED (or FAILED), each by exactly one caller.

    One UPDATE tags the entries it moved with a fresh token in `lease_owner`; reading the tag back
    tells this caller which ones it won (a concurrent cleanup or claim won the others), and only
    those get their run row updated and their slot released.
    """
    report = ReapReport(dry_run=False)
    if not candidates:
        return report
    token = f"reaper:{uuid.uuid4().hex}"
    by_id = {c.entry.run_id: c for c in candidates}
    # Each entry only as it was read (same claim, same slot): a cleanup that stalled after its read
    # must not move a newer attempt and release the old attempt's slot for it.
    versions = sorted(_reap_version(c.entry) for c in candidates)
    exhausted = [c.entry.run_id for c in candidates if c.retry_count >= c.max_retries]
    queue = _queue()
    params: list[Any] = [
        bigquery.ArrayQueryParameter("ids", "STRING", sorted(by_id)),
        bigquery.ArrayQueryParameter("exhausted", "STRING", sorted(exhausted)),
        bigquery.ScalarQueryParameter("token", "STRING", token),
        bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING),
        bigquery.ScalarQueryParameter("queued", "STRING", RunState.QUEUED),
        bigquery.ScalarQueryParameter("failed", "STRING", RunState.FAILED),
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
        bigquery.ScalarQueryParameter("cutoff", "TIMESTAMP", cutoff),
        bigquery.ArrayQueryParameter("versions", "STRING", versions),
        bigquery.ScalarQueryParameter("available_at", "TIMESTAMP", now + _REAP_HOLD),
    ]
    # Held back for _REAP_HOLD: a claim overwrites `lease_owner`, so one that took a moved entry
    # before the read-back below would hide it from this caller (no release, retry or audit). The
    # claim that reaps for itself does not check `available_at` and takes its entry at once.
    _dml(
        f"UPDATE {queue.table} SET state = IF(run_id IN UNNEST(@exhausted), @failed, @queued), "  # noqa: S608
        "lease_owner = @token, lease_expires_at = NULL, heartbeat_at = NULL, available_at = @available_at "
        f"WHERE run_id IN UNNEST(@ids) AND {_REAP_VERSION} IN UNNEST(@versions) "
        f"AND state = @running AND {_ORPHANED.format(alias='')}",
        params,
    )
    won = queue.list(filters={"lease_owner": token})
    if not won:
        return report
    failed = [entry.run_id for entry in won if entry.state == RunState.FAILED]
    requeued = [entry.run_id for entry in won if entry.state == RunState.QUEUED]
    runs = _scheduled_runs()
    _dml(
        f"UPDATE {runs.table} SET state = IF(run_id IN UNNEST(@failed_ids), @failed, @queued), "  # noqa: S608
        "retry_count = retry_count + 1, failed_at = @now, error_message = @message "
        "WHERE run_id IN UNNEST(@won)",
        [
            bigquery.ArrayQueryParameter("failed_ids", "STRING", failed),
            bigquery.ArrayQueryParameter("won", "STRING", [entry.run_id for entry in won]),
            bigquery.ScalarQueryParameter("failed", "STRING", RunState.FAILED),
            bigquery.ScalarQueryParameter("queued", "STRING", RunState.QUEUED),
            bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
            bigquery.ScalarQueryParameter(
                "message",
                "STRING",
                "The worker's lease expired (no heartbeat); the attempt counts as failed.",
            ),
        ],
    )
    per_tenant: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"requeued": [], "failed": []})
    for entry in won:
        original = by_id[entry.run_id].entry
        # The slot recorded by the claim we just ended; None when that claim never got admitted.
        if original.usage_date is not None:
            quota_release(tenant_id=entry.tenant_id, usage_date=original.usage_date, succeeded=None)
            _unblock_tenant(entry.tenant_id)
            report.released += 1
        per_tenant[entry.tenant_id]["failed" if entry.state == RunState.FAILED else "requeued"].append(
            entry.run_id
        )
    for tenant, moved in sorted(per_tenant.items()):
        audit_record(
            action="run.lease_expired",
            actor=actor,
            tenant_id=tenant,
            target_type="run",
            target_id=",".join(sorted(moved["requeued"] + moved["failed"]))[:200],
            before={"state": RunState.RUNNING},
            after={"requeued": sorted(moved["requeued"]), "failed": sorted(moved["failed"])},
        )
    report.requeued, report.failed = sorted(requeued), sorted(failed)
    logger.info("orphaned runs: %d re-queued, %d failed", len(requeued), len(failed))
    return report


# --- internals: completion --------------------------------------------------------------------------
@contextmanager
def _tenant_dataset_guard(tenant_id: str) -> Iterator[None]:
    """A tenant whose dataset is gone (purged at offboarding) still gets its run finished centrally."""
    try:
        yield
    except BackendNotFound:
        # Failing the report would make the worker retry forever for logs that have nowhere to go.
        logger.error("tenant %s has no dataset: the run's execution record and logs were dropped", tenant_id)


def _write_execution(
    candidate: _Candidate,
    *,
    logging_id: str,
    status: str,
    start: datetime,
    end: datetime,
    metadata: Any,
    error: str | None,
) -> None:
    entry = candidate.entry
    record = TenantPipelineRun(
        pipeline_logging_id=logging_id,
        tenant_id=entry.tenant_id,
        pipeline_id=entry.pipeline_id,
        status=status,
        trigger_type="schedule",
        trigger_by=f"config:{entry.config_id}" if entry.config_id else None,
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
    tenant_repository(TenantPipelineRun, entry.tenant_id).upsert(record)


def _write_step_logs(tenant_id: str, logging_id: str, steps: list[TenantStepLog]) -> None:
    if not steps:
        return
    repository = tenant_repository(TenantStepLog, tenant_id)
    # Delete-then-insert keyed by the attempt: a retried completion replaces, never duplicates.
    repository.delete_where(filters={"pipeline_logging_id": logging_id})
    for step in steps:
        step.tenant_id, step.pipeline_logging_id = tenant_id, logging_id
        step.step_logging_id = f"{logging_id}_s{step.step_index}"
    repository.insert(*steps)


def _write_dq_results(
    tenant_id: str, logging_id: str, checks: list[TenantDqResult], *, now: datetime
) -> None:
    if not checks:
        return
    repository = tenant_repository(TenantDqResult, tenant_id)
    repository.delete_where(filters={"pipeline_logging_id": logging_id})
    for index, check in enumerate(checks):
        check.tenant_id, check.pipeline_logging_id = tenant_id, logging_id
        check.dq_result_id = f"{logging_id}_dq{index}"
        check.ingestion_date = now.date()
    repository.insert(*checks)


def _finish_run_row(
    candidate: _Candidate,
    *,
    state: str,
    now: datetime,
    error: str | None,
    logging_id: str | None = None,
    replay: bool = False,
) -> TenantScheduledPipelineRun:
    run_id = candidate.entry.run_id
    runs = _scheduled_runs()
    if replay:
        existing = runs.find(run_id)
        if existing is not None and existing.state == state:
            return existing
        # The first report's run-row UPDATE failed after the entry moved: write it now.
        logging_id = pipeline_logging_id(run_id, candidate.entry.attempt or 1)
    values: dict[str, Any] = {"state": state, "worker_id": candidate.entry.lease_owner}
    if logging_id is not None:
        values["pipeline_logging_id"] = logging_id
    if state == RunState.SUCCEEDED:
        values["completed_at"] = now
    else:
        values["failed_at"] = now
        values["error_message"] = _redacted(error) or "The pipeline reported FAILED."
    if candidate.has_run_row:
        _dml_update(runs, values, {"run_id": run_id})
    found = runs.find(run_id)
    if found is None:
        raise DoesNotExist(f"run {run_id!r} has no scheduled-run row")
    return found


def _failed_run_values(
    candidate: _Candidate, *, state: str, now: datetime, message: str | None
) -> dict[str, Any]:
    """The run row after a failed attempt: re-queued (one more retry counted) or FAILED."""
    values: dict[str, Any] = {"state": state, "failed_at": now, "error_message": message}
    if state == RunState.QUEUED:
        values["retry_count"] = candidate.retry_count + 1
    return values


def _fail_run_row_repaired(
    candidate: _Candidate, *, now: datetime, message: str | None
) -> TenantScheduledPipelineRun:
    """A repeated failure report: the run row, brought up to date if its UPDATE failed the first time."""
    runs = _scheduled_runs()
    run = runs.get(candidate.entry.run_id)
    if run.state == RunState.RUNNING:
        # The entry left RUNNING but the row did not follow; its retry_count is still the old one.
        values = _failed_run_values(candidate, state=candidate.entry.state, now=now, message=message)
        _dml_update(runs, values, {"run_id": run.run_id, "state": RunState.RUNNING})
        run = runs.get(run.run_id)
    return run


def _release(entry: TenantPipelineExecutionQueue, *, succeeded: bool | None) -> None:
    if entry.usage_date is None:
        return
    quota_release(tenant_id=entry.tenant_id, usage_date=entry.usage_date, succeeded=succeeded)
    _unblock_tenant(entry.tenant_id)


def _release_if_leaked(entry: TenantPipelineExecutionQueue, *, succeeded: bool | None) -> None:
    """On a repeated report: the release the first report may not have made (it failed after its
    compare-and-set), if the counts show a slot still taken (quotas.quota_release_if_leaked)."""
    if entry.usage_date is None:
        return
    if quota_release_if_leaked(tenant_id=entry.tenant_id, usage_date=entry.usage_date, succeeded=succeeded):
        _unblock_tenant(entry.tenant_id)


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


# --- internals: rows and checks ---------------------------------------------------------------------
def _queue() -> Repository[TenantPipelineExecutionQueue]:
    return central_repository(TenantPipelineExecutionQueue)


def _scheduled_runs() -> Repository[TenantScheduledPipelineRun]:
    return central_repository(TenantScheduledPipelineRun)


def _select_candidates(where: str, params: list[Any], *, suffix: str) -> list[_Candidate]:
    queue, runs = _queue(), _scheduled_runs()
    columns = ", ".join(f"q.{quote_column(c.name)}" for c in queue.definition.columns)
    sql = (
        f"SELECT {columns}, r.parameters AS _parameters, r.retry_count AS _retry_count, "  # noqa: S608
        "r.max_retries AS _max_retries, r.run_id AS _run_row "
        f"FROM {queue.table} AS q LEFT JOIN {runs.table} AS r ON r.run_id = q.run_id "
        f"WHERE {where} {suffix}"
    )
    rows = queue.gateway.query(sql, params).rows
    default_retries = int(getattr(settings, "PIPELINE_MAX_RETRIES", 3))
    return [
        _Candidate(
            entry=TenantPipelineExecutionQueue(**{c.name: row.get(c.name) for c in queue.definition.columns}),
            retry_count=int(row["_retry_count"] or 0),
            max_retries=default_retries if row["_max_retries"] is None else int(row["_max_retries"]),
            parameters=row["_parameters"],
            has_run_row=row["_run_row"] is not None,
        )
        for row in rows
    ]


def _candidate(run_id: str, tenant_id: str | None) -> _Candidate:
    """The run's queue entry (of this tenant, when given) with its run figures; DoesNotExist if none."""
    if len(run_id) > _RUN_ID_MAX:
        raise DoesNotExist(f"run {run_id!r} does not exist")
    params: list[Any] = [bigquery.ScalarQueryParameter("run_id", "STRING", run_id)]
    where = "q.run_id = @run_id"
    if tenant_id is not None:
        where += " AND q.tenant_id = @tenant_id"
        params.append(bigquery.ScalarQueryParameter("tenant_id", "STRING", tenant_id))
    found = _select_candidates(where, params, suffix="LIMIT 1")
    if not found:
        # Another tenant's run is as absent as a missing one: ids are not confirmed across tenants.
        raise DoesNotExist(f"run {run_id!r} does not exist")
    return found[0]


def _replace_entry(entry: TenantPipelineExecutionQueue, **values: Any) -> TenantPipelineExecutionQueue:
    """A copy of a queue entry with some values changed (model instances are mutable; reads are shared)."""
    copy = TenantPipelineExecutionQueue(
        **{f.attname: getattr(entry, f.attname) for f in entry._meta.concrete_fields}
    )
    for name, value in values.items():
        setattr(copy, name, value)
    return copy


def _held_filters(entry: TenantPipelineExecutionQueue, worker_id: str) -> dict[str, Any]:
    """Match the entry only while this worker still holds this attempt."""
    filters: dict[str, Any] = {"run_id": entry.run_id, "state": RunState.RUNNING, "lease_owner": worker_id}
    if entry.attempt is None:
        filters["attempt__isnull"] = True
    else:
        filters["attempt"] = entry.attempt
    return filters


def _version_filters(entry: TenantPipelineExecutionQueue) -> dict[str, Any]:
    """Match the entry only as it was read: state, owner and attempt unchanged."""
    filters: dict[str, Any] = {"run_id": entry.run_id, "state": entry.state}
    for name in ("lease_owner", "attempt"):
        value = getattr(entry, name)
        if value is None:
            filters[f"{name}__isnull"] = True
        else:
            filters[name] = value
    return filters


def _require_lease(entry: TenantPipelineExecutionQueue, *, worker_id: str, attempt: int | None) -> None:
    if entry.state != RunState.RUNNING or entry.lease_owner != worker_id:
        raise LeaseLost(f"run {entry.run_id} is not held by worker {worker_id} (it is {entry.state})")
    if attempt is not None and entry.attempt != attempt:
        raise LeaseLost(f"run {entry.run_id} is on attempt {entry.attempt}, not {attempt}")


def _already_finished(
    entry: TenantPipelineExecutionQueue, *, worker_id: str, attempt: int | None, states: Iterable[str]
) -> bool:
    """A repeat of this worker's own last report (same state, same worker, same attempt)."""
    return (
        entry.state in tuple(states)
        and entry.state != RunState.RUNNING
        and entry.lease_owner == worker_id
        and (attempt is None or entry.attempt == attempt)
    )


def _raise_not_held(*, run_id: str, tenant_id: str | None, worker_id: str) -> None:
    entry = _candidate(run_id, tenant_id).entry
    raise LeaseLost(f"run {run_id} is not held by worker {worker_id} (it is {entry.state})")


# A statement real BigQuery aborted for a concurrent update is run again by the gateway's retry
# policy: ours are conditional, so that is safe.
def _dml_update(repository: Repository[Any], values: Mapping[str, Any], filters: Mapping[str, Any]) -> int:
    return repository.update_where(values, filters=filters)


def _dml(sql: str, params: list[Any]) -> int:
    return _queue().gateway.query(sql, params).affected_rows or 0


def _check_worker_id(worker_id: str) -> str:
    if not isinstance(worker_id, str) or not _WORKER_ID.match(worker_id):
        raise ValidationFailed(
            "invalid worker id",
            errors={"worker_id": ["1 to 200 letters, digits or . _ : @ / -."]},
        )
    if worker_id.startswith("reaper:"):
        raise ValidationFailed("invalid worker id", errors={"worker_id": ["'reaper:' is reserved."]})
    return worker_id


def _lease(lease_seconds: int | None) -> timedelta:
    if lease_seconds is None:
        return timedelta(seconds=settings.PIPELINE_LEASE_SECONDS)
    maximum = int(settings.PIPELINE_LEASE_MAX_SECONDS)
    if not isinstance(lease_seconds, int) or not MIN_LEASE_SECONDS <= lease_seconds <= maximum:
        raise ValidationFailed(
            "invalid lease", errors={"lease_seconds": [f"Use {MIN_LEASE_SECONDS} to {maximum} seconds."]}
        )
    return timedelta(seconds=lease_seconds)


def _check_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if len(reason) > 500:
        raise ValidationFailed("invalid reason", errors={"reason": ["At most 500 characters."]})
    return reason


def _page_errors(limit: int, offset: int) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not 1 <= limit <= MAX_PAGE_SIZE:
        errors["limit"] = [f"Use 1 to {MAX_PAGE_SIZE}."]
    if offset < 0:
        errors["offset"] = ["Use 0 or more."]
    return errors
