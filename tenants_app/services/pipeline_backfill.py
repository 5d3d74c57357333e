"""Backfill: enqueue a config's slots of a bounded, past date range again, recorded as a backfill.

The range is whole days in the config's own time zone (the days its cron is read in), at most
MAX_BACKFILL_DAYS long and MAX_BACKFILL_RUNS slots, and never beyond now: future slots are the
scheduler's. Each slot gets `backfill_run_id(config_id, slot)`, apart from the slot's scheduled run,
so a backfill re-runs a day that already ran; the ids are deterministic, so repeating the same backfill
adds nothing. One call is the same 2 statements as "run now" whatever the number of slots, plus one
audit entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import takewhile
from zoneinfo import ZoneInfo

from django.utils import timezone

from tenants_app.models import RunTrigger
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.cron import cron_iter
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.pipelines import pipeline_config_get
from tenants_app.services.plans import OPERATION_RUN
from tenants_app.services.quotas import subscription_require_active
from tenants_app.services.scheduler import EnqueueEntry, backfill_run_id, runs_enqueue

MAX_BACKFILL_DAYS = 31
MAX_BACKFILL_RUNS = 100


@dataclass(frozen=True)
class Backfill:
    """What a backfill enqueued: every slot of the range (as run ids) and how many were new."""

    config_id: str
    start_date: date
    end_date: date
    run_ids: list[str]
    created: int


def pipeline_config_backfill(
    *,
    tenant_id: str,
    config_id: str,
    start_date: date,
    end_date: date,
    actor: str,
    now: datetime | None = None,
) -> Backfill:
    """Enqueue every slot of the config from `start_date` to `end_date` (inclusive, its time zone)."""
    now = now or timezone.now()
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    zone = config.timezone or "UTC"
    slots = _slots(config.schedule_cron, zone, start_date, end_date, now=now)
    entries = [
        EnqueueEntry(backfill_run_id(config_id, slot), config_id, slot, RunTrigger.BACKFILL, trigger_by=actor)
        for slot in slots
    ]
    with bigquery_errors_translated():
        subscription_require_active(tenant_id=tenant_id, operation=OPERATION_RUN)
        created = runs_enqueue(entries=entries, now=now)
        if created:
            audit_record(
                action=AuditAction.RUN_ENQUEUE_BACKFILL,
                actor=actor,
                tenant_id=tenant_id,
                target_type="pipeline_config",
                target_id=config_id,
                after={
                    "start_date": start_date.isoformat(),
                    "end_date": end_date.isoformat(),
                    "slots": len(entries),
                    "runs_enqueued": created,
                },
            )
    return Backfill(
        config_id=config_id,
        start_date=start_date,
        end_date=end_date,
        run_ids=[entry.run_id for entry in entries],
        created=created,
    )


def _slots(expression: str, zone: str, start: date, end: date, *, now: datetime) -> list[datetime]:
    """The slots of the range up to now; ValidationFailed naming the field that makes it unbounded."""
    local_today = now.astimezone(ZoneInfo(zone)).date()
    if end < start:
        raise _invalid("end_date", "Must not be before start_date.")
    if end > local_today:
        raise _invalid("end_date", f"Must not be after today ({local_today.isoformat()} in {zone}).")
    if (end - start).days + 1 > MAX_BACKFILL_DAYS:
        raise _invalid("start_date", f"Backfill at most {MAX_BACKFILL_DAYS} days at a time.")
    first = datetime.combine(start, time.min, tzinfo=ZoneInfo(zone))
    after_end = datetime.combine(end + timedelta(days=1), time.min, tzinfo=ZoneInfo(zone))
    # A second before midnight: cron_iter yields slots strictly after it, and slots are whole minutes.
    slots = takewhile(
        lambda slot: slot < after_end and slot <= now,
        cron_iter(expression=expression, timezone=zone, after=first - timedelta(seconds=1)),
    )
    found = [slot for _, slot in zip(range(MAX_BACKFILL_RUNS + 1), slots, strict=False)]
    if len(found) > MAX_BACKFILL_RUNS:
        raise _invalid(
            "end_date", f"The range holds more than {MAX_BACKFILL_RUNS} runs of this schedule: shorten it."
        )
    if not found:
        raise _invalid("start_date", "The schedule has no run in this range.")
    return found


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors={field: [message]})
