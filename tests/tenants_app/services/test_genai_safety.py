"""The GenAI-safety scan against the emulator: a clean tenant passes, each planted secret is found."""

from __future__ import annotations

import json
import logging
import random
import string
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import bigquery

from bigquery_backend import provisioning
from bigquery_backend.client import BigQueryGateway, get_gateway
from bigquery_backend.schema import Column, table_definition
from tenants_app import secrets as sp
from tenants_app.models import TenantDqResult, TenantPipelineConfig, TenantPipelineRun, TenantStepLog
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.datasets import central_dataset
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.genai_safety import genai_safety_scan, genai_safety_targets
from tenants_app.services.genai_safety_report import (
    SECRET_NAMED_COLUMN,
    UNKNOWN_COLUMN,
    UNKNOWN_TABLE,
    VIEW_CHANGED,
    Finding,
    GenaiSafetyReport,
)
from tenants_app.services.genai_safety_values import MAX_WALK_DEPTH
from tenants_app.services.onboarding import initial_api_key_id, tenant_onboard
from tenants_app.services.pipelines import pipeline_config_create
from tenants_app.services.run_claims import run_claim
from tenants_app.services.run_reports import run_complete
from tenants_app.services.run_tenant_rows import tenant_rows_flush
from tests.tenants_app.services.run_factories import enqueue

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
# Secrets are assembled at run time: no secret-shaped literal sits in the repository.
RANDOM = random.Random(36)  # noqa: S311 - fixed test data
BASE62 = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = BASE62) -> str:
    return "".join(RANDOM.choice(alphabet) for _ in range(n))


AWS_ID = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
AWS_SECRET = rand(40, BASE62 + "/+")
PEM = "-----BEGIN " + "PRIVATE KEY-----\nMIIEv" + rand(64) + "\n-----END PRIVATE KEY-----"
JWT = "eyJ" + rand(24) + ".eyJ" + rand(32) + "." + rand(43)
BEARER = rand(36)
DB_PASSWORD = "correct horse " + rand(8)
URL_PASSWORD = rand(14)
LLM_KEY = "sk-ant-api03-" + rand(40)
GITHUB_TOKEN = "ghp_" + rand(36)
RANDOM_TOKEN = rand(32)
STATUS_NOISE = rand(24)
SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "acme-prod",
    "private_key_id": rand(40, "0123456789abcdef"),
    "private_key": PEM,
    "client_email": "etl@acme-prod.iam.gserviceaccount.com",
}


def onboard() -> tuple[str, str]:
    """A tenant onboarded through the service: (tenant id, its initial key's plaintext)."""
    tenant_id = f"acme_{uuid.uuid4().hex[:12]}"
    result = tenant_onboard(
        tenant_id=tenant_id,
        company_name="Acme Corp",
        admin_email="admin@acme.example",
        plan="PROFESSIONAL",
        created_by="ops@convergence.example",
    )
    assert result.api_key is not None
    return tenant_id, result.api_key.plaintext


def run_pipelines(tenant_id: str) -> None:
    """What a working tenant has: a config, and a run with its steps, checks and error."""
    config = pipeline_config_create(
        tenant_id=tenant_id,
        provider="GCP",
        domain="billing",
        pipeline_template="sql_transform",
        schedule_cron="0 3 * * *",
        parameters={
            "source_table": "raw_costs",
            "destination_table": "daily_costs",
            "metadata": {"window_days": 7, "target": "billing.daily_costs", "labels": ["finops", "daily"]},
        },
        actor="user:ops",
    )
    outcomes = [("FAILED", "load: 403 Forbidden on billing.daily_costs after 3 retries")]
    for status, error in outcomes:
        run_id = enqueue(tenant_id, config_id=config.config_id, parameters={"window_days": 7})
        assert run_claim(worker_id="worker-1", tenant_id=tenant_id) is not None
        run_complete(
            run_id=run_id,
            worker_id="worker-1",
            status=status,
            started_at=NOW,
            ended_at=NOW + timedelta(seconds=7),
            step_logs=[
                {
                    "step_index": 0,
                    "step_name": "extract",
                    "step_type": "query",
                    "status": "SUCCEEDED",
                    "start_time": NOW,
                    "end_time": NOW + timedelta(seconds=3),
                    "rows_processed": 120,
                    "metadata": {
                        "job_id": f"bquxjob_{uuid.uuid4().hex[:8]}_18c2f3a4b5d",
                        "bytes_billed": 1024,
                    },
                },
                {
                    "step_index": 1,
                    "step_name": "load",
                    "step_type": "load",
                    "status": status,
                    "start_time": NOW + timedelta(seconds=3),
                    "end_time": NOW + timedelta(seconds=5),
                    "error_message": error,
                },
            ],
            dq_results=[
                {
                    "target_table": "billing.daily_costs",
                    "dq_config_id": "dq_costs",
                    "executed_at": NOW + timedelta(seconds=6),
                    "expectations_passed": 9,
                    "expectations_failed": 1,
                    "failed_expectations": [
                        {
                            "expectation": "expect_column_values_to_not_be_null",
                            "column": "sku",
                            "unexpected": 3,
                        }
                    ],
                    "overall_status": "WARNING",
                }
            ],
            run_metadata={"rows": 120, "checksum": uuid.uuid4().hex, "started_by": "scheduler"},
            error=error,
        )
    tenant_rows_flush()  # into the tenant's dataset, as `run_periodic` does


