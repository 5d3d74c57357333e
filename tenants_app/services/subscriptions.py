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
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from tenants_app.models import (
    AuditLogEntry,
    SubscriptionStatus,
    TenantCloudCredential,
    TenantProfile,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import (
    AuditAction,
    actor_type_of,
    audit_changes,
    audit_record,
    audit_redact,
    current_audit_context,
)
from tenants_app.services.errors import DoesNotExist, SubscriptionCancelled, ValidationFailed
from tenants_app.services.generations import bump, generations, tenant_subject
from tenants_app.services.onboarding import usage_id_for
from tenants_app.services.plans import (
    STATUS_TRANSITIONS,
    TRIAL_DAYS,
    Plan,
    plan_get,
)

MAX_USAGE_DAYS = 90
# Pipeline limits live in NOT NULL columns; the others are NULL unless overridden.
PIPELINE_LIMITS = ("daily_limit", "monthly_limit", "concurrent_limit")
OPTIONAL_LIMITS = ("max_providers", "api_calls_per_minute", "api_calls_per_hour")
LIMIT_FIELDS = PIPELINE_LIMITS + OPTIONAL_LIMITS
# Bounds for per-tenant overrides: generous, but a typo (an extra zero or three) is caught.
LIMIT_BOUNDS: dict[str, tuple[int, int]] = {
    "daily_limit": (1, 100_000),
    "monthly_limit": (1, 3_000_000),
    "concurrent_limit": (1, 1_000),
    "max_providers": (1, 100),
    "api_calls_per_minute": (1, 100_000),
    "api_calls_per_hour": (1, 6_000_000),
}
MAX_TRIAL_DAYS = 366
# Audit actions of the writes that set `updated_at` on a subscription.
SUBSCRIPTION_ACTIONS = (
    AuditAction.SUBSCRIPTION_PLAN_CHANGE,
    AuditAction.SUBSCRIPTION_LIMITS_CHANGE,
    AuditAction.SUBSCRIPTION_STATUS_CHANGE,
    AuditAction.SUBSCRIPTION_TRIAL_EXPIRE,
)


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits that apply to a tenant now, and which of them differ from its plan's figures."""

    plan_name: str
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int
    max_providers: int
    api_calls_per_minute: int
    api_calls_per_hour: int
    overridden: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


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


# --- reads ------------------------------------------------------------------------------------------
def subscription_get(*, tenant_id: str) -> TenantSubscription:
    """The tenant's newest subscription (one job)."""
    rows = central_repository(TenantSubscription).list(
        filters={"tenant_id": tenant_id}, order_by=("-created_at",), limit=1
    )
    if not rows:
        raise DoesNotExist(f"tenant {tenant_id!r} has no subscription")
    return rows[0]


def usage_list(*, tenant_id: str, days: int = 30) -> list[TenantUsageQuota]:
    """Daily usage rows of the last `days` days, newest first (one job)."""
    if not 1 <= days <= MAX_USAGE_DAYS:
        raise ValidationFailed("invalid period", errors={"days": [f"Use 1 to {MAX_USAGE_DAYS}."]})
    since = timezone.now().date() - timedelta(days=days - 1)
    return central_repository(TenantUsageQuota).list(
        filters={"tenant_id": tenant_id, "usage_date__gte": since}, order_by=("-usage_date",), limit=days
    )


def subscription_effective_status(*, subscription: TenantSubscription, today: date | None = None) -> str:
    """The status that applies today: a TRIAL past its `trial_end_date` is EXPIRED."""
    today = today or timezone.now().astimezone(UTC).date()
    if (
        subscription.status == SubscriptionStatus.TRIAL
        and subscription.trial_end_date is not None
        and subscription.trial_end_date < today
    ):
        return SubscriptionStatus.EXPIRED
    return subscription.status


def subscription_effective_limits(
    *, subscription: TenantSubscription | None = None, tenant_id: str | None = None
) -> EffectiveLimits:
    """The limits in force: the subscription's columns, the plan's figure where a column is empty."""
    if subscription is None:
        if tenant_id is None:
            raise TypeError("give a subscription or a tenant_id")
        subscription = subscription_get(tenant_id=tenant_id)
    plan = plan_get(subscription.plan_name)
    values: dict[str, int] = {}
    overridden = []
    for name in LIMIT_FIELDS:
        own = getattr(subscription, name)
        values[name] = int(own) if own is not None else getattr(plan, name)
        if values[name] != getattr(plan, name):
            overridden.append(name)
    return EffectiveLimits(plan_name=plan.name, overridden=tuple(overridden), **values)


def subscription_limits_cached(*, tenant_id: str) -> EffectiveLimits:
    """The effective limits from the shared cache (one BigQuery job per tenant and period), current in
    every process at once after a change made through the services (generations.py)."""
    subject = tenant_subject(tenant_id)
    current, found = generations([subject], also=[_limits_cache_key(tenant_id)])
    cached = found.get(_limits_cache_key(tenant_id))
    if cached is not None and cached["generation"] == current[subject]:
        return cached["limits"]
    limits = subscription_effective_limits(tenant_id=tenant_id)
    entry = {"generation": current[subject], "limits": limits}
    cache.set(_limits_cache_key(tenant_id), entry, settings.API_RATE_LIMIT_CACHE_SECONDS)
    return limits


def subscription_limits_forget(*, tenant_id: str) -> None:
    """The limits changed: cached limits (and profiles, key verifications) of the tenant are stale."""
    bump(tenant_subject(tenant_id))


def plan_limits(plan: Plan) -> EffectiveLimits:
    """A plan's own figures, as the limits a tenant gets right after choosing it."""
    return EffectiveLimits(plan_name=plan.name, **{name: getattr(plan, name) for name in LIMIT_FIELDS})


# --- plan change ------------------------------------------------------------------------------------
def subscription_change_plan_preview(*, tenant_id: str, plan: str) -> PlanChangePreview:
    """Current and new limits side by side, with what the change means for today's usage (3 jobs)."""
    new_plan = plan_get(plan)
    with bigquery_errors_translated():
        subscription = subscription_get(tenant_id=tenant_id)
        usage = central_repository(TenantUsageQuota).find(usage_id_for(tenant_id, _today()))
        credentials = central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id})
    _check_not_cancelled(subscription)
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
        _check_not_cancelled(subscription)
        _apply_plan(tenant_id, subscription, new_plan, actor)
    return subscription


