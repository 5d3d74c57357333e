"""API test fixtures: a bootstrapped central dataset, staff users and API clients."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from tenants_app.models import PlanName, TenantProfile, TenantStatus
from tenants_app.repositories import central_repository
from tenants_app.services.bootstrap import bigquery_bootstrap


@pytest.fixture
def tenants_dataset(central_dataset: str) -> str:
    """The central dataset with its 8 tables, fresh for this test."""
    bigquery_bootstrap()
    return central_dataset


@pytest.fixture
def add_profile(tenants_dataset: str) -> Callable[..., TenantProfile]:
    """Insert tenant profiles directly (onboarding has its own tests)."""

    def add(tenant_id: str, **values: object) -> TenantProfile:
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

    return add


@pytest.fixture
def add_profiles(add_profile: Callable[..., TenantProfile]) -> Callable[[int], list[TenantProfile]]:
    """Insert `n` profiles in one statement, created a minute apart."""

    def add(n: int) -> list[TenantProfile]:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        profiles = [
            TenantProfile(
                tenant_id=f"tenant_{i:03d}",
                company_name=f"Company {i:03d}",
                admin_email=f"ops{i}@example.com",
                tenant_dataset_id=f"tenant_{i:03d}",
                status=TenantStatus.ACTIVE if i % 2 else TenantStatus.TRIAL,
                subscription_plan=PlanName.SCALE if i % 3 == 0 else PlanName.STARTER,
                created_at=start + timedelta(minutes=i),
            )
            for i in range(n)
        ]
        central_repository(TenantProfile).insert(*profiles)
        return profiles

    return add


@pytest.fixture
def superuser(db: None) -> User:
    return User.objects.create_superuser("root", "root@example.com", "x")


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_user("operator", password="x", is_staff=True)


@pytest.fixture
def read_only_staff(db: None) -> User:
    user = User.objects.create_user("auditor", password="x", is_staff=True)
    user.groups.add(Group.objects.get_or_create(name=django_settings.READ_ONLY_STAFF_GROUP)[0])
    return user


@pytest.fixture
def api_as() -> Callable[[User | None], APIClient]:
    """An API client logged in as `user` (or anonymous)."""

    def client_for(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return client

    return client_for