def execution(logging_id: str, tenant_id: str, **values: Any) -> TenantPipelineRun:
    return TenantPipelineRun(
        pipeline_logging_id=logging_id,
        tenant_id=tenant_id,
        pipeline_id="daily_costs",
        status="FAILED",
        start_time=NOW,
        **values,
    )


def step(logging_id: str, tenant_id: str, **values: Any) -> TenantStepLog:
    arguments: dict[str, Any] = {
        "step_logging_id": logging_id,
        "tenant_id": tenant_id,
        "pipeline_logging_id": "leak_run",
        "step_name": "extract",
        "step_type": "query",
        "step_index": 0,
        "status": "FAILED",
        "start_time": NOW,
        **values,
    }
    return TenantStepLog(**arguments)


def nested(depth: int, leaf: dict[str, Any]) -> dict[str, Any]:
    value = leaf
    for _ in range(depth):
        value = {"d": value}
    return value


def plant(tenant_id: str, api_key: str, gateway: BigQueryGateway) -> None:
    """One secret of each kind in a different table and column (written past the services' checks)."""
    tenant_repository(TenantPipelineRun, tenant_id).insert(
        execution("leak_run_key", tenant_id, error_message=f"callback refused with key {api_key}"),
        execution(
            "leak_run_params", tenant_id, parameters={"headers": {"Authorization": f"Bearer {BEARER}"}}
        ),
        execution("leak_run_meta", tenant_id, run_metadata={"session": JWT, "rows": 3}),
        execution(
            "leak_run_aws", tenant_id, error_message=f"boto3: aws_secret_access_key={AWS_SECRET} rejected"
        ),
    )
    tenant_repository(TenantStepLog, tenant_id).insert(
        step("leak_step_aws", tenant_id, error_message=f"AccessDenied for {AWS_ID} on s3://acme-costs"),
        step("leak_step_pem", tenant_id, error_message=f"could not parse key:\n{PEM}"),
        step(
            "leak_step_field", tenant_id, metadata={"connection": {"host": "db", "db_password": DB_PASSWORD}}
        ),
        step("leak_step_deep", tenant_id, metadata=nested(100, {"note": f"key {AWS_ID}"})),
        # Random-looking text: flagged in an error message, not in a status (where it is just odd).
        step(
            "leak_step_noise",
            tenant_id,
            status=STATUS_NOISE,
            error_message=f"retry with {RANDOM_TOKEN}",
            metadata={"job_id": STATUS_NOISE, "attempt": 2},
        ),
    )
    tenant_repository(TenantDqResult, tenant_id).insert(
        TenantDqResult(
            dq_result_id="leak_dq_sa",
            pipeline_logging_id="leak_run",
            tenant_id=tenant_id,
            target_table="billing.daily_costs",
            dq_config_id="dq_costs",
            executed_at=NOW,
            expectations_passed=0,
            expectations_failed=1,
            failed_expectations=[{"expectation": "no_secrets", "sample": SERVICE_ACCOUNT}],
            overall_status="FAIL",
            ingestion_date=NOW.date(),
        )
    )
    # A central config: the tenant's view over its configs shows its parameters.
    central_repository(TenantPipelineConfig).insert(
        TenantPipelineConfig(
            config_id=f"{tenant_id}_leak_cfg",
            tenant_id=tenant_id,
            provider="GCP",
            domain="billing",
            pipeline_template="daily_costs",
            schedule_cron="0 3 * * *",
            parameters={"source": {"dsn": f"postgres://etl:{URL_PASSWORD}@db.internal:5432/costs"}},
        )
    )
    # A table nobody declared, with a REPEATED and a RECORD column.
    table = bigquery.Table(
        gateway.table_ref(tenant_id, "exports_scratch"),
        schema=[
            bigquery.SchemaField("export_id", "STRING"),
            bigquery.SchemaField("tags", "STRING", mode="REPEATED"),
            bigquery.SchemaField(
                "pairs",
                "RECORD",
                mode="REPEATED",
                fields=[bigquery.SchemaField("k", "STRING"), bigquery.SchemaField("v", "STRING")],
            ),
        ],
    )
    gateway.create_table(table)
    gateway.query(
        f"INSERT INTO `{gateway.table_ref(tenant_id, 'exports_scratch')}` (export_id, tags, pairs) "
        "VALUES ('exp_1', ['daily', @llm], [STRUCT('token' AS k, @github AS v)])",
        [
            bigquery.ScalarQueryParameter("llm", "STRING", LLM_KEY),
            bigquery.ScalarQueryParameter("github", "STRING", GITHUB_TOKEN),
        ],
    )
    # A view nobody declared, onto the central keys table (hashes and encrypted copies).
    peek = bigquery.Table(gateway.table_ref(tenant_id, "keys_peek"))
    peek.view_query = f"SELECT * FROM `{gateway.table_ref(central_dataset(), 'tenant_api_keys')}`"
    gateway.create_table(peek)
    # A column nobody declared, named like a secret.
    definition = table_definition(TenantStepLog)
    provisioning.add_columns(gateway, tenant_id, definition, [Column("api_token", "STRING", "NULLABLE")])


