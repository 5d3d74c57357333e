"""Portal pages about one tenant: the detail page, the onboarding wizard and the operation forms.

Views are thin: they check the role, bind a form and call the same services as the API. A service's
field errors come back inline on the form. Every page is wrapped in `site.admin_view` (login and
active staff); operations also refuse read-only staff with a 403, on GET and POST alike.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control

from bigquery_backend import exceptions as bq
from tenants_app.api.keys import GRACE_PERIODS
from tenants_app.api.permissions import is_read_only_staff
from tenants_app.kms import KmsUnavailable
from tenants_app.models import SubscriptionStatus, TenantApiKey, TenantCloudCredential, TenantStatus
from tenants_app.portal import forms as portal_forms
from tenants_app.portal.charts import usage_trend_svg
from tenants_app.services import subscriptions
from tenants_app.services.api_keys import (
    IssuedApiKey,
    api_key_create,
    api_key_list,
    api_key_revoke,
    api_key_rotate,
)
from tenants_app.services.credentials import (
    credential_create,
    credential_deactivate,
    credential_get,
    credential_replace,
)
from tenants_app.services.errors import DoesNotExist, ServiceError
from tenants_app.services.onboarding import OnboardingResult, tenant_onboard, tenant_onboard_validate
from tenants_app.services.plans import PLANS
from tenants_app.services.tenant_overview import tenant_overview
from tenants_app.services.tenants import (
    tenant_get,
    tenant_offboard,
    tenant_reactivate,
    tenant_suspend,
    tenant_update,
)
from tenants_app.services.webhooks import webhook_endpoint_list

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponse]
T = TypeVar("T")

# One-time tokens of the forms whose result shows a new key: a reload (a re-POST) of that result page
# finds its token spent and shows the tenant instead of a second key. Only tokens live in the session.
_TOKENS_SESSION_KEY = "portal_form_tokens"
_MAX_TOKENS = 20
LIMIT_LABELS = {
    "daily_limit": "Daily pipeline runs",
    "monthly_limit": "Monthly pipeline runs",
    "concurrent_limit": "Concurrent pipeline runs",
    "max_providers": "Cloud providers",
    "api_calls_per_minute": "API calls a minute",
    "api_calls_per_hour": "API calls an hour",
}


# --- helpers ----------------------------------------------------------------------------------------
def actor_of(request: HttpRequest) -> str:
    """The audit actor of a staff request, as the API builds it."""
    return f"user:{request.user.get_username()}"


def can_change(request: HttpRequest) -> bool:
    """Superusers and staff outside the read-only group may run operations."""
    return not is_read_only_staff(request.user)


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    site = admin.site
    return {**site.each_context(request), "can_change": can_change(request), **extra}


def _render(request: HttpRequest, template: str, *, status: int = 200, **extra: Any) -> TemplateResponse:
    return TemplateResponse(request, template, _context(request, **extra), status=status)


def _detail_url(tenant_id: str) -> str:
    return reverse("admin:portal-tenant-detail", args=[tenant_id])


def _optional_url(name: str, *args: str) -> str | None:
    """A page another part of the portal provides, if it is installed."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _no_store(response: HttpResponse) -> HttpResponse:
    """Pages that show a secret are never cached, by the browser or anything between."""
    patch_cache_control(response, no_store=True, no_cache=True, must_revalidate=True, private=True, max_age=0)
    response["Pragma"] = "no-cache"
    return response


def _issue_token(request: HttpRequest) -> str:
    token = secrets.token_urlsafe(16)
    tokens = [*request.session.get(_TOKENS_SESSION_KEY, []), token][-_MAX_TOKENS:]
    request.session[_TOKENS_SESSION_KEY] = tokens
    return token


def _spend_token(request: HttpRequest, token: str) -> bool:
    """True once per issued token."""
    tokens = request.session.get(_TOKENS_SESSION_KEY, [])
    if not token or token not in tokens:
        return False
    tokens.remove(token)
    request.session[_TOKENS_SESSION_KEY] = tokens
    return True


