"""Portal test fixtures: a bootstrapped central dataset per module and logged-in Django test clients.

- `portal_dataset` (module): the central dataset with every table, shared by one module's tests; give
  each test its own tenant ids (`add_tenant()` makes unique ones) and filter by them.
- `superuser`, `staff_user`, `read_only_user`, `non_staff_user`: Django users (password "x").
- `superuser_client`, `staff_client`, `read_only_client`, `non_staff_client`, `anonymous_client`:
  `django.test.Client`s logged in as those users (or not at all).
- `add_tenant(**values)`: inserts a tenant profile (one DML) and returns it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client, override_settings

from tenants_app.models import PlanName, TenantProfile, TenantStatus
from tenants_app.repositories import central_repository
from tenants_app.services.bootstrap import bigquery_bootstrap
from tests.conftest import unique_name

AddTenant = Callable[..., TenantProfile]


@pytest.fixture(scope="module")
def portal_dataset() -> Iterator[str]:
    """A bootstrapped central dataset shared by one module's tests."""
    name = unique_name("portal")
    with override_settings(TENANTS_DATASET=name):
        bigquery_bootstrap()
        yield name


@pytest.fixture
def add_tenant(portal_dataset: str) -> AddTenant:
    """Insert a tenant profile directly (onboarding has its own tests); ids are unique per call."""

    def add(**values: object) -> TenantProfile:
        tenant_id = str(values.pop("tenant_id", f"t_{uuid.uuid4().hex[:12]}"))
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
def superuser(db: None) -> User:
    return User.objects.create_superuser("root", "root@example.com", "x")


@pytest.fixture
def staff_user(db: None) -> User:
    return User.objects.create_user("operator", password="x", is_staff=True)


@pytest.fixture
def read_only_user(db: None) -> User:
    user = User.objects.create_user("auditor", password="x", is_staff=True)
    user.groups.add(Group.objects.get_or_create(name=settings.READ_ONLY_STAFF_GROUP)[0])
    return user


@pytest.fixture
def non_staff_user(db: None) -> User:
    return User.objects.create_user("customer", password="x")


def _client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def superuser_client(superuser: User) -> Client:
    return _client_for(superuser)


@pytest.fixture
def staff_client(staff_user: User) -> Client:
    return _client_for(staff_user)


@pytest.fixture
def read_only_client(read_only_user: User) -> Client:
    return _client_for(read_only_user)


@pytest.fixture
def non_staff_client(non_staff_user: User) -> Client:
    return _client_for(non_staff_user)


@pytest.fixture
def anonymous_client(db: None) -> Client:
    return Client()