@pytest.fixture(scope="module")
def clean_tenant(central: str) -> str:
    tenant_id, _ = onboard()
    run_pipelines(tenant_id)
    return tenant_id


@pytest.fixture(scope="module")
def planted(central: str) -> tuple[str, str, GenaiSafetyReport]:
    """A tenant with every kind of secret planted, and one scan of it."""
    tenant_id, api_key = onboard()
    plant(tenant_id, api_key, get_gateway())
    return tenant_id, api_key, genai_safety_scan(tenant_ids=[tenant_id])


ALL_SECRETS = (
    AWS_ID,
    AWS_SECRET,
    PEM,
    "PRIVATE KEY-----\nMIIEv",
    JWT,
    BEARER,
    DB_PASSWORD,
    URL_PASSWORD,
    LLM_KEY,
    GITHUB_TOKEN,
    RANDOM_TOKEN,
    SERVICE_ACCOUNT["private_key_id"],
)


# The declared primary keys, and for the undeclared table its first `*_id` column.
KEY_COLUMNS = {
    **{
        table_definition(m).name: table_definition(m).key
        for m in (TenantPipelineRun, TenantStepLog, TenantDqResult, TenantPipelineConfig)
    },
    "exports_scratch": "export_id",
}


def located(report: GenaiSafetyReport, table: str, column: str | None, kind: str) -> list[Finding]:
    return [f for f in report.findings if (f.table, f.column, f.kind) == (table, column, kind)]


# --- a clean tenant ---------------------------------------------------------------------------------
def test_it_passes_a_tenant_with_runs_step_logs_and_checks(
    clean_tenant: str, gateway: BigQueryGateway
) -> None:
    with gateway.count_jobs() as counter:
        report = genai_safety_scan(tenant_ids=[clean_tenant])

    assert report.findings == []
    assert report.clean
    assert report.datasets == [clean_tenant]
    sampled = {t.table: t.rows_sampled for t in report.tables}
    assert sampled == {
        "tenant_dq_results": 1,
        "tenant_pipeline_configs": 1,
        "tenant_pipeline_runs": 1,
        "tenant_scheduled_pipeline_runs": 1,
        "tenant_step_logs": 2,
    }
    assert all(t.declared for t in report.tables)
    # One query for the profiles and one per table; one listing plus one metadata call per table.
    assert (counter.jobs, counter.api_calls) == (1 + 5, 1 + 5)


def test_it_reads_only_a_bounded_sample_of_each_table(clean_tenant: str) -> None:
    report = genai_safety_scan(tenant_ids=[clean_tenant], sample_rows=1)

    assert {t.table: t.rows_sampled for t in report.tables}["tenant_step_logs"] == 1
    assert max(t.rows_sampled for t in report.tables) == 1


