"""The quota dashboard: every tenant's usage today against its limits, one tenant's daily trend, and the
scheduler's status (due now, queued, running, failed today, median duration: one job, cached).

Both are aggregates the repository cannot express (a join of profiles, the newest subscription and
the newest usage row per tenant), so they are single SQL statements through the gateway, with table
names from `quote_table` and every value a query parameter. A dashboard page costs two jobs (the page,
then the totals by plan, which also give the page count; both run side by side) and a trend one, whatever
the number of tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.client import QueryParameter, get_gateway
from bigquery_backend.identifiers import quote_table
from bigquery_backend.schema import table_definition
from tenants_app.log_context import ContextThreadPoolExecutor
from tenants_app.models import (
    CLOSED_TENANT_STATUSES,
    PlanName,
    RunState,
    TenantPipelineConfig,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantScheduledPipelineRun,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.datasets import central_dataset
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.quota_rules import WARNING_RATIO, WARNING_SHARE, at_warning

# A limit is flagged only when it stops work: runs today or this month at the same 80% that sets the
# quota warnings (integers in SQL, as admission compares them), or running at the concurrent limit with
# runs of the tenant waiting. A STARTER tenant running its one allowed run with nothing queued is fine.
PRESSURE_THRESHOLD = WARNING_SHARE
MAX_PAGE_SIZE = 200
MAX_TREND_DAYS = 366
SCHEDULER_STATUS_CACHE_SECONDS = 15
STATUS_LOOKBACK_DAYS = 7
_STATUS_CACHE_KEY = "dashboard:scheduler-status:v1"
# Offboarded tenants run nothing and would only pad the page.
NO_PLAN = "(none)"


@dataclass(frozen=True)
class TenantQuota:
    """One tenant's figures for the day, against the limits in force."""

    tenant_id: str
    company_name: str
    status: str
    plan: str
    subscription_status: str | None
    runs_today: int
    succeeded_today: int
    failed_today: int
    runs_month: int
    concurrent: int
    daily_limit: int | None
    monthly_limit: int | None
    concurrent_limit: int | None
    has_usage_today: bool
    # The highest share of a limit that counts (the concurrent one only while it holds runs back).
    pressure: float
    # QUEUED runs of the tenant now (on the dashboard of today; 0 for another day).
    waiting: int = 0
    # Whether a limit stops work (see PRESSURE_THRESHOLD), and whether the concurrent one does.
    flagged: bool = False
    concurrent_blocks: bool = False

    @property
    def daily_ratio(self) -> float:
        return _ratio(self.runs_today, self.daily_limit)

    @property
    def monthly_ratio(self) -> float:
        return _ratio(self.runs_month, self.monthly_limit)

    @property
    def concurrent_ratio(self) -> float:
        return _ratio(self.concurrent, self.concurrent_limit)

    @property
    def pressure_on(self) -> str | None:
        """Which counted limit is closest (`daily`, `monthly`, `concurrent`), or None with no pressure."""
        if self.pressure <= 0:
            return None
        ratios = {"daily": self.daily_ratio, "monthly": self.monthly_ratio}
        if self.concurrent_blocks:
            ratios["concurrent"] = self.concurrent_ratio
        return max(ratios, key=lambda name: ratios[name])


@dataclass(frozen=True)
class PlanTotals:
    """Sums over the tenants of one plan."""

    plan: str
    tenants: int
    runs_today: int
    runs_month: int
    concurrent: int
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int
    flagged: int

    @property
    def daily_ratio(self) -> float:
        return _ratio(self.runs_today, self.daily_limit)

    @property
    def monthly_ratio(self) -> float:
        return _ratio(self.runs_month, self.monthly_limit)


