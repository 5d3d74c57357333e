"""The admin's home page: its Portal module, as laid out by a real browser, for each role."""

from __future__ import annotations

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from tests.portal.browser.conftest import Login

PORTAL_LINKS = ("Quota dashboard", "Onboard a tenant", "Tenants", "Audit log")


def test_it_lays_out_the_portal_modules_links_and_descriptions_readably(
    page: Page, superuser: User, login: Login
) -> None:
    login(page, superuser)
    page.goto("/admin/")
    portal = page.locator("#portal-module")
    for name in PORTAL_LINKS:
        expect(portal.get_by_role("link", name=name, exact=True)).to_be_visible()
    # A squeezed description column puts one letter per line, which only a browser's layout shows.
    for cell in portal.locator("td").all():
        box = cell.bounding_box()
        assert box is not None
        assert box["height"] < 60, (
            f"{cell.inner_text()!r} is {box['width']:.0f} px wide and {box['height']:.0f} px tall"
        )


def test_it_offers_read_only_staff_no_onboarding_on_the_home_page(
    page: Page, read_only_staff: User, login: Login
) -> None:
    login(page, read_only_staff)
    page.goto("/admin/")
    portal = page.locator("#portal-module")
    for name in ("Quota dashboard", "Tenants", "Audit log"):
        expect(portal.get_by_role("link", name=name, exact=True)).to_be_visible()
    # The wizard answers read-only staff with a 403: a link to it would only lead there.
    expect(page.get_by_role("link", name="Onboard a tenant")).to_have_count(0)