# --- planted secrets ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("table", "column", "row_key", "kind"),
    [
        ("tenant_pipeline_runs", "error_message", "leak_run_key", sp.CONVERGENCE_KEY),
        (
            "tenant_pipeline_runs",
            "parameters.headers.Authorization",
            "leak_run_params",
            sp.BEARER_TOKEN,
        ),
        ("tenant_pipeline_runs", "run_metadata.session", "leak_run_meta", sp.JWT),
        ("tenant_pipeline_runs", "error_message", "leak_run_aws", sp.AWS_SECRET_ACCESS_KEY),
        ("tenant_step_logs", "error_message", "leak_step_aws", sp.AWS_ACCESS_KEY_ID),
        ("tenant_step_logs", "error_message", "leak_step_pem", sp.PRIVATE_KEY),
        ("tenant_step_logs", "metadata.connection.db_password", "leak_step_field", sp.SECRET_NAMED_FIELD),
        ("tenant_step_logs", "error_message", "leak_step_noise", sp.HIGH_ENTROPY),
        ("tenant_dq_results", "failed_expectations[0].sample", "leak_dq_sa", sp.GCP_SERVICE_ACCOUNT),
        ("tenant_pipeline_configs", "parameters.source.dsn", "{tenant}_leak_cfg", sp.URL_CREDENTIALS),
        ("exports_scratch", "tags[1]", "exp_1", sp.LLM_API_KEY),
        ("exports_scratch", "pairs[0].v", "exp_1", sp.GITHUB_TOKEN),
    ],
)
def test_it_finds_each_planted_secret_with_its_row_key(
    planted: tuple[str, str, GenaiSafetyReport], table: str, column: str, row_key: str, kind: str
) -> None:
    tenant_id, _, report = planted

    found = located(report, table, column, kind)

    assert [f.row_key for f in found] == [{KEY_COLUMNS[table]: row_key.format(tenant=tenant_id)}]
    assert found[0].dataset == tenant_id
    assert len(found[0].fingerprint or "") == 8


def test_it_finds_a_secret_nested_deeper_than_it_walks_json(
    planted: tuple[str, str, GenaiSafetyReport],
) -> None:
    _, _, report = planted

    (finding,) = [f for f in report.findings if f.row_key == {"step_logging_id": "leak_step_deep"}]

    assert finding.kind == sp.AWS_ACCESS_KEY_ID
    assert finding.column == "metadata" + ".d" * MAX_WALK_DEPTH + "…"


def test_it_reports_undeclared_tables_views_and_columns_and_secret_named_columns(
    planted: tuple[str, str, GenaiSafetyReport],
) -> None:
    _, _, report = planted

    assert located(report, "exports_scratch", None, UNKNOWN_TABLE)
    assert located(report, "tenant_step_logs", "api_token", UNKNOWN_COLUMN)
    assert located(report, "tenant_step_logs", "api_token", SECRET_NAMED_COLUMN)
    assert located(report, "keys_peek", None, UNKNOWN_TABLE)
    assert located(report, "keys_peek", "api_key_hash", SECRET_NAMED_COLUMN)
    assert located(report, "keys_peek", "encrypted_api_key", SECRET_NAMED_COLUMN)
    # The declared views still run onboarding's query.
    assert not [f for f in report.findings if f.kind == VIEW_CHANGED]
    assert not report.clean


def test_it_names_the_api_key_to_revoke_when_one_of_ours_leaked(
    planted: tuple[str, str, GenaiSafetyReport],
) -> None:
    tenant_id, _, report = planted

    (finding,) = located(report, "tenant_pipeline_runs", "error_message", sp.CONVERGENCE_KEY)

    assert finding.api_key_id == initial_api_key_id(tenant_id)


def test_it_flags_no_ids_hashes_timestamps_statuses_or_id_fields_of_free_text(
    planted: tuple[str, str, GenaiSafetyReport],
) -> None:
    _, _, report = planted

    planted_rows = {"leak_run_key", "leak_run_params", "leak_run_meta", "leak_run_aws", "exp_1"}
    planted_rows |= {"leak_step_aws", "leak_step_pem", "leak_step_field", "leak_step_noise", "leak_dq_sa"}
    planted_rows |= {"leak_step_deep"}
    value_findings = [f for f in report.findings if f.row_key]
    stray = [
        f
        for f in value_findings
        if not set(f.row_key.values()) & planted_rows and "leak_cfg" not in str(f.row_key)
    ]
    assert stray == []
    assert not [f for f in report.findings if f.column in {"status", "metadata.job_id"}]


