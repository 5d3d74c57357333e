"""Portal pages about one tenant: the detail page, the onboarding wizard, profile and lifecycle.

Views are thin: they check the role, bind a form and call the same services as the API. A
service's field errors come back inline on the form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from tenants_app.labels import enum_label
from tenants_app.models import CLOSED_TENANT_STATUSES, TenantStatus
from tenants_app.portal import forms as portal_forms
from tenants_app.portal.charts import usage_trend_svg
from tenants_app.portal.forms import limit_label
from tenants_app.portal.pages import (
    View,
    actor_of,
    back_to_tenant,
    bound_form,
    detail_url,
    form_page,
    issue_token,
    issued_page,
    optional_url,
    portal_page,
    render_page,
    resubmitted,
    submit_form,
    writer_required,
)
from tenants_app.services.onboarding import OnboardingResult, tenant_onboard, tenant_onboard_validate
from tenants_app.services.onboarding_checks import DEFAULT_PLAN
from tenants_app.services.plans import PLANS
from tenants_app.services.quota_rules import WARNING_PERCENT
from tenants_app.services.tenant_capabilities import tenant_capabilities
from tenants_app.services.tenant_overview import tenant_overview
from tenants_app.services.tenants import (
    SUSPENDABLE,
    tenant_get,
    tenant_offboard,
    tenant_reactivate,
    tenant_suspend,
    tenant_update,
)
from tenants_app.services.webhooks import webhook_endpoint_list


# --- detail -----------------------------------------------------------------------------------------
@portal_page
def tenant_detail_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Profile, subscription, usage against limits, keys, credentials, configs and recent runs."""
    overview = tenant_overview(tenant_id=tenant_id)
    links = {
        "usage": optional_url("admin:portal-tenant-usage", tenant_id),
        "audit": _list_url("admin:tenants_app_auditlogentry_changelist", tenant_id),
        "keys": _list_url("admin:tenants_app_tenantapikey_changelist", tenant_id),
        "credentials": _list_url("admin:tenants_app_tenantcloudcredential_changelist", tenant_id),
        "subscriptions": _list_url("admin:tenants_app_tenantsubscription_changelist", tenant_id),
        "usage_rows": _list_url("admin:tenants_app_tenantusagequota_changelist", tenant_id),
        "configs": _list_url("admin:tenants_app_tenantpipelineconfig_changelist", tenant_id),
        "scheduled_runs": _list_url("admin:tenants_app_tenantscheduledpipelinerun_changelist", tenant_id),
        "queue": _list_url("admin:tenants_app_tenantpipelineexecutionqueue_changelist", tenant_id),
        "runs": _list_url("admin:tenants_app_tenantpipelinerun_changelist", tenant_id),
        "step_logs": _list_url("admin:tenants_app_tenantsteplog_changelist", tenant_id),
        "dq_results": _list_url("admin:tenants_app_tenantdqresult_changelist", tenant_id),
    }
    chart = usage_trend_svg(
        days=[day for day, _ in overview.trend],
        runs=[runs for _, runs in overview.trend],
        daily_limit=overview.usage_figures[0].limit,
        title=f"Pipeline runs per day of {tenant_id}, last {len(overview.trend)} days",
    )
    profile = overview.profile
    return render_page(
        request,
        "portal/tenant_detail.html",
        title=f"Tenant {profile.tenant_id}",
        tenant_id=tenant_id,
        overview=overview,
        profile=profile,
        threshold_percent=WARNING_PERCENT,
        overridden_labels=[limit_label(name) for name in overview.limits.overridden]
        if overview.limits
        else [],
        capabilities=tenant_capabilities(
            profile=profile, subscription=overview.subscription, today=overview.usage_day
        ),
        links=links,
        chart=chart,
        is_suspended=profile.status == TenantStatus.SUSPENDED,
        is_closed=profile.status in CLOSED_TENANT_STATUSES,
        can_suspend=profile.status in SUSPENDABLE,
        now=timezone.now(),
        webhooks=webhook_endpoint_list(tenant_id=tenant_id),
    )


def _list_url(name: str, tenant_id: str) -> str | None:
    """A table page filtered to this tenant: per-tenant tables take `tenant_id` (which dataset), central
    tables an exact filter on the column."""
    url = optional_url(name)
    if url is None:
        return None
    per_tenant = name.endswith(
        ("_tenantpipelinerun_changelist", "_tenantsteplog_changelist", "_tenantdqresult_changelist")
    )
    parameter = "tenant_id" if per_tenant else "tenant_id__exact"
    return f"{url}?{QueryDict.fromkeys([parameter], tenant_id).urlencode()}"


# --- onboarding wizard ------------------------------------------------------------------------------
@writer_required
def tenant_onboard_view(request: HttpRequest) -> HttpResponse:
    """Step 1: the details; step 2: the dry-run check and a confirmation; step 3: the result, key once."""
    if request.method != "POST":
        return _onboard_step1(request, portal_forms.OnboardForm(initial={"plan": DEFAULT_PLAN}))
    form = portal_forms.OnboardForm(request.POST)
    action = request.POST.get("action", "check")
    if action == "edit" or not form.is_valid():
        return _onboard_step1(request, form)
    data = form.cleaned_data
    if action == "commit":
        return _onboard_commit(request, form)
    return submit_form(
        request,
        form,
        action=lambda: tenant_onboard_validate(**data, created_by=actor_of(request)),
        on_success=lambda _: render_page(
            request,
            "portal/tenant_onboard_confirm.html",
            title="Onboard a tenant: confirm",
            step=2,
            form=form,
            data=data,
            plan=PLANS[data["plan"]],
            token=issue_token(request),
        ),
        show_form=lambda: _onboard_step1(request, form),
    )


