"""The checks an onboarding makes before it writes: the dry run reports them, onboarding refuses on them."""

from __future__ import annotations

import uuid

import pytest
from django.test import override_settings
from google.cloud import bigquery

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.emulator import free_port
from bigquery_backend.exceptions import NotFound
from tenants_app.models import (
    AuditLogEntry,
    TenantApiKey,
    TenantProfile,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.errors import AlreadyExists, ServiceUnavailable, ValidationFailed
from tenants_app.services.onboarding import tenant_onboard, tenant_onboard_dryrun, tenant_onboard_validate
from tenants_app.services.onboarding_checks import ONBOARDING_CHECKS, OnboardingReport
from tests.support.kms_fake import FakeCloudKms
from tests.support.people import onboard_tenant
from tests.support.tenant_rows import rows_left_alone
from tests.tenants_app.services.test_onboarding import WRITE_WORD, InjectedFailure, fail_before, footprint

CENTRAL_MODELS = (TenantProfile, TenantSubscription, TenantUsageQuota, TenantApiKey, AuditLogEntry)


def new_tenant_id() -> str:
    return f"chk_{uuid.uuid4().hex[:12]}"


def request_for(tenant_id: str, **overrides: object) -> dict[str, object]:
    return {
        "tenant_id": tenant_id,
        "company_name": "Acme Corp",
        "admin_email": "admin@acme.example",
        "created_by": "ops",
        **overrides,
    }


def dryrun(tenant_id: str, **overrides: object) -> OnboardingReport:
    return tenant_onboard_dryrun(**request_for(tenant_id, **overrides))  # type: ignore[arg-type]


def failed(report: OnboardingReport) -> list[str]:
    """The checks that did not pass, in their order."""
    return [check.name for check in report.checks if not check.ok]


# --- the report -------------------------------------------------------------------------------------
def test_it_reports_every_check_in_order_for_a_free_id_on_the_default_plan(central: str) -> None:
    report = dryrun(new_tenant_id())

    assert [check.name for check in report.checks] == list(ONBOARDING_CHECKS)
    assert report.ok is True
    assert report.plan == "STARTER"
    assert all(check.detail for check in report.checks)


def test_it_reports_a_taken_id_and_passes_the_other_checks(central: str) -> None:
    tenant_id, _ = onboard_tenant("chk")

    report = dryrun(tenant_id, plan="STARTER", company_name="chk Inc", admin_email="ops@example.com")

    # dataset_creatable passes: the dataset is the tenant's own, which an onboarding would reuse.
    assert failed(report) == ["tenant_id_free"]
    assert report.checks[0].detail == "A tenant with this id already exists."


def test_it_reports_an_unknown_plan_naming_the_field_used(central: str) -> None:
    report = dryrun(new_tenant_id(), subscription_plan="GOLD")

    plan = report.checks[1]
    assert failed(report) == [plan.name] == ["plan_valid"]
    assert plan.detail.startswith("subscription_plan names no plan.")
    assert "STARTER" in plan.detail


def test_it_reports_kms_unreachable_and_still_runs_the_other_checks(
    central: str, cloud_kms: FakeCloudKms
) -> None:
    cloud_kms.simulate_outage()

    report = dryrun(new_tenant_id())

    assert failed(report) == ["kms_reachable"]
    assert cloud_kms.key_name() not in report.checks[3].detail


def test_it_reports_the_checks_bigquery_could_not_answer(central: str) -> None:
    with override_settings(
        BIGQUERY_EMULATOR_HOST=f"http://127.0.0.1:{free_port()}",
        BIGQUERY_RETRY_DEADLINE_SECONDS=0.5,
        BIGQUERY_TIMEOUT_SECONDS=0.5,
    ):
        report = dryrun(new_tenant_id())

    assert failed(report) == ["tenant_id_free", "dataset_creatable"]
    assert report.checks[0].detail.startswith("Could not be checked: BigQuery is unavailable")


def test_it_reports_a_foreign_dataset_of_the_tenants_name(central: str, gateway: BigQueryGateway) -> None:
    tenant_id = new_tenant_id()
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(tenant_id)))

    report = dryrun(tenant_id)

    assert failed(report) == ["dataset_creatable"]
    assert "is not this tenant's" in report.checks[2].detail


def test_it_reports_an_unfinished_onboarding_as_finishable_only_with_its_details(central: str) -> None:
    tenant_id = new_tenant_id()
    with pytest.raises(InjectedFailure):
        tenant_onboard(**request_for(tenant_id, plan="SCALE"), before_step=fail_before("subscription"))  # type: ignore[arg-type]

    same = dryrun(tenant_id, subscription_plan="SCALE")
    other = dryrun(tenant_id, subscription_plan="STARTER")

    assert same.ok is True
    assert "unfinished onboarding" in same.checks[0].detail
    assert "tenant_id_free" in failed(other)
    assert "subscription_plan" in other.checks[0].detail


