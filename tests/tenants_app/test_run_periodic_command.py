"""`manage.py run_periodic`: a tick per interval with an injected clock and sleep, --once, SIGTERM."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from tenants_app.models import TenantPipelineConfig, TenantScheduledPipelineRun
from tenants_app.repositories import central_repository
from tests.tenants_app.services.schedules import add_tenant, config_row

# Today (the rollover refuses a future day), well inside its minute.
TODAY = timezone.now().replace(hour=0, minute=1, second=10, microsecond=0)
JOBS = (
    "schedule_pipelines",
    "cleanup_orphaned_runs",
    "write_tenant_rows",
    "roll_over_usage",
    "deliver_notifications",
    "notify_trials_and_keys_expiring",
)


class FakeTime:
    """A clock and a sleep: sleeping moves the clock; after `signal_after` sleeps, SIGTERM arrives."""

    def __init__(self, start: datetime, *, signal_after: int) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.signal_after = signal_after

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)
        if len(self.sleeps) == self.signal_after:
            os.kill(os.getpid(), signal.SIGTERM)
        # Without the signal handling the loop would go on for ever (or the test runner would die).
        assert len(self.sleeps) <= self.signal_after, "SIGTERM did not stop the loop"


def run_periodic(*args: str, **injected: Callable[..., object]) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("run_periodic", *args, stdout=out, stderr=err, **injected)
    return out.getvalue(), err.getvalue()


@pytest.mark.usefixtures("central")
def test_it_runs_due_jobs_at_each_tick_and_stops_on_sigterm() -> None:
    tenant_id = add_tenant(prefix="periodic")
    midnight = TODAY.replace(minute=0, second=0)
    config = config_row(tenant_id, schedule_cron="* * * * *", next_run_time=midnight - timedelta(minutes=1))
    central_repository(TenantPipelineConfig).insert(config)
    fake = FakeTime(midnight - timedelta(seconds=5), signal_after=3)
    handler_before = signal.getsignal(signal.SIGTERM)

    output, errors = run_periodic("--tick-seconds", "5", "-v", "2", clock=fake.clock, sleep=fake.sleep)

    # 23:59:55 starts every job's period; midnight starts a new minute, 5 minutes and UTC day; 00:00:05
    # is inside them. SIGTERM arrives in the third sleep: no fourth tick.
    assert fake.sleeps == [5, 5, 5]
    assert errors == ""
    lines = output.splitlines()
    assert lines[0] == "Running periodic work every 5 s; SIGTERM or Ctrl-C stops it."
    assert lines[-1] == "Stopped."
    ticks = [midnight - timedelta(seconds=5), midnight, midnight + timedelta(seconds=5)]
    assert [line.split(" ", 2)[:2] for line in lines[1:-1]] == [
        [f"{now:%Y-%m-%dT%H:%M:%SZ}", f"{job}:"] for now in ticks for job in JOBS
    ]
    # Notifications go out every 5 s: the only job with a new period at 00:00:05.
    third = [job != "deliver_notifications" for job in JOBS]
    assert [("skipped" in line) for line in lines[1:-1]] == [False] * 2 * len(JOBS) + third
    assert signal.getsignal(signal.SIGTERM) == handler_before
    runs = central_repository(TenantScheduledPipelineRun).list(filters={"config_id": config.config_id})
    assert sorted(run.scheduled_time for run in runs) == [midnight - timedelta(minutes=1), midnight]


@pytest.mark.usefixtures("central")
def test_it_runs_one_tick_with_once_and_prints_nothing_at_verbosity_0() -> None:
    fake = FakeTime(TODAY, signal_after=0)

    quiet, _ = run_periodic("--once", "-v", "0", clock=fake.clock, sleep=fake.sleep)
    # As if the markers were lost (a cache restart): the jobs run again, harmlessly.
    cache.clear()
    output, _ = run_periodic("--once", clock=fake.clock, sleep=fake.sleep)
    skipped, _ = run_periodic("--once", clock=fake.clock, sleep=fake.sleep)

    assert quiet == ""
    assert [line.split(" ", 2)[1] for line in output.splitlines()] == [f"{job}:" for job in JOBS]
    assert "usage of " in output
    # In the same periods: nothing to run, nothing said below verbosity 2.
    assert skipped == ""
    assert fake.sleeps == []


def test_it_exits_1_naming_the_failed_jobs_with_once(central_dataset: str) -> None:
    # A central dataset that was never bootstrapped: every job's BigQuery statements fail.
    fake = FakeTime(TODAY, signal_after=0)
    errors = io.StringIO()

    with pytest.raises(CommandError, match=f"failed: {', '.join(JOBS)}"):
        call_command("run_periodic", "--once", stdout=io.StringIO(), stderr=errors, clock=fake.clock)

    assert [line.split(" ", 2)[1] for line in errors.getvalue().splitlines()] == [f"{job}:" for job in JOBS]
    # Retried at the next tick: the failed runs did not hold their periods.
    with pytest.raises(CommandError):
        call_command("run_periodic", "--once", stdout=io.StringIO(), stderr=io.StringIO(), clock=fake.clock)


@pytest.mark.parametrize("value", ["0", "-1", "3601"])
def test_it_refuses_a_tick_interval_out_of_range(value: str) -> None:
    with pytest.raises(CommandError, match="--tick-seconds must be more than 0 and at most 3600"):
        run_periodic("--tick-seconds", value)


@pytest.mark.usefixtures("central")
def test_it_restores_the_signal_handlers_when_the_loop_ends_on_an_error() -> None:
    fake = FakeTime(TODAY, signal_after=5)
    handler_before = signal.getsignal(signal.SIGTERM)

    def broken_sleep(seconds: float) -> None:
        raise OSError("no sleep for you")

    with pytest.raises(OSError, match="no sleep for you"):
        run_periodic("-v", "0", clock=fake.clock, sleep=broken_sleep)

    assert signal.getsignal(signal.SIGTERM) == handler_before