@dataclass(frozen=True)
class QuotaDashboard:
    """One page of tenants sorted by pressure (highest first), the total, and the totals by plan."""

    day: date
    rows: list[TenantQuota]
    total: int
    limit: int
    offset: int
    plan: str | None
    flagged_only: bool
    plans: list[PlanTotals]
    threshold: float = PRESSURE_THRESHOLD

    @property
    def overall(self) -> PlanTotals:
        """The totals over every plan."""
        return PlanTotals(
            plan="all",
            **{
                name: sum(getattr(totals, name) for totals in self.plans)
                for name in (
                    "tenants",
                    "runs_today",
                    "runs_month",
                    "concurrent",
                    "daily_limit",
                    "monthly_limit",
                    "concurrent_limit",
                    "flagged",
                )
            },
        )


@dataclass(frozen=True)
class TrendDay:
    """One day of a tenant's usage; days without a usage row are zeros with no limit of their own."""

    day: date
    runs: int
    succeeded: int
    failed: int
    runs_month: int
    daily_limit: int | None
    recorded: bool = True


@dataclass(frozen=True)
class UsageTrend:
    """A tenant's daily runs over a period, oldest day first, with the limits in force now."""

    tenant_id: str
    company_name: str
    status: str
    plan: str
    daily_limit: int | None
    monthly_limit: int | None
    concurrent_limit: int | None
    days: list[TrendDay]

    @property
    def total_runs(self) -> int:
        return sum(day.runs for day in self.days)

    @property
    def peak(self) -> TrendDay | None:
        return max(self.days, key=lambda day: day.runs, default=None)

    @property
    def days_over_threshold(self) -> int:
        """Days whose runs reached WARNING_RATIO (80%) of that day's limit (or today's, for days without)."""
        return sum(
            1 for day in self.days if at_warning(used=day.runs, limit=day.daily_limit or self.daily_limit)
        )


@dataclass(frozen=True)
class SchedulerStatus:
    """The scheduler at a glance: configs due now, queue by state, and today's (UTC) finished runs."""

    at: datetime
    due_now: int  # active configs whose next run time has come (the scheduler enqueues them next)
    queued: int
    running: int
    failed_today: int  # runs that failed for good today
    finished_today: int  # runs that ended today, SUCCEEDED or FAILED
    median_duration: timedelta | None  # of the runs that ended today, None when none did


