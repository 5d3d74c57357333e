"""What the run modules share: limits, a queue entry read with its run, row access, slot releases.

Why the transitions are safe is argued once: claims, leases and concurrent slots in run_queue.py,
worker reports in run_reports.py. Staff actions (run_actions.py) and reads (run_selectors.py) rely
on both. A statement real BigQuery aborts for a concurrent update is run again by the gateway's one
retry policy (bigquery_backend/client.py): every statement here is conditional, so that is safe.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from google.cloud import bigquery

from bigquery_backend.batching import SharedLane
from bigquery_backend.client import get_gateway
from bigquery_backend.identifiers import quote_column
from bigquery_backend.repository import Repository
from tenants_app.models import RunState, TenantPipelineExecutionQueue, TenantScheduledPipelineRun
from tenants_app.repositories import central_repository
from tenants_app.services.errors import DoesNotExist, ServiceError, ServiceUnavailable, ValidationFailed
from tenants_app.services.quotas import quota_release, quota_release_if_leaked

FINISHED_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)
COMPLETION_STATES = (RunState.SUCCEEDED, RunState.FAILED)
STEP_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED")
MAX_PAGE_SIZE = 200
MAX_STEP_LOGS = 200
MAX_DQ_RESULTS = 200
MAX_ERROR_LENGTH = 10_000
MAX_JSON_BYTES = 64 * 1024  # run_metadata, each failed_expectations
MAX_STEP_METADATA_BYTES = 16 * 1024
# A report's JSON and texts together: its rows ride in the statement that commits its tick.
MAX_REPORT_BYTES = 2 * 1024 * 1024
MAX_JSON_DEPTH = 10  # as pipeline parameters; the secret check (run_reports) walks it recursively
MIN_LEASE_SECONDS = 10
_WORKER_ID = re.compile(r"^[A-Za-z0-9._:@/-]{1,200}$")
RUN_ID_MAX = 128
logger = logging.getLogger(__name__)

_BLOCKED_CACHE_KEY = "cvg:runs:quota_blocked:v1"
_LEASE_CACHE_KEY = "cvg:runs:lease:v2:{run_id}"
# How long a call waits for a tick's lane before it is answered 503 (shorter than workers' timeouts).
LANE_WAIT_SECONDS = 25.0
_RELEASE_PENDING_KEY = "cvg:runs:release-pending:v1:{run_id}"
# Long enough for a statement BigQuery accepted but did not answer in time to have run.
_RELEASE_PENDING_SECONDS = 3600


@dataclass(frozen=True)
class Candidate:
    """A queue entry joined with its scheduled run's retry figures and parameters."""

    entry: TenantPipelineExecutionQueue
    retry_count: int
    max_retries: int
    parameters: Any
    has_run_row: bool
    # What started the run and who (scheduled runs written before these columns: None).
    trigger_type: str | None = None
    trigger_by: str | None = None
    # The run row's worker and start as read: what a claim tick that failed puts back.
    run_worker_id: str | None = None
    run_started_at: datetime | None = None


# --- rows -------------------------------------------------------------------------------------------
def queue_repository() -> Repository[TenantPipelineExecutionQueue]:
    return central_repository(TenantPipelineExecutionQueue)


def scheduled_runs_repository() -> Repository[TenantScheduledPipelineRun]:
    return central_repository(TenantScheduledPipelineRun)


def select_candidates(where: str, params: list[Any], *, suffix: str) -> list[Candidate]:
    queue, runs = queue_repository(), scheduled_runs_repository()
    columns = ", ".join(f"q.{quote_column(c.name)}" for c in queue.definition.columns)
    sql = (
        f"SELECT {columns}, r.parameters AS _parameters, r.retry_count AS _retry_count, "  # noqa: S608
        "r.max_retries AS _max_retries, r.run_id AS _run_row, r.trigger_type AS _trigger_type, "
        "r.trigger_by AS _trigger_by, r.worker_id AS _run_worker_id, r.started_at AS _run_started_at "
        f"FROM {queue.table} AS q LEFT JOIN {runs.table} AS r ON r.run_id = q.run_id "
        f"WHERE {where} {suffix}"
    )
    rows = queue.gateway.query(sql, params).rows
    default_retries = int(getattr(settings, "PIPELINE_MAX_RETRIES", 3))
    return [
        Candidate(
            entry=TenantPipelineExecutionQueue(**{c.name: row.get(c.name) for c in queue.definition.columns}),
            retry_count=int(row["_retry_count"] or 0),
            max_retries=default_retries if row["_max_retries"] is None else int(row["_max_retries"]),
            parameters=row["_parameters"],
            has_run_row=row["_run_row"] is not None,
            trigger_type=row.get("_trigger_type"),
            trigger_by=row.get("_trigger_by"),
            run_worker_id=row.get("_run_worker_id"),
            run_started_at=row.get("_run_started_at"),
        )
        for row in rows
    ]


