"""A subscription's lifecycle: status changes along the allowed transitions, cancellation, and the
expiry of trials past their last day (written down by `roll_over_usage`).

What each state allows is `plans.LIFECYCLE_RULES`; the transitions are `plans.STATUS_TRANSITIONS`.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from django.utils import timezone

from tenants_app.models import AuditLogEntry, SubscriptionStatus, TenantSubscription
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import (
    AuditAction,
    actor_type_of,
    audit_changes,
    audit_redact,
    current_audit_context,
)
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.plans import STATUS_TRANSITIONS, TRIAL_DAYS
from tenants_app.services.subscription_changes import (
    subscription_audit,
    subscription_change_unrecorded,
    subscription_require_changeable,
    utc_today,
)
from tenants_app.services.subscription_selectors import subscription_effective_status, subscription_get

MAX_TRIAL_DAYS = 366


def subscription_set_status(
    *, tenant_id: str, status: str, actor: str, trial_end_date: date | None = None
) -> TenantSubscription:
    """Change the subscription's state along the allowed transitions; audited. TRIAL takes an end date.

    The same state again is a no-op (200), except TRIAL with a new end date, which extends the trial.
    """
    today = utc_today()
    trial_end_date = status_input_check(status, trial_end_date, today)
    with bigquery_errors_translated():
        subscription = subscription_get(tenant_id=tenant_id)
        values = status_change_values(subscription, status, trial_end_date, today)
        if values:
            status_change_apply(tenant_id, subscription, values, actor)
    return subscription


def status_input_check(status: str, trial_end_date: date | None, today: date) -> date | None:
    """The status request on its own (no read): a known state; a trial end date only for TRIAL, in range."""
    if status not in SubscriptionStatus.values:
        raise ValidationFailed(
            f"unknown status {status!r}",
            errors={"status": [f"Choose one of {', '.join(SubscriptionStatus.values)}."]},
        )
    if trial_end_date is not None and status != SubscriptionStatus.TRIAL:
        raise ValidationFailed(
            "a trial end date needs status TRIAL", errors={"trial_end_date": ["Only with status TRIAL."]}
        )
    if status == SubscriptionStatus.TRIAL:
        trial_end_date = trial_end_date or today + timedelta(days=TRIAL_DAYS - 1)
        if not today <= trial_end_date <= today + timedelta(days=MAX_TRIAL_DAYS):
            raise ValidationFailed(
                "invalid trial end date",
                errors={"trial_end_date": [f"Use a day from today to {MAX_TRIAL_DAYS} days ahead."]},
            )
    return trial_end_date


def status_change_values(
    subscription: TenantSubscription, status: str, trial_end_date: date | None, today: date
) -> dict[str, Any]:
    """The columns a status change writes (empty: nothing to do); ValidationFailed if not allowed."""
    current = subscription_effective_status(subscription=subscription, today=today)
    if status != SubscriptionStatus.CANCELLED:
        subscription_require_changeable(subscription)
    values: dict[str, Any] = {}
    if status == current == subscription.status:
        if status != SubscriptionStatus.TRIAL or trial_end_date == subscription.trial_end_date:
            return {}
        values["trial_end_date"] = trial_end_date
        return values
    allowed = STATUS_TRANSITIONS.get(current, frozenset())
    if status != current and status not in allowed:
        targets = ", ".join(sorted(allowed)) or "none (final)"
        raise ValidationFailed(
            f"cannot change a {current} subscription to {status}",
            errors={"status": [f"Subscription is {current}; allowed: {targets}."]},
        )
    values["status"] = status
    if status == SubscriptionStatus.TRIAL:
        values["trial_end_date"] = trial_end_date
    if status == SubscriptionStatus.CANCELLED:
        values["subscription_end_date"] = today
    return values


def status_change_apply(
    tenant_id: str, subscription: TenantSubscription, values: dict[str, Any], actor: str
) -> None:
    """Write checked status `values` (conditional on the status read, updated in place); audited."""
    before = {name: getattr(subscription, name) for name in ("status", *values)}
    values = {**values, "updated_at": timezone.now()}
    # Conditional on the stored status we read: concurrent changes cannot both apply.
    matched = central_repository(TenantSubscription).update_where(
        values,
        filters={"subscription_id": subscription.subscription_id, "status": subscription.status},
    )
    if matched == 0:
        raise ValidationFailed(
            "the subscription changed meanwhile; reload", errors={"status": ["Changed meanwhile."]}
        )
    for name, value in values.items():
        setattr(subscription, name, value)
    after = {name: getattr(subscription, name) for name in before}
    old, new = audit_changes(before, after)
    subscription_audit(AuditAction.SUBSCRIPTION_STATUS_CHANGE, actor, subscription, before=old, after=new)


def subscription_cancel(*, tenant_id: str, actor: str) -> TenantSubscription | None:
    """Cancel the tenant's subscription for good (offboarding); audited; None if it never had one.

    Idempotent: a cancelled one stays as it is, except that the repeat of a cancellation whose answer
    was lost after its UPDATE landed records the entry that request could not.
    """
    with bigquery_errors_translated():
        rows = central_repository(TenantSubscription).list(
            filters={"tenant_id": tenant_id}, order_by=("-created_at",), limit=1
        )
        if not rows:
            return None
        subscription = rows[0]
        if subscription.status != SubscriptionStatus.CANCELLED:
            values = status_change_values(subscription, SubscriptionStatus.CANCELLED, None, utc_today())
            status_change_apply(tenant_id, subscription, values, actor)
        elif subscription_change_unrecorded(subscription):
            after = {"status": subscription.status, "finished_by_retry": True}
            subscription_audit(
                AuditAction.SUBSCRIPTION_STATUS_CHANGE, actor, subscription, before=None, after=after
            )
    return subscription


def subscription_expire_trials(*, today: date, actor: str, dry_run: bool = False) -> list[str]:
    """Write EXPIRED on every TRIAL whose last day is before `today`; the tenants changed (audited).

    A constant number of statements whatever the number of tenants: one read, one conditional UPDATE,
    one read of what this call changed (its own `updated_at` stamp tells it from a concurrent run's),
    one audit INSERT. Safe to run twice or concurrently: a trial is expired, and recorded, once.
    """
    repository = central_repository(TenantSubscription)
    with bigquery_errors_translated():
        due = repository.list(
            filters={"status": SubscriptionStatus.TRIAL, "trial_end_date__lt": today},
            order_by=("tenant_id",),
        )
        if dry_run or not due:
            return sorted({row.tenant_id for row in due})
        ids = [row.subscription_id for row in due]
        stamp = timezone.now()
        repository.update_where(
            {"status": SubscriptionStatus.EXPIRED, "updated_at": stamp},
            filters={"subscription_id__in": ids, "status": SubscriptionStatus.TRIAL},
        )
        changed = repository.list(
            filters={"subscription_id__in": ids, "status": SubscriptionStatus.EXPIRED, "updated_at": stamp}
        )
        by_id = {row.subscription_id: row for row in due}
        _audit_many(
            action=AuditAction.SUBSCRIPTION_TRIAL_EXPIRE,
            actor=actor,
            rows=[
                (
                    row.tenant_id,
                    row.subscription_id,
                    {
                        "status": SubscriptionStatus.TRIAL,
                        "trial_end_date": by_id[row.subscription_id].trial_end_date,
                    },
                    {"status": SubscriptionStatus.EXPIRED},
                )
                for row in changed
            ],
        )
    return sorted({row.tenant_id for row in changed})


def _audit_many(
    *, action: AuditAction, actor: str, rows: list[tuple[str, str, dict[str, Any], dict[str, Any]]]
) -> None:
    """One audit entry per (tenant, subscription, before, after), all in one INSERT."""
    if not rows:
        return
    context = current_audit_context()
    now = timezone.now()
    entries = [
        AuditLogEntry(
            audit_id=uuid.uuid4().hex,
            occurred_at=now,
            actor=actor,
            actor_type=actor_type_of(actor),
            source=context.source,
            action=str(action),
            tenant_id=tenant_id,
            target_type="subscription",
            target_id=target_id,
            before_values=audit_redact(before),
            after_values=audit_redact(after),
            request_id=context.request_id,
        )
        for tenant_id, target_id, before, after in rows
    ]
    central_repository(AuditLogEntry).insert(*entries)
