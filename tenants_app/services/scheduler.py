"""The pipeline scheduler: enqueue every due slot of every active config exactly once.

Row contract (read by the worker side, `tenants_app/services/run_queue.py`): each slot of a config becomes
one `tenant_scheduled_pipeline_runs` row and one `tenant_pipeline_execution_queue` row with the same
`run_id = scheduled_run_id(config_id, slot)`, state QUEUED, `scheduled_time` = the slot (UTC),
`pipeline_id` = the config's `pipeline_template`, the config's priority (1 = most urgent) and
parameters, `retry_count` 0, `max_retries` = PIPELINE_MAX_RETRIES; the queue row has `attempt` 0 and
no lease. "Run now" enqueues the same way under `manual_run_id(config_id, minute)`.

One scheduler run, per batch of configs (SCHEDULER_BATCH_SIZE, keyset-paged by config_id), issues a
constant number of statements whatever the batch size: 1 SELECT of the due configs, 1 MERGE claiming
them, 2 MERGEs enqueuing (runs, then queue) and 1 UPDATE confirming. Why each slot is enqueued once:

1. Claim (compare-and-set). One MERGE advances each due config's `next_run_time` to its next future
   slot and writes our fresh `scheduler_claim_id`, `scheduler_claimed_at` and the slots we claim
   (`scheduler_pending_slots`), but only on rows whose `next_run_time`, `scheduler_claim_id` and
   `updated_at` still hold the values we read. Concurrent schedulers race on the same rows; mutating
   DML on a row is serialised (BigQuery retries or fails the loser of a conflict; the emulator holds a
   write lock), so for each config exactly one claim matches and the others match nothing. A config
   edited meanwhile (pause, new cron: `updated_at` changes) is not claimed on stale data either.
2. Enqueue (insert-if-absent). The runs MERGE reads the configs table and inserts only for configs
   whose `scheduler_claim_id` is ours (that is the read-back of the claim, done inside the statement),
   and only run ids not present yet; the queue MERGE inserts, for our runs still QUEUED, queue rows not
   present yet. Run ids are deterministic, so a repeat inserts nothing.
3. Confirm. One UPDATE clears `scheduler_pending_slots` where the claim id is still ours.

A crash (or a lost connection) between the steps loses nothing and duplicates nothing: the claimed
slots stay in `scheduler_pending_slots`; once the claim is older than SCHEDULER_CLAIM_TIMEOUT_SECONDS,
the next scheduler run claims the config again (compare-and-set on the old claim id, so one recoverer
wins), enqueues the pending slots (plus any newly due) with the same deterministic run ids, and the
insert-if-absent skips whatever the dead run had already written. A config with a live pending claim
is left alone by other runs. A lost response (the claim committed but the client timed out, and its
retry then matched nothing) still enqueues: the enqueue statements look for our claim id, which the
first attempt wrote. A statement that real BigQuery fails for a concurrent update is repeated by the
gateway's retry policy: each is conditional or insert-if-absent. Deleting a config between claim and
enqueue drops its slots (the join finds no config), which is what deleting means. The one residual
double fault: a scheduler stalled for longer than the claim timeout between claim and enqueue whose
MERGE then overlaps a recoverer's on real BigQuery, where two insert-only MERGEs do not conflict; the
timeout (10 minutes by default) is far above a scheduler run's duration.

Late schedulers catch up: at most `max_catch_up` missed slots per config are enqueued (the latest
ones, as fresh data matters most), the older ones are skipped and counted, and `next_run_time` moves to
the first slot after `now`. Configs of tenants that may not run pipelines (tenant not ACTIVE/TRIAL, or
a subscription state without runs, see `plans.LIFECYCLE_RULES`) have their due slots skipped, not
queued, so a suspension does not pile up runs that could never start.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.identifiers import quote_column
from bigquery_backend.repository import RowChange
from tenants_app.models import (
    WORKING_TENANT_STATUSES,
    RunState,
    RunTrigger,
    TenantPipelineConfig,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantScheduledPipelineRun,
    TenantSubscription,
)
from tenants_app.repositories import central_repository
from tenants_app.services.actors import system_actor
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.cron import cron_iter, cron_prev
from tenants_app.services.plans import OPERATION_RUN, status_allows
from tenants_app.services.subscription_selectors import subscription_effective_status
from tenants_app.timestamps import api_timestamp

logger = logging.getLogger(__name__)

SCHEDULER_ACTOR = system_actor("schedule_pipelines")
MAX_RUN_ID_LENGTH = 128
# Skipped slots of one config are counted up to this bound (a scheduler stopped for months).
MAX_SLOTS_COUNTED = 1_000
MAX_IDS_REPORTED = 50
_SLOT_FORMAT = "%Y-%m-%dT%H:%MZ"


def scheduled_run_id(config_id: str, slot: datetime) -> str:
    """The run id of a config's slot: stable, unique per (config, UTC minute), at most 128 characters."""
    return _run_id(config_id, slot, suffix="")


