"""Users and tenant rows that the API, portal and browser tests all start from."""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth.models import Group, User

from tenants_app.models import PlanName, SubscriptionStatus, TenantProfile, TenantStatus, TenantSubscription
from tenants_app.repositories import central_repository
from tenants_app.services.plans import PLANS

# Test users' password: the tests log in with it, nothing else ever sees it.
TEST_PASSWORD = "x"


def create_superuser(password: str = TEST_PASSWORD) -> User:
    return User.objects.create_superuser("root", "root@example.com", password)


def create_staff(password: str = TEST_PASSWORD) -> User:
    return User.objects.create_user("operator", password=password, is_staff=True)


def create_read_only_staff(password: str = TEST_PASSWORD) -> User:
    """Staff in the read-only group: they see everything and change nothing."""
    user = User.objects.create_user("auditor", password=password, is_staff=True)
    user.groups.add(Group.objects.get_or_create(name=settings.READ_ONLY_STAFF_GROUP)[0])
    return user


def insert_profile(tenant_id: str, **values: object) -> TenantProfile:
    """Insert a tenant profile directly (one DML; onboarding has its own tests) and return it."""
    profile = TenantProfile(
        tenant_id=tenant_id,
        company_name=values.pop("company_name", f"{tenant_id} Ltd"),
        admin_email=values.pop("admin_email", f"ops@{tenant_id.replace('_', '-')}.example.com"),
        tenant_dataset_id=tenant_id,
        status=values.pop("status", TenantStatus.ACTIVE),
        subscription_plan=values.pop("subscription_plan", PlanName.STARTER),
        created_at=values.pop("created_at", datetime(2026, 1, 1, tzinfo=UTC)),
        **values,
    )
    central_repository(TenantProfile).insert(profile)
    return profile


def insert_subscription(tenant_id: str, plan: str = PlanName.SCALE, **values: object) -> TenantSubscription:
    """Insert an ACTIVE subscription with the plan's limits directly (one DML) and return it."""
    limits = PLANS[plan]
    subscription = TenantSubscription(
        subscription_id=values.pop("subscription_id", f"sub_{tenant_id}"),
        tenant_id=tenant_id,
        plan_name=plan,
        status=values.pop("status", SubscriptionStatus.ACTIVE),
        daily_limit=limits.daily_limit,
        monthly_limit=limits.monthly_limit,
        concurrent_limit=limits.concurrent_limit,
        **values,
    )
    central_repository(TenantSubscription).insert(subscription)
    return subscription


def onboard_tenant(prefix: str, *, plan: str = PlanName.STARTER) -> tuple[str, str]:
    """A tenant onboarded through the service (dataset, rows, initial key): its id and initial key."""
    from tenants_app.services.onboarding import tenant_onboard  # services load the app registry
    from tests.conftest import unique_name

    tenant_id = unique_name(prefix)
    result = tenant_onboard(
        tenant_id=tenant_id,
        company_name=f"{prefix} Inc",
        admin_email="ops@example.com",
        plan=plan,
        created_by="test",
    )
    assert result.api_key is not None
    return tenant_id, result.api_key.plaintext