def _is_inline(error: ServiceError) -> bool:
    """Errors the user can fix on the form; outages and missing objects get their own pages."""
    return error.status < 500 and not isinstance(error, DoesNotExist)


def _apply(
    form: forms.Form,
    action: Callable[[], T],
    on_success: Callable[[T], HttpResponse],
    *,
    fallback_field: str | None = None,
) -> HttpResponse | None:
    """Run a form's service call: the success response, or None with the fixable errors put on the form."""
    try:
        result = action()
    except ServiceError as exc:
        if not _is_inline(exc):
            raise
        portal_forms.add_service_errors(form, exc, fallback_field=fallback_field)
        return None
    return on_success(result)


def _done(request: HttpRequest, tenant_id: str, message: str) -> HttpResponse:
    """Flash a success message and go back to the tenant's page."""
    messages.success(request, message)
    return HttpResponseRedirect(_detail_url(tenant_id))


def portal_page(view: View) -> View:
    """A missing tenant gets a 404 page, a refusal its status and reason, an outage a 503: no traceback."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        tenant_id = kwargs.get("tenant_id")
        try:
            return view(request, *args, **kwargs)
        except DoesNotExist as exc:
            return _render(
                request,
                "portal/tenant_not_found.html",
                status=404,
                title="Not found",
                tenant_id=tenant_id,
                hide_tenant_crumb=True,
                message=exc.message,
            )
        except ServiceError as exc:
            if exc.status >= 500:
                return _unavailable(request, exc)
            # A refusal outside any form (the forms show theirs inline): its page says why.
            return _render(
                request,
                "portal/tenant_not_found.html",
                status=exc.status,
                title="Not possible",
                tenant_id=tenant_id,
                message=exc.message,
            )
        except bq.InvalidInput:
            return _render(
                request,
                "portal/tenant_not_found.html",
                status=400,
                title="Not possible",
                tenant_id=tenant_id,
                message="the request was refused as invalid",
            )
        except (bq.BackendUnavailable, bq.NotFound, KmsUnavailable) as exc:
            return _unavailable(request, exc)

    return wrapper


def _unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The services log the cause; BigQuery's and KMS's own text stays out of the page.
    logger.warning("portal page %s failed: %s", request.path, type(exc).__name__)
    response = _render(request, "portal/tenant_unavailable.html", status=503, title="Temporarily unavailable")
    response["Retry-After"] = "5"
    return response


def writer_required(view: View) -> View:
    """Read-only staff get a 403 page on every operation, whatever the method."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_change(request):
            return _render(
                request,
                "portal/tenant_forbidden.html",
                status=403,
                title="Read-only access",
                tenant_id=kwargs.get("tenant_id"),
            )
        return view(request, *args, **kwargs)

    return portal_page(wrapper)


def _form_page(
    request: HttpRequest,
    *,
    tenant_id: str | None,
    title: str,
    form: forms.Form,
    submit: str,
    intro: str = "",
    danger: bool = False,
    extra: dict[str, Any] | None = None,
    status: int = 200,
) -> TemplateResponse:
    return _render(
        request,
        "portal/tenant_form.html",
        status=status,
        tenant_id=tenant_id,
        title=title,
        form=form,
        submit=submit,
        intro=intro,
        danger=danger,
        **(extra or {}),
    )


def _issued_page(
    request: HttpRequest, *, tenant_id: str, issued: IssuedApiKey, message: str, title: str, note: str
) -> HttpResponse:
    """Flash a success message and show the new key, once."""
    messages.success(request, message)
    response = _render(
        request,
        "portal/tenant_key_issued.html",
        tenant_id=tenant_id,
        title=title,
        note=note,
        plaintext=issued.plaintext,
        key=issued.row,
    )
    return _no_store(response)


