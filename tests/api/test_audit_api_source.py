"""Where an audited change came from: source `api` or `portal`, the actor, the response's request id."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from tenants_app.models import TenantProfile
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.audit import audit_list

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]


def test_it_records_a_staff_change_with_source_api_and_the_response_request_id(
    api_as: ApiAs, staff: User, add_profile: Callable[..., TenantProfile]
) -> None:
    add_profile("acme_audit")

    response = api_as(staff).post("/api/v1/tenants/acme_audit/suspend")

    assert response.status_code == 200
    [entry] = audit_list(tenant_id="acme_audit").items
    assert (entry.action, entry.source) == ("tenant.suspend", "api")
    assert (entry.actor, entry.actor_type) == ("user:operator", "staff")
    assert entry.request_id == response["X-Request-ID"]
    assert len(entry.request_id) >= 8


def test_it_keeps_a_callers_request_id_and_records_a_tenant_key_as_the_actor(
    add_profile: Callable[..., TenantProfile],
) -> None:
    add_profile("acme_keys")
    manager = api_key_create(
        tenant_id="acme_keys", name="manager", scopes=["tenant:read", "keys:manage"], created_by="test"
    )
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=manager.plaintext)

    response = client.post(
        "/api/v1/me/keys",
        {"name": "ci", "scopes": ["tenant:read"]},
        format="json",
        HTTP_X_REQUEST_ID="req-from-ci-42",
    )

    assert response.status_code == 201
    assert response["X-Request-ID"] == "req-from-ci-42"
    [entry] = audit_list(tenant_id="acme_keys", source="api").items
    assert (entry.action, entry.target_id) == ("api_key.create", response.json()["key"]["api_key_id"])
    assert (entry.actor, entry.actor_type) == (f"apikey:{manager.row.api_key_id}", "tenant_key")
    assert entry.request_id == "req-from-ci-42"
    assert response.json()["api_key"] not in str(entry.after_values)


def test_it_records_a_portal_change_with_source_portal_and_the_staff_user(
    staff: User, add_profile: Callable[..., TenantProfile]
) -> None:
    add_profile("acme_portal")
    client = Client()
    client.force_login(staff)

    response = client.post("/admin/tenants/acme_portal/suspend/", HTTP_X_REQUEST_ID="portal-req-0001")

    assert response.status_code == 302
    [entry] = audit_list(tenant_id="acme_portal").items
    assert (entry.action, entry.source, entry.actor) == ("tenant.suspend", "portal", "user:operator")
    assert entry.request_id == "portal-req-0001"