def test_it_refuses_malformed_input_before_checking_anything(gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as counter, pytest.raises(ValidationFailed) as failure:
        dryrun("Bad Id!", admin_email="nope", plan="GOLD")

    # An unknown plan is a check's verdict in a dry run, not malformed input.
    assert set(failure.value.errors) == {"tenant_id", "admin_email"}
    assert (counter.jobs, counter.api_calls) == (0, 0)


def test_it_writes_nothing_not_even_the_audit_entry_the_real_onboarding_repairs(
    central: str, gateway: BigQueryGateway
) -> None:
    tenant_id, _ = onboard_tenant("chk")
    audit = central_repository(AuditLogEntry)
    entry = {"action": "tenant.onboard", "tenant_id": tenant_id}
    # The onboarding's answer (and its audit entry) lost after the key was stored.
    audit.delete_where(filters=entry)
    details = {"plan": "STARTER", "company_name": "chk Inc", "admin_email": "ops@example.com"}

    with gateway.count_jobs() as counter, rows_left_alone(tenant_id, *CENTRAL_MODELS):
        report = dryrun(tenant_id, **details)
    with pytest.raises(AlreadyExists):
        tenant_onboard(**request_for(tenant_id, **details))  # type: ignore[arg-type]

    assert "tenant_id_free" in failed(report)
    assert not [s for s in counter.statements if WRITE_WORD.search(s)]
    assert audit.count(filters=entry) == 1, "the real onboarding still writes the missing entry"


def test_it_writes_no_row_and_no_dataset_for_a_free_id(central: str, gateway: BigQueryGateway) -> None:
    tenant_id = new_tenant_id()

    with gateway.count_jobs() as counter, rows_left_alone(tenant_id, *CENTRAL_MODELS):
        report = dryrun(tenant_id, plan="SCALE")

    assert report.ok is True
    assert counter.jobs >= 1, "the id was looked up"
    assert not [s for s in counter.statements if WRITE_WORD.search(s)]
    with pytest.raises(NotFound):
        gateway.get_dataset(tenant_id)


# --- the onboarding refuses what the report shows ---------------------------------------------------
def test_it_refuses_an_onboarding_before_any_write_when_kms_is_down(
    central: str, cloud_kms: FakeCloudKms
) -> None:
    tenant_id = new_tenant_id()
    cloud_kms.simulate_outage()

    with pytest.raises(ServiceUnavailable, match="KMS"):
        tenant_onboard(**request_for(tenant_id, plan="STARTER"))  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable, match="KMS"):
        tenant_onboard_validate(**request_for(tenant_id, plan="STARTER"))  # type: ignore[arg-type]

    left = footprint(tenant_id, central)
    assert (left.profiles, left.subscriptions, left.usage_rows, left.keys, left.tables) == (0, 0, 0, 0, ())


def test_it_refuses_the_first_failed_check_as_the_report_lists_it(
    central: str, gateway: BigQueryGateway
) -> None:
    tenant_id = new_tenant_id()
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(tenant_id)))

    report = dryrun(tenant_id, plan="GOLD")
    with pytest.raises(ValidationFailed) as unknown_plan:
        tenant_onboard(**request_for(tenant_id, plan="GOLD"))  # type: ignore[arg-type]
    with pytest.raises(AlreadyExists, match="does not belong") as foreign:
        tenant_onboard(**request_for(tenant_id, plan="STARTER"))  # type: ignore[arg-type]

    assert [check.name for check in report.checks if not check.ok] == ["plan_valid", "dataset_creatable"]
    assert list(unknown_plan.value.errors) == ["plan"]
    assert list(foreign.value.errors) == ["tenant_id"]


# --- the plan and its alias -------------------------------------------------------------------------
def test_it_onboards_on_the_plan_named_by_the_alias(central: str) -> None:
    result = tenant_onboard(**request_for(new_tenant_id(), subscription_plan="PROFESSIONAL"))  # type: ignore[arg-type]

    assert (result.subscription.plan_name, result.profile.subscription_plan) == (
        "PROFESSIONAL",
        "PROFESSIONAL",
    )


def test_it_onboards_on_starter_when_no_plan_is_named(central: str) -> None:
    result = tenant_onboard(**request_for(new_tenant_id()))  # type: ignore[arg-type]

    assert result.subscription.plan_name == "STARTER"


def test_it_refuses_a_plan_and_an_alias_that_differ_naming_both(gateway: BigQueryGateway) -> None:
    for service in (tenant_onboard, tenant_onboard_dryrun):
        with gateway.count_jobs() as counter, pytest.raises(ValidationFailed) as failure:
            service(**request_for(new_tenant_id(), plan="STARTER", subscription_plan="SCALE"))  # type: ignore[operator]

        assert set(failure.value.errors) == {"plan", "subscription_plan"}
        assert counter.jobs == 0


def test_it_refuses_an_unknown_plan_naming_the_alias_when_the_alias_named_it(
    gateway: BigQueryGateway,
) -> None:
    with pytest.raises(ValidationFailed) as failure:
        tenant_onboard(**request_for(new_tenant_id(), subscription_plan="GOLD"))  # type: ignore[arg-type]

    assert list(failure.value.errors) == ["subscription_plan"]
    assert "STARTER" in failure.value.errors["subscription_plan"][0]
