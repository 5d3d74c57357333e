"""Tenants with a burst of due runs, written the product's way, for benches of the worker side.

    onboard_tenants(tenant_ids=ids, plan="PROFESSIONAL", concurrent_limit=20, actor="system:bench")
    enqueue_due_burst(tenant_ids=ids, runs=2000, now=timezone.now(), actor="system:bench")

Onboarding is `tenant_onboard` (profile, subscription, usage row, dataset, views, key, audit) and the
override `subscription_set_limits`; the runs are enqueued by the scheduler's own `runs_enqueue` (two
MERGEs whatever the count), so the rows are exactly what `schedule_pipelines` writes. Point the app
straight at the emulator while seeding: through the realism proxy it takes minutes.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from tenants_app.models import Provider, TenantPipelineConfig
from tenants_app.repositories import central_repository
from tenants_app.services.onboarding import tenant_onboard
from tenants_app.services.scheduler import EnqueueEntry, runs_enqueue, scheduled_run_id
from tenants_app.services.subscription_overrides import subscription_set_limits

# Onboardings at once: each waits on the emulator, which runs one statement at a time anyway.
ONBOARDING_THREADS = 4


def onboard_tenants(
    *,
    tenant_ids: list[str],
    plan: str,
    concurrent_limit: int | None,
    actor: str,
    daily_limit: int | None = None,
) -> None:
    """Onboard each tenant on `plan`; with `concurrent_limit` or `daily_limit`, override those limits
    (audited, as staff do)."""

    def one(tenant_id: str) -> None:
        tenant_onboard(
            tenant_id=tenant_id,
            company_name=f"Bench {tenant_id}",
            admin_email=f"ops@{tenant_id.replace('_', '-')}.example.com",
            plan=plan,
            created_by=actor,
        )
        if concurrent_limit or daily_limit:
            subscription_set_limits(
                tenant_id=tenant_id,
                actor=actor,
                concurrent_limit=concurrent_limit or None,
                daily_limit=daily_limit or None,
            )

    with ThreadPoolExecutor(ONBOARDING_THREADS) as pool:
        list(pool.map(one, tenant_ids))


def enqueue_due_burst(*, tenant_ids: list[str], runs: int, now: datetime, actor: str) -> int:
    """One config per tenant, then `runs` due slots over them; returns the runs enqueued.

    Slot k of every config is the same minute, so the claim order (priority, scheduled_time, run_id)
    walks across all tenants before it takes any tenant's next run: no tenant's quota fills first.
    """
    configs = [
        TenantPipelineConfig(
            config_id=f"cfg_{tenant_id}",
            tenant_id=tenant_id,
            provider=Provider.GCP,
            domain="billing",
            pipeline_template="daily_costs",
            schedule_cron="0 0 1 1 *",
            timezone="UTC",
            is_active=True,
            next_run_time=now + timedelta(days=365),  # never due while the bench runs
            priority=5,
            created_at=now,
            created_by=actor,
        )
        for tenant_id in tenant_ids
    ]
    central_repository(TenantPipelineConfig).insert(*configs)
    per_config = math.ceil(runs / len(tenant_ids))
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=per_config + 1)
    entries = [
        EnqueueEntry(run_id=scheduled_run_id(config.config_id, slot), config_id=config.config_id, slot=slot)
        for slot in (first + timedelta(minutes=k) for k in range(per_config))
        for config in configs
    ][:runs]
    return runs_enqueue(entries=entries, now=now)
