"""Pipeline-run quotas: admit a run against the day's, month's and concurrent limits, release it after.

Counters live in the tenant's usage row of the day (`tenant_usage_quotas`, usage_id
`{tenant_id}_{YYYYMMDD}`, UTC days). Admission is ONE conditional UPDATE on that row that increments
the counters only where every limit still has room, so the check and the increment cannot be separated
by another writer: with N concurrent admissions for the last K slots exactly K statements match a row.
No read-then-write: the reads around it only report figures or tell a full row from a missing one.

Carry-over between days (done when a day's row is created, here or by `roll_over_usage`):
- `pipelines_run_month` (and `monthly_warning_at`) carry from the tenant's latest earlier row of the same
  month, and start at 0 on the 1st;
- `concurrent_pipelines_running` is counted, not copied: one slot per queue entry of the tenant that is
  RUNNING with a `usage_date` (admitted on or before the day; see run_queue.py). Runs still running at
  midnight keep their slots on the new day, and a slot leaked on an earlier row (say a worker crash
  between the steps of a claim) is not carried forward: a new day's row is the safety net. Same
  statement, same cost (a LEFT JOIN of one grouped subquery).
  The one window: a claim sets RUNNING, admits, then writes `usage_date`. A row created in between
  does not count that run, and the run's release later decrements the new row too (never below 0):
  that day's figure errs LOW by one, so one run more than the concurrent limit may be admitted that
  day, never a slot held for good. (Counting RUNNING entries without `usage_date` would err high: a
  claim refused admission, or the claiming run itself when its admission creates the row.)

A run belongs to the day it was admitted on (`Admission.usage_date`): its success or failure counts on that
day's row even when it finishes after midnight, so each day's `run = succeeded + failed (+ released without
outcome)` adds up. Its concurrent slot is released on that row AND on every later row of the tenant (which
counted it), never below 0.

Counter changes are not audited: they happen per run, and the runs themselves are the trail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from google.cloud import bigquery

from tenants_app.models import (
    RunState,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantStatus,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.errors import (
    DoesNotExist,
    QuotaExceeded,
    ServiceUnavailable,
    SubscriptionInactive,
    TenantNotActive,
    ValidationFailed,
)
from tenants_app.services.onboarding import usage_id_for
from tenants_app.services.plans import OPERATION_RUN, status_allows, statuses_allowing
from tenants_app.services.subscriptions import (
    EffectiveLimits,
    subscription_effective_limits,
    subscription_effective_status,
)

logger = logging.getLogger(__name__)

DAILY = "daily"
MONTHLY = "monthly"
CONCURRENT = "concurrent"
# A full concurrent limit frees up when a run ends: tell the client to come back soon, not at midnight.
CONCURRENT_RETRY_AFTER_SECONDS = 30
WARNING_RATIO = (4, 5)  # 80%: warn when used * 5 >= limit * 4 (integers, no float rounding)
# Tenants whose profile lets them work at all; the subscription's state then decides what they may do.
_WORKING_TENANT_STATUSES = (TenantStatus.ACTIVE, TenantStatus.TRIAL)
_ADMIT_ATTEMPTS = 4
# API-call counts per UPDATE: a CASE arm per tenant keeps the statement small enough to send and read.
_API_CALLS_CHUNK = 200
_EXISTS_TTL = 3 * 86_400
# Month totals carry from the previous row of the month: retention must keep a month and a day.
MIN_RETENTION_DAYS = 32


@dataclass(frozen=True)
class Admission:
    """One admitted run: the usage row holding its concurrent slot and the figures after admission."""

    tenant_id: str
    usage_date: date
    pipelines_run_today: int
    pipelines_run_month: int
    concurrent_pipelines_running: int
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int
    # Limits whose 80% warning this admission set ("daily", "monthly"); empty almost always.
    warnings_raised: tuple[str, ...] = ()


def quota_day(now: datetime | None = None) -> date:
    """The UTC day whose usage row counts a run admitted at `now`."""
    return (now or timezone.now()).astimezone(UTC).date()


def subscription_require_active(
    *, tenant_id: str, operation: str = OPERATION_RUN, today: date | None = None
) -> TenantSubscription:
    """The tenant's subscription if its state allows `operation` (one job).

    Raises DoesNotExist (no tenant or subscription), TenantNotActive (suspended or offboarded tenant)
    or SubscriptionInactive (see `plans.LIFECYCLE_RULES`; a trial past its end counts as EXPIRED).
    """
    with bigquery_errors_translated():
        subscription, tenant_status = _subscription_and_tenant_status(tenant_id)
    _check_allowed(tenant_id, subscription, tenant_status, operation, today or quota_day())
    return subscription


def quota_admit(*, tenant_id: str, now: datetime | None = None) -> Admission:
    """Reserve one run for the tenant (one conditional UPDATE), or QuotaExceeded / SubscriptionInactive.

    Two jobs when it admits: one read (subscription, tenant status, the day's row) and the UPDATE. The
    figures returned are the row as read just before plus this run: exact unless other admissions or
    releases of the same tenant ran in between, which only the UPDATE's conditions must get right.
    """
    now = now or timezone.now()
    day = quota_day(now)
    with bigquery_errors_translated():
        subscription, tenant_status, row = _admission_context(tenant_id, day)
        _check_allowed(tenant_id, subscription, tenant_status, OPERATION_RUN, day)
        limits = subscription_effective_limits(subscription=subscription)
        for _ in range(_ADMIT_ATTEMPTS):
            if row is None:
                # First run of the day before the rollover made the row: create it (insert-if-absent,
                # so concurrent first runs create it once) and read what it carried over.
                usage_rows_start(day=day, tenant_id=tenant_id)
                row = _usage_row(tenant_id, day)
                continue
            if _reserve(tenant_id, day, limits, now):
                return _admission(row, limits)
            row = _usage_row(tenant_id, day)
            if row is None:
                continue
            exceeded = _exceeded(row, limits, now)
            if exceeded is not None:
                raise exceeded
            # The row has room again (a run ended between our UPDATE and the read): try again.
        raise ServiceUnavailable("Could not reserve a run under contention; retry shortly.")


def quota_release(*, tenant_id: str, usage_date: date, succeeded: bool | None) -> None:
    """Free the run's concurrent slot and count its outcome on the day it was admitted (one UPDATE).

    The caller guarantees once per run through its own state change (RUNNING -> anything): a second
    call would count the outcome twice. The slot counter is still clamped at 0 on every row.
    """
    if _release(tenant_id=tenant_id, usage_date=usage_date, succeeded=succeeded, only_if_leaked=False) == 0:
        # Past retention, or never created (a run admitted by another system): nothing to release.
        logger.warning("no usage row of tenant %s on or after %s to release a run on", tenant_id, usage_date)


def quota_release_if_leaked(*, tenant_id: str, usage_date: date, succeeded: bool | None) -> bool:
    """Release a finished run's slot if the usage row counts more running runs than the queue holds.

    For the repeat of a worker report whose first attempt moved the queue entry out of RUNNING but
    failed before its release landed (BigQuery went away between the two statements): the entry
    cannot tell whether the release happened, the counts can. The comparison is the UPDATE's own
    condition, not a read before it, so two repeats racing release (and count the outcome) once.
    Every RUNNING entry counts, with `usage_date` or not: a claim between its compare-and-set and
    recording its admission is RUNNING already, so its slot is never taken for a leaked one. The price
    is the other way round: while such a claim is in flight a leaked slot may stay until a later
    repeat, a reap or the next rollover, never freed while in use.
    """
    if _release(tenant_id=tenant_id, usage_date=usage_date, succeeded=succeeded, only_if_leaked=True) == 0:
        return False
    logger.warning("tenant %s: released the slot of a run whose first report failed mid-way", tenant_id)
    return True


def _release(*, tenant_id: str, usage_date: date, succeeded: bool | None, only_if_leaked: bool) -> int:
    """The release UPDATE; with `only_if_leaked`, only rows counting more running runs than the queue."""
    repository = central_repository(TenantUsageQuota)
    params: list[Any] = [
        bigquery.ScalarQueryParameter("tenant_id", "STRING", tenant_id),
        bigquery.ScalarQueryParameter("usage_date", "DATE", usage_date),
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", timezone.now()),
    ]
    outcome = ""
    if succeeded is True:
        outcome = (
            "pipelines_succeeded_today = pipelines_succeeded_today + IF(usage_date = @usage_date, 1, 0), "
        )
    elif succeeded is False:
        outcome = "pipelines_failed_today = pipelines_failed_today + IF(usage_date = @usage_date, 1, 0), "
    leaked = ""
    if only_if_leaked:
        queue = central_repository(TenantPipelineExecutionQueue)
        leaked = (
            " AND concurrent_pipelines_running > "
            f"(SELECT COUNT(*) FROM {queue.table} AS q WHERE q.tenant_id = @tenant_id "
            "AND q.state = @running)"
        )
        params.append(bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING))
    sql = (
        f"UPDATE {repository.table} SET {outcome}"
        "concurrent_pipelines_running = GREATEST(concurrent_pipelines_running - 1, 0), "
        "last_pipeline_completed_at = @now, last_updated = @now "
        f"WHERE tenant_id = @tenant_id AND usage_date >= @usage_date{leaked}"
    )
    with bigquery_errors_translated():
        return _run_dml(sql, params)


def usage_rows_start(
    *,
    day: date,
    tenant_id: str | None = None,
    tenant_ids: Sequence[str] | None = None,
    any_subscription_status: bool = False,
) -> int:
    """Create `day`'s usage rows in ONE MERGE; returns the statement's affected-row count.

    For one tenant, some tenants, or every working tenant whose subscription allows runs (or, with
    `any_subscription_status`, any state: API calls are counted for read-only tenants too).
    Insert-if-absent: rows that exist are left alone, so running it twice, or concurrently, or after
    admissions already created some rows, is safe. Limits come from each tenant's newest subscription.
    """
    usage = central_repository(TenantUsageQuota)
    source, params = _day_rows_source(
        day, tenant_id=tenant_id, tenant_ids=tenant_ids, any_subscription_status=any_subscription_status
    )
    params.append(bigquery.ScalarQueryParameter("now", "TIMESTAMP", timezone.now()))
    columns = (
        "usage_id, tenant_id, usage_date, pipelines_run_today, pipelines_succeeded_today, "
        "pipelines_failed_today, pipelines_run_month, concurrent_pipelines_running, daily_limit, "
        "monthly_limit, concurrent_limit, max_concurrent_reached, last_updated, created_at, "
        "total_api_calls_today, monthly_warning_at"
    )
    values = (
        "source.usage_id, source.tenant_id, source.usage_date, 0, 0, 0, source.pipelines_run_month, "
        "source.concurrent_pipelines_running, source.daily_limit, source.monthly_limit, "
        "source.concurrent_limit, source.concurrent_pipelines_running, @now, @now, 0, "
        "source.monthly_warning_at"
    )
    # The no-op WHEN MATCHED makes this a *mutating* statement on BigQuery: an INSERT-only MERGE runs
    # concurrently with another one unchecked (two schedulers would both insert), while mutating
    # statements on one partition conflict, and the loser re-runs and then finds the row.
    sql = (
        f"MERGE {usage.table} AS target USING ({source}) AS source ON target.usage_id = source.usage_id "
        "WHEN MATCHED THEN UPDATE SET last_updated = target.last_updated "
        f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
    )
    return _run_dml(sql, params)


def usage_rows_missing(*, day: date) -> int:
    """How many working tenants allowed to run have no usage row for `day` yet (one job; dry runs)."""
    usage = central_repository(TenantUsageQuota)
    source, params = _day_rows_source(day)
    sql = (
        f"SELECT COUNT(*) AS n FROM ({source}) AS source "
        f"LEFT JOIN {usage.table} AS target ON target.usage_id = source.usage_id "
        "WHERE target.usage_id IS NULL"
    )
    return int(usage.gateway.query(sql, params).rows[0]["n"])


def _day_rows_source(
    day: date,
    *,
    tenant_id: str | None = None,
    tenant_ids: Sequence[str] | None = None,
    any_subscription_status: bool = False,
) -> tuple[str, list[Any]]:
    """The SELECT of `day`'s new usage rows (limits, month total carried, slots counted), its parameters."""
    usage = central_repository(TenantUsageQuota)
    queue = central_repository(TenantPipelineExecutionQueue).table
    subscriptions = central_repository(TenantSubscription).table
    profiles = central_repository(TenantProfile).table
    month_start = day.replace(day=1)
    lookback = day - timedelta(days=max(int(settings.USAGE_RETENTION_DAYS), 31))
    params: list[Any] = [
        bigquery.ScalarQueryParameter("day", "DATE", day),
        bigquery.ScalarQueryParameter("suffix", "STRING", f"{day:%Y%m%d}"),
        bigquery.ScalarQueryParameter("month_start", "DATE", month_start),
        bigquery.ScalarQueryParameter("lookback", "DATE", lookback),
        bigquery.ArrayQueryParameter("tenant_statuses", "STRING", list(_WORKING_TENANT_STATUSES)),
        bigquery.ScalarQueryParameter("any_status", "BOOL", any_subscription_status),
        bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING),
    ]
    tenant_filter = ""
    if tenant_id is not None:
        params.append(bigquery.ScalarQueryParameter("tenant_id", "STRING", tenant_id))
        tenant_filter = " AND tenant_id = @tenant_id"
    elif tenant_ids is not None:
        params.append(bigquery.ArrayQueryParameter("tenant_ids", "STRING", sorted(set(tenant_ids))))
        tenant_filter = " AND tenant_id IN UNNEST(@tenant_ids)"
    status_filter = ""
    if not any_subscription_status:
        params.append(
            bigquery.ArrayQueryParameter("run_statuses", "STRING", list(statuses_allowing(OPERATION_RUN)))
        )
        status_filter = "AND s.status IN UNNEST(@run_statuses) "
    # Window functions in subqueries rather than QUALIFY or CTEs: portable to every engine we run on.
    source = (
        "SELECT CONCAT(s.tenant_id, '_', @suffix) AS usage_id, s.tenant_id AS tenant_id, "
        "@day AS usage_date, "
        "IF(p.usage_date >= @month_start, COALESCE(p.pipelines_run_month, 0), 0) AS pipelines_run_month, "
        "COALESCE(q.running, 0) AS concurrent_pipelines_running, "
        "IF(p.usage_date >= @month_start, p.monthly_warning_at, NULL) AS monthly_warning_at, "
        "s.daily_limit AS daily_limit, s.monthly_limit AS monthly_limit, "
        "s.concurrent_limit AS concurrent_limit "
        "FROM (SELECT tenant_id, status, trial_end_date, daily_limit, monthly_limit, concurrent_limit, "
        "ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY created_at DESC, subscription_id) AS rn "
        f"FROM {subscriptions} WHERE TRUE{tenant_filter}) AS s "
        f"JOIN {profiles} AS t ON t.tenant_id = s.tenant_id "
        "LEFT JOIN (SELECT tenant_id, usage_date, pipelines_run_month, monthly_warning_at, "
        "ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY usage_date DESC) AS rn "
        f"FROM {usage.table} WHERE usage_date < @day AND usage_date >= @lookback{tenant_filter}) AS p "
        "ON p.tenant_id = s.tenant_id AND p.rn = 1 "
        # Slots are counted, not copied: a RUNNING entry with a usage_date holds one (see run_queue.py), so a
        # slot leaked on an earlier row is not carried into the new day.
        "LEFT JOIN (SELECT tenant_id, COUNT(*) AS running "
        f"FROM {queue} WHERE state = @running AND usage_date IS NOT NULL AND usage_date <= @day"
        f"{tenant_filter} GROUP BY tenant_id) AS q ON q.tenant_id = s.tenant_id "
        f"WHERE s.rn = 1 {status_filter}"
        "AND t.status IN UNNEST(@tenant_statuses) "
        "AND (@any_status OR NOT (s.status = 'TRIAL' AND s.trial_end_date IS NOT NULL "
        "AND s.trial_end_date < @day))"
    )
    return source, params


