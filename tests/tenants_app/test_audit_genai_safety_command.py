"""`manage.py audit_genai_safety` against the emulator: report, formats, verbosity and exit statuses."""

from __future__ import annotations

import io
import json
import os
import random
import string
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.client import BigQueryGateway, get_gateway
from bigquery_backend.emulator import free_port
from tenants_app.models import TenantProfile, TenantStepLog
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.genai_safety_tables import MAX_FINDINGS_PER_COLUMN
from tests.conftest import unique_name

REPOSITORY = Path(__file__).resolve().parents[2]
NOW = datetime(2031, 3, 18, 12, 0, tzinfo=UTC)
RANDOM = random.Random(3)  # noqa: S311 - fixed test data
# Assembled at run time, so that no secret-shaped literal sits in the repository.
AWS_ID = "AKIA" + "".join(RANDOM.choice(string.ascii_uppercase + string.digits) for _ in range(16))
CVG_KEY = "cvg_" + "live_" + "".join(RANDOM.choice(string.ascii_letters + string.digits) for _ in range(40))


def tenant_with_dataset(*step_errors: str | None) -> str:
    """A profile and a bootstrapped dataset whose step log holds one row per error given."""
    tenant_id = f"t_{uuid.uuid4().hex[:12]}"
    central_repository(TenantProfile).insert(
        TenantProfile(
            tenant_id=tenant_id,
            company_name="Acme Corp",
            admin_email="admin@acme.example",
            tenant_dataset_id=tenant_id,
            status="ACTIVE",
            created_at=timezone.now(),
        )
    )
    bigquery_bootstrap(tenant_id=tenant_id)
    tenant_repository(TenantStepLog, tenant_id).insert(
        *(
            TenantStepLog(
                step_logging_id=f"step_{index}",
                tenant_id=tenant_id,
                pipeline_logging_id=f"run_{uuid.uuid4().hex[:12]}_a1",
                step_name="extract",
                step_type="query",
                step_index=index,
                status="FAILED" if error else "SUCCEEDED",
                start_time=NOW,
                error_message=error,
                metadata={"job_id": f"bquxjob_{uuid.uuid4().hex[:8]}", "rows": 10},
            )
            for index, error in enumerate(step_errors)
        )
    )
    return tenant_id


@pytest.fixture(scope="module")
def clean(central: str) -> str:
    return tenant_with_dataset(None, "load: 403 Forbidden on billing.daily_costs")


@pytest.fixture(scope="module")
def leaky(central: str) -> str:
    return tenant_with_dataset(None, f"AccessDenied for {AWS_ID}", f"callback refused key {CVG_KEY}")


