"""What every subscription change shares: its audit entry (and the check that finds a change whose
entry a failed request never wrote), the refusal of a CANCELLED subscription, a copy with new values,
and today's usage row's copy of the pipeline limits.

The changes themselves: subscription_plan_change.py, subscription_overrides.py, subscription_status.py,
and subscriptions.subscription_update for several at once.
"""

from __future__ import annotations

from datetime import UTC, date
from typing import Any

from django.utils import timezone

from tenants_app.models import AuditLogEntry, SubscriptionStatus, TenantSubscription, TenantUsageQuota
from tenants_app.repositories import central_repository
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.errors import SubscriptionCancelled
from tenants_app.services.onboarding import usage_id_for
from tenants_app.services.subscription_selectors import LIMIT_FIELDS

# Audit actions of the writes that set `updated_at` on a subscription.
SUBSCRIPTION_ACTIONS = (
    AuditAction.SUBSCRIPTION_PLAN_CHANGE,
    AuditAction.SUBSCRIPTION_LIMITS_CHANGE,
    AuditAction.SUBSCRIPTION_STATUS_CHANGE,
    AuditAction.SUBSCRIPTION_TRIAL_EXPIRE,
)


def subscription_audit(
    action: AuditAction,
    actor: str,
    subscription: TenantSubscription,
    *,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """Record one change of `subscription` (one DML)."""
    audit_record(
        action=action,
        actor=actor,
        tenant_id=subscription.tenant_id,
        target_type="subscription",
        target_id=subscription.subscription_id,
        before=before,
        after=after,
    )


def subscription_change_unrecorded(subscription: TenantSubscription) -> bool:
    """The subscription's last write has no audit entry (one job; only when a request changes nothing)."""
    if subscription.updated_at is None:
        return False
    recorded = central_repository(AuditLogEntry).count(
        filters={
            "tenant_id": subscription.tenant_id,
            "target_id": subscription.subscription_id,
            "action__in": list(SUBSCRIPTION_ACTIONS),
            "occurred_at__gte": subscription.updated_at,
        }
    )
    return recorded == 0


def utc_today() -> date:
    return timezone.now().astimezone(UTC).date()


def subscription_require_changeable(subscription: TenantSubscription) -> None:
    # A 409, not a 400: nothing in the request is wrong, the subscription's state refuses every change.
    if subscription.status == SubscriptionStatus.CANCELLED:
        raise SubscriptionCancelled(
            "The subscription is CANCELLED, which is final (its tenant was offboarded or it was "
            "cancelled): its plan, limits and status no longer change; onboard the customer again."
        )


def limit_snapshot(subscription: TenantSubscription) -> dict[str, Any]:
    names = ("plan_name", *LIMIT_FIELDS, "max_pipelines_per_day")
    return {name: getattr(subscription, name) for name in names}


def subscription_with(subscription: TenantSubscription, values: dict[str, Any]) -> TenantSubscription:
    copy = TenantSubscription(
        **{f.attname: getattr(subscription, f.attname) for f in subscription._meta.fields}
    )
    for name, value in values.items():
        setattr(copy, name, value)
    return copy


def usage_limits_sync(tenant_id: str, subscription: TenantSubscription) -> None:
    """Today's usage row shows the new pipeline limits at once (admission writes them back anyway)."""
    central_repository(TenantUsageQuota).update_where(
        {
            "daily_limit": subscription.daily_limit,
            "monthly_limit": subscription.monthly_limit,
            "concurrent_limit": subscription.concurrent_limit,
            "last_updated": timezone.now(),
        },
        filters={"usage_id": usage_id_for(tenant_id, utc_today())},
    )
