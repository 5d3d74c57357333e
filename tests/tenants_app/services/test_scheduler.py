"""The scheduler: due slots enqueued exactly once, catch-up limit, crash recovery, constant job count."""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from bigquery_backend.client import get_gateway
from tenants_app.models import (
    SubscriptionStatus,
    TenantPipelineConfig,
    TenantPipelineExecutionQueue,
    TenantScheduledPipelineRun,
    TenantStatus,
)
from tenants_app.repositories import central_repository
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.scheduler import (
    EnqueueEntry,
    SchedulerReport,
    decode_slots,
    encode_slots,
    manual_run_id,
    runs_enqueue,
    scheduled_run_id,
    scheduler_run,
)
from tests.conftest import unique_name
from tests.tenants_app.services.schedules import T0, add_tenant, config_row

AddConfig = Callable[..., TenantPipelineConfig]


@pytest.fixture(scope="module")
def add_configs(central: str) -> Callable[..., list[TenantPipelineConfig]]:
    """Insert `n` configs of one new tenant in one statement."""

    def add(n: int = 1, *, tenant_id: str | None = None, **values: object) -> list[TenantPipelineConfig]:
        tenant_id = tenant_id or add_tenant()
        rows = [config_row(tenant_id, i, **values) for i in range(n)]
        central_repository(TenantPipelineConfig).insert(*rows)
        return rows

    return add


def runs_of(tenant_id: str) -> list[TenantScheduledPipelineRun]:
    return central_repository(TenantScheduledPipelineRun).list(
        filters={"tenant_id": tenant_id}, order_by=("config_id", "scheduled_time")
    )


def queue_of(tenant_id: str) -> list[TenantPipelineExecutionQueue]:
    return central_repository(TenantPipelineExecutionQueue).list(
        filters={"tenant_id": tenant_id}, order_by=("config_id", "scheduled_time")
    )


def config(config_id: str) -> TenantPipelineConfig:
    return central_repository(TenantPipelineConfig).get(config_id)


# --- run ids and slots ----------------------------------------------------------------------------------
def test_it_derives_a_stable_run_id_per_config_and_minute() -> None:
    slot = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert scheduled_run_id("acme_cfg", slot) == "acme_cfg_20260329T0100Z"
    assert scheduled_run_id("acme_cfg", slot.astimezone(UTC)) == scheduled_run_id("acme_cfg", slot)
    assert scheduled_run_id("acme_cfg", slot) != scheduled_run_id("acme_cfg", slot + timedelta(minutes=1))
    assert manual_run_id("acme_cfg", slot) == "acme_cfg_20260329T0100Z_manual"


def test_it_keeps_run_ids_of_long_config_ids_within_128_characters() -> None:
    slot = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    long_a, long_b = "a" * 120, "a" * 119 + "b"
    assert len(manual_run_id(long_a, slot)) <= 128
    assert scheduled_run_id(long_a, slot) != scheduled_run_id(long_b, slot)


def test_it_refuses_a_naive_slot() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        scheduled_run_id("acme_cfg", datetime(2026, 3, 29, 1, 0))


def test_it_round_trips_pending_slots() -> None:
    slots = [T0, T0 + timedelta(hours=1)]
    assert decode_slots(encode_slots(slots)) == slots
    assert (encode_slots([]), decode_slots(None)) == (None, [])


