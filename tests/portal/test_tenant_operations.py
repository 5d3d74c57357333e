"""Portal operations end to end: each form calls the service, shows errors inline and says what it did."""

# `onboard` comes from tests/portal/tenant_helpers.py by import, so test parameters shadow the import.
# ruff: noqa: F811

from __future__ import annotations

import logging
import re
import socket
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client

from bigquery_backend.client import get_gateway
from tenants_app.models import (
    SubscriptionStatus,
    TenantApiKey,
    TenantProfile,
    TenantStatus,
)
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import api_key_verify
from tenants_app.services.credentials import credential_create
from tenants_app.services.errors import ApiKeyRevoked
from tenants_app.services.subscription_selectors import subscription_get
from tenants_app.services.tenants import tenant_get
from tests.portal.tenant_helpers import (  # noqa: F401 - onboard is a fixture
    Onboard,
    form_value,
    html,
    messages_of,
    new_tenant_id,
    onboard,
    url,
)

KEY_PATTERN = re.compile(r"cvg_[a-z]+_[A-Za-z0-9]{40}")
OPENAI_SECRET = "sk-" + "Pq9" * 12


def plaintext_on(page: str) -> str:
    keys = KEY_PATTERN.findall(page)
    assert len(set(keys)) == 1, "the result page shows exactly one key"
    return keys[0]


# --- onboarding wizard --------------------------------------------------------------------------------
def test_it_onboards_a_tenant_through_the_wizard_and_shows_its_key_once(
    superuser_client: Client, portal_dataset: str
) -> None:
    tenant_id = new_tenant_id()
    details = {"tenant_id": tenant_id, "company_name": "Wizard Ltd", "admin_email": "ops@wizard.example"}

    step1 = superuser_client.get(url("tenant-onboard"))
    step2 = superuser_client.post(url("tenant-onboard"), {**details, "plan": "SCALE", "action": "check"})

    assert step1.status_code == 200
    assert step2.status_code == 200
    assert "Check passed" in html(step2)
    assert "100 runs a day" in html(step2)
    with pytest.raises(Exception, match="does not exist"):
        tenant_get(tenant_id=tenant_id)  # the check wrote nothing

    commit = {**details, "plan": "SCALE", "action": "commit", "token": form_value(html(step2), "token")}
    result = superuser_client.post(url("tenant-onboard"), commit)

    assert result.status_code == 200
    assert "no-store" in result["Cache-Control"]
    key = plaintext_on(html(result))
    assert 'data-copy-target="issued-api-key"' in html(result)
    assert api_key_verify(key=key).tenant_id == tenant_id
    assert tenant_get(tenant_id=tenant_id).subscription_plan == "SCALE"
    # Never kept anywhere after that response: not in the session, nor on the tenant page.
    for session in Session.objects.all():
        assert key not in str(session.get_decoded())
    assert key not in html(superuser_client.get(url("tenant-detail", tenant_id)))

    reload = superuser_client.post(url("tenant-onboard"), commit, follow=True)

    assert key not in html(reload)
    assert KEY_PATTERN.search(html(reload)) is None
    assert any("shown only once" in message for message in messages_of(reload))


def test_it_shows_wizard_errors_inline_on_their_fields(superuser_client: Client, onboard: Onboard) -> None:
    taken = onboard().profile.tenant_id

    bad_form = superuser_client.post(
        url("tenant-onboard"),
        {
            "tenant_id": "Bad Id!",
            "company_name": "A",
            "admin_email": "nope",
            "plan": "GOLD",
            "action": "check",
        },
    )
    reserved = superuser_client.post(
        url("tenant-onboard"),
        {"tenant_id": "admin", "company_name": "Admin Co", "admin_email": "a@b.example", "plan": "STARTER"},
    )
    existing = superuser_client.post(
        url("tenant-onboard"),
        {"tenant_id": taken, "company_name": "Copycat", "admin_email": "a@b.example", "plan": "STARTER"},
    )

    for response in (bad_form, reserved, existing):
        assert response.status_code == 200
        assert "errornote" in html(response)
    assert set(bad_form.context["form"].errors) >= {"admin_email", "plan"}
    assert "reserved" in " ".join(reserved.context["form"].errors["tenant_id"])
    assert "already exists" in " ".join(existing.context["form"].errors["tenant_id"])
    assert 'class="form-row field-tenant_id errors"' in html(existing)


