"""Reading a subscription and the limits in force: the subscription, its usage rows, its effective
status (a TRIAL past its end is EXPIRED) and limits (its columns, the plan's figure where empty), and
those limits from the shared cache.

How limits are stored and changed is in subscriptions.py's docstring.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from tenants_app.models import SubscriptionStatus, TenantSubscription, TenantUsageQuota
from tenants_app.repositories import central_repository
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.generations import bump, generations, tenant_subject
from tenants_app.services.plans import Plan, plan_get

MAX_USAGE_DAYS = 90


# Pipeline limits live in NOT NULL columns; the others are NULL unless overridden.
PIPELINE_LIMITS = ("daily_limit", "monthly_limit", "concurrent_limit")


OPTIONAL_LIMITS = ("max_providers", "api_calls_per_minute", "api_calls_per_hour")


LIMIT_FIELDS = PIPELINE_LIMITS + OPTIONAL_LIMITS


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits that apply to a tenant now, and which of them differ from its plan's figures."""

    plan_name: str
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int
    max_providers: int
    api_calls_per_minute: int
    api_calls_per_hour: int
    overridden: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


# Which of a tenant's subscription rows is in force: the newest (BigQuery has no unique constraint).
NEWEST_SUBSCRIPTION_FIRST = ("-created_at", "subscription_id")


def subscription_get(*, tenant_id: str) -> TenantSubscription:
    """The tenant's newest subscription (one job)."""
    rows = central_repository(TenantSubscription).list(
        filters={"tenant_id": tenant_id}, order_by=NEWEST_SUBSCRIPTION_FIRST, limit=1
    )
    if not rows:
        raise DoesNotExist(f"tenant {tenant_id!r} has no subscription")
    return rows[0]


def subscriptions_newest(*, tenant_ids: Iterable[str]) -> dict[str, TenantSubscription]:
    """Each tenant's newest subscription by tenant id, for many tenants in one job (none: absent)."""
    ids = sorted(set(tenant_ids))
    if not ids:
        return {}
    newest: dict[str, TenantSubscription] = {}
    rows = central_repository(TenantSubscription).list(
        filters={"tenant_id__in": ids}, order_by=("tenant_id", *NEWEST_SUBSCRIPTION_FIRST)
    )
    for row in rows:
        newest.setdefault(row.tenant_id, row)
    return newest


def usage_list(*, tenant_id: str, days: int = 30) -> list[TenantUsageQuota]:
    """Daily usage rows of the last `days` days, newest first (one job)."""
    if not 1 <= days <= MAX_USAGE_DAYS:
        raise ValidationFailed("invalid period", errors={"days": [f"Use 1 to {MAX_USAGE_DAYS}."]})
    since = timezone.now().date() - timedelta(days=days - 1)
    return central_repository(TenantUsageQuota).list(
        filters={"tenant_id": tenant_id, "usage_date__gte": since}, order_by=("-usage_date",), limit=days
    )


def subscription_effective_status(*, subscription: TenantSubscription, today: date | None = None) -> str:
    """The status that applies today: a TRIAL past its `trial_end_date` is EXPIRED."""
    today = today or timezone.now().astimezone(UTC).date()
    if (
        subscription.status == SubscriptionStatus.TRIAL
        and subscription.trial_end_date is not None
        and subscription.trial_end_date < today
    ):
        return SubscriptionStatus.EXPIRED
    return subscription.status


def subscription_effective_limits(
    *, subscription: TenantSubscription | None = None, tenant_id: str | None = None
) -> EffectiveLimits:
    """The limits in force: the subscription's columns, the plan's figure where a column is empty."""
    if subscription is None:
        if tenant_id is None:
            raise TypeError("give a subscription or a tenant_id")
        subscription = subscription_get(tenant_id=tenant_id)
    plan = plan_get(subscription.plan_name)
    values: dict[str, int] = {}
    overridden = []
    for name in LIMIT_FIELDS:
        own = getattr(subscription, name)
        values[name] = int(own) if own is not None else getattr(plan, name)
        if values[name] != getattr(plan, name):
            overridden.append(name)
    return EffectiveLimits(plan_name=plan.name, overridden=tuple(overridden), **values)


def subscription_limits_cached(*, tenant_id: str) -> EffectiveLimits:
    """The effective limits from the shared cache (one BigQuery job per tenant and period), current in
    every process at once after a change made through the services (generations.py)."""
    subject = tenant_subject(tenant_id)
    current, found = generations([subject], also=[_limits_cache_key(tenant_id)])
    cached = found.get(_limits_cache_key(tenant_id))
    if cached is not None and cached["generation"] == current[subject]:
        return cached["limits"]
    limits = subscription_effective_limits(tenant_id=tenant_id)
    entry = {"generation": current[subject], "limits": limits}
    cache.set(_limits_cache_key(tenant_id), entry, settings.API_RATE_LIMIT_CACHE_SECONDS)
    return limits


def subscription_limits_forget(*, tenant_id: str) -> None:
    """The limits changed: cached limits (and profiles, key verifications) of the tenant are stale."""
    bump(tenant_subject(tenant_id))


def plan_limits(plan: Plan) -> EffectiveLimits:
    """A plan's own figures, as the limits a tenant gets right after choosing it."""
    return EffectiveLimits(plan_name=plan.name, **{name: getattr(plan, name) for name in LIMIT_FIELDS})


def _limits_cache_key(tenant_id: str) -> str:
    return f"cvg:limits:v2:{tenant_id}"