# --- detail -----------------------------------------------------------------------------------------
@portal_page
def tenant_detail_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Profile, subscription, usage against limits, keys, credentials, configs and recent runs."""
    overview = tenant_overview(tenant_id=tenant_id)
    links = {
        "usage": _optional_url("admin:portal-tenant-usage", tenant_id),
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
    return _render(
        request,
        "portal/tenant_detail.html",
        title=f"Tenant {profile.tenant_id}",
        tenant_id=tenant_id,
        overview=overview,
        profile=profile,
        links=links,
        chart=chart,
        is_suspended=profile.status == TenantStatus.SUSPENDED,
        is_closed=profile.status in {TenantStatus.CANCELLED, TenantStatus.DELETED},
        can_suspend=profile.status in {TenantStatus.ACTIVE, TenantStatus.TRIAL},
        now=timezone.now(),
        webhooks=webhook_endpoint_list(tenant_id=tenant_id),
    )


def _list_url(name: str, tenant_id: str) -> str | None:
    """A table page filtered to this tenant: per-tenant tables take `tenant_id` (which dataset), central
    tables an exact filter on the column."""
    url = _optional_url(name)
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
        return _onboard_step1(request, portal_forms.OnboardForm(initial={"plan": "STARTER"}))
    form = portal_forms.OnboardForm(request.POST)
    action = request.POST.get("action", "check")
    if action == "edit" or not form.is_valid():
        return _onboard_step1(request, form)
    data = form.cleaned_data
    if action == "commit":
        return _onboard_commit(request, form)
    response = _apply(
        form,
        lambda: tenant_onboard_validate(**data, created_by=actor_of(request)),
        lambda _: _render(
            request,
            "portal/tenant_onboard_confirm.html",
            title="Onboard a tenant: confirm",
            step=2,
            form=form,
            data=data,
            plan=PLANS[data["plan"]],
            token=_issue_token(request),
        ),
    )
    return response if response is not None else _onboard_step1(request, form)


def _onboard_step1(request: HttpRequest, form: portal_forms.OnboardForm) -> HttpResponse:
    return _render(
        request,
        "portal/tenant_onboard.html",
        title="Onboard a tenant",
        step=1,
        form=form,
        plans=list(PLANS.values()),
    )


def _onboard_commit(request: HttpRequest, form: portal_forms.OnboardForm) -> HttpResponse:
    data = form.cleaned_data
    if not _spend_token(request, request.POST.get("token", "")):
        # A reload of the result page, or a second click: the key was shown once already.
        messages.warning(request, "This onboarding was already submitted; its key is shown only once.")
        return HttpResponseRedirect(_safe_detail_url(data["tenant_id"]))
    response = _apply(
        form,
        lambda: tenant_onboard(**data, created_by=actor_of(request)),
        lambda result: _onboarded(request, result),
    )
    return response if response is not None else _onboard_step1(request, form)


def _onboarded(request: HttpRequest, result: OnboardingResult) -> HttpResponse:
    """The result of an onboarding: its key once, or the tenant's page if the key was shown before."""
    tenant_id = result.profile.tenant_id
    if result.api_key is None:
        messages.warning(
            request,
            f"Tenant {tenant_id} was finished; its initial key was issued before and is not shown again. "
            "Rotate it to get a new one.",
        )
        return HttpResponseRedirect(_detail_url(tenant_id))
    return _issued_page(
        request,
        tenant_id=tenant_id,
        issued=result.api_key,
        message=f"Tenant {tenant_id} was onboarded ({result.subscription.plan_name}).",
        title=f"Tenant {tenant_id} onboarded",
        note="This is the tenant's first API key. Give it to the tenant's admin now: it is shown only once.",
    )


def _safe_detail_url(tenant_id: str) -> str:
    try:
        return _detail_url(tenant_id)
    except NoReverseMatch:
        return reverse("admin:portal-tenant-onboard")


