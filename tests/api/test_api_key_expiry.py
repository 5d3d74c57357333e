"""A key issued or rotated by a tenant key never outlives that key; staff set any expiry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from tenants_app.models import TenantApiKey
from tenants_app.repositories import central_repository
from tenants_app.services.api_keys import IssuedApiKey, api_key_create
from tenants_app.timestamps import api_timestamp
from tests.conftest import unique_name
from tests.support.people import insert_profile

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]
FAR_FUTURE = "2099-01-01T00:00:00Z"


@pytest.fixture
def tenant_id(central: str) -> str:
    return insert_profile(unique_name("keys")).tenant_id


def short_lived_manager(tenant_id: str, *, lifetime: timedelta = timedelta(hours=1)) -> IssuedApiKey:
    return api_key_create(
        tenant_id=tenant_id,
        name="short-lived",
        scopes=["tenant:read", "keys:manage"],
        created_by="test",
        expires_at=timezone.now() + lifetime,
    )


def as_key(issued: IssuedApiKey) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.plaintext)
    return client


def expiry_of(body: dict) -> datetime | None:
    value = body["key"]["expires_at"]
    return parse_datetime(value) if value else None


def test_it_gives_a_key_its_creators_expiry_unless_an_earlier_one_is_asked(tenant_id: str) -> None:
    manager = short_lived_manager(tenant_id)
    sooner = (timezone.now() + timedelta(minutes=5)).replace(microsecond=0)

    unasked = as_key(manager).post(
        "/api/v1/me/keys", {"name": "ci", "scopes": ["tenant:read"]}, format="json"
    )
    asked = as_key(manager).post(
        "/api/v1/me/keys", {"name": "ci", "expires_at": sooner.isoformat()}, format="json"
    )

    assert (unasked.status_code, asked.status_code) == (201, 201)
    assert expiry_of(unasked.json()) == manager.row.expires_at
    assert expiry_of(asked.json()) == sooner


def test_it_refuses_a_tenant_key_a_later_expiry_than_its_own_but_not_staff(
    api_as: ApiAs, staff: User, tenant_id: str
) -> None:
    manager = short_lived_manager(tenant_id)
    body = {"name": "forever", "scopes": ["tenant:read"], "expires_at": FAR_FUTURE}

    refused = as_key(manager).post("/api/v1/me/keys", body, format="json")
    by_staff = api_as(staff).post(f"/api/v1/tenants/{tenant_id}/keys", body, format="json")

    # Consistent with a scope the key does not hold: a 403 permission_denied naming what it overreached.
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "permission_denied"
    assert "expires_at" in error["message"]
    assert api_timestamp(manager.row.expires_at) in error["message"]
    assert central_repository(TenantApiKey).count(filters={"tenant_id": tenant_id, "name": "forever"}) == 1
    assert by_staff.status_code == 201
    assert expiry_of(by_staff.json()) == parse_datetime(FAR_FUTURE)


def test_it_brings_a_rotated_keys_expiry_forward_to_the_rotating_keys(tenant_id: str) -> None:
    forever = api_key_create(tenant_id=tenant_id, name="forever", scopes=["tenant:read"], created_by="test")
    short = api_key_create(
        tenant_id=tenant_id,
        name="short",
        scopes=["tenant:read"],
        created_by="test",
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    manager = short_lived_manager(tenant_id)

    rotated = [
        as_key(manager).post(f"/api/v1/me/keys/{key.row.api_key_id}/rotate", {"grace": "0"}, format="json")
        for key in (forever, short)
    ]

    assert [response.status_code for response in rotated] == [201, 201]
    assert expiry_of(rotated[0].json()) == manager.row.expires_at
    assert expiry_of(rotated[1].json()) == short.row.expires_at
