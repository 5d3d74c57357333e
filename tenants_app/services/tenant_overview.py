"""Everything the portal's tenant page shows, read in a small constant number of BigQuery jobs.

The reads are independent of each other, so they run side by side in a small thread pool: the page
then waits for the slowest read instead of their sum. Steps and data-quality results of the shown runs
come in one query each (`pipeline_logging_id IN ...`), never one per run, so the job count does not
depend on how many keys, credentials, configs or runs the tenant has.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from django.utils import timezone

from bigquery_backend.exceptions import InvalidIdentifier, NotFound
from tenants_app.log_context import ContextThreadPoolExecutor
from tenants_app.models import (
    RunState,
    TenantApiKey,
    TenantCloudCredential,
    TenantDqResult,
    TenantPipelineConfig,
    TenantPipelineExecutionQueue,
    TenantPipelineRun,
    TenantProfile,
    TenantStepLog,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.datasets import check_tenant_id
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.quota_rules import limit_stops_work
from tenants_app.services.run_tenant_rows import TenantRows, tenant_rows_merged, tenant_rows_waiting
from tenants_app.services.subscription_selectors import (
    EffectiveLimits,
    subscription_effective_limits,
    subscription_effective_status,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

RECENT_RUNS = 10
TREND_DAYS = 30
# Bounds that keep one page's rows (and HTML) small whatever a tenant has accumulated.
MAX_KEYS = 100
MAX_CREDENTIALS = 100
MAX_CONFIGS = 100
MAX_STEPS = 500
MAX_DQ_RESULTS = 200
_POOL_SIZE = 4


@dataclass(frozen=True)
class UsageFigure:
    """One usage counter against its limit (None: no limit applies)."""

    label: str
    used: int
    limit: int | None
    # Runs of the tenant waiting for a slot, on the concurrent figure only (None on the others).
    waiting: int | None = None

    @property
    def ratio(self) -> float | None:
        if not self.limit:
            return None
        return self.used / self.limit

    @property
    def percent(self) -> int | None:
        ratio = self.ratio
        return None if ratio is None else round(ratio * 100)

    @property
    def bar_percent(self) -> int:
        """The width of its bar: the percentage, capped at 100."""
        return min(self.percent or 0, 100)

    @property
    def flagged(self) -> bool:
        """Flagged only when the limit stops work, by the quota dashboard's rule."""
        return limit_stops_work(used=self.used, limit=self.limit, waiting=self.waiting)


@dataclass
class RunDetail:
    """A pipeline run from the tenant's dataset with its step logs and data-quality results."""

    run: TenantPipelineRun
    steps: list[TenantStepLog] = field(default_factory=list)
    dq_results: list[TenantDqResult] = field(default_factory=list)


@dataclass
class TenantOverview:
    """The tenant page's data; secret columns are blanked on every row it holds."""

    profile: TenantProfile
    subscription: TenantSubscription | None
    # The limits in force (the plan's figure where the subscription has none); None without one.
    limits: EffectiveLimits | None
    # The subscription's status as it applies today: a TRIAL past its end date counts as EXPIRED.
    subscription_status: str | None
    usage_day: date
    usage_today: TenantUsageQuota | None
    usage_figures: list[UsageFigure]
    api_calls_today: int
    # Runs per day for the last TREND_DAYS days up to today, oldest first, days without a row as 0.
    trend: list[tuple[date, int]]
    api_keys: list[TenantApiKey]
    credentials: list[TenantCloudCredential]
    pipeline_configs: list[TenantPipelineConfig]
    runs: list[RunDetail]
    # True when the tenant's own dataset (or its tables) cannot be found: the rest still shows.
    dataset_missing: bool = False


