"""An operator's day in the portal, in a real browser: onboard, change the plan, issue and revoke a key,
then find the tenant in the list and on the quota dashboard, and the changes in the audit log."""

from __future__ import annotations

import re
import uuid

from django.contrib.auth.models import User
from playwright.sync_api import BrowserContext, Page, expect

from tests.portal.browser.conftest import Login, Screenshot

KEY_PATTERN = re.compile(r"^cvg_[a-z]+_\S{20,}$")


def new_tenant_id() -> str:
    return f"bj_{uuid.uuid4().hex[:10]}"


def test_it_onboards_changes_the_plan_issues_and_revokes_a_key_and_shows_it_all(
    page: Page, context: BrowserContext, superuser: User, login: Login, screenshot: Screenshot
) -> None:
    tenant_id = new_tenant_id()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    login(page, superuser)

    # The tenant list links to the wizard.
    page.goto("/admin/tenants_app/tenantprofile/")
    page.get_by_role("link", name=re.compile("Onboard a tenant", re.IGNORECASE)).first.click()

    # Step 1: the details.
    expect(page).to_have_url(re.compile(r"/admin/tenants/onboard/$"))
    page.fill("#id_tenant_id", tenant_id)
    page.fill("#id_company_name", "Journey Analytics")
    page.fill("#id_admin_email", "ops@journey.example.com")
    page.select_option("#id_plan", "STARTER")
    screenshot(page, "04-wizard-1-details")
    page.get_by_role("button", name="Check").click()

    # Step 2: the dry run passed; nothing exists yet.
    expect(page.locator(".portal-check-ok")).to_contain_text("Check passed")
    expect(page.locator("#content-main")).to_contain_text(tenant_id)
    screenshot(page, "05-wizard-2-check")
    page.get_by_role("button", name=f"Onboard {tenant_id}").click()

    # Step 3: the first key, shown once, with a working copy button.
    key_box = page.locator("#issued-api-key")
    expect(key_box).to_have_value(KEY_PATTERN)
    initial_key = key_box.input_value()
    expect(page.locator(".messagelist .success")).to_contain_text(f"Tenant {tenant_id} was onboarded")
    screenshot(page, "06-wizard-3-key-once")
    page.locator("#copy-api-key").click()
    expect(page.locator(".portal-copied")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == initial_key
    page.get_by_role("link", name=re.compile(f"back to {tenant_id}")).click()

    # The detail page never shows the key again.
    expect(page.locator("#tenant-profile")).to_contain_text("Journey Analytics")
    expect(page.locator("#tenant-subscription")).to_contain_text("6 runs a day, 180 a month, 1 at once")
    assert initial_key not in page.content()
    screenshot(page, "07-tenant-detail")

    # Plan change: the confirmation shows the limits before and after; they change at once.
    page.locator("#tenant-operations").get_by_role("link", name="Change plan").click()
    page.select_option("#id_plan", "SCALE")
    page.get_by_role("button", name="Show the new limits").click()
    preview = page.locator("#plan-change-preview")
    daily = preview.locator("tbody tr", has_text=re.compile("daily", re.IGNORECASE)).first
    expect(daily.locator("td").nth(1)).to_have_text("6")
    expect(daily.locator("td").nth(2)).to_have_text("100")
    screenshot(page, "08-plan-change-confirm")
    page.get_by_role("button", name="Change to Scale").click()
    expect(page.locator(".messagelist .success")).to_contain_text(f"{tenant_id} is now on Scale")
    expect(page.locator("#tenant-subscription")).to_contain_text("100 runs a day, 3000 a month, 10 at once")

    # A new key: plaintext once; then revoke it with a reason.
    page.locator("#new-key-link").click()
    page.fill("#id_name", "journey-ci")
    page.get_by_role("button", name="Create key").click()
    new_key = page.locator("#issued-api-key").input_value()
    assert KEY_PATTERN.match(new_key)
    assert new_key != initial_key
    # Reloading the result page (the browser sends the form again) does not show a key again.
    page.reload()
    expect(page.locator(".messagelist .warning")).to_contain_text("shown only once")
    expect(page.locator("#issued-api-key")).to_have_count(0)
    assert new_key not in page.content()
    page.goto(f"/admin/tenants/{tenant_id}/")
    key_row = page.locator("#tenant-keys tbody tr", has_text="journey-ci")
    expect(key_row).to_have_count(1)  # the reload issued no second key
    expect(key_row).to_contain_text("Active")
    assert new_key not in page.content()
    key_row.get_by_role("link", name="Revoke").click()
    page.fill("#id_reason", "Leaked in a CI log")
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator(".messagelist .success")).to_contain_text("was revoked")
    expect(page.locator("#tenant-keys tbody tr", has_text="journey-ci")).to_contain_text(
        "Revoked: Leaked in a CI log"
    )

    # The tenant list shows it, with the plan it has now.
    page.goto(f"/admin/tenants_app/tenantprofile/?q={tenant_id}")
    expect(page.locator("#result_list tbody tr", has_text=tenant_id)).to_contain_text("Scale")
    page.goto("/admin/tenants_app/tenantprofile/")
    screenshot(page, "03-tenant-list")

    # The quota dashboard, filtered to its new plan, shows it against the new limits.
    page.goto("/admin/")
    page.locator("#portal-module").get_by_role("link", name="Quota dashboard").click()
    page.locator("#quota-filters").get_by_role("link", name="Scale").click()
    expect(page.locator(f"#quota-tenants tr[data-tenant='{tenant_id}']")).to_contain_text("0 / 100")

    # The audit log shows who did each change, newest first, without the keys.
    page.goto("/admin/tenants_app/auditlogentry/")
    page.fill("#searchbar", tenant_id)
    page.locator("#changelist-search input[type=submit]").click()
    results = page.locator("#result_list tbody")
    for action in ("tenant.onboard", "subscription.plan_change", "api_key.create", "api_key.revoke"):
        expect(results).to_contain_text(action)
    expect(results).to_contain_text(f"user:{superuser.username}")
    assert initial_key not in page.content()
    assert new_key not in page.content()
    screenshot(page, "11-audit-log")

    # One entry's page shows what changed, before and after.
    results.locator("tr", has_text="subscription.plan_change").locator("a").first.click()
    entry = page.locator("#content-main")
    expect(entry).to_contain_text("subscription.plan_change")
    expect(entry).to_contain_text("STARTER")
    expect(entry).to_contain_text("SCALE")
    screenshot(page, "12-audit-entry")


def test_it_shows_the_services_validation_errors_inline_on_the_wizards_fields(
    page: Page, superuser: User, login: Login
) -> None:
    login(page, superuser)
    page.goto("/admin/tenants/onboard/")
    # The form accepts any short text; the onboarding service's own rules reject it.
    page.fill("#id_tenant_id", "Not A Valid Id!")
    page.fill("#id_company_name", "Inline Errors Ltd")
    page.fill("#id_admin_email", "ops@inline.example.com")
    page.get_by_role("button", name="Check").click()

    expect(page.locator(".errornote")).to_be_visible()
    expect(page.locator(".field-tenant_id .errorlist")).to_contain_text(re.compile(r"\S"))
    expect(page.locator(".field-admin_email .errorlist")).to_have_count(0)
    # Still step 1, with what was typed kept.
    expect(page.locator(".portal-check-ok")).to_have_count(0)
    expect(page.locator("#id_company_name")).to_have_value("Inline Errors Ltd")
