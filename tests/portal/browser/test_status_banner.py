"""What a tenant can do now, in a real browser at laptop and phone widths: the banner on its page (the same
verdict as the API's allowed_operations), the tenant list's column, and a heading a stored right-to-left
override cannot reorder."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from tenants_app.services.tenants import tenant_suspend
from tests.portal.browser.conftest import LAPTOP, PHONE, Login, Onboard, Screenshot, assert_fits, set_width
from tests.support.people import insert_profile, insert_subscription

RLO = "\u202e"
# The x of each character of an element's first text node, in DOM order: increasing when shown left to right.
CHARACTER_POSITIONS = """(element) => {
    const text = element.firstChild;
    const range = document.createRange();
    const xs = [];
    for (let i = 0; i < text.length; i++) {
        range.setStart(text, i);
        range.setEnd(text, i + 1);
        xs.push(range.getBoundingClientRect().left);
    }
    return xs;
}"""


@pytest.mark.parametrize("width", [LAPTOP, PHONE])
def test_it_says_a_suspended_tenant_cannot_run_and_its_keys_are_refused_as_the_api_does(
    page: Page, superuser: User, login: Login, onboard: Onboard, screenshot: Screenshot, width: int
) -> None:
    tenant_id = onboard(plan="STARTER", company_name="Paused Pipelines Ltd").profile.tenant_id
    tenant_suspend(tenant_id=tenant_id, actor="system:browser-tests")
    set_width(page, width)
    login(page, superuser)

    page.goto(f"/admin/tenants/{tenant_id}/")

    banner = page.locator("#status-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Blocked")  # the level in words, beside its colour
    expect(banner).to_contain_text("Suspended: API keys refused, no pipeline runs")
    expect(banner.locator("[data-operation='run']")).to_have_text("✗ Run pipelines: refused")
    expect(banner.locator("[data-operation='api-keys']")).to_have_text("✗ API keys: refused")
    shown = banner.locator("[data-allowed='true']").evaluate_all(
        "(items) => items.map((item) => item.dataset.operation)"
    )
    api = page.request.get(f"/api/v1/tenants/{tenant_id}/subscription")
    assert api.ok
    assert [op for op in shown if op != "api-keys"] == api.json()["allowed_operations"] == ["read"]
    # The banner fits the screen: nothing of it is cut off or scrolls sideways.
    box = banner.bounding_box()
    assert box is not None
    assert 0 <= box["x"] <= box["x"] + box["width"] <= width
    assert banner.evaluate("(element) => element.scrollWidth <= element.clientWidth")
    screenshot(page, f"07-tenant-detail-{width}")


@pytest.mark.parametrize("width", [LAPTOP, PHONE])
def test_it_shows_each_tenants_verdict_in_the_tenant_list(
    page: Page, superuser: User, login: Login, onboard: Onboard, screenshot: Screenshot, width: int
) -> None:
    suspended = onboard(company_name="Paused Pipelines Ltd").profile.tenant_id
    tenant_suspend(tenant_id=suspended, actor="system:browser-tests")
    working = onboard(company_name="Busy Pipelines Ltd").profile.tenant_id
    set_width(page, width)
    login(page, superuser)

    page.goto("/admin/tenants_app/tenantprofile/")

    expect(page.locator("#result_list thead")).to_contain_text("Can do now")
    suspended_row = page.locator("#result_list tbody tr", has_text=suspended)
    expect(suspended_row.locator(".portal-verdict")).to_have_text("Blocked")
    expect(suspended_row).to_contain_text("Suspended: API keys refused, no pipeline runs")
    working_row = page.locator("#result_list tbody tr", has_text=working)
    expect(working_row.locator(".portal-verdict")).to_have_text("OK")
    expect(working_row).to_contain_text("everything allowed")
    # The page never scrolls sideways. On a laptop every column fits, so the table is no wider than the
    # box it sits in; a phone may scroll the list inside that box.
    assert_fits(page, width)
    if width == LAPTOP:
        widths = page.locator("#result_list").evaluate("t => [t.scrollWidth, t.parentElement.clientWidth]")
        assert widths[0] <= widths[1], widths
    screenshot(page, f"03-tenant-list-{width}")


@pytest.mark.parametrize("width", [LAPTOP, PHONE])
def test_it_keeps_a_stored_right_to_left_override_from_reversing_the_tenant_id_in_the_heading(
    page: Page, superuser: User, login: Login, width: int
) -> None:
    # Legacy data: stored before names refused bidi controls, straight through the repository.
    tenant_id = f"bt_{uuid.uuid4().hex[:10]}"
    insert_profile(tenant_id, company_name=f"Acme {RLO}evil")
    insert_subscription(tenant_id)
    set_width(page, width)
    login(page, superuser)

    page.goto(f"/admin/tenants/{tenant_id}/")

    heading = page.locator("#tenant-heading")
    assert heading.inner_text().startswith(f"Acme {RLO}evil ({tenant_id})")
    name = heading.locator("bdi")
    assert name.inner_text() == f"Acme {RLO}evil"
    assert tenant_id not in name.inner_text()  # the id is outside the isolated name
    shown_id = heading.locator(".portal-muted")
    assert shown_id.inner_text() == f"({tenant_id})"
    # Drawn left to right: without the isolation the override would draw the id backwards.
    xs = shown_id.evaluate(CHARACTER_POSITIONS)
    assert xs == sorted(xs)
    assert xs[0] < xs[-1]
    name_box, id_box = name.bounding_box(), shown_id.bounding_box()
    assert name_box is not None
    assert id_box is not None
    # The name comes first: to its left on one line, or on the line above where a phone wraps it.
    assert name_box["x"] < id_box["x"] or name_box["y"] < id_box["y"]