def _onboard_step1(request: HttpRequest, form: portal_forms.OnboardForm) -> HttpResponse:
    return render_page(
        request,
        "portal/tenant_onboard.html",
        title="Onboard a tenant",
        step=1,
        form=form,
        plans=list(PLANS.values()),
    )


def _onboard_commit(request: HttpRequest, form: portal_forms.OnboardForm) -> HttpResponse:
    data = form.cleaned_data
    return submit_form(
        request,
        form,
        before=lambda: resubmitted(
            request,
            message="This onboarding was already submitted; its key is shown only once.",
            url=_safe_detail_url(data["tenant_id"]),
        ),
        action=lambda: tenant_onboard(**data, created_by=actor_of(request)),
        on_success=lambda result: _onboarded(request, result),
        show_form=lambda: _onboard_step1(request, form),
    )


def _onboarded(request: HttpRequest, result: OnboardingResult) -> HttpResponse:
    """The result of an onboarding: its key once, or the tenant's page if the key was shown before."""
    tenant_id = result.profile.tenant_id
    if result.api_key is None:
        messages.warning(
            request,
            f"Tenant {tenant_id} was finished; its initial key was issued before and is not shown again. "
            "Rotate it to get a new one.",
        )
        return HttpResponseRedirect(detail_url(tenant_id))
    return issued_page(
        request,
        tenant_id=tenant_id,
        issued=result.api_key,
        message=f"Tenant {tenant_id} was onboarded ({enum_label(result.subscription.plan_name)}).",
        title=f"Tenant {tenant_id} onboarded",
        note="This is the tenant's first API key. Give it to the tenant's admin now: it is shown only once.",
    )


def _safe_detail_url(tenant_id: str) -> str:
    try:
        return detail_url(tenant_id)
    except NoReverseMatch:
        return reverse("admin:portal-tenant-onboard")


# --- profile and lifecycle --------------------------------------------------------------------------
@writer_required
def tenant_edit_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Change the company name and admin email."""
    profile = tenant_get(tenant_id=tenant_id)
    form = bound_form(
        request,
        portal_forms.TenantEditForm,
        initial={"company_name": profile.company_name, "admin_email": profile.admin_email},
    )
    return submit_form(
        request,
        form,
        action=lambda: tenant_update(tenant_id=tenant_id, actor=actor_of(request), **form.cleaned_data),
        on_success=lambda _: back_to_tenant(request, tenant_id, f"Tenant {tenant_id} was updated."),
        show_form=lambda: form_page(
            request, tenant_id=tenant_id, title=f"Edit tenant {tenant_id}", form=form, submit="Save"
        ),
    )


def _lifecycle_view(
    *,
    verb: str,
    service: Callable[..., Any],
    target: str,
    intro: str,
    done: str,
    danger: bool,
) -> View:
    @writer_required
    def view(request: HttpRequest, tenant_id: str) -> HttpResponse:
        profile = tenant_get(tenant_id=tenant_id)
        form = bound_form(request, forms.Form)
        if request.method == "POST" and profile.status == target:
            # The service is idempotent; say so instead of claiming a change.
            messages.info(request, f"Tenant {tenant_id} is already {enum_label(target).lower()}.")
            return HttpResponseRedirect(detail_url(tenant_id))
        return submit_form(
            request,
            form,
            action=lambda: service(tenant_id=tenant_id, actor=actor_of(request)),
            on_success=lambda _: back_to_tenant(request, tenant_id, done.format(tenant_id=tenant_id)),
            show_form=lambda: form_page(
                request,
                tenant_id=tenant_id,
                title=f"{verb.capitalize()} tenant {tenant_id}?",
                form=form,
                submit=f"Yes, {verb}",
                intro=intro.format(tenant_id=tenant_id, status=enum_label(profile.status).lower()),
                danger=danger,
            ),
        )

    view.__name__ = f"tenant_{verb}_view"
    return view


tenant_suspend_view = _lifecycle_view(
    verb="suspend",
    service=tenant_suspend,
    target=TenantStatus.SUSPENDED,
    intro="Tenant {tenant_id} is {status}. Suspending stops its API keys (within the key cache's bound); "
    "its data, keys and credentials stay, and it can be reactivated.",
    done="Tenant {tenant_id} was suspended.",
    danger=True,
)
tenant_reactivate_view = _lifecycle_view(
    verb="reactivate",
    service=tenant_reactivate,
    target=TenantStatus.ACTIVE,
    intro="Tenant {tenant_id} is {status}. Reactivating makes it active: its keys work again.",
    done="Tenant {tenant_id} was reactivated.",
    danger=False,
)


@writer_required
def tenant_offboard_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Cancel the tenant for good: type its id to confirm; optionally delete its dataset."""
    tenant_get(tenant_id=tenant_id)
    form = bound_form(request, portal_forms.OffboardForm, tenant_id=tenant_id)
    return submit_form(
        request,
        form,
        action=lambda: tenant_offboard(
            tenant_id=tenant_id, actor=actor_of(request), purge_dataset=form.cleaned_data["purge_dataset"]
        ),
        on_success=lambda _: back_to_tenant(
            request,
            tenant_id,
            f"Tenant {tenant_id} was offboarded and its dataset deleted."
            if form.cleaned_data["purge_dataset"]
            else f"Tenant {tenant_id} was offboarded.",
        ),
        show_form=lambda: form_page(
            request,
            tenant_id=tenant_id,
            title=f"Offboard tenant {tenant_id}?",
            form=form,
            submit="Offboard",
            intro="Offboarding cancels the tenant: every API key is revoked and every credential "
            "deactivated. This cannot be undone here.",
            danger=True,
        ),
    )
