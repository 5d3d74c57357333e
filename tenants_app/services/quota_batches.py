"""Quota admission and release for many tenants at once: one statement per tick, not one per run.

The one place of the admission and release statements: quotas.py admits or releases a single run
through them with a batch of one. A run is admitted on its UTC day's usage row by ONE
conditional UPDATE whose conditions are the limits, so the check and the increment cannot be
separated; a release frees the slot on the admitted day's row and every later row of the tenant,
never below 0, and counts the outcome on the admitted day. Here one UPDATE does it for every tenant
of a claim or report tick, with a `CASE` arm per row. A tenant's admission is all or nothing for the
runs the tick allotted it: the allotment was computed from the row as read in the same tick, so a
refusal only happens when another writer moved the row meanwhile, and then the tick gives those runs
back. Which rows matched is read back (by the tick's `admission_id`) only when the count falls short.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.utils import timezone
from google.cloud import bigquery

from tenants_app.log_context import ContextThreadPoolExecutor
from tenants_app.models import (
    RunState,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.errors import DoesNotExist, ServiceError
from tenants_app.services.notifications import notify_quota_usage
from tenants_app.services.onboarding import usage_id_for
from tenants_app.services.plans import OPERATION_RUN
from tenants_app.services.quota_rules import (
    WARNING_RATIO,
    check_allowed,
    limit_exceeded,
    quota_day,
    run_usage_dml,
)
from tenants_app.services.subscription_selectors import (
    EffectiveLimits,
    subscription_effective_limits,
    subscriptions_newest,
)
from tenants_app.services.usage_rows import usage_rows_start


@dataclass(frozen=True)
class Room:
    """How many runs a tenant may start now, from its row as read; `refusal` when none."""

    tenant_id: str
    free: int
    limits: EffectiveLimits | None
    refusal: ServiceError | None = None
    # Runs already counted today and this month (as read): what an admission's notifications compare.
    run_today: int = 0
    run_month: int = 0


@dataclass(frozen=True)
class Release:
    """One run leaving RUNNING: its slot on `usage_date` (and later rows), its outcome if known."""

    tenant_id: str
    usage_date: date
    succeeded: bool | None


def quota_rooms(*, tenant_ids: Sequence[str], now: datetime) -> dict[str, Room]:
    """Each tenant's room on today's usage row (3 reads side by side; the missing rows are created)."""
    day = quota_day(now)
    tenants = sorted(set(tenant_ids))
    if not tenants:
        return {}
    with ContextThreadPoolExecutor(3) as pool:
        subscriptions = pool.submit(lambda: subscriptions_newest(tenant_ids=tenants))
        statuses = pool.submit(_tenant_statuses, tenants)
        rows = pool.submit(_usage_rows, tenants, day)
        found_subscriptions, found_statuses, found_rows = (
            subscriptions.result(),
            statuses.result(),
            rows.result(),
        )
    rooms: dict[str, Room] = {}
    for tenant in tenants:
        subscription = found_subscriptions.get(tenant)
        try:
            if subscription is None:
                raise DoesNotExist(f"tenant {tenant!r} has no subscription")
            check_allowed(tenant, subscription, found_statuses.get(tenant), OPERATION_RUN, day)
        except ServiceError as refusal:
            rooms[tenant] = Room(tenant, 0, None, refusal)
            continue
        rooms[tenant] = Room(tenant, 0, subscription_effective_limits(subscription=subscription))
    missing = [t for t, room in rooms.items() if room.refusal is None and t not in found_rows]
    if missing:
        # First runs of the day before the rollover made their rows: insert-if-absent, then read them.
        usage_rows_start(day=day, tenant_ids=missing)
        found_rows.update(_usage_rows(missing, day))
    for tenant, room in list(rooms.items()):
        row = found_rows.get(tenant)
        if room.refusal is not None or room.limits is None:
            continue
        if row is None:
            rooms[tenant] = Room(tenant, 0, None, DoesNotExist(f"tenant {tenant!r} has no usage row"))
            continue
        rooms[tenant] = quota_room(tenant_id=tenant, limits=room.limits, row=row, now=now)
    return rooms


def quota_room(*, tenant_id: str, limits: EffectiveLimits, row: TenantUsageQuota, now: datetime) -> Room:
    """The tenant's room on its usage row as read: how many runs fit under every limit, or the refusal."""
    exceeded = limit_exceeded(row, limits, now)
    if exceeded is not None:
        return Room(tenant_id, 0, limits, exceeded)
    free = min(
        limits.daily_limit - row.pipelines_run_today,
        limits.monthly_limit - row.pipelines_run_month,
        limits.concurrent_limit - row.concurrent_pipelines_running,
    )
    return Room(
        tenant_id,
        max(0, free),
        limits,
        run_today=row.pipelines_run_today,
        run_month=row.pipelines_run_month,
    )


