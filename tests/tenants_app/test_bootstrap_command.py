"""`manage.py bootstrap_bigquery` against the emulator: create, idempotence, dry run, drift, errors."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from google.cloud import bigquery

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.emulator import free_port
from bigquery_backend.exceptions import NotFound
from bigquery_backend.schema import table_definition
from tenants_app.models import (
    CENTRAL_MODELS,
    TENANT_MODELS,
    TenantPipelineConfig,
    TenantProfile,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.onboarding import tenant_onboard
from tests.conftest import unique_name


def bootstrap(*args: str) -> str:
    out = io.StringIO()
    call_command("bootstrap_bigquery", *args, stdout=out)
    return out.getvalue()


def bootstrap_json(*args: str) -> dict[str, Any]:
    return json.loads(bootstrap("--json", *args))


def create_table_without(gateway: BigQueryGateway, dataset: str, model: type, *, drop: str) -> None:
    """A live table as an older release would have left it: one declared column missing."""
    definition = table_definition(model)
    table = definition.build_table(gateway.table_ref(dataset, definition.name))
    table.schema = [f for f in table.schema if f.name != drop]
    gateway.create_table(table)


def test_it_plans_every_central_table_in_a_dry_run_and_creates_nothing(
    central_dataset: str, gateway: BigQueryGateway
) -> None:
    plan = bootstrap_json("--dry-run")

    assert plan["dry_run"] is True
    assert plan["datasets"] == {central_dataset: "would_create"}
    assert [t["table"] for t in plan["tables"]] == [table_definition(m).name for m in CENTRAL_MODELS]
    assert {t["action"] for t in plan["tables"]} == {"would_created"}
    usage = next(t for t in plan["tables"] if t["table"] == "tenant_usage_quotas")
    assert usage["partitioning"] == "DAY(usage_date)"
    assert usage["clustering"] == ["tenant_id", "usage_date"]
    assert {"name": "usage_id", "type": "STRING", "mode": "REQUIRED"} in usage["columns"]
    with pytest.raises(NotFound):
        gateway.get_dataset(central_dataset)


def test_it_creates_the_central_dataset_with_partitioned_clustered_tables(
    central_dataset: str, gateway: BigQueryGateway
) -> None:
    result = bootstrap_json()

    assert result["summary"]["created"] == len(CENTRAL_MODELS)
    assert gateway.get_dataset(central_dataset).labels["protection"] == "protected"
    queue = gateway.get_table(central_dataset, "tenant_pipeline_execution_queue")
    assert queue.time_partitioning.field == "scheduled_time"
    assert queue.time_partitioning.type_ == "DAY"
    assert queue.clustering_fields == ["state", "priority", "tenant_id"]
    assert sorted(gateway.list_table_ids(central_dataset)) == sorted(
        table_definition(m).name for m in CENTRAL_MODELS
    )


def test_it_creates_nothing_on_a_second_run_and_says_so_per_table(central_dataset: str) -> None:
    bootstrap()

    output = bootstrap()

    assert output.count("already exists") == len(CENTRAL_MODELS)
    assert f"Created 0 table(s); {len(CENTRAL_MODELS)} already existed" in output
    assert bootstrap_json()["summary"]["created"] == 0


def test_it_creates_a_tenant_dataset_marked_genai_safe(gateway: BigQueryGateway) -> None:
    tenant_id = unique_name("acme")

    output = bootstrap("--tenant", tenant_id)

    assert output.count(": created") == len(TENANT_MODELS)
    dataset = gateway.get_dataset(tenant_id)
    assert dataset.labels["genai_safe"] == "true"
    assert dataset.labels["tenant_id"] == tenant_id
    assert sorted(gateway.list_table_ids(tenant_id)) == sorted(
        table_definition(m).name for m in TENANT_MODELS
    )
    runs = gateway.get_table(tenant_id, "tenant_pipeline_runs")
    assert runs.time_partitioning.field == "start_time"


@pytest.mark.parametrize("tenant_id", ["acme'co", "acme co", "acme`co", "acme;co", "ac", "x" * 51])
def test_it_refuses_a_bad_tenant_id_before_any_bigquery_call(
    tenant_id: str, gateway: BigQueryGateway
) -> None:
    with gateway.count_jobs() as counter, pytest.raises(CommandError, match="tenant id"):
        bootstrap("--tenant", tenant_id)

    assert (counter.jobs, counter.api_calls) == (0, 0)


def test_it_refuses_a_bad_central_dataset_name_before_any_bigquery_call(
    settings: Any, gateway: BigQueryGateway
) -> None:
    settings.TENANTS_DATASET = "tenants; DROP"

    with gateway.count_jobs() as counter, pytest.raises(CommandError, match="dataset name"):
        bootstrap()

    assert (counter.jobs, counter.api_calls) == (0, 0)


def test_it_reports_a_missing_column_as_drift_and_exits_non_zero(
    central_dataset: str, gateway: BigQueryGateway
) -> None:
    bootstrap("--dry-run")  # no side effects
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(central_dataset)))
    create_table_without(gateway, central_dataset, TenantProfile, drop="updated_at")
    out = io.StringIO()

    with pytest.raises(CommandError, match="schema drift"):
        call_command("bootstrap_bigquery", stdout=out)

    assert "column updated_at (TIMESTAMP NULLABLE) is missing" in out.getvalue()


def test_it_accepts_drift_with_allow_drift(central_dataset: str, gateway: BigQueryGateway) -> None:
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(central_dataset)))
    create_table_without(gateway, central_dataset, TenantProfile, drop="updated_at")

    result = bootstrap_json("--allow-drift")

    profiles = next(t for t in result["tables"] if t["table"] == "tenant_profiles")
    assert profiles["action"] == "drift"
    assert profiles["drift"][0]["column"] == "updated_at"
    assert result["summary"]["created"] == len(CENTRAL_MODELS) - 1


def test_it_adds_a_missing_nullable_column_with_update_schema(
    central_dataset: str, gateway: BigQueryGateway
) -> None:
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(central_dataset)))
    create_table_without(gateway, central_dataset, TenantUsageQuota, drop="max_concurrent_reached")

    planned = bootstrap_json("--update-schema", "--dry-run")
    applied = bootstrap_json("--update-schema")
    rerun = bootstrap_json()

    usage = next(t for t in planned["tables"] if t["table"] == "tenant_usage_quotas")
    assert (usage["action"], usage["added_columns"]) == ("would_updated", ["max_concurrent_reached"])
    usage = next(t for t in applied["tables"] if t["table"] == "tenant_usage_quotas")
    assert (usage["action"], usage["added_columns"]) == ("updated", ["max_concurrent_reached"])
    assert rerun["summary"]["drift"] == 0
    live = gateway.get_table(central_dataset, "tenant_usage_quotas")
    assert "max_concurrent_reached" in [f.name for f in live.schema]
    # The new column is usable by DML, not only listed in the metadata.
    gateway.query(
        f"SELECT max_concurrent_reached FROM `{gateway.table_ref(central_dataset, 'tenant_usage_quotas')}`"
    )


def test_it_never_adds_a_missing_required_column(central_dataset: str, gateway: BigQueryGateway) -> None:
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(central_dataset)))
    create_table_without(gateway, central_dataset, TenantProfile, drop="company_name")

    with pytest.raises(CommandError, match="schema drift"):
        bootstrap("--update-schema")

    assert "company_name" not in [
        f.name for f in gateway.get_table(central_dataset, "tenant_profiles").schema
    ]


def test_it_reports_type_mode_and_extra_column_drift_without_changing_anything(
    central_dataset: str, gateway: BigQueryGateway
) -> None:
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(central_dataset)))
    definition = table_definition(TenantProfile)
    table = definition.build_table(gateway.table_ref(central_dataset, definition.name))
    table.schema = [
        bigquery.SchemaField(f.name, "INT64", mode=f.mode)
        if f.name == "company_name"
        else bigquery.SchemaField(f.name, f.field_type, mode="NULLABLE")
        if f.name == "admin_email"
        else f
        for f in table.schema
    ] + [bigquery.SchemaField("legacy_notes", "STRING")]
    gateway.create_table(table)

    result = bootstrap_json("--allow-drift", "--update-schema")

    profiles = next(t for t in result["tables"] if t["table"] == "tenant_profiles")
    found = {(d["kind"], d["column"]) for d in profiles["drift"]}
    assert found == {("type", "company_name"), ("mode", "admin_email"), ("extra", "legacy_notes")}
    live = {f.name: f for f in gateway.get_table(central_dataset, "tenant_profiles").schema}
    assert live["company_name"].field_type == "INT64"
    assert "legacy_notes" in live


def test_it_fails_with_a_clear_error_when_bigquery_is_unreachable(
    settings: Any, central_dataset: str
) -> None:
    settings.BIGQUERY_EMULATOR_HOST = f"http://127.0.0.1:{free_port()}"
    settings.BIGQUERY_RETRY_DEADLINE_SECONDS = 1.0
    settings.BIGQUERY_TIMEOUT_SECONDS = 1.0

    with pytest.raises(CommandError, match="BigQuery: BigQuery is unavailable"):
        bootstrap()


def test_it_fails_with_a_clear_error_when_credentials_are_missing(
    settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    settings.BIGQUERY_EMULATOR_HOST = None
    settings.BIGQUERY_PROJECT = None
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    # Credential discovery ends by asking the GCE metadata server; keep that probe on loopback.
    closed = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("GCE_METADATA_HOST", closed)
    monkeypatch.setenv("GCE_METADATA_IP", closed)
    monkeypatch.setenv("NO_GCE_CHECK", "True")

    with pytest.raises(CommandError, match="credentials"):
        bootstrap()


def test_it_brings_an_existing_tenants_views_up_to_the_current_query(
    central_dataset: str, gateway: BigQueryGateway
) -> None:
    bootstrap()
    tenant_id = unique_name("views")
    tenant_onboard(
        tenant_id=tenant_id,
        company_name="Views Ltd",
        admin_email="ops@views.example",
        plan="STARTER",
        created_by="t",
    )
    central_repository(TenantPipelineConfig).insert(
        TenantPipelineConfig(
            config_id=f"{tenant_id}_cfg",
            tenant_id=tenant_id,
            provider="GCP",
            domain="billing",
            pipeline_template="daily_costs",
            schedule_cron="0 3 * * *",
            created_by="user:admin",
        )
    )
    # The view as an onboarding made it before actors were masked.
    view = gateway.get_table(tenant_id, "tenant_pipeline_configs")
    view.view_query = f"SELECT * FROM `{gateway.project}.{central_dataset}.tenant_pipeline_configs`"
    gateway.update_table(view, ["view_query"])

    planned = bootstrap_json("--dry-run")["views"]
    output = bootstrap("--verbosity", "2")

    assert "tenant_pipeline_configs" in planned[tenant_id]
    assert "Replaced the query of" in output
    assert tenant_id in output
    rows = gateway.query(
        f"SELECT created_by FROM `{gateway.project}.{tenant_id}.tenant_pipeline_configs`"
    ).rows
    assert [row["created_by"] for row in rows] == ["staff"]
