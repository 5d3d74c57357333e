"""Moving a tenant to another plan, and the preview staff confirm first.

A plan change gives the tenant exactly the new plan's figures: per-tenant overrides are dropped
(choosing the current plan again is how staff reset overrides). The subscription, today's usage row
and the profile change together; the same change again finishes one that failed after its first write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from tenants_app.models import TenantCloudCredential, TenantProfile, TenantSubscription, TenantUsageQuota
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import AuditAction, audit_changes, audit_redact
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.generations import bump, tenant_subject
from tenants_app.services.onboarding import usage_id_for
from tenants_app.services.plans import Plan, plan_get
from tenants_app.services.subscription_changes import (
    limit_snapshot,
    subscription_audit,
    subscription_change_unrecorded,
    subscription_require_changeable,
    usage_limits_sync,
    utc_today,
)
from tenants_app.services.subscription_selectors import (
    LIMIT_FIELDS,
    OPTIONAL_LIMITS,
    PIPELINE_LIMITS,
    EffectiveLimits,
    plan_limits,
    subscription_effective_limits,
    subscription_get,
    subscription_limits_forget,
)


@dataclass(frozen=True)
class PlanChangePreview:
    """What a plan change would do, shown before staff confirm it."""

    tenant_id: str
    current_plan: str
    new_plan: str
    status: str
    limits_before: EffectiveLimits
    limits_after: EffectiveLimits
    # name -> (before, after), only the limits that change
    changes: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Plain-language consequences: today's usage above a new limit, providers above the new maximum...
    warnings: tuple[str, ...] = ()

    @property
    def is_noop(self) -> bool:
        return self.current_plan == self.new_plan and not self.changes


def subscription_change_plan_preview(*, tenant_id: str, plan: str) -> PlanChangePreview:
    """Current and new limits side by side, with what the change means for today's usage (3 jobs)."""
    new_plan = plan_get(plan)
    with bigquery_errors_translated():
        subscription = subscription_get(tenant_id=tenant_id)
        usage = central_repository(TenantUsageQuota).find(usage_id_for(tenant_id, utc_today()))
        credentials = central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id})
    subscription_require_changeable(subscription)
    before = subscription_effective_limits(subscription=subscription)
    after = plan_limits(new_plan)
    changes = {
        name: (getattr(before, name), getattr(after, name))
        for name in LIMIT_FIELDS
        if getattr(before, name) != getattr(after, name)
    }
    warnings = []
    if usage is not None:
        if usage.pipelines_run_today >= after.daily_limit:
            warnings.append(
                f"{usage.pipelines_run_today} runs today already reach the new daily limit of "
                f"{after.daily_limit}: no more runs today."
            )
        if usage.pipelines_run_month >= after.monthly_limit:
            warnings.append(
                f"{usage.pipelines_run_month} runs this month already reach the new monthly limit of "
                f"{after.monthly_limit}: no more runs this month."
            )
        if usage.concurrent_pipelines_running > after.concurrent_limit:
            warnings.append(
                f"{usage.concurrent_pipelines_running} runs are running, above the new concurrent limit "
                f"of {after.concurrent_limit}: they finish, new ones wait."
            )
    providers = {row.provider for row in credentials if row.is_active is not False}
    if len(providers) > after.max_providers:
        warnings.append(
            f"Credentials for {len(providers)} providers are active, above the new maximum of "
            f"{after.max_providers}: they keep working, no new provider can be added."
        )
    if before.overridden:
        warnings.append(
            f"Per-tenant overrides are replaced by the plan's figures: {', '.join(before.overridden)}."
        )
    return PlanChangePreview(
        tenant_id=tenant_id,
        current_plan=subscription.plan_name,
        new_plan=new_plan.name,
        status=subscription.status,
        limits_before=before,
        limits_after=after,
        changes=changes,
        warnings=tuple(warnings),
    )


def subscription_change_plan(*, tenant_id: str, plan: str, actor: str) -> TenantSubscription:
    """Move the tenant to `plan`: subscription limits, today's usage row and the profile at once; audited.

    Idempotent: the same change again re-applies the usage row and profile (finishing a change that
    failed after its first write) and records no second audit entry.
    """
    new_plan = plan_get(plan)
    with bigquery_errors_translated():
        subscription = subscription_get(tenant_id=tenant_id)
        subscription_require_changeable(subscription)
        plan_change_apply(tenant_id, subscription, new_plan, actor)
    return subscription


def plan_change_values(plan: Plan) -> dict[str, Any]:
    """The subscription columns a move to `plan` writes: its figures, overrides dropped."""
    return {
        "plan_name": plan.name,
        **{name: getattr(plan, name) for name in PIPELINE_LIMITS},
        "max_pipelines_per_day": plan.daily_limit,
        **dict.fromkeys(OPTIONAL_LIMITS),
    }


def plan_change_apply(tenant_id: str, subscription: TenantSubscription, new_plan: Plan, actor: str) -> None:
    """Write a checked plan change (`subscription` as read, updated in place); audited if it changed."""
    before = limit_snapshot(subscription)
    changed = {
        name: value for name, value in plan_change_values(new_plan).items() if before.get(name) != value
    }
    if changed:
        now = timezone.now()
        # Conditional on the plan we read: a concurrent change makes this match nothing.
        matched = central_repository(TenantSubscription).update_where(
            {**changed, "updated_at": now},
            filters={
                "subscription_id": subscription.subscription_id,
                "plan_name": subscription.plan_name,
            },
        )
        if matched == 0:
            raise ValidationFailed(
                "the subscription changed meanwhile; reload", errors={"plan": ["Changed meanwhile."]}
            )
        for name, value in {**changed, "updated_at": now}.items():
            setattr(subscription, name, value)
    usage_limits_sync(tenant_id, subscription)
    central_repository(TenantProfile).update_where(
        {"subscription_plan": new_plan.name, "updated_at": timezone.now()},
        filters={"tenant_id": tenant_id, "subscription_plan__ne": new_plan.name},
    )
    bump(tenant_subject(tenant_id))  # the profile names the plan: cached profiles are stale
    subscription_limits_forget(tenant_id=tenant_id)
    if changed:
        old, new = audit_changes(before, limit_snapshot(subscription))
        subscription_audit(AuditAction.SUBSCRIPTION_PLAN_CHANGE, actor, subscription, before=old, after=new)
    elif subscription_change_unrecorded(subscription):
        # The same change again after one that failed past its first write (BigQuery went away, or
        # its answer was lost): that request wrote the plan but never its entry. The values before
        # it are gone; the entry says what the subscription is now, and that a retry finished it.
        subscription_audit(
            AuditAction.SUBSCRIPTION_PLAN_CHANGE,
            actor,
            subscription,
            before=None,
            after={**audit_redact(limit_snapshot(subscription)), "finished_by_retry": True},
        )
