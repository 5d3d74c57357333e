"""Staff and command actions on runs: cancel and requeue, each audited and safe to repeat.

Each is one compare-and-set on the queue entry, as every transition (run_queue.py); a cancel
releases a running run's concurrent slot before its run row follows, as a report does
(run_reports.py), and a repeated cancel finishes a run row an interrupted one left behind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from tenants_app.models import (
    RunState,
    RunTrigger,
    TenantPipelineExecutionQueue,
    TenantScheduledPipelineRun,
)
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.errors import RunStateConflict, ValidationFailed
from tenants_app.services.run_common import (
    Candidate,
    candidate_of,
    lease_forget,
    queue_repository,
    release,
    scheduled_runs_repository,
)


def run_cancel(
    *, tenant_id: str, run_id: str, actor: str, reason: str = "", now: datetime | None = None
) -> TenantScheduledPipelineRun:
    """Cancel a queued or running run (its worker learns at its next heartbeat); audited; retry-safe."""
    now = now or timezone.now()
    reason = _check_reason(reason)
    with bigquery_errors_translated():
        candidate = candidate_of(run_id, tenant_id)
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
        if queue_repository().update_where(values, filters=filters) == 0:
            raise RunStateConflict(f"run {run_id} changed meanwhile; reload", errors={"state": ["Changed."]})
        # Its worker's next heartbeat must go to BigQuery and be refused, in every process.
        lease_forget(run_id)
        # The slot first: if the run row's UPDATE fails, a repeated cancel finishes the run row and
        # the audit entry (see _cancel_finished), but could never release again.
        if entry.state == RunState.RUNNING:
            release(entry, succeeded=None)
        scheduled_runs_repository().update_where(
            {"state": RunState.CANCELLED, "error_message": message}, filters={"run_id": run_id}
        )
        audit_record(
            action=AuditAction.RUN_CANCEL,
            actor=actor,
            tenant_id=entry.tenant_id,
            target_type="run",
            target_id=run_id,
            before={"state": entry.state},
            after={"state": RunState.CANCELLED, "reason": reason or None},
        )
        return scheduled_runs_repository().get(run_id)


def run_requeue(*, tenant_id: str, run_id: str, actor: str) -> TenantScheduledPipelineRun:
    """Put a FAILED or CANCELLED run back in the queue with its retries reset; audited."""
    with bigquery_errors_translated():
        candidate = candidate_of(run_id, tenant_id)
        entry = candidate.entry
        if entry.state not in (RunState.FAILED, RunState.CANCELLED):
            raise RunStateConflict(
                f"run {run_id} is {entry.state}; only FAILED or CANCELLED runs can be re-queued",
                errors={"state": [f"Run is {entry.state}."]},
            )
        values: dict[str, Any] = {"state": RunState.QUEUED, "available_at": None, "lease_expires_at": None}
        if queue_repository().update_where(values, filters=_version_filters(entry)) == 0:
            raise RunStateConflict(f"run {run_id} changed meanwhile; reload", errors={"state": ["Changed."]})
        # From now on the run is a retry started by `actor`, whatever started it first (the audit entry
        # keeps the history).
        retried = {"trigger_type": RunTrigger.RETRY, "trigger_by": actor}
        scheduled_runs_repository().update_where(
            {"state": RunState.QUEUED, "retry_count": 0, "completed_at": None, **retried},
            filters={"run_id": run_id},
        )
        audit_record(
            action=AuditAction.RUN_REQUEUE,
            actor=actor,
            tenant_id=entry.tenant_id,
            target_type="run",
            target_id=run_id,
            before={"state": entry.state, "retry_count": candidate.retry_count},
            after={"state": RunState.QUEUED, "retry_count": 0},
        )
        return scheduled_runs_repository().get(run_id)


def _cancel_finished(
    candidate: Candidate, *, actor: str, reason: str, message: str
) -> TenantScheduledPipelineRun | None:
    """Finish a cancel whose queue entry moved but whose run row did not (its UPDATE failed); or None."""
    run_id = candidate.entry.run_id
    run = scheduled_runs_repository().find(run_id)
    if run is None or run.state not in (RunState.QUEUED, RunState.RUNNING):
        return None
    # Conditional, so of two repeats only one records the cancel.
    repaired = scheduled_runs_repository().update_where(
        {"state": RunState.CANCELLED, "error_message": message},
        filters={"run_id": run_id, "state": run.state},
    )
    if repaired == 0:
        return None
    audit_record(
        action=AuditAction.RUN_CANCEL,
        actor=actor,
        tenant_id=candidate.entry.tenant_id,
        target_type="run",
        target_id=run_id,
        before={"state": run.state},
        after={"state": RunState.CANCELLED, "reason": reason or None},
    )
    return scheduled_runs_repository().get(run_id)


def _version_filters(entry: TenantPipelineExecutionQueue) -> dict[str, Any]:
    """Match the entry only as it was read: state, owner, attempt and recorded slot unchanged (a claim
    records its slot a moment after taking the run: a cancel read in between must not free nothing)."""
    filters: dict[str, Any] = {"run_id": entry.run_id, "state": entry.state}
    for name in ("lease_owner", "attempt", "usage_date"):
        value = getattr(entry, name)
        if value is None:
            filters[f"{name}__isnull"] = True
        else:
            filters[name] = value
    return filters


def _check_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if len(reason) > 500:
        raise ValidationFailed("invalid reason", errors={"reason": ["At most 500 characters."]})
    return reason
