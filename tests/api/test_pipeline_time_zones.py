"""A pipeline schedule's time zone over the API: IANA names only, never the host's own `localtime`."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tenants_app.services.api_keys import api_key_create
from tests.tenants_app.services.schedules import add_tenant

pytestmark = pytest.mark.django_db

BODY = {
    "provider": "GCP",
    "domain": "billing",
    "pipeline_template": "sql_transform",
    "schedule_cron": "30 2 * * *",
    "parameters": {"source_table": "raw_costs", "destination_table": "daily_costs"},
}


@pytest.fixture
def manager(central: str) -> tuple[str, APIClient]:
    tenant_id = add_tenant()
    key = api_key_create(
        tenant_id=tenant_id, name="test", scopes=["pipelines:read", "pipelines:manage"], created_by="test"
    ).plaintext
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return tenant_id, client


@pytest.mark.parametrize("zone", ["localtime", "Factory"])
def test_it_answers_400_naming_timezone_for_a_host_zone_on_create_and_change(
    manager: tuple[str, APIClient], zone: str
) -> None:
    _, client = manager
    created = client.post("/api/v1/me/pipelines", {**BODY, "timezone": "Europe/Paris"}, format="json")
    config_id = created.json()["config_id"]

    refused = client.post("/api/v1/me/pipelines", {**BODY, "timezone": zone}, format="json")
    changed = client.patch(f"/api/v1/me/pipelines/{config_id}", {"timezone": zone}, format="json")

    for response in (refused, changed):
        assert response.status_code == 400
        assert list(response.json()["error"]["fields"]) == ["timezone"]
    assert client.get(f"/api/v1/me/pipelines/{config_id}").json()["timezone"] == "Europe/Paris"
