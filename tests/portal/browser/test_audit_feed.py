"""The audit log as a feed in a real browser, on a laptop (1366 px) and a phone (390 px)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from tenants_app.services.api_keys import api_key_create, api_key_revoke
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.subscription_plan_change import subscription_change_plan
from tests.portal.browser.conftest import LAPTOP, PHONE, Login, Onboard, Screenshot, assert_fits, set_width

TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
# Every cell of a column whose content is wider than its box (clipped or scrolled), and every one that
# ends past the window.
CLIPPED = """selector => [...document.querySelectorAll(selector)]
    .filter(cell => cell.scrollWidth > cell.clientWidth
        || cell.getBoundingClientRect().right > window.innerWidth)
    .map(cell => cell.textContent.trim())"""
OpenFeed = Callable[..., None]


@pytest.fixture
def history(onboard: Onboard) -> str:
    """A tenant whose log holds a plan change, a key revoked with a reason and the longest target there is."""
    tenant_id = onboard(plan="STARTER", company_name="Audit Feed Ltd").profile.tenant_id
    subscription_change_plan(tenant_id=tenant_id, plan="PROFESSIONAL", actor="user:admin")
    key = api_key_create(tenant_id=tenant_id, name="ci", scopes=["tenant:read"], created_by="user:admin").row
    api_key_revoke(tenant_id=tenant_id, api_key_id=key.api_key_id, reason="leaked", revoked_by="apikey:k1")
    # The runs of a lost worker: their ids joined, up to the column's 200 characters, with no space.
    runs = ",".join(f"run_{uuid.uuid4().hex}" for _ in range(6))[:200]
    audit_record(
        action=AuditAction.RUN_LEASE_EXPIRED,
        actor="system:cleanup_orphaned_runs",
        tenant_id=tenant_id,
        target_type="run",
        target_id=runs,
        before={"state": "RUNNING"},
        after={"requeued": runs.split(","), "failed": []},
    )
    return tenant_id


@pytest.fixture
def open_feed(page: Page, superuser: User, login: Login, history: str) -> OpenFeed:
    """Open the history's audit log as a superuser at a width, with more filters if given."""

    def open_at(width: int, filters: str = "") -> None:
        login(page, superuser)
        set_width(page, width)
        page.goto(f"/admin/tenants_app/auditlogentry/?tenant_id__exact={history}{filters}")

    return open_at


@pytest.mark.parametrize("width", [LAPTOP, PHONE])
def test_it_shows_one_line_per_entry_with_its_target_whole(
    page: Page, open_feed: OpenFeed, screenshot: Screenshot, history: str, width: int
) -> None:
    open_feed(width)

    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(5)
    plan_change = rows.filter(has_text="subscription.plan_change")
    expect(plan_change.locator(".field-summary")).to_have_text(
        f"user:admin changed the plan of {history} from Starter to Professional"
    )
    expect(plan_change.locator(".field-action_label")).to_contain_text("Plan changed")
    expect(plan_change.locator(".field-when")).to_have_text(TIME)
    expect(rows.filter(has_text="api_key.revoke").locator(".field-summary")).to_contain_text(
        "(reason: leaked)"
    )
    targets = page.locator("#result_list td.field-target")
    for index in range(targets.count()):
        expect(targets.nth(index)).to_be_visible()
        expect(targets.nth(index)).to_contain_text(history)
    assert page.evaluate(CLIPPED, "#result_list td.field-target") == []
    assert page.evaluate(CLIPPED, "#result_list td.field-summary") == []
    assert_fits(page, width)
    screenshot(page, f"11-audit-log-{width}")


def test_it_filters_the_feed_by_choosing_an_action(page: Page, open_feed: OpenFeed, history: str) -> None:
    open_feed(LAPTOP)

    page.select_option("#audit-action", label="API key revoked (api_key.revoke)")
    page.locator("#audit-action-filter input[type=submit]").click()

    page.wait_for_url(re.compile(r"action__exact=api_key\.revoke"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".field-summary")).to_contain_text("apikey:k1 revoked API key")
    expect(page.locator("#audit-action")).to_have_value("api_key.revoke")
    # The tenant filter was kept.
    expect(page.locator("#filter-tenant_id__exact")).to_have_value(history)


@pytest.mark.parametrize("width", [LAPTOP, PHONE])
def test_it_shows_an_entry_with_what_changed_before_and_after(
    page: Page, open_feed: OpenFeed, screenshot: Screenshot, history: str, width: int
) -> None:
    open_feed(width, "&action__exact=subscription.plan_change")

    page.locator("#result_list tbody tr .field-when a").first.click()

    expect(page.locator("#audit-summary")).to_have_text(
        f"user:admin changed the plan of {history} from Starter to Professional"
    )
    expect(page.locator("#audit-target")).to_contain_text(history)
    plan = page.locator("#audit-diff tr.audit-diff-changed", has_text="plan_name")
    expect(plan.locator("td").nth(0)).to_have_text("Starter")
    expect(plan.locator("td").nth(1)).to_have_text("Professional")
    # Recorded by a service called outside any request: its source reads as the feed's filter names it.
    expect(page.locator(".audit-source")).to_have_text("Command")
    assert page.evaluate(CLIPPED, "#audit-diff td, #audit-diff th") == []
    assert_fits(page, width)
    screenshot(page, f"12-audit-entry-{width}")
