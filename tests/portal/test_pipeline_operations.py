"""Portal pipeline operations: create with the template's parameters as fields, edit them, delete, run
now with overrides, backfill, a schedule's run history, a run's page, cancel and requeue, links."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tenants_app.models import RunState, RunTrigger, TenantPipelineConfig, TenantScheduledPipelineRun
from tenants_app.repositories import central_repository
from tenants_app.services.errors import DoesNotExist
from tenants_app.services.pipelines import pipeline_config_get, pipeline_config_list
from tests.portal.test_pipeline_pages import new_config, url
from tests.tenants_app.services.schedules import add_tenant as add_schedulable_tenant

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("portal_dataset")]

SCHEDULE = {
    "provider": "GCP",
    "domain": "sales",
    "schedule_cron": "* * * * *",
    "timezone": "UTC",
    "priority": "3",
}


def runs_of(config: TenantPipelineConfig) -> list[TenantScheduledPipelineRun]:
    return central_repository(TenantScheduledPipelineRun).list(
        filters={"config_id": config.config_id}, order_by=("scheduled_time",)
    )


def run_page(run: TenantScheduledPipelineRun, action: str = "") -> str:
    return f"/admin/tenants/{run.tenant_id}/runs/{run.run_id}/{action + '/' if action else ''}"


def test_it_creates_a_schedule_with_the_templates_parameters_as_fields(superuser_client: Client) -> None:
    tenant_id = add_schedulable_tenant(prefix="p")
    new = f"/admin/tenants/{tenant_id}/pipelines/new/"
    choices = superuser_client.get(new).content.decode()
    assert "?template=sql_transform" in choices
    assert "?template=data_quality" in choices
    form = superuser_client.get(new + "?template=data_quality").content.decode()
    for name in ("param_target_table", "param_expectations", "param_dq_config_id", "param_fail_on_error"):
        assert f'name="{name}"' in form

    body = {
        **SCHEDULE,
        "is_active": "on",
        "param_target_table": "orders",
        "param_expectations": '[{"type": "not_null", "column": "id"}]',
        "param_fail_on_error": "true",
    }
    done = superuser_client.post(new + "?template=data_quality", body)

    [config] = pipeline_config_list(tenant_id=tenant_id).items
    assert done.status_code == 302
    assert done["Location"] == url(config)
    assert (config.pipeline_template, config.schedule_cron, config.priority) == (
        "data_quality",
        "* * * * *",
        3,
    )
    assert config.parameters == {
        "target_table": "orders",
        "expectations": [{"type": "not_null", "column": "id"}],
        "fail_on_error": True,
    }
    assert config.created_by == "user:root"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"param_expectations": '[{"type": "not_null", "column": "id"}]'}, "This parameter is required."),
        ({"param_target_table": "orders", "param_expectations": "[{"}, "Write valid JSON."),
        (
            {"param_target_table": "tenant-x", "param_expectations": '[{"type": "unique", "column": "id"}]'},
            "Name a table",
        ),
    ],
)
def test_it_answers_a_bad_parameter_with_a_400_on_its_field(
    superuser_client: Client, fields: dict[str, str], message: str
) -> None:
    tenant_id = add_schedulable_tenant(prefix="p")
    page = superuser_client.post(
        f"/admin/tenants/{tenant_id}/pipelines/new/?template=data_quality", {**SCHEDULE, **fields}
    )
    html = page.content.decode()
    assert page.status_code == 400
    assert message in html
    assert "errorlist" in html.split(message)[0].rsplit("form-row", 1)[1]  # on the field's own row
    assert pipeline_config_list(tenant_id=tenant_id).total == 0


def test_it_edits_the_parameters_with_the_schedule(superuser_client: Client) -> None:
    config = new_config()
    edit = superuser_client.get(url(config, "edit")).content.decode()
    assert 'name="param_destination_table"' in edit
    assert "daily_costs" in edit
    body = {
        "schedule_cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "priority": "4",
        "param_source_table": "raw_costs",
        "param_destination_table": "costs_v2",
        "param_write_mode": "append",
    }
    assert superuser_client.post(url(config, "edit"), {**body, "action": "preview"}).status_code == 200
    superuser_client.post(url(config, "edit"), {**body, "action": "save"})
    stored = pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id)
    assert stored.parameters == {
        "source_table": "raw_costs",
        "destination_table": "costs_v2",
        "write_mode": "append",
    }


def test_it_deletes_a_schedule_after_confirmation(superuser_client: Client) -> None:
    config = new_config()
    assert "Yes, delete" in superuser_client.get(url(config, "delete")).content.decode()
    refused = superuser_client.post(url(config, "delete"))  # a bare POST, not the page's button
    assert refused.status_code == 400
    assert pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id)
    done = superuser_client.post(url(config, "delete"), {"confirm": "yes"})
    assert done["Location"] == f"/admin/tenants/{config.tenant_id}/"
    with pytest.raises(DoesNotExist):
        pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id)


def test_it_runs_now_with_overrides_recorded_as_manual_by_the_user(superuser_client: Client) -> None:
    config = new_config()
    superuser_client.post(url(config, "run"), {"param_write_mode": "append"})
    [run] = runs_of(config)
    assert run.parameters == {
        "source_table": "raw_costs",
        "destination_table": "daily_costs",
        "write_mode": "append",
    }
    assert (run.trigger_type, run.trigger_by) == (RunTrigger.MANUAL, "user:root")


def test_it_backfills_a_range_and_refuses_an_open_one_naming_the_field(superuser_client: Client) -> None:
    config = new_config()  # 02:30 daily in Berlin
    today = timezone.now().date()
    bad = superuser_client.post(
        url(config, "backfill"), {"start_date": str(today), "end_date": str(today + timedelta(days=2))}
    )
    assert bad.status_code == 400
    assert "Must not be after today" in bad.content.decode()

    superuser_client.post(
        url(config, "backfill"),
        {"start_date": str(today - timedelta(days=3)), "end_date": str(today - timedelta(days=1))},
    )
    runs = runs_of(config)
    assert len(runs) == 3
    assert {(run.trigger_type, run.trigger_by) for run in runs} == {(RunTrigger.BACKFILL, "user:root")}


def test_it_shows_the_run_history_and_a_run_page_and_cancels_and_requeues(superuser_client: Client) -> None:
    config = new_config()
    superuser_client.post(url(config, "run"))
    [run] = runs_of(config)
    history = superuser_client.get(url(config)).content.decode()
    assert f'href="{run_page(run)}"' in history
    page = superuser_client.get(run_page(run)).content.decode()
    assert 'id="run-state">Queued' in page
    assert "Manual · <bdi>user:root</bdi>" in page
    assert run_page(run, "cancel") in page

    superuser_client.post(run_page(run, "cancel"), {"reason": "wrong day", "confirm": "yes"})
    assert runs_of(config)[0].state == RunState.CANCELLED
    cancelled = superuser_client.get(run_page(run)).content.decode()
    assert run_page(run, "requeue") in cancelled
    assert run_page(run, "cancel") not in cancelled

    superuser_client.post(run_page(run, "requeue"), {"confirm": "yes"})
    [again] = runs_of(config)
    assert (again.state, again.trigger_type, again.trigger_by) == (
        RunState.QUEUED,
        RunTrigger.RETRY,
        "user:root",
    )


def test_it_answers_409_like_refusals_inline_with_a_400(superuser_client: Client) -> None:
    config = new_config()
    superuser_client.post(url(config, "run"))
    [run] = runs_of(config)
    page = superuser_client.post(run_page(run, "requeue"), {"confirm": "yes"})
    assert page.status_code == 400
    assert "Run is QUEUED" in page.content.decode()


def test_it_links_every_config_row_to_its_page(superuser_client: Client) -> None:
    config = new_config()
    detail = superuser_client.get(f"/admin/tenants/{config.tenant_id}/").content.decode()
    assert f'href="{url(config)}"' in detail
    assert f'href="/admin/tenants/{config.tenant_id}/pipelines/new/"' in detail
    table = superuser_client.get(
        f"/admin/tenants_app/tenantpipelineconfig/?tenant_id__exact={config.tenant_id}"
    ).content.decode()
    assert f'href="{url(config)}"' in table


@pytest.mark.parametrize("action", ["delete", "backfill"])
def test_it_gives_read_only_staff_a_403_on_the_new_operations(read_only_client: Client, action: str) -> None:
    config = new_config()
    assert read_only_client.get(url(config, action)).status_code == 403
    assert read_only_client.post(url(config, action)).status_code == 403
    assert read_only_client.get(f"/admin/tenants/{config.tenant_id}/pipelines/new/").status_code == 403
    assert pipeline_config_get(tenant_id=config.tenant_id, config_id=config.config_id).is_active is True
