"""Fixtures of the tenant page tests (detail, wizard, operations), imported by their modules.

Each module shares one bootstrapped central dataset; each test makes its own tenants (unique ids) and
its own Django users, so tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.test import Client, override_settings

from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.onboarding import OnboardingResult, tenant_onboard
from tests.conftest import unique_name

Onboard = Callable[..., OnboardingResult]


def new_tenant_id() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def portal_central() -> Iterator[str]:
    """A bootstrapped central dataset for this module's tests."""
    name = unique_name("tenants")
    with override_settings(TENANTS_DATASET=name):
        bigquery_bootstrap()
        yield name


@pytest.fixture
def onboard(portal_central: str) -> Onboard:
    """Onboard a tenant through the service (dataset included) and return the result."""

    def make(tenant_id: str | None = None, *, plan: str = "STARTER") -> OnboardingResult:
        return tenant_onboard(
            tenant_id=tenant_id or new_tenant_id(),
            company_name="Acme Analytics",
            admin_email="admin@acme.example",
            plan=plan,
            created_by="user:fixture",
        )

    return make


def _client_for(user: User, *, enforce_csrf_checks: bool = False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf_checks)
    client.force_login(user)
    return client


@pytest.fixture
def admin_client_(db: None) -> Client:
    """A superuser's client."""
    return _client_for(User.objects.create_superuser("root", "root@example.com", "x"))


@pytest.fixture
def staff_client(db: None) -> Client:
    """A staff member outside the read-only group: may change."""
    return _client_for(User.objects.create_user("operator", password="x", is_staff=True))


@pytest.fixture
def read_only_client(db: None) -> Client:
    """A staff member of the read-only group: sees, never changes."""
    user = User.objects.create_user("auditor", password="x", is_staff=True)
    user.groups.add(Group.objects.get_or_create(name=django_settings.READ_ONLY_STAFF_GROUP)[0])
    return _client_for(user)


@pytest.fixture
def non_staff_client(db: None) -> Client:
    return _client_for(User.objects.create_user("customer", password="x"))
