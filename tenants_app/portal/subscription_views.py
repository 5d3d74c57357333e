"""Portal pages of a tenant's subscription: plan change with a preview, limit overrides, status."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from tenants_app.labels import enum_label
from tenants_app.models import SubscriptionStatus
from tenants_app.portal import forms as portal_forms
from tenants_app.portal.forms import limit_label
from tenants_app.portal.pages import (
    actor_of,
    back_to_tenant,
    bound_form,
    detail_url,
    form_page,
    render_page,
    submit_form,
    writer_required,
)
from tenants_app.services.subscription_overrides import subscription_set_limits
from tenants_app.services.subscription_plan_change import (
    subscription_change_plan,
    subscription_change_plan_preview,
)
from tenants_app.services.subscription_selectors import subscription_effective_limits, subscription_get
from tenants_app.services.subscription_status import subscription_set_status


# --- subscription -----------------------------------------------------------------------------------
@writer_required
def tenant_plan_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Choose a plan, see the limits before and after, confirm; the limits change at once."""
    current = subscription_get(tenant_id=tenant_id)
    if request.method != "POST":
        form = portal_forms.PlanChangeForm(initial={"plan": current.plan_name})
        return _plan_form(request, tenant_id, form, current)
    form = portal_forms.PlanChangeForm(request.POST)
    action = request.POST.get("action", "preview")
    if action == "edit" or not form.is_valid():
        return _plan_form(request, tenant_id, form, current)
    plan = form.cleaned_data["plan"]
    if action == "confirm":
        return submit_form(
            request,
            form,
            action=lambda: subscription_change_plan(tenant_id=tenant_id, plan=plan, actor=actor_of(request)),
            on_success=lambda _: back_to_tenant(
                request,
                tenant_id,
                f"Tenant {tenant_id} is now on {enum_label(plan)}; its limits changed at once.",
            ),
            show_form=lambda: _plan_form(request, tenant_id, form, current),
        )
    return submit_form(
        request,
        form,
        action=lambda: subscription_change_plan_preview(tenant_id=tenant_id, plan=plan),
        on_success=lambda preview: render_page(
            request,
            "portal/tenant_plan_confirm.html",
            title=f"Change the plan of {tenant_id} to {enum_label(plan)}?",
            tenant_id=tenant_id,
            form=form,
            plan=plan,
            preview=preview,
            rows=_preview_rows(preview),
        ),
        show_form=lambda: _plan_form(request, tenant_id, form, current),
    )


def _plan_form(
    request: HttpRequest, tenant_id: str, form: portal_forms.PlanChangeForm, current: Any
) -> HttpResponse:
    return form_page(
        request,
        tenant_id=tenant_id,
        title=f"Change the plan of {tenant_id}",
        form=form,
        submit="Show the new limits",
        intro=f"Current plan: {enum_label(current.plan_name)} ({enum_label(current.status)}). The next page "
        "shows the limits before and after; nothing changes until you confirm.",
        extra={"action": "preview"},
    )


def _preview_rows(preview: Any) -> list[tuple[str, Any, Any]]:
    """(limit, before, after) rows of a plan-change preview."""
    before = _limits(preview.limits_before)
    after = _limits(preview.limits_after)
    names = list(dict.fromkeys([*before, *after]))
    return [(limit_label(name), before.get(name), after.get(name)) for name in names]


def _limits(limits: Any) -> dict[str, Any]:
    if hasattr(limits, "as_dict"):
        return dict(limits.as_dict())
    return dict(limits or {})


@writer_required
def tenant_limits_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Override the plan's limits for this tenant, or set some back to the plan's figures."""
    current = subscription_get(tenant_id=tenant_id)
    limits = subscription_effective_limits(subscription=current)
    in_force = limits.as_dict()
    form = bound_form(request, portal_forms.LimitsForm, initial=in_force)
    overridden = ", ".join(limit_label(name) for name in limits.overridden) or "none"
    return submit_form(
        request,
        form,
        before=lambda: None if _limit_changes(form, in_force) else _limits_kept(request, tenant_id),
        action=lambda: subscription_set_limits(
            tenant_id=tenant_id, actor=actor_of(request), **_limit_changes(form, in_force)
        ),
        on_success=lambda _: back_to_tenant(
            request, tenant_id, f"The limits of {tenant_id} were changed; they apply at once."
        ),
        show_form=lambda: form_page(
            request,
            tenant_id=tenant_id,
            title=f"Limits of {tenant_id}",
            form=form,
            submit="Save limits",
            intro=f"Plan {enum_label(limits.plan_name)}. Limits that differ from the plan now: {overridden}. "
            "A plan change later replaces every override with the new plan's figures.",
        ),
    )


def _limit_changes(form: portal_forms.LimitsForm, in_force: dict[str, Any]) -> dict[str, Any]:
    """subscription_set_limits' arguments for what the form changes; empty when it changes nothing."""
    reset = list(form.cleaned_data["reset"])
    # Only what changes is sent: an untouched box must not turn the plan's figure into an override.
    changes: dict[str, Any] = {
        name: form.cleaned_data[name]
        for name in in_force
        if name not in reset and form.cleaned_data[name] != in_force[name]
    }
    if reset:
        changes["reset"] = reset
    return changes


def _limits_kept(request: HttpRequest, tenant_id: str) -> HttpResponse:
    messages.info(request, f"The limits of {tenant_id} were left as they were.")
    return HttpResponseRedirect(detail_url(tenant_id))


@writer_required
def tenant_subscription_status_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Set the subscription's status (TRIAL needs an end date)."""
    current = subscription_get(tenant_id=tenant_id)
    form = bound_form(
        request,
        portal_forms.SubscriptionStatusForm,
        initial={"status": current.status, "trial_end_date": current.trial_end_date},
    )
    return submit_form(
        request,
        form,
        action=lambda: subscription_set_status(
            tenant_id=tenant_id,
            status=form.cleaned_data["status"],
            actor=actor_of(request),
            trial_end_date=_trial_end(form),
        ),
        on_success=lambda _: back_to_tenant(
            request,
            tenant_id,
            f"The subscription of {tenant_id} is now {enum_label(form.cleaned_data['status'])}.",
        ),
        show_form=lambda: form_page(
            request,
            tenant_id=tenant_id,
            title=f"Subscription status of {tenant_id}",
            form=form,
            submit="Change status",
            intro=f"Plan {enum_label(current.plan_name)}, status {enum_label(current.status)}.",
        ),
    )


def _trial_end(form: portal_forms.SubscriptionStatusForm) -> date | None:
    # The form starts with the trial's current end date: left filled while another status is chosen,
    # it asks for nothing (the service refuses a date without TRIAL).
    if form.cleaned_data["status"] == SubscriptionStatus.TRIAL:
        return form.cleaned_data["trial_end_date"]
    return None
