"""Quota admission and release for many tenants at once: one statement per tick, not one per run.

The one place of the admission and release statements: quotas.py admits or releases a single run
through them with a batch of one. A run is admitted on its UTC day's usage row by ONE
conditional UPDATE whose conditions are the limits, so the check and the increment cannot be
separated; a release frees the slot on the admitted day's row and every later row of the tenant,
never below 0, and counts the outcome on the admitted day. Here one UPDATE does it for every tenant
of a claim or report tick, its rows joined from array parameters (`batch_source.zipped_rows`), so
the statement's text is the same whatever the number of tenants. A tenant's admission is all or
nothing for the runs the tick allotted it: the allotment was computed from the row as read in the
same tick, so a refusal only happens when another writer moved the row meanwhile, and then the tick
gives those runs back. Which rows matched is read back (by the tick's `admission_id`) only when the
count falls short.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from django.utils import timezone

from bigquery_backend.batch_source import zipped_rows
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
    tenants = sorted(grants)
    ids = [usage_id_for(tenant, day) for tenant in tenants]
    limits = [_granted_limits(rooms[tenant]) for tenant in tenants]
    source, params = zipped_rows(
        {
            "id": ("STRING", ids),
            "n": ("INT64", [grants[tenant] for tenant in tenants]),
            "daily": ("INT64", [limit.daily_limit for limit in limits]),
            "monthly": ("INT64", [limit.monthly_limit for limit in limits]),
            "concurrent": ("INT64", [limit.concurrent_limit for limit in limits]),
        },
        prefix="g",
        constants={"now": ("TIMESTAMP", now), "admission_id": ("STRING", admission_id)},
    )
    numerator, denominator = WARNING_RATIO
    table = central_repository(TenantUsageQuota).table
    # Right-hand sides see the row as it was before this statement (standard UPDATE semantics), hence
    # the `+ g.n`. The limits are the subscription's effective ones, written back so the row shows them.
    sql = (
        f"UPDATE {table} AS u SET "  # noqa: S608 - identifiers quoted, values parameters
        "pipelines_run_today = u.pipelines_run_today + g.n, "
        "pipelines_run_month = u.pipelines_run_month + g.n, "
        "concurrent_pipelines_running = u.concurrent_pipelines_running + g.n, "
        "max_concurrent_reached = GREATEST(COALESCE(u.max_concurrent_reached, 0), "
        "u.concurrent_pipelines_running + g.n), "
        "daily_limit = g.daily, monthly_limit = g.monthly, concurrent_limit = g.concurrent, "
        "daily_warning_at = IF(u.daily_warning_at IS NULL AND "
        f"(u.pipelines_run_today + g.n) * {denominator} >= g.daily * {numerator}, g.now, "
        "u.daily_warning_at), "
        "monthly_warning_at = IF(u.monthly_warning_at IS NULL AND "
        f"(u.pipelines_run_month + g.n) * {denominator} >= g.monthly * {numerator}, g.now, "
        "u.monthly_warning_at), "
        "admission_id = g.admission_id, last_updated = g.now "
        f"FROM ({source}) AS g "
        "WHERE u.usage_id = g.id AND u.pipelines_run_today + g.n <= g.daily "
        "AND u.pipelines_run_month + g.n <= g.monthly "
        "AND u.concurrent_pipelines_running + g.n <= g.concurrent"
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


def _granted_limits(room: Room) -> EffectiveLimits:
    if room.limits is None:  # a grant only goes to a tenant with room, which has limits
        raise ValueError(f"tenant {room.tenant_id}: granted runs without limits")
    return room.limits


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
    groups = sorted(
        Counter((r.tenant_id, r.usage_date, r.succeeded) for r in releases).items(), key=_group_order
    )
    source, params = zipped_rows(
        {
            "tenant": ("STRING", [tenant for (tenant, _, _), _ in groups]),
            "day": ("DATE", [day for (_, day, _), _ in groups]),
            "n": ("INT64", [count for _, count in groups]),
            # 1 succeeded, 0 failed, -1 neither (cancelled, lease lost): counted in no outcome.
            "outcome": ("INT64", [{True: 1, False: 0, None: -1}[outcome] for (_, _, outcome), _ in groups]),
        },
        prefix="r",
        constants={"now": ("TIMESTAMP", now or timezone.now())},
    )
    table = central_repository(TenantUsageQuota).table
    # Each row's share, summed over the batch: the slot on the admitted day's row and every later one
    # (the join), the outcome on that day only. Only rows this batch frees a slot on change (another
    # tenant's earlier day must not touch a row before this tenant's own), each once, as UPDATE ... FROM
    # requires one source row per target row.
    # The first day as a literal (an ISO date we format): a date filter lets BigQuery read only the
    # partitions from that day on, and a parameter outside the source is not read right by the emulator.
    first_day = f"DATE '{min(day for (_, day, _), _ in groups).isoformat()}'"
    shares = (
        "SELECT r.usage_id, SUM(g.n) AS freed, ANY_VALUE(g.now) AS now, "
        "SUM(IF(r.usage_date = g.day AND g.outcome = 1, g.n, 0)) AS succeeded, "
        "SUM(IF(r.usage_date = g.day AND g.outcome = 0, g.n, 0)) AS failed"
    )
    joins = f" FROM {table} AS r JOIN ({source}) AS g ON r.tenant_id = g.tenant AND r.usage_date >= g.day"
    leaked = ""
    if only_if_leaked:
        # The tenant's RUNNING entries (a plain aggregate joined, not a correlated subquery, which
        # BigQuery refuses on another table): a freed row must still count as many. The state is our
        # constant, as a literal for the same reason as the day.
        queue = central_repository(TenantPipelineExecutionQueue).table
        shares += ", MAX(COALESCE(q.running, 0)) AS running"
        joins += (
            f" LEFT JOIN (SELECT tenant_id, COUNT(*) AS running FROM {queue} "  # noqa: S608 - as below
            f"WHERE state = '{RunState.RUNNING}' GROUP BY tenant_id) AS q ON q.tenant_id = r.tenant_id"
        )
        leaked = " AND u.concurrent_pipelines_running - s.freed >= s.running"
    sql = (
        f"UPDATE {table} AS u SET "  # noqa: S608 - identifiers quoted, values parameters
        "pipelines_succeeded_today = u.pipelines_succeeded_today + s.succeeded, "
        "pipelines_failed_today = u.pipelines_failed_today + s.failed, "
        "concurrent_pipelines_running = GREATEST(u.concurrent_pipelines_running - s.freed, 0), "
        "last_pipeline_completed_at = s.now, last_updated = s.now "
        f"FROM ({shares}{joins} WHERE r.usage_date >= {first_day} GROUP BY r.usage_id) AS s "
        f"WHERE u.usage_id = s.usage_id AND u.usage_date >= {first_day}{leaked}"
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
