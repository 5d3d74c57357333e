"""Onboarding, keys, credentials, subscription and usage over the API, as staff and as a tenant."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.emulator import free_port
from tenants_app.api.idempotency import STALE_AFTER
from tenants_app.models import IdempotencyRecord, TenantApiKey, TenantCloudCredential, TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_scopes import DEFAULT_API_KEY_SCOPES, INITIAL_API_KEY_SCOPES
from tenants_app.services.api_keys import api_key_create
from tests.conftest import unique_name
from tests.support.kms_fake import cloud_kms_in_use
from tests.support.people import onboard_tenant
from tests.support.tenant_rows import rows_left_alone

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]
OPENAI_SECRET = "sk-" + "Zq9" * 12
ANTHROPIC_SECRET = "sk-ant-" + "Yx8" * 12


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    key: str  # the initial key: every scope but pipelines:execute


def onboard(prefix: str) -> Tenant:
    return Tenant(*onboard_tenant(prefix))


@pytest.fixture(scope="module")
def tenant_a(central: str) -> Tenant:
    return onboard("alpha")


@pytest.fixture(scope="module")
def tenant_b(central: str) -> Tenant:
    return onboard("beta")


def as_tenant(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def scoped_key(tenant: Tenant, *scopes: str) -> str:
    return api_key_create(
        tenant_id=tenant.tenant_id, name="scoped", scopes=list(scopes), created_by="test"
    ).plaintext


# --- onboarding ------------------------------------------------------------------------------------------
def test_it_onboards_a_tenant_and_shows_its_first_key_once(
    api_as: ApiAs, superuser: User, central: str
) -> None:
    tenant_id = unique_name("gamma")
    body = {
        "tenant_id": tenant_id,
        "company_name": "Gamma Ltd",
        "admin_email": "ops@gamma.example",
        "plan": "SCALE",
    }

    response = api_as(superuser).post("/api/v1/tenants/onboard", body, format="json")

    assert response.status_code == 201
    data = response.json()
    assert data["tenant"]["tenant_id"] == tenant_id
    assert data["subscription"]["daily_limit"] == 100
    assert data["api_key"].startswith("cvg_live_")
    assert as_tenant(data["api_key"]).get("/api/v1/me").json()["tenant"]["tenant_id"] == tenant_id
    keys = api_as(superuser).get(f"/api/v1/tenants/{tenant_id}/keys")
    assert data["api_key"] not in keys.content.decode()
    [key] = keys.json()["results"]
    assert key["key_prefix"] == data["api_key"][: len(key["key_prefix"])]


def test_it_answers_409_for_an_existing_tenant(api_as: ApiAs, superuser: User, tenant_a: Tenant) -> None:
    body = {
        "tenant_id": tenant_a.tenant_id,
        "company_name": "alpha Inc",
        "admin_email": "ops@example.com",
        "plan": "STARTER",
    }

    response = api_as(superuser).post("/api/v1/tenants/onboard", body, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_exists"


def test_it_validates_an_onboarding_in_a_dry_run_without_writing(
    api_as: ApiAs, superuser: User, central: str, gateway: BigQueryGateway
) -> None:
    tenant_id = unique_name("delta")
    good = {
        "tenant_id": tenant_id,
        "company_name": "Delta",
        "admin_email": "ops@delta.example",
        "plan": "STARTER",
    }
    bad = {"tenant_id": "Bad Id!", "company_name": "D", "admin_email": "nope", "plan": "GOLD"}
    client = api_as(superuser)

    with gateway.count_jobs() as counter:
        ok = client.post("/api/v1/tenants/dryrun", good, format="json")
    refused = client.post("/api/v1/tenants/dryrun", bad, format="json")

    assert (ok.status_code, ok.json()["valid"], ok.json()["ok"]) == (200, True, True)
    assert not any(
        s.lstrip().upper().startswith(("INSERT", "MERGE", "UPDATE", "CREATE")) for s in counter.statements
    )
    assert central_repository(TenantProfile).find(tenant_id) is None
    assert refused.status_code == 400
    # An unknown plan is not malformed: a dry run reports it as a failed check (test_onboarding_compat.py).
    assert set(refused.json()["error"]["fields"]) == {"tenant_id", "company_name", "admin_email"}


def test_it_refuses_every_bad_onboarding_field_at_once(api_as: ApiAs, superuser: User, central: str) -> None:
    bad = {"tenant_id": "UPPER case", "company_name": "X", "admin_email": "not-an-email", "plan": "STARTER"}

    response = api_as(superuser).post("/api/v1/tenants/onboard", bad, format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"tenant_id", "company_name", "admin_email"}


def test_it_replays_an_onboarding_for_the_same_idempotency_key(
    api_as: ApiAs, superuser: User, central: str
) -> None:
    tenant_id = unique_name("eps")
    body = {
        "tenant_id": tenant_id,
        "company_name": "Eps",
        "admin_email": "ops@eps.example",
        "plan": "STARTER",
    }
    client = api_as(superuser)

    first = client.post("/api/v1/tenants/onboard", body, format="json", HTTP_IDEMPOTENCY_KEY="onboard-eps-1")
    again = client.post("/api/v1/tenants/onboard", body, format="json", HTTP_IDEMPOTENCY_KEY="onboard-eps-1")
    other = client.post(
        "/api/v1/tenants/onboard",
        {**body, "plan": "SCALE"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="onboard-eps-1",
    )

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert central_repository(TenantApiKey).count(filters={"tenant_id": tenant_id}) == 1


# --- tenant keys: authentication, scopes, isolation --------------------------------------------------------
def test_it_refuses_requests_without_or_with_a_bad_key(central: str) -> None:
    assert APIClient().get("/api/v1/me").status_code in {401, 403}
    bad = as_tenant("cvg_live_" + "A" * 40).get("/api/v1/me")
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "api_key_invalid"
    assert as_tenant("garbage").get("/api/v1/me").status_code == 401


def test_it_serves_a_tenant_its_own_profile_subscription_and_usage(tenant_a: Tenant) -> None:
    client = as_tenant(tenant_a.key)

    me = client.get("/api/v1/me").json()
    subscription = client.get("/api/v1/me/subscription").json()
    usage = client.get("/api/v1/me/usage", {"days": 7}).json()

    assert me["tenant"]["tenant_id"] == tenant_a.tenant_id
    assert subscription["plan_name"] == "STARTER"
    assert (subscription["daily_limit"], subscription["monthly_limit"]) == (6, 180)
    assert usage["count"] == 1
    assert usage["results"][0]["pipelines_run_today"] == 0


def test_it_keeps_a_tenant_key_out_of_the_admin_api(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = as_tenant(tenant_a.key)

    assert client.get("/api/v1/tenants").status_code == 403
    assert client.get(f"/api/v1/tenants/{tenant_b.tenant_id}/keys").status_code == 403
    assert client.get(f"/api/v1/tenants/{tenant_a.tenant_id}/keys").status_code == 403


def test_it_answers_404_when_a_tenant_reaches_for_another_tenants_key(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    b_key_id = (
        central_repository(TenantApiKey)
        .list(filters={"tenant_id": tenant_b.tenant_id}, limit=1)[0]
        .api_key_id
    )
    client = as_tenant(tenant_a.key)

    with rows_left_alone(tenant_b.tenant_id, TenantApiKey):
        revoke = client.post(f"/api/v1/me/keys/{b_key_id}/revoke", {"reason": "mine now"}, format="json")
        rotate = client.post(f"/api/v1/me/keys/{b_key_id}/rotate", {"grace": "0"}, format="json")

    assert (revoke.status_code, rotate.status_code) == (404, 404)
    assert as_tenant(tenant_b.key).get("/api/v1/me").status_code == 200


def test_it_requires_the_scope_for_each_action(tenant_a: Tenant) -> None:
    reader = as_tenant(scoped_key(tenant_a, "tenant:read"))

    assert reader.get("/api/v1/me/keys").status_code == 200
    refused = reader.post("/api/v1/me/keys", {"name": "more"}, format="json")
    assert refused.status_code == 403
    assert "keys:manage" in refused.json()["error"]["message"]
    assert reader.post("/api/v1/me/credentials", {}, format="json").status_code == 403


def test_it_lets_a_tenant_issue_rotate_and_revoke_its_own_keys(tenant_a: Tenant) -> None:
    manager = as_tenant(scoped_key(tenant_a, "tenant:read", "keys:manage"))

    issued = manager.post("/api/v1/me/keys", {"name": "ci", "scopes": ["tenant:read"]}, format="json").json()
    new_key, key_id = issued["api_key"], issued["key"]["api_key_id"]
    rotated = manager.post(f"/api/v1/me/keys/{key_id}/rotate", {"grace": "1h"}, format="json").json()
    both_work = (
        as_tenant(new_key).get("/api/v1/me").status_code,
        as_tenant(rotated["api_key"]).get("/api/v1/me").status_code,
    )
    revoked = manager.post(f"/api/v1/me/keys/{key_id}/revoke", {"reason": "leaked in a log"}, format="json")
    after = as_tenant(new_key).get("/api/v1/me")

    assert issued["key"]["scopes"] == ["tenant:read"]
    assert both_work == (200, 200)
    assert revoked.json()["revoked_reason"] == "leaked in a log"
    assert (after.status_code, after.json()["error"]["code"]) == (401, "api_key_revoked")
    assert as_tenant(rotated["api_key"]).get("/api/v1/me").status_code == 200


def test_it_stops_an_old_key_at_once_with_no_grace(tenant_a: Tenant) -> None:
    manager = as_tenant(scoped_key(tenant_a, "tenant:read", "keys:manage"))
    issued = manager.post("/api/v1/me/keys", {"name": "short"}, format="json").json()

    rotated = manager.post(
        f"/api/v1/me/keys/{issued['key']['api_key_id']}/rotate", {"grace": "0"}, format="json"
    )

    assert rotated.status_code == 201
    assert as_tenant(issued["api_key"]).get("/api/v1/me").status_code == 401
    bad_grace = manager.post(
        f"/api/v1/me/keys/{rotated.json()['key']['api_key_id']}/rotate", {"grace": "2h"}, format="json"
    )
    assert bad_grace.status_code == 400
    assert "grace" in bad_grace.json()["error"]["fields"]


def test_it_gives_a_key_without_chosen_scopes_the_read_only_ones_and_names_its_rotation(
    tenant_a: Tenant,
) -> None:
    manager = as_tenant(scoped_key(tenant_a, *INITIAL_API_KEY_SCOPES))

    issued = manager.post("/api/v1/me/keys", {"name": "dashboards"}, format="json").json()
    rotated = manager.post(
        f"/api/v1/me/keys/{issued['key']['api_key_id']}/rotate", {"grace": "1h"}, format="json"
    )

    assert issued["key"]["scopes"] == list(DEFAULT_API_KEY_SCOPES)
    assert rotated.json()["key"]["name"].startswith("dashboards (rotated ")


def test_it_refuses_a_suspended_tenants_keys_at_once(api_as: ApiAs, superuser: User, central: str) -> None:
    tenant = onboard("zeta")
    client = as_tenant(tenant.key)
    assert client.get("/api/v1/me").status_code == 200

    api_as(superuser).post(f"/api/v1/tenants/{tenant.tenant_id}/suspend")
    suspended = client.get("/api/v1/me")
    api_as(superuser).post(f"/api/v1/tenants/{tenant.tenant_id}/reactivate")

    assert (suspended.status_code, suspended.json()["error"]["code"]) == (403, "tenant_suspended")
    assert client.get("/api/v1/me").status_code == 200


def test_it_verifies_a_cached_key_with_no_bigquery_job(tenant_a: Tenant, gateway: BigQueryGateway) -> None:
    client = as_tenant(tenant_a.key)
    client.get("/api/v1/me/keys")

    with gateway.count_jobs() as counter:
        client.get("/api/v1/me/keys")

    # The jobs left are the key listing itself (its page and its total): verification came from the cache.
    assert counter.jobs == 2
    assert not any("`api_key_hash` =" in statement for statement in counter.statements)


# --- credentials: payload in, metadata out ----------------------------------------------------------------
def test_it_stores_a_credential_and_never_returns_the_secret(
    tenant_a: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    client = as_tenant(tenant_a.key)

    with caplog.at_level(logging.DEBUG):
        created = client.post(
            "/api/v1/me/credentials",
            {"provider": "OPENAI", "name": "prod", "payload": {"api_key": OPENAI_SECRET}},
            format="json",
        )
        listed = client.get("/api/v1/me/credentials")
        shown = client.get(f"/api/v1/me/credentials/{created.json()['credential_id']}")

    assert created.status_code == 201
    assert created.json()["type"] == "API_KEY"
    assert created.json()["fingerprint"]
    for response in (created, listed, shown):
        assert OPENAI_SECRET not in response.content.decode()
        assert "encrypted" not in response.content.decode()
    assert OPENAI_SECRET not in caplog.text


def test_it_answers_400_naming_a_bad_payload_field_without_echoing_it(tenant_a: Tenant) -> None:
    response = as_tenant(tenant_a.key).post(
        "/api/v1/me/credentials",
        {"provider": "OPENAI", "name": "typo", "payload": {"api_key": "pk-not-a-key-but-secret-ish"}},
        format="json",
    )

    assert response.status_code == 400
    assert "api_key" in json.dumps(response.json()["error"]["fields"])
    assert "pk-not-a-key-but-secret-ish" not in response.content.decode()


def test_it_replaces_and_deactivates_a_credential(tenant_a: Tenant) -> None:
    client = as_tenant(tenant_a.key)
    created = client.post(
        "/api/v1/me/credentials",
        {"provider": "ANTHROPIC", "name": "claude", "payload": {"api_key": ANTHROPIC_SECRET}},
        format="json",
    ).json()
    path = f"/api/v1/me/credentials/{created['credential_id']}"

    replaced = client.post(
        f"{path}/replace", {"payload": {"api_key": ANTHROPIC_SECRET[:-3] + "Qq7"}}, format="json"
    ).json()
    deactivated = client.post(f"{path}/deactivate").json()

    assert replaced["fingerprint"] != created["fingerprint"]
    assert deactivated["is_active"] is False
    assert created["credential_id"] not in client.get("/api/v1/me/credentials").content.decode()


def test_it_answers_404_for_another_tenants_credential(tenant_a: Tenant, tenant_b: Tenant) -> None:
    created = (
        as_tenant(tenant_b.key)
        .post(
            "/api/v1/me/credentials",
            {"provider": "OPENAI", "name": "b-only", "payload": {"api_key": OPENAI_SECRET}},
            format="json",
        )
        .json()
    )
    path = f"/api/v1/me/credentials/{created['credential_id']}"
    thief = as_tenant(tenant_a.key)

    with rows_left_alone(tenant_b.tenant_id, TenantCloudCredential):
        assert thief.get(path).status_code == 404
        assert thief.post(f"{path}/deactivate").status_code == 404
        # A valid payload: a broken ownership check would show as a replacement, not a 400.
        body = {"payload": {"api_key": OPENAI_SECRET[:-3] + "Rr5"}}
        replace = thief.post(f"{path}/replace", body, format="json")
    assert replace.status_code == 404
    assert central_repository(TenantCloudCredential).get(created["credential_id"]).is_active is True


def test_it_answers_403_past_the_plans_provider_limit(central: str) -> None:
    tenant = onboard("eta")
    client = as_tenant(tenant.key)
    payloads = {
        "OPENAI": {"api_key": OPENAI_SECRET},
        "ANTHROPIC": {"api_key": ANTHROPIC_SECRET},
        "AWS": {"access_key_id": "AKIA" + "ABCDEFGHIJKLMNOP", "secret_access_key": "a" * 40},
        "AZURE": {
            "tenant_id": "00000000-0000-0000-0000-000000000001",
            "client_id": "00000000-0000-0000-0000-000000000002",
            "client_secret": "azure-client-secret-value",
        },
    }

    statuses = [
        client.post(
            "/api/v1/me/credentials", {"provider": p, "name": p.lower(), "payload": body}, format="json"
        )
        for p, body in payloads.items()
    ]

    assert [r.status_code for r in statuses] == [201, 201, 201, 403]
    assert statuses[-1].json()["error"]["code"] == "plan_limit_reached"


def test_it_answers_503_and_stores_nothing_when_kms_is_down(
    tenant_a: Tenant, gateway: BigQueryGateway
) -> None:
    with cloud_kms_in_use() as fake:
        fake.simulate_outage()
        before = central_repository(TenantCloudCredential).count(filters={"tenant_id": tenant_a.tenant_id})

        response = as_tenant(tenant_a.key).post(
            "/api/v1/me/credentials",
            {"provider": "OPENAI", "name": "outage", "payload": {"api_key": OPENAI_SECRET}},
            format="json",
        )

    assert response.status_code == 503
    assert response["Retry-After"]
    assert (
        central_repository(TenantCloudCredential).count(filters={"tenant_id": tenant_a.tenant_id}) == before
    )


def test_it_lets_staff_manage_a_tenants_keys_by_tenant_id(
    api_as: ApiAs, staff: User, tenant_a: Tenant
) -> None:
    client = api_as(staff)

    issued = client.post(f"/api/v1/tenants/{tenant_a.tenant_id}/keys", {"name": "ops"}, format="json")
    listed = client.get(f"/api/v1/tenants/{tenant_a.tenant_id}/keys").json()["results"]

    assert issued.status_code == 201
    assert issued.json()["key"]["created_by"] == "user:operator"
    assert issued.json()["key"]["api_key_id"] in {k["api_key_id"] for k in listed}
    assert all(issued.json()["api_key"] not in json.dumps(k) for k in listed)


def test_it_refuses_a_malformed_idempotency_key(api_as: ApiAs, staff: User, tenant_a: Tenant) -> None:
    response = api_as(staff).post(
        f"/api/v1/tenants/{tenant_a.tenant_id}/keys",
        {"name": "x"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="bad key é",
    )

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]


def test_it_forgets_a_failed_request_so_its_key_can_be_reused(
    api_as: ApiAs, staff: User, tenant_a: Tenant
) -> None:
    client = api_as(staff)
    path = f"/api/v1/tenants/{tenant_a.tenant_id}/keys"

    failed = client.post(
        path, {"name": "x", "scopes": ["nope"]}, format="json", HTTP_IDEMPOTENCY_KEY="retry-1"
    )
    fixed = client.post(
        path, {"name": "x", "scopes": ["tenant:read"]}, format="json", HTTP_IDEMPOTENCY_KEY="retry-1"
    )

    assert failed.status_code == 400
    assert fixed.status_code == 201
    assert "Idempotent-Replayed" not in fixed


def test_it_leaves_no_secret_in_the_tenants_own_dataset(
    api_as: ApiAs, superuser: User, gateway: BigQueryGateway, central: str
) -> None:
    tenant_id = unique_name("theta")
    body = {
        "tenant_id": tenant_id,
        "company_name": "Theta",
        "admin_email": "ops@theta.example",
        "plan": "STARTER",
    }
    response = api_as(superuser).post("/api/v1/tenants/onboard", body, format="json")
    assert response.status_code == 201, response.json()
    onboarded = response.json()
    as_tenant(onboarded["api_key"]).post(
        "/api/v1/me/credentials",
        {"provider": "OPENAI", "name": "prod", "payload": {"api_key": OPENAI_SECRET}},
        format="json",
    )
    stored_key = central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id})[0]
    secrets = [onboarded["api_key"], stored_key.api_key_hash, OPENAI_SECRET]

    tables = gateway.list_table_ids(tenant_id)
    dumped = ""
    for table in tables:
        columns = [field.name for field in gateway.get_table(tenant_id, table).schema]
        assert not [
            c for c in columns if any(word in c for word in ("key", "secret", "encrypted", "credential"))
        ]
        dumped += repr(gateway.query(f"SELECT * FROM `{gateway.table_ref(tenant_id, table)}`").rows)

    assert len(tables) == 5
    assert all(secret not in dumped for secret in secrets)


def test_it_never_replays_one_tenants_response_to_another(tenant_a: Tenant, tenant_b: Tenant) -> None:
    body = {"name": "ci", "scopes": ["tenant:read"]}

    first = as_tenant(tenant_a.key).post(
        "/api/v1/me/keys", body, format="json", HTTP_IDEMPOTENCY_KEY="create-ci"
    )
    second = as_tenant(tenant_b.key).post(
        "/api/v1/me/keys", body, format="json", HTTP_IDEMPOTENCY_KEY="create-ci"
    )

    assert (first.status_code, second.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in second
    assert second.json()["api_key"] != first.json()["api_key"]
    assert (
        as_tenant(second.json()["api_key"]).get("/api/v1/me").json()["tenant"]["tenant_id"]
        == tenant_b.tenant_id
    )


def test_it_lets_a_tenant_key_grant_only_scopes_it_holds(tenant_a: Tenant) -> None:
    manager = as_tenant(scoped_key(tenant_a, "tenant:read", "keys:manage"))

    refused = manager.post(
        "/api/v1/me/keys", {"name": "runner", "scopes": ["pipelines:execute"]}, format="json"
    )

    assert refused.status_code == 403
    assert "pipelines:execute" in refused.json()["error"]["message"]


def test_it_removes_a_purged_tenants_authorised_views_from_the_central_dataset(
    api_as: ApiAs, superuser: User, gateway: BigQueryGateway, central: str
) -> None:
    tenant = onboard("iota")

    def authorised() -> list[str]:
        entries = gateway.get_dataset(central).access_entries
        return [
            e.entity_id["tableId"]
            for e in entries
            if e.entity_type == "view" and e.entity_id["datasetId"] == tenant.tenant_id
        ]

    before = authorised()
    response = api_as(superuser).post(
        f"/api/v1/tenants/{tenant.tenant_id}/offboard",
        {"confirm_tenant_id": tenant.tenant_id, "purge_dataset": True},
        format="json",
    )

    assert sorted(before) == ["tenant_pipeline_configs", "tenant_scheduled_pipeline_runs"]
    assert response.status_code == 200
    assert authorised() == []


def test_it_refuses_to_rotate_a_key_with_scopes_the_caller_lacks(
    api_as: ApiAs, staff: User, tenant_a: Tenant
) -> None:
    runner = (
        api_as(staff)
        .post(
            f"/api/v1/tenants/{tenant_a.tenant_id}/keys",
            {"name": "runner", "scopes": ["pipelines:execute"]},
            format="json",
        )
        .json()
    )
    manager = as_tenant(scoped_key(tenant_a, "tenant:read", "keys:manage"))

    response = manager.post(
        f"/api/v1/me/keys/{runner['key']['api_key_id']}/rotate", {"grace": "0"}, format="json"
    )

    assert response.status_code == 403
    assert "pipelines:execute" in response.json()["error"]["message"]
    assert as_tenant(runner["api_key"]).get("/api/v1/me").status_code == 403  # still valid, lacks tenant:read


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("keys", b"[" * 100_000),
        ("keys", b'{"name": "k", "scopes": ["\\ud800"]}'),
        ("credentials", b'{"provider": "\\ud800", "name": "x", "payload": {}}'),
        ("credentials", b'{"provider": "OPENAI", "name": "x", "payload": "\\ud800"}'),
        (
            "credentials",
            b'{"provider": "OPENAI", "name": "x", "payload": {"api_key": "sk-\\ud800' + b"a" * 24 + b'"}}',
        ),
    ],
)
def test_it_answers_400_not_500_for_hostile_json(tenant_a: Tenant, path: str, body: bytes) -> None:
    response = as_tenant(tenant_a.key).generic(
        "POST", f"/api/v1/me/{path}", body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"parse_error", "validation_failed"}


def test_it_never_resumes_an_offboarded_tenant(api_as: ApiAs, superuser: User, central: str) -> None:
    tenant = onboard("kappa")
    client = api_as(superuser)
    client.post(
        f"/api/v1/tenants/{tenant.tenant_id}/offboard", {"confirm_tenant_id": tenant.tenant_id}, format="json"
    )
    central_repository(TenantApiKey).delete_where(filters={"tenant_id": tenant.tenant_id})

    body = {
        "tenant_id": tenant.tenant_id,
        "company_name": "kappa Inc",
        "admin_email": "ops@example.com",
        "plan": "STARTER",
    }
    response = client.post("/api/v1/tenants/onboard", body, format="json")

    assert response.status_code == 409
    assert "offboarded" in response.json()["error"]["message"]


def test_it_takes_over_an_idempotency_key_left_in_progress_by_a_dead_worker(
    api_as: ApiAs, staff: User, tenant_a: Tenant
) -> None:
    IdempotencyRecord.objects.create(
        principal=f"user:{staff.pk}",
        key="dead-worker",
        request_fingerprint="0" * 64,
        created_at=timezone.now() - STALE_AFTER - timedelta(seconds=1),
    )

    response = api_as(staff).post(
        f"/api/v1/tenants/{tenant_a.tenant_id}/keys",
        {"name": "x"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="dead-worker",
    )

    assert response.status_code == 201


@pytest.mark.parametrize("resource", ["keys", "credentials", "usage", "subscription"])
def test_it_answers_404_to_staff_for_an_unknown_tenant(
    api_as: ApiAs, staff: User, central: str, resource: str
) -> None:
    response = api_as(staff).get(f"/api/v1/tenants/no_such_tenant/{resource}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_it_shows_tenants_that_staff_acted_but_not_which_staff_member(
    api_as: ApiAs, staff: User, tenant_a: Tenant
) -> None:
    issued = (
        api_as(staff)
        .post(f"/api/v1/tenants/{tenant_a.tenant_id}/keys", {"name": "by-ops"}, format="json")
        .json()
    )

    seen_by_staff = api_as(staff).get(f"/api/v1/tenants/{tenant_a.tenant_id}/keys").json()["results"]
    seen_by_tenant = as_tenant(tenant_a.key).get("/api/v1/me/keys").json()["results"]

    key_id = issued["key"]["api_key_id"]
    assert next(k for k in seen_by_staff if k["api_key_id"] == key_id)["created_by"] == "user:operator"
    assert next(k for k in seen_by_tenant if k["api_key_id"] == key_id)["created_by"] == "staff"
    assert "operator" not in json.dumps(seen_by_tenant)


def test_it_answers_503_when_a_key_cannot_be_checked_because_bigquery_is_down(
    tenant_a: Tenant, settings: object
) -> None:
    settings.BIGQUERY_EMULATOR_HOST = f"http://127.0.0.1:{free_port()}"  # type: ignore[attr-defined]
    settings.BIGQUERY_RETRY_DEADLINE_SECONDS = 0.5  # type: ignore[attr-defined]

    response = as_tenant(tenant_a.key).get("/api/v1/me")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response["Retry-After"] == "5"


def test_it_lists_the_audit_of_a_key_named_like_an_impossible_time(tenant_a: Tenant) -> None:
    # The audit entry holds the name as typed; reading the feed must not try to parse it as a time.
    manager = as_tenant(scoped_key(tenant_a, "tenant:read", "keys:manage"))
    created = manager.post(
        "/api/v1/me/keys", {"name": "2026-02-30T10:00Z", "scopes": ["tenant:read"]}, format="json"
    )

    audit = manager.get("/api/v1/me/audit", {"action": "api_key.create"})

    assert created.status_code == 201
    assert audit.status_code == 200
    assert "2026-02-30T10:00Z" in {
        (entry["after_values"] or {}).get("name") for entry in audit.json()["results"]
    }