def manual_run_id(config_id: str, minute: datetime) -> str:
    """The run id of a "run now" in that minute: a second click in the same minute is the same run."""
    return f"{scheduled_run_id(config_id, minute)}_manual"


def backfill_run_id(config_id: str, slot: datetime) -> str:
    """The run id of a backfilled slot: apart from the slot's scheduled run, and the same on a repeat."""
    return _run_id(config_id, slot, suffix="_backfill")


def _run_id(config_id: str, slot: datetime, *, suffix: str) -> str:
    if slot.tzinfo is None:
        raise ValueError("slot must be timezone-aware")
    stamp = slot.astimezone(UTC).strftime("%Y%m%dT%H%MZ")
    prefix = config_id
    # The budget of "_manual" is kept for every suffix at most as long, so scheduled ids never change.
    if len(config_id) + len(stamp) + 1 + max(len(suffix), len("_manual")) > MAX_RUN_ID_LENGTH:
        # Ids of that length come only from elsewhere (ours are short): keep a readable start and a hash.
        prefix = f"{config_id[:80]}_{hashlib.sha256(config_id.encode()).hexdigest()[:16]}"
    return f"{prefix}_{stamp}{suffix}"


def encode_slots(slots: Sequence[datetime]) -> str | None:
    """Slots as stored in `scheduler_pending_slots` (UTC minutes, comma-separated), None for none."""
    return ",".join(slot.astimezone(UTC).strftime(_SLOT_FORMAT) for slot in slots) or None


def decode_slots(text: str | None) -> list[datetime]:
    """The slots of `scheduler_pending_slots`."""
    if not text:
        return []
    return [datetime.strptime(item, _SLOT_FORMAT).replace(tzinfo=UTC) for item in text.split(",") if item]


@dataclass(frozen=True)
class EnqueueEntry:
    """One run to enqueue: its id, its config and its slot; what started it and who (None: the
    scheduler); `parameters` replace the config's for this run only (checked by the caller)."""

    run_id: str
    config_id: str
    slot: datetime
    trigger_type: str = RunTrigger.SCHEDULE
    trigger_by: str | None = None
    parameters: dict[str, Any] | None = None


