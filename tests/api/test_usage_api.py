"""`/usage` as staff and as the tenant: daily rows in the list envelope, with the day's API calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tenants_app.services.api_keys import api_key_create
from tenants_app.services.rate_limits import api_call_recorder, api_calls_flush
from tests.support.people import onboard_tenant

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]


@pytest.fixture(autouse=True)
def _fresh_recorder(central: str) -> Iterator[None]:
    api_call_recorder.reset()
    yield
    api_call_recorder.reset()


def test_it_counts_the_tenants_api_calls_of_the_day_beside_its_runs(api_as: ApiAs, staff: User) -> None:
    tenant_id, key = onboard_tenant("usage")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    assert [client.get("/api/v1/me").status_code for _ in range(3)] == [200] * 3
    api_calls_flush()

    seen_by_staff = api_as(staff).get(f"/api/v1/tenants/{tenant_id}/usage").json()
    seen_by_tenant = client.get("/api/v1/me/usage").json()

    # Staff calls are not the tenant's; the tenant's own /usage call is still pending its batch.
    assert [row["api_calls_today"] for row in seen_by_staff["results"]] == [3]
    assert [row["api_calls_today"] for row in seen_by_tenant["results"]] == [3]
    assert seen_by_tenant["results"][0]["pipelines_run_today"] == 0


def test_it_answers_usage_in_the_list_envelope_and_pages_it(central: str) -> None:
    tenant_id, _ = onboard_tenant("usage")
    reader = api_key_create(tenant_id=tenant_id, name="r", scopes=["tenant:read"], created_by="test")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=reader.plaintext)

    first = client.get("/api/v1/me/usage", {"days": 7}).json()
    past_the_end = client.get("/api/v1/me/usage", {"offset": 1}).json()
    refused = client.get("/api/v1/me/usage", {"limit": 91})

    assert (first["count"], first["limit"], first["offset"], len(first["results"])) == (1, 90, 0, 1)
    assert (past_the_end["count"], past_the_end["results"]) == (1, [])
    assert refused.status_code == 400
    assert set(refused.json()["error"]["fields"]) == {"limit"}