def audit(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("audit_genai_safety", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def audit_failing(*args: str) -> tuple[str, CommandError]:
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("audit_genai_safety", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue(), raised.value


def test_it_passes_a_clean_tenant_and_says_so(clean: str) -> None:
    out, _ = audit("--tenant", clean)

    assert "Scanned 1 dataset(s), 3 table(s) and view(s), 2 row(s)" in out
    assert "Clean: no secrets and no undeclared tables or columns." in out


def test_it_names_dataset_table_column_row_key_and_kind_and_exits_1(leaky: str) -> None:
    out, error = audit_failing("--tenant", leaky)

    assert error.returncode == 1
    assert "2 finding(s) in tenant datasets" in str(error)
    assert (
        f"aws_access_key_id: {leaky}.tenant_step_logs column error_message row step_logging_id=step_1: "
        "AWS access key id [fingerprint " in out
    )
    assert (
        f"convergence_api_key: {leaky}.tenant_step_logs column error_message row step_logging_id=step_2"
        in out
    )
    for secret in (AWS_ID, CVG_KEY, CVG_KEY[-40:], AWS_ID[4:]):
        assert secret not in out + str(error)


def test_it_passes_when_every_finding_is_a_reviewed_fingerprint(leaky: str) -> None:
    first, _ = audit_failing("--tenant", leaky, "--format", "json")
    fingerprints = [f["fingerprint"] for f in json.loads(first)["findings"]]

    out, _ = audit("--tenant", leaky, *(arg for fp in fingerprints for arg in ("--ignore", fp)))

    assert "2 finding(s) ignored by fingerprint (--ignore):" in out
    assert "Clean: no secrets and no undeclared tables or columns." in out


def test_it_lists_the_first_rows_of_a_leak_repeated_down_a_column_and_counts_the_rest(central: str) -> None:
    tenant = tenant_with_dataset(*(f"AccessDenied for {AWS_ID}" for _ in range(MAX_FINDINGS_PER_COLUMN + 5)))

    out, error = audit_failing("--tenant", tenant)

    assert out.count("aws_access_key_id: ") == MAX_FINDINGS_PER_COLUMN
    assert "... and 5 more finding(s) of the same kind in the same column(s), not listed" in out
    assert f"{MAX_FINDINGS_PER_COLUMN + 5} finding(s) in tenant datasets" in str(error)


def test_it_prints_the_report_as_json(leaky: str, clean: str) -> None:
    out, error = audit_failing("--tenant", leaky, "--tenant", clean, "--format", "json")

    report = json.loads(out)
    assert error.returncode == 1
    assert report["clean"] is False
    assert report["datasets"] == sorted([leaky, clean])
    assert [(f["table"], f["column"], f["row_key"], f["kind"]) for f in report["findings"]] == [
        ("tenant_step_logs", "error_message", {"step_logging_id": "step_1"}, "aws_access_key_id"),
        ("tenant_step_logs", "error_message", {"step_logging_id": "step_2"}, "convergence_api_key"),
    ]
    assert report["summary"]["by_kind"] == {"aws_access_key_id": 1, "convergence_api_key": 1}
    assert AWS_ID not in out
    assert CVG_KEY not in out


def test_it_prints_nothing_when_quiet_and_clean_and_each_table_when_verbose(clean: str) -> None:
    quiet, _ = audit("--tenant", clean, "--verbosity", "0")
    verbose, _ = audit("--tenant", clean, "--verbosity", "2")

    assert quiet == ""
    assert f"  {clean}.tenant_step_logs (table): 2 row(s) sampled, clean" in verbose
    assert f"  {clean}.tenant_dq_results (table): 0 row(s) sampled, clean" in verbose


def test_it_lists_every_dataset_but_the_central_one_in_a_dry_run(
    clean: str, leaky: str, central: str, gateway: BigQueryGateway
) -> None:
    stray = unique_name("stray")
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(stray)))

    with gateway.count_jobs() as counter:
        profiles, _ = audit("--dry-run")
        everything, _ = audit("--dry-run", "--all-datasets", "--format", "json")

    assert f"  {clean} (tenant {clean})" in profiles
    assert f"  {leaky} (tenant {leaky})" in profiles
    assert stray not in profiles
    datasets = json.loads(everything)["datasets"]
    assert datasets[stray] is None
    assert datasets[clean] == clean
    assert central not in datasets
    # Profiles are read (one query each run); no table is.
    assert counter.jobs == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tenant", "no_such_tenant"), "no such tenant: no_such_tenant"),
        (("--sample-rows", "0"), "sample_rows: A whole number from 1 to 10000."),
        (("--all-datasets", "--tenant", "x_tenant"), "all_datasets: Not together with tenants or datasets."),
        (("--dataset", "bad-name!"), "datasets: 'bad-name!' is not a dataset id."),
        (("--workers", "0"), "workers: A whole number from 1 to 16."),
    ],
)
def test_it_exits_2_on_bad_arguments(central: str, args: tuple[str, ...], message: str) -> None:
    _, error = audit_failing(*args)

    assert error.returncode == 2
    assert message in str(error)


def test_it_exits_3_with_a_clear_error_when_bigquery_is_unavailable(central: str, settings: Any) -> None:
    settings.BIGQUERY_EMULATOR_HOST = f"http://127.0.0.1:{free_port()}"
    settings.BIGQUERY_RETRY_DEADLINE_SECONDS = 1.0
    settings.BIGQUERY_TIMEOUT_SECONDS = 1.0

    _, error = audit_failing()

    assert error.returncode == 3
    assert str(error).startswith("BigQuery is unavailable, nothing was scanned (BigQuery is unavailable:")


def test_it_exits_3_and_says_so_when_the_central_dataset_was_never_bootstrapped(settings: Any) -> None:
    settings.TENANTS_DATASET = unique_name("missing")

    _, error = audit_failing()

    assert error.returncode == 3
    assert str(error).startswith("the central dataset is not ready (has bootstrap_bigquery run?)")


def test_it_exits_1_from_the_command_line_without_a_traceback(
    leaky: str, central: str, tmp_path: Path
) -> None:
    environment = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "BIGQUERY_EMULATOR_HOST": django_settings.BIGQUERY_EMULATOR_HOST,
        "BIGQUERY_PROJECT": get_gateway().project,
        "TENANTS_DATASET": central,
    }

    finished = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", "audit_genai_safety", "--tenant", leaky],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert finished.returncode == 1
    assert "CommandError: 2 finding(s) in tenant datasets" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert f"{leaky}.tenant_step_logs column error_message row step_logging_id=step_1" in finished.stdout
    assert AWS_ID not in finished.stdout + finished.stderr
    assert CVG_KEY not in finished.stdout + finished.stderr