def runs_enqueue(*, entries: Sequence[EnqueueEntry], now: datetime, claim_id: str | None = None) -> int:
    """Insert the runs and queue rows that do not exist yet (2 statements); returns the new runs.

    With `claim_id`, only configs still claimed by it are enqueued (the scheduler's read-back).
    """
    if not entries:
        return 0
    configs = central_repository(TenantPipelineConfig)
    runs = central_repository(TenantScheduledPipelineRun)
    queue = central_repository(TenantPipelineExecutionQueue)
    slots = [entry.slot.astimezone(UTC) for entry in entries]
    params: list[Any] = [
        bigquery.ArrayQueryParameter("run_ids", "STRING", [entry.run_id for entry in entries]),
        bigquery.ArrayQueryParameter("config_ids", "STRING", [entry.config_id for entry in entries]),
        bigquery.ArrayQueryParameter("slots", "TIMESTAMP", slots),
        # BigQuery arrays hold no NULLs: '' stands for "none" (the config's parameters, no person).
        bigquery.ArrayQueryParameter("triggers", "STRING", [entry.trigger_type for entry in entries]),
        bigquery.ArrayQueryParameter("trigger_bys", "STRING", [entry.trigger_by or "" for entry in entries]),
        bigquery.ArrayQueryParameter("overrides", "STRING", [_json_or_empty(entry) for entry in entries]),
        bigquery.ScalarQueryParameter("first_slot", "TIMESTAMP", min(slots)),
        bigquery.ScalarQueryParameter("last_slot", "TIMESTAMP", max(slots)),
        bigquery.ScalarQueryParameter("queued", "STRING", RunState.QUEUED),
        bigquery.ScalarQueryParameter("max_retries", "INT64", settings.PIPELINE_MAX_RETRIES),
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
    ]
    claimed = ""
    if claim_id is not None:
        params.append(bigquery.ScalarQueryParameter("claim_id", "STRING", claim_id))
        claimed = " AND c.scheduler_claim_id = @claim_id"
    # Custom SQL, not the repository: the rows are built from the configs table in the statement itself
    # (so the claim is read back atomically and only 3 values per run travel as parameters). The time
    # range on the partitioning column keeps BigQuery from scanning every partition.
    runs_sql = (
        f"MERGE {runs.table} AS target USING ("  # noqa: S608 - identifiers quoted, values parameters
        "SELECT r AS run_id, c.config_id, c.tenant_id, c.pipeline_template AS pipeline_id, "
        "s AS scheduled_time, COALESCE(c.priority, 5) AS priority, "
        "IF(p = '', c.parameters, PARSE_JSON(p)) AS parameters, t AS trigger_type, "
        "NULLIF(b, '') AS trigger_by "
        "FROM UNNEST(@run_ids) AS r WITH OFFSET AS o_r "
        "JOIN UNNEST(@config_ids) AS k WITH OFFSET AS o_k ON o_k = o_r "
        "JOIN UNNEST(@slots) AS s WITH OFFSET AS o_s ON o_s = o_r "
        "JOIN UNNEST(@triggers) AS t WITH OFFSET AS o_t ON o_t = o_r "
        "JOIN UNNEST(@trigger_bys) AS b WITH OFFSET AS o_b ON o_b = o_r "
        "JOIN UNNEST(@overrides) AS p WITH OFFSET AS o_p ON o_p = o_r "
        f"JOIN {configs.table} AS c ON c.config_id = k WHERE TRUE{claimed}"
        ") AS source ON target.run_id = source.run_id "
        "AND target.scheduled_time BETWEEN @first_slot AND @last_slot "
        "WHEN NOT MATCHED THEN INSERT (run_id, config_id, tenant_id, pipeline_id, state, scheduled_time, "
        "priority, parameters, retry_count, max_retries, created_at, trigger_type, trigger_by) VALUES ("
        "source.run_id, source.config_id, source.tenant_id, source.pipeline_id, @queued, "
        "source.scheduled_time, source.priority, source.parameters, 0, @max_retries, @now, "
        "source.trigger_type, source.trigger_by)"
    )
    queue_sql = (
        f"MERGE {queue.table} AS target USING ("  # noqa: S608 - identifiers quoted, values parameters
        "SELECT r.run_id, r.tenant_id, r.pipeline_id, r.config_id, r.scheduled_time, r.priority "
        f"FROM {runs.table} AS r JOIN {configs.table} AS c ON c.config_id = r.config_id "
        "WHERE r.run_id IN UNNEST(@run_ids) AND r.state = @queued "
        f"AND r.scheduled_time BETWEEN @first_slot AND @last_slot{claimed}"
        ") AS source ON target.run_id = source.run_id "
        "AND target.scheduled_time BETWEEN @first_slot AND @last_slot "
        "WHEN NOT MATCHED THEN INSERT (run_id, tenant_id, pipeline_id, state, scheduled_time, priority, "
        "added_at, config_id, attempt) VALUES (source.run_id, source.tenant_id, source.pipeline_id, @queued, "
        "source.scheduled_time, source.priority, @now, source.config_id, 0)"
    )
    gateway = runs.gateway
    inserted = gateway.query(runs_sql, params).affected_rows or 0
    per_run = {"config_ids", "slots", "max_retries", "triggers", "trigger_bys", "overrides"}
    queue_params = [p for p in params if p.name not in per_run]
    gateway.query(queue_sql, queue_params)
    return inserted