@dataclass(frozen=True)
class RolloverReport:
    """What `usage_roll_over` did (or, in a dry run, would do)."""

    day: date
    dry_run: bool
    trials_expired: list[str]
    rows_created: int
    rows_for_day: int
    rows_deleted: int
    retention_cutoff: date


def usage_roll_over(
    *,
    day: date | None = None,
    retention_days: int | None = None,
    dry_run: bool = False,
    actor: str = "system:roll_over_usage",
) -> RolloverReport:
    """Start a day: expire ended trials, create every working tenant's usage row, drop rows past retention.

    A constant number of statements whatever the number of tenants (trial expiry: up to 4; rows: one
    MERGE between two counts; retention: one DELETE). Idempotent and safe concurrently: expiry is a
    conditional UPDATE, rows are insert-if-absent, the DELETE removes what is old whoever runs it.
    Counts are approximate while admissions or another run create rows at the same moment.
    """
    from tenants_app.services.subscriptions import subscription_expire_trials  # keeps imports one-way

    today = quota_day()
    day = day or today
    retention_days = settings.USAGE_RETENTION_DAYS if retention_days is None else retention_days
    errors: dict[str, list[str]] = {}
    if day > today:
        # A row made ahead of its day would copy a month total that is still growing.
        errors["date"] = [f"Use today ({today}) or an earlier day, not a future one."]
    if retention_days < MIN_RETENTION_DAYS:
        errors["retention_days"] = [f"Keep at least {MIN_RETENTION_DAYS} days (month totals carry over)."]
    if errors:
        raise ValidationFailed("invalid rollover", errors=errors)
    cutoff = day - timedelta(days=retention_days)
    usage = central_repository(TenantUsageQuota)
    with bigquery_errors_translated():
        expired = subscription_expire_trials(today=day, actor=actor, dry_run=dry_run)
        existing = usage.count(filters={"usage_date": day})
        if dry_run:
            return RolloverReport(
                day=day,
                dry_run=True,
                trials_expired=expired,
                rows_created=usage_rows_missing(day=day),
                rows_for_day=existing,
                rows_deleted=usage.count(filters={"usage_date__lt": cutoff}),
                retention_cutoff=cutoff,
            )
        usage_rows_start(day=day)
        after = usage.count(filters={"usage_date": day})
        deleted = usage.delete_where(filters={"usage_date__lt": cutoff})
    logger.info(
        "usage rollover for %s: %d trial(s) expired, %d row(s) created, %d deleted before %s",
        day,
        len(expired),
        after - existing,
        deleted,
        cutoff,
    )
    return RolloverReport(
        day=day,
        dry_run=False,
        trials_expired=expired,
        rows_created=max(0, after - existing),
        rows_for_day=after,
        rows_deleted=deleted,
        retention_cutoff=cutoff,
    )


