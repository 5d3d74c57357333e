"""Bidi control characters in ids and names over the API: a 400 naming the field, nothing stored."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tenants_app.models import TenantApiKey
from tenants_app.repositories import central_repository
from tenants_app.services.tenants import tenant_get
from tests.tenants_app.services.quota_factories import tenant_with_subscription

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]
# Written as a spoof would be: the override makes "moc.elpmaxe" read "example.com" after it.
SPOOF = "Acme \u202emoc.elpmaxe"


@pytest.fixture(scope="module", autouse=True)
def _central(central: str) -> str:
    return central


def test_it_refuses_a_company_name_with_a_bidi_override_at_onboarding(api_as: ApiAs, staff: User) -> None:
    body = {
        "tenant_id": "t_bidi_api",
        "company_name": SPOOF,
        "admin_email": "ops@acme.example",
        "plan": "STARTER",
    }

    response = api_as(staff).post("/api/v1/tenants/onboard", body, format="json")

    assert response.status_code == 400
    assert "U+202E" in " ".join(response.json()["error"]["fields"]["company_name"])
    assert api_as(staff).get("/api/v1/tenants/t_bidi_api").status_code == 404


def test_it_refuses_a_bidi_override_in_a_company_name_edit_and_a_key_name(api_as: ApiAs, staff: User) -> None:
    tenant_id = tenant_with_subscription()
    client = api_as(staff)

    edit = client.patch(f"/api/v1/tenants/{tenant_id}", {"company_name": SPOOF}, format="json")
    key = client.post(
        f"/api/v1/tenants/{tenant_id}/keys", {"name": SPOOF, "scopes": ["tenant:read"]}, format="json"
    )

    assert (edit.status_code, list(edit.json()["error"]["fields"])) == (400, ["company_name"])
    assert (key.status_code, list(key.json()["error"]["fields"])) == (400, ["name"])
    assert tenant_get(tenant_id=tenant_id).company_name == "Acme Corp"
    assert central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id}) == []
