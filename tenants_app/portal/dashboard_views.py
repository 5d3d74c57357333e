"""Quota dashboard pages: every tenant's usage today against its limits, and one tenant's 30-day trend.

Read-only pages: any active staff member may see them (`site.admin_view` checks login and staff).
Each costs a constant number of BigQuery jobs: two for the dashboard, one for a trend.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from tenants_app.api.permissions import is_read_only_staff
from tenants_app.models import PlanName
from tenants_app.portal.charts import pressure_bar_svg, usage_trend_svg
from tenants_app.portal.pages import isolated_text
from tenants_app.services.dashboard import (
    TenantQuota,
    quota_dashboard,
    scheduler_status,
    usage_trend,
)
from tenants_app.services.errors import DoesNotExist, ServiceUnavailable, ValidationFailed
from tenants_app.services.quota_rules import WARNING_PERCENT

logger = logging.getLogger(__name__)

PER_PAGE = 50
EARLIEST_DAY = date(2000, 1, 1)
BAR_WIDTH = 72  # px: three bars per row must fit beside the figures in the admin's content column
TREND_PERIODS = (7, 30, 90)
DEFAULT_TREND_DAYS = 30


class DashboardFilterForm(forms.Form):
    """The dashboard's query string: plan, flagged only, day, page (1-based, as Django's admin lists)."""

    plan = forms.ChoiceField(choices=[("", "All plans"), *PlanName.choices], required=False)
    flagged = forms.BooleanField(required=False, label="Flagged only")
    day = forms.DateField(required=False, input_formats=["%Y-%m-%d"], label="Day (YYYY-MM-DD, UTC)")
    p = forms.IntegerField(min_value=1, max_value=1_000_000, required=False, label="Page")

    def clean_day(self) -> date | None:
        day = self.cleaned_data["day"]
        if day is not None and day > _today():
            raise forms.ValidationError("That day has not come yet (days are UTC).")
        if day is not None and day < EARLIEST_DAY:
            # Nothing is older than the product, and date.min has no previous day to link to.
            raise forms.ValidationError(f"Choose a day from {EARLIEST_DAY.isoformat()} on.")
        return day


class TrendFilterForm(forms.Form):
    days = forms.TypedChoiceField(
        choices=[(str(days), f"{days} days") for days in TREND_PERIODS], coerce=int, required=False
    )


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """All tenants sorted by pressure, flagged from 80%, with totals by plan; paged in BigQuery."""
    form = DashboardFilterForm(request.GET)
    if not form.is_valid():
        return _render(request, "portal/dashboard.html", status=400, form=form, title="Quota dashboard")
    plan = form.cleaned_data["plan"] or None
    flagged_only = form.cleaned_data["flagged"]
    day = form.cleaned_data["day"]
    page = form.cleaned_data["p"] or 1
    try:
        board = quota_dashboard(
            day=day, plan=plan, flagged_only=flagged_only, limit=PER_PAGE, offset=(page - 1) * PER_PAGE
        )
        scheduler = scheduler_status()  # one job at most, shared by every visitor for a few seconds
    except ValidationFailed as exc:
        for field, reasons in exc.errors.items():
            form.add_error(field if field in form.fields else None, reasons)
        return _render(request, "portal/dashboard.html", status=400, form=form, title="Quota dashboard")
    except ServiceUnavailable:
        return _unavailable(request, "Quota dashboard")
    pages = max(1, -(-board.total // PER_PAGE))
    if page > pages:
        there = "is 1 page" if pages == 1 else f"are {pages} pages"
        form.add_error("p", f"Page {page} does not exist: there {there}.")
        return _render(request, "portal/dashboard.html", status=400, form=form, title="Quota dashboard")
    # Links keep the other filters; a day is kept only when it is not today (the default).
    today = _today()
    filters = {
        "plan": plan or "",
        "flagged": "1" if flagged_only else "",
        "day": board.day.isoformat() if board.day != today else "",
    }
    return _render(
        request,
        "portal/dashboard.html",
        form=form,
        title="Quota dashboard",
        board=board,
        scheduler=scheduler,
        median_duration_ms=_milliseconds(scheduler.median_duration if scheduler else None),
        rows=[_row_context(row) for row in board.rows],
        plans=[*board.plans, board.overall] if board.plans else [],
        threshold_percent=WARNING_PERCENT,
        page=page,
        pages=pages,
        page_links=_page_links(page, pages, filters),
        first_shown=board.offset + 1 if board.rows else 0,
        last_shown=board.offset + len(board.rows),
        plan_links=_plan_links(plan, filters),
        flagged_link=_query({**filters, "flagged": "" if flagged_only else "1"}),
        day_links=_day_links(board.day, today, filters),
        day_word="today" if board.day == today else "that day",
        # Read-only staff would only get a 403 there.
        onboard_url=None
        if is_read_only_staff(request.user)
        else _optional_url("admin:portal-tenant-onboard"),
    )


def tenant_usage_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """One tenant's runs per day over 30 days (or 7 or 90), as a chart and a table."""
    form = TrendFilterForm(request.GET)
    days = (form.cleaned_data["days"] or DEFAULT_TREND_DAYS) if form.is_valid() else None
    if days is None:
        return _render(
            request,
            "portal/dashboard_trend.html",
            status=400,
            form=form,
            title="Usage trend",
            tenant_id=tenant_id,
        )
    try:
        trend = usage_trend(tenant_id=tenant_id, days=days)
    except DoesNotExist:
        return _render(
            request,
            "portal/dashboard_trend.html",
            status=404,
            title="Usage trend",
            tenant_id=tenant_id,
            missing=True,
        )
    except ServiceUnavailable:
        return _unavailable(request, "Usage trend")
    # An SVG <title> has no <bdi>: a stored bidi control in the name must not reorder the id after it.
    company = isolated_text(trend.company_name)
    chart = usage_trend_svg(
        days=[day.day for day in trend.days],
        runs=[day.runs for day in trend.days],
        daily_limit=trend.daily_limit,
        title=f"{company} ({trend.tenant_id}): pipeline runs per day, last {days} days",
    )
    return _render(
        request,
        "portal/dashboard_trend.html",
        title=f"Usage trend: {trend.tenant_id}",
        tenant_id=tenant_id,
        trend=trend,
        chart=chart,
        days=days,
        period_links=[
            (period, f"?{urlencode({'days': period})}", period == days) for period in TREND_PERIODS
        ],
        table_days=list(reversed(trend.days)),
        threshold_percent=WARNING_PERCENT,
        detail_url=_optional_url("admin:portal-tenant-detail", tenant_id),
        audit_url=_list_url("admin:tenants_app_auditlogentry_changelist", tenant_id),
        usage_list_url=_list_url("admin:tenants_app_tenantusagequota_changelist", tenant_id),
    )