def usage_add_api_calls(*, counts: Mapping[tuple[str, date], int]) -> None:
    """Add API-call counts per (tenant, UTC day) to `total_api_calls_today`: one UPDATE per 200 tenants.

    Rows not yet known to exist are created first (insert-if-absent MERGE, whatever the subscription
    state: read-only tenants' calls count too). Rows are never deleted within retention, so "exists" is
    remembered in the cache (per dataset) and an ordinary flush is one UPDATE. Creating rows first,
    rather than looking afterwards for rows the UPDATE missed, leaves no window in which a row made
    meanwhile would be skipped.
    """
    repository = central_repository(TenantUsageQuota)
    items = sorted(counts.items())
    for start in range(0, len(items), _API_CALLS_CHUNK):
        chunk = items[start : start + _API_CALLS_CHUNK]
        markers = {key: _exists_key(repository.dataset, *key) for key, _ in chunk}
        known = cache.get_many(list(markers.values()))
        for day in sorted({day for (_, day), _ in chunk}):
            unknown = [t for (t, d), _ in chunk if d == day and markers[(t, d)] not in known]
            if unknown:
                usage_rows_start(day=day, tenant_ids=unknown, any_subscription_status=True)
        _add_counts(repository, chunk)
        cache.set_many(dict.fromkeys(markers.values(), True), _EXISTS_TTL)