# --- services ---------------------------------------------------------------------------------------
def quota_dashboard(
    *,
    day: date | None = None,
    plan: str | None = None,
    flagged_only: bool = False,
    limit: int = 50,
    offset: int = 0,
    today: date | None = None,
) -> QuotaDashboard:
    """One page of tenants' usage on `day` (default `today`, UTC) against their limits: two jobs.

    `today` (default: the clock's UTC day) is the day whose dashboard also counts the runs waiting now.
    """
    errors: dict[str, list[str]] = {}
    if plan is not None and plan not in PlanName.values:
        errors["plan"] = [f"Choose one of {', '.join(PlanName.values)}."]
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        errors["limit"] = [f"Use 1 to {MAX_PAGE_SIZE}."]
    if not isinstance(offset, int) or offset < 0:
        errors["offset"] = ["Use 0 or more."]
    if day is not None and (not isinstance(day, date) or isinstance(day, datetime)):
        errors["day"] = ["Give a date."]
    if errors:
        raise ValidationFailed("invalid dashboard filter", errors=errors)
    today = today or _today()
    day = day or today

    base, parameters = _pressure_sql(day, today=today)
    page_parameters = [
        *parameters,
        bigquery.ScalarQueryParameter("plan", "STRING", plan),
        bigquery.ScalarQueryParameter("flagged_only", "BOOL", flagged_only),
        bigquery.ScalarQueryParameter("limit", "INT64", limit),
        bigquery.ScalarQueryParameter("offset", "INT64", offset),
    ]
    page_sql = (
        f"{base} SELECT * FROM pressure"
        " WHERE (@plan IS NULL OR plan = @plan) AND (NOT @flagged_only OR flagged)"
        " ORDER BY flagged DESC, pressure DESC, tenant_id LIMIT @limit OFFSET @offset"
    )
    totals_sql = (
        f"{base} SELECT plan, COUNT(*) AS tenants,"
        " SUM(runs_today) AS runs_today, SUM(runs_month) AS runs_month, SUM(concurrent) AS concurrent,"
        " SUM(IFNULL(daily_limit, 0)) AS daily_limit, SUM(IFNULL(monthly_limit, 0)) AS monthly_limit,"
        " SUM(IFNULL(concurrent_limit, 0)) AS concurrent_limit,"
        " COUNTIF(flagged) AS flagged"
        " FROM pressure GROUP BY plan ORDER BY plan"
    )
    gateway = get_gateway()
    # The two statements are independent: side by side, the page waits for the slower one only.
    with (
        bigquery_errors_translated(),
        ContextThreadPoolExecutor(max_workers=2, thread_name_prefix="quota-dashboard") as pool,
    ):
        page_job = pool.submit(gateway.query, page_sql, page_parameters)
        totals_job = pool.submit(gateway.query, totals_sql, parameters)
        rows, plan_rows = page_job.result().rows, totals_job.result().rows
    plans = [
        PlanTotals(**{name: _int(value) if name != "plan" else value for name, value in r.items()})
        for r in plan_rows
    ]
    shown = [totals for totals in plans if plan is None or totals.plan == plan]
    total = sum(totals.flagged if flagged_only else totals.tenants for totals in shown)
    return QuotaDashboard(
        day=day,
        rows=[_tenant_quota(row) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
        plan=plan,
        flagged_only=flagged_only,
        plans=plans,
    )


def usage_trend(*, tenant_id: str, days: int = 30, until: date | None = None) -> UsageTrend:
    """The tenant's runs per day for the `days` days up to `until` (default today), zero-filled: one job."""
    if not isinstance(days, int) or not 1 <= days <= MAX_TREND_DAYS:
        raise ValidationFailed("invalid period", errors={"days": [f"Use 1 to {MAX_TREND_DAYS}."]})
    last = until or _today()
    first = last - timedelta(days=days - 1)
    profiles, subscriptions, usage = _tables()
    # One row per usage day, each carrying the profile and newest subscription (LEFT JOIN ON TRUE):
    # a tenant without usage still comes back as one row, a missing tenant as none.
    sql = (
        "WITH profile AS ("
        f" SELECT tenant_id, company_name, status, subscription_plan FROM {profiles}"
        " WHERE tenant_id = @tenant_id LIMIT 1),"
        " subscription AS ("
        f" SELECT plan_name, daily_limit, monthly_limit, concurrent_limit FROM {subscriptions}"
        " WHERE tenant_id = @tenant_id"
        " QUALIFY ROW_NUMBER() OVER (ORDER BY created_at DESC) = 1),"
        " daily AS ("
        " SELECT usage_date, IFNULL(pipelines_run_today, 0) AS runs,"
        " IFNULL(pipelines_succeeded_today, 0) AS succeeded, IFNULL(pipelines_failed_today, 0) AS failed,"
        " IFNULL(pipelines_run_month, 0) AS runs_month, daily_limit AS day_limit"
        f" FROM {usage}"
        " WHERE tenant_id = @tenant_id AND usage_date BETWEEN @first AND @last"
        # No unique constraint in BigQuery: of two rows for one day, the last written counts.
        " QUALIFY ROW_NUMBER() OVER (PARTITION BY usage_date ORDER BY last_updated DESC) = 1)"
        " SELECT p.tenant_id, p.company_name, p.status, COALESCE(s.plan_name, p.subscription_plan) AS plan,"
        " s.daily_limit, s.monthly_limit, s.concurrent_limit,"
        " d.usage_date, d.runs, d.succeeded, d.failed, d.runs_month, d.day_limit"
        " FROM profile AS p LEFT JOIN subscription AS s ON TRUE LEFT JOIN daily AS d ON TRUE"
        " ORDER BY d.usage_date"
    )
    parameters: list[QueryParameter] = [
        bigquery.ScalarQueryParameter("tenant_id", "STRING", tenant_id),
        bigquery.ScalarQueryParameter("first", "DATE", first),
        bigquery.ScalarQueryParameter("last", "DATE", last),
    ]
    with bigquery_errors_translated():
        rows = get_gateway().query(sql, parameters).rows
    if not rows:
        raise DoesNotExist(f"tenant {tenant_id!r} does not exist")
    by_day = {row["usage_date"]: row for row in rows if row["usage_date"] is not None}
    head = rows[0]
    return UsageTrend(
        tenant_id=head["tenant_id"],
        company_name=head["company_name"],
        status=head["status"],
        plan=head["plan"] or NO_PLAN,
        daily_limit=_int_or_none(head["daily_limit"]),
        monthly_limit=_int_or_none(head["monthly_limit"]),
        concurrent_limit=_int_or_none(head["concurrent_limit"]),
        days=[
            _trend_day(first + timedelta(days=i), by_day.get(first + timedelta(days=i))) for i in range(days)
        ],
    )


def scheduler_status(*, now: datetime | None = None) -> SchedulerStatus:
    """The scheduler's figures from the shared cache while fresh (judged by `now`), else from one job.

    Every staff member's dashboard shows them, and each refresh would otherwise be a BigQuery job: the
    whole machine (or cluster, with Redis) reads them at most once per SCHEDULER_STATUS_CACHE_SECONDS.
    """
    now = timezone.now() if now is None else now
    cached = cache.get(_STATUS_CACHE_KEY)
    # The entry carries its deadline on the caller's clock: tests move that clock, not the backend's TTL.
    if cached is not None and cached["fresh_until"] > now:
        return cached["status"]
    status = _scheduler_status_query(now)
    fresh_until = now + timedelta(seconds=SCHEDULER_STATUS_CACHE_SECONDS)
    cache.set(
        _STATUS_CACHE_KEY, {"status": status, "fresh_until": fresh_until}, SCHEDULER_STATUS_CACHE_SECONDS
    )
    return status


def _scheduler_status_query(now: datetime) -> SchedulerStatus:
    gateway = get_gateway()
    configs, queue, runs = (
        quote_table(gateway.project, central_dataset(), table_definition(model).name)
        for model in (TenantPipelineConfig, TenantPipelineExecutionQueue, TenantScheduledPipelineRun)
    )
    day_start = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    # One statement, three scalar subqueries. A run ending today was scheduled at most a few days ago
    # (retries, backoff): the lower bound on the partitioning column keeps old partitions unread.
    sql = (
        f"SELECT (SELECT COUNT(*) FROM {configs} WHERE is_active AND next_run_time <= @now) AS due_now, "
        f"(SELECT COUNTIF(state = @queued) FROM {queue}) AS queued, "
        f"(SELECT COUNTIF(state = @running) FROM {queue}) AS running, "
        "(SELECT AS STRUCT COUNTIF(state = @failed) AS failed, COUNT(*) AS finished, "
        # [min, median, max]; runs that never started have no duration and are left out (NULL). The
        # median is picked in Python: the emulator's [OFFSET(1)] on this array returns the max.
        "APPROX_QUANTILES(TIMESTAMP_DIFF(COALESCE(completed_at, failed_at), started_at, MILLISECOND), 2) "
        "AS quantiles "
        f"FROM {runs} WHERE scheduled_time >= @oldest AND state IN UNNEST(@final) "
        "AND COALESCE(completed_at, failed_at) >= @day_start) AS today"
    )
    parameters: list[QueryParameter] = [
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
        bigquery.ScalarQueryParameter("day_start", "TIMESTAMP", day_start),
        bigquery.ScalarQueryParameter(
            "oldest", "TIMESTAMP", day_start - timedelta(days=STATUS_LOOKBACK_DAYS)
        ),
        bigquery.ScalarQueryParameter("queued", "STRING", RunState.QUEUED.value),
        bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING.value),
        bigquery.ScalarQueryParameter("failed", "STRING", RunState.FAILED.value),
        bigquery.ArrayQueryParameter("final", "STRING", [RunState.SUCCEEDED.value, RunState.FAILED.value]),
    ]
    with bigquery_errors_translated():
        [row] = gateway.query(sql, parameters).rows
    today = row["today"] or {}
    quantiles = today.get("quantiles") or []
    median = quantiles[1] if len(quantiles) == 3 else None
    return SchedulerStatus(
        at=now,
        due_now=_int(row["due_now"]),
        queued=_int(row["queued"]),
        running=_int(row["running"]),
        failed_today=_int(today.get("failed")),
        finished_today=_int(today.get("finished")),
        median_duration=None if median is None else timedelta(milliseconds=int(median)),
    )


