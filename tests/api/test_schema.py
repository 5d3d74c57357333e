"""The OpenAPI schema documents what the API answers: the error envelope and each view's own statuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from tenants_app.api.schema import API_TAGS, area_tag

ApiAs = Callable[[User | None], APIClient]
ERROR_REF = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any], *, probes: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """The API's operations; with `probes`, the public health probes outside /api/v1/ too."""
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "patch", "put", "delete") and (probes or path.startswith("/api/v1/"))
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


def test_it_gives_every_operation_a_short_summary(schema: dict[str, Any]) -> None:
    missing = [
        f"{method} {path}"
        for method, path, operation in operations(schema, probes=True)
        if not operation.get("summary")
    ]
    too_long = [
        operation["summary"]
        for _, _, operation in operations(schema, probes=True)
        if len(operation.get("summary", "")) > 60
    ]

    assert missing == []
    assert too_long == []


def test_it_tags_every_operation_with_its_area_from_the_path(schema: dict[str, Any]) -> None:
    tags = {
        f"{method} {path}": operation.get("tags")
        for method, path, operation in operations(schema, probes=True)
    }

    assert {str(tag) for tag in tags.values()} <= {str([tag]) for tag in API_TAGS}
    assert set(API_TAGS) == {tag for [tag] in tags.values()}
    # The same area whether staff reach it by tenant id or the tenant through /me.
    assert tags["GET /api/v1/tenants/{tenant_id}/keys"] == tags["GET /api/v1/me/keys"] == ["keys"]
    assert tags["POST /api/v1/tenants/{tenant_id}/suspend"] == tags["GET /api/v1/me"] == ["tenants"]
    assert tags["GET /api/v1/pipeline-templates"] == ["pipelines"]
    assert tags["GET /api/v1/queue"] == tags["GET /api/v1/me/runs/{run_id}"] == ["runs"]
    assert tags["POST /api/v1/worker/runs/{run_id}/credentials"] == ["worker"]
    assert tags["GET /healthz"] == tags["GET /readyz"] == ["health"]


def test_it_documents_the_public_probes_as_they_answer(schema: dict[str, Any], client: Client) -> None:
    for path in ("/healthz", "/readyz"):
        operation = schema["paths"][path]["get"]
        body = client.get(path).json()

        assert operation["security"] == []
        assert set(operation["responses"]["200"]["content"]["application/json"]["schema"]["required"]) <= set(
            body
        )


@pytest.mark.parametrize(
    ("path", "tag"),
    [
        ("/api/v1/tenants/{tenant_id}/usage", "subscriptions"),
        ("/api/v1/tenants/onboard", "tenants"),
        ("/api/v1/me/webhooks/{endpoint_id}/deliveries", "webhooks"),
        # A new area no rule names is its own tag, which the test above refuses: no catch-all.
        ("/api/v1/tenants/{tenant_id}/invoices", "invoices"),
        ("/api/v1/reports", "reports"),
    ],
)
def test_it_derives_the_tag_from_the_first_area_of_the_path(path: str, tag: str) -> None:
    assert area_tag(path) == tag


def test_it_documents_limit_and_offset_and_the_envelope_of_every_listing(schema: dict[str, Any]) -> None:
    envelope = {"count", "limit", "offset", "results"}
    listings = []
    for method, path, operation in operations(schema):
        if method != "GET":
            continue
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        # Nothing answers a bare list: a listing is always the envelope.
        assert answer.get("type") != "array", path
        body = schema["components"]["schemas"][answer["$ref"].rsplit("/", 1)[-1]]
        if body["properties"].get("results", {}).get("type") == "array":
            listings.append(path)
            assert set(body["required"]) == envelope, path
            assert {"limit", "offset"} <= {p["name"] for p in operation.get("parameters", [])}, path

    # tenants, queue, templates; keys, credentials, webhooks, deliveries, usage, pipelines, runs and
    # audit, each for staff and through /me.
    assert len(listings) == 19
