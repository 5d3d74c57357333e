"""The scheduler's status on the dashboard: due now, queued, running, failed today, median duration."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tenants_app.models import (
    RunState,
    TenantPipelineConfig,
    TenantPipelineExecutionQueue,
    TenantScheduledPipelineRun,
)
from tenants_app.repositories import central_repository
from tenants_app.services.dashboard import SCHEDULER_STATUS_CACHE_SECONDS, scheduler_status
from tests.tenants_app.services.schedules import config_row

NOW = datetime(2031, 5, 6, 15, 0, tzinfo=UTC)

pytestmark = pytest.mark.usefixtures("central")


def run(state: str, *, started: datetime | None = None, ended: datetime | None = None) -> None:
    """A run row (and its queue entry) in `state`; a final one ended at `ended`."""
    run_id = f"r_{uuid.uuid4().hex[:12]}"
    common = {
        "run_id": run_id,
        "tenant_id": "t_status",
        "pipeline_id": "sql_transform",
        "state": state,
        "scheduled_time": (started or NOW) - timedelta(minutes=1),
    }
    central_repository(TenantScheduledPipelineRun).insert(
        TenantScheduledPipelineRun(
            config_id="c",
            started_at=started,
            completed_at=ended if state == RunState.SUCCEEDED else None,
            failed_at=ended if state == RunState.FAILED else None,
            **common,
        )
    )
    central_repository(TenantPipelineExecutionQueue).insert(TenantPipelineExecutionQueue(**common))


def test_it_counts_due_queued_running_and_todays_failures_with_the_median_duration() -> None:
    assert scheduler_status(now=NOW).median_duration is None  # nothing ended yet
    due, later = NOW - timedelta(minutes=1), NOW + timedelta(minutes=5)
    central_repository(TenantPipelineConfig).insert(
        config_row("t_status", 0, next_run_time=due),
        config_row("t_status", 1, next_run_time=due),
        config_row("t_status", 2, next_run_time=later),
        config_row("t_status", 3, next_run_time=due, is_active=False),
    )
    for _ in range(3):
        run(RunState.QUEUED)
    run(RunState.RUNNING, started=NOW - timedelta(minutes=2))
    for seconds in (60, 120, 300):
        start = NOW - timedelta(hours=1)
        run(RunState.SUCCEEDED, started=start, ended=start + timedelta(seconds=seconds))
    run(RunState.FAILED, ended=NOW - timedelta(minutes=10))  # never started: counted, no duration
    run(RunState.FAILED, started=NOW - timedelta(days=1, hours=2), ended=NOW - timedelta(days=1))  # yesterday

    status = scheduler_status(now=NOW + timedelta(seconds=SCHEDULER_STATUS_CACHE_SECONDS + 1))

    assert (status.due_now, status.queued, status.running) == (2, 3, 1)
    assert (status.failed_today, status.finished_today) == (1, 4)
    assert status.median_duration == timedelta(seconds=120)


def test_it_reads_bigquery_once_per_cache_period() -> None:
    first = scheduler_status(now=NOW)
    run(RunState.QUEUED)
    assert scheduler_status(now=NOW + timedelta(seconds=SCHEDULER_STATUS_CACHE_SECONDS - 1)) == first
    fresh = scheduler_status(now=NOW + timedelta(seconds=SCHEDULER_STATUS_CACHE_SECONDS))
    assert fresh.queued == first.queued + 1
