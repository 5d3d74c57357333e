"""Webhook endpoints over the API: the secret in the creation's answer only, 400s naming `url`, tests."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tenants_app.models import AuditLogEntry
from tenants_app.repositories import central_repository
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.notifications import notifications_deliver
from tenants_app.webhook_signature import SIGNATURE_HEADER, webhook_verify
from tests.support.webhook_receiver import webhook_receiver
from tests.tenants_app.services.schedules import add_tenant

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _central(central: str, settings: pytest.FixtureRequest) -> str:
    settings.WEBHOOK_ALLOW_LOCALHOST = True  # type: ignore[attr-defined]
    return central


def as_key(tenant_id: str, *scopes: str) -> APIClient:
    key = api_key_create(tenant_id=tenant_id, name="test", scopes=list(scopes), created_by="test").plaintext
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def test_it_shows_the_secret_once_and_a_test_event_reaches_the_receiver_signed(
    api_as: ApiAs, superuser: User, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant_id = add_tenant()
    client = api_as(superuser)
    base = f"/api/v1/tenants/{tenant_id}/webhooks"
    with webhook_receiver() as receiver:
        created = client.post(base, {"url": receiver.url, "event_types": ["run.failed"]}, format="json")
        assert created.status_code == 201, created.content
        assert created["Cache-Control"] == "no-store"
        secret = created.json()["secret"]
        endpoint = created.json()["endpoint"]
        endpoint_id = endpoint["endpoint_id"]
        assert secret.startswith(endpoint["secret_prefix"])

        tested = client.post(f"{base}/{endpoint_id}/test")
        assert tested.status_code == 202
        notifications_deliver(now=T0)

        [request] = receiver.received
        webhook_verify(
            secret=secret, body=request.body, header=request.headers[SIGNATURE_HEADER], now=T0.timestamp()
        )
        assert json.loads(request.body)["id"] == tested.json()["event_id"]
        listed = client.get(base)
        detail = client.get(f"{base}/{endpoint_id}")
        log = client.get(f"{base}/{endpoint_id}/deliveries")
        deleted = client.delete(f"{base}/{endpoint_id}")

    assert [row["endpoint_id"] for row in listed.json()["results"]] == [endpoint_id]
    assert log.json()["count"] == 1
    assert log.json()["results"][0]["status"] == "DELIVERED"
    assert deleted.status_code == 200
    assert client.get(f"{base}/{endpoint_id}").status_code == 404
    audit = central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id})
    for text in (listed.content, detail.content, log.content, deleted.content, caplog.text.encode()):
        assert secret.encode() not in text
    assert secret not in json.dumps([[entry.before_values, entry.after_values] for entry in audit])


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/",
        "",
        "https://u:p@93.184.216.34/",
    ],
)
def test_it_answers_400_naming_url_for_urls_that_are_not_public_https(
    api_as: ApiAs, superuser: User, url: str
) -> None:
    tenant_id = add_tenant()

    response = api_as(superuser).post(f"/api/v1/tenants/{tenant_id}/webhooks", {"url": url}, format="json")

    assert response.status_code == 400
    assert "url" in json.dumps(response.json())


def test_it_answers_400_naming_event_types_for_an_unknown_event(api_as: ApiAs, superuser: User) -> None:
    tenant_id = add_tenant()

    response = api_as(superuser).post(
        f"/api/v1/tenants/{tenant_id}/webhooks",
        {"url": "https://93.184.216.34/hook", "event_types": ["run.exploded"]},
        format="json",
    )

    assert response.status_code == 400
    assert "event_types" in json.dumps(response.json())


def test_it_serves_a_tenant_its_own_endpoints_through_me_and_needs_credentials_manage_to_change_them() -> (
    None
):
    tenant_id, other_id = add_tenant(), add_tenant()
    manager = as_key(tenant_id, "tenant:read", "credentials:manage")
    reader = as_key(tenant_id, "tenant:read")
    body = {"url": "https://93.184.216.34/hook"}

    created = manager.post("/api/v1/me/webhooks", body, format="json")
    other = as_key(other_id, "tenant:read", "credentials:manage").post(
        "/api/v1/me/webhooks", body, format="json"
    )
    endpoint_id = created.json()["endpoint"]["endpoint_id"]

    assert created.status_code == 201
    assert reader.post("/api/v1/me/webhooks", body, format="json").status_code == 403
    assert [row["endpoint_id"] for row in reader.get("/api/v1/me/webhooks").json()["results"]] == [
        endpoint_id
    ]
    other_endpoint = other.json()["endpoint"]["endpoint_id"]
    assert manager.get(f"/api/v1/me/webhooks/{other_endpoint}").status_code == 404
    assert manager.post(f"/api/v1/me/webhooks/{other_endpoint}/test").status_code == 404
