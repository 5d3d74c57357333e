"""Onboarding on the emulator: happy path, validation, dry run, existing tenants, resume at every step."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.utils import timezone
from google.cloud import bigquery
from pytest_django import Settings as SettingsWrapper

from bigquery_backend.client import BigQueryGateway, get_gateway
from bigquery_backend.emulator import free_port
from bigquery_backend.exceptions import NotFound
from bigquery_backend.schema import table_definition
from tenants_app.models import (
    TENANT_MODELS,
    TenantApiKey,
    TenantPipelineConfig,
    TenantProfile,
    TenantScheduledPipelineRun,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_scopes import INITIAL_API_KEY_SCOPES
from tenants_app.services.api_key_verification import api_key_verify
from tenants_app.services.errors import AlreadyExists, ServiceUnavailable, ValidationFailed
from tenants_app.services.onboarding import (
    ONBOARDING_STEPS,
    OnboardingResult,
    tenant_onboard,
    tenant_onboard_validate,
)
from tenants_app.services.onboarding_checks import RESERVED_TENANT_IDS
from tenants_app.services.plans import PLANS
from tests.support.kms_fake import cloud_kms_in_use

READER_TEMPLATE = "group:{tenant_id}-readers@example.com"
VIEW_NAMES = ("tenant_pipeline_configs", "tenant_scheduled_pipeline_runs")
TABLE_NAMES = tuple(table_definition(model).name for model in TENANT_MODELS)
WRITES = ("INSERT", "UPDATE", "MERGE", "DELETE", "CREATE", "ALTER", "DROP")
# A write keyword as a whole word: `created_at` or `updated_at` in a column list is no write.
WRITE_WORD = re.compile(rf"\b({'|'.join(WRITES)})\b", re.IGNORECASE)


class InjectedFailure(Exception):
    """Raised by a `before_step` hook to stop an onboarding just before one step."""


@pytest.fixture(scope="module", autouse=True)
def _reader_principal() -> Iterator[None]:
    with override_settings(TENANT_READER_PRINCIPAL_TEMPLATE=READER_TEMPLATE):
        yield


def new_tenant_id() -> str:
    return f"acme_{uuid.uuid4().hex[:12]}"


def onboard(tenant_id: str, **overrides: object) -> OnboardingResult:
    arguments: dict[str, object] = {
        "tenant_id": tenant_id,
        "company_name": "Acme Corp",
        "admin_email": "admin@acme.example",
        "plan": "PROFESSIONAL",
        "created_by": "ops@convergence.example",
        **overrides,
    }
    return tenant_onboard(**arguments)  # type: ignore[arg-type]


def fail_before(step: str) -> Callable[[str], None]:
    def hook(name: str) -> None:
        if name == step:
            raise InjectedFailure(step)

    return hook


@dataclass(frozen=True)
class Footprint:
    """How many of each thing one tenant has."""

    profiles: int
    subscriptions: int
    usage_rows: int
    keys: int
    tables: tuple[str, ...]
    view_grants: int
    reader_grants: int


def footprint(tenant_id: str, central: str) -> Footprint:
    gateway = get_gateway()
    by_tenant = {"filters": {"tenant_id": tenant_id}}
    try:
        tables = tuple(sorted(gateway.list_table_ids(tenant_id)))
        reader_grants = sum(
            1 for e in gateway.get_dataset(tenant_id).access_entries if e.entity_type == "groupByEmail"
        )
    except NotFound:
        tables, reader_grants = (), 0
    view_grants = sum(
        1
        for e in gateway.get_dataset(central).access_entries
        if e.entity_type == "view" and e.entity_id["datasetId"] == tenant_id
    )
    return Footprint(
        profiles=central_repository(TenantProfile).count(**by_tenant),
        subscriptions=central_repository(TenantSubscription).count(**by_tenant),
        usage_rows=central_repository(TenantUsageQuota).count(**by_tenant),
        keys=central_repository(TenantApiKey).count(**by_tenant),
        tables=tables,
        view_grants=view_grants,
        reader_grants=reader_grants,
    )


COMPLETE = Footprint(1, 1, 1, 1, tuple(sorted(TABLE_NAMES + VIEW_NAMES)), 2, 1)


# --- happy path (one onboarding, read by several tests) ---------------------------------------------
@pytest.fixture(scope="module")
def onboarded(central: str) -> OnboardingResult:
    return onboard(new_tenant_id())


def test_it_creates_profile_subscription_and_usage_with_the_plans_limits(onboarded: OnboardingResult) -> None:
    tenant_id = onboarded.profile.tenant_id
    plan = PLANS["PROFESSIONAL"]

    profile = central_repository(TenantProfile).get(tenant_id)
    subscription = central_repository(TenantSubscription).get(f"{tenant_id}_subscription")
    today = timezone.now().astimezone(UTC).date()
    usage = central_repository(TenantUsageQuota).get(f"{tenant_id}_{today:%Y%m%d}")

    assert (profile.status, profile.subscription_plan, profile.tenant_dataset_id) == (
        "ACTIVE",
        "PROFESSIONAL",
        tenant_id,
    )
    assert (profile.company_name, profile.admin_email) == ("Acme Corp", "admin@acme.example")
    assert (subscription.tenant_id, subscription.plan_name, subscription.status) == (
        tenant_id,
        "PROFESSIONAL",
        "ACTIVE",
    )
    limits = (plan.daily_limit, plan.monthly_limit, plan.concurrent_limit)
    assert (subscription.daily_limit, subscription.monthly_limit, subscription.concurrent_limit) == limits
    assert (usage.daily_limit, usage.monthly_limit, usage.concurrent_limit) == limits
    assert (usage.usage_date, usage.pipelines_run_today, usage.tenant_id) == (today, 0, tenant_id)
    assert onboarded.performed == list(ONBOARDING_STEPS)
    assert onboarded.skipped == []
    assert onboarded.resumed is False


def test_it_creates_the_labelled_dataset_with_three_tables_and_two_views(
    onboarded: OnboardingResult, central: str, gateway: BigQueryGateway
) -> None:
    tenant_id = onboarded.profile.tenant_id

    dataset = gateway.get_dataset(onboarded.dataset_id)

    assert onboarded.dataset_id == tenant_id
    assert dataset.labels == {
        "protection": "tenant_operational",
        "genai_safe": "true",
        "managed_by": "convergence",
        "tenant_id": tenant_id,
    }
    assert footprint(tenant_id, central) == COMPLETE
    for name in VIEW_NAMES:
        assert gateway.get_table(tenant_id, name).table_type == "VIEW"
    for name in TABLE_NAMES:
        assert gateway.get_table(tenant_id, name).table_type == "TABLE"


def test_it_authorises_the_views_on_the_central_dataset_and_grants_the_readers(
    onboarded: OnboardingResult, central: str, gateway: BigQueryGateway
) -> None:
    tenant_id = onboarded.profile.tenant_id

    central_entries = gateway.get_dataset(central).access_entries
    tenant_entries = gateway.get_dataset(tenant_id).access_entries

    views = {
        e.entity_id["tableId"]
        for e in central_entries
        if e.entity_type == "view" and e.entity_id["datasetId"] == tenant_id
    }
    assert views == set(VIEW_NAMES)
    assert all(
        e.entity_id["projectId"] == gateway.project for e in central_entries if e.entity_type == "view"
    )
    readers = [(e.role, e.entity_type, e.entity_id) for e in tenant_entries]
    assert ("READER", "groupByEmail", f"{tenant_id}-readers@example.com") in readers
    assert not any(tenant_id in str(e.entity_id) and e.entity_type != "view" for e in central_entries)


def test_it_lets_the_views_show_only_the_tenants_own_rows(
    onboarded: OnboardingResult, gateway: BigQueryGateway
) -> None:
    tenant_id = onboarded.profile.tenant_id
    other = new_tenant_id()
    now = timezone.now()
    central_repository(TenantPipelineConfig).insert(
        *(
            TenantPipelineConfig(
                config_id=f"{owner}_cfg",
                tenant_id=owner,
                provider="GCP",
                domain="billing",
                pipeline_template="daily_costs",
                schedule_cron="0 3 * * *",
                parameters={"window_days": 7},
            )
            for owner in (tenant_id, other)
        )
    )
    central_repository(TenantScheduledPipelineRun).insert(
        *(
            TenantScheduledPipelineRun(
                run_id=f"{owner}_run",
                config_id=f"{owner}_cfg",
                tenant_id=owner,
                pipeline_id="daily_costs",
                state="QUEUED",
                scheduled_time=now,
            )
            for owner in (tenant_id, other)
        )
    )

    configs = gateway.query(f"SELECT * FROM `{gateway.project}.{tenant_id}.tenant_pipeline_configs`").rows
    runs = gateway.query(f"SELECT * FROM `{gateway.project}.{tenant_id}.tenant_scheduled_pipeline_runs`").rows

    assert [(row["config_id"], row["tenant_id"]) for row in configs] == [(f"{tenant_id}_cfg", tenant_id)]
    assert [(row["run_id"], row["tenant_id"]) for row in runs] == [(f"{tenant_id}_run", tenant_id)]
    assert set(configs[0]) == set(table_definition(TenantPipelineConfig).column_names)
    assert set(runs[0]) == set(table_definition(TenantScheduledPipelineRun).column_names)


def test_it_issues_the_initial_key_with_the_initial_scopes(onboarded: OnboardingResult) -> None:
    tenant_id = onboarded.profile.tenant_id
    issued = onboarded.api_key
    assert issued is not None

    verified = api_key_verify(key=issued.plaintext)

    assert (verified.tenant_id, verified.api_key_id) == (tenant_id, f"{tenant_id}_initial")
    assert verified.scopes == INITIAL_API_KEY_SCOPES
    assert (issued.row.name, issued.row.created_by) == ("Initial key", "ops@convergence.example")
    assert onboarded.api_key_already_issued is False
    assert issued.plaintext not in repr(onboarded)


def test_it_refuses_to_onboard_an_existing_tenant(
    onboarded: OnboardingResult, central: str, gateway: BigQueryGateway
) -> None:
    tenant_id = onboarded.profile.tenant_id

    with gateway.count_jobs() as counter, pytest.raises(AlreadyExists) as failure:
        onboard(tenant_id)
    with pytest.raises(AlreadyExists):
        tenant_onboard_validate(
            tenant_id=tenant_id,
            company_name="Acme Corp",
            admin_email="admin@acme.example",
            plan="PROFESSIONAL",
            created_by="ops",
        )

    assert failure.value.status == 409
    assert f"tenant {tenant_id} already exists" in failure.value.message
    assert not [s for s in counter.statements if WRITE_WORD.search(s)]
    assert footprint(tenant_id, central) == COMPLETE


# --- validation -------------------------------------------------------------------------------------
def assert_refused(field: str, gateway: BigQueryGateway, **overrides: object) -> ValidationFailed:
    arguments: dict[str, object] = {
        "tenant_id": new_tenant_id(),
        "company_name": "Acme Corp",
        "admin_email": "admin@acme.example",
        "plan": "STARTER",
        "created_by": "ops",
        **overrides,
    }
    for service in (tenant_onboard, tenant_onboard_validate):
        with gateway.count_jobs() as counter, pytest.raises(ValidationFailed) as failure:
            service(**arguments)  # type: ignore[operator]
        assert list(failure.value.errors) == [field]
        assert (counter.jobs, counter.api_calls) == (0, 0), "input is checked before BigQuery is asked"
    return failure.value


@pytest.mark.parametrize(
    "tenant_id",
    ["ab", "x" * 51, "Acme", "acme-co", "acme co", "acme'co", "acme`co", "acmé", "_acme", "", None, 42],
)
def test_it_refuses_a_malformed_tenant_id(tenant_id: object, gateway: BigQueryGateway) -> None:
    assert_refused("tenant_id", gateway, tenant_id=tenant_id)


@pytest.mark.parametrize(
    "tenant_id", sorted({"admin", "api", "system", "default", "information_schema", "tenants"})
)
def test_it_refuses_a_reserved_tenant_id(tenant_id: str, gateway: BigQueryGateway) -> None:
    failure = assert_refused("tenant_id", gateway, tenant_id=tenant_id)

    assert tenant_id in RESERVED_TENANT_IDS
    assert "reserved" in failure.errors["tenant_id"][0]


def test_it_refuses_the_central_datasets_name_as_a_tenant_id(
    settings: SettingsWrapper, gateway: BigQueryGateway
) -> None:
    settings.TENANTS_DATASET = "platform_registry"

    assert_refused("tenant_id", gateway, tenant_id="platform_registry")


def test_it_refuses_a_tenant_id_whose_dataset_would_be_the_central_one(
    settings: SettingsWrapper, gateway: BigQueryGateway
) -> None:
    settings.TENANTS_DATASET = "t_registry"
    settings.TENANT_DATASET_TEMPLATE = "t_{tenant_id}"

    assert_refused("tenant_id", gateway, tenant_id="registry")


@pytest.mark.parametrize("company_name", ["", " ", " A ", "x" * 201, None])
def test_it_refuses_a_bad_company_name(company_name: object, gateway: BigQueryGateway) -> None:
    assert_refused("company_name", gateway, company_name=company_name)


@pytest.mark.parametrize(
    "admin_email",
    ["", "admin", "admin@", "@acme.example", "admin@acme", "a b@acme.example", "a" * 250 + "@x.io"],
)
def test_it_refuses_a_bad_admin_email(admin_email: str, gateway: BigQueryGateway) -> None:
    assert_refused("admin_email", gateway, admin_email=admin_email)


# No plan at all is the default plan (STARTER): see test_onboarding_checks.py.
@pytest.mark.parametrize("plan", ["GOLD", "starter", "", 42])
def test_it_refuses_an_unknown_plan(plan: object, gateway: BigQueryGateway) -> None:
    failure = assert_refused("plan", gateway, plan=plan)

    assert "STARTER" in failure.errors["plan"][0]


def test_it_refuses_a_missing_creator(gateway: BigQueryGateway) -> None:
    assert_refused("created_by", gateway, created_by="  ")


def test_it_reports_every_field_error_at_once(gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as counter, pytest.raises(ValidationFailed) as failure:
        tenant_onboard(tenant_id="admin", company_name="A", admin_email="nope", plan="GOLD", created_by="")

    assert set(failure.value.errors) == {"tenant_id", "company_name", "admin_email", "plan", "created_by"}
    assert failure.value.status == 400
    assert counter.jobs == 0


def test_it_accepts_the_smallest_valid_input(central: str) -> None:
    tenant_onboard_validate(
        tenant_id="a1_", company_name=" AB ", admin_email="a@b.io", plan="STARTER", created_by="o"
    )


def test_it_refuses_a_misconfigured_reader_principal_before_writing(
    central: str, settings: SettingsWrapper, gateway: BigQueryGateway
) -> None:
    settings.TENANT_READER_PRINCIPAL_TEMPLATE = "readers-of-{tenant_id}"

    with gateway.count_jobs() as counter, pytest.raises(ImproperlyConfigured, match="TYPE:VALUE"):
        onboard(new_tenant_id())

    assert counter.jobs == 0


# --- dry run ----------------------------------------------------------------------------------------
def test_it_writes_nothing_in_a_dry_run(central: str, gateway: BigQueryGateway) -> None:
    tenant_id = new_tenant_id()

    with gateway.count_jobs() as counter:
        tenant_onboard_validate(
            tenant_id=tenant_id,
            company_name="Acme Corp",
            admin_email="admin@acme.example",
            plan="SCALE",
            created_by="ops",
        )

    assert counter.jobs >= 1, "the dry run checks that the tenant does not exist"
    assert all(s.lstrip().upper().startswith("SELECT") for s in counter.statements)
    assert not [s for s in counter.statements if WRITE_WORD.search(s)]
    with pytest.raises(NotFound):
        gateway.get_dataset(tenant_id)
    assert central_repository(TenantProfile).find(tenant_id) is None


def test_it_refuses_to_adopt_a_foreign_dataset_with_the_tenants_name(
    central: str, gateway: BigQueryGateway
) -> None:
    tenant_id = new_tenant_id()
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(tenant_id)))

    with pytest.raises(AlreadyExists, match="does not belong"):
        tenant_onboard_validate(
            tenant_id=tenant_id, company_name="Acme", admin_email="a@acme.io", plan="STARTER", created_by="o"
        )
    with pytest.raises(AlreadyExists, match="does not belong"):
        onboard(tenant_id)

    assert footprint(tenant_id, central) == Footprint(0, 0, 0, 0, (), 0, 0)


# --- resume -----------------------------------------------------------------------------------------
# What the repeat of an onboarding that failed just before a step still has to do: that step and those
# that come after it. The steps that do not depend on it were finished by the failed run.
LEFT_AFTER_A_FAILURE_BEFORE = {
    "profile": list(ONBOARDING_STEPS),
    "subscription": ["subscription", "api_key"],
    "usage": ["usage", "api_key"],
    "dataset": ["dataset", "views", "reader_access", "api_key"],
    "views": ["views", "api_key"],
    "reader_access": ["reader_access", "api_key"],
    "api_key": ["api_key"],
}


@pytest.mark.parametrize(
    ("step", "left"), LEFT_AFTER_A_FAILURE_BEFORE.items(), ids=list(LEFT_AFTER_A_FAILURE_BEFORE)
)
def test_it_finishes_an_onboarding_that_failed_before_any_step(
    step: str, left: list[str], central: str
) -> None:
    tenant_id = new_tenant_id()
    with pytest.raises(InjectedFailure):
        onboard(tenant_id, before_step=fail_before(step))

    result = onboard(tenant_id)

    assert footprint(tenant_id, central) == COMPLETE
    assert result.performed == left
    assert result.skipped == [done for done in ONBOARDING_STEPS if done not in left]
    assert result.resumed is (step != "profile")
    assert result.api_key is not None
    assert api_key_verify(key=result.api_key.plaintext).tenant_id == tenant_id
    with pytest.raises(AlreadyExists):
        onboard(tenant_id)


def test_it_finishes_an_onboarding_cut_off_by_a_bigquery_outage(central: str) -> None:
    tenant_id = new_tenant_id()
    with ExitStack() as outage:

        def cut_bigquery(step: str) -> None:
            if step == "views":
                outage.enter_context(
                    override_settings(
                        BIGQUERY_EMULATOR_HOST=f"http://127.0.0.1:{free_port()}",
                        BIGQUERY_RETRY_DEADLINE_SECONDS=0.5,
                        BIGQUERY_TIMEOUT_SECONDS=0.5,
                    )
                )

        with pytest.raises(ServiceUnavailable) as failure:
            onboard(tenant_id, before_step=cut_bigquery)

    result = onboard(tenant_id)

    assert failure.value.status == 503
    assert footprint(tenant_id, central) == COMPLETE
    # The outage began as the views started: what they need was done, they and the key are left. The
    # steps running beside them (the reader grant, maybe the rows) may have been cut off too.
    assert {"profile", "dataset"} <= set(result.skipped)
    assert {"views", "api_key"} <= set(result.performed)


def test_it_finishes_an_onboarding_cut_off_by_a_kms_outage(central: str) -> None:
    tenant_id = new_tenant_id()
    with cloud_kms_in_use() as kms:

        def cut_kms(step: str) -> None:
            # After the checks (KMS answered then): the outage begins as the key is issued.
            if step == "api_key":
                kms.simulate_outage()

        with pytest.raises(ServiceUnavailable, match="KMS"):
            onboard(tenant_id, before_step=cut_kms)
        assert footprint(tenant_id, central).keys == 0
        kms.simulate_outage(False)

        result = onboard(tenant_id)

    assert footprint(tenant_id, central) == COMPLETE
    assert result.performed == ["api_key"]


def test_it_reports_an_initial_key_that_an_earlier_run_issued(central: str) -> None:
    tenant_id = new_tenant_id()
    first = onboard(tenant_id)
    # The profile lost after the key was issued: the re-run restores it but cannot show the key again.
    central_repository(TenantProfile).delete(tenant_id)

    again = onboard(tenant_id)

    assert first.api_key is not None
    assert again.api_key is None
    assert again.api_key_already_issued is True
    assert again.performed == ["profile"]
    assert footprint(tenant_id, central) == COMPLETE


def test_it_finishes_an_onboarding_only_with_the_details_it_started_with(central: str) -> None:
    tenant_id = new_tenant_id()
    with pytest.raises(InjectedFailure):
        onboard(tenant_id, before_step=fail_before("subscription"))

    with pytest.raises(AlreadyExists) as failure:
        onboard(tenant_id, plan="SCALE", admin_email="someone@else.example")

    assert set(failure.value.errors) == {"plan", "admin_email"}
    assert "unfinished onboarding" in failure.value.message
    assert footprint(tenant_id, central).subscriptions == 0


def test_it_answers_503_when_the_central_dataset_was_never_bootstrapped(
    settings: SettingsWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    settings.TENANTS_DATASET = f"missing_{uuid.uuid4().hex[:12]}"

    with pytest.raises(ServiceUnavailable, match="not ready") as failure:
        onboard(new_tenant_id())

    # The operator learns what to do from the log; the client never sees BigQuery's resource names.
    assert settings.TENANTS_DATASET not in failure.value.message
    assert "bootstrap_bigquery" in caplog.text