def test_it_never_repeats_a_secret_in_its_report(planted: tuple[str, str, GenaiSafetyReport]) -> None:
    _, api_key, report = planted

    text = json.dumps(report.as_dict()) + repr(report)

    # Nor any value at all: not even the odd status, which is no finding.
    for secret in (*ALL_SECRETS, api_key, api_key[-20:], AWS_SECRET[:16], STATUS_NOISE):
        assert secret not in text


def test_it_logs_one_summary_and_no_secret(
    planted: tuple[str, str, GenaiSafetyReport], caplog: pytest.LogCaptureFixture
) -> None:
    tenant_id, api_key, report = planted

    with caplog.at_level(logging.DEBUG):
        genai_safety_scan(tenant_ids=[tenant_id])

    summaries = [r for r in caplog.records if r.getMessage().startswith("genai safety scan:")]
    assert [r.levelno for r in summaries] == [logging.WARNING]
    assert f"{len(report.findings)} finding(s)" in summaries[0].getMessage()
    for secret in (*ALL_SECRETS, api_key):
        assert secret not in caplog.text


def test_it_finds_a_dataset_no_profile_names_only_with_all_datasets_and_scans_it_when_named(
    planted: tuple[str, str, GenaiSafetyReport], gateway: BigQueryGateway, central: str
) -> None:
    stray = f"stray_{uuid.uuid4().hex[:12]}"
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(stray)))
    provisioning.create_table(gateway, stray, table_definition(TenantStepLog))
    tenant_repository(TenantStepLog, stray).insert(step("stray_step", stray, error_message=f"key {AWS_ID}"))

    by_profiles = genai_safety_targets()
    everything = genai_safety_targets(all_datasets=True)
    # The emulator holds every other test's datasets too: scan just this one, by name.
    named = genai_safety_scan(datasets=[stray, planted[0]], sample_rows=50)

    assert planted[0] in by_profiles.datasets
    assert stray not in by_profiles.datasets
    assert everything.datasets[stray] is None
    assert everything.datasets[planted[0]] == planted[0]
    assert central not in everything.datasets
    assert [f.row_key for f in named.findings if f.dataset == stray] == [{"step_logging_id": "stray_step"}]
    assert len([f for f in named.findings if f.dataset == planted[0]]) == len(planted[2].findings)


def test_it_never_scans_the_central_dataset(central: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        genai_safety_scan(datasets=[central])

    assert "central" in raised.value.errors["datasets"][0]


def test_it_reports_the_same_whatever_the_number_of_workers(
    planted: tuple[str, str, GenaiSafetyReport],
) -> None:
    tenant_id, _, report = planted

    one_by_one = genai_safety_scan(tenant_ids=[tenant_id], workers=1)

    assert one_by_one.findings == report.findings
    assert [t.table for t in one_by_one.tables] == [t.table for t in report.tables]


def test_it_sets_reviewed_findings_apart_by_fingerprint(planted: tuple[str, str, GenaiSafetyReport]) -> None:
    tenant_id, _, report = planted
    reviewed = located(report, "tenant_step_logs", "error_message", sp.HIGH_ENTROPY)[0]

    rescanned = genai_safety_scan(tenant_ids=[tenant_id], ignore_fingerprints=[reviewed.fingerprint or ""])

    assert rescanned.ignored == [reviewed]
    assert reviewed not in rescanned.findings
    assert len(rescanned.findings) == len(report.findings) - 1


# --- input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("sample_rows", 0),
        ("sample_rows", 10_001),
        ("sample_rows", True),
        ("sample_rows", "5"),
        ("workers", 0),
        ("workers", 17),
        ("ignore_fingerprints", ["not-hex!"]),
    ],
)
def test_it_refuses_options_out_of_range(option: str, value: Any) -> None:
    with pytest.raises(ValidationFailed) as raised:
        genai_safety_scan(**{option: value})

    assert list(raised.value.errors) == [option]


def test_it_refuses_an_unknown_tenant(central: str) -> None:
    with pytest.raises(DoesNotExist) as raised:
        genai_safety_scan(tenant_ids=["no_such_tenant"])

    assert "no_such_tenant" in str(raised.value)
