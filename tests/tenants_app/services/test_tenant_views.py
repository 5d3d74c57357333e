"""The tenant's own views mask actors exactly as the API does, and bootstrap brings old views up to date."""

from __future__ import annotations

import pytest

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.identifiers import quote_column, quote_table
from bigquery_backend.schema import table_definition
from tenants_app.models import TenantPipelineConfig
from tenants_app.repositories import central_repository
from tenants_app.services.actors import actor_masked
from tenants_app.services.datasets import central_dataset
from tenants_app.services.pipelines import pipeline_config_create, pipeline_config_run_now
from tenants_app.services.tenant_views import tenant_views_refresh, tenant_views_refresh_all
from tests.support.people import onboard_tenant

pytestmark = pytest.mark.usefixtures("central")

ACTORS = ("user:admin", "apikey:acme_initial", "system:scheduler", "username_without_colon", None)


def onboarded() -> str:
    return onboard_tenant("acme")[0]


def transform_config(tenant_id: str, *, actor: str) -> TenantPipelineConfig:
    """A config made through the service by `actor`."""
    return pipeline_config_create(
        tenant_id=tenant_id,
        provider="GCP",
        domain="billing",
        pipeline_template="sql_transform",
        schedule_cron="0 3 * * *",
        parameters={"source_table": "raw_costs", "destination_table": "daily_costs"},
        actor=actor,
    )


def add_configs(tenant_id: str) -> None:
    """One config per actor, created by it and updated by the same."""
    central_repository(TenantPipelineConfig).insert(
        *(
            TenantPipelineConfig(
                config_id=f"{tenant_id}_{i}",
                tenant_id=tenant_id,
                provider="GCP",
                domain="billing",
                pipeline_template="daily_costs",
                schedule_cron="0 3 * * *",
                created_by=actor,
                updated_by=actor,
            )
            for i, actor in enumerate(ACTORS)
        )
    )


def actors_in_view(gateway: BigQueryGateway, tenant_id: str) -> dict[str, tuple[str | None, str | None]]:
    view = quote_table(gateway.project, tenant_id, "tenant_pipeline_configs")
    rows = gateway.query(f"SELECT config_id, created_by, updated_by FROM {view}").rows
    return {row["config_id"]: (row["created_by"], row["updated_by"]) for row in rows}


def unmask_views(gateway: BigQueryGateway, tenant_id: str) -> None:
    """The view as onboarding made it before actors were masked: every column as stored."""
    definition = table_definition(TenantPipelineConfig)
    view = gateway.get_table(tenant_id, definition.name)
    columns = ", ".join(quote_column(name) for name in definition.column_names)
    table = quote_table(gateway.project, central_dataset(), definition.name)
    view.view_query = f"SELECT {columns} FROM {table} WHERE `tenant_id` = '{tenant_id}'"
    gateway.update_table(view, ["view_query"])


def test_it_shows_a_config_created_by_staff_as_made_by_staff(gateway: BigQueryGateway) -> None:
    tenant_id = onboarded()
    config = transform_config(tenant_id, actor="user:admin")

    seen = actors_in_view(gateway, tenant_id)

    assert seen[config.config_id][0] == "staff"


def test_it_shows_who_started_a_run_as_the_api_does(gateway: BigQueryGateway) -> None:
    tenant_id = onboarded()
    config = transform_config(tenant_id, actor="apikey:acme_initial")
    run = pipeline_config_run_now(tenant_id=tenant_id, config_id=config.config_id, actor="user:admin").run
    view = quote_table(gateway.project, tenant_id, "tenant_scheduled_pipeline_runs")

    [row] = gateway.query(f"SELECT run_id, trigger_by FROM {view}").rows

    assert (row["run_id"], row["trigger_by"]) == (run.run_id, "staff")


def test_it_masks_every_actor_in_the_view_as_the_api_does(gateway: BigQueryGateway) -> None:
    tenant_id = onboarded()
    add_configs(tenant_id)

    seen = actors_in_view(gateway, tenant_id)

    expected = {
        f"{tenant_id}_{i}": (actor_masked(actor), actor_masked(actor)) for i, actor in enumerate(ACTORS)
    }
    assert seen == expected
    assert seen[f"{tenant_id}_0"] == ("staff", "staff")
    assert seen[f"{tenant_id}_1"] == ("apikey:acme_initial", "apikey:acme_initial")


def test_it_replaces_an_old_views_query_so_existing_tenants_are_masked_too(gateway: BigQueryGateway) -> None:
    tenant_id = onboarded()
    add_configs(tenant_id)
    unmask_views(gateway, tenant_id)
    assert actors_in_view(gateway, tenant_id)[f"{tenant_id}_0"] == ("user:admin", "user:admin")

    planned = tenant_views_refresh(tenant_id=tenant_id, dry_run=True)
    still_old = actors_in_view(gateway, tenant_id)[f"{tenant_id}_0"]
    refreshed = tenant_views_refresh_all()

    assert "tenant_pipeline_configs" in planned
    assert still_old == ("user:admin", "user:admin")
    assert "tenant_pipeline_configs" in refreshed[tenant_id]
    assert actors_in_view(gateway, tenant_id)[f"{tenant_id}_0"] == ("staff", "staff")


def test_it_leaves_a_purged_tenant_without_views_alone() -> None:
    assert tenant_views_refresh(tenant_id="never_onboarded") == []