# --- SQL --------------------------------------------------------------------------------------------
def _pressure_sql(day: date, *, today: date) -> tuple[str, list[QueryParameter]]:
    """`WITH ... pressure AS (...)`: one row per tenant with its figures, limits, pressure and flag."""
    profiles, subscriptions, usage = _tables()
    gateway = get_gateway()
    queue = quote_table(
        gateway.project, central_dataset(), table_definition(TenantPipelineExecutionQueue).name
    )
    ratio = "IFNULL(SAFE_DIVIDE({used}, {limit}), 0)"
    # used * 5 >= limit * 4: the admission's own 80% test, in integers.
    near = "IFNULL({limit} > 0 AND {used} * @warn_denominator >= {limit} * @warn_numerator, FALSE)"
    sql = (
        "WITH subscription AS ("
        " SELECT tenant_id, plan_name, status, daily_limit, monthly_limit, concurrent_limit"
        f" FROM {subscriptions}"
        " QUALIFY ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY created_at DESC) = 1),"
        # The newest usage row of the month: today's counters if it is today's, the month's total
        # either way (a tenant idle today still has the runs of earlier days this month).
        " usage AS ("
        " SELECT tenant_id, usage_date, pipelines_run_today, pipelines_succeeded_today,"
        " pipelines_failed_today, pipelines_run_month, concurrent_pipelines_running,"
        " daily_limit, monthly_limit, concurrent_limit"
        f" FROM {usage} WHERE usage_date BETWEEN @month_start AND @day"
        " QUALIFY ROW_NUMBER() OVER ("
        " PARTITION BY tenant_id ORDER BY usage_date DESC, last_updated DESC) = 1),"
        f" waiting AS (SELECT tenant_id, COUNT(*) AS waiting FROM {queue} WHERE state = @queued"
        " GROUP BY tenant_id),"
        " figures AS ("
        " SELECT p.tenant_id, p.company_name, p.status,"
        f" COALESCE(s.plan_name, p.subscription_plan, '{NO_PLAN}') AS plan,"
        " s.status AS subscription_status,"
        " u.usage_date IS NOT NULL AND u.usage_date = @day AS has_usage_today,"
        " IF(u.usage_date = @day, IFNULL(u.pipelines_run_today, 0), 0) AS runs_today,"
        " IF(u.usage_date = @day, IFNULL(u.pipelines_succeeded_today, 0), 0) AS succeeded_today,"
        " IF(u.usage_date = @day, IFNULL(u.pipelines_failed_today, 0), 0) AS failed_today,"
        " IFNULL(u.pipelines_run_month, 0) AS runs_month,"
        " IF(u.usage_date = @day, IFNULL(u.concurrent_pipelines_running, 0), 0) AS concurrent,"
        # The subscription holds the limits in force (plan changes and overrides write it first).
        " COALESCE(s.daily_limit, u.daily_limit) AS daily_limit,"
        " COALESCE(s.monthly_limit, u.monthly_limit) AS monthly_limit,"
        " COALESCE(s.concurrent_limit, u.concurrent_limit) AS concurrent_limit,"
        # The queue as it is now: it says nothing about another day.
        " IF(@day = @today, IFNULL(w.waiting, 0), 0) AS waiting"
        f" FROM {profiles} AS p"
        " LEFT JOIN subscription AS s ON s.tenant_id = p.tenant_id"
        " LEFT JOIN usage AS u ON u.tenant_id = p.tenant_id"
        " LEFT JOIN waiting AS w ON w.tenant_id = p.tenant_id"
        " WHERE p.status NOT IN UNNEST(@excluded)),"
        " hits AS ("
        " SELECT *, "
        + near.format(used="runs_today", limit="daily_limit")
        + " AS daily_hit, "
        + near.format(used="runs_month", limit="monthly_limit")
        + " AS monthly_hit,"
        " IFNULL(concurrent_limit > 0 AND concurrent >= concurrent_limit AND waiting > 0, FALSE)"
        " AS concurrent_blocks FROM figures),"
        " pressure AS ("
        " SELECT *, daily_hit OR monthly_hit OR concurrent_blocks AS flagged, GREATEST("
        + ratio.format(used="runs_today", limit="daily_limit")
        + ", "
        + ratio.format(used="runs_month", limit="monthly_limit")
        + ", IF(concurrent_blocks, "
        + ratio.format(used="concurrent", limit="concurrent_limit")
        + ", 0)) AS pressure FROM hits)"
    )
    parameters: list[QueryParameter] = [
        bigquery.ScalarQueryParameter("day", "DATE", day),
        bigquery.ScalarQueryParameter("today", "DATE", today),
        bigquery.ScalarQueryParameter("month_start", "DATE", day.replace(day=1)),
        bigquery.ScalarQueryParameter("warn_numerator", "INT64", WARNING_RATIO[0]),
        bigquery.ScalarQueryParameter("warn_denominator", "INT64", WARNING_RATIO[1]),
        bigquery.ScalarQueryParameter("queued", "STRING", RunState.QUEUED.value),
        bigquery.ArrayQueryParameter("excluded", "STRING", list(CLOSED_TENANT_STATUSES)),
    ]
    return sql, parameters


