"""Read-only staff in a real browser: every page readable, no operation offered, operations refused."""

from __future__ import annotations

import re

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from tests.portal.browser.conftest import Login, Onboard


def test_it_shows_read_only_staff_the_pages_without_operation_buttons(
    page: Page, read_only_staff: User, login: Login, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    login(page, read_only_staff)

    page.goto(f"/admin/tenants/{tenant_id}/")
    expect(page.locator("#tenant-profile")).to_contain_text(tenant_id)
    expect(page.locator("#tenant-keys tbody tr")).to_have_count(1)
    for absent in ("#tenant-operations", "#new-key-link", "#new-credential-link"):
        expect(page.locator(absent)).to_have_count(0)
    expect(page.locator("#tenant-keys").get_by_role("link", name="Revoke")).to_have_count(0)

    page.goto(f"/admin/tenants_app/tenantprofile/?q={tenant_id}")
    expect(page.locator("#result_list tbody tr", has_text=tenant_id)).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("Onboard a tenant", re.IGNORECASE))).to_have_count(0)

    # The dashboard does not offer the wizard either.
    page.goto("/admin/dashboard/")
    expect(page.locator(f"#quota-tenants tr[data-tenant='{tenant_id}']")).to_be_visible()
    expect(page.get_by_role("link", name="Onboard a tenant")).to_have_count(0)

    # Typing an operation's address is refused too.
    response = page.goto(f"/admin/tenants/{tenant_id}/suspend/")
    assert response is not None
    assert response.status == 403
    expect(page.locator("#content")).to_contain_text(re.compile("read-only", re.IGNORECASE))
