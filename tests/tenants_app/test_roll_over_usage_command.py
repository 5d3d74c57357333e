"""`manage.py roll_over_usage` against the emulator: rows per tenant, carry-over, trials, retention."""

from __future__ import annotations

import io
import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import (
    RunState,
    SubscriptionStatus,
    TenantPipelineExecutionQueue,
    TenantStatus,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.audit import audit_list
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.subscription_selectors import subscription_get
from tests.tenants_app.services.quota_factories import put_usage, tenant_with_subscription, usage

MARCH_1 = date(2026, 3, 1)
FEB_28 = date(2026, 2, 28)


@pytest.fixture(autouse=True)
def fresh_central(central_dataset: str) -> str:
    """A central dataset of this test's own, so counts of rows and tenants are exact."""
    bigquery_bootstrap()
    return central_dataset


def roll(*args: str) -> str:
    out = io.StringIO()
    call_command("roll_over_usage", *args, stdout=out)
    return out.getvalue()


def rows_on(day: date) -> list[TenantUsageQuota]:
    return central_repository(TenantUsageQuota).list(filters={"usage_date": day}, order_by=("tenant_id",))


def running(tenant_id: str, usage_date: date, count: int) -> None:
    """Insert `count` RUNNING queue entries holding slots on `usage_date` (one DML)."""
    central_repository(TenantPipelineExecutionQueue).insert(
        *[
            TenantPipelineExecutionQueue(
                run_id=f"run_{uuid.uuid4().hex[:12]}",
                tenant_id=tenant_id,
                pipeline_id="gcp_cost_ingest",
                state=RunState.RUNNING,
                scheduled_time=datetime(2026, 2, 28, 23, tzinfo=UTC),
                priority=5,
                attempt=1,
                usage_date=usage_date,
            )
            for _ in range(count)
        ]
    )


def test_it_creates_a_row_for_every_tenant_allowed_to_run_and_no_other() -> None:
    active = tenant_with_subscription()
    past_due = tenant_with_subscription(status=SubscriptionStatus.PAST_DUE)
    trial = tenant_with_subscription(status=SubscriptionStatus.TRIAL, trial_end_date=MARCH_1)
    tenant_with_subscription(status=SubscriptionStatus.SUSPENDED)
    tenant_with_subscription(status=SubscriptionStatus.CANCELLED)
    tenant_with_subscription(tenant_status=TenantStatus.SUSPENDED)

    output = roll("--date", "2026-03-01")

    assert sorted(row.tenant_id for row in rows_on(MARCH_1)) == sorted([active, past_due, trial])
    assert "3 row(s) created" in output
    row = usage(active, MARCH_1)
    assert row is not None
    assert (row.daily_limit, row.monthly_limit, row.concurrent_limit) == (6, 180, 1)
    assert (row.pipelines_run_today, row.pipelines_run_month, row.total_api_calls_today) == (0, 0, 0)


def test_it_resets_the_month_on_the_first_and_carries_running_slots() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=5)
    put_usage(
        tenant_id,
        FEB_28,
        pipelines_run_today=7,
        pipelines_run_month=150,
        concurrent_pipelines_running=2,
        monthly_warning_at=timezone.now(),
    )
    running(tenant_id, FEB_28, 2)

    roll("--date", "2026-03-01")

    row = usage(tenant_id, MARCH_1)
    assert row is not None
    assert (row.pipelines_run_today, row.pipelines_run_month, row.concurrent_pipelines_running) == (0, 0, 2)
    assert row.monthly_warning_at is None


def test_it_counts_running_slots_from_the_queue_so_a_leaked_slot_is_not_carried() -> None:
    leaked = tenant_with_subscription(concurrent_limit=5)
    busy = tenant_with_subscription(concurrent_limit=5)
    put_usage(leaked, FEB_28, concurrent_pipelines_running=1)  # its run ended, the slot was never freed
    put_usage(busy, FEB_28, concurrent_pipelines_running=1)
    running(busy, FEB_28, 2)

    roll("--date", "2026-03-01")

    leaked_row, busy_row = usage(leaked, MARCH_1), usage(busy, MARCH_1)
    assert leaked_row is not None
    assert busy_row is not None
    assert (leaked_row.concurrent_pipelines_running, busy_row.concurrent_pipelines_running) == (0, 2)


