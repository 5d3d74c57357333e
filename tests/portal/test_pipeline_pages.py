"""Portal pages of a pipeline config: detail, pause/resume/run now with confirmation, schedule edit."""

from __future__ import annotations

from datetime import UTC

import pytest
from django.test import Client

from tenants_app.models import AuditLogEntry, TenantPipelineConfig, TenantScheduledPipelineRun
from tenants_app.repositories import central_repository
from tenants_app.services.pipelines import pipeline_config_create, pipeline_config_get
from tests.tenants_app.services.schedules import add_tenant as add_schedulable_tenant

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("portal_dataset")]


def new_config(**values: object) -> TenantPipelineConfig:
    tenant_id = add_schedulable_tenant(prefix="p")
    fields: dict[str, object] = {
        "provider": "GCP",
        "domain": "billing",
        "pipeline_template": "sql_transform",
        "schedule_cron": "30 2 * * *",
        "timezone_name": "Europe/Berlin",
        "parameters": {"source_table": "raw_costs", "destination_table": "daily_costs"},
        "priority": 4,
        **values,
    }
    return pipeline_config_create(tenant_id=tenant_id, actor="user:setup", **fields)  # type: ignore[arg-type]


def url(config: TenantPipelineConfig, action: str = "") -> str:
    return f"/admin/tenants/{config.tenant_id}/pipelines/{config.config_id}/{action + '/' if action else ''}"


def test_it_shows_a_config_with_its_next_slots_in_its_time_zone(superuser_client: Client) -> None:
    config = new_config()
    page = superuser_client.get(url(config))
    html = page.content.decode()
    assert page.status_code == 200
    assert config.config_id in html
    assert "30 2 * * *" in html
    assert "Europe/Berlin" in html
    assert "CET" in html or "CEST" in html  # the next slots are shown in local time too
    assert "Run now" in html


def test_it_pauses_after_confirmation_and_resumes(superuser_client: Client) -> None:
    config = new_config()
    confirm = superuser_client.get(url(config, "pause"))
    assert confirm.status_code == 200
    assert "Yes, pause" in confirm.content.decode()
    assert pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id).is_active is True

    done = superuser_client.post(url(config, "pause"), follow=True)
    assert done.redirect_chain[-1][0] == url(config)
    assert "was paused" in done.content.decode()
    assert pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id).is_active is False

    resumed = superuser_client.post(url(config, "resume"), follow=True)
    assert "is active again" in resumed.content.decode()
    stored = pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id)
    assert stored.is_active is True
    assert stored.next_run_time is not None
    actions = [
        entry.action
        for entry in central_repository(AuditLogEntry).list(
            filters={"target_id": config.config_id}, order_by=("occurred_at",)
        )
    ]
    assert actions == ["pipeline_config.create", "pipeline_config.pause", "pipeline_config.resume"]
    entry = central_repository(AuditLogEntry).list(
        filters={"target_id": config.config_id, "action": "pipeline_config.pause"}
    )[0]
    assert (entry.actor, entry.source) == ("user:root", "portal")


def test_it_runs_now_once_per_minute(superuser_client: Client) -> None:
    config = new_config()
    first = superuser_client.post(url(config, "run"), follow=True)
    assert "was queued" in first.content.decode()
    runs = central_repository(TenantScheduledPipelineRun).list(filters={"config_id": config.config_id})
    assert len(runs) == 1
    assert runs[0].run_id.endswith("_manual")


def test_it_previews_a_new_schedule_before_saving_it(superuser_client: Client) -> None:
    config = new_config()
    body = {"schedule_cron": "0 9 * * 1-5", "timezone": "America/New_York", "priority": "1"}
    preview = superuser_client.post(url(config, "edit"), {**body, "action": "preview"})
    html = preview.content.decode()
    assert preview.status_code == 200
    assert "Save this schedule" in html
    assert "EDT" in html or "EST" in html
    assert (
        pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id).schedule_cron
        == "30 2 * * *"
    )

    saved = superuser_client.post(url(config, "edit"), {**body, "action": "save"}, follow=True)
    assert "was saved" in saved.content.decode()
    stored = pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id)
    assert (stored.schedule_cron, stored.timezone, stored.priority) == ("0 9 * * 1-5", "America/New_York", 1)
    assert stored.next_run_time is not None
    assert stored.next_run_time.astimezone(UTC).hour in {13, 14}  # 09:00 New York


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"schedule_cron": "0 0 * * * *", "timezone": "UTC", "priority": "5"}, "5 fields"),
        ({"schedule_cron": "0 9 * * *", "timezone": "Mars/Base", "priority": "5"}, "IANA"),
        ({"schedule_cron": "0 9 * * *", "timezone": "UTC", "priority": "11"}, "less than or equal to 10"),
    ],
)
def test_it_shows_validation_errors_inline(
    superuser_client: Client, body: dict[str, str], field: str
) -> None:
    config = new_config()
    page = superuser_client.post(url(config, "edit"), {**body, "action": "save"})
    assert page.status_code == 200
    assert "errornote" in page.content.decode()
    assert field in page.content.decode()
    assert (
        pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id).schedule_cron
        == "30 2 * * *"
    )


@pytest.mark.parametrize("action", ["pause", "resume", "run", "edit"])
def test_it_gives_read_only_staff_a_403_on_every_operation(read_only_client: Client, action: str) -> None:
    config = new_config()
    assert read_only_client.get(url(config, action)).status_code == 403
    assert read_only_client.post(url(config, action)).status_code == 403
    assert read_only_client.get(url(config)).status_code == 200
    assert pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id).is_active is True
    assert central_repository(TenantScheduledPipelineRun).list(filters={"config_id": config.config_id}) == []


def test_it_answers_404_for_a_config_of_another_tenant(superuser_client: Client) -> None:
    config, other = new_config(), new_config()
    page = superuser_client.get(f"/admin/tenants/{other.tenant_id}/pipelines/{config.config_id}/")
    assert page.status_code == 404


def test_it_sends_anonymous_visitors_to_the_login(anonymous_client: Client) -> None:
    config = new_config()
    page = anonymous_client.get(url(config, "pause"))
    assert page.status_code == 302
    assert "/login/" in page["Location"]
