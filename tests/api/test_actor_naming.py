"""One actor naming (tenants_app/services/actors.py): staff callers see actors as recorded, a tenant's key
sees every staff actor as `staff`, on keys, credentials and the audit log alike (its values included)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tests.support.people import onboard_tenant

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]
PAYLOAD = {"api_key": "sk-proj-" + "Qw7" * 12}


def made_by_both(api_as: ApiAs, staff: User) -> tuple[str, APIClient, APIClient, dict[str, str]]:
    """A tenant whose keys and credentials were made by staff (`operator`) and by the tenant's own key."""
    tenant_id, key = onboard_tenant("actors")
    tenant = APIClient()
    tenant.credentials(HTTP_X_API_KEY=key)
    by_staff, base = api_as(staff), f"/api/v1/tenants/{tenant_id}"
    made = {
        "staff_key": by_staff.post(f"{base}/keys", {"name": "ops"}, format="json").json()["key"][
            "api_key_id"
        ],
        "own_key": tenant.post("/api/v1/me/keys", {"name": "ci"}, format="json").json()["key"]["api_key_id"],
        "staff_credential": by_staff.post(
            f"{base}/credentials", {"provider": "OPENAI", "name": "ops", "payload": PAYLOAD}, format="json"
        ).json()["credential_id"],
        "tenant_key_actor": f"apikey:{tenant.get('/api/v1/me').json()['api_key_id']}",
    }
    return tenant_id, by_staff, tenant, made


def by_id(listing: dict[str, Any], id_field: str) -> dict[str, dict[str, Any]]:
    return {row[id_field]: row for row in listing["results"]}


def test_it_shows_staff_callers_every_actor_as_recorded(api_as: ApiAs, staff: User, central: str) -> None:
    tenant_id, by_staff, _, made = made_by_both(api_as, staff)
    base = f"/api/v1/tenants/{tenant_id}"

    keys = by_id(by_staff.get(f"{base}/keys").json(), "api_key_id")
    credentials = by_id(by_staff.get(f"{base}/credentials").json(), "credential_id")
    audit = by_staff.get(f"{base}/audit", {"action": "api_key.create"}).json()["results"]

    assert keys[made["staff_key"]]["created_by"] == "user:operator"
    assert keys[made["own_key"]]["created_by"] == made["tenant_key_actor"]
    assert credentials[made["staff_credential"]]["created_by"] == "user:operator"
    actors = {entry["target_id"]: entry["actor"] for entry in audit}
    assert actors[made["staff_key"]] == "user:operator"
    assert actors[made["own_key"]] == made["tenant_key_actor"]


def test_it_shows_a_tenants_key_staff_as_staff_everywhere_and_its_own_keys_as_recorded(
    api_as: ApiAs, staff: User, central: str
) -> None:
    _, _, tenant, made = made_by_both(api_as, staff)

    answers = {
        path: tenant.get(path).json()
        for path in ("/api/v1/me/keys", "/api/v1/me/credentials", "/api/v1/me/audit")
    }

    keys = by_id(answers["/api/v1/me/keys"], "api_key_id")
    assert keys[made["staff_key"]]["created_by"] == "staff"
    assert keys[made["own_key"]]["created_by"] == made["tenant_key_actor"]
    credentials = by_id(answers["/api/v1/me/credentials"], "credential_id")
    assert credentials[made["staff_credential"]]["created_by"] == "staff"
    entries = {
        (entry["action"], entry["target_id"]): entry for entry in answers["/api/v1/me/audit"]["results"]
    }
    staff_made = entries[("credential.create", made["staff_credential"])]
    assert (staff_made["actor"], staff_made["actor_type"]) == ("staff", "staff")
    assert staff_made["after_values"]["created_by"] == "staff"
    assert entries[("api_key.create", made["own_key"])]["actor"] == made["tenant_key_actor"]
    # Nowhere, at any depth, which staff member it was.
    assert "operator" not in json.dumps(answers)
