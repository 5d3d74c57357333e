"""Every table link the tenant pages offer leads to a working list of that tenant's rows.

The tenant detail page, the trend page and the table lists come from different modules; this checks that
the filters the first two put in their links are ones the lists accept.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from playwright.sync_api import Page

from tests.portal.browser.conftest import Login, Onboard


def links_on(page: Page, url: str, selector: str) -> set[str]:
    page.goto(url)
    links = page.locator(selector)
    return {links.nth(i).get_attribute("href") or "" for i in range(links.count())}


def test_it_follows_every_table_link_of_the_tenant_pages_to_a_list_of_that_tenant(
    page: Page, superuser: User, login: Login, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    login(page, superuser)
    hrefs = links_on(page, f"/admin/tenants/{tenant_id}/", "#tenant-tables a, #content-main .module h2 a")
    hrefs |= links_on(page, f"/admin/dashboard/{tenant_id}/", "#content-main .object-tools a")
    hrefs = {href for href in hrefs if href.startswith("/admin/tenants_app/")}
    assert len(hrefs) >= 8, hrefs

    broken = {}
    for href in sorted(hrefs):
        response = page.goto(href)
        assert response is not None
        heading = page.locator("#content h1").first.inner_text()
        if response.status != 200 or "Bad filter" in heading:
            broken[href] = f"{response.status} {heading}"
        elif tenant_id not in page.content():
            broken[href] = "the list does not show the tenant's filter"
    assert not broken, broken
