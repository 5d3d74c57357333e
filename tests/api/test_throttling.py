"""Tenant keys are rate limited per tenant over the API; staff requests are not."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from tenants_app.services.api_keys import api_key_create
from tenants_app.services.rate_limits import api_call_recorder, api_calls_flush
from tenants_app.services.subscription_selectors import usage_list
from tests.tenants_app.services.quota_factories import tenant_with_subscription

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]


@pytest.fixture(scope="module", autouse=True)
def _central(central: str) -> str:
    return central


@pytest.fixture(autouse=True)
def _fresh_recorder() -> Iterator[None]:
    api_call_recorder.reset()
    yield
    api_call_recorder.reset()


def tenant_client(tenant_id: str) -> APIClient:
    issued = api_key_create(tenant_id=tenant_id, name="ci", scopes=["tenant:read"], created_by="test")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.plaintext)
    return client


def test_it_answers_429_with_retry_after_once_the_tenant_s_minute_is_used_up() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=2)
    client = tenant_client(tenant_id)

    responses = []
    while len(responses) < 6 and (not responses or responses[-1].status_code != 429):
        responses.append(client.get("/api/v1/me/subscription"))
    refused = responses[-1]

    # 2 calls a minute: the third is refused (the fifth if a minute boundary passed meanwhile).
    assert [r.status_code for r in responses[:2]] == [200, 200]
    assert len(responses) in (3, 5)
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    error = refused.json()["error"]
    assert (error["code"], error["window"], error["limit"]) == ("rate_limited", "minute", 2)
    assert error["retry_after"] == int(refused["Retry-After"])


def test_it_shares_the_limit_between_the_keys_of_one_tenant() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=2)
    first, second = tenant_client(tenant_id), tenant_client(tenant_id)

    statuses = [client.get("/api/v1/me").status_code for client in (first, second) * 3]

    # Two calls a minute whichever key makes them (a minute boundary passing meanwhile moves the 429).
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]


def test_it_never_limits_staff(api_as: ApiAs, staff: User) -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=1)
    client = api_as(staff)

    statuses = {client.get(f"/api/v1/tenants/{tenant_id}/subscription").status_code for _ in range(4)}

    assert statuses == {200}


def test_it_counts_admitted_calls_into_the_usage_row() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=3)
    client = tenant_client(tenant_id)
    statuses = [client.get("/api/v1/me").status_code for _ in range(5)]
    admitted = statuses.count(200)

    assert admitted in (3, 4, 5)  # 3, unless a minute boundary passed meanwhile
    assert api_calls_flush() == admitted
    [today] = usage_list(tenant_id=tenant_id, days=1)
    assert today.total_api_calls_today == admitted


def test_it_can_be_switched_off() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=1)
    client = tenant_client(tenant_id)

    with override_settings(API_RATE_LIMITS_ENABLED=False):
        statuses = {client.get("/api/v1/me").status_code for _ in range(3)}

    assert statuses == {200}