# --- internals --------------------------------------------------------------------------------------
def _subscription_and_tenant_status(tenant_id: str) -> tuple[TenantSubscription, str | None]:
    """The newest subscription plus the tenant's profile status, in one query."""
    subscription, tenant_status, _ = _admission_context(tenant_id, None)
    return subscription, tenant_status


def _admission_context(
    tenant_id: str, day: date | None
) -> tuple[TenantSubscription, str | None, TenantUsageQuota | None]:
    """Newest subscription, profile status and (with `day`) that day's usage row: one query."""
    repository = central_repository(TenantSubscription)
    usage = central_repository(TenantUsageQuota)
    profiles = central_repository(TenantProfile).table
    columns = [f"s.`{column.name}`" for column in repository.definition.columns]
    params: list[Any] = [bigquery.ScalarQueryParameter("tenant_id", "STRING", tenant_id)]
    join = ""
    if day is not None:
        columns += [f"u.`{column.name}` AS `u__{column.name}`" for column in usage.definition.columns]
        # The equality on tenant_id keeps it a valid BigQuery LEFT JOIN (it wants a field from each side).
        join = f" LEFT JOIN {usage.table} AS u ON u.tenant_id = s.tenant_id AND u.usage_id = @usage_id"
        params.append(bigquery.ScalarQueryParameter("usage_id", "STRING", usage_id_for(tenant_id, day)))
    sql = (
        f"SELECT {', '.join(columns)}, "
        f"(SELECT status FROM {profiles} WHERE tenant_id = @tenant_id LIMIT 1) AS _tenant_status "
        f"FROM {repository.table} AS s{join} WHERE s.tenant_id = @tenant_id "
        "ORDER BY s.created_at DESC, s.subscription_id LIMIT 1"
    )
    rows = repository.gateway.query(sql, params).rows
    if not rows:
        raise DoesNotExist(f"tenant {tenant_id!r} has no subscription")
    found = rows[0]
    subscription = TenantSubscription(
        **{column.name: found.get(column.name) for column in repository.definition.columns}
    )
    row = None
    if day is not None and found.get("u__usage_id") is not None:
        row = TenantUsageQuota(
            **{column.name: found.get(f"u__{column.name}") for column in usage.definition.columns}
        )
    return subscription, found.get("_tenant_status"), row