def candidate_of(run_id: str, tenant_id: str | None) -> Candidate:
    """The run's queue entry (of this tenant, when given) with its run figures; DoesNotExist if none."""
    if len(run_id) > RUN_ID_MAX:
        raise DoesNotExist(f"run {run_id!r} does not exist")
    params: list[Any] = [bigquery.ScalarQueryParameter("run_id", "STRING", run_id)]
    where = "q.run_id = @run_id"
    if tenant_id is not None:
        where += " AND q.tenant_id = @tenant_id"
        params.append(bigquery.ScalarQueryParameter("tenant_id", "STRING", tenant_id))
    found = select_candidates(where, params, suffix="LIMIT 1")
    if not found:
        # Another tenant's run is as absent as a missing one: ids are not confirmed across tenants.
        raise DoesNotExist(f"run {run_id!r} does not exist")
    return found[0]


# --- checks -----------------------------------------------------------------------------------------
def check_worker_id(worker_id: str) -> str:
    if not isinstance(worker_id, str) or not _WORKER_ID.match(worker_id):
        raise ValidationFailed(
            "invalid worker id",
            errors={"worker_id": ["1 to 200 letters, digits or . _ : @ / -."]},
        )
    if worker_id.startswith("reaper:"):
        raise ValidationFailed("invalid worker id", errors={"worker_id": ["'reaper:' is reserved."]})
    return worker_id


def lease_duration(lease_seconds: int | None) -> timedelta:
    """The lease a claim or heartbeat asked for (or the default), checked against the bounds."""
    if lease_seconds is None:
        return timedelta(seconds=settings.PIPELINE_LEASE_SECONDS)
    maximum = int(settings.PIPELINE_LEASE_MAX_SECONDS)
    if not isinstance(lease_seconds, int) or not MIN_LEASE_SECONDS <= lease_seconds <= maximum:
        raise ValidationFailed(
            "invalid lease", errors={"lease_seconds": [f"Use {MIN_LEASE_SECONDS} to {maximum} seconds."]}
        )
    return timedelta(seconds=lease_seconds)


# --- leases known to the shared cache ---------------------------------------------------------------
# Heartbeats check a lease here and write BigQuery only when less than half of it is left (run_queue).
# Every transition out of RUNNING forgets the entry, in every process sharing the cache; an entry that
# is missing (evicted, cache lost) only costs the heartbeat a read of BigQuery.
@dataclass(frozen=True)
class KnownLease:
    tenant_id: str
    attempt: int
    worker_id: str
    credential: str | None
    expires: datetime
    # The entry as the claim left it, with its run's figures: a report needs no read of its own (its
    # compare-and-set still decides; a stale copy only sends it to the read it would have made anyway).
    candidate: Candidate | None = None

    def held_by(
        self, *, worker_id: str, credential: str | None, tenant_id: str | None, attempt: int | None
    ) -> bool:
        """Whether this lease is the caller's: same worker, credential (None: a caller inside the app,
        acting for no credential), tenant and attempt (None: any)."""
        return (
            self.worker_id == worker_id
            and (credential is None or self.credential == credential)
            and (tenant_id is None or self.tenant_id == tenant_id)
            and (attempt is None or self.attempt == attempt)
        )


def lease_remember(*, run_id: str, lease: KnownLease) -> None:
    timeout = max(1, int(settings.PIPELINE_LEASE_MAX_SECONDS))
    cache.set(_LEASE_CACHE_KEY.format(run_id=run_id), lease, timeout=timeout)


def lease_recall(run_id: str) -> KnownLease | None:
    found = cache.get(_LEASE_CACHE_KEY.format(run_id=run_id))
    return found if isinstance(found, KnownLease) else None