def tenant_overview(
    *, tenant_id: str, runs: int = RECENT_RUNS, now: datetime | None = None
) -> TenantOverview:
    """Profile, subscription, usage, keys, credentials, configs, waiting runs and recent runs: at most
    10 jobs."""
    try:
        check_tenant_id(tenant_id)
    except InvalidIdentifier:
        raise DoesNotExist(f"tenant {tenant_id!r} does not exist") from None
    today = (now or timezone.now()).astimezone(UTC).date()
    month_start = today.replace(day=1)
    trend_start = today - timedelta(days=TREND_DAYS - 1)

    reads: dict[str, Callable[[], Any]] = {
        "profile": lambda: central_repository(TenantProfile).find(tenant_id),
        "subscription": lambda: _first(
            central_repository(TenantSubscription).list(
                filters={"tenant_id": tenant_id}, order_by=("-created_at",), limit=1
            )
        ),
        # The daily rows of the trend and of this month (at most 31 days): today's counters, the month
        # total from the month's newest row, and the trend chart, in one job.
        "usage": lambda: central_repository(TenantUsageQuota).list(
            filters={
                "tenant_id": tenant_id,
                "usage_date__gte": min(month_start, trend_start),
                "usage_date__lte": today,
            },
            order_by=("-usage_date", "-last_updated"),
            limit=2 * TREND_DAYS + 2,
        ),
        "keys": lambda: central_repository(TenantApiKey).list(
            filters={"tenant_id": tenant_id}, order_by=("-created_at",), limit=MAX_KEYS
        ),
        "credentials": lambda: central_repository(TenantCloudCredential).list(
            filters={"tenant_id": tenant_id}, order_by=("-created_at",), limit=MAX_CREDENTIALS
        ),
        "configs": lambda: central_repository(TenantPipelineConfig).list(
            filters={"tenant_id": tenant_id}, order_by=("priority", "config_id"), limit=MAX_CONFIGS
        ),
        "runs": lambda: _tenant_runs(tenant_id, runs),
        # Rows of reports not yet written to the tenant's dataset (run_tenant_rows.py).
        "pending": lambda: tenant_rows_waiting(tenant_id=tenant_id),
        # Whether a full concurrent limit holds runs back (see UsageFigure.flagged).
        "waiting": lambda: central_repository(TenantPipelineExecutionQueue).count(
            filters={"tenant_id": tenant_id, "state": RunState.QUEUED}
        ),
    }
    with bigquery_errors_translated():
        results = _run_all(reads)
        profile: TenantProfile | None = results["profile"]
        if profile is None:
            raise DoesNotExist(f"tenant {tenant_id!r} does not exist")
        recent_runs, dataset_missing = results["runs"]
        details = _with_steps_and_results(tenant_id, recent_runs) if recent_runs else []
        if results["pending"] and not dataset_missing:
            details = _with_pending(details, results["pending"], limit=runs)

    subscription: TenantSubscription | None = results["subscription"]
    by_day: dict[date, TenantUsageQuota] = {}
    for row in results["usage"]:
        # No unique constraint in BigQuery: of two rows for one day, the last written counts.
        by_day.setdefault(row.usage_date, row)
    usage_today = by_day.get(today)
    newest_usage = next((by_day[day] for day in sorted(by_day, reverse=True) if day >= month_start), None)
    return TenantOverview(
        profile=profile,
        subscription=subscription,
        limits=_limits(subscription),
        subscription_status=(
            subscription_effective_status(subscription=subscription, today=today) if subscription else None
        ),
        usage_day=today,
        usage_today=usage_today,
        usage_figures=_usage_figures(subscription, usage_today, newest_usage, waiting=results["waiting"]),
        api_calls_today=(usage_today.total_api_calls_today or 0) if usage_today else 0,
        trend=[
            (day, int(by_day[day].pipelines_run_today or 0) if day in by_day else 0)
            for day in (trend_start + timedelta(days=offset) for offset in range(TREND_DAYS))
        ],
        api_keys=[_without_key_secrets(row) for row in results["keys"]],
        credentials=[_without_credential_secrets(row) for row in results["credentials"]],
        pipeline_configs=results["configs"],
        runs=details,
        dataset_missing=dataset_missing,
    )