def test_it_carries_the_month_total_and_its_warning_within_the_month() -> None:
    tenant_id = tenant_with_subscription()
    warned = timezone.now().replace(microsecond=0)
    put_usage(
        tenant_id, date(2026, 3, 5), pipelines_run_today=3, pipelines_run_month=150, monthly_warning_at=warned
    )

    roll("--date", "2026-03-07")

    row = usage(tenant_id, date(2026, 3, 7))
    assert row is not None
    assert (row.pipelines_run_today, row.pipelines_run_month) == (0, 150)
    assert row.monthly_warning_at == warned


def test_it_changes_nothing_when_run_twice() -> None:
    tenant_id = tenant_with_subscription()
    roll("--date", "2026-03-01")
    put_usage(tenant_id, FEB_28, pipelines_run_month=99)  # arrives late: must not touch the made row

    output = roll("--date", "2026-03-01")

    assert "0 row(s) created" in output
    assert [row.tenant_id for row in rows_on(MARCH_1)] == [tenant_id]
    row = usage(tenant_id, MARCH_1)
    assert row is not None
    assert row.pipelines_run_month == 0


def test_it_makes_each_row_once_when_two_runs_race() -> None:
    tenants = sorted(tenant_with_subscription() for _ in range(3))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            roll("--date", "2026-03-01", "-v", "0")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert [row.tenant_id for row in rows_on(MARCH_1)] == tenants


def test_it_costs_the_same_statements_for_2_and_for_8_tenants(gateway: BigQueryGateway) -> None:
    for _ in range(2):
        tenant_with_subscription()
    with gateway.count_jobs() as few:
        roll("--date", "2026-03-01")
    for _ in range(6):
        tenant_with_subscription()
    with gateway.count_jobs() as many:
        roll("--date", "2026-03-02")

    assert len(rows_on(date(2026, 3, 2))) == 8
    assert few.jobs == many.jobs


def test_it_expires_trials_past_their_end_once_and_records_it() -> None:
    ended = tenant_with_subscription(status=SubscriptionStatus.TRIAL, trial_end_date=date(2026, 2, 27))
    running = tenant_with_subscription(status=SubscriptionStatus.TRIAL, trial_end_date=MARCH_1)

    output = roll("--date", "2026-03-01", "-v", "2")
    roll("--date", "2026-03-01")

    assert f"trial of {ended}: EXPIRED" in output
    assert subscription_get(tenant_id=ended).status == "EXPIRED"
    assert subscription_get(tenant_id=running).status == "TRIAL"
    assert usage(ended, MARCH_1) is None
    [entry] = audit_list(tenant_id=ended, action="subscription.trial_expire").items
    assert entry.actor == "system:roll_over_usage"
    assert (entry.before_values["status"], entry.after_values["status"]) == ("TRIAL", "EXPIRED")


def test_it_deletes_rows_older_than_the_retention() -> None:
    tenant_id = tenant_with_subscription()
    put_usage(tenant_id, MARCH_1 - timedelta(days=41))
    put_usage(tenant_id, MARCH_1 - timedelta(days=40))

    output = roll("--date", "2026-03-01", "--retention-days", "40")

    assert "1 row(s) before 2026-01-20 deleted" in output
    remaining = central_repository(TenantUsageQuota).list(
        filters={"tenant_id": tenant_id}, order_by=("usage_date",)
    )
    assert [row.usage_date for row in remaining] == [MARCH_1 - timedelta(days=40), MARCH_1]


def test_it_changes_nothing_in_a_dry_run() -> None:
    tenant_id = tenant_with_subscription()
    ended = tenant_with_subscription(status=SubscriptionStatus.TRIAL, trial_end_date=date(2026, 2, 1))
    put_usage(tenant_id, MARCH_1 - timedelta(days=200))

    output = roll("--date", "2026-03-01", "--dry-run")

    assert output.startswith("Dry run:")
    assert "1 trial(s) would be expired" in output
    assert "1 row(s) would be created" in output
    assert "1 row(s) before" in output
    assert "Nothing was changed." in output
    assert rows_on(MARCH_1) == []
    assert subscription_get(tenant_id=ended).status == "TRIAL"
    assert usage(tenant_id, MARCH_1 - timedelta(days=200)) is not None


def test_it_is_silent_at_verbosity_0() -> None:
    tenant_with_subscription()

    assert roll("--date", "2026-03-01", "-v", "0") == ""
    assert len(rows_on(MARCH_1)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "tomorrow"], "--date must be YYYY-MM-DD"),
        (["--date", (date.today() + timedelta(days=2)).isoformat()], "date: Use today"),
        (["--retention-days", "10"], "retention_days: Keep at least 32"),
    ],
)
def test_it_refuses_bad_options_with_a_clear_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        roll(*args)