# --- profile and lifecycle --------------------------------------------------------------------------
@writer_required
def tenant_edit_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Change the company name and admin email."""
    profile = tenant_get(tenant_id=tenant_id)
    if request.method != "POST":
        form = portal_forms.TenantEditForm(
            initial={"company_name": profile.company_name, "admin_email": profile.admin_email}
        )
    else:
        form = portal_forms.TenantEditForm(request.POST)
        if form.is_valid():
            response = _apply(
                form,
                lambda: tenant_update(tenant_id=tenant_id, actor=actor_of(request), **form.cleaned_data),
                lambda _: _done(request, tenant_id, f"Tenant {tenant_id} was updated."),
            )
            if response is not None:
                return response
    return _form_page(
        request, tenant_id=tenant_id, title=f"Edit tenant {tenant_id}", form=form, submit="Save"
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
        form = forms.Form(request.POST if request.method == "POST" else None)
        if request.method == "POST" and profile.status == target:
            # The service is idempotent; say so instead of claiming a change.
            messages.info(request, f"Tenant {tenant_id} is already {target}.")
            return HttpResponseRedirect(_detail_url(tenant_id))
        if request.method == "POST":
            response = _apply(
                form,
                lambda: service(tenant_id=tenant_id, actor=actor_of(request)),
                lambda _: _done(request, tenant_id, done.format(tenant_id=tenant_id)),
            )
            if response is not None:
                return response
        return _form_page(
            request,
            tenant_id=tenant_id,
            title=f"{verb.capitalize()} tenant {tenant_id}?",
            form=form,
            submit=f"Yes, {verb}",
            intro=intro.format(tenant_id=tenant_id, status=profile.status),
            danger=danger,
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
    intro="Tenant {tenant_id} is {status}. Reactivating makes it ACTIVE: its keys work again.",
    done="Tenant {tenant_id} was reactivated.",
    danger=False,
)


@writer_required
def tenant_offboard_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Cancel the tenant for good: type its id to confirm; optionally delete its dataset."""
    tenant_get(tenant_id=tenant_id)
    form = portal_forms.OffboardForm(request.POST if request.method == "POST" else None, tenant_id=tenant_id)
    if request.method == "POST" and form.is_valid():
        purge = form.cleaned_data["purge_dataset"]
        purged = " and its dataset deleted" if purge else ""
        response = _apply(
            form,
            lambda: tenant_offboard(tenant_id=tenant_id, actor=actor_of(request), purge_dataset=purge),
            lambda _: _done(request, tenant_id, f"Tenant {tenant_id} was offboarded{purged}."),
        )
        if response is not None:
            return response
    return _form_page(
        request,
        tenant_id=tenant_id,
        title=f"Offboard tenant {tenant_id}?",
        form=form,
        submit="Offboard",
        intro="Offboarding cancels the tenant: every API key is revoked and every credential deactivated. "
        "This cannot be undone here.",
        danger=True,
    )


