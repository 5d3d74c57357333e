"""Portal pipeline operations that make or move runs, and schedules made or removed: create a schedule
with its template's parameters as fields, delete it, run now with overrides, backfill a date range; a
run's page with its step logs and DQ results, cancel and requeue. Thin: the services decide."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from tenants_app.models import RunState, TenantPipelineConfig
from tenants_app.pipeline_templates import template_get, template_list
from tenants_app.portal.pages import actor_of, can_change, portal_page, writer_required
from tenants_app.portal.pipeline_forms import (
    BackfillForm,
    ConfirmForm,
    RunCancelForm,
    ScheduleCreateForm,
    TemplateParametersForm,
    add_parameter_errors,
)
from tenants_app.services.errors import ServiceError
from tenants_app.services.pipeline_backfill import (
    MAX_BACKFILL_DAYS,
    MAX_BACKFILL_RUNS,
    pipeline_config_backfill,
)
from tenants_app.services.pipelines import (
    pipeline_config_create,
    pipeline_config_delete,
    pipeline_config_get,
    pipeline_config_run_now,
)
from tenants_app.services.run_actions import run_cancel, run_requeue
from tenants_app.services.run_selectors import run_get


def config_url(config: TenantPipelineConfig) -> str:
    return reverse("admin:portal-pipeline-detail", args=[config.tenant_id, config.config_id])


def run_url(tenant_id: str, run_id: str) -> str:
    return reverse("admin:portal-run-detail", args=[tenant_id, run_id])


def _render(request: HttpRequest, template: str, *, status: int = 200, **extra: Any) -> TemplateResponse:
    context = {**admin.site.each_context(request), "can_change": can_change(request), **extra}
    return TemplateResponse(request, template, context, status=status)


def _form_page(
    request: HttpRequest, *, forms_: list[forms.Form], status: int = 200, **extra: Any
) -> HttpResponse:
    if any(form.errors for form in forms_):
        status = 400  # the page names each field and why
    return _render(request, "portal/pipeline_form.html", status=status, forms=forms_, **extra)


def _refused(exc: ServiceError) -> bool:
    """A refusal the form shows inline; a missing row (404) or an outage (503) goes to portal_page."""
    return exc.status < 500 and exc.status != 404


# --- schedules ----------------------------------------------------------------------------------------
@writer_required
def pipeline_create_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """First the template (?template=), then the schedule and that template's parameters as fields."""
    title = f"New pipeline schedule for {tenant_id}"
    cancel = reverse("admin:portal-tenant-detail", args=[tenant_id])
    template = template_get(request.GET.get("template", ""))
    if template is None:
        here = reverse("admin:portal-pipeline-create", args=[tenant_id])
        links = [
            (t.name, t.title, t.description, f"{here}?{urlencode({'template': t.name})}")
            for t in template_list()
        ]
        return _render(
            request, "portal/pipeline_form.html", title=title, tenant_id=tenant_id, template_links=links
        )
    data = request.POST if request.method == "POST" else None
    schedule = ScheduleCreateForm(data)
    parameters = TemplateParametersForm(data, template=template)
    parameters.legend = f"Parameters of {template.title} ({template.name})"  # type: ignore[attr-defined]
    if request.method == "POST" and schedule.is_valid() and parameters.is_valid():
        values = schedule.cleaned_data
        try:
            config = pipeline_config_create(
                tenant_id=tenant_id,
                provider=values["provider"],
                domain=values["domain"],
                pipeline_template=template.name,
                schedule_cron=values["schedule_cron"],
                timezone_name=values["timezone"],
                parameters=parameters.parameters() or None,
                priority=values["priority"],
                is_active=values["is_active"],
                actor=actor_of(request),
            )
        except ServiceError as exc:
            if not _refused(exc):
                raise
            add_parameter_errors([schedule, parameters], exc)
        else:
            messages.success(request, f"Pipeline schedule {config.config_id} was created.")
            return HttpResponseRedirect(config_url(config))
    return _form_page(
        request,
        forms_=[schedule, parameters],
        title=title,
        tenant_id=tenant_id,
        intro=template.description,
        submit="Create schedule",
        cancel_url=cancel,
    )


@writer_required
def pipeline_delete_view(request: HttpRequest, tenant_id: str, config_id: str) -> HttpResponse:
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        pipeline_config_delete(tenant_id=tenant_id, config_id=config_id, actor=actor_of(request))
        messages.success(request, f"Pipeline schedule {config_id} was deleted.")
        return HttpResponseRedirect(reverse("admin:portal-tenant-detail", args=[tenant_id]))
    return _form_page(
        request,
        forms_=[form],
        title=f"Delete pipeline schedule {config_id}?",
        tenant_id=tenant_id,
        config=config,
        intro="Deleting stops its runs from being scheduled. Runs already queued are not cancelled; "
        "the runs it made stay listed.",
        submit="Yes, delete",
        cancel_url=config_url(config),
    )