def _check_allowed(
    tenant_id: str, subscription: TenantSubscription, tenant_status: str | None, operation: str, day: date
) -> None:
    if tenant_status is None:
        raise DoesNotExist(f"tenant {tenant_id!r} does not exist")
    if tenant_status not in _WORKING_TENANT_STATUSES:
        raise TenantNotActive(f"tenant {tenant_id} is {tenant_status.lower()}: it cannot {operation}")
    status = subscription_effective_status(subscription=subscription, today=day)
    if not status_allows(status, operation):
        detail = ""
        if status != subscription.status:
            detail = f" (its trial ended on {subscription.trial_end_date})"
        raise SubscriptionInactive(
            f"the subscription of tenant {tenant_id} is {status}{detail}: {operation} is not allowed"
        )


def _reserve(tenant_id: str, day: date, limits: EffectiveLimits, now: datetime) -> bool:
    """The one atomic admission statement: True when it took a slot."""
    repository = central_repository(TenantUsageQuota)
    numerator, denominator = WARNING_RATIO
    params: list[Any] = [
        bigquery.ScalarQueryParameter("usage_id", "STRING", usage_id_for(tenant_id, day)),
        bigquery.ScalarQueryParameter("daily", "INT64", limits.daily_limit),
        bigquery.ScalarQueryParameter("monthly", "INT64", limits.monthly_limit),
        bigquery.ScalarQueryParameter("concurrent", "INT64", limits.concurrent_limit),
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
    ]
    # Right-hand sides see the row as it was before this statement (standard UPDATE semantics), hence
    # the `+ 1`. The limits are the subscription's effective ones, written back so the row shows them.
    sql = (
        f"UPDATE {repository.table} SET "
        "pipelines_run_today = pipelines_run_today + 1, "
        "pipelines_run_month = pipelines_run_month + 1, "
        "concurrent_pipelines_running = concurrent_pipelines_running + 1, "
        "max_concurrent_reached = GREATEST(COALESCE(max_concurrent_reached, 0), "
        "concurrent_pipelines_running + 1), "
        "daily_limit = @daily, monthly_limit = @monthly, concurrent_limit = @concurrent, "
        f"daily_warning_at = IF(daily_warning_at IS NULL AND "
        f"(pipelines_run_today + 1) * {denominator} >= @daily * {numerator}, @now, daily_warning_at), "
        f"monthly_warning_at = IF(monthly_warning_at IS NULL AND "
        f"(pipelines_run_month + 1) * {denominator} >= @monthly * {numerator}, @now, monthly_warning_at), "
        "last_updated = @now "
        "WHERE usage_id = @usage_id AND pipelines_run_today < @daily AND pipelines_run_month < @monthly "
        "AND concurrent_pipelines_running < @concurrent"
    )
    return _run_dml(sql, params) > 0