# --- plan and subscription ---------------------------------------------------------------------------
def test_it_changes_the_plan_after_showing_limits_before_and_after(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard(plan="STARTER").profile.tenant_id

    preview = superuser_client.post(url("tenant-plan", tenant_id), {"plan": "SCALE", "action": "preview"})

    assert preview.status_code == 200
    rows = dict((name, (before, after)) for name, before, after in preview.context["rows"])
    assert rows["Daily pipeline runs"] == (6, 100)
    assert rows["Monthly pipeline runs"] == (180, 3000)
    assert subscription_get(tenant_id=tenant_id).plan_name == "STARTER"  # nothing changed yet

    done = superuser_client.post(
        url("tenant-plan", tenant_id), {"plan": "SCALE", "action": "confirm"}, follow=True
    )

    assert done.status_code == 200
    assert subscription_get(tenant_id=tenant_id).daily_limit == 100
    assert "100 runs a day, 3000 a month, 10 at once" in html(done)
    assert any("now on Scale" in message for message in messages_of(done))


def test_it_changes_the_subscription_status(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id

    missing_date = superuser_client.post(url("tenant-subscription-status", tenant_id), {"status": "TRIAL"})
    past_due = superuser_client.post(
        url("tenant-subscription-status", tenant_id), {"status": "PAST_DUE"}, follow=True
    )

    assert missing_date.status_code == 200
    assert "trial_end_date" in missing_date.context["form"].errors
    assert past_due.status_code == 200
    assert subscription_get(tenant_id=tenant_id).status == SubscriptionStatus.PAST_DUE


def test_it_takes_no_trial_end_date_left_in_the_form_for_another_status(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    status_url = url("tenant-subscription-status", tenant_id)
    trial_end = (datetime.now(UTC).date() + timedelta(days=7)).isoformat()
    superuser_client.post(status_url, {"status": "TRIAL", "trial_end_date": trial_end})
    form = superuser_client.get(status_url).context["form"]

    active = superuser_client.post(status_url, {"status": "ACTIVE", "trial_end_date": trial_end})

    assert str(form.initial["trial_end_date"]) == trial_end
    assert active.status_code == 302
    assert subscription_get(tenant_id=tenant_id).status == SubscriptionStatus.ACTIVE


def limits_in_form(client: Client, tenant_id: str) -> dict[str, object]:
    """The figures the limits form starts with (the limits in force)."""
    form = client.get(url("tenant-limits", tenant_id)).context["form"]
    return {name: form.initial[name] for name in form.fields if name != "reset"}


def test_it_changes_no_limit_when_the_form_comes_back_as_it_was(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard(plan="STARTER").profile.tenant_id
    figures = limits_in_form(superuser_client, tenant_id)
    before = subscription_get(tenant_id=tenant_id)

    kept = superuser_client.post(url("tenant-limits", tenant_id), figures, follow=True)

    assert any("left as they were" in message for message in messages_of(kept))
    assert subscription_get(tenant_id=tenant_id).updated_at == before.updated_at


def test_it_overrides_limits_and_sets_them_back_to_the_plan(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard(plan="STARTER").profile.tenant_id
    figures = limits_in_form(superuser_client, tenant_id)
    assert figures["daily_limit"] == 6

    raised = superuser_client.post(
        url("tenant-limits", tenant_id), {**figures, "daily_limit": 12}, follow=True
    )

    assert subscription_get(tenant_id=tenant_id).daily_limit == 12
    assert subscription_get(tenant_id=tenant_id).monthly_limit == 180
    assert "12 runs a day" in html(raised)

    too_big = superuser_client.post(url("tenant-limits", tenant_id), {**figures, "daily_limit": 10**9})
    superuser_client.post(
        url("tenant-limits", tenant_id), {**figures, "daily_limit": 12, "reset": ["daily_limit"]}
    )

    assert "daily_limit" in too_big.context["form"].errors
    assert subscription_get(tenant_id=tenant_id).daily_limit == 6


# --- lifecycle ----------------------------------------------------------------------------------------
def test_it_suspends_and_reactivates_after_confirmation(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id

    confirm = superuser_client.get(url("tenant-suspend", tenant_id))
    suspended = superuser_client.post(url("tenant-suspend", tenant_id), follow=True)

    assert confirm.status_code == 200
    assert "Yes, suspend" in html(confirm)
    assert tenant_get(tenant_id=tenant_id).status == TenantStatus.SUSPENDED
    assert any("suspended" in message for message in messages_of(suspended))
    assert url("tenant-reactivate", tenant_id) in html(suspended)

    superuser_client.post(url("tenant-reactivate", tenant_id))
    again = superuser_client.post(url("tenant-reactivate", tenant_id), follow=True)

    assert tenant_get(tenant_id=tenant_id).status == TenantStatus.ACTIVE
    assert any("already active" in message for message in messages_of(again))


def test_it_shows_why_a_transition_is_refused(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id
    central_repository(TenantProfile).update(tenant_id, {"status": TenantStatus.CANCELLED})

    refused = superuser_client.post(url("tenant-reactivate", tenant_id))

    assert refused.status_code == 200
    assert "needs SUSPENDED" in html(refused)
    assert tenant_get(tenant_id=tenant_id).status == TenantStatus.CANCELLED


def test_it_offboards_only_when_the_tenant_id_is_typed(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id

    wrong = superuser_client.post(url("tenant-offboard", tenant_id), {"confirm_tenant_id": "something_else"})

    assert wrong.status_code == 200
    assert "confirm_tenant_id" in wrong.context["form"].errors
    assert tenant_get(tenant_id=tenant_id).status == TenantStatus.ACTIVE

    done = superuser_client.post(
        url("tenant-offboard", tenant_id),
        {"confirm_tenant_id": tenant_id, "purge_dataset": "on"},
        follow=True,
    )

    assert done.status_code == 200
    assert tenant_get(tenant_id=tenant_id).status == TenantStatus.CANCELLED
    assert not central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id, "is_active": True})
    assert 'id="dataset-missing"' in html(done)


def test_it_edits_the_profile(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id

    bad = superuser_client.post(
        url("tenant-edit", tenant_id), {"company_name": "X", "admin_email": "x@y.example"}
    )
    good = superuser_client.post(
        url("tenant-edit", tenant_id), {"company_name": "Renamed Corp", "admin_email": "new@acme.example"}
    )

    assert "company_name" in bad.context["form"].errors
    assert good.status_code == 302
    assert tenant_get(tenant_id=tenant_id).company_name == "Renamed Corp"


# --- API keys ----------------------------------------------------------------------------------------
def test_it_creates_a_key_and_shows_it_once(
    superuser_client: Client, onboard: Onboard, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant_id = onboard().profile.tenant_id
    form = superuser_client.get(url("tenant-key-create", tenant_id))
    data = {
        "name": "CI runner",
        "scopes": ["tenant:read", "pipelines:execute"],
        "token": form_value(html(form), "token"),
    }

    result = superuser_client.post(url("tenant-key-create", tenant_id), data)

    assert result.status_code == 200
    assert "no-store" in result["Cache-Control"]
    key = plaintext_on(html(result))
    assert api_key_verify(key=key).scopes == ("tenant:read", "pipelines:execute")
    assert key not in caplog.text
    assert not any(key in str(message) for message in result.context["messages"])
    detail = html(superuser_client.get(url("tenant-detail", tenant_id)))
    assert "CI runner" in detail
    assert key not in detail
    reload = superuser_client.post(url("tenant-key-create", tenant_id), data, follow=True)
    assert KEY_PATTERN.search(html(reload)) is None
    assert (
        len(central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id, "name": "CI runner"})) == 1
    )


def test_it_shows_key_form_errors_inline(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id
    token = form_value(html(superuser_client.get(url("tenant-key-create", tenant_id))), "token")
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")

    no_scopes = superuser_client.post(url("tenant-key-create", tenant_id), {"name": "k", "token": token})
    expired = superuser_client.post(
        url("tenant-key-create", tenant_id),
        {"name": "k", "scopes": ["tenant:read"], "expires_at": past, "token": token},
    )

    assert "scopes" in no_scopes.context["form"].errors
    assert expired.context["form"].errors["expires_at"] == ["Must be in the future."]
    assert KEY_PATTERN.search(html(expired)) is None


def test_it_rotates_a_key_and_shows_the_replacement_once(superuser_client: Client, onboard: Onboard) -> None:
    result = onboard()
    assert result.api_key is not None
    tenant_id, old = result.profile.tenant_id, result.api_key
    rotate_url = url("tenant-key-rotate", tenant_id, old.row.api_key_id)
    token = form_value(html(superuser_client.get(rotate_url)), "token")

    rotated = superuser_client.post(rotate_url, {"grace": "0", "token": token})

    new_key = plaintext_on(html(rotated))
    assert new_key != old.plaintext
    assert api_key_verify(key=new_key).tenant_id == tenant_id
    with pytest.raises(ApiKeyRevoked):
        api_key_verify(key=old.plaintext)


def test_it_revokes_a_key_with_a_required_reason(superuser_client: Client, onboard: Onboard) -> None:
    result = onboard()
    assert result.api_key is not None
    revoke_url = url("tenant-key-revoke", result.profile.tenant_id, result.api_key.row.api_key_id)

    no_reason = superuser_client.post(revoke_url, {"reason": ""})
    done = superuser_client.post(revoke_url, {"reason": "laptop stolen"}, follow=True)

    assert "reason" in no_reason.context["form"].errors
    with pytest.raises(ApiKeyRevoked):
        api_key_verify(key=result.api_key.plaintext)
    assert "laptop stolen" in html(done)
    assert any("revoked" in message for message in messages_of(done))


def test_it_answers_404_for_another_tenants_key(superuser_client: Client, onboard: Onboard) -> None:
    mine, theirs = onboard(), onboard()
    assert theirs.api_key is not None

    response = superuser_client.get(
        url("tenant-key-revoke", mine.profile.tenant_id, theirs.api_key.row.api_key_id)
    )

    assert response.status_code == 404


# Cloud credentials: tests/portal/test_credential_forms.py.


def test_it_answers_503_with_a_page_when_bigquery_is_down_during_the_wizard(
    superuser_client: Client, portal_dataset: str, settings: object
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings.BIGQUERY_EMULATOR_HOST = f"http://127.0.0.1:{closed_port}"  # type: ignore[attr-defined]
    settings.BIGQUERY_RETRY_DEADLINE_SECONDS = 0.5  # type: ignore[attr-defined]
    settings.BIGQUERY_TIMEOUT_SECONDS = 0.5  # type: ignore[attr-defined]

    response = superuser_client.post(
        url("tenant-onboard"),
        {
            "tenant_id": new_tenant_id(),
            "company_name": "Outage Ltd",
            "admin_email": "a@b.example",
            "plan": "STARTER",
        },
    )

    assert response.status_code == 503
    assert response["Retry-After"]
    assert "Temporarily unavailable" in html(response)


# --- roles and CSRF -------------------------------------------------------------------------------------
OPERATIONS = (
    ("tenant-onboard", ()),
    ("tenant-edit", ("T",)),
    ("tenant-suspend", ("T",)),
    ("tenant-reactivate", ("T",)),
    ("tenant-offboard", ("T",)),
    ("tenant-plan", ("T",)),
    ("tenant-limits", ("T",)),
    ("tenant-subscription-status", ("T",)),
    ("tenant-key-create", ("T",)),
    ("tenant-key-rotate", ("T", "K")),
    ("tenant-key-revoke", ("T", "K")),
    ("tenant-credential-create", ("T",)),
    ("tenant-credential-replace", ("T", "C")),
    ("tenant-credential-deactivate", ("T", "C")),
)


def test_it_refuses_every_operation_to_read_only_staff(read_only_client: Client, onboard: Onboard) -> None:
    result = onboard()
    assert result.api_key is not None
    tenant_id = result.profile.tenant_id
    credential = credential_create(
        tenant_id=tenant_id,
        provider="OPENAI",
        name="p",
        payload={"api_key": OPENAI_SECRET},
        created_by="user:t",
    )
    ids = {"T": tenant_id, "K": result.api_key.row.api_key_id, "C": credential.credential_id}
    body = {"confirm_tenant_id": tenant_id, "reason": "x", "plan": "SCALE", "action": "confirm", "grace": "0"}

    for name, args in OPERATIONS:
        target = url(name, *(ids[arg] for arg in args))
        assert read_only_client.get(target).status_code == 403, name
        assert read_only_client.post(target, body).status_code == 403, name

    assert tenant_get(tenant_id=tenant_id).status == TenantStatus.ACTIVE
    assert api_key_verify(key=result.api_key.plaintext).tenant_id == tenant_id
    assert subscription_get(tenant_id=tenant_id).plan_name == "STARTER"


def test_it_enforces_csrf_on_the_forms(onboard: Onboard, superuser_client: Client) -> None:
    tenant_id = onboard().profile.tenant_id
    client = Client(enforce_csrf_checks=True)
    client.cookies = superuser_client.cookies  # the same logged-in session

    forged = client.post(url("tenant-suspend", tenant_id))
    assert forged.status_code == 403
    assert tenant_get(tenant_id=tenant_id).status == TenantStatus.ACTIVE

    page = html(client.get(url("tenant-suspend", tenant_id)))
    token = form_value(page, "csrfmiddlewaretoken")
    genuine = client.post(url("tenant-suspend", tenant_id), {"csrfmiddlewaretoken": token})
    assert genuine.status_code == 302
    assert tenant_get(tenant_id=tenant_id).status == TenantStatus.SUSPENDED


def test_it_records_portal_changes_in_the_audit_log_as_the_staff_member(
    staff_client: Client, onboard: Onboard
) -> None:
    from tenants_app.services.audit import audit_list

    tenant_id = onboard().profile.tenant_id
    staff_client.post(url("tenant-suspend", tenant_id))

    entries = audit_list(tenant_id=tenant_id, action="tenant.suspend").items
    assert [(e.actor, e.source) for e in entries] == [("user:operator", "portal")]
    assert get_gateway() is not None


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("tenant-edit", ("t_nobody_here",)),
        ("tenant-suspend", ("t_nobody_here",)),
        ("tenant-plan", ("t_nobody_here",)),
        ("tenant-key-create", ("t_nobody_here",)),
        ("tenant-key-revoke", ("t_nobody_here", "no_such_key")),
        ("tenant-credential-replace", ("t_nobody_here", "cred_nothing")),
    ],
)
def test_it_answers_404_on_operations_of_a_tenant_that_does_not_exist(
    superuser_client: Client, portal_dataset: str, name: str, args: tuple[str, ...]
) -> None:
    assert superuser_client.get(url(name, *args)).status_code == 404
    assert superuser_client.post(url(name, *args), {"reason": "x", "plan": "SCALE"}).status_code == 404
