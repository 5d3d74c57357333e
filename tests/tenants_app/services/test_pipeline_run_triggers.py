"""What started a run, recorded on its row: the scheduler, run now (with overrides), backfill, retry."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tenants_app.models import (
    AuditLogEntry,
    RunTrigger,
    TenantPipelineConfig,
    TenantScheduledPipelineRun,
)
from tenants_app.repositories import central_repository
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.pipeline_backfill import MAX_BACKFILL_DAYS, pipeline_config_backfill
from tenants_app.services.pipelines import pipeline_config_create, pipeline_config_run_now
from tenants_app.services.run_actions import run_cancel, run_requeue
from tenants_app.services.scheduler import scheduled_run_id, scheduler_run
from tests.tenants_app.services.schedules import add_tenant

NOW = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
ACTOR = "user:operator"
TRANSFORM = {"source_table": "raw_costs", "destination_table": "daily_costs"}

pytestmark = pytest.mark.usefixtures("central")


def create(**values: Any) -> TenantPipelineConfig:
    fields: dict[str, Any] = {
        "provider": "GCP",
        "domain": "billing",
        "pipeline_template": "sql_transform",
        "schedule_cron": "30 2 * * *",
        "timezone_name": "Europe/Berlin",
        "parameters": TRANSFORM,
        **values,
    }
    return pipeline_config_create(tenant_id=add_tenant(), actor="user:setup", now=NOW, **fields)


def run_of(run_id: str) -> TenantScheduledPipelineRun:
    return central_repository(TenantScheduledPipelineRun).get(run_id)


def test_it_records_a_run_now_as_manual_with_who_started_it() -> None:
    config = create()
    manual = pipeline_config_run_now(
        tenant_id=config.tenant_id, config_id=config.config_id, actor=ACTOR, now=NOW
    )
    run = run_of(manual.run.run_id)
    assert (run.trigger_type, run.trigger_by) == (RunTrigger.MANUAL, ACTOR)
    assert run.parameters == TRANSFORM


def test_it_records_a_scheduled_run_as_schedule_without_a_person() -> None:
    config = create(schedule_cron="*/5 * * * *", timezone_name="UTC")
    scheduler_run(now=config.next_run_time)
    run = run_of(scheduled_run_id(config.config_id, config.next_run_time))
    assert (run.trigger_type, run.trigger_by) == (RunTrigger.SCHEDULE, None)


def test_it_runs_now_with_parameter_overrides_for_that_run_only() -> None:
    config = create()
    manual = pipeline_config_run_now(
        tenant_id=config.tenant_id,
        config_id=config.config_id,
        actor=ACTOR,
        overrides={"write_mode": "append", "destination_table": "costs_replay"},
        now=NOW,
    )
    assert run_of(manual.run.run_id).parameters == {
        "source_table": "raw_costs",
        "destination_table": "costs_replay",
        "write_mode": "append",
    }
    [entry] = central_repository(AuditLogEntry).list(filters={"target_id": manual.run.run_id})
    assert entry.after_values["overridden"] == ["destination_table", "write_mode"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"write_mode": "sideways"}, "parameters.write_mode"),
        ({"destination_table": "tenant_runs"}, "parameters.destination_table"),
        ({"no_such": 1}, "parameters.no_such"),
        ({"metadata": {"password": "hunter2"}}, "parameters"),
    ],
)
def test_it_refuses_bad_overrides_naming_the_parameter(overrides: dict[str, Any], field: str) -> None:
    config = create()
    with pytest.raises(ValidationFailed) as caught:
        pipeline_config_run_now(
            tenant_id=config.tenant_id, config_id=config.config_id, actor=ACTOR, overrides=overrides, now=NOW
        )
    assert field in caught.value.errors
    assert central_repository(TenantScheduledPipelineRun).count(filters={"config_id": config.config_id}) == 0


def test_it_backfills_each_slot_of_a_date_range_once_as_a_backfill() -> None:
    config = create()  # 02:30 daily in Berlin
    first = pipeline_config_backfill(
        tenant_id=config.tenant_id,
        config_id=config.config_id,
        start_date=date(2026, 3, 25),
        end_date=date(2026, 3, 28),
        actor=ACTOR,
        now=NOW,
    )
    again = pipeline_config_backfill(
        tenant_id=config.tenant_id,
        config_id=config.config_id,
        start_date=date(2026, 3, 25),
        end_date=date(2026, 3, 28),
        actor=ACTOR,
        now=NOW,
    )
    assert (first.created, again.created) == (4, 0)
    assert first.run_ids == again.run_ids
    runs = [run_of(run_id) for run_id in first.run_ids]
    assert [run.scheduled_time for run in runs] == [
        datetime(2026, 3, day, 1, 30, tzinfo=UTC) for day in (25, 26, 27, 28)
    ]
    assert {(run.trigger_type, run.trigger_by, run.state) for run in runs} == {
        (RunTrigger.BACKFILL, ACTOR, "QUEUED")
    }
    assert all(run_id.endswith("_backfill") for run_id in first.run_ids)
    actions = [
        e.action for e in central_repository(AuditLogEntry).list(filters={"target_id": config.config_id})
    ]
    assert actions.count("run.enqueue_backfill") == 1


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (date(2026, 3, 20), date(2026, 3, 19), "end_date"),
        (date(2026, 3, 27), date(2026, 3, 29), "end_date"),  # tomorrow: the scheduler's
        (date(2026, 3, 28) - timedelta(days=MAX_BACKFILL_DAYS), date(2026, 3, 28), "start_date"),
    ],
)
def test_it_refuses_an_unbounded_or_future_backfill_naming_the_field(
    start: date, end: date, field: str
) -> None:
    config = create()
    with pytest.raises(ValidationFailed) as caught:
        pipeline_config_backfill(
            tenant_id=config.tenant_id,
            config_id=config.config_id,
            start_date=start,
            end_date=end,
            actor=ACTOR,
            now=NOW,
        )
    assert field in caught.value.errors


def test_it_refuses_a_backfill_of_more_runs_than_allowed() -> None:
    config = create(schedule_cron="*/5 * * * *")
    with pytest.raises(ValidationFailed) as caught:
        pipeline_config_backfill(
            tenant_id=config.tenant_id,
            config_id=config.config_id,
            start_date=date(2026, 3, 27),
            end_date=date(2026, 3, 27),
            actor=ACTOR,
            now=NOW,
        )
    assert "end_date" in caught.value.errors


def test_it_records_a_requeued_run_as_a_retry_by_whoever_requeued_it() -> None:
    config = create()
    run_id = pipeline_config_run_now(
        tenant_id=config.tenant_id, config_id=config.config_id, actor="user:first", now=NOW
    ).run.run_id
    run_cancel(tenant_id=config.tenant_id, run_id=run_id, actor="user:first", now=NOW)

    run = run_requeue(tenant_id=config.tenant_id, run_id=run_id, actor=ACTOR)

    assert (run.state, run.trigger_type, run.trigger_by) == ("QUEUED", RunTrigger.RETRY, ACTOR)
