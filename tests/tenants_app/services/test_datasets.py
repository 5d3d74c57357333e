"""Tenant ids: one rule, the original system's, which also names the tenant's dataset."""

from __future__ import annotations

import pytest

from bigquery_backend.exceptions import InvalidIdentifier
from tenants_app.models import TenantPipelineConfig
from tenants_app.services import datasets, onboarding
from tenants_app.services.datasets import check_tenant_id
from tenants_app.services.onboarding import tenant_view_query


def test_it_has_one_tenant_id_rule_that_onboarding_shares() -> None:
    # Onboarding asks for lowercase on top (see test_onboarding), not for a pattern of its own.
    assert onboarding.TENANT_ID_PATTERN is datasets.TENANT_ID_PATTERN


@pytest.mark.parametrize("tenant_id", ["abc", "acme_corp", "Acme_Corp", "2024_eu", "t" * 50])
def test_it_accepts_every_id_the_original_system_allowed(tenant_id: str) -> None:
    assert check_tenant_id(tenant_id) == tenant_id


@pytest.mark.parametrize("tenant_id", ["ab", "x" * 51, "acme-co", "acme co", "acme'co", "acmé", "", None, 42])
def test_it_refuses_any_other_tenant_id_naming_the_field(tenant_id: object) -> None:
    with pytest.raises(InvalidIdentifier) as refused:
        check_tenant_id(tenant_id)

    assert list(refused.value.errors) == ["tenant_id"]


def test_it_builds_the_view_of_a_tenant_the_original_system_named_in_mixed_case() -> None:
    assert tenant_view_query("acme-prod", TenantPipelineConfig, "Acme_Corp").endswith(
        "WHERE `tenant_id` = 'Acme_Corp'"
    )