def _run_dml(sql: str, params: list[Any]) -> int:
    """Run one DML statement; the rows it matched.

    A concurrent-update abort (real BigQuery, when another statement changed the same table) is
    retried by the gateway's policy: our conditional statements are safe to run again.
    """
    gateway = central_repository(TenantUsageQuota).gateway
    return gateway.query(sql, params).affected_rows or 0


def _exists_key(dataset: str, tenant_id: str, day: date) -> str:
    return f"cvg:usage-row:v1:{dataset}:{tenant_id}:{day:%Y%m%d}"


def _add_counts(repository: Any, chunk: list[tuple[tuple[str, date], int]]) -> int:
    """One UPDATE adding each row's count (a CASE arm per row); returns how many rows it matched."""
    params: list[Any] = []
    arms = []
    ids = []
    for index, ((tenant_id, day), value) in enumerate(chunk):
        usage_id = usage_id_for(tenant_id, day)
        ids.append(usage_id)
        params.append(bigquery.ScalarQueryParameter(f"u{index}", "STRING", usage_id))
        params.append(bigquery.ScalarQueryParameter(f"n{index}", "INT64", value))
        arms.append(f"WHEN @u{index} THEN @n{index}")
    params.append(bigquery.ArrayQueryParameter("ids", "STRING", ids))
    sql = (
        f"UPDATE {repository.table} SET total_api_calls_today = COALESCE(total_api_calls_today, 0) + "
        f"CASE usage_id {' '.join(arms)} ELSE 0 END WHERE usage_id IN UNNEST(@ids)"
    )
    return _run_dml(sql, params)


