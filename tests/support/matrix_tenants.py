"""Tenants for the access-control matrices, written in batches: one DML per table, as each DML copies it."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone

from tenants_app.kms import aad_for, get_kms
from tenants_app.models import (
    PlanName,
    Provider,
    SubscriptionStatus,
    TenantCloudCredential,
    TenantPipelineConfig,
    TenantProfile,
    TenantStatus,
    TenantSubscription,
    TenantWebhookEndpoint,
    ValidationStatus,
)
from tenants_app.repositories import central_repository
from tenants_app.services.credentials import AAD_TABLE, credential_validate
from tenants_app.services.onboarding import subscription_id_for
from tenants_app.services.plans import PLANS
from tenants_app.services.webhook_delivery import endpoint_aad

SECRET = "sk-" + "Mx7" * 12
CONFIG_BODY = {
    "provider": "GCP",
    "domain": "billing",
    "pipeline_template": "sql_transform",
    "schedule_cron": "0 3 * * *",
    "parameters": {"source_table": "raw_costs", "destination_table": "daily_costs"},
}


def insert_tenants(tenant_ids: list[str]) -> None:
    """Active tenants on STARTER, each with its subscription (two DML for all)."""
    now = timezone.now()
    plan = PLANS[PlanName.STARTER]
    central_repository(TenantProfile).insert(
        *(
            TenantProfile(
                tenant_id=tenant_id,
                company_name=f"{tenant_id} Ltd",
                admin_email="ops@matrix.example",
                tenant_dataset_id=tenant_id,
                status=TenantStatus.ACTIVE,
                subscription_plan=PlanName.STARTER,
                created_at=now,
            )
            for tenant_id in tenant_ids
        )
    )
    central_repository(TenantSubscription).insert(
        *(
            TenantSubscription(
                subscription_id=subscription_id_for(tenant_id),
                tenant_id=tenant_id,
                plan_name=PlanName.STARTER,
                status=SubscriptionStatus.ACTIVE,
                daily_limit=plan.daily_limit,
                monthly_limit=plan.monthly_limit,
                concurrent_limit=plan.concurrent_limit,
                max_pipelines_per_day=plan.daily_limit,
                created_at=now,
            )
            for tenant_id in tenant_ids
        )
    )


def insert_configs(tenant_ids: list[str]) -> dict[str, dict[str, str]]:
    """Per tenant: an active config, a paused one and three to delete (one DML for all)."""
    rows, ids = [], {}
    for tenant_id in tenant_ids:
        names = {
            name: f"cfg_{name}_{uuid.uuid4().hex[:8]}"
            for name in ("on", "paused", "doomed1", "doomed2", "doomed3")
        }
        ids[tenant_id] = names
        rows += [
            TenantPipelineConfig(
                config_id=config_id,
                tenant_id=tenant_id,
                is_active=name != "paused",
                next_run_time=timezone.now() + timedelta(days=1),
                timezone="UTC",
                priority=5,
                created_at=timezone.now(),
                created_by="test",
                **CONFIG_BODY,
            )
            for name, config_id in names.items()
        ]
    central_repository(TenantPipelineConfig).insert(*rows)
    return ids


def insert_credentials(tenant_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Per tenant: (an active credential, a deactivated one), encrypted as the service does (one DML)."""
    validated = credential_validate(provider=Provider.OPENAI, payload={"api_key": SECRET})
    rows, ids = [], {}
    for tenant_id in tenant_ids:
        ids[tenant_id] = (f"cred_{uuid.uuid4().hex}", f"cred_{uuid.uuid4().hex}")
        for credential_id, name in zip(ids[tenant_id], ("main", "old"), strict=True):
            rows.append(
                TenantCloudCredential(
                    credential_id=credential_id,
                    tenant_id=tenant_id,
                    provider=Provider.OPENAI,
                    encrypted_credentials=get_kms().encrypt(
                        validated.canonical, aad=aad_for(AAD_TABLE, tenant_id, credential_id)
                    ),
                    created_by_user_id="test",
                    updated_by_user_id="test",
                    created_at=timezone.now(),
                    credential_name=name,
                    credential_type=validated.credential_type,
                    fingerprint=validated.fingerprint,
                    validation_status=ValidationStatus.VALID,
                    is_active=name == "main",
                )
            )
    central_repository(TenantCloudCredential).insert(*rows)
    return ids


def insert_webhook_endpoints(tenant_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Per tenant: (an active webhook endpoint, a deleted one), secrets encrypted as the service does."""
    rows, ids = [], {}
    for tenant_id in tenant_ids:
        ids[tenant_id] = (f"whe_{uuid.uuid4().hex}", f"whe_{uuid.uuid4().hex}")
        for endpoint_id, active in zip(ids[tenant_id], (True, False), strict=True):
            rows.append(
                TenantWebhookEndpoint(
                    endpoint_id=endpoint_id,
                    tenant_id=tenant_id,
                    url="https://93.184.216.34/hook",
                    event_types=[],
                    encrypted_secret=get_kms().encrypt(
                        b"cvg_whsec_matrix", aad=endpoint_aad(tenant_id, endpoint_id)
                    ),
                    secret_prefix="cvg_whsec_matrix",
                    is_active=active,
                    created_at=timezone.now(),
                )
            )
    central_repository(TenantWebhookEndpoint).insert(*rows)
    return ids