def reported_candidate(
    run_id: str, *, tenant_id: str | None, worker_id: str, credential: str | None, attempt: int | None
) -> Candidate:
    """The run a worker reports on: from the shared cache when its lease is this caller's, else read."""
    known = lease_recall(run_id)
    if (
        known is not None
        and known.candidate is not None
        and known.held_by(worker_id=worker_id, credential=credential, tenant_id=tenant_id, attempt=attempt)
    ):
        return known.candidate
    return candidate_of(run_id, tenant_id)


def lease_forget(*run_ids: str) -> None:
    if run_ids:
        cache.delete_many([_LEASE_CACHE_KEY.format(run_id=run_id) for run_id in run_ids])


# --- concurrent slots -------------------------------------------------------------------------------
def release(entry: TenantPipelineExecutionQueue, *, succeeded: bool | None) -> None:
    if entry.usage_date is None:
        return
    quota_release(tenant_id=entry.tenant_id, usage_date=entry.usage_date, succeeded=succeeded)
    unblock_tenant(entry.tenant_id)


def release_if_leaked(entry: TenantPipelineExecutionQueue, *, succeeded: bool | None) -> None:
    """On a repeated report: the release the first report may not have made (it failed after its
    compare-and-set), if the counts show a slot still taken (quotas.quota_release_if_leaked)."""
    if entry.usage_date is None:
        return
    pending = cache.get(_RELEASE_PENDING_KEY.format(run_id=entry.run_id))
    if pending and get_gateway().job_finished(pending) is False:
        # The first report's release was accepted but has not run yet (BigQuery did not answer in
        # time): repairing now would free the slot twice once it lands.
        raise ServiceUnavailable("The run's first report is still being written; send it again shortly.")
    slot_repair(tenant_id=entry.tenant_id, usage_date=entry.usage_date, succeeded=succeeded)


def reports_lane() -> SharedLane:
    """The lane of report ticks (run_report_batches.py), shared by every process."""
    return SharedLane(cache, "runs:reports", spacing=float(settings.PIPELINE_REPORT_TICK_SECONDS))


def slot_repair(
    *, tenant_id: str, usage_date: date, succeeded: bool | None, times: int = 1, lane_held: bool = False
) -> int:
    """Free up to `times` slots the usage row counts beyond the queue's RUNNING entries; how many.

    Inside the report ticks' lane (taken here unless the caller holds it): a tick, or a reap, moves
    its entries out of RUNNING a moment before it frees their slots, and a repair in between would
    see those slots as leaked and free them twice.
    """
    freed = 0
    with contextlib.nullcontext() if lane_held else reports_lane().hold(wait=LANE_WAIT_SECONDS, spaced=False):
        for _ in range(times):
            if not quota_release_if_leaked(tenant_id=tenant_id, usage_date=usage_date, succeeded=succeeded):
                break
            freed += 1
    if freed:
        unblock_tenant(tenant_id)
    return freed


def release_outcome_unknown(job_id: str, *run_ids: str) -> None:
    """The release job `job_id` of these runs may still run: `release_if_leaked` waits for it first."""
    cache.set_many(
        {_RELEASE_PENDING_KEY.format(run_id=run_id): job_id for run_id in run_ids},
        timeout=_RELEASE_PENDING_SECONDS,
    )


# --- tenants over quota -----------------------------------------------------------------------------
# Claims fill it (run_queue); every release empties a tenant's entry, so it lives beside the releases.
def blocked_tenants(now: datetime) -> set[str]:
    """Tenants a recent claim found over quota: skipped until their retry time (or a release)."""
    blocked: dict[str, float] = cache.get(_BLOCKED_CACHE_KEY) or {}
    moment = now.timestamp()
    return {tenant for tenant, until in blocked.items() if until > moment}


def block_tenant(tenant_id: str, refusal: ServiceError, now: datetime) -> None:
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


def unblock_tenant(tenant_id: str) -> None:
    blocked: dict[str, float] = cache.get(_BLOCKED_CACHE_KEY) or {}
    if tenant_id in blocked:
        blocked.pop(tenant_id)
        cache.set(_BLOCKED_CACHE_KEY, blocked, timeout=settings.PIPELINE_QUOTA_BLOCK_SECONDS)
