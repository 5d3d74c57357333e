"""Offboarding over the API: the tenant's keys end at once and its subscription is cancelled for good."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from bigquery_backend.emulator import EmulatorProcess
from tenants_app.models import AuditLogEntry, TenantProfile, TenantStatus
from tenants_app.repositories import central_repository
from tenants_app.services.tenants import tenant_offboard
from tests.support.bigquery_proxy import Exchange, LoopbackProxy
from tests.support.people import onboard_tenant

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]


def onboarded(prefix: str) -> tuple[str, APIClient]:
    """A freshly onboarded tenant and a client holding its initial key."""
    tenant_id, key = onboard_tenant(prefix)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return tenant_id, client


def offboard(client: APIClient, tenant_id: str) -> None:
    response = client.post(
        f"/api/v1/tenants/{tenant_id}/offboard", {"confirm_tenant_id": tenant_id}, format="json"
    )
    assert response.status_code == 200


class RevocationGate(LoopbackProxy):
    """Passes every request to the emulator, but holds the offboarding's key revocation until opened."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.reached = threading.Event()
        self.opened = threading.Event()

    def handle(self, exchange: Exchange) -> None:
        statement = exchange.statement
        if (
            statement.startswith("UPDATE")
            and "tenant_api_keys" in statement
            and "revoked_reason" in statement
        ):
            self.reached.set()
            self.opened.wait(60)
        exchange.relay()


def test_it_refuses_the_tenants_key_right_after_the_offboarding_even_if_used_during_it(
    central: str, bigquery_emulator: EmulatorProcess
) -> None:
    tenant_id, tenant = onboarded("leaving")
    assert tenant.get("/api/v1/me").status_code == 200
    gate = RevocationGate(bigquery_emulator.url).start()
    offboarding = ThreadPoolExecutor(max_workers=1)
    try:
        with override_settings(BIGQUERY_EMULATOR_HOST=gate.url):
            # The service, not the API, in the thread: the test database is not shared across threads.
            done = offboarding.submit(tenant_offboard, tenant_id=tenant_id, actor="user:root")
            assert gate.reached.wait(60)
            # Between the status change and the revocation: the tenant is CANCELLED, its key not yet.
            during = tenant.get("/api/v1/me")
            gate.opened.set()
            done.result(timeout=60)
            after = tenant.get("/api/v1/me")
    finally:
        gate.opened.set()
        offboarding.shutdown()
        gate.stop()

    assert (during.status_code, during.json()["error"]["code"]) == (403, "tenant_suspended")
    assert (after.status_code, after.json()["error"]["code"]) == (401, "api_key_revoked")


def test_it_cancels_the_subscription_so_nothing_runs_or_is_configured(
    api_as: ApiAs, superuser: User, central: str
) -> None:
    tenant_id, _ = onboarded("closing")
    staff = api_as(superuser)

    offboard(staff, tenant_id)
    subscription = staff.get(f"/api/v1/tenants/{tenant_id}/subscription").json()

    assert (subscription["status"], subscription["effective_status"]) == ("CANCELLED", "CANCELLED")
    assert subscription["subscription_end_date"] is not None
    assert subscription["allowed_operations"] == ["read"]
    entries = central_repository(AuditLogEntry).list(
        filters={"tenant_id": tenant_id, "action": "subscription.status_change"}
    )
    assert [(e.actor, e.after_values["status"]) for e in entries] == [("user:root", "CANCELLED")]


def test_it_cancels_the_subscription_when_an_interrupted_offboarding_is_sent_again(
    api_as: ApiAs, superuser: User, central: str
) -> None:
    tenant_id, _ = onboarded("halfway")
    # As left by an offboarding that failed after the tenant's status changed.
    central_repository(TenantProfile).update(tenant_id, {"status": TenantStatus.CANCELLED})
    staff = api_as(superuser)

    offboard(staff, tenant_id)

    assert staff.get(f"/api/v1/tenants/{tenant_id}/subscription").json()["status"] == "CANCELLED"


@pytest.mark.parametrize(
    "change",
    [
        {"plan": "SCALE"},
        {"status": "ACTIVE"},
        {"daily_limit": 50},
        {"reset_limits": ["daily_limit"]},
        {"plan": "STARTER"},
    ],
    ids=["plan", "reactivation", "limits", "reset", "same-plan"],
)
def test_it_refuses_every_later_subscription_change_with_409(
    api_as: ApiAs, superuser: User, central: str, change: dict
) -> None:
    tenant_id, _ = onboarded("gone")
    staff = api_as(superuser)
    offboard(staff, tenant_id)

    response = staff.patch(f"/api/v1/tenants/{tenant_id}/subscription", change, format="json")
    preview = staff.post(
        f"/api/v1/tenants/{tenant_id}/subscription/preview", {"plan": "SCALE"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "subscription_cancelled"
    assert (
        "offboard" in response.json()["error"]["message"]
        or "CANCELLED" in response.json()["error"]["message"]
    )
    assert preview.status_code == 409
    assert staff.get(f"/api/v1/tenants/{tenant_id}/subscription").json()["plan_name"] == "STARTER"
