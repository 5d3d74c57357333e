"""The execution queue seen from the worker side: claim and heartbeat; and re-queueing dead workers' runs.

A run is two rows with the same `run_id`: the scheduled run (`tenant_scheduled_pipeline_runs`: what
ran, its retries, outcome) and its queue entry (`tenant_pipeline_execution_queue`: who holds it and
until when). The queue entry is the commit point of every transition: each one is ONE conditional
UPDATE on it (compare-and-set on `state`, `lease_owner` and `attempt`), so of two workers, two
cleanups, or a worker and a cleanup, exactly one wins; the scheduled run row follows. This holds for
the worker reports (run_reports.py) and the staff actions (run_actions.py) too.

Concurrent slots. A RUNNING entry with `usage_date` set holds one concurrent slot on that usage row
(`quotas.quota_admit` at claim time). Whoever moves an entry out of RUNNING (complete, fail, cancel,
lease expiry) releases that slot, once, because only that caller's compare-and-set matched (how a
report releases, and how its repeat repairs an interrupted one: run_reports.py). A claim admits AFTER
winning its compare-and-set (so racing workers never count a run that did not start), and only then
writes `usage_date`, only while the entry is still its claim: if it was cancelled or taken over
meanwhile, whoever moved it saw no slot, so the claim releases its own and is lost. A BigQuery failure
between the steps (a refusal, a lost answer) gives the run back and frees the slot if the usage row
still counts it (`_give_back`); if that fails too, or the process dies, the lease runs out and the
reaper does the same for the entry it finds without `usage_date`. Both free a slot only when the usage
row counts more running runs than the queue has RUNNING entries (`quotas.quota_release_if_leaked`,
which counts every RUNNING entry, admitted or about to be), so a slot in use is never freed.

Priority: 1 is the most urgent; claims take the lowest priority number first, then the earliest
scheduled time. Leases: a claim holds the run for `lease_seconds`; heartbeats extend it; past it, the
run is re-queued (consuming a retry) by one claim that meets it (one per expired attempt across all
processes, through the shared cache), which then takes it, or by
`cleanup_orphaned_runs`, after which other workers can claim it a minute later (`_REAP_HOLD`). Either
moves an entry only as it read it (same attempt, same slot).

Worker progress (claim, heartbeat, complete, fail) is not audited: the run rows and the tenant's own
dataset are its record. Changes people or commands make (cancel, requeue, orphan cleanup) are.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.exceptions import BigQueryError
from tenants_app.models import RunState, TenantPipelineExecutionQueue
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import audit_record
from tenants_app.services.errors import LeaseLost, ServiceError, ServiceUnavailable, ValidationFailed
from tenants_app.services.quotas import quota_admit, quota_day, quota_release, quota_release_if_leaked
from tenants_app.services.run_common import (
    MIN_LEASE_SECONDS,
    Candidate,
    block_tenant,
    blocked_tenants,
    candidate_of,
    check_worker_id,
    queue_repository,
    scheduled_runs_repository,
    select_candidates,
    unblock_tenant,
)

logger = logging.getLogger(__name__)


# Candidates read per claim query, and how many queries one claim may make when candidates are lost
# to other workers or blocked by quota: bounded, so a claim never scans the queue.
CLAIM_BATCH = 10
CLAIM_ROUNDS = 3
# How long an entry a cleanup moved back to the queue stays unclaimable by others: long enough for the
# cleanup to read back which entries it moved (see _reap).
_REAP_HOLD = timedelta(seconds=60)


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


@dataclass
class ReapReport:
    """What an orphan cleanup found and did."""

    dry_run: bool
    found: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    released: int = 0


# --- worker protocol --------------------------------------------------------------------------------
def run_claim(
    *,
    worker_id: str,
    credential: str | None = None,
    tenant_id: str | None = None,
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> ClaimedRun | None:
    """Claim the most urgent claimable run (of one tenant, or any), admitted against its quota; or None.

    Restricted to one tenant, a claim that found runs but was refused by the tenant's quota or
    subscription raises that refusal (QuotaExceeded has `retry_after`) instead of returning None.
    The lease belongs to `credential` (the API key or token that claimed) as well as to `worker_id`,
    which any caller may choose: reports and heartbeats of another credential are refused.
    """
    worker_id = check_worker_id(worker_id)
    lease = _lease(lease_seconds)
    now = now or timezone.now()
    refusals: dict[str, ServiceError] = {}
    seen: set[str] = set()
    with bigquery_errors_translated():
        for _ in range(CLAIM_ROUNDS):
            excluded = set(refusals) | (blocked_tenants(now) if tenant_id is None else set())
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
                    # A dead worker's run: re-queue it (releasing its slot) before taking it over. One
                    # claimer per expired attempt does it, across processes: after a wave of expiries
                    # every claimer read the same entries, and each reap is a mutating statement.
                    if not cache.add(_reaping_key(entry), True, timeout=_REAP_HOLD.total_seconds()):
                        continue
                    try:
                        report = _reap([candidate], now=now, cutoff=now, actor="system:claim")
                    except BaseException:
                        # Not reaped after all: the next claimer that meets the entry may try.
                        cache.delete(_reaping_key(entry))
                        raise
                    if entry.run_id not in report.requeued:
                        continue
                    candidate = replace(
                        candidate,
                        entry=_replace_entry(entry, state=RunState.QUEUED),
                        retry_count=candidate.retry_count + 1,
                    )
                try:
                    claimed = _try_claim(
                        candidate, worker_id=worker_id, credential=credential, lease=lease, now=now
                    )
                except ServiceUnavailable:
                    raise
                except ServiceError as refusal:
                    refusals[entry.tenant_id] = refusal
                    block_tenant(entry.tenant_id, refusal, now)
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
    credential: str | None = None,
    tenant_id: str | None = None,
    attempt: int | None = None,
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> RunLease:
    """Extend the lease of a run this worker holds; LeaseLost when it no longer does."""
    worker_id = check_worker_id(worker_id)
    lease = _lease(lease_seconds)
    now = now or timezone.now()
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
            _raise_not_held(run_id=run_id, tenant_id=tenant_id, worker_id=worker_id)
        entry = queue_repository().get(run_id)
    return RunLease(run_id=run_id, worker_id=worker_id, attempt=entry.attempt or 0, lease_expires_at=expires)


# --- orphan cleanup ---------------------------------------------------------------------------------
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


# --- internals: claiming ----------------------------------------------------------------------------
def _claim_candidates(
    *, now: datetime, tenant_id: str | None, exclude_tenants: set[str], exclude_runs: set[str]
) -> list[Candidate]:
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
    return select_candidates(" AND ".join(conditions), params, suffix=f"{order} LIMIT {CLAIM_BATCH}")


def _next_candidate(pending: list[Candidate], *, contended: bool) -> int:
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
    candidate: Candidate, *, worker_id: str, credential: str | None, lease: timedelta, now: datetime
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
        "lease_credential": credential,
    }
    if queue_repository().update_where(values, filters=filters) == 0:
        return None
    mine = {"run_id": entry.run_id, "state": RunState.RUNNING, "lease_owner": worker_id, "attempt": attempt}
    try:
        admission = quota_admit(tenant_id=entry.tenant_id, now=now)
    except ServiceUnavailable as exc:
        # BigQuery failed (translated by the service): the admission's UPDATE may have landed with its
        # answer lost, so it may hold a slot. Contention alone (no BigQuery cause) took none.
        unknown = isinstance(exc.__cause__, BigQueryError)
        _give_back(entry, mine, admitted_on=quota_day(now) if unknown else None)
        raise
    except ServiceError:
        # Refused (over quota, subscription inactive): no slot taken; hand the run back as it was.
        _give_back(entry, mine, admitted_on=None)
        raise
    except Exception:
        # A BigQuery error not translated on the way: the outcome is unknown as above.
        _give_back(entry, mine, admitted_on=quota_day(now))
        raise
    try:
        stamped = queue_repository().update_where({"usage_date": admission.usage_date}, filters=mine)
    except Exception:
        # Admitted, but BigQuery refused or lost the stamp: without this the entry stayed RUNNING with
        # no `usage_date`, which nothing released, and the slot was held until the next rollover.
        _give_back(entry, mine, admitted_on=admission.usage_date)
        raise
    if stamped == 0:
        # Lost during admission: cancelled, or the lease ran out and another claim or cleanup took
        # the run. Whoever moved it saw no slot recorded, so the slot just admitted is ours to free.
        quota_release(tenant_id=entry.tenant_id, usage_date=admission.usage_date, succeeded=None)
        unblock_tenant(entry.tenant_id)
        return None
    if candidate.has_run_row:
        scheduled_runs_repository().update_where(
            {"state": RunState.RUNNING, "started_at": now, "worker_id": worker_id},
            # Never over a cancel that landed after our usage_date write: the cancel owns the row then.
            filters={"run_id": entry.run_id, "state__in": [RunState.QUEUED, RunState.RUNNING]},
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


def _give_back(
    entry: TenantPipelineExecutionQueue, mine: dict[str, Any], *, admitted_on: date | None
) -> None:
    """Undo a claim that cannot finish: the entry back as it was read, and a slot it may hold freed once.

    `admitted_on` is the day of an admission that happened or may have (its outcome unknown). The slot
    is freed only if the usage row counts more running runs than the queue holds (the repair of
    `quota_release_if_leaked`), so an admission that never landed frees nothing. If BigQuery fails here
    too, the entry keeps its lease until it runs out, and the reaper hands it back and frees the slot.
    """
    try:
        queue_repository().update_where(
            {
                "state": RunState.QUEUED,
                "lease_owner": entry.lease_owner,
                "lease_expires_at": None,
                "heartbeat_at": entry.heartbeat_at,
                "processing_started_at": entry.processing_started_at,
                "attempt": entry.attempt,
                "usage_date": None,
                "lease_credential": entry.lease_credential,
            },
            filters=mine,
        )
        if admitted_on is not None and quota_release_if_leaked(
            tenant_id=entry.tenant_id, usage_date=admitted_on, succeeded=None
        ):
            unblock_tenant(entry.tenant_id)
    except (BigQueryError, ServiceError):
        logger.warning("could not give back run %s after a failed claim; its lease expiry will", entry.run_id)


def _replace_entry(entry: TenantPipelineExecutionQueue, **values: Any) -> TenantPipelineExecutionQueue:
    """A copy of a queue entry with some values changed (model instances are mutable; reads are shared)."""
    copy = TenantPipelineExecutionQueue(
        **{f.attname: getattr(entry, f.attname) for f in entry._meta.concrete_fields}
    )
    for name, value in values.items():
        setattr(copy, name, value)
    return copy


def _raise_not_held(*, run_id: str, tenant_id: str | None, worker_id: str) -> None:
    entry = candidate_of(run_id, tenant_id).entry
    raise LeaseLost(f"run {run_id} is not held by worker {worker_id} (it is {entry.state})")


def _lease(lease_seconds: int | None) -> timedelta:
    if lease_seconds is None:
        return timedelta(seconds=settings.PIPELINE_LEASE_SECONDS)
    maximum = int(settings.PIPELINE_LEASE_MAX_SECONDS)
    if not isinstance(lease_seconds, int) or not MIN_LEASE_SECONDS <= lease_seconds <= maximum:
        raise ValidationFailed(
            "invalid lease", errors={"lease_seconds": [f"Use {MIN_LEASE_SECONDS} to {maximum} seconds."]}
        )
    return timedelta(seconds=lease_seconds)


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


def _reaping_key(entry: TenantPipelineExecutionQueue) -> str:
    return f"cvg:runs:reaping:v1:{_reap_version(entry)}"


def _reap_version(entry: TenantPipelineExecutionQueue) -> str:
    attempt = "-" if entry.attempt is None else str(entry.attempt)
    usage_date = "-" if entry.usage_date is None else entry.usage_date.isoformat()
    return f"{entry.run_id}#{attempt}#{usage_date}"


def _reap(candidates: Sequence[Candidate], *, now: datetime, cutoff: datetime, actor: str) -> ReapReport:
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
    per_tenant: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"requeued": [], "failed": []})
    for entry in won:
        original = by_id[entry.run_id].entry
        # The slot recorded by the claim we just ended.
        if original.usage_date is not None:
            quota_release(tenant_id=entry.tenant_id, usage_date=original.usage_date, succeeded=None)
            unblock_tenant(entry.tenant_id)
            report.released += 1
        elif original.processing_started_at is not None and quota_release_if_leaked(
            tenant_id=entry.tenant_id, usage_date=quota_day(original.processing_started_at), succeeded=None
        ):
            # A claim that failed between its admission and recording it (and could not give the run
            # back): the slot is freed if the usage row still counts it.
            unblock_tenant(entry.tenant_id)
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


def _dml(sql: str, params: list[Any]) -> int:
    return queue_repository().gateway.query(sql, params).affected_rows or 0
