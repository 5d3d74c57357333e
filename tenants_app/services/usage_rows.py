"""The day's usage rows: create them (carrying the month over), roll the day over, count API calls.

Counters live in the tenant's usage row of the day (`tenant_usage_quotas`, usage_id
`{tenant_id}_{YYYYMMDD}`, UTC days); admission and release on those rows are in quota_batches.py (and
quotas.py for one run). A day's row is created by the first admission or API call of the day, or ahead
of them by `usage_roll_over`, always insert-if-absent.

Carry-over between days (done when a day's row is created):
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

Counter changes are not audited: they happen per run, and the runs themselves are the trail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.batch_source import zipped_rows
from tenants_app.models import (
    WORKING_TENANT_STATUSES,
    RunState,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.actors import system_actor
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.onboarding import usage_id_for
from tenants_app.services.plans import OPERATION_RUN, statuses_allowing
from tenants_app.services.quota_rules import quota_day, run_usage_dml
from tenants_app.services.subscription_status import subscription_expire_trials

logger = logging.getLogger(__name__)

# API-call counts per UPDATE (and rows created per insert-if-absent MERGE before it).
_API_CALLS_CHUNK = 200
_EXISTS_TTL = 3 * 86_400
# Month totals carry from the previous row of the month: retention must keep a month and a day.
MIN_RETENTION_DAYS = 32


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
    return run_usage_dml(sql, params)


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
        bigquery.ArrayQueryParameter("tenant_statuses", "STRING", list(WORKING_TENANT_STATUSES)),
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
    actor: str = system_actor("roll_over_usage"),
) -> RolloverReport:
    """Start a day: expire ended trials, create every working tenant's usage row, drop rows past retention.

    A constant number of statements whatever the number of tenants (trial expiry: up to 4; rows: one
    MERGE between two counts; retention: one DELETE). Idempotent and safe concurrently: expiry is a
    conditional UPDATE, rows are insert-if-absent, the DELETE removes what is old whoever runs it.
    Counts are approximate while admissions or another run create rows at the same moment.
    """
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


def _exists_key(dataset: str, tenant_id: str, day: date) -> str:
    return f"cvg:usage-row:v1:{dataset}:{tenant_id}:{day:%Y%m%d}"


def _add_counts(repository: Any, chunk: list[tuple[tuple[str, date], int]]) -> int:
    """One UPDATE adding each row's count (rows joined from array parameters); how many rows it matched."""
    source, params = zipped_rows(
        {
            "id": ("STRING", [usage_id_for(tenant_id, day) for (tenant_id, day), _ in chunk]),
            "n": ("INT64", [value for _, value in chunk]),
        },
        prefix="a",
    )
    sql = (
        f"UPDATE {repository.table} AS u "
        "SET total_api_calls_today = COALESCE(u.total_api_calls_today, 0) + g.n "
        f"FROM ({source}) AS g WHERE u.usage_id = g.id"
    )
    return run_usage_dml(sql, params)
