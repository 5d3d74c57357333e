"""Every kind of portal page in one style, at a laptop's width (1366 px) and a phone's (390 px): one way
to write a time (to the second, with its zone), JSON as JSON, styled buttons only, the icon linked; the
tenant page, the dashboard and the onboarding wizard no wider than the phone, and the chart readable
there. Screenshots: artifacts/screenshots/NN-<page>-<width>.png."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.test import override_settings
from playwright.sync_api import Page, expect

from tenants_app.models import TenantDqResult, TenantPipelineRun, TenantStepLog
from tenants_app.portal.charts import FONT_SIZE
from tenants_app.repositories import tenant_repository
from tenants_app.services.pipelines import pipeline_config_create, pipeline_config_run_now
from tenants_app.services.webhooks import webhook_endpoint_create
from tests.portal.browser.conftest import LAPTOP, PHONE, Login, Onboard, Screenshot, set_width

# The one way a time is written (tenants_app/presentation.py); a schedule's local slots add the
# zone's offset.
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (UTC|[A-Z][A-Za-z0-9+-]{1,5} \([+-]\d{4}\))")
TIME_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{1,2}:\d{2}(:\d{2})?[^\n]{0,14}")
# What the old formats looked like: "Dec. 3, 2026, 4:04 p.m.", "3 Dec 2026".
OTHER_FORMATS = re.compile(r"\b[ap]\.m\.|\b(Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\b\.?")
# The header's log-out button and the theme toggle are Django's own links drawn as buttons.
BUTTONS = "#content button:visible, #content input[type=submit]:visible"
UNSTYLED = ("rgb(239, 239, 239)", "rgb(240, 240, 240)", "buttonface")
START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class World:
    tenant_id: str
    config_id: str
    run_id: str
    record_id: str
    endpoint_id: str


@pytest.fixture
def world(onboard: Onboard) -> Iterator[World]:
    """One tenant with a schedule, a queued run, a finished run's records, and a webhook endpoint."""
    tenant_id = onboard(plan="PROFESSIONAL", company_name="Presentation Analytics").profile.tenant_id
    config = pipeline_config_create(
        tenant_id=tenant_id,
        actor="user:setup",
        provider="GCP",
        domain="billing",
        pipeline_template="sql_transform",
        schedule_cron="30 2 * * *",
        timezone_name="Europe/Berlin",
        parameters={"source_table": "raw_costs", "destination_table": "daily_costs"},
        priority=4,
    )
    run = pipeline_config_run_now(tenant_id=tenant_id, config_id=config.config_id, actor="user:setup").run
    record_id = f"rec_{uuid.uuid4().hex[:8]}"
    _record_a_finished_run(tenant_id, record_id)
    with override_settings(WEBHOOK_ALLOW_LOCALHOST=True):
        endpoint = webhook_endpoint_create(
            tenant_id=tenant_id, url="http://localhost:9/hook", description="ops pager", created_by="test"
        ).endpoint
        yield World(tenant_id, config.config_id, run.run_id, record_id, endpoint.endpoint_id)


def _record_a_finished_run(tenant_id: str, record_id: str) -> None:
    tenant_repository(TenantPipelineRun, tenant_id).insert(
        TenantPipelineRun(
            pipeline_logging_id=record_id,
            tenant_id=tenant_id,
            pipeline_id="gcp_billing",
            status="SUCCEEDED",
            trigger_type="manual",
            start_time=START,
            end_time=START + timedelta(milliseconds=250_000),
            duration_ms=250_000,
            parameters={"region": "eu"},
        )
    )
    tenant_repository(TenantStepLog, tenant_id).insert(
        TenantStepLog(
            step_logging_id=f"{record_id}_0",
            tenant_id=tenant_id,
            pipeline_logging_id=record_id,
            step_name="load_costs",
            step_type="LOAD",
            step_index=0,
            status="SUCCEEDED",
            start_time=START,
            duration_ms=1_500,
        )
    )
    tenant_repository(TenantDqResult, tenant_id).insert(
        TenantDqResult(
            dq_result_id=f"{record_id}_dq",
            pipeline_logging_id=record_id,
            tenant_id=tenant_id,
            target_table="billing.daily_costs",
            dq_config_id="dq_not_null_costs",
            executed_at=START,
            expectations_passed=4,
            expectations_failed=0,
            overall_status="PASS",
            ingestion_date=date(2026, 3, 1),
        )
    )


