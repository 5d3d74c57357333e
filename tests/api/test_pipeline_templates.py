"""The template catalogue over the API: listed to any tenant key or staff; configs checked against it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tenants_app.models import TenantPipelineConfig
from tenants_app.repositories import central_repository
from tenants_app.services.api_keys import api_key_create
from tests.tenants_app.services.schedules import add_tenant

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]
TRANSFORM = {"source_table": "orders", "destination_table": "orders_copy"}
BODY = {
    "provider": "GCP",
    "domain": "billing",
    "pipeline_template": "sql_transform",
    "schedule_cron": "30 2 * * *",
    "parameters": TRANSFORM,
}


@pytest.fixture(scope="module", autouse=True)
def _central(central: str) -> str:
    return central


def as_key(tenant_id: str, *scopes: str) -> APIClient:
    key = api_key_create(tenant_id=tenant_id, name="test", scopes=list(scopes), created_by="test").plaintext
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def create(client: APIClient, tenant_id: str, **values: Any) -> Any:
    return client.post(f"/api/v1/tenants/{tenant_id}/pipelines", {**BODY, **values}, format="json")


# --- the listing -----------------------------------------------------------------------------------------
def test_it_lists_each_template_with_its_parameters_and_providers(api_as: ApiAs, superuser: User) -> None:
    response = api_as(superuser).get("/api/v1/pipeline-templates")

    assert response.status_code == 200
    templates = {template["name"]: template for template in response.json()["results"]}
    assert set(templates) >= {"sql_transform", "data_quality"}
    transform = {parameter["name"]: parameter for parameter in templates["sql_transform"]["parameters"]}
    assert transform["destination_table"]["required"] is True
    assert (transform["write_mode"]["default"], transform["write_mode"]["choices"]) == (
        "overwrite",
        ["overwrite", "append"],
    )
    assert all(parameter["help"] for parameter in transform.values())
    assert templates["sql_transform"]["exactly_one_of"] == [["source_query", "source_table"]]
    quality = {parameter["name"]: parameter for parameter in templates["data_quality"]["parameters"]}
    assert quality["expectations"]["required"] is True
    assert templates["data_quality"]["providers"] == ["GCP"]


def test_it_lists_the_catalogue_to_a_tenant_key_of_any_scope_and_to_read_only_staff(
    api_as: ApiAs, read_only_staff: User
) -> None:
    tenant_id = add_tenant()

    assert as_key(tenant_id, "keys:manage").get("/api/v1/pipeline-templates").status_code == 200
    assert api_as(read_only_staff).get("/api/v1/pipeline-templates").status_code == 200
    assert api_as(None).get("/api/v1/pipeline-templates").status_code == 401


# --- configs checked against it ----------------------------------------------------------------------------
def test_it_creates_a_config_of_each_template(api_as: ApiAs, superuser: User) -> None:
    tenant_id = add_tenant()
    client = api_as(superuser)
    quality = {
        "target_table": "orders",
        "expectations": [{"type": "not_null", "column": "id"}, {"type": "row_count_between", "min": 1}],
    }

    transform = create(client, tenant_id)
    checks = create(client, tenant_id, pipeline_template="data_quality", parameters=quality)

    assert transform.status_code == 201, transform.json()
    assert checks.status_code == 201, checks.json()
    # Stored as given: the worker fills in the defaults when it runs.
    assert checks.json()["parameters"] == quality


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"pipeline_template": "daily_costs"}, "pipeline_template"),
        ({"parameters": {**TRANSFORM, "write_mode": "upsert"}}, "parameters.write_mode"),
        ({"parameters": {**TRANSFORM, "destination_table": "a.b"}}, "parameters.destination_table"),
        (
            {"parameters": {**TRANSFORM, "destination_table": "tenant_dq_results"}},
            "parameters.destination_table",
        ),
        ({"parameters": {"source_table": "orders"}}, "parameters.destination_table"),
        ({"parameters": {**TRANSFORM, "window_days": 7}}, "parameters.window_days"),
        ({"parameters": {"destination_table": "t"}}, "parameters.source_query"),
        (
            {"parameters": {**TRANSFORM, "source_query": "SELECT * FROM {{orders}}"}},
            "parameters.source_query",
        ),
        (
            {
                "parameters": {
                    "source_query": "SELECT * FROM tenants.tenant_profiles",
                    "destination_table": "t",
                }
            },
            "parameters.source_query",
        ),
        (
            {
                "parameters": {
                    "source_query": "SELECT * FROM `p.d.t` JOIN {{a}} USING (id)",
                    "destination_table": "t",
                }
            },
            "parameters.source_query",
        ),
        (
            {"parameters": {"source_query": "SELECT 1 FROM {{a}}; DROP TABLE x", "destination_table": "t"}},
            "parameters.source_query",
        ),
        (
            {
                "pipeline_template": "data_quality",
                "parameters": {"target_table": "orders", "expectations": []},
            },
            "parameters.expectations",
        ),
        (
            {
                "pipeline_template": "data_quality",
                "parameters": {
                    "target_table": "orders",
                    "expectations": [{"type": "unique", "column": "a b"}],
                },
            },
            "parameters.expectations[0].column",
        ),
        (
            {
                "pipeline_template": "data_quality",
                "parameters": {
                    "target_table": "t",
                    "expectations": [{"type": "row_count_between", "min": 5, "max": 1}],
                },
            },
            "parameters.expectations[0].max",
        ),
    ],
)
def test_it_answers_400_naming_an_unknown_template_or_a_bad_parameter(
    api_as: ApiAs, superuser: User, values: dict[str, Any], field: str
) -> None:
    tenant_id = add_tenant()

    response = create(api_as(superuser), tenant_id, **values)

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]
    assert central_repository(TenantPipelineConfig).count(filters={"tenant_id": tenant_id}) == 0


def test_it_checks_a_changed_template_or_parameters_against_the_catalogue(
    api_as: ApiAs, superuser: User
) -> None:
    tenant_id = add_tenant()
    client = api_as(superuser)
    config_id = create(client, tenant_id).json()["config_id"]
    url = f"/api/v1/tenants/{tenant_id}/pipelines/{config_id}"

    other_template = client.patch(url, {"pipeline_template": "data_quality"}, format="json")
    bad_parameter = client.patch(url, {"parameters": {**TRANSFORM, "write_mode": "merge"}}, format="json")

    assert other_template.status_code == 400
    assert set(other_template.json()["error"]["fields"]) == {
        "parameters.source_table",
        "parameters.destination_table",
        "parameters.target_table",
        "parameters.expectations",
    }
    assert list(bad_parameter.json()["error"]["fields"]) == ["parameters.write_mode"]


def test_it_still_reads_and_pauses_a_config_whose_template_is_not_in_the_catalogue(
    api_as: ApiAs, superuser: User
) -> None:
    tenant_id = add_tenant()
    client = api_as(superuser)
    config_id = create(client, tenant_id).json()["config_id"]
    # A row written before the catalogue existed.
    central_repository(TenantPipelineConfig).update_where(
        {"pipeline_template": "daily_costs", "parameters": {"dataset": "raw"}},
        filters={"config_id": config_id},
    )
    url = f"/api/v1/tenants/{tenant_id}/pipelines/{config_id}"

    read = client.get(url)
    paused = client.post(f"{url}/pause")
    moved = client.patch(url, {"priority": 9}, format="json")

    assert (read.status_code, read.json()["pipeline_template"]) == (200, "daily_costs")
    assert paused.status_code == 200
    assert (moved.status_code, moved.json()["priority"]) == (200, 9)
