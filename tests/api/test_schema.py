"""The OpenAPI schema documents what the API answers: the error envelope and each view's own statuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

ApiAs = Callable[[User | None], APIClient]
ERROR_REF = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "patch", "put", "delete")
    ]


def test_it_documents_the_error_envelope_on_every_operation(schema: dict[str, Any]) -> None:
    missing = []
    for method, path, operation in operations(schema):
        expected = {"400", "401", "403", "429", "503"}
        if "{" in path:
            expected.add("404")
        if method != "GET":
            expected.add("409")
        if "requestBody" in operation:
            expected |= {"413", "415"}
        for code in expected:
            response = operation["responses"].get(code, {})
            if response.get("content", {}).get("application/json", {}).get("schema") != ERROR_REF:
                missing.append(f"{method} {path} {code}")

    assert len(operations(schema)) > 60
    assert missing == []


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["", "text/plain"])
def test_it_answers_415_in_the_error_envelope_for_a_body_of_no_or_another_media_type(
    schema: dict[str, Any], api_as: ApiAs, superuser: User, content_type: str
) -> None:
    # Found by fuzzing: a body whose Content-Type went missing is refused as an unsupported media type.
    response = api_as(superuser).generic(
        "POST", "/api/v1/tenants/dryrun", b"tenant_id=acme", content_type=content_type
    )

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    documented = schema["paths"]["/api/v1/tenants/dryrun"]["post"]["responses"]["415"]
    assert documented["content"]["application/json"]["schema"] == ERROR_REF


@pytest.mark.django_db
def test_it_documents_the_413_of_a_body_over_the_limit(
    schema: dict[str, Any], api_as: ApiAs, superuser: User, settings: Any
) -> None:
    settings.API_MAX_BODY_BYTES = 100

    response = api_as(superuser).post("/api/v1/tenants/dryrun", {"company_name": "x" * 200}, format="json")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    documented = schema["paths"]["/api/v1/tenants/dryrun"]["post"]["responses"]["413"]
    assert documented["content"]["application/json"]["schema"] == ERROR_REF


def test_it_describes_the_error_body_with_its_429_details(schema: dict[str, Any]) -> None:
    detail = schema["components"]["schemas"]["ErrorDetail"]

    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    assert set(detail["required"]) == {"code", "message"}
    assert {"fields", "retry_after", "limit", "window", "figures"} <= set(detail["properties"])
    throttled = schema["paths"]["/api/v1/me"]["get"]["responses"]["429"]
    assert "Retry-After" in throttled["headers"]


def test_it_keeps_a_views_own_error_description(schema: dict[str, Any]) -> None:
    claim = schema["paths"]["/api/v1/worker/claim"]["post"]["responses"]["429"]

    assert claim["description"] == "A tenant key's runs are all held back by its quota."
    assert claim["content"]["application/json"]["schema"] == ERROR_REF


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "reserved"), [("get", "dryrun"), ("patch", "onboard")])
def test_it_answers_405_in_the_error_envelope_for_a_reserved_tenant_path(
    schema: dict[str, Any], api_as: ApiAs, superuser: User, method: str, reserved: str
) -> None:
    response = getattr(api_as(superuser), method)(f"/api/v1/tenants/{reserved}", {}, format="json")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    documented = schema["paths"]["/api/v1/tenants/{tenant_id}"][method]["responses"]
    assert documented["405"]["content"]["application/json"]["schema"] == ERROR_REF


@pytest.mark.parametrize("component", ["PipelineConfigListInput", "PatchedPipelineConfigDetailInput"])
def test_it_documents_the_bounds_of_a_pipeline_priority(schema: dict[str, Any], component: str) -> None:
    priority = schema["components"]["schemas"][component]["properties"]["priority"]

    assert (priority["minimum"], priority["maximum"]) == (1, 10)


def test_it_documents_who_may_call_each_path(schema: dict[str, Any]) -> None:
    callers = {(path.split("/")[3], str(operation["security"])) for _, path, operation in operations(schema)}

    assert callers == {
        ("me", "[{'TenantApiKey': []}]"),
        ("tenants", "[{'AdminToken': []}, {'cookieAuth': []}]"),
        ("queue", "[{'AdminToken': []}, {'cookieAuth': []}]"),
        ("pipeline-templates", "[{'TenantApiKey': []}, {'AdminToken': []}, {'cookieAuth': []}]"),
        ("worker", "[{'TenantApiKey': []}, {'WorkerToken': []}]"),
    }