def _json_or_empty(entry: EnqueueEntry) -> str:
    if entry.parameters is None:
        return ""
    return json.dumps(entry.parameters, ensure_ascii=False, allow_nan=False)


# --- the scheduler ------------------------------------------------------------------------------------
@dataclass
class SchedulerReport:
    """What one scheduler run found and did."""

    now: datetime
    dry_run: bool
    max_catch_up: int
    batches: int = 0
    configs_due: int = 0  # configs found due (or with an abandoned claim to finish)
    configs_claimed: int = 0  # claimed by this run
    configs_lost: int = 0  # claimed by another scheduler, or edited, between our read and our claim
    configs_recovered: int = 0  # abandoned claims of a dead scheduler that this run finished
    configs_invalid: list[str] = field(default_factory=list)  # unreadable cron or time zone: left alone
    slots_claimed: int = 0  # slots this run claimed for enqueueing
    slots_skipped: int = 0  # missed slots beyond the catch-up limit
    slots_skipped_inactive: int = 0  # due slots of tenants that may not run pipelines
    runs_enqueued: int = 0  # new runs written (less than slots_claimed only when some existed already)
    enqueued: list[tuple[str, datetime]] = field(default_factory=list)  # (config_id, slot), for output

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe summary (without the per-run list)."""
        return {
            "now": api_timestamp(self.now),
            "dry_run": self.dry_run,
            "max_catch_up": self.max_catch_up,
            "batches": self.batches,
            "configs_due": self.configs_due,
            "configs_claimed": self.configs_claimed,
            "configs_lost": self.configs_lost,
            "configs_recovered": self.configs_recovered,
            # The first ids only: a report (and its audit entry) stays small whatever the table holds.
            "configs_invalid": self.configs_invalid[:MAX_IDS_REPORTED],
            "configs_invalid_count": len(self.configs_invalid),
            "slots_claimed": self.slots_claimed,
            "slots_skipped": self.slots_skipped,
            "slots_skipped_inactive": self.slots_skipped_inactive,
            "runs_enqueued": self.runs_enqueued,
        }


@dataclass(frozen=True)
class _Plan:
    """What the scheduler means to do with one due config."""

    config: TenantPipelineConfig
    slots: list[datetime]  # to enqueue: pending ones of an abandoned claim, then newly due ones
    next_run_time: datetime | None
    skipped: int
    skipped_inactive: int
    recovered: bool


def scheduler_run(
    *,
    now: datetime | None = None,
    max_catch_up: int | None = None,
    dry_run: bool = False,
    batch_size: int | None = None,
) -> SchedulerReport:
    """Enqueue every due slot of every active config once and advance `next_run_time` (see module doc)."""
    now = (now or timezone.now()).astimezone(UTC)
    max_catch_up = settings.SCHEDULER_MAX_CATCH_UP if max_catch_up is None else max_catch_up
    batch_size = batch_size or settings.SCHEDULER_BATCH_SIZE
    if max_catch_up < 1:
        raise ValueError("max_catch_up must be at least 1")
    report = SchedulerReport(now=now, dry_run=dry_run, max_catch_up=max_catch_up)
    stale_before = now - timedelta(seconds=settings.SCHEDULER_CLAIM_TIMEOUT_SECONDS)
    after = ""
    # Many configs share a schedule and a next run time (hourly, daily at midnight): compute each
    # combination once per run. croniter costs about half a millisecond per step.
    due_slots = functools.lru_cache(maxsize=10_000)(
        functools.partial(_due_slots, now=now, max_catch_up=max_catch_up)
    )
    started = time.monotonic()
    with bigquery_errors_translated():
        while True:
            # One row more than a batch tells whether another batch follows, without a last empty read.
            rows = _due_configs(now=now, stale_before=stale_before, after=after, limit=batch_size + 1)
            more = len(rows) > batch_size
            rows = rows[:batch_size]
            if not rows:
                break
            report.batches += 1
            report.configs_due += len(rows)
            plans = [plan for row in rows if (plan := _plan(row, now, due_slots, report))]
            if not dry_run:
                # Each batch's claim is stamped when it is made (the run's clock plus the time spent so
                # far): stamping a late batch with the run's start would make it look stale to another
                # scheduler at once in a long run, which would then recover it mid-enqueue.
                claimed_at = now + timedelta(seconds=time.monotonic() - started)
                _claim_and_enqueue(plans, now, report, claimed_at=claimed_at)
            else:
                for plan in plans:
                    _count(report, plan)
            after = rows[-1][0].config_id
            if not more:
                break
        if not dry_run and report.configs_claimed:
            audit_record(
                action=AuditAction.SCHEDULER_RUN,
                actor=SCHEDULER_ACTOR,
                target_type="scheduler",
                after=report.as_dict(),
            )
    logger.info("scheduler run at %s: %s", now.isoformat(), report.as_dict())
    return report


def _due_configs(
    *, now: datetime, stale_before: datetime, after: str, limit: int
) -> list[tuple[TenantPipelineConfig, str | None, str | None, date | None]]:
    """One batch of claimable configs with their tenant's status and latest subscription (one job)."""
    configs = central_repository(TenantPipelineConfig)
    profiles = central_repository(TenantProfile)
    subscriptions = central_repository(TenantSubscription)
    columns = ", ".join(f"c.{quote_column(name)}" for name in configs.definition.column_names)
    # Claimable: due (or never computed) and active, or holding slots of an abandoned claim; never a
    # config whose claim is still fresh (its scheduler is at work on it).
    sql = (
        f"SELECT {columns}, p.status AS _tenant_status, s.status AS _subscription_status, "  # noqa: S608
        f"s.trial_end_date AS _trial_end_date FROM {configs.table} AS c "
        f"LEFT JOIN {profiles.table} AS p ON p.tenant_id = c.tenant_id "
        "LEFT JOIN (SELECT tenant_id, status, trial_end_date, "
        "ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY created_at DESC) AS n "
        f"FROM {subscriptions.table}) AS s ON s.tenant_id = c.tenant_id AND s.n = 1 "
        "WHERE c.config_id > @after "
        "AND (c.scheduler_pending_slots IS NULL OR c.scheduler_claimed_at IS NULL "
        "OR c.scheduler_claimed_at < @stale_before) "
        "AND ((c.is_active = TRUE AND (c.next_run_time IS NULL OR c.next_run_time <= @now)) "
        "OR c.scheduler_pending_slots IS NOT NULL) "
        "ORDER BY c.config_id LIMIT @limit"
    )
    params = [
        bigquery.ScalarQueryParameter("after", "STRING", after),
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
        bigquery.ScalarQueryParameter("stale_before", "TIMESTAMP", stale_before),
        bigquery.ScalarQueryParameter("limit", "INT64", limit),
    ]
    result = configs.gateway.query(sql, params)
    return [
        (
            TenantPipelineConfig(**{name: row.get(name) for name in configs.definition.column_names}),
            row.get("_tenant_status"),
            row.get("_subscription_status"),
            row.get("_trial_end_date"),
        )
        for row in result.rows
    ]


