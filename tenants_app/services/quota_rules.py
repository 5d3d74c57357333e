"""The quota rules shared by single-run admission (quotas.py), batched admission (quota_batches.py) and
the day's usage rows (usage_rows.py): which UTC day counts a run, who may run at all, which limit blocks
and until when, and how a usage-row statement is sent.

Nothing here writes by itself: the statements that apply these rules live in quota_batches.py (admit,
release) and usage_rows.py (create the day's rows, roll over, count API calls).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.utils import timezone

from tenants_app.models import WORKING_TENANT_STATUSES, TenantSubscription, TenantUsageQuota
from tenants_app.repositories import central_repository
from tenants_app.services.errors import DoesNotExist, QuotaExceeded, SubscriptionInactive, TenantNotActive
from tenants_app.services.plans import status_allows
from tenants_app.services.subscription_selectors import EffectiveLimits, subscription_effective_status

DAILY = "daily"
MONTHLY = "monthly"
CONCURRENT = "concurrent"
# A full concurrent limit frees up when a run ends: tell the client to come back soon, not at midnight.
CONCURRENT_RETRY_AFTER_SECONDS = 30
WARNING_RATIO = (4, 5)  # 80%: warn when used * 5 >= limit * 4 (integers, no float rounding)
# The same share as a percentage, for people (labels, notifications) and for SVG geometry.
WARNING_PERCENT = 100 * WARNING_RATIO[0] // WARNING_RATIO[1]
WARNING_SHARE = WARNING_RATIO[0] / WARNING_RATIO[1]


def limit_stops_work(*, used: int, limit: int | None, waiting: int | None = None) -> bool:
    """Whether a limit is worth flagging: a daily or monthly count at WARNING_RATIO or more, or (when
    `waiting` is given: the concurrent limit) every slot taken while runs of the tenant wait for one.

    A STARTER tenant running its one allowed run with nothing queued is not held back, so it is not
    flagged. The quota dashboard applies the same rule in SQL (dashboard._pressure_sql).
    """
    if not limit:
        return False
    if waiting is not None:
        return used >= limit and waiting > 0
    return at_warning(used=used, limit=limit)


def at_warning(*, used: int, limit: int | None) -> bool:
    """Whether `used` has reached WARNING_RATIO of `limit` (integers: 4 of 5 is exactly 80%)."""
    return bool(limit) and used * WARNING_RATIO[1] >= limit * WARNING_RATIO[0]


def quota_day(now: datetime | None = None) -> date:
    """The UTC day whose usage row counts a run admitted at `now`."""
    return (now or timezone.now()).astimezone(UTC).date()


def check_allowed(
    tenant_id: str, subscription: TenantSubscription, tenant_status: str | None, operation: str, day: date
) -> None:
    """Raise DoesNotExist, TenantNotActive or SubscriptionInactive unless the tenant may `operation`."""
    if tenant_status is None:
        raise DoesNotExist(f"tenant {tenant_id!r} does not exist")
    if tenant_status not in WORKING_TENANT_STATUSES:
        raise TenantNotActive(f"tenant {tenant_id} is {tenant_status.lower()}: it cannot {operation}")
    status = subscription_effective_status(subscription=subscription, today=day)
    if not status_allows(status, operation):
        detail = ""
        if status != subscription.status:
            detail = f" (its trial ended on {subscription.trial_end_date})"
        raise SubscriptionInactive(
            f"the subscription of tenant {tenant_id} is {status}{detail}: {operation} is not allowed"
        )


def limit_exceeded(row: TenantUsageQuota, limits: EffectiveLimits, now: datetime) -> QuotaExceeded | None:
    """The limit that blocks (the one that blocks longest first), or None when the row has room."""
    figures = _figures(row, limits)
    if row.pipelines_run_month >= limits.monthly_limit:
        limit, used, retry_after = MONTHLY, row.pipelines_run_month, _seconds_to_next_month(now)
    elif row.pipelines_run_today >= limits.daily_limit:
        limit, used, retry_after = DAILY, row.pipelines_run_today, _seconds_to_midnight(now)
    elif row.concurrent_pipelines_running >= limits.concurrent_limit:
        limit, used, retry_after = (
            CONCURRENT,
            row.concurrent_pipelines_running,
            CONCURRENT_RETRY_AFTER_SECONDS,
        )
    else:
        return None
    allowed = getattr(limits, f"{limit}_limit")
    return QuotaExceeded(
        f"{limit} pipeline-run limit reached ({used} of {allowed}); retry in {retry_after} s",
        limit=limit,
        figures=figures,
        retry_after=retry_after,
    )


def run_usage_dml(sql: str, params: list[Any]) -> int:
    """Run one DML statement on the usage table; the rows it matched.

    A concurrent-update abort (real BigQuery, when another statement changed the same table) is
    retried by the gateway's policy: our conditional statements are safe to run again.
    """
    gateway = central_repository(TenantUsageQuota).gateway
    return gateway.query(sql, params).affected_rows or 0


def _figures(row: TenantUsageQuota, limits: EffectiveLimits) -> dict[str, int | None]:
    return {
        "pipelines_run_today": row.pipelines_run_today,
        "pipelines_run_month": row.pipelines_run_month,
        "concurrent_pipelines_running": row.concurrent_pipelines_running,
        "daily_limit": limits.daily_limit,
        "monthly_limit": limits.monthly_limit,
        "concurrent_limit": limits.concurrent_limit,
    }


def _seconds_to_midnight(now: datetime) -> int:
    moment = now.astimezone(UTC)
    midnight = datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return max(1, int((midnight - moment).total_seconds() + 0.999))


def _seconds_to_next_month(now: datetime) -> int:
    moment = now.astimezone(UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    start = datetime(year, month, 1, tzinfo=UTC)
    return max(1, int((start - moment).total_seconds() + 0.999))
