"""Periodic work: each job once per period with an injected clock, across "hosts", failures retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from bigquery_backend.repository import Part
from convergence.cache import embedded_cache
from tenants_app.models import RunState, TenantPipelineConfig, TenantPipelineRun, TenantScheduledPipelineRun
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.periodic import (
    DAY_SECONDS,
    FAILED,
    RAN,
    SKIPPED,
    PeriodicJob,
    TickReport,
    period_number,
    periodic_tick,
)
from tenants_app.services.run_claims import run_claim
from tenants_app.services.run_common import queue_repository
from tenants_app.services.run_reports import pipeline_logging_id, run_complete
from tests.tenants_app.services.quota_factories import usage
from tests.tenants_app.services.run_factories import enqueue, entry
from tests.tenants_app.services.schedules import add_tenant, config_row

NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Recorder:
    """A job body that records the times it ran at, and raises while `failures` is positive."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[datetime] = []
        self.failures = failures

    def __call__(self, now: datetime) -> str:
        self.calls.append(now)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("BigQuery is down")
        return "done"


def statuses(report: TickReport) -> dict[str, str]:
    return {outcome.name: outcome.status for outcome in report.outcomes}


def test_it_runs_each_job_once_per_period_at_the_right_times() -> None:
    minutely, five_minutes, daily = Recorder(), Recorder(), Recorder()
    jobs = [
        PeriodicJob("minutely", lambda: 60, minutely),
        PeriodicJob("five_minutes", lambda: 300, five_minutes),
        PeriodicJob("daily", lambda: DAY_SECONDS, daily),
    ]
    start = NOON - timedelta(seconds=10)
    # A tick every 5 s for 6 minutes, then the first ticks after the next midnight.
    ticks = [start + timedelta(seconds=5 * i) for i in range(73)]
    midnight = datetime(2026, 6, 2, tzinfo=UTC)
    ticks += [midnight - timedelta(seconds=5), midnight, midnight + timedelta(seconds=5)]

    for now in ticks:
        periodic_tick(now=now, jobs=jobs)

    minutes = [NOON + timedelta(minutes=m) for m in range(6)]
    assert minutely.calls == [start, *minutes, midnight - timedelta(seconds=5), midnight]
    assert five_minutes.calls == [
        start,
        NOON,
        NOON + timedelta(minutes=5),
        midnight - timedelta(seconds=5),
        midnight,
    ]
    # After midnight UTC, once a day (and in a process's first tick, whatever the hour).
    assert daily.calls == [start, midnight]


def test_it_runs_a_period_once_on_two_hosts_sharing_the_cache() -> None:
    job = Recorder()
    jobs = [PeriodicJob("minutely", lambda: 60, job)]

    first_host = periodic_tick(now=NOON + timedelta(seconds=1), jobs=jobs)
    # The other host's clock is a few seconds off, in the same minute.
    second_host = periodic_tick(now=NOON + timedelta(seconds=3), jobs=jobs)

    assert (statuses(first_host), statuses(second_host)) == ({"minutely": RAN}, {"minutely": SKIPPED})
    assert job.calls == [NOON + timedelta(seconds=1)]


def test_it_leaves_a_period_to_the_host_that_holds_it_while_its_job_runs() -> None:
    other_host: list[TickReport] = []

    def slow(now: datetime) -> str:
        # While this host's job runs, another host ticks in the same period.
        other_host.append(periodic_tick(now=now + timedelta(seconds=5), jobs=jobs))
        return "done"

    jobs = [PeriodicJob("minutely", lambda: 60, slow)]
    assert statuses(periodic_tick(now=NOON, jobs=jobs)) == {"minutely": RAN}
    assert [statuses(report) for report in other_host] == [{"minutely": SKIPPED}]


def test_it_runs_the_other_jobs_when_one_fails_and_retries_it_at_the_next_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing, healthy = Recorder(failures=1), Recorder()
    jobs = [PeriodicJob("failing", lambda: 60, failing), PeriodicJob("healthy", lambda: 60, healthy)]

    first = periodic_tick(now=NOON, jobs=jobs)
    second = periodic_tick(now=NOON + timedelta(seconds=5), jobs=jobs)
    third = periodic_tick(now=NOON + timedelta(seconds=10), jobs=jobs)

    assert statuses(first) == {"failing": FAILED, "healthy": RAN}
    assert [outcome.summary for outcome in first.failed] == ["RuntimeError: BigQuery is down"]
    # The same minute: retried (the failed run's marker is gone), and once it succeeded, no more.
    assert statuses(second) == {"failing": RAN, "healthy": SKIPPED}
    assert statuses(third) == {"failing": SKIPPED, "healthy": SKIPPED}
    assert failing.calls == [NOON, NOON + timedelta(seconds=5)]
    assert any("periodic job failing failed" in record.getMessage() for record in caplog.records)


def test_it_runs_the_jobs_when_the_cache_is_unavailable(settings: Any, tmp_path: Path) -> None:
    job = Recorder()
    # The markers only save work: a broken cache must not stop the scheduler.
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("")
    settings.CACHES = {"default": embedded_cache(not_a_directory)}
    report = periodic_tick(now=NOON, jobs=[PeriodicJob("minutely", lambda: 60, job)])
    assert statuses(report) == {"minutely": RAN}


