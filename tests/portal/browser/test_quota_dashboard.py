"""The quota dashboard and a tenant's 30-day trend in a real browser, with usage from the quota service."""

from __future__ import annotations

import re

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from tenants_app.services.quotas import quota_admit, quota_release
from tests.portal.browser.conftest import Login, Onboard, Screenshot


def test_it_flags_a_tenant_past_80_percent_on_the_dashboard_and_draws_its_trend(
    page: Page, superuser: User, login: Login, onboard: Onboard, screenshot: Screenshot
) -> None:
    tenant_id = onboard(plan="STARTER", company_name="Busy Pipelines Ltd").profile.tenant_id
    # 5 of STARTER's 6 runs a day (83%); each released, as its concurrent limit is 1.
    for _ in range(5):
        admission = quota_admit(tenant_id=tenant_id)
        quota_release(tenant_id=tenant_id, usage_date=admission.usage_date, succeeded=True)
    login(page, superuser)

    page.goto("/admin/")
    page.locator("#portal-module").get_by_role("link", name="Quota dashboard").click()
    row = page.locator(f"#quota-tenants tr[data-tenant='{tenant_id}']")
    expect(row).to_have_class(re.compile(r"\bflagged\b"))
    expect(row).to_contain_text("5 / 6")
    expect(row).to_contain_text("83%")
    expect(page.locator("#quota-plans tr[data-plan='STARTER']")).to_be_visible()
    screenshot(page, "09-dashboard")

    row.get_by_role("link", name="30 days").click()
    expect(page.locator("#trend-chart svg")).to_be_visible()
    expect(page.locator("#trend-summary")).to_contain_text("5")
    screenshot(page, "10-usage-trend")
