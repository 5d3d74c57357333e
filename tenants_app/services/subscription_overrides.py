"""Per-tenant limit overrides: a staff-set figure in place of the plan's, or back to the plan's.

Checked on their own (bounds, names to reset), then against each other on the limits as they will be
(a month holds at least a day, an hour at least a minute).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from tenants_app.models import TenantSubscription
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import AuditAction, audit_changes
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.plans import plan_get
from tenants_app.services.subscription_changes import (
    limit_snapshot,
    subscription_audit,
    subscription_require_changeable,
    subscription_with,
    usage_limits_sync,
)
from tenants_app.services.subscription_selectors import (
    LIMIT_FIELDS,
    PIPELINE_LIMITS,
    subscription_effective_limits,
    subscription_get,
    subscription_limits_forget,
)

# Bounds for per-tenant overrides: generous, but a typo (an extra zero or three) is caught.
LIMIT_BOUNDS: dict[str, tuple[int, int]] = {
    "daily_limit": (1, 100_000),
    "monthly_limit": (1, 3_000_000),
    "concurrent_limit": (1, 1_000),
    "max_providers": (1, 100),
    "api_calls_per_minute": (1, 100_000),
    "api_calls_per_hour": (1, 6_000_000),
}


def subscription_set_limits(
    *,
    tenant_id: str,
    actor: str,
    daily_limit: int | None = None,
    monthly_limit: int | None = None,
    concurrent_limit: int | None = None,
    max_providers: int | None = None,
    api_calls_per_minute: int | None = None,
    api_calls_per_hour: int | None = None,
    reset: tuple[str, ...] | list[str] = (),
) -> TenantSubscription:
    """Override limits per tenant (None keeps one, `reset` names ones back to the plan); audited."""
    given = {
        "daily_limit": daily_limit,
        "monthly_limit": monthly_limit,
        "concurrent_limit": concurrent_limit,
        "max_providers": max_providers,
        "api_calls_per_minute": api_calls_per_minute,
        "api_calls_per_hour": api_calls_per_hour,
    }
    errors = limit_input_errors(given, reset)
    if errors:
        raise ValidationFailed("invalid limits", errors=errors)
    with bigquery_errors_translated():
        subscription = subscription_get(tenant_id=tenant_id)
        subscription_require_changeable(subscription)
        values, errors = limit_override_values(subscription, given, reset)
        if errors:
            raise ValidationFailed("invalid limits", errors=errors)
        limit_overrides_apply(tenant_id, subscription, values, actor)
    return subscription


def limit_input_errors(
    given: dict[str, int | None], reset: tuple[str, ...] | list[str]
) -> dict[str, list[str]]:
    """Errors of the limits on their own (no read): bounds, and names to reset."""
    errors: dict[str, list[str]] = {}
    for name, value in given.items():
        if value is None:
            continue
        low, high = LIMIT_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            errors[name] = [f"Use a whole number from {low} to {high}."]
    for name in reset:
        if name not in LIMIT_FIELDS:
            errors.setdefault("reset", []).append(f"{name!r} is not a limit; use {', '.join(LIMIT_FIELDS)}.")
        elif given.get(name) is not None:
            errors.setdefault(name, []).append("Give a value or reset it, not both.")
    return errors


def limit_override_values(
    subscription: TenantSubscription, given: dict[str, int | None], reset: tuple[str, ...] | list[str]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(columns to write, cross-field errors) for limits on `subscription` (its plan is the one reset to)."""
    plan = plan_get(subscription.plan_name)
    values: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    for name in reset:
        values[name] = getattr(plan, name) if name in PIPELINE_LIMITS else None
    # Cross-field rules on the limits as they will be.
    errors: dict[str, list[str]] = {}
    merged = subscription_effective_limits(subscription=subscription_with(subscription, values))
    if merged.monthly_limit < merged.daily_limit:
        errors["monthly_limit"] = [f"Must be at least the daily limit ({merged.daily_limit})."]
    if merged.api_calls_per_hour < merged.api_calls_per_minute:
        errors["api_calls_per_hour"] = [
            f"Must be at least the per-minute limit ({merged.api_calls_per_minute})."
        ]
    if "daily_limit" in values:
        values["max_pipelines_per_day"] = values["daily_limit"]
    return values, errors


def limit_overrides_apply(
    tenant_id: str, subscription: TenantSubscription, values: dict[str, Any], actor: str
) -> None:
    """Write checked limit `values` (`subscription` updated in place); audited if anything changed."""
    before = limit_snapshot(subscription)
    changed = {name: value for name, value in values.items() if before.get(name) != value}
    if not changed:
        return
    changed["updated_at"] = timezone.now()
    central_repository(TenantSubscription).update(subscription.subscription_id, changed)
    for name, value in changed.items():
        setattr(subscription, name, value)
    if any(name in changed for name in PIPELINE_LIMITS):
        usage_limits_sync(tenant_id, subscription)
    subscription_limits_forget(tenant_id=tenant_id)
    old, new = audit_changes(before, limit_snapshot(subscription))
    subscription_audit(AuditAction.SUBSCRIPTION_LIMITS_CHANGE, actor, subscription, before=old, after=new)
