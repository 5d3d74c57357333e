"""Read a tenant's subscription and usage (changes to plans and quotas come with the quota issue)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tenants_app.models import TenantSubscription, TenantUsageQuota
from tenants_app.repositories import central_repository
from tenants_app.services.errors import DoesNotExist, ValidationFailed

MAX_USAGE_DAYS = 90


def subscription_get(*, tenant_id: str) -> TenantSubscription:
    """The tenant's newest subscription (one job)."""
    rows = central_repository(TenantSubscription).list(
        filters={"tenant_id": tenant_id}, order_by=("-created_at",), limit=1
    )
    if not rows:
        raise DoesNotExist(f"tenant {tenant_id!r} has no subscription")
    return rows[0]


def usage_list(*, tenant_id: str, days: int = 30) -> list[TenantUsageQuota]:
    """Daily usage rows of the last `days` days, newest first (one job)."""
    if not 1 <= days <= MAX_USAGE_DAYS:
        raise ValidationFailed("invalid period", errors={"days": [f"Use 1 to {MAX_USAGE_DAYS}."]})
    since = timezone.now().date() - timedelta(days=days - 1)
    return central_repository(TenantUsageQuota).list(
        filters={"tenant_id": tenant_id, "usage_date__gte": since}, order_by=("-usage_date",), limit=days
    )
