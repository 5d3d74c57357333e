"""A tenant's subscription: read it and its usage, change its plan, status and per-tenant limits.

The subscription row is the source of truth for limits: `daily_limit`, `monthly_limit` and
`concurrent_limit` are always filled (copied from the plan, or overridden by staff); `max_providers`,
`api_calls_per_minute` and `api_calls_per_hour` are empty unless overridden, meaning the plan's figure.
Today's usage row carries a copy of the pipeline limits (for reports); every change here rewrites that
copy at once, and each admission writes the effective limits back too.

A plan change gives the tenant exactly the new plan's figures: per-tenant overrides are dropped
(choosing the current plan again is how staff reset overrides). Lifecycle rules (what each state
allows) are in `plans.LIFECYCLE_RULES`; a TRIAL whose `trial_end_date` (its last day) has passed counts
as EXPIRED everywhere, and `roll_over_usage` writes that state down.

By concern: reads and the limits in force in subscription_selectors.py; plan changes and their preview
in subscription_plan_change.py; per-tenant limit overrides in subscription_overrides.py; status,
cancellation and trial expiry in subscription_status.py; what every change shares in
subscription_changes.py. Here: several changes in one request (`subscription_update`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from tenants_app.models import TenantSubscription
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.plans import plan_get
from tenants_app.services.subscription_changes import (
    subscription_require_changeable,
    subscription_with,
    utc_today,
)
from tenants_app.services.subscription_overrides import (
    limit_input_errors,
    limit_override_values,
    limit_overrides_apply,
)
from tenants_app.services.subscription_plan_change import (
    plan_change_apply,
    plan_change_values,
)
from tenants_app.services.subscription_selectors import (
    LIMIT_FIELDS,
    subscription_get,
)
from tenants_app.services.subscription_status import (
    status_change_apply,
    status_change_values,
    status_input_check,
)


def subscription_update(
    *,
    tenant_id: str,
    actor: str,
    plan: str | None = None,
    status: str | None = None,
    trial_end_date: date | None = None,
    limits: dict[str, int] | None = None,
    reset: tuple[str, ...] | list[str] = (),
) -> TenantSubscription:
    """Plan, per-tenant limits and status in one request: all checked first, so a refusal changes nothing.

    Checked before the first write: the plan, the status (its transition from the state read, the
    trial end date), the limits' bounds and their cross-field rules against the plan they will sit on
    (a plan change drops overrides first, and `reset` goes back to the new plan's figures). Then written
    in that order (plan, limits, status), each audited as when made alone. Not a transaction: a
    concurrent change caught by a write's condition, or an outage between writes, can still leave the
    earlier writes in place; the same request again finishes the job.
    """
    limits = dict(limits or {})
    unknown = sorted(set(limits) - set(LIMIT_FIELDS))
    if unknown:
        raise ValidationFailed(
            "unknown limits",
            errors={"limits": [f"Not limits: {', '.join(unknown)}; use {', '.join(LIMIT_FIELDS)}."]},
        )
    given: dict[str, int | None] = {name: limits.get(name) for name in LIMIT_FIELDS}
    today = utc_today()
    new_plan = plan_get(plan) if plan is not None else None
    errors = limit_input_errors(given, reset) if limits or reset else {}
    if status is not None:
        try:
            trial_end_date = status_input_check(status, trial_end_date, today)
        except ValidationFailed as exc:
            errors.update(exc.errors)
    elif trial_end_date is not None:
        errors["trial_end_date"] = ["Only with status TRIAL."]
    if errors:
        raise ValidationFailed("invalid subscription change", errors=errors)
    with bigquery_errors_translated():
        subscription = subscription_get(tenant_id=tenant_id)
        if new_plan is not None or limits or reset:
            subscription_require_changeable(subscription)
        resulting = (
            subscription_with(subscription, plan_change_values(new_plan))
            if new_plan is not None
            else subscription
        )
        limit_values: dict[str, Any] = {}
        if limits or reset:
            limit_values, errors = limit_override_values(resulting, given, reset)
        status_values: dict[str, Any] = {}
        if status is not None:
            try:
                status_values = status_change_values(subscription, status, trial_end_date, today)
            except ValidationFailed as exc:
                errors.update(exc.errors)
        if errors:
            raise ValidationFailed("invalid subscription change", errors=errors)
        # Everything checked: now write.
        if new_plan is not None:
            plan_change_apply(tenant_id, subscription, new_plan, actor)
        if limit_values:
            limit_overrides_apply(tenant_id, subscription, limit_values, actor)
        if status_values:
            status_change_apply(tenant_id, subscription, status_values, actor)
    return subscription
