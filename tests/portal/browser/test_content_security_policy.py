"""The Content-Security-Policy as a real browser applies it: no page of ours trips it."""

from __future__ import annotations

from django.contrib.auth.models import User
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.portal.browser.conftest import Login, Onboard


def csp_violations(page: Page) -> list[str]:
    """Collect the console's CSP reports for this page from now on (Chromium logs each blocked load)."""
    found: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            found.append(message.text)

    page.on("console", on_console)
    return found


def test_it_runs_the_portal_and_swagger_ui_without_a_single_csp_violation(
    page: Page, superuser: User, login: Login, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    violations = csp_violations(page)
    login(page, superuser)
    for path in (
        "/admin/",
        f"/admin/tenants/{tenant_id}/",
        "/admin/tenants_app/tenantprofile/",
        "/admin/dashboard/",
    ):
        page.goto(path)
        page.wait_for_load_state("networkidle")

    # Swagger UI only renders its operations if its start-up script ran under the policy.
    page.goto("/api/docs/")
    expect(page.locator(".opblock").first).to_be_visible(timeout=30_000)

    assert violations == []