# --- helpers ----------------------------------------------------------------------------------------
def _render(request: HttpRequest, template: str, *, status: int = 200, **extra: Any) -> TemplateResponse:
    context = {**admin.site.each_context(request), **extra}
    return TemplateResponse(request, template, context, status=status)


def _unavailable(request: HttpRequest, title: str) -> HttpResponse:
    response = _render(request, "portal/dashboard_unavailable.html", status=503, title=title)
    response["Retry-After"] = "5"
    return response


def _row_context(row: TenantQuota) -> dict[str, Any]:
    """A table row: the figures, a pressure bar per limit, and where the tenant's pages are."""
    return {
        "quota": row,
        "pressure_percent": round(row.pressure * 100),
        "bars": {
            name: pressure_bar_svg(
                ratio=ratio, label=f"{used} of {limit if limit else 'no limit'} ({name})", width=BAR_WIDTH
            )
            for name, ratio, used, limit in (
                ("daily", row.daily_ratio, row.runs_today, row.daily_limit),
                ("monthly", row.monthly_ratio, row.runs_month, row.monthly_limit),
                ("concurrent", row.concurrent_ratio, row.concurrent, row.concurrent_limit),
            )
        },
        "detail_url": _optional_url("admin:portal-tenant-detail", row.tenant_id),
        "usage_url": reverse("admin:portal-tenant-usage", args=[row.tenant_id]),
    }


def _page_links(page: int, pages: int, filters: dict[str, str]) -> list[tuple[str, str | None, bool]]:
    """(label, link or None for a gap, is current) for the first, last and nearby pages."""
    shown = sorted({1, pages, *range(max(1, page - 2), min(pages, page + 2) + 1)})
    links: list[tuple[str, str | None, bool]] = []
    previous = 0
    for number in shown:
        if number - previous > 1:
            links.append(("…", None, False))
        links.append((str(number), _query({**filters, "p": str(number)}), number == page))
        previous = number
    return links


def _plan_links(plan: str | None, filters: dict[str, str]) -> list[tuple[str, str, bool]]:
    return [
        ("All plans", _query({**filters, "plan": ""}), plan is None),
        *((label, _query({**filters, "plan": value}), plan == value) for value, label in PlanName.choices),
    ]


def _day_links(day: date, today: date, filters: dict[str, str]) -> list[tuple[str, str]]:
    """Previous day, next day (never past today) and today, keeping the other filters."""
    links = [("← Previous day", _query({**filters, "day": (day - timedelta(days=1)).isoformat()}))]
    if day < today:
        following = day + timedelta(days=1)
        links.append(
            ("Next day →", _query({**filters, "day": "" if following == today else following.isoformat()}))
        )
        links.append(("Today", _query({**filters, "day": ""})))
    return links


def _milliseconds(value: timedelta | None) -> int | None:
    # The `duration` filter reads milliseconds, as every run's duration_ms is stored.
    return None if value is None else round(value.total_seconds() * 1000)


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _query(values: dict[str, str]) -> str:
    # Empty filters and page 1 are the defaults: leave them out of the link.
    kept = {name: value for name, value in values.items() if value and not (name == "p" and value == "1")}
    return f"?{urlencode(kept)}" if kept else "?"


def _optional_url(name: str, *args: str) -> str | None:
    """A page another part of the portal provides, if it is installed."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _list_url(name: str, tenant_id: str) -> str | None:
    url = _optional_url(name)
    return None if url is None else f"{url}?{urlencode({'tenant_id': tenant_id})}"
