"""What the tenant can do now, on its page and in the tenant list; its name isolated in the heading."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import SubscriptionStatus, TenantProfile, TenantStatus
from tests.portal.conftest import AddTenant
from tests.support.people import insert_subscription

RLO = "\u202e"


def detail_url(tenant_id: str) -> str:
    return reverse("admin:portal-tenant-detail", args=[tenant_id])


def banner(html: str) -> str:
    found = re.search(r'<div class="module portal-banner[^"]*" id="status-banner".*?</div>', html, re.S)
    assert found is not None, "no status banner"
    return found.group(0)


def test_it_says_a_suspended_tenant_cannot_run_and_its_keys_are_refused_as_the_api_does(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant(status=TenantStatus.SUSPENDED).tenant_id
    insert_subscription(tenant_id)  # ACTIVE: until now the page read "Subscription ACTIVE"

    shown = banner(superuser_client.get(detail_url(tenant_id)).content.decode())
    api = superuser_client.get(f"/api/v1/tenants/{tenant_id}/subscription").json()

    assert 'data-level="blocked"' in shown
    assert ">Blocked</span>" in shown  # the level in words, not in colour only
    assert "Suspended: API keys refused, no pipeline runs" in shown
    assert "✗ Run pipelines: refused" in shown
    assert "✗ API keys: refused" in shown
    allowed = re.search(r'data-allowed-operations="([^"]*)"', shown).group(1).split()
    assert allowed == api["allowed_operations"] == ["read"]


def test_it_says_everything_is_allowed_until_a_trial_ends(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant(status=TenantStatus.TRIAL).tenant_id
    insert_subscription(tenant_id, status=SubscriptionStatus.TRIAL, trial_end_date=None)

    shown = banner(superuser_client.get(detail_url(tenant_id)).content.decode())

    assert 'data-level="ok"' in shown
    assert "Trial: everything allowed" in shown
    assert 'data-allowed-operations="read run configure"' in shown


def test_it_shows_the_verdict_of_each_tenant_in_the_list_for_one_more_job(
    superuser_client: Client, add_tenant: AddTenant, gateway: BigQueryGateway
) -> None:
    suspended = add_tenant(status=TenantStatus.SUSPENDED).tenant_id
    active = add_tenant().tenant_id
    past_due = add_tenant().tenant_id
    insert_subscription(suspended)
    insert_subscription(active)
    insert_subscription(past_due, status=SubscriptionStatus.PAST_DUE)
    url = reverse("admin:tenants_app_tenantprofile_changelist")

    with gateway.count_jobs() as counter:
        html = superuser_client.get(url).content.decode()

    assert counter.jobs == 3  # the page, its count, and the page's subscriptions
    assert "Can do now" in html
    # Each tenant's row, whitespace collapsed as a browser shows it.
    rows = {
        tenant: " ".join(re.search(rf">{tenant}<.*?</tr>", html, re.S).group(0).split())
        for tenant in (suspended, active, past_due)
    }
    assert ">Blocked</span> Suspended: API keys refused, no pipeline runs" in rows[suspended]
    assert ">OK</span> Active: everything allowed" in rows[active]
    assert ">Limited</span> Payment past due: pipelines keep running" in rows[past_due]


def test_it_keeps_a_legacy_right_to_left_override_in_the_company_name_from_reordering_the_heading(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    # Stored before names refused bidi controls: the page must still show the id in its own order.
    profile: TenantProfile = add_tenant(company_name=f"Acme {RLO}evil")
    insert_subscription(profile.tenant_id)

    html = superuser_client.get(detail_url(profile.tenant_id)).content.decode()

    heading = re.search(r'<h1 id="tenant-heading">(.*?)</h1>', html, re.S).group(1)
    assert heading.startswith(
        f'<bdi>Acme {RLO}evil</bdi> <span class="portal-muted">({profile.tenant_id})</span>'
    )
    crumbs = re.search(r'<div class="breadcrumbs">(.*?)</div>', html, re.S).group(1)
    assert f"<bdi>Acme {RLO}evil</bdi> ({profile.tenant_id})" in crumbs


def test_it_refuses_a_bidi_override_in_the_edited_company_name_inline(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    profile = add_tenant()
    edit = reverse("admin:portal-tenant-edit", args=[profile.tenant_id])

    response = superuser_client.post(
        edit, {"company_name": f"Acme {RLO}evil", "admin_email": "ops@acme.example"}
    )

    assert response.status_code in {200, 400}
    assert "U+202E" in response.content.decode()
    shown = superuser_client.get(detail_url(profile.tenant_id)).content.decode()
    assert f"{RLO}evil" not in shown
