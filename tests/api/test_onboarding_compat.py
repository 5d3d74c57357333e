"""The original system's onboarding call: `subscription_plan` as an alias, and `/tenants/dryrun`'s report."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import NotFound
from tenants_app.models import (
    AuditLogEntry,
    TenantApiKey,
    TenantProfile,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tests.conftest import unique_name
from tests.support.kms_fake import FakeCloudKms
from tests.support.people import onboard_tenant
from tests.support.tenant_rows import rows_left_alone

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]
CHECKS = ["tenant_id_free", "plan_valid", "dataset_creatable", "kms_reachable"]
CENTRAL_MODELS = (TenantProfile, TenantSubscription, TenantUsageQuota, TenantApiKey, AuditLogEntry)
# A write keyword as a whole word: `created_at` in a column list is no write.
WRITE_WORD = re.compile(r"\b(INSERT|UPDATE|MERGE|DELETE|CREATE|ALTER|DROP)\b", re.IGNORECASE)


def body(tenant_id: str, **plan: str) -> dict[str, str]:
    """The original system's request: the plan named by `plan`, `subscription_plan`, both or neither."""
    return {"tenant_id": tenant_id, "company_name": "Compat Ltd", "admin_email": "ops@compat.example", **plan}


@pytest.fixture
def client(api_as: ApiAs, superuser: User, central: str) -> APIClient:
    return api_as(superuser)


def failed(report: dict[str, Any]) -> list[str]:
    """The checks that did not pass, in their order."""
    return [check["name"] for check in report["checks"] if not check["ok"]]


# --- subscription_plan ------------------------------------------------------------------------------
def test_it_onboards_on_the_plan_named_by_subscription_plan(client: APIClient) -> None:
    response = client.post(
        "/api/v1/tenants/onboard", body(unique_name("compat"), subscription_plan="SCALE"), format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["subscription"]["plan_name"] == "SCALE"


def test_it_onboards_on_starter_when_neither_plan_field_is_given(client: APIClient) -> None:
    response = client.post("/api/v1/tenants/onboard", body(unique_name("compat")), format="json")

    assert response.status_code == 201, response.content
    assert response.json()["subscription"]["plan_name"] == "STARTER"


def test_it_accepts_plan_and_subscription_plan_when_they_agree(client: APIClient) -> None:
    request = body(unique_name("compat"), plan="PROFESSIONAL", subscription_plan="PROFESSIONAL")

    response = client.post("/api/v1/tenants/dryrun", request, format="json")

    assert response.status_code == 200
    assert (response.json()["plan"], response.json()["ok"]) == ("PROFESSIONAL", True)


@pytest.mark.parametrize("path", ["/api/v1/tenants/onboard", "/api/v1/tenants/dryrun"])
def test_it_refuses_plan_and_subscription_plan_that_differ_naming_both(client: APIClient, path: str) -> None:
    tenant_id = unique_name("compat")

    response = client.post(path, body(tenant_id, plan="STARTER", subscription_plan="SCALE"), format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"plan", "subscription_plan"}
    assert client.get(f"/api/v1/tenants/{tenant_id}").status_code == 404


def test_it_refuses_an_unknown_plan_naming_the_field_the_caller_used(client: APIClient) -> None:
    request = body(unique_name("compat"), subscription_plan="GOLD")

    response = client.post("/api/v1/tenants/onboard", request, format="json")

    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert list(fields) == ["subscription_plan"]
    assert "STARTER" in fields["subscription_plan"][0]


def test_it_documents_the_alias_and_a_summary_for_each_onboarding_operation(client: APIClient) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    properties = schema["components"]["schemas"]["OnboardInput"]["properties"]
    assert "plan" in properties["subscription_plan"]["description"]
    assert "STARTER" in properties["plan"]["description"]
    assert schema["paths"]["/api/v1/tenants/onboard"]["post"]["summary"] == "Onboard a tenant"
    assert (
        schema["paths"]["/api/v1/tenants/dryrun"]["post"]["summary"] == "Check an onboarding without writing"
    )


# --- /tenants/dryrun --------------------------------------------------------------------------------
def test_it_reports_each_check_passing_for_a_free_id(client: APIClient) -> None:
    tenant_id = unique_name("compat")

    response = client.post("/api/v1/tenants/dryrun", body(tenant_id), format="json")

    assert response.status_code == 200
    report = response.json()
    assert (report["tenant_id"], report["plan"], report["ok"], report["valid"]) == (
        tenant_id,
        "STARTER",
        True,
        True,
    )
    assert [check["name"] for check in report["checks"]] == CHECKS
    assert all(check["ok"] and check["detail"] for check in report["checks"])


def test_it_reports_a_taken_id(client: APIClient) -> None:
    tenant_id, _ = onboard_tenant("compat")

    response = client.post("/api/v1/tenants/dryrun", body(tenant_id, plan="STARTER"), format="json")

    assert response.status_code == 200
    assert response.json()["ok"] is False
    assert failed(response.json()) == ["tenant_id_free"]
    assert "already exists" in response.json()["checks"][0]["detail"]


def test_it_reports_an_unknown_plan_naming_the_field_the_caller_used(client: APIClient) -> None:
    request = body(unique_name("compat"), subscription_plan="GOLD")

    response = client.post("/api/v1/tenants/dryrun", request, format="json")

    assert response.status_code == 200
    assert failed(response.json()) == ["plan_valid"]
    assert "subscription_plan" in response.json()["checks"][1]["detail"]


def test_it_reports_kms_unreachable(client: APIClient, cloud_kms: FakeCloudKms) -> None:
    cloud_kms.stop()

    response = client.post("/api/v1/tenants/dryrun", body(unique_name("compat")), format="json")

    assert response.status_code == 200
    assert failed(response.json()) == ["kms_reachable"]
    assert cloud_kms.key_name() not in response.content.decode()


def test_it_writes_nothing_in_a_dry_run(client: APIClient, gateway: BigQueryGateway) -> None:
    tenant_id = unique_name("compat")

    with gateway.count_jobs() as counter, rows_left_alone(tenant_id, *CENTRAL_MODELS):
        response = client.post(
            "/api/v1/tenants/dryrun", body(tenant_id, subscription_plan="SCALE"), format="json"
        )

    assert response.json()["ok"] is True
    assert counter.jobs >= 1, "the id was looked up"
    assert not [statement for statement in counter.statements if WRITE_WORD.search(statement)]
    with pytest.raises(NotFound):
        gateway.get_dataset(tenant_id)


@pytest.mark.parametrize("path", ["/api/v1/tenants/dryrun", "/api/v1/tenants/onboard"])
def test_it_words_a_profile_fields_refusal_as_the_tenant_edit_does(client: APIClient, path: str) -> None:
    # services/profile_fields.py is the one rule: the serializer adds no length or blank check of its own.
    tenant_id = unique_name("compat")
    request = {**body(tenant_id), "company_name": "n" * 201, "admin_email": ""}

    response = client.post(path, request, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "company_name": ["Use 2-200 characters."],
        "admin_email": ["Enter a valid email address."],
    }
    assert central_repository(TenantProfile).count(filters={"tenant_id": tenant_id}) == 0


def test_it_refuses_malformed_dry_run_input_naming_the_field(client: APIClient) -> None:
    request = {**body("Bad Id!", plan="GOLD"), "admin_email": "nope"}

    response = client.post("/api/v1/tenants/dryrun", request, format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"tenant_id", "admin_email"}