def _usage_row(tenant_id: str, day: date) -> TenantUsageQuota | None:
    return central_repository(TenantUsageQuota).find(usage_id_for(tenant_id, day))


def _figures(row: TenantUsageQuota, limits: EffectiveLimits) -> dict[str, int | None]:
    return {
        "pipelines_run_today": row.pipelines_run_today,
        "pipelines_run_month": row.pipelines_run_month,
        "concurrent_pipelines_running": row.concurrent_pipelines_running,
        "daily_limit": limits.daily_limit,
        "monthly_limit": limits.monthly_limit,
        "concurrent_limit": limits.concurrent_limit,
    }


def _exceeded(row: TenantUsageQuota, limits: EffectiveLimits, now: datetime) -> QuotaExceeded | None:
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


def _admission(before: TenantUsageQuota, limits: EffectiveLimits) -> Admission:
    """The admission's figures: the row as read before the UPDATE, plus this run."""
    numerator, denominator = WARNING_RATIO
    run_today, run_month = before.pipelines_run_today + 1, before.pipelines_run_month + 1
    raised = []
    # The same test as the UPDATE's: this run crossed 80% if the flag was empty and now qualifies.
    if before.daily_warning_at is None and run_today * denominator >= limits.daily_limit * numerator:
        raised.append(DAILY)
    if before.monthly_warning_at is None and run_month * denominator >= limits.monthly_limit * numerator:
        raised.append(MONTHLY)
    if raised:
        logger.info("tenant %s reached 80%% of its %s run limit", before.tenant_id, " and ".join(raised))
    return Admission(
        tenant_id=before.tenant_id,
        usage_date=before.usage_date,
        pipelines_run_today=run_today,
        pipelines_run_month=run_month,
        concurrent_pipelines_running=before.concurrent_pipelines_running + 1,
        daily_limit=limits.daily_limit,
        monthly_limit=limits.monthly_limit,
        concurrent_limit=limits.concurrent_limit,
        warnings_raised=tuple(raised),
    )


def _seconds_to_midnight(now: datetime) -> int:
    moment = now.astimezone(UTC)
    midnight = datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return max(1, int((midnight - moment).total_seconds() + 0.999))


def _seconds_to_next_month(now: datetime) -> int:
    moment = now.astimezone(UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    start = datetime(year, month, 1, tzinfo=UTC)
    return max(1, int((start - moment).total_seconds() + 0.999))