# --- subscription -----------------------------------------------------------------------------------
@writer_required
def tenant_plan_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Choose a plan, see the limits before and after, confirm; the limits change at once."""
    current = subscriptions.subscription_get(tenant_id=tenant_id)
    if request.method != "POST":
        form = portal_forms.PlanChangeForm(initial={"plan": current.plan_name})
        return _plan_form(request, tenant_id, form, current)
    form = portal_forms.PlanChangeForm(request.POST)
    action = request.POST.get("action", "preview")
    if action == "edit" or not form.is_valid():
        return _plan_form(request, tenant_id, form, current)
    plan = form.cleaned_data["plan"]
    if action == "confirm":
        response = _apply(
            form,
            lambda: subscriptions.subscription_change_plan(
                tenant_id=tenant_id, plan=plan, actor=actor_of(request)
            ),
            lambda _: _done(
                request, tenant_id, f"Tenant {tenant_id} is now on {plan}; its limits changed at once."
            ),
        )
    else:
        response = _apply(
            form,
            lambda: subscriptions.subscription_change_plan_preview(tenant_id=tenant_id, plan=plan),
            lambda preview: _render(
                request,
                "portal/tenant_plan_confirm.html",
                title=f"Change the plan of {tenant_id} to {plan}?",
                tenant_id=tenant_id,
                form=form,
                plan=plan,
                preview=preview,
                rows=_preview_rows(preview),
            ),
        )
    return response if response is not None else _plan_form(request, tenant_id, form, current)


def _plan_form(
    request: HttpRequest, tenant_id: str, form: portal_forms.PlanChangeForm, current: Any
) -> HttpResponse:
    return _form_page(
        request,
        tenant_id=tenant_id,
        title=f"Change the plan of {tenant_id}",
        form=form,
        submit="Show the new limits",
        intro=f"Current plan: {current.plan_name} ({current.status}). The next page shows the limits "
        "before and after; nothing changes until you confirm.",
        extra={"action": "preview"},
    )


def _preview_rows(preview: Any) -> list[tuple[str, Any, Any]]:
    """(limit, before, after) rows of a plan-change preview."""
    before = _limits(preview.limits_before)
    after = _limits(preview.limits_after)
    names = list(dict.fromkeys([*before, *after]))
    return [
        (LIMIT_LABELS.get(name, name.replace("_", " ")), before.get(name), after.get(name)) for name in names
    ]


def _limits(limits: Any) -> dict[str, Any]:
    if hasattr(limits, "as_dict"):
        return dict(limits.as_dict())
    return dict(limits or {})


@writer_required
def tenant_limits_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Override the plan's limits for this tenant, or set some back to the plan's figures."""
    current = subscriptions.subscription_get(tenant_id=tenant_id)
    limits = subscriptions.subscription_effective_limits(subscription=current)
    in_force = limits.as_dict()
    if request.method != "POST":
        form = portal_forms.LimitsForm(initial=in_force)
    else:
        form = portal_forms.LimitsForm(request.POST)
        if form.is_valid():
            reset = list(form.cleaned_data["reset"])
            # Only what changes is sent: an untouched box must not turn the plan's figure into an override.
            changed = {
                name: form.cleaned_data[name]
                for name in in_force
                if name not in reset and form.cleaned_data[name] != in_force[name]
            }
            if not changed and not reset:
                messages.info(request, f"The limits of {tenant_id} were left as they were.")
                return HttpResponseRedirect(_detail_url(tenant_id))
            response = _apply(
                form,
                lambda: subscriptions.subscription_set_limits(
                    tenant_id=tenant_id, actor=actor_of(request), reset=reset, **changed
                ),
                lambda _: _done(
                    request, tenant_id, f"The limits of {tenant_id} were changed; they apply at once."
                ),
            )
            if response is not None:
                return response
    overridden = ", ".join(LIMIT_LABELS.get(name, name) for name in limits.overridden) or "none"
    return _form_page(
        request,
        tenant_id=tenant_id,
        title=f"Limits of {tenant_id}",
        form=form,
        submit="Save limits",
        intro=f"Plan {limits.plan_name}. Limits that differ from the plan now: {overridden}. "
        "A plan change later replaces every override with the new plan's figures.",
    )


