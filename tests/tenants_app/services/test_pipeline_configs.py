"""Pipeline config services: validation, next run time, lifecycle rules, audit, run now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenants_app.models import (
    AuditLogEntry,
    SubscriptionStatus,
    TenantPipelineConfig,
    TenantPipelineExecutionQueue,
    TenantStatus,
    TenantSubscription,
)
from tenants_app.repositories import central_repository
from tenants_app.services.errors import DoesNotExist, SubscriptionInactive, TenantNotActive, ValidationFailed
from tenants_app.services.pipelines import (
    pipeline_config_create,
    pipeline_config_delete,
    pipeline_config_get,
    pipeline_config_list,
    pipeline_config_pause,
    pipeline_config_resume,
    pipeline_config_run_now,
    pipeline_config_update,
)
from tests.tenants_app.services.schedules import add_tenant

NOW = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
ACTOR = "user:operator"
TRANSFORM = {"source_table": "raw_costs", "destination_table": "daily_costs"}

pytestmark = pytest.mark.usefixtures("central")


def create(tenant_id: str, **values: Any) -> TenantPipelineConfig:
    fields: dict[str, Any] = {
        "provider": "GCP",
        "domain": "billing",
        "pipeline_template": "sql_transform",
        "schedule_cron": "30 2 * * *",
        "timezone_name": "Europe/Berlin",
        "parameters": TRANSFORM,
        "priority": 3,
        **values,
    }
    return pipeline_config_create(tenant_id=tenant_id, actor=ACTOR, **{"now": NOW, **fields})


def audit_of(config_id: str) -> list[AuditLogEntry]:
    return central_repository(AuditLogEntry).list(filters={"target_id": config_id}, order_by=("occurred_at",))


# --- create ----------------------------------------------------------------------------------------------
def test_it_creates_a_config_with_its_next_run_in_utc() -> None:
    tenant_id = add_tenant()
    config = create(tenant_id)
    stored = pipeline_config_get(tenant_id=tenant_id, config_id=config.config_id)
    # 02:30 does not exist in Berlin on 2026-03-29: the first valid instant after the gap is 03:00 CEST.
    assert stored.next_run_time == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert (stored.schedule_cron, stored.timezone, stored.priority, stored.is_active) == (
        "30 2 * * *", "Europe/Berlin", 3, True
    )  # fmt: skip
    assert (stored.parameters, stored.created_by, stored.created_at) == (TRANSFORM, ACTOR, NOW)
    assert config.config_id.startswith(f"{tenant_id}_")
    (entry,) = audit_of(config.config_id)
    assert (entry.action, entry.actor, entry.tenant_id) == ("pipeline_config.create", ACTOR, tenant_id)
    assert entry.after_values is not None
    assert entry.after_values["schedule_cron"] == "30 2 * * *"


def test_it_creates_a_paused_config_without_a_next_run() -> None:
    config = create(add_tenant(), is_active=False)
    assert config.next_run_time is None


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"schedule_cron": "0 0 * * * *"}, "schedule_cron"),
        ({"schedule_cron": "@daily"}, "schedule_cron"),
        ({"timezone_name": "Mars/Olympus"}, "timezone"),
        ({"priority": 0}, "priority"),
        ({"priority": 11}, "priority"),
        ({"priority": True}, "priority"),
        ({"provider": "IBM"}, "provider"),
        ({"domain": "  "}, "domain"),
        ({"pipeline_template": "rm -rf /"}, "pipeline_template"),
        ({"parameters": [1, 2]}, "parameters"),
        ({"parameters": {"db_password": "x"}}, "parameters"),
        ({"parameters": {"nested": {"api_key": "x"}}}, "parameters"),
        ({"parameters": {"blob": "x" * 20_000}}, "parameters"),
        ({"parameters": {"n": float("nan")}}, "parameters"),
    ],
)
def test_it_refuses_invalid_fields_naming_each(values: dict[str, Any], field: str) -> None:
    tenant_id = add_tenant()
    with pytest.raises(ValidationFailed) as raised:
        create(tenant_id, **values)
    assert list(raised.value.errors) == [field]
    assert pipeline_config_list(tenant_id=tenant_id).total == 0


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"warehouse": "postgres://etl:hunter2-pass@db.example.com/warehouse"}, "warehouse"),
        (
            {"http": {"header": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl"}},
            "header",
        ),
        ({"hosts": ["ok.example.com", "AKIAIOSFODNN7EXAMPLE"]}, "hosts"),
    ],
)
def test_it_refuses_parameter_values_holding_a_secret_under_a_harmless_name(
    parameters: dict[str, Any], named: str
) -> None:
    # Parameters reach the tenant's GenAI-visible dataset: a DSN's password is as bad as a "password" key.
    tenant_id = add_tenant()
    with pytest.raises(ValidationFailed) as raised:
        create(tenant_id, parameters=parameters)
    message = str(raised.value.errors["parameters"])
    assert f"'{named}'" in message
    assert "hunter2" not in message
    assert "AKIA" not in message
    assert "eyJ" not in message
    assert pipeline_config_list(tenant_id=tenant_id).total == 0


def test_it_names_every_invalid_field_at_once() -> None:
    with pytest.raises(ValidationFailed) as raised:
        create(add_tenant(), schedule_cron="bad", timezone_name="Nowhere", priority=99)
    assert set(raised.value.errors) == {"schedule_cron", "timezone", "priority"}


@pytest.mark.parametrize(
    ("status", "subscription", "error"),
    [
        (TenantStatus.SUSPENDED, SubscriptionStatus.ACTIVE, TenantNotActive),
        (TenantStatus.ACTIVE, SubscriptionStatus.PAST_DUE, SubscriptionInactive),
        (TenantStatus.ACTIVE, SubscriptionStatus.EXPIRED, SubscriptionInactive),
    ],
)
def test_it_refuses_new_configs_when_the_lifecycle_forbids_configuring(
    status: str, subscription: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        create(add_tenant(status=status, subscription=subscription))


def test_it_refuses_a_config_for_a_tenant_that_does_not_exist() -> None:
    with pytest.raises(DoesNotExist):
        create("nobody_here")


# --- read ------------------------------------------------------------------------------------------------
def test_it_lists_a_tenants_configs_with_filters_and_paging() -> None:
    tenant_id = add_tenant()
    first = create(tenant_id)
    create(tenant_id, provider="AWS", now=NOW + timedelta(minutes=1))
    paused = create(tenant_id, is_active=False, now=NOW + timedelta(minutes=2))
    create(add_tenant())  # another tenant's

    assert pipeline_config_list(tenant_id=tenant_id).total == 3
    assert [c.config_id for c in pipeline_config_list(tenant_id=tenant_id, is_active=False).items] == [
        paused.config_id
    ]
    assert pipeline_config_list(tenant_id=tenant_id, provider="AWS").total == 1
    page = pipeline_config_list(tenant_id=tenant_id, limit=1, offset=0)
    assert (len(page.items), page.total, page.items[0].config_id) == (1, 3, first.config_id)
    with pytest.raises(ValidationFailed) as raised:
        pipeline_config_list(tenant_id=tenant_id, provider="IBM", limit=0)
    assert set(raised.value.errors) == {"provider", "limit"}


def test_it_hides_another_tenants_config() -> None:
    config = create(add_tenant())
    other = add_tenant()
    with pytest.raises(DoesNotExist):
        pipeline_config_get(tenant_id=other, config_id=config.config_id)
    with pytest.raises(DoesNotExist):
        pipeline_config_pause(tenant_id=other, config_id=config.config_id, actor=ACTOR)
    with pytest.raises(DoesNotExist):
        pipeline_config_delete(tenant_id=other, config_id=config.config_id, actor=ACTOR)


# --- change ----------------------------------------------------------------------------------------------
def test_it_recomputes_the_next_run_when_the_schedule_changes() -> None:
    tenant_id = add_tenant()
    config = create(tenant_id)
    updated = pipeline_config_update(
        tenant_id=tenant_id,
        config_id=config.config_id,
        actor="apikey:k1",
        schedule_cron="0 9 * * *",
        timezone_name="America/New_York",
        priority=1,
        now=NOW,
    )
    assert updated.next_run_time == datetime(2026, 3, 28, 13, 0, tzinfo=UTC)  # 09:00 EDT
    stored = pipeline_config_get(tenant_id=tenant_id, config_id=config.config_id)
    assert (stored.schedule_cron, stored.timezone, stored.priority, stored.updated_by) == (
        "0 9 * * *", "America/New_York", 1, "apikey:k1"
    )  # fmt: skip
    assert stored.next_run_time == updated.next_run_time
    entry = audit_of(config.config_id)[-1]
    assert entry.action == "pipeline_config.update"
    assert entry.before_values is not None
    assert entry.after_values is not None
    assert (entry.before_values["priority"], entry.after_values["priority"]) == (3, 1)
    assert "domain" not in entry.after_values  # only what changed


def test_it_keeps_the_next_run_when_only_the_priority_changes() -> None:
    tenant_id = add_tenant()
    config = create(tenant_id)
    updated = pipeline_config_update(tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR, priority=9)
    assert updated.next_run_time == config.next_run_time


def test_it_changes_nothing_and_records_nothing_for_an_unchanged_update() -> None:
    tenant_id = add_tenant()
    config = create(tenant_id)
    pipeline_config_update(tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR, priority=3)
    assert len(audit_of(config.config_id)) == 1


def test_it_refuses_an_edit_based_on_a_stale_read() -> None:
    tenant_id = add_tenant()
    config = create(tenant_id)
    central_repository(TenantPipelineConfig).update(
        config.config_id, {"updated_at": NOW + timedelta(minutes=1)}
    )
    from tenants_app.services import pipelines

    with pytest.raises(ValidationFailed) as raised:
        pipelines._apply(config, {"priority": 7}, actor=ACTOR, action="pipeline_config.update", now=NOW)
    assert "config_id" in raised.value.errors
    assert pipeline_config_get(tenant_id=tenant_id, config_id=config.config_id).priority == 3


def test_it_pauses_and_resumes_without_backfilling_the_pause() -> None:
    tenant_id = add_tenant()
    config = create(tenant_id, schedule_cron="0 * * * *", timezone_name="UTC")
    paused = pipeline_config_pause(tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR)
    assert (paused.is_active, paused.next_run_time) == (False, None)
    again = pipeline_config_pause(tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR)
    assert again.is_active is False
    later = NOW + timedelta(days=2, minutes=10)
    resumed = pipeline_config_resume(tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR, now=later)
    assert (resumed.is_active, resumed.next_run_time) == (True, NOW + timedelta(days=2, hours=1))
    assert [e.action for e in audit_of(config.config_id)] == [
        "pipeline_config.create", "pipeline_config.pause", "pipeline_config.resume"
    ]  # fmt: skip


def test_it_lets_a_suspended_tenant_pause_but_not_resume() -> None:
    tenant_id = add_tenant(subscription=SubscriptionStatus.SUSPENDED)
    central_repository(TenantPipelineConfig).insert(
        TenantPipelineConfig(
            config_id=f"{tenant_id}_legacy",
            tenant_id=tenant_id,
            provider="GCP",
            domain="billing",
            pipeline_template="daily_costs",
            schedule_cron="0 * * * *",
            next_run_time=NOW,
        )
    )
    pipeline_config_pause(tenant_id=tenant_id, config_id=f"{tenant_id}_legacy", actor=ACTOR)
    with pytest.raises(SubscriptionInactive):
        pipeline_config_resume(tenant_id=tenant_id, config_id=f"{tenant_id}_legacy", actor=ACTOR)


def test_it_deletes_a_config_and_audits_its_last_values() -> None:
    tenant_id = add_tenant()
    config = create(tenant_id)
    pipeline_config_delete(tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR)
    with pytest.raises(DoesNotExist):
        pipeline_config_get(tenant_id=tenant_id, config_id=config.config_id)
    entry = audit_of(config.config_id)[-1]
    assert entry.action == "pipeline_config.delete"
    assert entry.before_values is not None
    assert entry.before_values["pipeline_template"] == "sql_transform"
    with pytest.raises(DoesNotExist):
        pipeline_config_delete(tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR)


# --- run now ---------------------------------------------------------------------------------------------
def test_it_runs_now_once_per_minute_even_when_paused() -> None:
    tenant_id = add_tenant()
    config = create(tenant_id, is_active=False, priority=2)
    at = NOW + timedelta(seconds=17)
    first = pipeline_config_run_now(tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR, now=at)
    second = pipeline_config_run_now(
        tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR, now=at + timedelta(seconds=30)
    )
    assert (first.created, second.created) == (True, False)
    assert first.run.run_id == second.run.run_id == f"{config.config_id}_20260328T1200Z_manual"
    assert (first.run.state, first.run.scheduled_time, first.run.priority) == ("QUEUED", NOW, 2)
    queue = central_repository(TenantPipelineExecutionQueue).list(filters={"config_id": config.config_id})
    assert [entry.run_id for entry in queue] == [first.run.run_id]
    assert [e.action for e in audit_of(first.run.run_id)] == ["run.enqueue_manual"]

    third = pipeline_config_run_now(
        tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR, now=NOW + timedelta(minutes=1)
    )
    assert third.created
    assert third.run.run_id != first.run.run_id


def test_it_runs_now_while_past_due_but_not_while_suspended() -> None:
    past_due = add_tenant()
    config = create(past_due)
    central_repository(TenantSubscription).update(f"{past_due}_sub", {"status": SubscriptionStatus.PAST_DUE})
    assert pipeline_config_run_now(tenant_id=past_due, config_id=config.config_id, actor=ACTOR).created
    central_repository(TenantSubscription).update(f"{past_due}_sub", {"status": SubscriptionStatus.SUSPENDED})
    with pytest.raises(SubscriptionInactive):
        pipeline_config_run_now(
            tenant_id=past_due, config_id=config.config_id, actor=ACTOR, now=NOW + timedelta(hours=1)
        )