def pages(world: World) -> list[tuple[str, str]]:
    """(name, path) of every page kind that a plain visit reaches; the wizard's steps come from its form."""
    tenant = f"/admin/tenants/{world.tenant_id}/"
    runs = "/admin/tenants_app/tenantpipelinerun/"
    in_dataset = f"?tenant_id={world.tenant_id}"
    return [
        ("index", "/admin/"),
        ("tenant-list", "/admin/tenants_app/tenantprofile/"),
        ("tenant-detail", tenant),
        ("plan-change", f"{tenant}plan/"),
        ("limits", f"{tenant}limits/"),
        ("key-create", f"{tenant}keys/new/"),
        ("dashboard", "/admin/dashboard/"),
        ("usage-trend", f"/admin/dashboard/{world.tenant_id}/"),
        ("pipelines-list", f"/admin/tenants_app/tenantpipelineconfig/?tenant_id__exact={world.tenant_id}"),
        ("pipeline-detail", f"{tenant}pipelines/{world.config_id}/"),
        ("pipeline-form", f"{tenant}pipelines/new/?template=sql_transform"),
        ("pipeline-edit", f"{tenant}pipelines/{world.config_id}/edit/"),
        ("run-detail", f"{tenant}runs/{world.run_id}/"),
        ("webhooks", f"{tenant}webhooks/"),
        ("webhook-detail", f"{tenant}webhooks/{world.endpoint_id}/"),
        ("table-page", f"{runs}{in_dataset}"),
        ("table-row", f"{runs}{quote(world.record_id)}/change/{in_dataset}"),
    ]


# Pages a phone must show whole: no horizontal scrolling of the page itself.
PHONE_READY = {
    "tenant-detail",
    "dashboard",
    "usage-trend",
    "wizard-1-details",
    "wizard-2-check",
    "wizard-3-key-once",
}
# The pages that draw the usage chart, and where.
CHARTS = {"tenant-detail": "#tenant-trend svg", "usage-trend": "#trend-chart svg"}


def check_presentation(page: Page, name: str, width: int) -> list[str]:
    """What is wrong with the page as shown, as readable problems (empty when nothing is)."""
    problems = []
    text = page.locator("body").inner_text()
    for match in TIME_LIKE.finditer(text):
        if not TIMESTAMP.match(match.group()):
            problems.append(f"a time written another way: {match.group()!r}")
    problems += [f"an old date format: {m.group()!r}" for m in OTHER_FORMATS.finditer(text)]
    if "{'" in text:
        problems.append("a Python repr of a dict")
    if page.locator('head link[rel="icon"]').count() != 1:
        problems.append("no icon link")
    for background in page.eval_on_selector_all(
        BUTTONS, "buttons => buttons.map(b => getComputedStyle(b).backgroundColor)"
    ):
        if background in UNSTYLED:
            problems.append(f"a native unstyled button ({background})")
    if width == PHONE and name in PHONE_READY:
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        if scroll_width > PHONE:
            problems.append(f"{scroll_width} px wide on a {PHONE} px phone")
    return [f"{name} at {width}: {problem}" for problem in problems]


def chart_font_px(page: Page, selector: str) -> float:
    """The chart's text size as drawn: its font size in SVG units scaled by how wide the SVG is drawn."""
    scale = page.eval_on_selector(
        selector, "svg => svg.getBoundingClientRect().width / svg.viewBox.baseVal.width"
    )
    return scale * FONT_SIZE


def test_it_shows_every_page_kind_in_one_style_on_a_laptop_and_a_phone(
    page: Page, superuser: User, login: Login, world: World, screenshot: Screenshot
) -> None:
    login(page, superuser)
    problems: list[str] = []

    def visit(number: int, name: str, width: int) -> None:
        problems.extend(check_presentation(page, name, width))
        screenshot(page, f"{number:02d}-{name}-{width}")

    for width in (LAPTOP, PHONE):
        set_width(page, width)
        for number, (name, path) in enumerate(pages(world), start=60):
            response = page.goto(path)
            assert response is not None
            assert response.status == 200, f"{name}: {path}"
            visit(number, name, width)
            if name == "tenant-detail":
                expect(page.locator(f"#run-{world.record_id} summary")).to_contain_text("4 min 10 s")
            if name in CHARTS and width == PHONE:
                assert chart_font_px(page, CHARTS[name]) >= 10, (
                    f"{name}: the chart's text is too small on a phone"
                )
        # The plan change's confirmation: a form that once had both Back and Cancel.
        page.goto(f"/admin/tenants/{world.tenant_id}/plan/")
        page.select_option("#id_plan", "SCALE")
        page.get_by_role("button", name="Show the new limits").click()
        expect(page.locator("#plan-change-preview")).to_be_visible()
        expect(page.locator("#content-main .submit-row").get_by_role("button")).to_have_count(1)
        visit(77, "plan-confirm", width)
        onboard_through_the_wizard(page, lambda name, at=width: visit(80 + WIZARD.index(name), name, at))

    assert problems == []


WIZARD = ("wizard-1-details", "wizard-2-check", "wizard-3-key-once")


def onboard_through_the_wizard(page: Page, visit: Callable[[str], None]) -> None:
    tenant_id = f"bp_{uuid.uuid4().hex[:10]}"
    page.goto("/admin/tenants/onboard/")
    page.fill("#id_tenant_id", tenant_id)
    page.fill("#id_company_name", "Wizard Presentation Ltd")
    page.fill("#id_admin_email", "ops@wizard.example.com")
    page.select_option("#id_plan", "STARTER")
    visit(WIZARD[0])
    page.get_by_role("button", name="Check").click()
    expect(page.locator(".portal-check-ok")).to_contain_text("Check passed")
    visit(WIZARD[1])
    page.get_by_role("button", name=f"Onboard {tenant_id}").click()
    expect(page.locator("#issued-api-key")).to_be_visible()
    visit(WIZARD[2])