def _may_run(
    tenant_status: str | None, subscription_status: str | None, trial_end: date | None, now: datetime
) -> bool:
    if tenant_status not in WORKING_TENANT_STATUSES or subscription_status is None:
        return False
    subscription = TenantSubscription(status=subscription_status, trial_end_date=trial_end)
    return status_allows(
        subscription_effective_status(subscription=subscription, today=now.date()), OPERATION_RUN
    )


def _plan(
    row: tuple[TenantPipelineConfig, str | None, str | None, date | None],
    now: datetime,
    due_slots: Callable[..., tuple[list[datetime], datetime, int]],
    report: SchedulerReport,
) -> _Plan | None:
    config, tenant_status, subscription_status, trial_end = row
    pending = decode_slots(config.scheduler_pending_slots)
    recovered = bool(pending)
    next_run_time = config.next_run_time
    due: list[datetime] = []
    skipped = skipped_inactive = 0
    if config.is_active:
        try:
            first = None if config.next_run_time is None else config.next_run_time.astimezone(UTC)
            due, next_run_time, skipped = due_slots(config.schedule_cron, config.timezone or "UTC", first)
        except Exception as exc:
            logger.warning("config %s has an unusable schedule: %s", config.config_id, exc)
            report.configs_invalid.append(config.config_id)
            if not recovered:
                return None
            due, next_run_time = [], config.next_run_time
        if due and not _may_run(tenant_status, subscription_status, trial_end, now):
            skipped_inactive, due = len(due), []
    slots = sorted({*pending, *due})
    return _Plan(config, slots, next_run_time, skipped, skipped_inactive, recovered)


