"""The portal's tenant page: everything about one tenant, no secret, a constant BigQuery cost."""

# `onboard` comes from tests/portal/tenant_helpers.py by import, so test parameters shadow the import.
# ruff: noqa: F811

from __future__ import annotations

import base64
import re
import socket
from datetime import UTC, date, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import (
    TenantApiKey,
    TenantCloudCredential,
    TenantDqResult,
    TenantPipelineRun,
    TenantProfile,
    TenantStatus,
    TenantStepLog,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.credentials import credential_create
from tenants_app.services.onboarding import usage_id_for
from tests.portal.tenant_helpers import Onboard, new_tenant_id, onboard  # noqa: F401 - a fixture
from tests.tenants_app.services.quota_factories import queue_entries

OPENAI_SECRET = "sk-" + "Zq7" * 12


def detail_url(tenant_id: str) -> str:
    return reverse("admin:portal-tenant-detail", args=[tenant_id])


def test_it_shows_profile_subscription_usage_keys_and_credentials(
    superuser_client: Client, onboard: Onboard
) -> None:
    result = onboard(plan="PROFESSIONAL")
    tenant_id = result.profile.tenant_id
    credential = credential_create(
        tenant_id=tenant_id,
        provider="OPENAI",
        name="prod",
        payload={"api_key": OPENAI_SECRET},
        created_by="user:t",
    )

    response = superuser_client.get(detail_url(tenant_id))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Acme Analytics" in html
    assert "admin@acme.example" in html
    assert "Professional" in html
    assert "25 runs a day, 750 a month, 3 at once" in html
    assert result.api_key is not None
    assert result.api_key.row.key_prefix in html
    assert credential.fingerprint in html
    assert "OpenAI" in html
    assert 'id="tenant-configs"' in html
    assert html.count('class="bar"') == 30  # the 30-day trend chart, drawn server-side
    assert "No pipeline runs yet." in html


def test_it_never_renders_a_key_a_hash_or_a_ciphertext(superuser_client: Client, onboard: Onboard) -> None:
    result = onboard()
    tenant_id = result.profile.tenant_id
    assert result.api_key is not None
    credential_create(
        tenant_id=tenant_id,
        provider="OPENAI",
        name="prod",
        payload={"api_key": OPENAI_SECRET},
        created_by="user:t",
    )
    stored_key = central_repository(TenantApiKey).get(result.api_key.row.api_key_id)
    stored_credential = central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id})[0]

    html = superuser_client.get(detail_url(tenant_id)).content.decode()

    assert result.api_key.plaintext not in html
    assert stored_key.api_key_hash not in html
    for ciphertext in (stored_key.encrypted_api_key, stored_credential.encrypted_credentials):
        assert base64.b64encode(bytes(ciphertext)).decode() not in html
        assert bytes(ciphertext).hex() not in html
    assert OPENAI_SECRET not in html


