"""The subscription over the API: staff change plan, status and limits; tenants only read."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tenants_app.api.errors import api_exception_handler
from tenants_app.models import TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.audit import audit_list
from tenants_app.services.errors import QuotaExceeded
from tenants_app.services.subscription_selectors import subscription_get
from tests.tenants_app.services.quota_factories import tenant_with_subscription

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]


@pytest.fixture(scope="module", autouse=True)
def _central(central: str) -> str:
    return central


def url(tenant_id: str, suffix: str = "") -> str:
    return f"/api/v1/tenants/{tenant_id}/subscription{suffix}"


def tenant_client(tenant_id: str) -> APIClient:
    issued = api_key_create(tenant_id=tenant_id, name="ci", scopes=["tenant:read"], created_by="test")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=issued.plaintext)
    return client


def test_it_shows_staff_the_effective_limits_and_what_the_state_allows(api_as: ApiAs, staff: User) -> None:
    tenant_id = tenant_with_subscription(plan="STARTER", status="PAST_DUE", api_calls_per_minute=10)

    response = api_as(staff).get(url(tenant_id))

    assert response.status_code == 200
    body = response.json()
    assert body["plan_name"] == "STARTER"
    assert body["effective_status"] == "PAST_DUE"
    assert body["allowed_operations"] == ["read", "run"]
    assert body["limits"]["api_calls_per_minute"] == 10
    assert body["limits"]["api_calls_per_hour"] == 1000
    assert body["overridden"] == ["api_calls_per_minute"]


def test_it_allows_a_suspended_tenant_only_reads_whatever_its_subscription_says(
    api_as: ApiAs, staff: User
) -> None:
    tenant_id = tenant_with_subscription(plan="SCALE", status="ACTIVE", tenant_status="SUSPENDED")

    body = api_as(staff).get(url(tenant_id)).json()

    # The same verdict as the portal's banner: keys refused, nothing runs, nothing changes.
    assert (body["effective_status"], body["allowed_operations"]) == ("ACTIVE", ["read"])


def test_it_lets_a_tenant_read_but_never_change_its_subscription() -> None:
    tenant_id = tenant_with_subscription()
    client = tenant_client(tenant_id)

    assert client.get("/api/v1/me/subscription").json()["limits"]["daily_limit"] == 6
    refused = client.patch("/api/v1/me/subscription", {"plan": "SCALE"}, format="json")
    assert refused.status_code == 403
    assert client.post("/api/v1/me/subscription/preview", {"plan": "SCALE"}, format="json").status_code == 403
    assert subscription_get(tenant_id=tenant_id).plan_name == "STARTER"


def test_it_changes_the_plan_for_staff_and_records_who_did(api_as: ApiAs, staff: User) -> None:
    tenant_id = tenant_with_subscription(plan="STARTER")

    response = api_as(staff).patch(url(tenant_id), {"plan": "SCALE"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["plan_name"], body["daily_limit"], body["limits"]["concurrent_limit"]) == ("SCALE", 100, 10)
    [entry] = audit_list(tenant_id=tenant_id, action="subscription.plan_change").items
    assert (entry.actor, entry.source) == ("user:operator", "api")


def test_it_applies_plan_status_and_limits_in_one_request(api_as: ApiAs, superuser: User) -> None:
    tenant_id = tenant_with_subscription(plan="STARTER")

    body = {"plan": "PROFESSIONAL", "status": "TRIAL", "trial_end_date": "2099-01-01", "daily_limit": 30}
    response = api_as(superuser).patch(url(tenant_id), body, format="json")

    # 2099 is beyond the longest trial: the whole request is refused before anything is written.
    assert response.status_code == 400
    assert "trial_end_date" in response.json()["error"]["fields"]
    stored = subscription_get(tenant_id=tenant_id)
    assert (stored.plan_name, stored.status, stored.daily_limit) == ("STARTER", "ACTIVE", 6)
    assert audit_list(tenant_id=tenant_id).items == []

    response = api_as(superuser).patch(url(tenant_id), {"status": "TRIAL", "daily_limit": 30}, format="json")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["daily_limit"]) == ("TRIAL", 30)
    assert response.json()["overridden"] == ["daily_limit"]


@pytest.mark.parametrize(
    ("plan", "body", "field"),
    [
        # ACTIVE cannot go to EXPIRED: the plan change in the same request must not happen either.
        ("STARTER", {"plan": "SCALE", "status": "EXPIRED"}, "status"),
        # 500 a day fits SCALE's 3,000 a month but not STARTER's 180, the plan the limit would sit on.
        ("SCALE", {"plan": "STARTER", "daily_limit": 500}, "monthly_limit"),
        ("SCALE", {"plan": "STARTER", "api_calls_per_minute": 2_000}, "api_calls_per_hour"),
        ("STARTER", {"daily_limit": 30, "status": "TRIAL", "trial_end_date": "2020-01-01"}, "trial_end_date"),
    ],
)
def test_it_changes_nothing_when_any_part_of_a_request_is_refused(
    api_as: ApiAs, staff: User, plan: str, body: dict, field: str
) -> None:
    tenant_id = tenant_with_subscription(plan=plan)
    before = subscription_get(tenant_id=tenant_id)

    response = api_as(staff).patch(url(tenant_id), body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    after = subscription_get(tenant_id=tenant_id)
    names = ("plan_name", "status", "daily_limit", "monthly_limit", "api_calls_per_minute", "updated_at")
    assert [getattr(after, name) for name in names] == [getattr(before, name) for name in names]
    assert central_repository(TenantProfile).get(tenant_id).subscription_plan == plan
    assert audit_list(tenant_id=tenant_id).items == []


def test_it_applies_plan_limits_and_a_final_status_together(api_as: ApiAs, staff: User) -> None:
    tenant_id = tenant_with_subscription(plan="STARTER")

    body = {"plan": "SCALE", "daily_limit": 40, "status": "CANCELLED"}
    response = api_as(staff).patch(url(tenant_id), body, format="json")

    assert response.status_code == 200
    stored = subscription_get(tenant_id=tenant_id)
    assert (stored.plan_name, stored.daily_limit, stored.monthly_limit, stored.status) == (
        "SCALE",
        40,
        3000,
        "CANCELLED",
    )
    assert (response.json()["plan_name"], response.json()["status"]) == ("SCALE", "CANCELLED")
    actions = sorted(entry.action for entry in audit_list(tenant_id=tenant_id).items)
    assert actions == ["subscription.limits_change", "subscription.plan_change", "subscription.status_change"]


def test_it_resets_limit_overrides(api_as: ApiAs, staff: User) -> None:
    tenant_id = tenant_with_subscription(daily_limit=12, max_providers=1)

    response = api_as(staff).patch(
        url(tenant_id), {"reset_limits": ["daily_limit", "max_providers"]}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["overridden"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"plan": "GOLD"}, "plan"),
        ({"status": "ASLEEP"}, "status"),
        ({"daily_limit": 0}, "daily_limit"),
        ({"daily_limit": "lots"}, "daily_limit"),
        ({"daily_limit": 500}, "monthly_limit"),
        ({"reset_limits": ["colour"]}, "reset_limits"),
        ({"trial_end_date": "2031-01-01"}, "trial_end_date"),
        ({"status": "CANCELLED", "trial_end_date": "2031-01-01"}, "trial_end_date"),
        ({}, "non_field_errors"),
    ],
)
def test_it_answers_400_naming_the_field(api_as: ApiAs, staff: User, body: dict, field: str) -> None:
    tenant_id = tenant_with_subscription()

    response = api_as(staff).patch(url(tenant_id), body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_it_refuses_a_transition_the_lifecycle_does_not_allow(api_as: ApiAs, staff: User) -> None:
    tenant_id = tenant_with_subscription(status="SUSPENDED")

    response = api_as(staff).patch(url(tenant_id), {"status": "PAST_DUE"}, format="json")

    assert response.status_code == 400
    assert "allowed: ACTIVE, CANCELLED" in response.json()["error"]["fields"]["status"][0]


def test_it_answers_409_to_any_change_of_a_cancelled_subscription(api_as: ApiAs, staff: User) -> None:
    tenant_id = tenant_with_subscription(status="CANCELLED")

    reactivation = api_as(staff).patch(url(tenant_id), {"status": "ACTIVE"}, format="json")
    again = api_as(staff).patch(url(tenant_id), {"status": "CANCELLED"}, format="json")

    assert reactivation.status_code == 409
    assert reactivation.json()["error"]["code"] == "subscription_cancelled"
    assert "final" in reactivation.json()["error"]["message"]
    assert (again.status_code, again.json()["status"]) == (200, "CANCELLED")


def test_it_refuses_changes_from_read_only_staff(api_as: ApiAs, read_only_staff: User) -> None:
    tenant_id = tenant_with_subscription()

    assert api_as(read_only_staff).get(url(tenant_id)).status_code == 200
    assert api_as(read_only_staff).patch(url(tenant_id), {"plan": "SCALE"}, format="json").status_code == 403
    assert (
        api_as(read_only_staff).post(url(tenant_id, "/preview"), {"plan": "SCALE"}, format="json").status_code
        == 403
    )


def test_it_previews_a_plan_change_without_changing_anything(api_as: ApiAs, staff: User) -> None:
    tenant_id = tenant_with_subscription(plan="SCALE")

    response = api_as(staff).post(url(tenant_id, "/preview"), {"plan": "STARTER"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["changes"]["daily_limit"] == [100, 6]
    assert body["limits_after"]["monthly_limit"] == 180
    assert subscription_get(tenant_id=tenant_id).plan_name == "SCALE"


def test_it_answers_404_for_an_unknown_tenant(api_as: ApiAs, staff: User) -> None:
    assert api_as(staff).patch(url("t_nobody_here"), {"plan": "SCALE"}, format="json").status_code == 404


def test_it_turns_a_quota_error_into_429_with_retry_after_the_limit_and_figures() -> None:
    error = QuotaExceeded("daily limit", limit="daily", figures={"pipelines_run_today": 6}, retry_after=120)

    response = api_exception_handler(error, {})

    assert response is not None
    assert response.status_code == 429
    assert response["Retry-After"] == "120"
    assert response.data["error"]["code"] == "quota_exceeded"
    assert response.data["error"]["limit"] == "daily"
    assert response.data["error"]["figures"] == {"pipelines_run_today": 6}
    assert response.data["error"]["retry_after"] == 120
