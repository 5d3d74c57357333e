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

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from tenants_app.models import TenantProfile
from tenants_app.services.bootstrap import bigquery_bootstrap
from tests.conftest import unique_name
from tests.support.people import create_read_only_staff, create_staff, create_superuser, insert_profile

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
        return insert_profile(str(values.pop("tenant_id", f"t_{uuid.uuid4().hex[:12]}")), **values)

    return add


@pytest.fixture
def superuser(db: None) -> User:
    return create_superuser()


@pytest.fixture
def staff_user(db: None) -> User:
    return create_staff()


@pytest.fixture
def read_only_user(db: None) -> User:
    return create_read_only_staff()


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
