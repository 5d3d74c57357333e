"""Portal webhook pages: the tenant page's list, create (secret shown once), an endpoint's page with its
delivery log, send test event, delete behind a confirmation, and read-only staff refused everything."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.test import Client

from tenants_app.models import AuditLogEntry, TenantWebhookEndpoint
from tenants_app.repositories import central_repository
from tenants_app.services.notifications import notifications_deliver
from tenants_app.services.webhooks import (
    webhook_delivery_page,
    webhook_endpoint_create,
    webhook_endpoint_list,
)
from tests.portal.conftest import AddTenant
from tests.support.webhook_receiver import webhook_receiver

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("portal_dataset")]

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOOK_URL = "http://localhost:9/hook"


@pytest.fixture(autouse=True)
def _local_hooks(settings: pytest.FixtureRequest) -> None:
    settings.WEBHOOK_ALLOW_LOCALHOST = True  # type: ignore[attr-defined]


def base(tenant_id: str) -> str:
    return f"/admin/tenants/{tenant_id}/webhooks/"


def new_endpoint(tenant_id: str) -> TenantWebhookEndpoint:
    return webhook_endpoint_create(tenant_id=tenant_id, url=HOOK_URL, created_by="test").endpoint


def token_of(page: str) -> str:
    return re.search(r'name="token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def test_it_shows_the_signing_secret_once_and_never_again(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    form = superuser_client.get(base(tenant_id) + "new/").content.decode()
    body = {"url": HOOK_URL, "event_types": ["run.failed"], "description": "ops", "token": token_of(form)}

    created = superuser_client.post(base(tenant_id) + "new/", body)
    again = superuser_client.post(base(tenant_id) + "new/", body)  # a reload of the result page

    assert created.status_code == 200
    assert "no-store" in created["Cache-Control"]
    secret = re.search(r'id="issued-webhook-secret" value="([^"]+)"', created.content.decode()).group(1)  # type: ignore[union-attr]
    [endpoint] = webhook_endpoint_list(tenant_id=tenant_id)
    assert secret.startswith(endpoint.secret_prefix)
    assert len(secret) > len(endpoint.secret_prefix)
    assert (endpoint.url, endpoint.event_types, endpoint.created_by) == (
        HOOK_URL,
        ["run.failed"],
        "user:root",
    )
    assert again.status_code == 302
    pages = [
        again,
        superuser_client.get(f"/admin/tenants/{tenant_id}/"),
        superuser_client.get(base(tenant_id)),
        superuser_client.get(base(tenant_id) + f"{endpoint.endpoint_id}/"),
    ]
    assert all(page.status_code in (200, 302) for page in pages)
    assert not any(secret in page.content.decode() for page in pages)
    audit = central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id})
    assert [entry.action for entry in audit] == ["webhook.create"]
    assert secret not in repr([entry.__dict__ for entry in audit])


def test_it_lists_the_endpoints_on_the_tenant_page_with_links(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    endpoint = new_endpoint(tenant_id)

    html = superuser_client.get(f"/admin/tenants/{tenant_id}/").content.decode()

    section = html.split('id="tenant-webhooks"', 1)[1].split('<div class="module"', 1)[0]
    assert f'href="{base(tenant_id)}{endpoint.endpoint_id}/"' in section
    assert HOOK_URL in section
    assert "every event" in section
    assert "Active" in section
    assert f'href="{base(tenant_id)}new/"' in section


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://10.0.0.1/hook", "private, loopback or link-local"),
        ("ftp://hooks.example.com/", "Use an https:// URL."),
        ("", "This field is required."),
    ],
)
def test_it_answers_a_bad_url_with_a_400_on_the_url_field(
    superuser_client: Client, add_tenant: AddTenant, url: str, reason: str
) -> None:
    tenant_id = add_tenant().tenant_id
    form = superuser_client.get(base(tenant_id) + "new/").content.decode()

    page = superuser_client.post(base(tenant_id) + "new/", {"url": url, "token": token_of(form)})

    html = page.content.decode()
    assert page.status_code == 400
    assert reason in html
    assert "field-url" in html.split(reason)[0].rsplit("form-row", 1)[1]  # on the url field's own row
    assert webhook_endpoint_list(tenant_id=tenant_id) == []


def test_it_queues_a_test_event_that_the_delivery_log_then_shows(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    with webhook_receiver() as receiver:
        endpoint = webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="test").endpoint
        page = base(tenant_id) + f"{endpoint.endpoint_id}/"
        assert 'id="send-test-event"' in superuser_client.get(page).content.decode()

        sent = superuser_client.post(page + "test/")
        notifications_deliver(now=T0)

    assert sent.status_code == 302
    assert sent["Location"] == page
    assert len(receiver.received) == 1
    [delivery] = webhook_delivery_page(tenant_id=tenant_id, endpoint_id=endpoint.endpoint_id).items
    assert (delivery.event_type, delivery.status) == ("webhook.test", "DELIVERED")
    assert f'data-delivery="{delivery.delivery_id}"' in superuser_client.get(page).content.decode()
    assert superuser_client.get(page + "test/").status_code == 405  # only the page's POST button


def test_it_answers_a_bad_delivery_page_number_with_a_400(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    endpoint = new_endpoint(tenant_id)

    page = superuser_client.get(base(tenant_id) + f"{endpoint.endpoint_id}/?page=zero")

    assert page.status_code == 400
    assert "page: Enter a whole number." in page.content.decode()


def test_it_asks_for_confirmation_before_deleting(superuser_client: Client, add_tenant: AddTenant) -> None:
    tenant_id = add_tenant().tenant_id
    endpoint = new_endpoint(tenant_id)
    delete = base(tenant_id) + f"{endpoint.endpoint_id}/delete/"

    confirm = superuser_client.get(delete)
    bare = superuser_client.post(delete, {})
    kept = webhook_endpoint_list(tenant_id=tenant_id)
    done = superuser_client.post(delete, {"confirm": "yes"})

    assert confirm.status_code == 200
    assert 'name="confirm" value="yes"' in confirm.content.decode()
    assert bare.status_code == 400
    assert [row.endpoint_id for row in kept] == [endpoint.endpoint_id]
    assert done.status_code == 302
    assert done["Location"] == f"/admin/tenants/{tenant_id}/"
    assert webhook_endpoint_list(tenant_id=tenant_id) == []
    assert superuser_client.get(base(tenant_id) + f"{endpoint.endpoint_id}/").status_code == 404


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("action", ["new/", "{e}/test/", "{e}/delete/"])
def test_it_refuses_read_only_staff_every_operation(
    read_only_client: Client, add_tenant: AddTenant, method: str, action: str
) -> None:
    tenant_id = add_tenant().tenant_id
    endpoint = new_endpoint(tenant_id)
    path = base(tenant_id) + action.format(e=endpoint.endpoint_id)
    body = {"url": HOOK_URL, "confirm": "yes"}

    response = getattr(read_only_client, method)(path, body if method == "post" else None)

    assert response.status_code == 403
    assert [row.endpoint_id for row in webhook_endpoint_list(tenant_id=tenant_id)] == [endpoint.endpoint_id]
    assert webhook_delivery_page(tenant_id=tenant_id, endpoint_id=endpoint.endpoint_id).total == 0


def test_it_shows_read_only_staff_the_pages_without_operations(
    read_only_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    endpoint = new_endpoint(tenant_id)

    detail = read_only_client.get(base(tenant_id) + f"{endpoint.endpoint_id}/").content.decode()
    tenant = read_only_client.get(f"/admin/tenants/{tenant_id}/").content.decode()

    assert HOOK_URL in detail
    assert "send-test-event" not in detail
    assert "delete-webhook" not in detail
    assert HOOK_URL in tenant
    assert "new-webhook-link" not in tenant
