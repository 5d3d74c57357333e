"""Portal pages of one pipeline config: its schedule and run history, pause, resume and edit, each confirmed
(create, delete, run now, backfill and the run pages: pipeline_run_views.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from tenants_app.models import TenantPipelineConfig
from tenants_app.pipeline_templates import template_get
from tenants_app.portal.forms import add_service_errors
from tenants_app.portal.pages import actor_of, can_change, portal_page, writer_required
from tenants_app.portal.pipeline_forms import PREFIX, TemplateParametersForm, add_parameter_errors
from tenants_app.services.cron import cron_iter, cron_validate, timezone_validate
from tenants_app.services.errors import ServiceError
from tenants_app.services.pipelines import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    pipeline_config_get,
    pipeline_config_pause,
    pipeline_config_resume,
    pipeline_config_update,
    run_parameters_check,
)
from tenants_app.services.run_selectors import run_list

PREVIEW_SLOTS = 5
HISTORY_RUNS = 20


class ScheduleForm(forms.Form):
    schedule_cron = forms.CharField(
        label="Schedule (cron)",
        max_length=200,
        help_text="5 fields: minute hour day-of-month month day-of-week, e.g. 30 2 * * * (02:30 daily).",
    )
    timezone = forms.CharField(
        label="Time zone",
        max_length=64,
        help_text="IANA name, e.g. Europe/Berlin; the schedule is read in it.",
    )
    priority = forms.IntegerField(
        min_value=MIN_PRIORITY,
        max_value=MAX_PRIORITY,
        help_text=f"{MIN_PRIORITY} (most urgent) to {MAX_PRIORITY} (least urgent).",
    )


def _render(request: HttpRequest, template: str, *, status: int = 200, **extra: Any) -> TemplateResponse:
    context = {**admin.site.each_context(request), "can_change": can_change(request), **extra}
    return TemplateResponse(request, template, context, status=status)


def _config_url(config: TenantPipelineConfig) -> str:
    return reverse("admin:portal-pipeline-detail", args=[config.tenant_id, config.config_id])


def _preview(expression: str, zone: str, *, now: datetime) -> list[tuple[datetime, str]]:
    """The next slots as (UTC instant, local wall time with offset)."""
    slots = islice(cron_iter(expression=expression, timezone=zone, after=now), PREVIEW_SLOTS)
    return [(slot, slot.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z (%z)")) for slot in slots]


@portal_page
def pipeline_detail_view(request: HttpRequest, tenant_id: str, config_id: str) -> HttpResponse:
    """The config, its next slots in its own time zone, and the operations."""
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    upcoming: list[tuple[datetime, str]] = []
    if config.is_active:
        try:
            upcoming = _preview(config.schedule_cron, config.timezone or "UTC", now=timezone.now())
        except (ServiceError, ValueError, KeyError):
            upcoming = []  # a schedule from elsewhere that we cannot read: the page still shows the row
    history = run_list(tenant_id=tenant_id, config_id=config_id, limit=HISTORY_RUNS)
    return _render(
        request,
        "portal/pipeline_detail.html",
        title=f"Pipeline config {config.config_id}",
        tenant_id=tenant_id,
        config=config,
        upcoming=upcoming,
        history=history,
        history_more=_runs_list_url(tenant_id, config_id) if history.total > len(history.items) else None,
    )


def _runs_list_url(tenant_id: str, config_id: str) -> str:
    base = reverse("admin:tenants_app_tenantscheduledpipelinerun_changelist")
    return f"{base}?{urlencode({'tenant_id__exact': tenant_id, 'config_id__exact': config_id})}"


def _confirm_view(*, verb: str, intro: str, done: str, run: Any) -> Any:
    """A confirmation page (GET) and the operation (POST), for pause, resume and run now."""

    @writer_required
    def view(request: HttpRequest, tenant_id: str, config_id: str) -> HttpResponse:
        config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
        form = forms.Form(request.POST if request.method == "POST" else None)
        if request.method == "POST":
            try:
                message = run(request, config)
            except ServiceError as exc:
                if exc.status >= 500 or exc.status == 404:
                    raise
                add_service_errors(form, exc)
            else:
                messages.success(request, message or done.format(config_id=config_id))
                return HttpResponseRedirect(_config_url(config))
        return _render(
            request,
            "portal/pipeline_confirm.html",
            title=f"{verb.capitalize()} pipeline config {config_id}?",
            tenant_id=tenant_id,
            config=config,
            form=form,
            intro=intro,
            submit=f"Yes, {verb}",
            cancel_url=_config_url(config),
        )

    view.__name__ = f"pipeline_{verb.replace(' ', '_')}_view"
    return view


def _pause(request: HttpRequest, config: TenantPipelineConfig) -> str | None:
    if not config.is_active:
        return f"Pipeline config {config.config_id} was already paused."
    pipeline_config_pause(tenant_id=config.tenant_id, config_id=config.config_id, actor=actor_of(request))
    return None


def _resume(request: HttpRequest, config: TenantPipelineConfig) -> str | None:
    if config.is_active:
        return f"Pipeline config {config.config_id} was already active."
    resumed = pipeline_config_resume(
        tenant_id=config.tenant_id, config_id=config.config_id, actor=actor_of(request)
    )
    when = f"{resumed.next_run_time:%Y-%m-%d %H:%M} UTC" if resumed.next_run_time else "not computed"
    return f"Pipeline config {config.config_id} is active again; next run {when}."


pipeline_pause_view = _confirm_view(
    verb="pause",
    intro="Pausing stops scheduling new runs of this config. Runs already queued stay queued; resuming "
    "schedules again from the next slot, without running the slots missed while paused.",
    done="Pipeline config {config_id} was paused.",
    run=_pause,
)
pipeline_resume_view = _confirm_view(
    verb="resume",
    intro="Resuming schedules this config again from its next slot after now.",
    done="Pipeline config {config_id} was resumed.",
    run=_resume,
)


@writer_required
def pipeline_edit_view(request: HttpRequest, tenant_id: str, config_id: str) -> HttpResponse:
    """Change the schedule, time zone, priority or parameters: the next slots are shown before saving."""
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    initial = {
        "schedule_cron": config.schedule_cron,
        "timezone": config.timezone,
        "priority": config.priority,
    }
    data = request.POST if request.method == "POST" else None
    form = ScheduleForm(data, initial=initial)
    template = template_get(config.pipeline_template)
    # A config from before the catalogue keeps its parameters as they are: only its schedule is edited.
    parameters = (
        None
        if template is None
        else TemplateParametersForm(data, template=template, values=config.parameters)
    )
    preview: list[tuple[datetime, str]] = []
    confirming = False
    if request.method == "POST" and form.is_valid() and (parameters is None or parameters.is_valid()):
        values = form.cleaned_data
        # A form sent without the parameter fields (an older page, a script) leaves them as they are.
        sent = parameters is not None and any(name.startswith(PREFIX) for name in request.POST)
        changes = {"parameters": parameters.parameters() or None} if sent else {}
        try:
            if request.POST.get("action") == "save":
                pipeline_config_update(
                    tenant_id=tenant_id,
                    config_id=config_id,
                    actor=actor_of(request),
                    schedule_cron=values["schedule_cron"],
                    timezone_name=values["timezone"],
                    priority=values["priority"],
                    **changes,
                )
                messages.success(request, f"The schedule of {config_id} was saved.")
                return HttpResponseRedirect(_config_url(config))
            # First step: validate through the same rules and show what the schedule will do.
            expression = cron_validate(values["schedule_cron"])
            zone = timezone_validate(values["timezone"])
            if changes:
                run_parameters_check(config, changes["parameters"] or {})
            preview = _preview(expression, zone, now=datetime.now(UTC))
            confirming = True
        except ServiceError as exc:
            if exc.status >= 500 or exc.status == 404:
                raise
            add_parameter_errors([form] if parameters is None else [form, parameters], exc)
    return _render(
        request,
        "portal/pipeline_edit.html",
        title=f"Edit the schedule of {config_id}",
        tenant_id=tenant_id,
        config=config,
        form=form,
        parameters_form=parameters,
        preview=preview,
        confirming=confirming,
        cancel_url=_config_url(config),
    )