# --- runs of a schedule -------------------------------------------------------------------------------
@writer_required
def pipeline_run_now_view(request: HttpRequest, tenant_id: str, config_id: str) -> HttpResponse:
    """One run for this minute; filled fields replace the config's parameters for this run only."""
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    data = request.POST if request.method == "POST" else None
    template = template_get(config.pipeline_template)
    overrides = TemplateParametersForm(data, template=template) if template else forms.Form(data)
    overrides.legend = "Parameter overrides (empty: the schedule's value)"  # type: ignore[attr-defined]
    if request.method == "POST" and overrides.is_valid():
        given = overrides.parameters() if isinstance(overrides, TemplateParametersForm) else {}
        try:
            manual = pipeline_config_run_now(
                tenant_id=tenant_id, config_id=config_id, actor=actor_of(request), overrides=given or None
            )
        except ServiceError as exc:
            if not _refused(exc):
                raise
            add_parameter_errors([overrides], exc)
        else:
            if manual.created:
                text = (
                    f"Run {manual.run.run_id} was queued; a worker picks it up by priority "
                    f"({manual.run.priority})."
                )
            else:
                text = f"Run {manual.run.run_id} was already queued this minute; no second run was added."
            messages.success(request, text)
            return HttpResponseRedirect(config_url(config))
    return _form_page(
        request,
        forms_=[overrides],
        title=f"Run pipeline config {config_id} now?",
        tenant_id=tenant_id,
        config=config,
        intro="This queues one run for the current minute, even while the config is paused; it counts "
        "against the tenant's quotas when a worker claims it. A second click in the same minute adds "
        "nothing.",
        submit="Yes, run now",
        cancel_url=config_url(config),
    )


@writer_required
def pipeline_backfill_view(request: HttpRequest, tenant_id: str, config_id: str) -> HttpResponse:
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    form = BackfillForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            done = pipeline_config_backfill(
                tenant_id=tenant_id,
                config_id=config_id,
                start_date=form.cleaned_data["start_date"],
                end_date=form.cleaned_data["end_date"],
                actor=actor_of(request),
            )
        except ServiceError as exc:
            if not _refused(exc):
                raise
            add_parameter_errors([form], exc)
        else:
            messages.success(
                request,
                f"Backfill of {done.start_date} to {done.end_date}: {done.created} run(s) queued "
                f"({len(done.run_ids) - done.created} were already queued).",
            )
            return HttpResponseRedirect(config_url(config))
    return _form_page(
        request,
        forms_=[form],
        title=f"Backfill pipeline config {config_id}",
        tenant_id=tenant_id,
        config=config,
        intro=f"Queues a run for every slot of the schedule between the two days (in its time zone), at "
        f"most {MAX_BACKFILL_DAYS} days and {MAX_BACKFILL_RUNS} runs, none after now. Repeating the same "
        "backfill adds nothing.",
        submit="Queue the backfill",
        cancel_url=config_url(config),
    )


# --- one run ------------------------------------------------------------------------------------------
@portal_page
def run_detail_view(request: HttpRequest, tenant_id: str, run_id: str) -> HttpResponse:
    """The run, who started it, its queue entry, and each attempt's record, step logs and DQ results."""
    detail = run_get(tenant_id=tenant_id, run_id=run_id)
    return _render(
        request,
        "portal/run_detail.html",
        title=f"Run {run_id}",
        tenant_id=tenant_id,
        detail=detail,
        run=detail.run,
        config_url=reverse("admin:portal-pipeline-detail", args=[tenant_id, detail.run.config_id]),
        can_cancel=detail.run.state in (RunState.QUEUED, RunState.RUNNING),
        can_requeue=detail.run.state in (RunState.FAILED, RunState.CANCELLED),
    )


@writer_required
def run_cancel_view(request: HttpRequest, tenant_id: str, run_id: str) -> HttpResponse:
    form = RunCancelForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            run_cancel(
                tenant_id=tenant_id,
                run_id=run_id,
                actor=actor_of(request),
                reason=form.cleaned_data["reason"],
            )
        except ServiceError as exc:
            if not _refused(exc):
                raise
            add_parameter_errors([form], exc)
        else:
            messages.success(request, f"Run {run_id} was cancelled.")
            return HttpResponseRedirect(run_url(tenant_id, run_id))
    return _form_page(
        request,
        forms_=[form],
        title=f"Cancel run {run_id}?",
        tenant_id=tenant_id,
        intro="A queued run is not started; a running one's worker is told at its next heartbeat and its "
        "slot is freed now.",
        submit="Yes, cancel the run",
        cancel_url=run_url(tenant_id, run_id),
    )


@writer_required
def run_requeue_view(request: HttpRequest, tenant_id: str, run_id: str) -> HttpResponse:
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            run_requeue(tenant_id=tenant_id, run_id=run_id, actor=actor_of(request))
        except ServiceError as exc:
            if not _refused(exc):
                raise
            add_parameter_errors([form], exc)
        else:
            messages.success(request, f"Run {run_id} was queued again, as a retry.")
            return HttpResponseRedirect(run_url(tenant_id, run_id))
    return _form_page(
        request,
        forms_=[form],
        title=f"Requeue run {run_id}?",
        tenant_id=tenant_id,
        intro="The run goes back in the queue with its retries reset, recorded as a retry started by you.",
        submit="Yes, requeue",
        cancel_url=run_url(tenant_id, run_id),
    )
