"""The execution queue seen from the worker side: heartbeats, and re-queueing dead workers' runs.

A run is two rows with the same `run_id`: the scheduled run (`tenant_scheduled_pipeline_runs`: what
ran, its retries, outcome) and its queue entry (`tenant_pipeline_execution_queue`: who holds it and
until when). The queue entry is the commit point of every transition: each one is a conditional
write on it (compare-and-set on `state`, `lease_owner`, `lease_credential` and `attempt`), so of two
workers, two cleanups, or a worker and a cleanup, exactly one wins; the scheduled run row follows.
Claims (run_claims.py), worker reports (run_reports.py) and staff actions (run_actions.py) all hold
to it; claims and reports write many entries per statement, each row with its own compare-and-set.

Concurrent slots. A RUNNING entry with `usage_date` set holds one concurrent slot on that usage row
(admitted at claim time). Whoever moves an entry out of RUNNING (complete, fail, cancel, lease
expiry) releases that slot, once, because only that caller's compare-and-set matched (how a report
releases, and how its repeat repairs an interrupted one: run_reports.py). A claim admits AFTER
winning its compare-and-set (so racing workers never count a run that did not start), and only then
writes `usage_date`, only while the entry is still its claim: if it was cancelled or taken over
meanwhile, whoever moved it saw no slot, so the claim releases its own. A BigQuery failure between
the steps gives the runs back and frees a slot if the usage row still counts it; if that fails too,
or the process dies, the lease runs out and the reaper does the same for the entry it finds without
`usage_date`. Both free a slot only when the usage row counts more running runs than the queue has
RUNNING entries (`quotas.quota_release_if_leaked`, which counts every RUNNING entry, admitted or
about to be), so a slot in use is never freed.

Priority: 1 is the most urgent; claims take the lowest priority number first, then the earliest
scheduled time. Leases: a claim holds the run for `lease_seconds`; heartbeats extend it (writing
only when less than half is left); past it, the run is re-queued (consuming a retry) by the claim
tick that meets it (one at a time across processes), which then takes it, or by
`cleanup_orphaned_runs`, after which other workers can claim it a minute later (`_REAP_HOLD`). Either
moves an entry only as it read it (same attempt, same slot).

Worker progress (claim, heartbeat, complete, fail) is not audited: the run rows and the tenant's own
dataset are its record. Changes people or commands make (cancel, requeue, orphan cleanup) are.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.models import model_replace
from tenants_app.models import RunState, TenantPipelineExecutionQueue
from tenants_app.services.actors import system_actor
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.errors import LeaseLost, ValidationFailed
from tenants_app.services.notifications import notify_run_failed
from tenants_app.services.quota_batches import Release, quota_release_many
from tenants_app.services.quota_rules import quota_day
from tenants_app.services.run_common import (
    LANE_WAIT_SECONDS,
    Candidate,
    KnownLease,
    candidate_of,
    check_worker_id,
    lease_duration,
    lease_forget,
    lease_recall,
    lease_remember,
    queue_repository,
    reports_lane,
    scheduled_runs_repository,
    select_candidates,
    slot_repair,
    unblock_tenant,
)

logger = logging.getLogger(__name__)


# How long an entry a cleanup moved back to the queue stays unclaimable by others: long enough for the
# cleanup to read back which entries it moved (see _reap).
_REAP_HOLD = timedelta(seconds=60)


# --- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLease:
    run_id: str
    worker_id: str
    attempt: int
    lease_expires_at: datetime


@dataclass
class ReapReport:
    """What an orphan cleanup found and did."""

    dry_run: bool
    found: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    released: int = 0


# --- worker protocol --------------------------------------------------------------------------------
def run_heartbeat(
    *,
    run_id: str,
    worker_id: str,
    credential: str | None = None,
    tenant_id: str | None = None,
    attempt: int | None = None,
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> RunLease:
    """Extend the lease of a run this worker holds; LeaseLost when it no longer does.

    The lease is written to BigQuery only when less than half of it is left: a worker that
    heartbeats more often than every half lease costs no statement in between, and the answer is
    always the expiry BigQuery holds, never one it has not written.
    """
    worker_id = check_worker_id(worker_id)
    lease = lease_duration(lease_seconds)
    now = now or timezone.now()
    known = lease_recall(run_id)
    known = (
        known
        if known is not None
        and known.held_by(worker_id=worker_id, credential=credential, tenant_id=tenant_id, attempt=attempt)
        else None
    )
    if known is not None and known.expires - now >= lease / 2:
        return RunLease(
            run_id=run_id, worker_id=worker_id, attempt=known.attempt, lease_expires_at=known.expires
        )
    expires = now + lease
    filters: dict[str, Any] = {"run_id": run_id, "state": RunState.RUNNING, "lease_owner": worker_id}
    if credential is not None:
        filters["lease_credential"] = credential
    if tenant_id is not None:
        filters["tenant_id"] = tenant_id
    if attempt is not None:
        filters["attempt"] = attempt
    with bigquery_errors_translated():
        # No expiry condition: a late heartbeat revives a lease nobody has taken over yet, and a
        # takeover's own compare-and-set requires the lease to be expired, so only one of them wins.
        values = {"lease_expires_at": expires, "heartbeat_at": now}
        matched = queue_repository().update_where(values, filters=filters)
        if matched == 0 and credential is not None:
            # A lease claimed before leases recorded their credential (none stored) is still held.
            legacy = {**filters, "lease_credential__isnull": True}
            legacy.pop("lease_credential")
            matched = queue_repository().update_where(values, filters=legacy)
        if matched == 0:
            lease_forget(run_id)
            _raise_not_held(run_id=run_id, tenant_id=tenant_id, worker_id=worker_id)
        entry = queue_repository().get(run_id)
    number = entry.attempt or 0
    if entry.state != RunState.RUNNING or entry.lease_owner != worker_id:
        # Cancelled or taken over since our UPDATE: this answer stands, the next one goes to BigQuery.
        return RunLease(run_id=run_id, worker_id=worker_id, attempt=number, lease_expires_at=expires)
    lease_remember(
        run_id=run_id,
        lease=KnownLease(
            entry.tenant_id,
            number,
            worker_id,
            entry.lease_credential,
            expires,
            # The claim's copy, if still known, with the new expiry; else the next report reads.
            replace(known.candidate, entry=model_replace(known.candidate.entry, lease_expires_at=expires))
            if known is not None and known.candidate is not None
            else None,
        ),
    )
    return RunLease(run_id=run_id, worker_id=worker_id, attempt=number, lease_expires_at=expires)


# --- orphan cleanup ---------------------------------------------------------------------------------
def runs_reap_orphaned(
    *,
    now: datetime | None = None,
    timeout: timedelta | None = None,
    dry_run: bool = False,
    actor: str = system_actor("cleanup_orphaned_runs"),
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


# --- internals ---------------------------------------------------------------------------------------
def _raise_not_held(*, run_id: str, tenant_id: str | None, worker_id: str) -> None:
    entry = candidate_of(run_id, tenant_id).entry
    raise LeaseLost(f"run {run_id} is not held by worker {worker_id} (it is {entry.state})")


# --- internals: reaping -----------------------------------------------------------------------------
def _orphan_candidates(*, now: datetime, cutoff: datetime, limit: int) -> list[Candidate]:
    params: list[Any] = [
        bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING),
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
        bigquery.ScalarQueryParameter("cutoff", "TIMESTAMP", cutoff),
    ]
    where = f"q.state = @running AND {_ORPHANED.format(alias='q.')}"
    return select_candidates(where, params, suffix=f"ORDER BY q.priority, q.run_id LIMIT {int(limit)}")


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


def _reap(candidates: Sequence[Candidate], *, now: datetime, cutoff: datetime, actor: str) -> ReapReport:
    """`_reap_held` inside the report ticks' lane: between its move out of RUNNING and its releases, a
    leak repair (run_common.slot_repair) would see those slots as leaked and free them twice."""
    if not candidates:
        return ReapReport(dry_run=False)
    with reports_lane().hold(wait=LANE_WAIT_SECONDS, spaced=False):
        return _reap_held(candidates, now=now, cutoff=cutoff, actor=actor)


def _reap_held(candidates: Sequence[Candidate], *, now: datetime, cutoff: datetime, actor: str) -> ReapReport:
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
    queue = queue_repository()
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
    lease_forget(*(entry.run_id for entry in won))
    failed = [entry.run_id for entry in won if entry.state == RunState.FAILED]
    requeued = [entry.run_id for entry in won if entry.state == RunState.QUEUED]
    runs = scheduled_runs_repository()
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
    if failed:
        # Out of retries: failed for good, which the tenant is told of (queued, no statement).
        for row in runs.list(filters={"run_id__in": failed}):
            notify_run_failed(run=row)
    per_tenant: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"requeued": [], "failed": []})
    # The slots recorded by the claims just ended: one statement for all of them.
    recorded = [
        by_id[entry.run_id].entry for entry in won if by_id[entry.run_id].entry.usage_date is not None
    ]
    quota_release_many(releases=[Release(e.tenant_id, e.usage_date, None) for e in recorded], now=now)
    for tenant in sorted({entry.tenant_id for entry in recorded}):
        unblock_tenant(tenant)
    report.released += len(recorded)
    for entry in won:
        original = by_id[entry.run_id].entry
        if original.usage_date is None and original.processing_started_at is not None:
            # A claim that failed between its admission and recording it (and could not give the run
            # back): the slot is freed if the usage row still counts it.
            report.released += slot_repair(
                tenant_id=entry.tenant_id,
                usage_date=quota_day(original.processing_started_at),
                succeeded=None,
                lane_held=True,
            )
        per_tenant[entry.tenant_id]["failed" if entry.state == RunState.FAILED else "requeued"].append(
            entry.run_id
        )
    for tenant, moved in sorted(per_tenant.items()):
        audit_record(
            action=AuditAction.RUN_LEASE_EXPIRED,
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


def _dml(sql: str, params: list[Any]) -> int:
    return queue_repository().gateway.query(sql, params).affected_rows or 0
