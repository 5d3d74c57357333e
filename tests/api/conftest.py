"""API test fixtures: a bootstrapped central dataset, staff users and API clients."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tenants_app.models import PlanName, TenantProfile, TenantStatus
from tenants_app.repositories import central_repository
from tenants_app.services.bootstrap import bigquery_bootstrap
from tests.support.people import create_read_only_staff, create_staff, create_superuser, insert_profile


@pytest.fixture
def tenants_dataset(central_dataset: str) -> str:
    """The central dataset with its 8 tables, fresh for this test."""
    bigquery_bootstrap()
    return central_dataset


@pytest.fixture
def add_profile(tenants_dataset: str) -> Callable[..., TenantProfile]:
    """Insert tenant profiles directly (onboarding has its own tests)."""

    return insert_profile


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
    return create_superuser()


@pytest.fixture
def staff(db: None) -> User:
    return create_staff()


@pytest.fixture
def read_only_staff(db: None) -> User:
    return create_read_only_staff()


@pytest.fixture
def api_as() -> Callable[[User | None], APIClient]:
    """An API client logged in as `user` (or anonymous)."""

    def client_for(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return client

    return client_for
