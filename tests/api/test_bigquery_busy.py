"""BigQuery refusing a write it never ran ("Too many DML statements outstanding", a concurrent-update
abort) is BigQuery being busy, not the caller's mistake: retried inside the gateway, and when that does
not help in time a 503 with Retry-After, never a 400.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from bigquery_backend.client import BUSY_RETRY_AFTER_SECONDS
from bigquery_backend.emulator import EmulatorProcess
from tenants_app.models import TenantApiKey
from tenants_app.repositories import central_repository
from tests.api.test_faults_bigquery import new_tenants, writes_to
from tests.support.bigquery_faults import BigQueryFaultProxy, Fault
from tests.support.people import create_superuser

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module", autouse=True)
def _central(central: str) -> str:
    return central


@pytest.fixture
def through_proxy(bigquery_emulator: EmulatorProcess) -> Iterator[BigQueryFaultProxy]:
    proxy = BigQueryFaultProxy(bigquery_emulator.url, slow_seconds=1.0).start()
    with override_settings(BIGQUERY_EMULATOR_HOST=proxy.url):
        yield proxy
    proxy.stop()


@pytest.fixture
def admin(db: None) -> APIClient:
    client = APIClient()
    client.force_login(create_superuser())
    return client


def create_key(admin: APIClient, tenant_id: str) -> object:
    return admin.post(
        f"/api/v1/tenants/{tenant_id}/keys", {"name": "ci", "scopes": ["tenant:read"]}, format="json"
    )


def test_it_answers_503_with_retry_after_when_bigquery_keeps_refusing_the_write(
    through_proxy: BigQueryFaultProxy, admin: APIClient
) -> None:
    tenant_id = new_tenants(1)[0]
    through_proxy.fail(Fault.TOO_MANY_DML, match=writes_to("tenant_api_keys"))

    with override_settings(BIGQUERY_RETRY_DEADLINE_SECONDS=0.5):
        response = create_key(admin, tenant_id)

    assert response.status_code == 503, response.json()
    assert response.json()["error"]["code"] == "unavailable"
    # The gateway's hint for a busy table, not the outage default.
    assert response["Retry-After"] == str(BUSY_RETRY_AFTER_SECONDS)
    assert through_proxy.fired >= 2, "the refusal was not retried inside"
    assert central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id}) == []


def test_it_never_shows_the_caller_a_refusal_that_a_retry_inside_got_past(
    through_proxy: BigQueryFaultProxy, admin: APIClient
) -> None:
    tenant_id = new_tenants(1)[0]
    through_proxy.fail(Fault.CONCURRENT_UPDATE, match=writes_to("tenant_api_keys"), times=2)

    response = create_key(admin, tenant_id)

    assert response.status_code == 201, response.json()
    assert through_proxy.fired == 2
    assert len(central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id})) == 1