def quota_admit_many(
    *, grants: Mapping[str, int], rooms: Mapping[str, Room], now: datetime, admission_id: str
) -> set[str]:
    """Admit `grants[tenant]` runs per tenant on today's rows in ONE UPDATE; the tenants admitted."""
    grants = {tenant: n for tenant, n in grants.items() if n > 0}
    if not grants:
        return set()
    day = quota_day(now)
    params: list[Any] = [
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
        bigquery.ScalarQueryParameter("admission_id", "STRING", admission_id),
    ]
    ids = []
    arms: dict[str, list[str]] = {"n": [], "daily": [], "monthly": [], "concurrent": []}
    for index, (tenant, n) in enumerate(sorted(grants.items())):
        limits = rooms[tenant].limits
        assert limits is not None  # granted only to tenants with room
        usage_id = usage_id_for(tenant, day)
        ids.append(usage_id)
        params.append(bigquery.ScalarQueryParameter(f"u{index}", "STRING", usage_id))
        values = {
            "n": n,
            "daily": limits.daily_limit,
            "monthly": limits.monthly_limit,
            "concurrent": limits.concurrent_limit,
        }
        for name, value in values.items():
            params.append(bigquery.ScalarQueryParameter(f"{name}{index}", "INT64", value))
            arms[name].append(f"WHEN @u{index} THEN @{name}{index}")
    params.append(bigquery.ArrayQueryParameter("ids", "STRING", ids))
    case = {name: f"(CASE usage_id {' '.join(items)} END)" for name, items in arms.items()}
    n, daily, monthly, concurrent = case["n"], case["daily"], case["monthly"], case["concurrent"]
    numerator, denominator = WARNING_RATIO
    table = central_repository(TenantUsageQuota).table
    # Right-hand sides see the row as it was before this statement (standard UPDATE semantics), hence
    # the `+ n`. The limits are the subscription's effective ones, written back so the row shows them.
    sql = (
        f"UPDATE {table} SET "  # noqa: S608 - identifiers quoted, values parameters
        f"pipelines_run_today = pipelines_run_today + {n}, "
        f"pipelines_run_month = pipelines_run_month + {n}, "
        f"concurrent_pipelines_running = concurrent_pipelines_running + {n}, "
        "max_concurrent_reached = GREATEST(COALESCE(max_concurrent_reached, 0), "
        f"concurrent_pipelines_running + {n}), "
        f"daily_limit = {daily}, monthly_limit = {monthly}, concurrent_limit = {concurrent}, "
        f"daily_warning_at = IF(daily_warning_at IS NULL AND "
        f"(pipelines_run_today + {n}) * {denominator} >= {daily} * {numerator}, @now, daily_warning_at), "
        f"monthly_warning_at = IF(monthly_warning_at IS NULL AND "
        f"(pipelines_run_month + {n}) * {denominator} >= {monthly} * {numerator}, @now, monthly_warning_at), "
        "admission_id = @admission_id, last_updated = @now "
        f"WHERE usage_id IN UNNEST(@ids) AND pipelines_run_today + {n} <= {daily} "
        f"AND pipelines_run_month + {n} <= {monthly} AND concurrent_pipelines_running + {n} <= {concurrent}"
    )
    changed = run_usage_dml(sql, params)
    if changed == len(ids):
        admitted = set(grants)
    elif len(ids) == 1:
        admitted = set()  # one row, not changed: nothing to read back (a single run's admission)
    else:
        rows = central_repository(TenantUsageQuota).list(
            filters={"usage_id__in": ids, "admission_id": admission_id}, fields=["tenant_id"]
        )
        admitted = {row.tenant_id for row in rows}
    for tenant in sorted(admitted):
        _notify_usage(rooms[tenant], grants[tenant])
    return admitted


