"""One verdict from the tenant's status and its subscription's: level, headline and allowed operations."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from django.utils import timezone

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import SubscriptionStatus, TenantProfile, TenantStatus, TenantSubscription
from tenants_app.repositories import central_repository
from tenants_app.services.tenant_capabilities import tenant_capabilities, tenant_capabilities_for

TODAY = date(2026, 12, 3)


def profile(status: str = TenantStatus.ACTIVE, tenant_id: str = "t_acme") -> TenantProfile:
    return TenantProfile(
        tenant_id=tenant_id,
        company_name="Acme Corp",
        admin_email="ops@acme.example",
        tenant_dataset_id=tenant_id,
        status=status,
        subscription_plan="STARTER",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def subscription(
    status: str = SubscriptionStatus.ACTIVE, trial_end_date: date | None = None, tenant_id: str = "t_acme"
) -> TenantSubscription:
    return TenantSubscription(
        subscription_id=f"sub_{uuid.uuid4().hex}",
        tenant_id=tenant_id,
        plan_name="STARTER",
        status=status,
        trial_end_date=trial_end_date,
        daily_limit=6,
        monthly_limit=180,
        concurrent_limit=1,
        created_at=timezone.now(),
    )


@pytest.mark.parametrize(
    ("tenant_status", "sub", "level", "headline", "allowed"),
    [
        (
            TenantStatus.SUSPENDED,
            subscription(),
            "blocked",
            "Suspended: API keys refused, no pipeline runs",
            ("read",),
        ),
        (
            TenantStatus.TRIAL,
            subscription(SubscriptionStatus.TRIAL, date(2026, 12, 10)),
            "ok",
            "Trial ends 2026-12-10: everything allowed",
            ("read", "run", "configure"),
        ),
        (
            TenantStatus.ACTIVE,
            subscription(SubscriptionStatus.TRIAL, date(2026, 12, 2)),
            "blocked",
            "Trial ended 2026-12-02: read only, no pipeline runs",
            ("read",),
        ),
        (
            TenantStatus.ACTIVE,
            subscription(),
            "ok",
            "Active: everything allowed",
            ("read", "run", "configure"),
        ),
        (
            TenantStatus.ACTIVE,
            subscription(SubscriptionStatus.PAST_DUE),
            "limited",
            "Payment past due: pipelines keep running, no new pipelines or credentials",
            ("read", "run"),
        ),
        (
            TenantStatus.ACTIVE,
            subscription(SubscriptionStatus.SUSPENDED),
            "blocked",
            "Subscription suspended: read only, no pipeline runs",
            ("read",),
        ),
        (
            TenantStatus.CANCELLED,
            subscription(SubscriptionStatus.CANCELLED),
            "blocked",
            "Offboarded (cancelled): API keys refused, no pipeline runs",
            ("read",),
        ),
        (
            TenantStatus.ACTIVE,
            None,
            "blocked",
            "No subscription: read only, no pipeline runs",
            ("read",),
        ),
    ],
)
def test_it_combines_the_tenant_status_and_the_subscription_status_into_one_verdict(
    tenant_status: str, sub: TenantSubscription | None, level: str, headline: str, allowed: tuple[str, ...]
) -> None:
    verdict = tenant_capabilities(profile=profile(tenant_status), subscription=sub, today=TODAY)

    assert (verdict.level, verdict.headline, verdict.allowed_operations) == (level, headline, allowed)
    assert verdict.keys_accepted == (tenant_status in {TenantStatus.ACTIVE, TenantStatus.TRIAL})
    assert verdict.level_label == {"ok": "OK", "limited": "Limited", "blocked": "Blocked"}[level]


def test_it_reads_the_newest_subscription_of_a_whole_page_of_tenants_in_one_job(
    central: str, gateway: BigQueryGateway
) -> None:
    profiles = [profile(tenant_id=f"t_{uuid.uuid4().hex[:10]}") for _ in range(3)]
    old, new = subscription(tenant_id=profiles[0].tenant_id), subscription(tenant_id=profiles[0].tenant_id)
    old.created_at, new.status = datetime(2026, 1, 1, tzinfo=UTC), SubscriptionStatus.PAST_DUE
    suspended = subscription(SubscriptionStatus.SUSPENDED, tenant_id=profiles[1].tenant_id)
    central_repository(TenantSubscription).insert(old, new, suspended)

    with gateway.count_jobs() as counter:
        verdicts = tenant_capabilities_for(profiles=profiles, today=TODAY)

    assert counter.jobs == 1
    assert [verdicts[p.tenant_id].level for p in profiles] == ["limited", "blocked", "blocked"]
    assert verdicts[profiles[2].tenant_id].headline.startswith("No subscription")