def test_it_stops_between_jobs_when_asked() -> None:
    first, second = Recorder(), Recorder()
    asked = iter([False, True])
    jobs = [PeriodicJob("first", lambda: 60, first), PeriodicJob("second", lambda: 60, second)]

    report = periodic_tick(now=NOON, jobs=jobs, stopping=lambda: next(asked))

    assert statuses(report) == {"first": RAN}
    assert (len(first.calls), second.calls) == (1, [])


def test_it_runs_the_scheduler_the_orphan_cleanup_and_the_rollover(central_dataset: str) -> None:
    bigquery_bootstrap()
    # Today (the rollover refuses a future day), well inside a minute, five minutes and a day.
    now = timezone.now().replace(hour=0, minute=1, second=10, microsecond=0)
    minute = now.replace(second=0)
    tenant_id = add_tenant(prefix="periodic")
    config = config_row(tenant_id, next_run_time=minute)
    central_repository(TenantPipelineConfig).insert(config)
    orphan = enqueue(tenant_id)
    # Claimed yesterday, so that today's usage row can come from the rollover only.
    yesterday = now - timedelta(days=1)
    assert run_claim(worker_id="gone", tenant_id=tenant_id, lease_seconds=60, now=yesterday)

    report = periodic_tick(now=now)

    assert statuses(report) == {
        "schedule_pipelines": RAN,
        "cleanup_orphaned_runs": RAN,
        "write_tenant_rows": RAN,
        "roll_over_usage": RAN,
        "deliver_notifications": RAN,
        "notify_trials_and_keys_expiring": RAN,
    }
    runs = central_repository(TenantScheduledPipelineRun).list(filters={"config_id": config.config_id})
    assert [(run.scheduled_time, run.state) for run in runs] == [(minute, RunState.QUEUED)]
    assert entry(orphan).state == RunState.QUEUED
    assert usage(tenant_id, now.date()) is not None
    # A second tick in the same periods (this host or another) runs nothing.
    again = periodic_tick(now=now + timedelta(seconds=1))
    assert set(statuses(again).values()) == {SKIPPED}


def run_finished_with_rows(*, at: datetime) -> tuple[str, str, int]:
    """A tenant with its dataset and a run finished at `at` whose rows wait on its queue entry; the
    tenant's part of 6, as BigQuery computes it."""
    bigquery_bootstrap()
    tenant_id = add_tenant(prefix="rows")
    bigquery_bootstrap(tenant_id=tenant_id)
    run_id = enqueue(tenant_id)
    assert run_claim(worker_id="w", tenant_id=tenant_id, now=at)
    run_complete(run_id=run_id, worker_id="w", status="SUCCEEDED", now=at)
    (part,) = [
        index
        for index in range(6)
        if queue_repository().list(filters={"tenant_id": tenant_id, "tenant_id__part": Part(index, of=6)})
    ]
    return tenant_id, run_id, part


@override_settings(PERIODIC_TENANT_ROWS_SECONDS=60, PERIODIC_TENANT_ROWS_PARTS=6)
def test_it_writes_the_rows_of_finished_runs_into_the_tenants_dataset_when_its_part_comes_round(
    central_dataset: str,
) -> None:
    minute = timezone.now().replace(hour=0, minute=7, second=0, microsecond=0)
    tenant_id, run_id, part = run_finished_with_rows(at=minute)

    written = []
    for slice_start in range(0, 60, 10):  # a tick in each 10 s slice of the minute
        report = periodic_tick(now=minute + timedelta(seconds=slice_start + 1))
        assert statuses(report)["write_tenant_rows"] == RAN
        written.append(
            [row.pipeline_logging_id for row in tenant_repository(TenantPipelineRun, tenant_id).list()]
        )

    # Slices take the parts in turn (epoch-aligned): the tenant's rows waited for its part's slice.
    first = (part - period_number(minute, 10)) % 6
    assert written == [[]] * first + [[pipeline_logging_id(run_id, 1)]] * (6 - first)


@override_settings(PERIODIC_TENANT_ROWS_SECONDS=60, PERIODIC_TENANT_ROWS_PARTS=6)
def test_it_catches_up_a_part_whose_slice_no_tick_came_in(central_dataset: str) -> None:
    minute = timezone.now().replace(hour=0, minute=9, second=0, microsecond=0)
    tenant_id, run_id, part = run_finished_with_rows(at=minute)
    # The start of the tenant's part's slice: the ticks land just before it and just after it.
    its_slice = minute + timedelta(seconds=10 * ((part - period_number(minute, 10)) % 6))

    before = periodic_tick(now=its_slice - timedelta(seconds=9))
    rows_before = tenant_repository(TenantPipelineRun, tenant_id).list()
    after = periodic_tick(now=its_slice + timedelta(seconds=11))  # a slow tick: its slice had none

    assert (statuses(before)["write_tenant_rows"], rows_before) == (RAN, [])
    assert [row.pipeline_logging_id for row in tenant_repository(TenantPipelineRun, tenant_id).list()] == [
        pipeline_logging_id(run_id, 1)
    ]
    (outcome,) = [outcome for outcome in after.outcomes if outcome.name == "write_tenant_rows"]
    assert outcome.summary.endswith("(2 parts caught up)")
