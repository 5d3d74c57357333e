"""GET /api/v1/me from the cache: polling it costs no BigQuery job, and a change shows at once."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from bigquery_backend.client import BigQueryGateway
from tenants_app.services.subscription_plan_change import subscription_change_plan
from tenants_app.services.tenants import tenant_update
from tests.support.people import onboard_tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant(central: str) -> tuple[str, APIClient]:
    tenant_id, key = onboard_tenant("me")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return tenant_id, client


def test_it_answers_me_from_the_cache_without_a_job(
    tenant: tuple[str, APIClient], gateway: BigQueryGateway
) -> None:
    tenant_id, client = tenant
    assert client.get("/api/v1/me").status_code == 200

    with gateway.count_jobs() as counter:
        answers = [client.get("/api/v1/me") for _ in range(5)]

    assert [answer.status_code for answer in answers] == [200] * 5
    assert {answer.json()["tenant"]["tenant_id"] for answer in answers} == {tenant_id}
    assert counter.jobs == 0


def test_it_shows_a_profile_change_at_once(tenant: tuple[str, APIClient]) -> None:
    tenant_id, client = tenant
    assert client.get("/api/v1/me").json()["tenant"]["company_name"] == "me Inc"

    tenant_update(tenant_id=tenant_id, actor="user:root", company_name="Renamed Ltd")

    assert client.get("/api/v1/me").json()["tenant"]["company_name"] == "Renamed Ltd"


def test_it_shows_a_plan_change_at_once(tenant: tuple[str, APIClient]) -> None:
    tenant_id, client = tenant
    assert client.get("/api/v1/me").json()["tenant"]["subscription_plan"] == "STARTER"

    subscription_change_plan(tenant_id=tenant_id, plan="SCALE", actor="user:root")

    assert client.get("/api/v1/me").json()["tenant"]["subscription_plan"] == "SCALE"