def _tables() -> tuple[str, str, str]:
    project, dataset = get_gateway().project, central_dataset()
    return tuple(  # type: ignore[return-value]
        quote_table(project, dataset, table_definition(model).name)
        for model in (TenantProfile, TenantSubscription, TenantUsageQuota)
    )


# --- rows -------------------------------------------------------------------------------------------
def _tenant_quota(row: dict[str, Any]) -> TenantQuota:
    return TenantQuota(
        tenant_id=row["tenant_id"],
        company_name=row["company_name"],
        status=row["status"],
        plan=row["plan"],
        subscription_status=row["subscription_status"],
        runs_today=_int(row["runs_today"]),
        succeeded_today=_int(row["succeeded_today"]),
        failed_today=_int(row["failed_today"]),
        runs_month=_int(row["runs_month"]),
        concurrent=_int(row["concurrent"]),
        daily_limit=_int_or_none(row["daily_limit"]),
        monthly_limit=_int_or_none(row["monthly_limit"]),
        concurrent_limit=_int_or_none(row["concurrent_limit"]),
        has_usage_today=bool(row["has_usage_today"]),
        pressure=float(row["pressure"] or 0),
        waiting=_int(row["waiting"]),
        flagged=bool(row["flagged"]),
        concurrent_blocks=bool(row["concurrent_blocks"]),
    )


def _trend_day(day: date, row: dict[str, Any] | None) -> TrendDay:
    if row is None:
        return TrendDay(
            day=day, runs=0, succeeded=0, failed=0, runs_month=0, daily_limit=None, recorded=False
        )
    return TrendDay(
        day=day,
        runs=_int(row["runs"]),
        succeeded=_int(row["succeeded"]),
        failed=_int(row["failed"]),
        runs_month=_int(row["runs_month"]),
        daily_limit=_int_or_none(row["day_limit"]),
    )


def _ratio(used: int, limit: int | None) -> float:
    return used / limit if limit else 0.0


def _int(value: Any) -> int:
    return int(value or 0)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _today() -> date:
    return timezone.now().astimezone(UTC).date()