@writer_required
def tenant_subscription_status_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Set the subscription's status (TRIAL needs an end date)."""
    current = subscriptions.subscription_get(tenant_id=tenant_id)
    if request.method != "POST":
        form = portal_forms.SubscriptionStatusForm(
            initial={"status": current.status, "trial_end_date": current.trial_end_date}
        )
    else:
        form = portal_forms.SubscriptionStatusForm(request.POST)
        if form.is_valid():
            status = form.cleaned_data["status"]
            trial_end = form.cleaned_data["trial_end_date"] if status == SubscriptionStatus.TRIAL else None
            response = _apply(
                form,
                lambda: subscriptions.subscription_set_status(
                    tenant_id=tenant_id, status=status, actor=actor_of(request), trial_end_date=trial_end
                ),
                lambda _: _done(request, tenant_id, f"The subscription of {tenant_id} is now {status}."),
            )
            if response is not None:
                return response
    return _form_page(
        request,
        tenant_id=tenant_id,
        title=f"Subscription status of {tenant_id}",
        form=form,
        submit="Change status",
        intro=f"Plan {current.plan_name}, status {current.status}.",
    )


# --- API keys ---------------------------------------------------------------------------------------
@writer_required
def tenant_key_create_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Issue a key; the result page shows its plaintext once."""
    tenant_get(tenant_id=tenant_id)
    if request.method != "POST":
        form = portal_forms.ApiKeyCreateForm()
    else:
        form = portal_forms.ApiKeyCreateForm(request.POST)
        if form.is_valid():
            if not _spend_token(request, request.POST.get("token", "")):
                messages.warning(request, "This key request was already submitted; a key is shown only once.")
                return HttpResponseRedirect(_detail_url(tenant_id))
            response = _apply(
                form,
                lambda: api_key_create(
                    tenant_id=tenant_id, created_by=actor_of(request), **form.cleaned_data
                ),
                lambda issued: _issued_page(
                    request,
                    tenant_id=tenant_id,
                    issued=issued,
                    message=f"API key {issued.row.key_prefix}… was created for {tenant_id}.",
                    title=f"New API key for {tenant_id}",
                    note="Copy the key now and hand it over securely: it is shown only once.",
                ),
            )
            if response is not None:
                return response
    return _form_page(
        request,
        tenant_id=tenant_id,
        title=f"New API key for {tenant_id}",
        form=form,
        submit="Create key",
        extra={"token": _issue_token(request)},
    )


def _key(tenant_id: str, api_key_id: str) -> TenantApiKey:
    for row in api_key_list(tenant_id=tenant_id, include_revoked=True):
        if row.api_key_id == api_key_id:
            row.api_key_hash = ""
            return row
    raise DoesNotExist(f"API key {api_key_id!r} of tenant {tenant_id!r} does not exist")


@writer_required
def tenant_key_rotate_view(request: HttpRequest, tenant_id: str, api_key_id: str) -> HttpResponse:
    """Issue a replacement with the same name and scopes; the old key works for the grace period."""
    key = _key(tenant_id, api_key_id)
    if request.method != "POST":
        form = portal_forms.ApiKeyRotateForm()
    else:
        form = portal_forms.ApiKeyRotateForm(request.POST)
        if form.is_valid():
            if not _spend_token(request, request.POST.get("token", "")):
                messages.warning(request, "This rotation was already submitted; a key is shown only once.")
                return HttpResponseRedirect(_detail_url(tenant_id))
            response = _apply(
                form,
                lambda: api_key_rotate(
                    tenant_id=tenant_id,
                    api_key_id=api_key_id,
                    grace=GRACE_PERIODS[form.cleaned_data["grace"]],
                    rotated_by=actor_of(request),
                ),
                lambda issued: _issued_page(
                    request,
                    tenant_id=tenant_id,
                    issued=issued,
                    message=f"API key {key.key_prefix}… was rotated to {issued.row.key_prefix}….",
                    title=f"Replacement for API key {key.name or key.api_key_id}",
                    note="Copy the new key now: it is shown only once. The old key works until the grace "
                    "period ends.",
                ),
            )
            if response is not None:
                return response
    return _form_page(
        request,
        tenant_id=tenant_id,
        title=f"Rotate API key {key.key_prefix}… ({key.name or key.api_key_id})",
        form=form,
        submit="Rotate",
        intro="A new key with the same name, scopes and expiry is issued and shown once.",
        extra={"token": _issue_token(request)},
    )


@writer_required
def tenant_key_revoke_view(request: HttpRequest, tenant_id: str, api_key_id: str) -> HttpResponse:
    """Revoke a key for good, with a reason."""
    key = _key(tenant_id, api_key_id)
    form = portal_forms.ApiKeyRevokeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        response = _apply(
            form,
            lambda: api_key_revoke(
                tenant_id=tenant_id,
                api_key_id=api_key_id,
                reason=form.cleaned_data["reason"],
                revoked_by=actor_of(request),
            ),
            lambda _: _done(request, tenant_id, f"API key {key.key_prefix}… was revoked."),
        )
        if response is not None:
            return response
    return _form_page(
        request,
        tenant_id=tenant_id,
        title=f"Revoke API key {key.key_prefix}… ({key.name or key.api_key_id})?",
        form=form,
        submit="Revoke",
        intro="The key stops working at once in this process (within the key cache's bound elsewhere). "
        "This cannot be undone.",
        danger=True,
    )


# --- cloud credentials ------------------------------------------------------------------------------
@writer_required
def tenant_credential_create_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Add a cloud credential; the payload is encrypted and never shown again."""
    tenant_get(tenant_id=tenant_id)
    form = portal_forms.CredentialCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        response = _apply(
            form,
            lambda: credential_create(tenant_id=tenant_id, created_by=actor_of(request), **form.cleaned_data),
            lambda row: _done(
                request,
                tenant_id,
                f"Credential {row.credential_name} ({row.provider}, {row.fingerprint}) was added.",
            ),
            fallback_field="payload",
        )
        if response is not None:
            return response
    return _form_page(
        request, tenant_id=tenant_id, title=f"Add a cloud credential to {tenant_id}", form=form, submit="Add"
    )


