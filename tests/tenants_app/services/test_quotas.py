"""Quota admission and release against the emulator, concurrency included (real threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, timedelta

import pytest
from django.core import mail

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import (
    RunState,
    SubscriptionStatus,
    TenantStatus,
)
from tenants_app.services.errors import (
    DoesNotExist,
    QuotaExceeded,
    SubscriptionInactive,
    TenantNotActive,
)
from tenants_app.services.notifications import notifications_deliver
from tenants_app.services.quota_rules import CONCURRENT_RETRY_AFTER_SECONDS
from tenants_app.services.quotas import (
    quota_admit,
    quota_release,
    quota_release_if_leaked,
    subscription_require_active,
)
from tenants_app.services.usage_rows import usage_rows_start
from tests.tenants_app.services.quota_factories import (
    DAY,
    at,
    put_usage,
    queue_entries,
    tenant_with_subscription,
    usage,
)

pytestmark = pytest.mark.usefixtures("central")


def race(count: int, action: Callable[[], object]) -> tuple[list[object], list[BaseException]]:
    """Run `action` in `count` threads released at the same moment; results and errors."""
    barrier = threading.Barrier(count)
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        try:
            outcome = action()
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results, errors


def test_it_creates_the_day_row_and_counts_the_admission() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)

    admission = quota_admit(tenant_id=tenant_id, now=at(DAY))

    assert admission.usage_date == DAY
    assert (admission.pipelines_run_today, admission.pipelines_run_month) == (1, 1)
    assert admission.concurrent_pipelines_running == 1
    assert (admission.daily_limit, admission.monthly_limit, admission.concurrent_limit) == (6, 180, 3)
    row = usage(tenant_id, DAY)
    assert row is not None
    assert (row.pipelines_run_today, row.concurrent_pipelines_running, row.max_concurrent_reached) == (
        1,
        1,
        1,
    )


def test_it_refuses_the_run_after_the_daily_limit_with_the_time_to_midnight() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    put_usage(tenant_id, DAY, pipelines_run_today=6, pipelines_run_month=6)

    with pytest.raises(QuotaExceeded) as caught:
        quota_admit(tenant_id=tenant_id, now=at(DAY, 23, 0))

    error = caught.value
    assert (error.status, error.code, error.limit) == (429, "quota_exceeded", "daily")
    assert error.retry_after == 3600
    assert error.figures["pipelines_run_today"] == 6
    assert error.figures["daily_limit"] == 6
    row = usage(tenant_id, DAY)
    assert row is not None
    assert row.pipelines_run_today == 6


def test_it_refuses_the_run_after_the_monthly_limit_until_the_next_month() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    put_usage(tenant_id, DAY, pipelines_run_today=0, pipelines_run_month=180)

    with pytest.raises(QuotaExceeded) as caught:
        quota_admit(tenant_id=tenant_id, now=at(date(2031, 3, 31), 0, 0))

    # 2031-03-31 has no row yet: the new row carries the month total, so the limit still holds.
    assert caught.value.limit == "monthly"
    assert caught.value.retry_after == 24 * 3600


def test_it_refuses_beyond_the_concurrent_limit_until_a_run_is_released() -> None:
    tenant_id = tenant_with_subscription()  # STARTER: 1 concurrent run
    first = quota_admit(tenant_id=tenant_id, now=at(DAY))

    with pytest.raises(QuotaExceeded) as caught:
        quota_admit(tenant_id=tenant_id, now=at(DAY))
    assert caught.value.limit == "concurrent"
    assert caught.value.retry_after == CONCURRENT_RETRY_AFTER_SECONDS

    quota_release(tenant_id=tenant_id, usage_date=first.usage_date, succeeded=True)
    second = quota_admit(tenant_id=tenant_id, now=at(DAY))
    assert second.pipelines_run_today == 2
    row = usage(tenant_id, DAY)
    assert row is not None
    assert (row.pipelines_succeeded_today, row.concurrent_pipelines_running) == (1, 1)
    assert row.last_pipeline_completed_at is not None


@pytest.mark.parametrize("round_", range(3))
def test_it_admits_exactly_5_of_32_threads_racing_for_the_last_5_daily_runs(round_: int) -> None:
    tenant_id = tenant_with_subscription(daily_limit=10, monthly_limit=1000, concurrent_limit=100)
    put_usage(tenant_id, DAY, pipelines_run_today=5, pipelines_run_month=5)

    admitted, errors = race(32, lambda: quota_admit(tenant_id=tenant_id, now=at(DAY)))

    assert len(admitted) == 5
    assert len(errors) == 27
    assert all(isinstance(error, QuotaExceeded) and error.limit == "daily" for error in errors)
    row = usage(tenant_id, DAY)
    assert row is not None
    assert (row.pipelines_run_today, row.pipelines_run_month, row.concurrent_pipelines_running) == (10, 10, 5)
    assert {a.usage_date for a in admitted} == {DAY}  # type: ignore[attr-defined]


def test_it_admits_exactly_the_concurrent_limit_when_threads_race_for_slots() -> None:
    tenant_id = tenant_with_subscription(daily_limit=100, monthly_limit=1000, concurrent_limit=3)

    admitted, errors = race(12, lambda: quota_admit(tenant_id=tenant_id, now=at(DAY)))

    assert len(admitted) == 3
    assert {error.limit for error in errors} == {"concurrent"}  # type: ignore[attr-defined]
    row = usage(tenant_id, DAY)
    assert row is not None
    assert row.concurrent_pipelines_running == 3


def test_it_creates_a_missing_day_row_once_when_first_runs_race() -> None:
    tenant_id = tenant_with_subscription(daily_limit=100, monthly_limit=1000, concurrent_limit=100)

    admitted, errors = race(8, lambda: quota_admit(tenant_id=tenant_id, now=at(DAY)))

    assert errors == []
    assert len(admitted) == 8
    row = usage(tenant_id, DAY)
    assert row is not None
    assert row.pipelines_run_today == 8


def test_it_sets_the_80_percent_warning_once(gateway: BigQueryGateway) -> None:
    tenant_id = tenant_with_subscription(daily_limit=5, monthly_limit=1000, concurrent_limit=10)
    put_usage(tenant_id, DAY, pipelines_run_today=3, pipelines_run_month=3)

    fourth = quota_admit(tenant_id=tenant_id, now=at(DAY, 10))  # 4 of 5 = 80%
    fifth = quota_admit(tenant_id=tenant_id, now=at(DAY, 11))

    assert fourth.warnings_raised == ("daily",)
    assert fifth.warnings_raised == ()
    row = usage(tenant_id, DAY)
    assert row is not None
    assert row.daily_warning_at == at(DAY, 10)
    assert row.monthly_warning_at is None


def test_it_notifies_the_tenant_when_a_single_admission_reaches_the_daily_limit() -> None:
    # One admission rule for one run and a batch: the single-run path raises the same events.
    tenant_id = tenant_with_subscription(daily_limit=5, monthly_limit=1000, concurrent_limit=10)
    put_usage(tenant_id, DAY, pipelines_run_today=4, pipelines_run_month=4)

    quota_admit(tenant_id=tenant_id, now=at(DAY, 10))
    notifications_deliver(now=at(DAY, 10, 1))

    assert [email.subject for email in mail.outbox] == ["daily pipeline run limit reached"]


def test_it_counts_a_run_finished_after_midnight_on_the_day_it_was_admitted() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=2)
    admission = quota_admit(tenant_id=tenant_id, now=at(DAY, 23, 50))
    queue_entries(tenant_id, (RunState.RUNNING, admission.usage_date))  # its claim, still running
    next_day = DAY + timedelta(days=1)
    # The next day's row counts the running slot.
    other = quota_admit(tenant_id=tenant_id, now=at(next_day, 0, 5))
    assert other.concurrent_pipelines_running == 2

    quota_release(tenant_id=tenant_id, usage_date=admission.usage_date, succeeded=False)

    first, second = usage(tenant_id, DAY), usage(tenant_id, next_day)
    assert first is not None
    assert second is not None
    assert (first.pipelines_run_today, first.pipelines_failed_today, first.concurrent_pipelines_running) == (
        1,
        1,
        0,
    )
    assert (
        second.pipelines_run_today,
        second.pipelines_failed_today,
        second.concurrent_pipelines_running,
    ) == (
        1,
        0,
        1,
    )
    assert second.pipelines_run_month == 2


def test_it_never_releases_below_zero_and_counts_no_outcome_for_none() -> None:
    tenant_id = tenant_with_subscription()
    admission = quota_admit(tenant_id=tenant_id, now=at(DAY))

    quota_release(tenant_id=tenant_id, usage_date=admission.usage_date, succeeded=None)
    quota_release(tenant_id=tenant_id, usage_date=admission.usage_date, succeeded=None)

    row = usage(tenant_id, DAY)
    assert row is not None
    assert (row.concurrent_pipelines_running, row.pipelines_succeeded_today, row.pipelines_failed_today) == (
        0,
        0,
        0,
    )


def test_it_releases_a_leaked_slot_once_when_repeated_reports_race() -> None:
    # A slot counted with no RUNNING entry in the queue: a first report moved its run out of RUNNING and
    # failed before releasing. Racing repeats of that report must free it, and count the outcome, once.
    tenant_id = tenant_with_subscription()
    admission = quota_admit(tenant_id=tenant_id, now=at(DAY))
    released: list[bool] = []
    start = threading.Barrier(4)

    def repeat() -> None:
        start.wait()
        released.append(
            quota_release_if_leaked(tenant_id=tenant_id, usage_date=admission.usage_date, succeeded=True)
        )

    threads = [threading.Thread(target=repeat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    row = usage(tenant_id, DAY)
    assert row is not None
    assert sorted(released) == [False, False, False, True]
    assert (row.concurrent_pipelines_running, row.pipelines_succeeded_today) == (0, 1)


def test_it_starts_the_month_total_again_on_the_first() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    put_usage(
        tenant_id,
        date(2031, 1, 31),
        pipelines_run_today=4,
        pipelines_run_month=170,
        concurrent_pipelines_running=2,
    )
    queue_entries(tenant_id, *[(RunState.RUNNING, date(2031, 1, 31))] * 2)

    february = quota_admit(tenant_id=tenant_id, now=at(date(2031, 2, 1), 0, 1))

    assert february.pipelines_run_month == 1
    assert february.pipelines_run_today == 1
    assert february.concurrent_pipelines_running == 3  # 2 carried over + this one


def test_it_carries_the_month_total_within_the_month() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    put_usage(tenant_id, date(2031, 2, 10), pipelines_run_today=4, pipelines_run_month=40)

    admission = quota_admit(tenant_id=tenant_id, now=at(date(2031, 2, 12)))

    assert (admission.pipelines_run_today, admission.pipelines_run_month) == (1, 41)


@pytest.mark.parametrize(
    "status", [SubscriptionStatus.SUSPENDED, SubscriptionStatus.EXPIRED, SubscriptionStatus.CANCELLED]
)
def test_it_refuses_runs_when_the_subscription_forbids_them(status: str) -> None:
    tenant_id = tenant_with_subscription(status=status)

    with pytest.raises(SubscriptionInactive) as caught:
        quota_admit(tenant_id=tenant_id, now=at(DAY))

    assert caught.value.status == 403
    assert usage(tenant_id, DAY) is None


def test_it_admits_runs_while_past_due() -> None:
    tenant_id = tenant_with_subscription(status=SubscriptionStatus.PAST_DUE)

    assert quota_admit(tenant_id=tenant_id, now=at(DAY)).pipelines_run_today == 1


def test_it_treats_a_trial_past_its_end_date_as_expired() -> None:
    tenant_id = tenant_with_subscription(status=SubscriptionStatus.TRIAL, trial_end_date=DAY)

    assert quota_admit(tenant_id=tenant_id, now=at(DAY, 23, 59)).pipelines_run_today == 1
    with pytest.raises(SubscriptionInactive, match="trial ended"):
        quota_admit(tenant_id=tenant_id, now=at(DAY + timedelta(days=1)))


def test_it_refuses_runs_of_a_suspended_tenant() -> None:
    tenant_id = tenant_with_subscription(tenant_status=TenantStatus.SUSPENDED)

    with pytest.raises(TenantNotActive):
        quota_admit(tenant_id=tenant_id, now=at(DAY))


def test_it_answers_not_found_for_an_unknown_tenant() -> None:
    with pytest.raises(DoesNotExist):
        quota_admit(tenant_id="t_does_not_exist", now=at(DAY))


def test_it_checks_the_lifecycle_rule_for_configuration_changes() -> None:
    past_due = tenant_with_subscription(status=SubscriptionStatus.PAST_DUE)

    assert subscription_require_active(tenant_id=past_due, operation="run").status == "PAST_DUE"
    with pytest.raises(SubscriptionInactive):
        subscription_require_active(tenant_id=past_due, operation="configure")


def test_it_uses_the_subscriptions_limits_over_a_stale_copy_in_the_row() -> None:
    tenant_id = tenant_with_subscription(daily_limit=8, concurrent_limit=10)
    put_usage(tenant_id, DAY, pipelines_run_today=6, pipelines_run_month=6, daily_limit=6)

    admission = quota_admit(tenant_id=tenant_id, now=at(DAY))

    assert (admission.pipelines_run_today, admission.daily_limit) == (7, 8)
    row = usage(tenant_id, DAY)
    assert row is not None
    assert row.daily_limit == 8


def test_it_costs_one_dml_statement_per_admission(gateway: BigQueryGateway) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    usage_rows_start(day=DAY, tenant_id=tenant_id)

    with gateway.count_jobs() as counter:
        quota_admit(tenant_id=tenant_id, now=at(DAY))

    dml = [
        sql
        for sql in counter.statements
        if sql.lstrip().upper().startswith(("UPDATE", "MERGE", "INSERT", "DELETE"))
    ]
    assert len(dml) == 1
    # One read (subscription, tenant status and the day's row together) and the UPDATE.
    assert counter.jobs == 2


def test_it_counts_a_new_days_slots_from_the_queue_not_the_previous_row(gateway: BigQueryGateway) -> None:
    leaked = tenant_with_subscription(concurrent_limit=5)
    busy = tenant_with_subscription(concurrent_limit=5)
    yesterday = DAY - timedelta(days=1)
    put_usage(leaked, yesterday, concurrent_pipelines_running=1)  # a slot nobody holds any more
    put_usage(busy, yesterday, concurrent_pipelines_running=0)
    queue_entries(
        busy,
        (RunState.RUNNING, yesterday),
        (RunState.RUNNING, DAY - timedelta(days=3)),  # a long run keeps its slot
        (RunState.RUNNING, None),  # mid-claim, not admitted yet: its admission counts it
        (RunState.RUNNING, DAY + timedelta(days=1)),  # admitted on a later day
        (RunState.QUEUED, None),
        (RunState.SUCCEEDED, yesterday),
    )
    queue_entries(leaked, (RunState.SUCCEEDED, yesterday), (RunState.CANCELLED, yesterday))

    with gateway.count_jobs() as started:
        usage_rows_start(day=DAY, tenant_ids=[leaked, busy])

    assert started.jobs == 1
    leaked_row, busy_row = usage(leaked, DAY), usage(busy, DAY)
    assert leaked_row is not None
    assert busy_row is not None
    assert (leaked_row.concurrent_pipelines_running, busy_row.concurrent_pipelines_running) == (0, 2)
    assert busy_row.max_concurrent_reached == 2