def _run_all(reads: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run the reads concurrently; the first error (in declaration order) is raised."""
    with ContextThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="tenant-overview") as pool:
        futures = {name: pool.submit(read) for name, read in reads.items()}
        return {name: future.result() for name, future in futures.items()}


def _first(rows: list[T]) -> T | None:
    return rows[0] if rows else None


def _limits(subscription: TenantSubscription | None) -> EffectiveLimits | None:
    if subscription is None:
        return None
    try:
        return subscription_effective_limits(subscription=subscription)
    except ValidationFailed:
        # A plan name the catalogue does not know (a row from the original system): show its columns only.
        return None


def _tenant_runs(tenant_id: str, limit: int) -> tuple[list[TenantPipelineRun], bool]:
    """The newest runs, and whether the tenant's dataset is missing (then no runs)."""
    try:
        rows = tenant_repository(TenantPipelineRun, tenant_id).list(order_by=("-start_time",), limit=limit)
    except NotFound:
        # Not an outage: a tenant onboarded before its dataset existed, or offboarded with a purge.
        logger.info("tenant %s has no dataset (or no runs table): its page shows no runs", tenant_id)
        return [], True
    return rows, False


def _with_steps_and_results(tenant_id: str, runs: list[TenantPipelineRun]) -> list[RunDetail]:
    """Attach steps and DQ results to the runs: two jobs for all runs together, run side by side."""
    ids = [run.pipeline_logging_id for run in runs]
    results = _run_all(
        {
            "steps": lambda: tenant_repository(TenantStepLog, tenant_id).list(
                filters={"pipeline_logging_id__in": ids},
                order_by=("pipeline_logging_id", "step_index"),
                limit=MAX_STEPS,
            ),
            "dq": lambda: tenant_repository(TenantDqResult, tenant_id).list(
                filters={"pipeline_logging_id__in": ids},
                order_by=("pipeline_logging_id", "-executed_at"),
                limit=MAX_DQ_RESULTS,
            ),
        }
    )
    steps: dict[str, list[TenantStepLog]] = defaultdict(list)
    for step in results["steps"]:
        steps[step.pipeline_logging_id].append(step)
    checks: dict[str, list[TenantDqResult]] = defaultdict(list)
    for result in results["dq"]:
        checks[result.pipeline_logging_id].append(result)
    return [
        RunDetail(run=run, steps=steps[run.pipeline_logging_id], dq_results=checks[run.pipeline_logging_id])
        for run in runs
    ]


def _with_pending(details: list[RunDetail], pending: list[TenantRows], *, limit: int) -> list[RunDetail]:
    """The newest runs once the rows not yet written to the dataset are counted in."""
    executions, steps, checks = tenant_rows_merged(
        executions=[detail.run for detail in details],
        steps=[step for detail in details for step in detail.steps],
        checks=[check for detail in details for check in detail.dq_results],
        pending=pending,
    )
    newest = sorted(executions, key=lambda run: run.start_time, reverse=True)[:limit]
    by_run: dict[str, RunDetail] = {
        run.pipeline_logging_id: RunDetail(run=run, steps=[], dq_results=[]) for run in newest
    }
    for step in sorted(steps, key=lambda step: step.step_index):
        if step.pipeline_logging_id in by_run:
            by_run[step.pipeline_logging_id].steps.append(step)
    for check in sorted(checks, key=lambda check: check.executed_at, reverse=True):
        if check.pipeline_logging_id in by_run:
            by_run[check.pipeline_logging_id].dq_results.append(check)
    return list(by_run.values())


def _usage_figures(
    subscription: TenantSubscription | None,
    today: TenantUsageQuota | None,
    newest: TenantUsageQuota | None,
    *,
    waiting: int,
) -> list[UsageFigure]:
    """Runs today, this month and running now, against the subscription's limits."""

    def limit(name: str) -> int | None:
        # The subscription holds the limits in force (a plan change updates it first); the usage row's
        # copy is the fallback for tenants of the original system without a subscription row.
        for source in (subscription, today, newest):
            value = getattr(source, name, None) if source is not None else None
            if value is not None:
                return int(value)
        return None

    return [
        UsageFigure("Runs today", int(today.pipelines_run_today or 0) if today else 0, limit("daily_limit")),
        UsageFigure(
            "Runs this month", int(newest.pipelines_run_month or 0) if newest else 0, limit("monthly_limit")
        ),
        UsageFigure(
            "Running now",
            int(today.concurrent_pipelines_running or 0) if today else 0,
            limit("concurrent_limit"),
            waiting=waiting,
        ),
    ]


def _without_key_secrets(row: TenantApiKey) -> TenantApiKey:
    # Neither the hash (brute-forceable for short secrets) nor the ciphertext ever leaves this module.
    row.api_key_hash = ""
    row.encrypted_api_key = None
    return row


def _without_credential_secrets(row: TenantCloudCredential) -> TenantCloudCredential:
    row.encrypted_credentials = b""
    return row
