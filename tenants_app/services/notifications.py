"""Telling tenants what happened: events raised where they happen, sent by webhook and email later.

`notify(event=..., tenant_id=..., data=...)` is safe on hot paths (claim and report ticks, quota
admission): it costs no BigQuery statement, only two operations on the shared cache, and never raises.
The event waits in an outbox in the cache; the periodic loop's `deliver_notifications` job
(`notifications_deliver`, every PERIODIC_NOTIFICATIONS_SECONDS) takes what arrived, emails each event
to the tenant's `admin_email` and delivers it to the tenant's webhook endpoints (services/
webhook_delivery.py), retrying failures with exponential backoff. Delivery is at least once: a tick
that dies after sending but before moving the outbox cursor sends its events again, with the same
event id, which receivers use to drop repeats.

The outbox: `notify` takes a sequence number with one atomic `incr` and writes the event under it;
the deliverer (one at a time, by a cache lock) reads the numbers after its cursor. A number taken but
not yet written is waited for a little (`_GAP_GRACE_SECONDS`), then skipped: its writer died.

Event data never holds a secret: ids, names, counts, dates, and error messages already masked.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import mail
from django.core.cache import cache
from django.utils import timezone

from tenants_app.models import (
    SubscriptionStatus,
    TenantApiKey,
    TenantProfile,
    TenantScheduledPipelineRun,
    TenantSubscription,
    TenantWebhookDelivery,
    TenantWebhookEndpoint,
)
from tenants_app.repositories import central_repository
from tenants_app.secrets import redact_secrets
from tenants_app.services.quota_rules import WARNING_PERCENT, at_warning
from tenants_app.services.webhook_delivery import (
    Event,
    Sender,
    deliveries_attempt,
    deliveries_build,
    deliveries_pending,
    deliveries_save,
    endpoints_active,
    http_send,
)
from tenants_app.timestamps import api_timestamp

logger = logging.getLogger(__name__)

QUOTA_WARNING = "quota.warning"  # 80% of the day's or month's runs used
QUOTA_EXCEEDED = "quota.exceeded"  # 100%: further runs are refused until the period ends
RUN_FAILED = "run.failed"  # a run failed for good (no retry left)
TRIAL_ENDING = "trial.ending"  # the trial ends in TRIAL_NOTICE_DAYS days
API_KEY_EXPIRING = "api_key.expiring"  # an API key expires in KEY_NOTICE_DAYS days
CREDENTIAL_INVALID = "credential.invalid"  # a cloud credential failed validation
TEST_EVENT = "webhook.test"  # "send test event": to one endpoint, never emailed
EVENT_TYPES: tuple[str, ...] = (
    QUOTA_WARNING,
    QUOTA_EXCEEDED,
    RUN_FAILED,
    TRIAL_ENDING,
    API_KEY_EXPIRING,
    CREDENTIAL_INVALID,
)
TRIAL_NOTICE_DAYS = 3
KEY_NOTICE_DAYS = 7

_SEQ = "notifications:outbox:seq"
_CURSOR = "notifications:outbox:cursor"
_LOCK = "notifications:outbox:lock"
_NEXT_RETRY = "notifications:next-retry"
_OUTBOX_TTL_SECONDS = 7 * 86_400
_GAP_GRACE_SECONDS = 30
_LOCK_SECONDS = 120
# A retry time forgotten with a cache restart is found again by a read at most this late.
_RETRY_SCAN_SECONDS = 300
_MAX_EVENTS_PER_TICK = 500
_MAX_RETRIES_PER_TICK = 200

_SUBJECTS = {
    QUOTA_WARNING: "{period} pipeline runs at {percent}% of your plan",
    QUOTA_EXCEEDED: "{period} pipeline run limit reached",
    RUN_FAILED: "Pipeline run {run_id} failed",
    TRIAL_ENDING: "Your trial ends on {trial_end_date}",
    API_KEY_EXPIRING: "API key {key_prefix}… expires on {expires_at}",
    CREDENTIAL_INVALID: "Cloud credential {credential_id} failed validation",
}


# --- raising events -------------------------------------------------------------------------------------
def _slot(number: int) -> str:
    return f"notifications:outbox:{number}"


def _event(
    event: str, tenant_id: str, data: Mapping[str, Any] | None, endpoint_id: str | None, now: datetime | None
) -> dict[str, Any]:
    when = now or timezone.now()
    return {
        "event_id": f"evt_{uuid.uuid4().hex}",
        "event_type": event,
        "tenant_id": tenant_id,
        "created": api_timestamp(when),
        "data": dict(data or {}),
        "endpoint_id": endpoint_id,
    }


def notify(
    *,
    event: str,
    tenant_id: str,
    data: Mapping[str, Any] | None = None,
    endpoint_id: str | None = None,
    now: datetime | None = None,
) -> str | None:
    """Queue one event (no BigQuery statement, never raises); its id, or None if the cache refused it."""
    item = _event(event, tenant_id, data, endpoint_id, now)
    try:
        cache.add(_SEQ, 0, timeout=None)
        number = cache.incr(_SEQ)
        cache.set(_slot(number), item, timeout=_OUTBOX_TTL_SECONDS)
    except Exception as exc:
        # An outage of the cache must not fail a run's report or a claim: the event is lost, said so.
        logger.warning("notification %s for tenant %s not queued: %s", event, tenant_id, type(exc).__name__)
        return None
    return str(item["event_id"])


def notify_quota_usage(*, tenant_id: str, period: str, used_before: int, used_after: int, limit: int) -> None:
    """`quota.warning` when runs cross WARNING_RATIO (80%) of `limit`; `quota.exceeded` when they reach it."""
    if limit <= 0 or used_after <= used_before:
        return
    data = {"period": period, "used": used_after, "limit": limit}
    if used_before < limit <= used_after:
        notify(event=QUOTA_EXCEEDED, tenant_id=tenant_id, data={**data, "percent": 100})
    elif not at_warning(used=used_before, limit=limit) and at_warning(used=used_after, limit=limit):
        notify(event=QUOTA_WARNING, tenant_id=tenant_id, data={**data, "percent": WARNING_PERCENT})


def notify_run_failed(*, run: TenantScheduledPipelineRun) -> None:
    """`run.failed` for a run that ended FAILED (retries exhausted, or failed for good)."""
    notify(
        event=RUN_FAILED,
        tenant_id=run.tenant_id,
        data={
            "run_id": run.run_id,
            "config_id": run.config_id,
            "pipeline_id": run.pipeline_id,
            "scheduled_time": api_timestamp(run.scheduled_time) if run.scheduled_time else None,
            "retry_count": run.retry_count,
            "error_message": redact_secrets(run.error_message or "")[:500] or None,
        },
    )


# --- the daily scan -------------------------------------------------------------------------------------
def notifications_daily_scan(*, now: datetime) -> tuple[int, int]:
    """Trials ending in 3 days and keys expiring in 7 (two reads); how many of each were notified."""
    trial_day = (now + timedelta(days=TRIAL_NOTICE_DAYS)).date()
    trials = central_repository(TenantSubscription).list(
        filters={"status": SubscriptionStatus.TRIAL, "trial_end_date": trial_day}
    )
    for subscription in trials:
        notify(
            event=TRIAL_ENDING,
            tenant_id=subscription.tenant_id,
            data={
                "subscription_id": subscription.subscription_id,
                "plan": subscription.plan_name,
                "trial_end_date": trial_day.isoformat(),
            },
            now=now,
        )
    start = now + timedelta(days=KEY_NOTICE_DAYS)
    keys = central_repository(TenantApiKey).list(
        filters={
            "is_active": True,
            "revoked_at__isnull": True,
            "expires_at__gte": start,
            "expires_at__lt": start + timedelta(days=1),
        },
        fields=["tenant_id", "name", "key_prefix", "expires_at"],
    )
    for key in keys:
        notify(
            event=API_KEY_EXPIRING,
            tenant_id=key.tenant_id,
            data={
                "api_key_id": key.api_key_id,
                "name": key.name,
                "key_prefix": key.key_prefix,
                "expires_at": api_timestamp(key.expires_at) if key.expires_at else None,
            },
            now=now,
        )
    return len(trials), len(keys)


# --- the delivery tick ----------------------------------------------------------------------------------
@dataclass
class DeliveryReport:
    """What one tick did: events taken from the outbox, emails sent, webhook attempts by outcome."""

    events: int = 0
    emails: int = 0
    attempts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        outcomes = ", ".join(f"{n} {status.lower()}" for status, n in sorted(self.attempts.items()))
        return f"{self.events} event(s), {self.emails} email(s), webhook attempts: {outcomes or 'none'}"


def notifications_deliver(*, now: datetime, send: Sender = http_send) -> DeliveryReport:
    """Take the outbox, email its events, and attempt new and due deliveries (one tick, one host)."""
    report = DeliveryReport()
    token = uuid.uuid4().hex
    if not cache.add(_LOCK, token, timeout=_LOCK_SECONDS):
        return report  # another host is delivering right now
    try:
        numbers, events = _outbox_take(now)
        report.events = len(events)
        new = deliveries_build(
            events=events, endpoints=endpoints_active(tenant_ids={e.tenant_id for e in events}), now=now
        )
        due = _due_retries(now, exclude={row.delivery_id for row in new})
        endpoints = _endpoints_of([*new, *due])
        attempted = deliveries_attempt(deliveries=[*new, *due], endpoints=endpoints, now=now, send=send)
        new_done, due_done = attempted[: len(new)], attempted[len(new) :]
        deliveries_save(
            new=new_done, attempted=[(row.attempts, done) for row, done in zip(due, due_done, strict=True)]
        )
        _outbox_commit(numbers)
        _remember_next_retry(attempted, now)
        report.emails = _email([e for e in events if e.event_type != TEST_EVENT])
        for row in attempted:
            report.attempts[row.status] = report.attempts.get(row.status, 0) + 1
    finally:
        # Only our own lock: past _LOCK_SECONDS another host may hold it rightfully.
        if cache.get(_LOCK) == token:
            cache.delete(_LOCK)
    return report


def _outbox_take(now: datetime) -> tuple[list[int], list[Event]]:
    head = int(cache.get(_SEQ) or 0)
    cursor = int(cache.get(_CURSOR) or 0)
    numbers = list(range(cursor + 1, min(head, cursor + _MAX_EVENTS_PER_TICK) + 1))
    found = cache.get_many([_slot(n) for n in numbers])
    taken: list[int] = []
    events: list[Event] = []
    for number in numbers:
        item = found.get(_slot(number))
        if item is None and not _gap_expired(number, now):
            break
        taken.append(number)
        if item is not None:
            events.append(Event(**item))
    return taken, events


def _gap_expired(number: int, now: datetime) -> bool:
    """A number taken but never written: waited for a while, then skipped."""
    key = f"notifications:outbox:gap:{number}"
    cache.add(key, now.timestamp(), timeout=_OUTBOX_TTL_SECONDS)
    return now.timestamp() - float(cache.get(key, now.timestamp())) >= _GAP_GRACE_SECONDS


def _outbox_commit(numbers: Sequence[int]) -> None:
    if numbers:
        cache.set(_CURSOR, numbers[-1], timeout=None)
        cache.delete_many([_slot(n) for n in numbers])


def _due_retries(now: datetime, *, exclude: set[str]) -> list[TenantWebhookDelivery]:
    """Due retries, read only once one is due by the remembered time (or that time was lost)."""
    next_retry = cache.get(_NEXT_RETRY)
    if next_retry is not None and float(next_retry) > now.timestamp():
        return []
    pending = deliveries_pending(limit=_MAX_RETRIES_PER_TICK + 1)
    due = [row for row in pending if row.next_attempt_at is None or row.next_attempt_at <= now]
    later = [
        row.next_attempt_at.timestamp()
        for row in pending
        if row.next_attempt_at and row.next_attempt_at > now
    ]
    if len(pending) > _MAX_RETRIES_PER_TICK:
        later.append(now.timestamp())  # more are due than one tick takes: read again next tick
    # The earliest retry still waiting, read in the same statement: no read before it is due.
    cache.set(_NEXT_RETRY, min([*later, now.timestamp() + _RETRY_SCAN_SECONDS]), timeout=None)
    return [row for row in due if row.delivery_id not in exclude][:_MAX_RETRIES_PER_TICK]


def _remember_next_retry(rows: Sequence[TenantWebhookDelivery], now: datetime) -> None:
    times = [row.next_attempt_at.timestamp() for row in rows if row.next_attempt_at is not None]
    current = cache.get(_NEXT_RETRY)
    earliest = min([*times, float(current) if current is not None else now.timestamp() + _RETRY_SCAN_SECONDS])
    cache.set(_NEXT_RETRY, earliest, timeout=None)


def _endpoints_of(rows: Sequence[TenantWebhookDelivery]) -> dict[str, TenantWebhookEndpoint]:
    ids = sorted({row.endpoint_id for row in rows})
    if not ids:
        return {}
    found = central_repository(TenantWebhookEndpoint).list(filters={"endpoint_id__in": ids})
    return {row.endpoint_id: row for row in found}


# --- email ----------------------------------------------------------------------------------------------
def _email(events: Sequence[Event]) -> int:
    """One email per event to its tenant's admin_email (one read, one connection); how many went."""
    if not events:
        return 0
    profiles = central_repository(TenantProfile).list(
        filters={"tenant_id__in": sorted({e.tenant_id for e in events})},
        fields=["admin_email", "company_name"],
    )
    emails = {profile.tenant_id: profile.admin_email for profile in profiles if profile.admin_email}
    messages = [
        mail.EmailMessage(
            subject=_subject(e),
            body=_body(e),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[emails[e.tenant_id]],
        )
        for e in events
        if e.tenant_id in emails
    ]
    try:
        return int(mail.get_connection().send_messages(messages) or 0)
    except Exception as exc:
        # Webhooks went already; mail is not retried (its backend has its own queue, if any).
        logger.warning("notification emails not sent: %s", type(exc).__name__)
        return 0


def _subject(event: Event) -> str:
    values = {"period": str(event.data.get("period", "")).capitalize(), **event.data}
    try:
        return _SUBJECTS[event.event_type].format(**values)
    except (KeyError, IndexError):
        return f"Convergence: {event.event_type}"


def _body(event: Event) -> str:
    lines = [f"Event: {event.event_type}", f"Tenant: {event.tenant_id}", f"When: {event.created}", ""]
    lines += [f"{name}: {value}" for name, value in sorted(event.data.items())]
    lines += ["", f"Event id: {event.event_id}"]
    return "\n".join(lines)