def _due_slots(
    expression: str, zone: str, first: datetime | None, *, now: datetime, max_catch_up: int
) -> tuple[list[datetime], datetime, int]:
    """(slots to enqueue, the next run time after them, missed slots skipped) for an active config
    whose next run time is `first`."""
    if first is not None and first > now:
        return [], first, 0
    following = next(cron_iter(expression=expression, timezone=zone, after=now))
    if first is None:
        # Never scheduled (a row from elsewhere): start from the next slot, do not backfill.
        return [], following, 0
    # The latest slots come from walking back from now, so a scheduler that stopped for months costs
    # no more than one that is a minute late; `first` itself is a slot even if the cron changed since.
    latest = cron_prev(expression=expression, timezone=zone, before=now, count=max_catch_up)
    kept = sorted({first, *(slot for slot in latest if slot > first)})[-max_catch_up:]
    skipped = 0
    if kept[0] > first:
        # Count the skipped ones, up to a bound (the report says "at least" that many beyond it).
        for slot in cron_iter(expression=expression, timezone=zone, after=first):
            if slot >= kept[0] or skipped >= MAX_SLOTS_COUNTED:
                break
            skipped += 1
        skipped += 1  # `first` itself
    return kept, following, skipped


def _count(report: SchedulerReport, plan: _Plan) -> None:
    report.configs_claimed += 1
    report.configs_recovered += int(plan.recovered)
    report.slots_claimed += len(plan.slots)
    report.slots_skipped += plan.skipped
    report.slots_skipped_inactive += plan.skipped_inactive
    report.enqueued.extend((plan.config.config_id, slot) for slot in plan.slots)


def _claim_and_enqueue(
    plans: list[_Plan], now: datetime, report: SchedulerReport, *, claimed_at: datetime
) -> None:
    if not plans:
        return
    configs = central_repository(TenantPipelineConfig)
    claim_id = uuid.uuid4().hex
    changes = [
        RowChange(
            plan.config.config_id,
            {"next_run_time": plan.next_run_time, "scheduler_pending_slots": encode_slots(plan.slots)},
            expected={
                "next_run_time": plan.config.next_run_time,
                "scheduler_claim_id": plan.config.scheduler_claim_id,
                "updated_at": plan.config.updated_at,
            },
        )
        for plan in plans
    ]
    claimed = configs.update_many(
        changes, shared={"scheduler_claim_id": claim_id, "scheduler_claimed_at": claimed_at}
    )
    report.configs_lost += len(plans) - claimed
    entries = [
        EnqueueEntry(scheduled_run_id(plan.config.config_id, slot), plan.config.config_id, slot)
        for plan in plans
        for slot in plan.slots
    ]
    inserted = runs_enqueue(entries=entries, now=now, claim_id=claim_id)
    # Which configs we won is known to the statements above (they joined on our claim id); for the
    # report, read it back only when some claim was lost.
    won = {plan.config.config_id for plan in plans}
    if claimed < len(plans):
        rows = configs.list(
            filters={"scheduler_claim_id": claim_id, "config_id__in": sorted(won)}, limit=len(plans)
        )
        won = {row.config_id for row in rows}
    configs.update_where(
        {"scheduler_pending_slots": None},
        filters={"scheduler_claim_id": claim_id, "config_id__in": sorted(won)},
    )
    report.runs_enqueued += inserted
    for plan in plans:
        if plan.config.config_id in won:
            _count(report, plan)
