"""Test helpers for plans and quotas: a tenant with a subscription, usage rows put in place directly."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from django.utils import timezone

from tenants_app.models import (
    SubscriptionStatus,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantStatus,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.onboarding import subscription_id_for, usage_id_for
from tenants_app.services.plans import PLANS

# The day the quota tests count on: a fixed one, so no test depends on today or on its month.
DAY = date(2031, 3, 18)


def tenant_with_subscription(
    *,
    plan: str = "STARTER",
    status: str = SubscriptionStatus.ACTIVE,
    tenant_status: str = TenantStatus.ACTIVE,
    trial_end_date: date | None = None,
    **limits: Any,
) -> str:
    """Insert a profile and its subscription (two DML) and return the tenant id."""
    tenant_id = f"t_{uuid.uuid4().hex[:12]}"
    chosen = PLANS[plan]
    central_repository(TenantProfile).insert(
        TenantProfile(
            tenant_id=tenant_id,
            company_name="Acme Corp",
            admin_email="admin@acme.example",
            tenant_dataset_id=tenant_id,
            status=tenant_status,
            subscription_plan=plan,
            created_at=timezone.now(),
        )
    )
    values: dict[str, Any] = {
        "daily_limit": chosen.daily_limit,
        "monthly_limit": chosen.monthly_limit,
        "concurrent_limit": chosen.concurrent_limit,
        "max_pipelines_per_day": chosen.daily_limit,
        **limits,
    }
    central_repository(TenantSubscription).insert(
        TenantSubscription(
            subscription_id=subscription_id_for(tenant_id),
            tenant_id=tenant_id,
            plan_name=plan,
            status=status,
            trial_end_date=trial_end_date,
            created_at=timezone.now(),
            **values,
        )
    )
    return tenant_id


def put_usage(tenant_id: str, day: date, **values: Any) -> TenantUsageQuota:
    """Insert a usage row for `day` with the given counters (one DML)."""
    subscription = central_repository(TenantSubscription).get(subscription_id_for(tenant_id))
    fields: dict[str, Any] = {
        "daily_limit": subscription.daily_limit,
        "monthly_limit": subscription.monthly_limit,
        "concurrent_limit": subscription.concurrent_limit,
        **values,
    }
    row = TenantUsageQuota(
        usage_id=usage_id_for(tenant_id, day),
        tenant_id=tenant_id,
        usage_date=day,
        last_updated=timezone.now(),
        created_at=timezone.now(),
        **fields,
    )
    central_repository(TenantUsageQuota).insert(row)
    return row


def usage(tenant_id: str, day: date) -> TenantUsageQuota | None:
    return central_repository(TenantUsageQuota).find(usage_id_for(tenant_id, day))


def at(day: date, hour: int = 12, minute: int = 0) -> datetime:
    """A UTC moment on `day`."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def queue_entries(tenant_id: str, *entries: tuple[str, date | None]) -> None:
    """Insert queue entries (state, usage_date) for the tenant in one DML, as claims leave them."""
    central_repository(TenantPipelineExecutionQueue).insert(
        *[
            TenantPipelineExecutionQueue(
                run_id=f"run_{uuid.uuid4().hex[:12]}",
                tenant_id=tenant_id,
                pipeline_id="gcp_cost_ingest",
                state=state,
                scheduled_time=datetime(2031, 1, 1, tzinfo=UTC),
                priority=5,
                attempt=1,
                usage_date=usage_date,
            )
            for state, usage_date in entries
        ]
    )
