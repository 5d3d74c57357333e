"""Claims, group-committed: every claim of a tick is served by one set of statements.

Why: one claim per statement put about 6 mutating statements per run on the central tables, and real
BigQuery runs 2 per table at a time and refuses beyond 20 waiting. Here the claims that arrive while
a tick waits for its lane (bigquery_backend/batching.py) are served together, whatever their number:

1. one read of the most urgent claimable entries for all of them (with their runs);
2. entries whose lease ran out are re-queued first (`run_queue._reap`, rare);
3. three reads side by side: each tenant's subscription, status and today's usage row, so the tick
   knows each tenant's room (quota_batches.quota_rooms);
4. the entries are dealt out in priority order, round robin over the claims that accept them, never
   more of a tenant than its room;
5. ONE MERGE claims them all (compare-and-set on state and attempt, tagged with the tick's
   `tick_id`): RUNNING, leased to each claim's worker and credential, no `usage_date` yet;
6. ONE UPDATE admits each tenant's claimed runs on its usage row (quota_batches.quota_admit_many);
7. ONE MERGE records `usage_date` on the admitted entries and hands back the others as they were read;
8. side by side with 7, ONE MERGE moves the admitted runs' rows to RUNNING (cosmetic: the queue entry is
   the commit point, and a run row moves only from QUEUED, never over a cancel).

So a claim tick costs 2 mutating statements on the queue and 1 on the usage and runs tables, and ticks
start PIPELINE_CLAIM_TICK_SECONDS apart across every process. The guarantees are run_queue.py's: the
compare-and-set in 5 gives each run to one claim; a run is admitted after its claim won (so racing
claims never count a run that did not start) and recorded only while still ours; a failure between
the steps gives the runs back and frees a slot only if the usage row counts more running runs than
the queue holds (`quotas.quota_release_if_leaked`), and if that fails too, the lease expiry does.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.batching import GroupCommit, LaneTimeout, SharedLane
from bigquery_backend.exceptions import BigQueryError
from bigquery_backend.models import model_replace
from bigquery_backend.repository import RowChange
from tenants_app.log_context import ContextThreadPoolExecutor
from tenants_app.models import RunState, TenantPipelineExecutionQueue
from tenants_app.services.actors import system_actor
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.errors import ServiceError, ValidationFailed
from tenants_app.services.quota_batches import Room, quota_admit_many, quota_rooms
from tenants_app.services.quota_rules import quota_day
from tenants_app.services.run_common import (
    Candidate,
    KnownLease,
    block_tenant,
    blocked_tenants,
    check_worker_id,
    lease_duration,
    lease_remember,
    queue_repository,
    scheduled_runs_repository,
    select_candidates,
    slot_repair,
)
from tenants_app.services.run_queue import _reap

logger = logging.getLogger(__name__)

# Candidates read per tick: what the claims asked for, twice over (some tenants will be full), capped.
_CANDIDATE_FACTOR = 2
_MAX_CANDIDATES = 2000
# Claims served per tick: a tick's statements stay within BigQuery's size limits.
_MAX_CLAIMS_PER_TICK = 400


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
class _Claim:
    worker_id: str
    credential: str | None
    tenant_id: str | None
    max_runs: int
    lease: timedelta
    now: datetime | None


@dataclass
class _Taken:
    """One entry dealt to one claim in this tick."""

    candidate: Candidate
    claim: int
    attempt: int
    expires: datetime


# --- the service ------------------------------------------------------------------------------------
def run_claim(
    *,
    worker_id: str,
    credential: str | None = None,
    tenant_id: str | None = None,
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> ClaimedRun | None:
    """One run, as `runs_claim` with `max_runs=1`; None when there is nothing to claim."""
    claimed = runs_claim(
        worker_id=worker_id, credential=credential, tenant_id=tenant_id, lease_seconds=lease_seconds, now=now
    )
    return claimed[0] if claimed else None


def runs_claim(
    *,
    worker_id: str,
    credential: str | None = None,
    tenant_id: str | None = None,
    max_runs: int = 1,
    lease_seconds: int | None = None,
    now: datetime | None = None,
) -> list[ClaimedRun]:
    """Claim up to `max_runs` of the most urgent claimable runs (of one tenant, or any), admitted
    against their tenants' quotas; an empty list when there is nothing to claim.

    Restricted to one tenant, a claim that found runs but got none because of the tenant's quota or
    subscription raises that refusal (QuotaExceeded has `retry_after`). The lease belongs to
    `credential` (the API key or token that claimed) as well as to `worker_id`, which any caller may
    choose: reports and heartbeats of another credential are refused.
    """
    worker_id = check_worker_id(worker_id)
    limit = int(settings.PIPELINE_CLAIM_MAX_RUNS)
    if not isinstance(max_runs, int) or not 1 <= max_runs <= limit:
        raise ValidationFailed("invalid max_runs", errors={"max_runs": [f"Use 1 to {limit}."]})
    claim = _Claim(worker_id, credential, tenant_id, max_runs, lease_duration(lease_seconds), now)
    with bigquery_errors_translated():
        return _claims.submit(claim)


def _lane() -> SharedLane:
    return SharedLane(cache, "runs:claims", spacing=float(settings.PIPELINE_CLAIM_TICK_SECONDS))


def _tick(claims: list[_Claim]) -> list[list[ClaimedRun] | BaseException]:
    try:
        with bigquery_errors_translated():
            return _ClaimTick(claims).run()
    except Exception as exc:
        return [exc] * len(claims)


_claims: GroupCommit[_Claim, list[ClaimedRun]] = GroupCommit(
    _tick, lane=_lane, max_batch=_MAX_CLAIMS_PER_TICK
)


# --- one tick ---------------------------------------------------------------------------------------
class _ClaimTick:
    def __init__(self, claims: list[_Claim]) -> None:
        self.claims = claims
        # Tests inject a clock per claim; a tick serves one moment.
        self.now = next((claim.now for claim in claims if claim.now is not None), None) or timezone.now()
        self.day = quota_day(self.now)
        self.claim_id = f"claim:{uuid.uuid4().hex}"
        self.results: list[list[ClaimedRun] | BaseException] = [[] for _ in claims]

    def run(self) -> list[list[ClaimedRun] | BaseException]:
        candidates = self._reaped(self._candidates())
        if not candidates:
            return self.results
        rooms = quota_rooms(tenant_ids=[c.entry.tenant_id for c in candidates], now=self.now)
        taken = self._deal(candidates, rooms)
        if not taken:
            self._refuse_restricted(rooms)
            return self.results
        try:
            won = self._take(taken)
        except Exception:
            # The claim's outcome unknown (its answer lost, or the read-back failed): whatever it took
            # carries this tick's id and goes back; no admission was made.
            self._give_back(taken, admitted_on=None)
            raise
        starting: list[_Taken] = []
        try:
            admitted = self._admit(won, rooms)
            # The run rows (cosmetic, step 8) side by side with the record (step 7): the record only
            # drops a run a cancel took meanwhile, and a cancel owns its run row by then anyway. If the
            # record fails, the give-back puts the rows back too.
            starting = [item for item in won if item.candidate.entry.tenant_id in admitted]
            with ContextThreadPoolExecutor(1, thread_name_prefix="claim-runs") as pool:
                moved = pool.submit(self._follow_run_rows, starting)
                recorded = self._record(won, admitted)
            if moved.exception() is not None:
                logger.warning("claim tick: run rows not moved", exc_info=moved.exception())
        except Exception:
            # Outcome of the admission unknown: hand every run back, free a slot the row may hold.
            self._give_back(won, admitted_on=self.day, moved=starting)
            raise
        # Past the commit: the cache's part (leases for heartbeats, tenants to skip) is best effort.
        try:
            self._answer(recorded)
        finally:
            try:
                self._refuse_restricted(rooms)
            except Exception:
                logger.warning("claim tick: could not record the tenants over quota", exc_info=True)
        return self.results

    # 1. candidates
    def _candidates(self) -> list[Candidate]:
        demand = sum(claim.max_runs for claim in self.claims)
        restricted = sorted({c.tenant_id for c in self.claims if c.tenant_id is not None})
        anyone = any(claim.tenant_id is None for claim in self.claims)
        # Tenants a recent tick found full are skipped by claims for any tenant, not by their own.
        blocked = sorted(blocked_tenants(self.now) - set(restricted)) if anyone else []
        params: list[Any] = [
            bigquery.ScalarQueryParameter("queued", "STRING", RunState.QUEUED),
            bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING),
            bigquery.ScalarQueryParameter("now", "TIMESTAMP", self.now),
            bigquery.ArrayQueryParameter("tenants", "STRING", restricted),
            bigquery.ArrayQueryParameter("blocked", "STRING", blocked),
            bigquery.ScalarQueryParameter("anyone", "BOOL", anyone),
        ]
        where = (
            "((q.state = @queued AND (q.available_at IS NULL OR q.available_at <= @now) "
            "AND q.scheduled_time <= @now) OR (q.state = @running AND q.lease_expires_at < @now)) "
            "AND (q.tenant_id IN UNNEST(@tenants) OR (@anyone AND q.tenant_id NOT IN UNNEST(@blocked)))"
        )
        limit = min(demand * _CANDIDATE_FACTOR + 10, _MAX_CANDIDATES)
        return select_candidates(
            where, params, suffix=f"ORDER BY q.priority, q.scheduled_time, q.run_id LIMIT {limit}"
        )

    # 2. dead workers' runs
    def _reaped(self, candidates: list[Candidate]) -> list[Candidate]:
        expired = [c for c in candidates if c.entry.state == RunState.RUNNING]
        if not expired:
            return candidates
        report = _reap(expired, now=self.now, cutoff=self.now, actor=system_actor("claim"))
        requeued = set(report.requeued)
        kept = []
        for candidate in candidates:
            if candidate.entry.state != RunState.RUNNING:
                kept.append(candidate)
            elif candidate.entry.run_id in requeued:
                entry = model_replace(candidate.entry, state=RunState.QUEUED)
                kept.append(replace(candidate, entry=entry, retry_count=candidate.retry_count + 1))
        return kept

    # 4. dealing
    def _deal(self, candidates: list[Candidate], rooms: dict[str, Room]) -> list[_Taken]:
        wanted = [claim.max_runs for claim in self.claims]
        free = {tenant: room.free for tenant, room in rooms.items()}
        taken: list[_Taken] = []
        turn = 0
        for candidate in candidates:
            tenant = candidate.entry.tenant_id
            if free.get(tenant, 0) <= 0:
                continue
            index = self._next_claim(tenant, wanted, turn)
            if index is None:
                continue
            turn = index + 1
            wanted[index] -= 1
            free[tenant] -= 1
            claim = self.claims[index]
            taken.append(_Taken(candidate, index, (candidate.entry.attempt or 0) + 1, self.now + claim.lease))
            if not any(wanted):
                break
        return taken

    def _next_claim(self, tenant: str, wanted: list[int], turn: int) -> int | None:
        """The next claim, round robin from `turn`, that still wants runs and accepts this tenant's."""
        count = len(self.claims)
        for step in range(count):
            index = (turn + step) % count
            restriction = self.claims[index].tenant_id
            if wanted[index] > 0 and restriction in (None, tenant):
                return index
        return None

    # 5. the claim
    def _take(self, taken: list[_Taken]) -> list[_Taken]:
        changes = []
        for item in taken:
            entry, claim = item.candidate.entry, self.claims[item.claim]
            changes.append(
                RowChange(
                    key=entry.run_id,
                    values={
                        "state": RunState.RUNNING,
                        "lease_owner": claim.worker_id,
                        "lease_credential": claim.credential,
                        "lease_expires_at": item.expires,
                        "attempt": item.attempt,
                    },
                    expected={"state": RunState.QUEUED, "attempt": entry.attempt},
                )
            )
        shared = {
            "heartbeat_at": self.now,
            "processing_started_at": self.now,
            "usage_date": None,
            "tick_id": self.claim_id,
        }
        queue = queue_repository()
        if queue.update_many(changes, shared=shared) == len(changes):
            return taken
        # Another tick (a process that does not share our cache) or a cancel won some: read back ours.
        ours = queue.list(
            filters={
                "run_id__in": [item.candidate.entry.run_id for item in taken],
                "tick_id": self.claim_id,
            },
            fields=["run_id"],
        )
        mine = {entry.run_id for entry in ours}
        return [item for item in taken if item.candidate.entry.run_id in mine]

    # 6. the admission
    def _admit(self, won: list[_Taken], rooms: dict[str, Room]) -> set[str]:
        grants: dict[str, int] = defaultdict(int)
        for item in won:
            grants[item.candidate.entry.tenant_id] += 1
        return quota_admit_many(grants=grants, rooms=rooms, now=self.now, admission_id=self.claim_id)

    # 7. recording the admission, handing back the rest
    def _record(self, won: list[_Taken], admitted: set[str]) -> list[_Taken]:
        if not won:
            return []
        changes = [self._record_change(item, item.candidate.entry.tenant_id in admitted) for item in won]
        queue = queue_repository()
        expected_count = len(changes)
        if queue.update_many(changes, shared={"heartbeat_at": self.now}) == expected_count:
            kept = [item for item in won if item.candidate.entry.tenant_id in admitted]
        else:
            # Cancelled or reaped between the claim and now: whoever moved it saw no slot, so the
            # slot just admitted is ours to free (as the single claim did).
            recorded = queue.list(
                filters={
                    "run_id__in": [item.candidate.entry.run_id for item in won],
                    "tick_id": self.claim_id,
                    "usage_date": self.day,
                },
                fields=["run_id"],
            )
            stamped = {entry.run_id for entry in recorded}
            kept = [item for item in won if item.candidate.entry.run_id in stamped]
            lost: dict[str, int] = defaultdict(int)
            for item in won:
                tenant = item.candidate.entry.tenant_id
                if tenant in admitted and item.candidate.entry.run_id not in stamped:
                    lost[tenant] += 1
            for tenant, count in sorted(lost.items()):
                # Each such slot is now one the usage row counts beyond the queue's RUNNING entries.
                slot_repair(tenant_id=tenant, usage_date=self.day, succeeded=None, times=count)
        for tenant in {item.candidate.entry.tenant_id for item in won} - admitted:
            logger.info("tenant %s: its usage row moved during the claim tick; runs handed back", tenant)
        return kept

    def _record_change(self, item: _Taken, admitted: bool) -> RowChange:
        entry, claim = item.candidate.entry, self.claims[item.claim]
        expected = {"tick_id": self.claim_id, "state": RunState.RUNNING, "attempt": item.attempt}
        if admitted:
            values = {
                "state": RunState.RUNNING,
                "lease_owner": claim.worker_id,
                "lease_credential": claim.credential,
                "lease_expires_at": item.expires,
                "processing_started_at": self.now,
                "attempt": item.attempt,
                "usage_date": self.day,
            }
        else:
            values = _as_read(entry)
        return RowChange(key=entry.run_id, values=values, expected=expected)

    # 8. the scheduled runs
    def _follow_run_rows(self, recorded: list[_Taken]) -> None:
        changes = [
            RowChange(
                key=item.candidate.entry.run_id,
                values={"state": RunState.RUNNING, "worker_id": self.claims[item.claim].worker_id},
                # Never over a cancel that landed after the claim: the cancel owns the row then.
                expected={"state": RunState.QUEUED},
            )
            for item in recorded
            if item.candidate.has_run_row
        ]
        if not changes:
            return
        try:
            scheduled_runs_repository().update_many(changes, shared={"started_at": self.now})
        except BigQueryError:
            # The claims are durable in the queue, the commit point; the run rows catch up at the report.
            logger.warning("claim tick: %d run rows not moved to RUNNING", len(changes))

    def _unfollow_run_rows(self, moved: Sequence[_Taken]) -> None:
        """Run rows this tick moved to RUNNING back as read (only where still as this tick left them)."""
        changes = [
            RowChange(
                key=item.candidate.entry.run_id,
                values={
                    "state": RunState.QUEUED,
                    "worker_id": item.candidate.run_worker_id,
                    "started_at": item.candidate.run_started_at,
                },
                expected={
                    "state": RunState.RUNNING,
                    "worker_id": self.claims[item.claim].worker_id,
                    "started_at": self.now,
                },
            )
            for item in moved
            if item.candidate.has_run_row
        ]
        if changes:
            scheduled_runs_repository().update_many(changes)

    def _answer(self, recorded: list[_Taken]) -> None:
        for item in recorded:
            entry, claim = item.candidate.entry, self.claims[item.claim]
            run = ClaimedRun(
                run_id=entry.run_id,
                tenant_id=entry.tenant_id,
                pipeline_id=entry.pipeline_id,
                config_id=entry.config_id,
                parameters=item.candidate.parameters,
                priority=entry.priority,
                scheduled_time=entry.scheduled_time,
                attempt=item.attempt,
                worker_id=claim.worker_id,
                lease_expires_at=item.expires,
                retry_count=item.candidate.retry_count,
                max_retries=item.candidate.max_retries,
                usage_date=self.day,
            )
            held = model_replace(
                entry,
                state=RunState.RUNNING,
                lease_owner=claim.worker_id,
                lease_credential=claim.credential,
                lease_expires_at=item.expires,
                heartbeat_at=self.now,
                processing_started_at=self.now,
                attempt=item.attempt,
                usage_date=self.day,
            )
            lease = KnownLease(
                run.tenant_id,
                run.attempt,
                run.worker_id,
                claim.credential,
                run.lease_expires_at,
                replace(item.candidate, entry=held),
            )
            try:
                lease_remember(run_id=run.run_id, lease=lease)
            except Exception:
                # Heartbeats and reports then read BigQuery; the claim itself is committed.
                logger.warning("claim tick: lease of run %s not cached", run.run_id, exc_info=True)
            result = self.results[item.claim]
            assert isinstance(result, list)
            result.append(run)

    def _refuse_restricted(self, rooms: dict[str, Room]) -> None:
        """A claim for one tenant that got nothing because of that tenant's quota gets the refusal."""
        for index, claim in enumerate(self.claims):
            room = rooms.get(claim.tenant_id) if claim.tenant_id is not None else None
            if room is not None and room.refusal is not None and not self.results[index]:
                self.results[index] = room.refusal
        for tenant, room in rooms.items():
            if room.refusal is not None:
                block_tenant(tenant, room.refusal, self.now)

    def _give_back(
        self, won: list[_Taken], *, admitted_on: date | None, moved: Sequence[_Taken] = ()
    ) -> None:
        """Undo the tick's claims: entries back as read, run rows it `moved` too, and a slot the usage
        rows may hold freed once.

        If BigQuery fails here too, each entry keeps its lease until it runs out; then the reaper
        hands it back and frees the slot (it finds the entry without `usage_date`).
        """
        try:
            changes = [
                RowChange(
                    key=item.candidate.entry.run_id,
                    values=_as_read(item.candidate.entry),
                    expected={"tick_id": self.claim_id, "state": RunState.RUNNING, "attempt": item.attempt},
                )
                for item in won
            ]
            if changes:
                queue_repository().update_many(changes)
            self._unfollow_run_rows(moved)
            if admitted_on is None:
                return
            per_tenant: dict[str, int] = defaultdict(int)
            for item in won:
                per_tenant[item.candidate.entry.tenant_id] += 1
            for tenant, count in sorted(per_tenant.items()):
                # Each frees one slot only while the row counts more than the queue holds.
                slot_repair(tenant_id=tenant, usage_date=admitted_on, succeeded=None, times=count)
        except (BigQueryError, ServiceError, LaneTimeout):
            logger.warning("claim tick: could not give back %d runs; their lease expiry will", len(won))


def _as_read(entry: TenantPipelineExecutionQueue) -> dict[str, Any]:
    """An entry's claim columns as they were before this tick took it: how a claim is handed back."""
    return {
        "state": RunState.QUEUED,
        "lease_owner": entry.lease_owner,
        "lease_credential": entry.lease_credential,
        "lease_expires_at": None,
        "processing_started_at": entry.processing_started_at,
        "attempt": entry.attempt,
        "usage_date": None,
    }