def _plan_values(plan: Plan) -> dict[str, Any]:
    """The subscription columns a move to `plan` writes: its figures, overrides dropped."""
    return {
        "plan_name": plan.name,
        **{name: getattr(plan, name) for name in PIPELINE_LIMITS},
        "max_pipelines_per_day": plan.daily_limit,
        **dict.fromkeys(OPTIONAL_LIMITS),
    }


def _apply_plan(tenant_id: str, subscription: TenantSubscription, new_plan: Plan, actor: str) -> None:
    """Write a checked plan change (`subscription` as read, updated in place); audited if it changed."""
    before = _limit_snapshot(subscription)
    changed = {name: value for name, value in _plan_values(new_plan).items() if before.get(name) != value}
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
    _sync_usage_limits(tenant_id, subscription)
    central_repository(TenantProfile).update_where(
        {"subscription_plan": new_plan.name, "updated_at": timezone.now()},
        filters={"tenant_id": tenant_id, "subscription_plan__ne": new_plan.name},
    )
    bump(tenant_subject(tenant_id))  # the profile names the plan: cached profiles are stale
    subscription_limits_forget(tenant_id=tenant_id)
    if changed:
        old, new = audit_changes(before, _limit_snapshot(subscription))
        _audit_subscription(AuditAction.SUBSCRIPTION_PLAN_CHANGE, actor, subscription, before=old, after=new)
    elif _last_change_unrecorded(subscription):
        # The same change again after one that failed past its first write (BigQuery went away, or
        # its answer was lost): that request wrote the plan but never its entry. The values before
        # it are gone; the entry says what the subscription is now, and that a retry finished it.
        _audit_subscription(
            AuditAction.SUBSCRIPTION_PLAN_CHANGE,
            actor,
            subscription,
            before=None,
            after={**audit_redact(_limit_snapshot(subscription)), "finished_by_retry": True},
        )