# --- enqueueing ------------------------------------------------------------------------------------------
def test_it_writes_the_row_contract_into_runs_and_queue(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs(priority=2, parameters={"region": "eu"})
    report = scheduler_run(now=T0 + timedelta(minutes=5))

    (run,) = runs_of(row.tenant_id)
    (entry,) = queue_of(row.tenant_id)
    run_id = scheduled_run_id(row.config_id, T0)
    assert (run.run_id, run.config_id, run.tenant_id, run.pipeline_id) == (
        run_id, row.config_id, row.tenant_id, "daily_costs"
    )  # fmt: skip
    assert (run.state, run.scheduled_time, run.priority, run.parameters) == (
        "QUEUED",
        T0,
        2,
        {"region": "eu"},
    )
    assert (run.retry_count, run.max_retries, run.created_at) == (0, 3, T0 + timedelta(minutes=5))
    assert (entry.run_id, entry.tenant_id, entry.pipeline_id, entry.config_id) == (
        run_id, row.tenant_id, "daily_costs", row.config_id
    )  # fmt: skip
    assert (entry.state, entry.scheduled_time, entry.priority, entry.attempt) == ("QUEUED", T0, 2, 0)
    assert (entry.available_at, entry.lease_owner, entry.lease_expires_at) == (None, None, None)
    assert entry.added_at == T0 + timedelta(minutes=5)
    after = config(row.config_id)
    assert after.next_run_time == T0 + timedelta(hours=1)
    assert after.scheduler_pending_slots is None
    assert report.runs_enqueued >= 1


def test_it_enqueues_nothing_twice_when_the_same_entries_come_again(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs()
    entries = [EnqueueEntry(manual_run_id(row.config_id, T0), row.config_id, T0)]
    assert runs_enqueue(entries=entries, now=T0) == 1
    assert runs_enqueue(entries=entries, now=T0) == 0
    assert len(runs_of(row.tenant_id)) == len(queue_of(row.tenant_id)) == 1


def test_it_takes_the_max_retries_from_the_setting(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs()
    with override_settings(PIPELINE_MAX_RETRIES=7):
        runs_enqueue(entries=[EnqueueEntry("r7_" + row.config_id, row.config_id, T0)], now=T0)
    assert [run.max_retries for run in runs_of(row.tenant_id)] == [7]


# --- the scheduler --------------------------------------------------------------------------------------
def test_it_leaves_configs_that_are_not_due_alone(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs(next_run_time=T0 + timedelta(hours=2))
    scheduler_run(now=T0)
    assert runs_of(row.tenant_id) == []
    assert config(row.config_id).next_run_time == T0 + timedelta(hours=2)


def test_it_leaves_paused_configs_alone(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs(is_active=False)
    scheduler_run(now=T0 + timedelta(hours=3))
    assert runs_of(row.tenant_id) == []
    assert config(row.config_id).next_run_time == T0


def test_it_is_idempotent_for_the_same_now(add_configs: Callable[..., list]) -> None:
    rows = add_configs(3)
    scheduler_run(now=T0)
    again = scheduler_run(now=T0)
    assert len(runs_of(rows[0].tenant_id)) == len(queue_of(rows[0].tenant_id)) == 3
    assert all(config_id not in {row.config_id for row in rows} for config_id, _ in again.enqueued)


def test_it_catches_up_at_most_the_limit_and_skips_to_the_next_future_slot(
    add_configs: Callable[..., list],
) -> None:
    (row,) = add_configs()  # hourly, due since T0
    report = scheduler_run(now=T0 + timedelta(hours=5, minutes=30), max_catch_up=2)
    slots = [run.scheduled_time for run in runs_of(row.tenant_id)]
    assert slots == [T0 + timedelta(hours=4), T0 + timedelta(hours=5)]
    assert config(row.config_id).next_run_time == T0 + timedelta(hours=6)
    mine = [slot for config_id, slot in report.enqueued if config_id == row.config_id]
    assert mine == slots
    assert report.slots_skipped >= 4


def test_it_catches_up_every_missed_slot_within_the_limit(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs()
    scheduler_run(now=T0 + timedelta(hours=2), max_catch_up=5)
    assert [run.scheduled_time for run in runs_of(row.tenant_id)] == [
        T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    ]  # fmt: skip


def test_it_runs_late_then_on_time_without_gaps_or_repeats(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs()
    scheduler_run(now=T0 + timedelta(hours=1, minutes=40))  # late: T0 and T0+1h
    scheduler_run(now=T0 + timedelta(hours=2))  # on time: T0+2h
    scheduler_run(now=T0 + timedelta(hours=2, minutes=1))  # nothing new
    slots = [run.scheduled_time for run in runs_of(row.tenant_id)]
    assert slots == [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]


def test_it_computes_a_missing_next_run_time_without_backfilling(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs(next_run_time=None)
    scheduler_run(now=T0 + timedelta(minutes=10))
    assert runs_of(row.tenant_id) == []
    assert config(row.config_id).next_run_time == T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("tenant_status", "subscription_status"),
    [
        (TenantStatus.SUSPENDED, SubscriptionStatus.ACTIVE),
        (TenantStatus.ACTIVE, SubscriptionStatus.SUSPENDED),
        (TenantStatus.ACTIVE, SubscriptionStatus.CANCELLED),
    ],
)
def test_it_skips_due_slots_of_tenants_that_may_not_run_pipelines(
    add_configs: Callable[..., list], tenant_status: str, subscription_status: str
) -> None:
    tenant_id = add_tenant(status=tenant_status, subscription=subscription_status)
    (row,) = add_configs(tenant_id=tenant_id)
    report = scheduler_run(now=T0 + timedelta(minutes=1))
    assert runs_of(tenant_id) == []
    assert config(row.config_id).next_run_time == T0 + timedelta(hours=1)
    assert report.slots_skipped_inactive >= 1


def test_it_still_runs_pipelines_of_a_past_due_subscription(add_configs: Callable[..., list]) -> None:
    tenant_id = add_tenant(subscription=SubscriptionStatus.PAST_DUE)
    add_configs(tenant_id=tenant_id)
    scheduler_run(now=T0)
    assert len(runs_of(tenant_id)) == 1


def test_it_stamps_each_batchs_claim_when_it_is_made_not_when_the_run_started(
    add_configs: Callable[..., list],
) -> None:
    # A late batch stamped with the run's start would look stale to another scheduler at once.
    first, second = add_configs(2)
    scheduler_run(now=T0, batch_size=1)
    stamps = sorted(config(row.config_id).scheduler_claimed_at for row in (first, second))
    assert T0 < stamps[0] < stamps[1]


def test_it_changes_nothing_on_a_dry_run(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs()
    report = scheduler_run(now=T0 + timedelta(hours=1), dry_run=True)
    assert (row.config_id, T0) in report.enqueued
    assert runs_of(row.tenant_id) == []
    assert config(row.config_id).next_run_time == T0


def test_it_skips_a_config_with_an_unusable_schedule_and_carries_on(add_configs: Callable[..., list]) -> None:
    tenant_id = add_tenant()
    (bad,) = add_configs(tenant_id=tenant_id, schedule_cron="not a cron")
    central_repository(TenantPipelineConfig).insert(config_row(tenant_id, 1))
    report = scheduler_run(now=T0)
    assert bad.config_id in report.configs_invalid
    assert [run.config_id for run in runs_of(tenant_id)] == [f"{tenant_id}_c0001"]


def test_it_does_not_enqueue_for_a_config_edited_after_it_was_read(add_configs: Callable[..., list]) -> None:
    # The compare-and-set includes updated_at: a pause between our read and our claim wins.
    (row,) = add_configs()
    configs = central_repository(TenantPipelineConfig)
    stale = configs.get(row.config_id)
    configs.update(row.config_id, {"is_active": False, "updated_at": T0})
    from tenants_app.services import scheduler

    report = SchedulerReport(now=T0, dry_run=False, max_catch_up=3)
    due_slots = functools.partial(scheduler._due_slots, now=T0, max_catch_up=3)
    plan = scheduler._plan((stale, "ACTIVE", "ACTIVE", None), T0, due_slots, report)
    assert plan is not None
    scheduler._claim_and_enqueue([plan], T0, report, claimed_at=T0)
    assert runs_of(row.tenant_id) == []
    assert (report.configs_lost, report.configs_claimed) == (1, 0)


# --- crash recovery ---------------------------------------------------------------------------------------
def test_it_finishes_the_claim_of_a_scheduler_that_died_after_claiming(
    add_configs: Callable[..., list],
) -> None:
    (row,) = add_configs()
    # What a scheduler that died between its claim and its enqueue leaves behind.
    central_repository(TenantPipelineConfig).update(
        row.config_id,
        {
            "next_run_time": T0 + timedelta(hours=1),
            "scheduler_claim_id": "dead",
            "scheduler_claimed_at": T0,
            "scheduler_pending_slots": encode_slots([T0]),
        },
    )
    early = scheduler_run(now=T0 + timedelta(minutes=5))  # the claim is still fresh: hands off
    assert runs_of(row.tenant_id) == []
    assert row.config_id not in {config_id for config_id, _ in early.enqueued}

    late = scheduler_run(now=T0 + timedelta(minutes=30))  # past SCHEDULER_CLAIM_TIMEOUT_SECONDS
    assert [run.scheduled_time for run in runs_of(row.tenant_id)] == [T0]
    assert len(queue_of(row.tenant_id)) == 1
    assert late.configs_recovered >= 1
    after = config(row.config_id)
    assert (after.scheduler_pending_slots, after.next_run_time) == (None, T0 + timedelta(hours=1))


def test_it_recovers_a_half_enqueued_claim_without_duplicates(add_configs: Callable[..., list]) -> None:
    (row,) = add_configs()
    # The dead scheduler wrote the run but not its queue entry.
    central_repository(TenantPipelineConfig).update(
        row.config_id,
        {
            "next_run_time": T0 + timedelta(hours=2),
            "scheduler_claim_id": "dead",
            "scheduler_claimed_at": T0,
            "scheduler_pending_slots": encode_slots([T0, T0 + timedelta(hours=1)]),
        },
    )
    runs_enqueue(entries=[EnqueueEntry(scheduled_run_id(row.config_id, T0), row.config_id, T0)], now=T0)
    central_repository(TenantPipelineExecutionQueue).delete(scheduled_run_id(row.config_id, T0))

    scheduler_run(now=T0 + timedelta(hours=1, minutes=30))
    assert [run.scheduled_time for run in runs_of(row.tenant_id)] == [T0, T0 + timedelta(hours=1)]
    assert [entry.scheduled_time for entry in queue_of(row.tenant_id)] == [T0, T0 + timedelta(hours=1)]


# --- concurrency and cost -----------------------------------------------------------------------------
@pytest.mark.parametrize("attempt", range(3))
def test_it_enqueues_each_slot_exactly_once_with_two_schedulers_racing(
    add_configs: Callable[..., list], attempt: int
) -> None:
    rows = add_configs(12)
    tenant_id = rows[0].tenant_id
    now = T0 + timedelta(hours=2, minutes=10)  # 3 slots due per config
    barrier = threading.Barrier(2)
    reports: list[SchedulerReport] = []
    errors: list[BaseException] = []

    def schedule() -> None:
        try:
            barrier.wait()
            reports.append(scheduler_run(now=now, batch_size=5))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=schedule) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    runs = runs_of(tenant_id)
    counts = Counter(run.run_id for run in runs)
    assert len(runs) == 36
    assert set(counts.values()) == {1}
    queued = Counter(entry.run_id for entry in queue_of(tenant_id))
    assert set(queued) == set(counts)
    assert set(queued.values()) == {1}
    mine = Counter(
        (config_id, slot)
        for report in reports
        for config_id, slot in report.enqueued
        if config_id.startswith(tenant_id)
    )
    assert len(mine) == 36
    assert set(mine.values()) == {1}
    assert all(config(row.config_id).next_run_time == T0 + timedelta(hours=3) for row in rows[:2])


def test_it_issues_the_same_number_of_jobs_for_3_and_30_due_configs() -> None:
    # A central dataset of its own: other tests' configs must not be due in the measured runs.
    with override_settings(TENANTS_DATASET=unique_name("tenants")):
        bigquery_bootstrap()

        def jobs_for(n: int) -> int:
            tenant_id = add_tenant()
            configs = central_repository(TenantPipelineConfig)
            configs.insert(
                *(config_row(tenant_id, i, next_run_time=T0 - timedelta(hours=1)) for i in range(n))
            )
            with get_gateway().count_jobs() as counter:
                report = scheduler_run(now=T0 + timedelta(minutes=1))
            assert (report.configs_claimed, report.runs_enqueued) == (n, 2 * n)
            configs.update_where({"is_active": False}, filters={"tenant_id": tenant_id})
            return counter.jobs

        # Read, claim, insert runs, insert queue entries, confirm, and one audit entry.
        assert jobs_for(3) == jobs_for(30) == 6

        tenant_id = add_tenant()
        configs = central_repository(TenantPipelineConfig)
        configs.insert(*(config_row(tenant_id, i, next_run_time=T0 - timedelta(hours=1)) for i in range(7)))
        with get_gateway().count_jobs() as counter:
            report = scheduler_run(now=T0 + timedelta(minutes=1), batch_size=3)
        assert (report.batches, report.configs_claimed, report.runs_enqueued) == (3, 7, 14)
        assert counter.jobs == 3 * 5 + 1  # 5 statements per batch of 3, one audit entry


# --- daylight saving, end to end ---------------------------------------------------------------------------
def test_it_enqueues_a_berlin_0230_once_across_spring_forward_and_fall_back(
    add_configs: Callable[..., list],
) -> None:
    berlin = {"schedule_cron": "30 2 * * *", "timezone": "Europe/Berlin"}
    (spring,) = add_configs(next_run_time=datetime(2026, 3, 28, 1, 30, tzinfo=UTC), **berlin)
    scheduler_run(now=datetime(2026, 3, 29, 1, 5, tzinfo=UTC))  # 03:05 CEST, just after the jump
    assert [run.scheduled_time for run in runs_of(spring.tenant_id)] == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 02:30 does not exist: 03:00 CEST
    ]
    assert config(spring.config_id).next_run_time == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)

    (autumn,) = add_configs(next_run_time=datetime(2026, 10, 25, 0, 30, tzinfo=UTC), **berlin)
    scheduler_run(now=datetime(2026, 10, 25, 0, 31, tzinfo=UTC))  # 02:31 CEST, first pass
    scheduler_run(now=datetime(2026, 10, 25, 1, 40, tzinfo=UTC))  # 02:40 CET, the hour again
    assert [run.scheduled_time for run in runs_of(autumn.tenant_id)] == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    ]
    assert config(autumn.config_id).next_run_time == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
