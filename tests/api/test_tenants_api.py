"""Admin API over tenants, against the emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from google.cloud import bigquery
from rest_framework.test import APIClient

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import NotFound
from tenants_app.models import TenantApiKey, TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.admin_tokens import admin_token_create

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]


def test_it_refuses_anonymous_and_non_staff_callers(api_as: ApiAs, tenants_dataset: str) -> None:
    customer = User.objects.create_user("customer", password="x")

    assert api_as(None).get("/api/v1/tenants").status_code in {401, 403}
    assert api_as(customer).get("/api/v1/tenants").status_code == 403


def test_it_lists_tenants_newest_first_with_a_total(
    api_as: ApiAs, staff: User, add_profiles: Callable[[int], list[TenantProfile]]
) -> None:
    profiles = add_profiles(7)

    body = api_as(staff).get("/api/v1/tenants", {"limit": 3}).json()

    assert body["count"] == 7
    newest = sorted(profiles, key=lambda p: p.created_at, reverse=True)
    assert [t["tenant_id"] for t in body["results"]] == [p.tenant_id for p in newest[:3]]


def test_it_pages_through_every_tenant_exactly_once(
    api_as: ApiAs, staff: User, add_profiles: Callable[[int], list[TenantProfile]]
) -> None:
    profiles = add_profiles(7)
    client = api_as(staff)

    seen = []
    for offset in range(0, 9, 3):
        seen += [
            t["tenant_id"]
            for t in client.get("/api/v1/tenants", {"limit": 3, "offset": offset}).json()["results"]
        ]

    assert sorted(seen) == sorted(p.tenant_id for p in profiles)


def test_it_filters_by_status_plan_and_search(
    api_as: ApiAs, staff: User, add_profiles: Callable[[int], list[TenantProfile]]
) -> None:
    profiles = add_profiles(7)
    client = api_as(staff)

    trial = client.get("/api/v1/tenants", {"status": "TRIAL"}).json()
    scale = client.get("/api/v1/tenants", {"plan": "SCALE"}).json()
    found = client.get("/api/v1/tenants", {"search": "COMPANY 004"}).json()

    assert trial["count"] == sum(1 for p in profiles if p.status == "TRIAL")
    assert {t["tenant_id"] for t in scale["results"]} == {
        p.tenant_id for p in profiles if p.subscription_plan == "SCALE"
    }
    assert [t["tenant_id"] for t in found["results"]] == ["tenant_004"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1000}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "nope"}, "status"),
    ],
)
def test_it_answers_400_naming_the_bad_filter(
    api_as: ApiAs, staff: User, tenants_dataset: str, params: dict[str, Any], field: str
) -> None:
    response = api_as(staff).get("/api/v1/tenants", params)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_it_lists_with_two_bigquery_jobs_whatever_the_page(
    api_as: ApiAs, staff: User, add_profiles: Callable[[int], list[TenantProfile]], gateway: BigQueryGateway
) -> None:
    add_profiles(5)
    client = api_as(staff)

    with gateway.count_jobs() as counter:
        client.get("/api/v1/tenants", {"limit": 2, "search": "company", "status": "ACTIVE"})

    assert counter.jobs == 2


def test_it_shows_one_tenant_and_404s_an_unknown_one(
    api_as: ApiAs, staff: User, add_profile: Callable[..., TenantProfile]
) -> None:
    add_profile("acme_co")
    client = api_as(staff)

    assert client.get("/api/v1/tenants/acme_co").json()["company_name"] == "acme_co Ltd"
    missing = client.get("/api/v1/tenants/nobody_here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/tenants/x';DROP TABLE tenant_profiles;--").status_code == 404


def test_it_edits_a_tenant_and_refuses_bad_fields(
    api_as: ApiAs, staff: User, add_profile: Callable[..., TenantProfile]
) -> None:
    add_profile("acme_co")
    client = api_as(staff)

    bad = client.patch(
        "/api/v1/tenants/acme_co", {"admin_email": "not-an-email", "company_name": "A"}, format="json"
    )
    good = client.patch("/api/v1/tenants/acme_co", {"company_name": "Acme Corporation"}, format="json")

    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {"admin_email", "company_name"}
    assert good.status_code == 200
    assert central_repository(TenantProfile).get("acme_co").company_name == "Acme Corporation"


@pytest.mark.parametrize(
    ("changes", "reasons"),
    [
        ({"company_name": "A"}, {"company_name": ["Use 2-200 characters."]}),
        ({"company_name": "n" * 201}, {"company_name": ["Use 2-200 characters."]}),
        ({"company_name": "  "}, {"company_name": ["Use 2-200 characters."]}),
        ({"admin_email": ""}, {"admin_email": ["Enter a valid email address."]}),
    ],
)
def test_it_words_a_profile_fields_refusal_as_the_portal_and_onboarding_do(
    api_as: ApiAs,
    staff: User,
    add_profile: Callable[..., TenantProfile],
    changes: dict[str, str],
    reasons: dict[str, list[str]],
) -> None:
    # services/profile_fields.py is the one rule: the serializer adds no length or syntax of its own.
    add_profile("acme_co")

    response = api_as(staff).patch("/api/v1/tenants/acme_co", changes, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == reasons
    assert central_repository(TenantProfile).get("acme_co").company_name == "acme_co Ltd"


def test_it_lets_read_only_staff_read_but_not_change(
    api_as: ApiAs, read_only_staff: User, add_profile: Callable[..., TenantProfile]
) -> None:
    add_profile("acme_co")
    client = api_as(read_only_staff)

    assert client.get("/api/v1/tenants/acme_co").status_code == 200
    assert client.post("/api/v1/tenants/acme_co/suspend").status_code == 403
    assert central_repository(TenantProfile).get("acme_co").status == "ACTIVE"


def test_it_suspends_and_reactivates_idempotently_and_refuses_the_wrong_transition(
    api_as: ApiAs, superuser: User, add_profile: Callable[..., TenantProfile]
) -> None:
    add_profile("acme_co")
    add_profile("gone_co", status="CANCELLED")
    client = api_as(superuser)

    assert client.post("/api/v1/tenants/acme_co/suspend").json()["status"] == "SUSPENDED"
    # A repeat (a client retrying after a timeout) is answered, not refused.
    assert client.post("/api/v1/tenants/acme_co/suspend").json()["status"] == "SUSPENDED"
    assert client.post("/api/v1/tenants/acme_co/reactivate").json()["status"] == "ACTIVE"
    refused = client.post("/api/v1/tenants/gone_co/suspend")
    assert refused.status_code == 400
    assert "status" in refused.json()["error"]["fields"]
    assert central_repository(TenantProfile).get("acme_co").status == "ACTIVE"


def test_it_offboards_only_with_confirmation_and_revokes_keys_but_keeps_the_dataset(
    api_as: ApiAs, superuser: User, add_profile: Callable[..., TenantProfile], gateway: BigQueryGateway
) -> None:
    add_profile("acme_co")
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref("acme_co")))
    central_repository(TenantApiKey).insert(
        TenantApiKey(api_key_id="k1", tenant_id="acme_co", api_key_hash="0" * 64, scopes=["tenant:read"])
    )
    client = api_as(superuser)

    refused = client.post("/api/v1/tenants/acme_co/offboard", {"confirm_tenant_id": "other"}, format="json")
    done = client.post("/api/v1/tenants/acme_co/offboard", {"confirm_tenant_id": "acme_co"}, format="json")

    assert refused.status_code == 400
    assert done.json()["status"] == "CANCELLED"
    key = central_repository(TenantApiKey).get("k1")
    assert (key.is_active, key.revoked_reason) == (False, "tenant offboarded")
    assert gateway.get_dataset("acme_co").dataset_id == "acme_co"


def test_it_purges_the_dataset_when_asked(
    api_as: ApiAs, superuser: User, add_profile: Callable[..., TenantProfile], gateway: BigQueryGateway
) -> None:
    add_profile("gone_co")
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref("gone_co")))

    response = api_as(superuser).post(
        "/api/v1/tenants/gone_co/offboard",
        {"confirm_tenant_id": "gone_co", "purge_dataset": True},
        format="json",
    )

    assert response.status_code == 200
    with pytest.raises(NotFound):
        gateway.get_dataset("gone_co")


def test_it_accepts_an_admin_token_instead_of_a_session(
    staff: User, add_profile: Callable[..., TenantProfile]
) -> None:
    add_profile("acme_co")
    issued = admin_token_create(user=staff, name="terraform")
    client = APIClient()

    ok = client.get("/api/v1/tenants/acme_co", HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    bad = client.get("/api/v1/tenants/acme_co", HTTP_AUTHORIZATION="Bearer cvg_admin_wrong")

    assert ok.status_code == 200
    assert bad.status_code == 401


def test_it_finishes_an_offboarding_when_it_is_sent_again(
    api_as: ApiAs, superuser: User, add_profile: Callable[..., TenantProfile], gateway: BigQueryGateway
) -> None:
    # As left by an offboarding whose key revocation failed after the status changed.
    add_profile("half_co", status="CANCELLED")
    central_repository(TenantApiKey).insert(
        TenantApiKey(api_key_id="k_half", tenant_id="half_co", api_key_hash="1" * 64, scopes=["tenant:read"])
    )
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref("half_co")))

    response = api_as(superuser).post(
        "/api/v1/tenants/half_co/offboard",
        {"confirm_tenant_id": "half_co", "purge_dataset": True},
        format="json",
    )

    assert response.status_code == 200
    assert central_repository(TenantApiKey).get("k_half").is_active is False
    with pytest.raises(NotFound):
        gateway.get_dataset("half_co")
