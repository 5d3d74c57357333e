"""Fixtures of the service tests: a clean cache, a private KMS key, a central dataset per module."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from django.utils import timezone

from tenants_app.models import TenantProfile, TenantStatus
from tenants_app.repositories import central_repository

MakeTenant = Callable[..., str]


@pytest.fixture(scope="module")
def make_tenant(central: str) -> MakeTenant:
    """Insert a tenant profile directly (one DML) and return its id."""

    def make(status: str = TenantStatus.ACTIVE) -> str:
        tenant_id = f"t_{uuid.uuid4().hex[:12]}"
        central_repository(TenantProfile).insert(
            TenantProfile(
                tenant_id=tenant_id,
                company_name="Acme Corp",
                admin_email="admin@acme.example",
                tenant_dataset_id=tenant_id,
                status=status,
                subscription_plan="STARTER",
                created_at=timezone.now(),
            )
        )
        return tenant_id

    return make