def _notify_usage(room: Room, admitted: int) -> None:
    """The 80% and 100% notifications of the day and the month this admission crossed, if any."""
    limits = room.limits
    assert limits is not None
    for period, before, limit in (
        ("daily", room.run_today, limits.daily_limit),
        ("monthly", room.run_month, limits.monthly_limit),
    ):
        notify_quota_usage(
            tenant_id=room.tenant_id,
            period=period,
            used_before=before,
            used_after=before + admitted,
            limit=limit,
        )


def quota_release_many(
    *, releases: Sequence[Release], now: datetime | None = None, only_if_leaked: bool = False
) -> int:
    """Free every run's slot and count its outcome (ONE UPDATE); the rows it changed.

    As `quotas.quota_release`, the caller guarantees once per run through its own state change. With
    `only_if_leaked` (`quotas.quota_release_if_leaked`), a row changes only if, once freed, it still
    counts at least as many running runs as the queue holds RUNNING entries of its tenant: the
    UPDATE's own condition, so racing repeats free a leaked slot once.
    """
    if not releases:
        return 0
    groups = Counter((r.tenant_id, r.usage_date, r.succeeded) for r in releases)
    params: list[Any] = [bigquery.ScalarQueryParameter("now", "TIMESTAMP", now or timezone.now())]
    freed, succeeded, failed = [], [], []
    for index, ((tenant, day, outcome), count) in enumerate(sorted(groups.items(), key=_group_order)):
        params += [
            bigquery.ScalarQueryParameter(f"t{index}", "STRING", tenant),
            bigquery.ScalarQueryParameter(f"d{index}", "DATE", day),
            bigquery.ScalarQueryParameter(f"n{index}", "INT64", count),
        ]
        # The slot on the admitted day's row and every later one; the outcome on that day only.
        freed.append(f"IF(tenant_id = @t{index} AND usage_date >= @d{index}, @n{index}, 0)")
        on_day = f"IF(tenant_id = @t{index} AND usage_date = @d{index}, @n{index}, 0)"
        if outcome is True:
            succeeded.append(on_day)
        elif outcome is False:
            failed.append(on_day)
    tenants = sorted({tenant for tenant, _, _ in groups})
    params += [
        bigquery.ArrayQueryParameter("tenants", "STRING", tenants),
        bigquery.ScalarQueryParameter("first_day", "DATE", min(day for _, day, _ in groups)),
    ]
    outcome_sets = ""
    if succeeded:
        outcome_sets += f"pipelines_succeeded_today = pipelines_succeeded_today + {' + '.join(succeeded)}, "
    if failed:
        outcome_sets += f"pipelines_failed_today = pipelines_failed_today + {' + '.join(failed)}, "
    table = central_repository(TenantUsageQuota).table
    leaked = ""
    if only_if_leaked:
        queue = central_repository(TenantPipelineExecutionQueue).table
        leaked = (
            f" AND concurrent_pipelines_running - ({' + '.join(freed)}) >= "  # noqa: S608 - as below
            f"(SELECT COUNT(*) FROM {queue} AS q WHERE q.tenant_id = u.tenant_id AND q.state = @running)"
        )
        params.append(bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING))
    sql = (
        f"UPDATE {table} AS u SET {outcome_sets}"  # noqa: S608 - identifiers quoted, values parameters
        f"concurrent_pipelines_running = GREATEST(concurrent_pipelines_running - ({' + '.join(freed)}), 0), "
        "last_pipeline_completed_at = @now, last_updated = @now "
        f"WHERE tenant_id IN UNNEST(@tenants) AND usage_date >= @first_day"
        # Only rows this batch frees a slot on: another tenant's earlier release day must not make a
        # row before this tenant's own day count as changed (nor move its completion time).
        f" AND ({' + '.join(freed)}) > 0{leaked}"
    )
    return run_usage_dml(sql, params)


def _group_order(item: tuple[tuple[str, date, bool | None], int]) -> tuple[str, date, int]:
    (tenant, day, outcome), _ = item
    return tenant, day, {True: 0, False: 1, None: 2}[outcome]


def _tenant_statuses(tenants: list[str]) -> dict[str, str | None]:
    rows = central_repository(TenantProfile).list(
        filters={"tenant_id__in": tenants}, fields=["tenant_id", "status"]
    )
    return {row.tenant_id: row.status for row in rows}


def _usage_rows(tenants: list[str], day: date) -> dict[str, TenantUsageQuota]:
    ids = [usage_id_for(tenant, day) for tenant in tenants]
    return {
        row.tenant_id: row for row in central_repository(TenantUsageQuota).list(filters={"usage_id__in": ids})
    }
