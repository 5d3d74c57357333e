"""Helpers of the schedule tests: tenants with a subscription, and config rows written directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tenants_app.models import (
    SubscriptionStatus,
    TenantPipelineConfig,
    TenantProfile,
    TenantStatus,
    TenantSubscription,
)
from tenants_app.repositories import central_repository

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def add_tenant(
    *, status: str = TenantStatus.ACTIVE, subscription: str = SubscriptionStatus.ACTIVE, prefix: str = "s"
) -> str:
    """A tenant profile and its subscription (one DML each)."""
    tenant_id = f"{prefix}_{uuid.uuid4().hex[:12]}"
    central_repository(TenantProfile).insert(
        TenantProfile(
            tenant_id=tenant_id,
            company_name="Acme",
            admin_email="ops@acme.example",
            tenant_dataset_id=tenant_id,
            status=status,
            subscription_plan="SCALE",
            created_at=T0 - timedelta(days=30),
        )
    )
    central_repository(TenantSubscription).insert(
        TenantSubscription(
            subscription_id=f"{tenant_id}_sub",
            tenant_id=tenant_id,
            plan_name="SCALE",
            status=subscription,
            daily_limit=100,
            monthly_limit=3000,
            concurrent_limit=10,
            created_at=T0 - timedelta(days=30),
        )
    )
    return tenant_id


def config_row(tenant_id: str, index: int = 0, **values: object) -> TenantPipelineConfig:
    return TenantPipelineConfig(
        **{
            "config_id": f"{tenant_id}_c{index:04d}",
            "tenant_id": tenant_id,
            "provider": "GCP",
            "domain": "billing",
            "pipeline_template": "daily_costs",
            "schedule_cron": "0 * * * *",
            "timezone": "UTC",
            "is_active": True,
            "next_run_time": T0,
            "parameters": {"window": index},
            "priority": 3,
            "created_at": T0 - timedelta(days=1),
            **values,
        }
    )
