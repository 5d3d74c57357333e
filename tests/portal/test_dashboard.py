"""The quota dashboard and trend pages through Django's test client, on the emulator."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import (
    PlanName,
    SubscriptionStatus,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantStatus,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.portal.dashboard_views import PER_PAGE
from tenants_app.repositories import central_repository
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.plans import PLANS

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"
ROW = re.compile(r'<tr class="row[12]( flagged)?" data-tenant="([^"]+)"')


@pytest.fixture
def board(central_dataset: str) -> str:
    """A fresh central dataset: the dashboard lists every tenant in it."""
    bigquery_bootstrap()
    return central_dataset


def seed(
    tenants: list[tuple[str, str, int]], *, company: str | None = None, days_ago: int = 0, running: int = 0
) -> None:
    """(tenant id, plan, runs that day) each, with a subscription and a usage row: three statements."""
    now = timezone.now()
    today = now.astimezone(UTC).date() - timedelta(days=days_ago)
    profiles, subscriptions, usage = [], [], []
    for tenant_id, plan, runs in tenants:
        limits = PLANS[plan]
        profiles.append(
            TenantProfile(
                tenant_id=tenant_id,
                company_name=company or f"{tenant_id} Ltd",
                admin_email="ops@example.com",
                tenant_dataset_id=tenant_id,
                status=TenantStatus.ACTIVE,
                subscription_plan=plan,
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
        subscriptions.append(
            TenantSubscription(
                subscription_id=f"sub_{uuid.uuid4().hex}",
                tenant_id=tenant_id,
                plan_name=plan,
                status=SubscriptionStatus.ACTIVE,
                daily_limit=limits.daily_limit,
                monthly_limit=limits.monthly_limit,
                concurrent_limit=limits.concurrent_limit,
                created_at=now - timedelta(days=1),
            )
        )
        if runs is not None:
            usage.append(
                TenantUsageQuota(
                    usage_id=f"{tenant_id}_{today:%Y%m%d}",
                    tenant_id=tenant_id,
                    usage_date=today,
                    pipelines_run_today=runs,
                    pipelines_run_month=runs,
                    concurrent_pipelines_running=running,
                    daily_limit=limits.daily_limit,
                    monthly_limit=limits.monthly_limit,
                    concurrent_limit=limits.concurrent_limit,
                    last_updated=now,
                    created_at=now,
                )
            )
    central_repository(TenantProfile).insert(*profiles)
    central_repository(TenantSubscription).insert(*subscriptions)
    if usage:
        central_repository(TenantUsageQuota).insert(*usage)


def rows(html: str) -> list[tuple[str, bool]]:
    """(tenant id, flagged) of each tenant row, in page order."""
    return [(tenant_id, bool(flagged)) for flagged, tenant_id in ROW.findall(html)]


def test_it_lists_tenants_by_pressure_flags_those_at_80_percent_and_totals_by_plan(
    board: str, superuser_client: Client
) -> None:
    seed([("calm", PlanName.STARTER, 1), ("busy", PlanName.STARTER, 5), ("full", PlanName.SCALE, 100)])

    response = superuser_client.get(DASHBOARD)

    assert response.status_code == 200
    html = response.content.decode()
    assert rows(html) == [("full", True), ("busy", True), ("calm", False)]
    assert html.count('class="pressure-bar"') == 9  # daily, monthly and running, per tenant
    assert "5 / 6" in html
    assert "100 / 100" in html
    assert reverse("admin:portal-tenant-usage", args=["busy"]) in html
    assert 'data-plan="STARTER"' in html
    assert 'data-plan="all"' in html
    totals = re.search(r'data-plan="STARTER">(.*?)</tr>', html, re.S).group(1)
    assert "6 / 12" in totals  # runs today of the summed daily limits
    assert "Tenants 1\N{EN DASH}3 of 3" in html


def test_it_flags_a_full_concurrent_limit_only_while_runs_wait(board: str, superuser_client: Client) -> None:
    # Two STARTER tenants each running their one allowed run; only one has a run waiting behind it.
    seed([("alone", PlanName.STARTER, 1), ("held_back", PlanName.STARTER, 1)], running=1)
    central_repository(TenantPipelineExecutionQueue).insert(
        TenantPipelineExecutionQueue(
            run_id="held_back_next",
            tenant_id="held_back",
            pipeline_id="sql_transform",
            state="QUEUED",
            scheduled_time=timezone.now(),
        )
    )

    html = superuser_client.get(DASHBOARD).content.decode()

    assert rows(html) == [("held_back", True), ("alone", False)]
    held_back = re.search(r'data-tenant="held_back">(.*?)</tr>', html, re.S).group(1)
    assert "1 waiting" in held_back
    assert "concurrent limit, runs waiting" in held_back
    assert "waiting" not in re.search(r'data-tenant="alone">(.*?)</tr>', html, re.S).group(1)


def test_it_links_each_tenant_to_its_detail_page_when_the_portal_has_one(
    board: str, superuser_client: Client
) -> None:
    seed([("linked", PlanName.STARTER, 0)])

    html = superuser_client.get(DASHBOARD).content.decode()

    assert f'href="{reverse("admin:portal-tenant-detail", args=["linked"])}"' in html
    assert f'href="{reverse("admin:portal-tenant-onboard")}"' in html


def test_it_filters_by_plan_and_flag_and_pages(board: str, superuser_client: Client) -> None:
    seed(
        [(f"s_{i:03d}", PlanName.STARTER, i % 7) for i in range(PER_PAGE + 3)]
        + [("pro", PlanName.PROFESSIONAL, 1)]
    )

    first = superuser_client.get(DASHBOARD, {"plan": "STARTER"}).content.decode()
    second = superuser_client.get(DASHBOARD, {"plan": "STARTER", "p": 2}).content.decode()
    flagged = superuser_client.get(DASHBOARD, {"flagged": "1"}).content.decode()
    professional = superuser_client.get(DASHBOARD, {"plan": "PROFESSIONAL"}).content.decode()

    assert len(rows(first)) == PER_PAGE
    assert len(rows(second)) == 3
    assert {tenant for tenant, _ in rows(first)}.isdisjoint(tenant for tenant, _ in rows(second))
    assert "pro" not in {tenant for tenant, _ in rows(first) + rows(second)}
    assert f"Tenants {PER_PAGE + 1}\N{EN DASH}{PER_PAGE + 3} of {PER_PAGE + 3}" in second
    assert "?plan=STARTER&amp;p=2" in first
    assert all(flag for _, flag in rows(flagged))  # 5 and 6 runs of 6
    assert len(rows(flagged)) == len([i for i in range(PER_PAGE + 3) if i % 7 >= 5])
    assert rows(professional) == [("pro", False)]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"plan": "GOLD"}, "plan"),
        ({"p": "0"}, "p"),
        ({"p": "x"}, "p"),
        ({"p": "9"}, "Page 9 does not exist: there is 1 page."),
    ],
)
def test_it_answers_a_bad_query_with_a_400_naming_it(
    board: str, superuser_client: Client, query: dict, message: str
) -> None:
    seed([("only", PlanName.STARTER, 0)])

    response = superuser_client.get(DASHBOARD, query)

    assert response.status_code == 400
    assert "errornote" in response.content.decode()
    assert message in response.content.decode()


@pytest.mark.parametrize("tenants", [3, 30])
def test_it_costs_two_bigquery_jobs_whatever_the_number_of_tenants(
    board: str, superuser_client: Client, gateway: BigQueryGateway, tenants: int
) -> None:
    seed([(f"t_{i:03d}", PlanName.STARTER, i % 7) for i in range(tenants)])

    with gateway.count_jobs() as counter:
        response = superuser_client.get(DASHBOARD)
    with gateway.count_jobs() as again:
        superuser_client.get(DASHBOARD)

    assert response.status_code == 200
    assert len(rows(response.content.decode())) == tenants
    # The scheduler's status is one more job, then shared from the cache for a few seconds.
    assert (counter.jobs, again.jobs) == (3, 2)


def test_it_shows_the_scheduler_status(board: str, superuser_client: Client) -> None:
    central_repository(TenantPipelineExecutionQueue).insert(
        *(
            TenantPipelineExecutionQueue(
                run_id=f"r_{state}_{i}",
                tenant_id="t_sched",
                pipeline_id="sql_transform",
                state=state,
                scheduled_time=timezone.now() - timedelta(minutes=1),
            )
            for state, count in (("QUEUED", 3), ("RUNNING", 2))
            for i in range(count)
        )
    )

    html = superuser_client.get(DASHBOARD).content.decode()

    status = re.search(r'<div class="quota-summary" id="scheduler-status".*?</div>\n</div>', html, re.S)
    assert status is not None
    text = re.sub(r"<[^>]+>", " ", status.group(0))
    assert re.search(r"0\s+schedules due now", text)
    assert re.search(r"3\s+runs queued", text)
    assert re.search(r"2\s+runs running", text)
    assert re.search(r"0\s+failed today", text)
    assert "median duration of the 0 runs ended today" in " ".join(text.split())


def test_it_lets_read_only_staff_see_both_pages_and_sends_others_to_the_login(
    board: str, read_only_client: Client, non_staff_client: Client, anonymous_client: Client
) -> None:
    seed([("watched", PlanName.STARTER, 2)])
    trend = reverse("admin:portal-tenant-usage", args=["watched"])

    seen = read_only_client.get(DASHBOARD)
    assert seen.status_code == 200
    assert "watched" in seen.content.decode()
    assert reverse("admin:portal-tenant-onboard") not in seen.content.decode()  # it would answer 403
    assert read_only_client.get(trend).status_code == 200
    for client in (non_staff_client, anonymous_client):
        for url in (DASHBOARD, trend):
            response = client.get(url)
            assert response.status_code == 302
            assert response["Location"].startswith(reverse("admin:login"))


def test_it_escapes_tenant_text(board: str, superuser_client: Client) -> None:
    seed([("xss", PlanName.STARTER, 1)], company='<script>alert("x")</script>')

    html = superuser_client.get(DASHBOARD).content.decode()
    trend = superuser_client.get(reverse("admin:portal-tenant-usage", args=["xss"])).content.decode()

    assert "<script>alert" not in html
    assert "<script>alert" not in trend
    assert "&lt;script&gt;" in html


def test_it_says_bigquery_is_unavailable_with_a_503(central_dataset: str, superuser_client: Client) -> None:
    # Not bootstrapped: the tables are missing, which the services report as "not ready".
    response = superuser_client.get(DASHBOARD)

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "cannot be reached" in response.content.decode()


def test_it_shows_another_day_and_refuses_one_to_come(board: str, superuser_client: Client) -> None:
    seed([("yesterday_busy", PlanName.STARTER, 6)], days_ago=1)
    yesterday = (timezone.now().astimezone(UTC).date() - timedelta(days=1)).isoformat()

    today = superuser_client.get(DASHBOARD).content.decode()
    then = superuser_client.get(DASHBOARD, {"day": yesterday}).content.decode()
    future = superuser_client.get(DASHBOARD, {"day": "2999-01-01"})

    assert rows(today) == [("yesterday_busy", False)]  # no run today; at most 6 of 180 this month
    assert "0 / 6" in today
    assert rows(then) == [("yesterday_busy", True)]
    assert "6 / 6" in then
    assert "Runs that day" in then
    assert "Next day" in then
    assert "Next day" not in today
    assert future.status_code == 400
    assert "not come yet" in future.content.decode()


def test_it_refuses_a_day_before_the_earliest_with_a_400_not_a_500(
    board: str, superuser_client: Client
) -> None:
    # date.min has no previous day: its "Previous day" link used to raise OverflowError.
    response = superuser_client.get(DASHBOARD, {"day": "0001-01-01"})

    assert response.status_code == 400
    assert "2000-01-01" in response.content.decode()


def test_it_isolates_a_stored_company_name_in_the_charts_title(board: str, superuser_client: Client) -> None:
    # Stored before bidi controls were refused; an SVG <title> has no <bdi>, so the characters isolate it.
    seed([("bidi", PlanName.STARTER, 1)], company="Acme \u202eevil")

    trend = superuser_client.get(reverse("admin:portal-tenant-usage", args=["bidi"])).content.decode()

    [title] = re.findall(r'<title id="trend-title">(.*?)</title>', trend, re.S)
    assert title == "\u2068Acme \u202eevil\u2069 (bidi): pipeline runs per day, last 30 days"


# --- trend ------------------------------------------------------------------------------------------
def test_it_shows_a_tenants_30_day_chart_and_table_in_one_job(
    board: str, superuser_client: Client, gateway: BigQueryGateway
) -> None:
    seed([("trendy", PlanName.STARTER, 5)])
    url = reverse("admin:portal-tenant-usage", args=["trendy"])

    with gateway.count_jobs() as counter:
        response = superuser_client.get(url)

    assert response.status_code == 200
    assert counter.jobs == 1
    html = response.content.decode()
    assert html.count('class="bar"') == 30
    assert 'data-runs="5"' in html
    assert 'class="limit-line"' in html
    assert "<desc" in html
    assert html.count('<td class="num">') >= 30 * 5
    week = superuser_client.get(url, {"days": 7}).content.decode()
    assert week.count('class="bar"') == 7


def test_it_answers_an_unknown_tenant_with_a_404_and_a_bad_period_with_a_400(
    board: str, superuser_client: Client
) -> None:
    seed([("known", PlanName.STARTER, 0)])

    missing = superuser_client.get(reverse("admin:portal-tenant-usage", args=["nobody_here"]))
    bad = superuser_client.get(reverse("admin:portal-tenant-usage", args=["known"]), {"days": "5"})

    assert missing.status_code == 404
    assert "There is no tenant nobody_here" in missing.content.decode()
    assert bad.status_code == 400


# --- index ------------------------------------------------------------------------------------------
def test_it_puts_a_portal_module_with_the_dashboard_first_on_the_admin_index(
    board: str, read_only_client: Client, superuser_client: Client
) -> None:
    html = read_only_client.get(reverse("admin:index")).content.decode()
    writer_html = superuser_client.get(reverse("admin:index")).content.decode()

    # Before every app of the app list.
    assert html.index('id="portal-module"') < html.index('class="app-tenants_app module')
    assert f'href="{DASHBOARD}"' in html
    for name in ("admin:tenants_app_tenantprofile_changelist", "admin:tenants_app_auditlogentry_changelist"):
        assert f'href="{reverse(name)}"' in html
    # The wizard answers read-only staff with a 403, so only writers are offered it.
    onboard = f'href="{reverse("admin:portal-tenant-onboard")}"'
    assert onboard not in html
    assert onboard in writer_html