def _audit_subscription(
    action: AuditAction,
    actor: str,
    subscription: TenantSubscription,
    *,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """Record one change of `subscription` (one DML)."""
    audit_record(
        action=action,
        actor=actor,
        tenant_id=subscription.tenant_id,
        target_type="subscription",
        target_id=subscription.subscription_id,
        before=before,
        after=after,
    )


def _last_change_unrecorded(subscription: TenantSubscription) -> bool:
    """The subscription's last write has no audit entry (one job; only when a request changes nothing)."""
    if subscription.updated_at is None:
        return False
    recorded = central_repository(AuditLogEntry).count(
        filters={
            "tenant_id": subscription.tenant_id,
            "target_id": subscription.subscription_id,
            "action__in": list(SUBSCRIPTION_ACTIONS),
            "occurred_at__gte": subscription.updated_at,
        }
    )
    return recorded == 0


# --- status -----------------------------------------------------------------------------------------
def subscription_set_status(
    *, tenant_id: str, status: str, actor: str, trial_end_date: date | None = None
) -> TenantSubscription:
    """Change the subscription's state along the allowed transitions; audited. TRIAL takes an end date.

    The same state again is a no-op (200), except TRIAL with a new end date, which extends the trial.
    """
    today = _today()
    trial_end_date = _check_status_input(status, trial_end_date, today)
    with bigquery_errors_translated():
        subscription = subscription_get(tenant_id=tenant_id)
        values = _status_values(subscription, status, trial_end_date, today)
        if values:
            _apply_status(tenant_id, subscription, values, actor)
    return subscription


def _check_status_input(status: str, trial_end_date: date | None, today: date) -> date | None:
    """The status request on its own (no read): a known state; a trial end date only for TRIAL, in range."""
    if status not in SubscriptionStatus.values:
        raise ValidationFailed(
            f"unknown status {status!r}",
            errors={"status": [f"Choose one of {', '.join(SubscriptionStatus.values)}."]},
        )
    if trial_end_date is not None and status != SubscriptionStatus.TRIAL:
        raise ValidationFailed(
            "a trial end date needs status TRIAL", errors={"trial_end_date": ["Only with status TRIAL."]}
        )
    if status == SubscriptionStatus.TRIAL:
        trial_end_date = trial_end_date or today + timedelta(days=TRIAL_DAYS - 1)
        if not today <= trial_end_date <= today + timedelta(days=MAX_TRIAL_DAYS):
            raise ValidationFailed(
                "invalid trial end date",
                errors={"trial_end_date": [f"Use a day from today to {MAX_TRIAL_DAYS} days ahead."]},
            )
    return trial_end_date


def _status_values(
    subscription: TenantSubscription, status: str, trial_end_date: date | None, today: date
) -> dict[str, Any]:
    """The columns a status change writes (empty: nothing to do); ValidationFailed if not allowed."""
    current = subscription_effective_status(subscription=subscription, today=today)
    if status != SubscriptionStatus.CANCELLED:
        _check_not_cancelled(subscription)
    values: dict[str, Any] = {}
    if status == current == subscription.status:
        if status != SubscriptionStatus.TRIAL or trial_end_date == subscription.trial_end_date:
            return {}
        values["trial_end_date"] = trial_end_date
        return values
    allowed = STATUS_TRANSITIONS.get(current, frozenset())
    if status != current and status not in allowed:
        targets = ", ".join(sorted(allowed)) or "none (final)"
        raise ValidationFailed(
            f"cannot change a {current} subscription to {status}",
            errors={"status": [f"Subscription is {current}; allowed: {targets}."]},
        )
    values["status"] = status
    if status == SubscriptionStatus.TRIAL:
        values["trial_end_date"] = trial_end_date
    if status == SubscriptionStatus.CANCELLED:
        values["subscription_end_date"] = today
    return values


def _apply_status(
    tenant_id: str, subscription: TenantSubscription, values: dict[str, Any], actor: str
) -> None:
    """Write checked status `values` (conditional on the status read, updated in place); audited."""
    before = {name: getattr(subscription, name) for name in ("status", *values)}
    values = {**values, "updated_at": timezone.now()}
    # Conditional on the stored status we read: concurrent changes cannot both apply.
    matched = central_repository(TenantSubscription).update_where(
        values,
        filters={"subscription_id": subscription.subscription_id, "status": subscription.status},
    )
    if matched == 0:
        raise ValidationFailed(
            "the subscription changed meanwhile; reload", errors={"status": ["Changed meanwhile."]}
        )
    for name, value in values.items():
        setattr(subscription, name, value)
    after = {name: getattr(subscription, name) for name in before}
    old, new = audit_changes(before, after)
    _audit_subscription(AuditAction.SUBSCRIPTION_STATUS_CHANGE, actor, subscription, before=old, after=new)


def subscription_cancel(*, tenant_id: str, actor: str) -> TenantSubscription | None:
    """Cancel the tenant's subscription for good (offboarding); audited; None if it never had one.

    Idempotent: a cancelled one stays as it is, except that the repeat of a cancellation whose answer
    was lost after its UPDATE landed records the entry that request could not.
    """
    with bigquery_errors_translated():
        rows = central_repository(TenantSubscription).list(
            filters={"tenant_id": tenant_id}, order_by=("-created_at",), limit=1
        )
        if not rows:
            return None
        subscription = rows[0]
        if subscription.status != SubscriptionStatus.CANCELLED:
            values = _status_values(subscription, SubscriptionStatus.CANCELLED, None, _today())
            _apply_status(tenant_id, subscription, values, actor)
        elif _last_change_unrecorded(subscription):
            after = {"status": subscription.status, "finished_by_retry": True}
            _audit_subscription(
                AuditAction.SUBSCRIPTION_STATUS_CHANGE, actor, subscription, before=None, after=after
            )
    return subscription


def subscription_expire_trials(*, today: date, actor: str, dry_run: bool = False) -> list[str]:
    """Write EXPIRED on every TRIAL whose last day is before `today`; the tenants changed (audited).

    A constant number of statements whatever the number of tenants: one read, one conditional UPDATE,
    one read of what this call changed (its own `updated_at` stamp tells it from a concurrent run's),
    one audit INSERT. Safe to run twice or concurrently: a trial is expired, and recorded, once.
    """
    repository = central_repository(TenantSubscription)
    with bigquery_errors_translated():
        due = repository.list(
            filters={"status": SubscriptionStatus.TRIAL, "trial_end_date__lt": today},
            order_by=("tenant_id",),
        )
        if dry_run or not due:
            return sorted({row.tenant_id for row in due})
        ids = [row.subscription_id for row in due]
        stamp = timezone.now()
        repository.update_where(
            {"status": SubscriptionStatus.EXPIRED, "updated_at": stamp},
            filters={"subscription_id__in": ids, "status": SubscriptionStatus.TRIAL},
        )
        changed = repository.list(
            filters={"subscription_id__in": ids, "status": SubscriptionStatus.EXPIRED, "updated_at": stamp}
        )
        by_id = {row.subscription_id: row for row in due}
        _audit_many(
            action=AuditAction.SUBSCRIPTION_TRIAL_EXPIRE,
            actor=actor,
            rows=[
                (
                    row.tenant_id,
                    row.subscription_id,
                    {
                        "status": SubscriptionStatus.TRIAL,
                        "trial_end_date": by_id[row.subscription_id].trial_end_date,
                    },
                    {"status": SubscriptionStatus.EXPIRED},
                )
                for row in changed
            ],
        )
    return sorted({row.tenant_id for row in changed})


# --- per-tenant limits ------------------------------------------------------------------------------
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
    errors = _check_limit_input(given, reset)
    if errors:
        raise ValidationFailed("invalid limits", errors=errors)
    with bigquery_errors_translated():
        subscription = subscription_get(tenant_id=tenant_id)
        _check_not_cancelled(subscription)
        values, errors = _limit_values(subscription, given, reset)
        if errors:
            raise ValidationFailed("invalid limits", errors=errors)
        _apply_limits(tenant_id, subscription, values, actor)
    return subscription


def _check_limit_input(
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


def _limit_values(
    subscription: TenantSubscription, given: dict[str, int | None], reset: tuple[str, ...] | list[str]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(columns to write, cross-field errors) for limits on `subscription` (its plan is the one reset to)."""
    plan = plan_get(subscription.plan_name)
    values: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    for name in reset:
        values[name] = getattr(plan, name) if name in PIPELINE_LIMITS else None
    # Cross-field rules on the limits as they will be.
    errors: dict[str, list[str]] = {}
    merged = subscription_effective_limits(subscription=_with(subscription, values))
    if merged.monthly_limit < merged.daily_limit:
        errors["monthly_limit"] = [f"Must be at least the daily limit ({merged.daily_limit})."]
    if merged.api_calls_per_hour < merged.api_calls_per_minute:
        errors["api_calls_per_hour"] = [
            f"Must be at least the per-minute limit ({merged.api_calls_per_minute})."
        ]
    if "daily_limit" in values:
        values["max_pipelines_per_day"] = values["daily_limit"]
    return values, errors


def _apply_limits(
    tenant_id: str, subscription: TenantSubscription, values: dict[str, Any], actor: str
) -> None:
    """Write checked limit `values` (`subscription` updated in place); audited if anything changed."""
    before = _limit_snapshot(subscription)
    changed = {name: value for name, value in values.items() if before.get(name) != value}
    if not changed:
        return
    changed["updated_at"] = timezone.now()
    central_repository(TenantSubscription).update(subscription.subscription_id, changed)
    for name, value in changed.items():
        setattr(subscription, name, value)
    if any(name in changed for name in PIPELINE_LIMITS):
        _sync_usage_limits(tenant_id, subscription)
    subscription_limits_forget(tenant_id=tenant_id)
    old, new = audit_changes(before, _limit_snapshot(subscription))
    _audit_subscription(AuditAction.SUBSCRIPTION_LIMITS_CHANGE, actor, subscription, before=old, after=new)


# --- several changes at once ------------------------------------------------------------------------
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
    today = _today()
    new_plan = plan_get(plan) if plan is not None else None
    errors = _check_limit_input(given, reset) if limits or reset else {}
    if status is not None:
        try:
            trial_end_date = _check_status_input(status, trial_end_date, today)
        except ValidationFailed as exc:
            errors.update(exc.errors)
    elif trial_end_date is not None:
        errors["trial_end_date"] = ["Only with status TRIAL."]
    if errors:
        raise ValidationFailed("invalid subscription change", errors=errors)
    with bigquery_errors_translated():
        subscription = subscription_get(tenant_id=tenant_id)
        if new_plan is not None or limits or reset:
            _check_not_cancelled(subscription)
        resulting = _with(subscription, _plan_values(new_plan)) if new_plan is not None else subscription
        limit_values: dict[str, Any] = {}
        if limits or reset:
            limit_values, errors = _limit_values(resulting, given, reset)
        status_values: dict[str, Any] = {}
        if status is not None:
            try:
                status_values = _status_values(subscription, status, trial_end_date, today)
            except ValidationFailed as exc:
                errors.update(exc.errors)
        if errors:
            raise ValidationFailed("invalid subscription change", errors=errors)
        # Everything checked: now write.
        if new_plan is not None:
            _apply_plan(tenant_id, subscription, new_plan, actor)
        if limit_values:
            _apply_limits(tenant_id, subscription, limit_values, actor)
        if status_values:
            _apply_status(tenant_id, subscription, status_values, actor)
    return subscription


# --- internals --------------------------------------------------------------------------------------
def _limits_cache_key(tenant_id: str) -> str:
    return f"cvg:limits:v2:{tenant_id}"


def _audit_many(
    *, action: AuditAction, actor: str, rows: list[tuple[str, str, dict[str, Any], dict[str, Any]]]
) -> None:
    """One audit entry per (tenant, subscription, before, after), all in one INSERT."""
    if not rows:
        return
    context = current_audit_context()
    now = timezone.now()
    entries = [
        AuditLogEntry(
            audit_id=uuid.uuid4().hex,
            occurred_at=now,
            actor=actor,
            actor_type=actor_type_of(actor),
            source=context.source,
            action=str(action),
            tenant_id=tenant_id,
            target_type="subscription",
            target_id=target_id,
            before_values=audit_redact(before),
            after_values=audit_redact(after),
            request_id=context.request_id,
        )
        for tenant_id, target_id, before, after in rows
    ]
    central_repository(AuditLogEntry).insert(*entries)


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _check_not_cancelled(subscription: TenantSubscription) -> None:
    # A 409, not a 400: nothing in the request is wrong, the subscription's state refuses every change.
    if subscription.status == SubscriptionStatus.CANCELLED:
        raise SubscriptionCancelled(
            "The subscription is CANCELLED, which is final (its tenant was offboarded or it was "
            "cancelled): its plan, limits and status no longer change; onboard the customer again."
        )


def _limit_snapshot(subscription: TenantSubscription) -> dict[str, Any]:
    names = ("plan_name", *LIMIT_FIELDS, "max_pipelines_per_day")
    return {name: getattr(subscription, name) for name in names}


def _with(subscription: TenantSubscription, values: dict[str, Any]) -> TenantSubscription:
    copy = TenantSubscription(
        **{f.attname: getattr(subscription, f.attname) for f in subscription._meta.fields}
    )
    for name, value in values.items():
        setattr(copy, name, value)
    return copy


def _sync_usage_limits(tenant_id: str, subscription: TenantSubscription) -> None:
    """Today's usage row shows the new pipeline limits at once (admission writes them back anyway)."""
    central_repository(TenantUsageQuota).update_where(
        {
            "daily_limit": subscription.daily_limit,
            "monthly_limit": subscription.monthly_limit,
            "concurrent_limit": subscription.concurrent_limit,
            "last_updated": timezone.now(),
        },
        filters={"usage_id": usage_id_for(tenant_id, _today())},
    )
