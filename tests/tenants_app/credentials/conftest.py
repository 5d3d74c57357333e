"""Credential test fixtures: a central dataset bootstrapped once per module, tenants inserted directly."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.test import override_settings
from pytest_django import Settings as SettingsWrapper

from tenants_app.kms import reset_kms
from tenants_app.models import (
    PlanName,
    SubscriptionStatus,
    TenantProfile,
    TenantStatus,
    TenantSubscription,
)
from tenants_app.repositories import central_repository
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.plans import PLANS
from tests.conftest import unique_name
from tests.support.kms_fake import FakeCloudKms

MakeTenant = Callable[..., str]

# Short, so the outage tests prove the bound without slowing the suite.
KMS_TIMEOUT_SECONDS = 0.5


@pytest.fixture(scope="module")
def credentials_central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A central dataset bootstrapped once per module; tests stay apart by using tenants of their own."""
    name = unique_name("tenants")
    # A DATA_DIR of our own, so the local KMS key never lands in the real one.
    data_dir: Path = tmp_path_factory.mktemp("credentials_data")
    with override_settings(TENANTS_DATASET=name, DATA_DIR=data_dir, KMS_BACKEND="local"):
        bigquery_bootstrap()
        yield name


@pytest.fixture(autouse=True)
def _fresh_kms() -> Iterator[None]:
    """No KMS backend cached across tests (one may point at a fake that is gone)."""
    reset_kms()
    yield
    reset_kms()


@pytest.fixture
def make_tenant(credentials_central: str) -> MakeTenant:
    """Insert a tenant profile and its subscription directly (no dependency on onboarding)."""

    def make(
        *,
        plan: str = PlanName.STARTER,
        status: str = TenantStatus.ACTIVE,
        subscription_status: str | None = SubscriptionStatus.ACTIVE,
    ) -> str:
        tenant_id = f"t_{uuid.uuid4().hex[:12]}"
        central_repository(TenantProfile).insert(
            TenantProfile(
                tenant_id=tenant_id,
                company_name=f"Company {tenant_id}",
                admin_email=f"admin@{tenant_id.replace('_', '-')}.example.com",
                tenant_dataset_id=tenant_id,
                status=status,
                subscription_plan=plan,
            )
        )
        if subscription_status is not None:
            limits = PLANS[plan]
            central_repository(TenantSubscription).insert(
                TenantSubscription(
                    subscription_id=f"sub_{uuid.uuid4().hex}",
                    tenant_id=tenant_id,
                    plan_name=plan,
                    status=subscription_status,
                    daily_limit=limits.daily_limit,
                    monthly_limit=limits.monthly_limit,
                    concurrent_limit=limits.concurrent_limit,
                )
            )
        return tenant_id

    return make


@pytest.fixture
def tenant(make_tenant: MakeTenant) -> str:
    return make_tenant()


@pytest.fixture
def other_tenant(make_tenant: MakeTenant) -> str:
    return make_tenant()


@pytest.fixture
def fake_kms() -> Iterator[FakeCloudKms]:
    with FakeCloudKms() as server:
        yield server


@pytest.fixture
def cloud_kms(settings: SettingsWrapper, fake_kms: FakeCloudKms) -> FakeCloudKms:
    """KMS_BACKEND=gcp: the real google-cloud-kms client against the loopback fake."""
    settings.KMS_BACKEND = "gcp"
    settings.KMS_KEY_NAME = fake_kms.key_name()
    settings.KMS_EMULATOR_HOST = fake_kms.url
    settings.KMS_TIMEOUT_SECONDS = KMS_TIMEOUT_SECONDS
    return fake_kms