def test_it_shows_recent_runs_with_their_steps_and_dq_results(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    start = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    tenant_repository(TenantPipelineRun, tenant_id).insert(
        *(
            TenantPipelineRun(
                pipeline_logging_id=f"run_{i}",
                tenant_id=tenant_id,
                pipeline_id=f"gcp_billing_{i}",
                status="FAILED" if i == 1 else "SUCCEEDED",
                start_time=start + timedelta(hours=i),
                error_message="quota exceeded upstream" if i == 1 else None,
            )
            for i in range(2)
        )
    )
    tenant_repository(TenantStepLog, tenant_id).insert(
        *(
            TenantStepLog(
                step_logging_id=f"step_{run}_{index}",
                tenant_id=tenant_id,
                pipeline_logging_id=f"run_{run}",
                step_name=f"load_step_{run}_{index}",
                step_type="LOAD",
                step_index=index,
                status="SUCCEEDED",
                start_time=start,
            )
            for run in range(2)
            for index in range(2)
        )
    )
    tenant_repository(TenantDqResult, tenant_id).insert(
        TenantDqResult(
            dq_result_id="dq_1",
            pipeline_logging_id="run_1",
            tenant_id=tenant_id,
            target_table="billing.daily_costs",
            dq_config_id="dq_not_null_costs",
            executed_at=start,
            expectations_passed=4,
            expectations_failed=1,
            overall_status="FAIL",
            ingestion_date=date(2026, 3, 1),
        )
    )

    html = superuser_client.get(detail_url(tenant_id)).content.decode()

    assert html.index("gcp_billing_1") < html.index("gcp_billing_0")  # newest first
    for name in ("load_step_0_0", "load_step_0_1", "load_step_1_0", "load_step_1_1"):
        assert name in html
    assert "dq_not_null_costs" in html
    assert "billing.daily_costs" in html
    assert "quota exceeded upstream" in html
    run_links = re.findall(r'href="([^"]+pipeline_logging_id__exact=run_1)"', html)
    assert len(run_links) == 2
    dq_page = superuser_client.get(
        next(link for link in run_links if "tenantdqresult" in link).replace("&amp;", "&")
    )
    assert dq_page.status_code == 200
    assert "billing.daily_costs" in dq_page.content.decode()


def test_it_flags_usage_at_80_percent_of_a_limit(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id  # STARTER: 6 runs a day
    today = timezone.now().astimezone(UTC).date()
    central_repository(TenantUsageQuota).update(
        usage_id_for(tenant_id, today), {"pipelines_run_today": 5, "pipelines_run_month": 5}
    )

    html = superuser_client.get(detail_url(tenant_id)).content.decode()

    assert "83%" in html
    assert html.count("80% or more") == 1


@pytest.mark.parametrize(("queued", "flag"), [(0, None), (1, "full, 1 waiting")])
def test_it_flags_a_full_concurrent_limit_only_while_runs_wait(
    superuser_client: Client, onboard: Onboard, queued: int, flag: str | None
) -> None:
    # STARTER allows 1 run at a time: running it is the plan working, not pressure, until a run waits.
    tenant_id = onboard().profile.tenant_id
    today = timezone.now().astimezone(UTC).date()
    central_repository(TenantUsageQuota).update(
        usage_id_for(tenant_id, today), {"concurrent_pipelines_running": 1}
    )
    queue_entries(tenant_id, ("RUNNING", today), *[("QUEUED", None)] * queued)

    html = superuser_client.get(detail_url(tenant_id)).content.decode()

    assert html.count('class="portal-flag"') == (1 if flag else 0)
    if flag:
        assert flag in html


@pytest.mark.parametrize("tenant_id", ["t_never_onboarded", "Not-A-Tenant!"])
def test_it_answers_404_for_a_tenant_that_does_not_exist(
    superuser_client: Client, portal_dataset: str, tenant_id: str
) -> None:
    response = superuser_client.get(detail_url(tenant_id))

    assert response.status_code == 404
    assert "does not exist" in response.content.decode()


def test_it_still_shows_a_tenant_whose_dataset_is_missing(
    superuser_client: Client, portal_dataset: str
) -> None:
    tenant_id = new_tenant_id()
    central_repository(TenantProfile).insert(
        TenantProfile(
            tenant_id=tenant_id,
            company_name="Dataset-less Ltd",
            admin_email="ops@example.com",
            tenant_dataset_id=tenant_id,
            status=TenantStatus.ACTIVE,
            subscription_plan="STARTER",
        )
    )

    response = superuser_client.get(detail_url(tenant_id))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Dataset-less Ltd" in html
    assert 'id="dataset-missing"' in html
    assert "No subscription." in html


def test_it_shows_operations_to_writers_only(
    superuser_client: Client, staff_client: Client, read_only_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id

    pages = {
        name: client.get(detail_url(tenant_id)).content.decode()
        for name, client in (
            ("admin", superuser_client),
            ("staff", staff_client),
            ("read_only", read_only_client),
        )
    }

    for name in ("admin", "staff"):
        assert 'id="tenant-operations"' in pages[name]
        assert reverse("admin:portal-tenant-key-create", args=[tenant_id]) in pages[name]
    assert "Acme Analytics" in pages["read_only"]
    assert 'id="tenant-operations"' not in pages["read_only"]
    assert f"/admin/tenants/{tenant_id}/" + "keys/" not in pages["read_only"]
    assert "Rotate" not in pages["read_only"]
    assert "Revoke" not in pages["read_only"]


def test_it_sends_anonymous_and_non_staff_users_to_the_login_page(
    non_staff_client: Client, portal_dataset: str
) -> None:
    for client in (Client(), non_staff_client):
        response = client.get(detail_url("t_anything"))

        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_it_costs_the_same_bigquery_jobs_with_2_or_20_keys(
    superuser_client: Client, onboard: Onboard, gateway: BigQueryGateway
) -> None:
    few, many = onboard().profile.tenant_id, onboard().profile.tenant_id
    for tenant_id, extra in ((few, 1), (many, 19)):
        for i in range(extra):
            api_key_create(tenant_id=tenant_id, name=f"key {i}", scopes=["tenant:read"], created_by="user:t")

    counts = []
    for tenant_id in (few, many):
        with gateway.count_jobs() as counter:
            response = superuser_client.get(detail_url(tenant_id))
        assert response.status_code == 200
        counts.append(counter.jobs)

    assert counts[0] == counts[1]
    # The overview's reads side by side (tenant_overview.py), its runs' rows not yet written included.
    assert counts[0] <= 10


def test_it_answers_503_with_a_page_when_bigquery_is_down(
    superuser_client: Client, portal_dataset: str, settings: object
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings.BIGQUERY_EMULATOR_HOST = f"http://127.0.0.1:{closed_port}"  # type: ignore[attr-defined]
    settings.BIGQUERY_RETRY_DEADLINE_SECONDS = 0.5  # type: ignore[attr-defined]
    settings.BIGQUERY_TIMEOUT_SECONDS = 0.5  # type: ignore[attr-defined]

    response = superuser_client.get(detail_url("t_whoever"))

    assert response.status_code == 503
    assert response["Retry-After"]
    assert "Temporarily unavailable" in response.content.decode()


def test_it_links_to_the_table_pages_filtered_by_this_tenant(
    superuser_client: Client, onboard: Onboard
) -> None:
    mine, other = onboard(), onboard()
    assert mine.api_key is not None
    assert other.api_key is not None
    html = superuser_client.get(detail_url(mine.profile.tenant_id)).content.decode()
    links = [
        link.replace("&amp;", "&") for link in re.findall(r'href="(/admin/tenants_app/[^"]+\?[^"]+)"', html)
    ]

    assert len(links) >= 8
    for link in links:
        assert superuser_client.get(link).status_code == 200, link
    keys_link = next(link for link in links if "/tenantapikey/" in link)
    keys_page = superuser_client.get(keys_link).content.decode()
    assert mine.api_key.row.key_prefix in keys_page
    assert other.api_key.row.key_prefix not in keys_page


def test_it_marks_expired_keys_and_offers_no_operation_on_them(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    issued = api_key_create(
        tenant_id=tenant_id,
        name="short-lived",
        scopes=["tenant:read"],
        created_by="user:t",
        expires_at=timezone.now() + timedelta(days=1),
    )
    central_repository(TenantApiKey).update(
        issued.row.api_key_id, {"expires_at": timezone.now() - timedelta(minutes=1)}
    )

    html = superuser_client.get(detail_url(tenant_id)).content.decode()

    row = html[html.index(f'id="key-{issued.row.api_key_id}"') :].split("</tr>", 1)[0]
    assert "Expired" in row
    assert "Rotate" not in row
    assert "Revoke" not in row