def _credential(tenant_id: str, credential_id: str) -> TenantCloudCredential:
    row = credential_get(tenant_id=tenant_id, credential_id=credential_id)
    row.encrypted_credentials = b""
    return row


@writer_required
def tenant_credential_replace_view(request: HttpRequest, tenant_id: str, credential_id: str) -> HttpResponse:
    """Replace a credential's payload (same provider); a new fingerprint results."""
    row = _credential(tenant_id, credential_id)
    form = portal_forms.CredentialReplaceForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        response = _apply(
            form,
            lambda: credential_replace(
                tenant_id=tenant_id,
                credential_id=credential_id,
                payload=form.cleaned_data["payload"],
                updated_by=actor_of(request),
            ),
            lambda updated: _done(
                request,
                tenant_id,
                f"Credential {updated.credential_name} was replaced (fingerprint {updated.fingerprint}).",
            ),
            fallback_field="payload",
        )
        if response is not None:
            return response
    return _form_page(
        request,
        tenant_id=tenant_id,
        title=f"Replace credential {row.credential_name} ({row.provider})",
        form=form,
        submit="Replace",
        intro=f"Current fingerprint: {row.fingerprint}.",
    )


@writer_required
def tenant_credential_deactivate_view(
    request: HttpRequest, tenant_id: str, credential_id: str
) -> HttpResponse:
    """Deactivate a credential: kept for the record, no longer usable."""
    row = _credential(tenant_id, credential_id)
    form = forms.Form(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        response = _apply(
            form,
            lambda: credential_deactivate(
                tenant_id=tenant_id, credential_id=credential_id, updated_by=actor_of(request)
            ),
            lambda _: _done(
                request, tenant_id, f"Credential {row.credential_name} ({row.provider}) was deactivated."
            ),
        )
        if response is not None:
            return response
    return _form_page(
        request,
        tenant_id=tenant_id,
        title=f"Deactivate credential {row.credential_name} ({row.provider})?",
        form=form,
        submit="Deactivate",
        intro="Pipelines can no longer use it; it stays listed as inactive. Add a new one to restore access.",
        danger=True,
    )
