"""The portal's table pages (tenants_app/admin.py) against the emulator: roles, secrets, lists, page cost."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.test import Client, override_settings
from django.urls import reverse

from bigquery_backend.client import get_gateway
from bigquery_backend.emulator import free_port
from tenants_app.models import (
    CENTRAL_MODELS,
    TENANT_MODELS,
    AuditLogEntry,
    PlanName,
    TenantApiKey,
    TenantCloudCredential,
    TenantPipelineExecutionQueue,
    TenantPipelineRun,
    TenantProfile,
    TenantStatus,
    TenantStepLog,
)
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.api_key_verification import hash_api_key
from tenants_app.services.api_keys import IssuedApiKey, api_key_create
from tenants_app.services.credentials import credential_create
from tenants_app.services.onboarding import OnboardingResult, tenant_onboard
from tests.portal.conftest import AddTenant

ALL_MODELS = (*CENTRAL_MODELS, *TENANT_MODELS)
OPENAI_KEY = "sk-proj-" + "Zq7" * 16


def changelist(model: type, **params: str) -> str:
    url = reverse(f"admin:tenants_app_{model._meta.model_name}_changelist")
    if params:
        from urllib.parse import urlencode

        url += "?" + urlencode(params)
    return url


def detail(model: type, key: str, **params: str) -> str:
    # Quoted as the admin quotes its own row links: the page unquotes its key, so a bare "cred_40ab" would
    # name "cred@b" (a 404 for 6 in 256 random ids: "_22" to "_26" and "_40" are escapes).
    url = reverse(f"admin:tenants_app_{model._meta.model_name}_change", args=[quote(key)])
    if params:
        from urllib.parse import urlencode

        url += "?" + urlencode(params)
    return url


def html(response: object) -> str:
    return response.content.decode()  # type: ignore[attr-defined]


def row_ids(page: str) -> list[str]:
    """The first column of each result row, in order."""
    return re.findall(r'<th class="field-[a-z_]+">\s*<a href="[^"]*"><bdi>([^<]+)</bdi></a>', page)


@pytest.fixture(scope="module")
def onboarded(portal_dataset: str) -> OnboardingResult:
    """One tenant onboarded through the service: profile, subscription, dataset, first key."""
    return tenant_onboard(
        tenant_id="portal_pages_tenant",
        company_name="Pages Corp",
        admin_email="ops@pages.example.com",
        plan=PlanName.PROFESSIONAL,
        created_by="user:root",
    )


# --- every table, every role ----------------------------------------------------------------------------
def test_it_registers_all_fourteen_tables_on_the_portal_site() -> None:
    registered = set(admin.site._registry)

    assert set(ALL_MODELS) <= registered
    assert len(ALL_MODELS) == 14


def test_it_passes_the_admin_checks_for_every_table() -> None:
    for model in ALL_MODELS:
        assert admin.site._registry[model].check() == []


@pytest.mark.parametrize("client_name", ["superuser_client", "staff_client", "read_only_client"])
def test_it_lets_every_staff_role_browse_every_table(
    request: pytest.FixtureRequest, client_name: str, onboarded: OnboardingResult
) -> None:
    client: Client = request.getfixturevalue(client_name)
    tenant_id = onboarded.profile.tenant_id

    for model in CENTRAL_MODELS:
        response = client.get(changelist(model))
        assert response.status_code == 200, model
        assert 'id="changelist"' in html(response)
    for model in TENANT_MODELS:
        assert client.get(changelist(model)).status_code == 200  # asks for the tenant first
        response = client.get(changelist(model, tenant_id=tenant_id))
        assert response.status_code == 200, model
        assert 'id="changelist"' in html(response)


def test_it_lists_every_table_on_the_index_with_view_links_only(superuser_client: Client) -> None:
    page = html(superuser_client.get(reverse("admin:index")))

    for model in ALL_MODELS:
        assert changelist(model) in page
        assert reverse(f"admin:tenants_app_{model._meta.model_name}_changelist") + "add/" not in page


@pytest.mark.parametrize("client_name", ["non_staff_client", "anonymous_client"])
def test_it_sends_non_staff_to_the_login_page(
    request: pytest.FixtureRequest, client_name: str, portal_dataset: str
) -> None:
    client: Client = request.getfixturevalue(client_name)

    for url in (changelist(TenantProfile), detail(TenantProfile, "anything"), changelist(TenantStepLog)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_it_offers_no_add_change_or_delete_pages(superuser_client: Client, portal_dataset: str) -> None:
    base = changelist(TenantProfile)

    for suffix in ("add/", "x/delete/", "x/history/"):
        # The detail route takes any key: these are "no such row" pages, never forms.
        response = superuser_client.get(base + suffix, follow=True)
        assert response.status_code == 404, suffix
        assert "does not exist" in html(response)
        assert 'method="post" id="' not in html(response)
    assert superuser_client.post(base).status_code == 405
    assert superuser_client.post(detail(TenantProfile, "x")).status_code == 405


# --- secrets --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secrets(onboarded: OnboardingResult) -> dict[str, object]:
    """A second key and an OpenAI credential of the onboarded tenant, with everything secret about them."""
    tenant_id = onboarded.profile.tenant_id
    issued: IssuedApiKey = api_key_create(
        tenant_id=tenant_id, name="portal key", scopes=["tenant:read"], created_by="user:root"
    )
    credential = credential_create(
        tenant_id=tenant_id,
        provider="OPENAI",
        name="openai main",
        payload={"api_key": OPENAI_KEY},
        created_by="user:root",
    )
    key_row = central_repository(TenantApiKey).get(issued.row.api_key_id)
    return {"key": issued, "key_row": key_row, "credential": credential}


def secret_strings(secrets: dict[str, object], onboarded: OnboardingResult) -> list[str]:
    issued: IssuedApiKey = secrets["key"]  # type: ignore[assignment]
    key_row: TenantApiKey = secrets["key_row"]  # type: ignore[assignment]
    credential: TenantCloudCredential = secrets["credential"]  # type: ignore[assignment]
    ciphertexts = [bytes(key_row.encrypted_api_key or b""), bytes(credential.encrypted_credentials)]
    values = [issued.plaintext, hash_api_key(issued.plaintext), key_row.api_key_hash, OPENAI_KEY]
    if onboarded.api_key is not None:
        values += [onboarded.api_key.plaintext, hash_api_key(onboarded.api_key.plaintext)]
    for blob in ciphertexts:
        assert blob
        values += [base64.b64encode(blob).decode(), blob.hex(), base64.urlsafe_b64encode(blob).decode()]
        values.append(base64.b64encode(blob).decode()[:24])
    return values


def test_it_never_renders_key_or_credential_secrets(
    superuser_client: Client, secrets: dict[str, object], onboarded: OnboardingResult
) -> None:
    key_row: TenantApiKey = secrets["key_row"]  # type: ignore[assignment]
    credential: TenantCloudCredential = secrets["credential"]  # type: ignore[assignment]
    tenant_id = onboarded.profile.tenant_id
    pages = {
        "keys": superuser_client.get(changelist(TenantApiKey, tenant_id__exact=tenant_id)),
        "key": superuser_client.get(detail(TenantApiKey, key_row.api_key_id)),
        "credentials": superuser_client.get(changelist(TenantCloudCredential, tenant_id__exact=tenant_id)),
        "credential": superuser_client.get(detail(TenantCloudCredential, credential.credential_id)),
        "audit": superuser_client.get(changelist(AuditLogEntry, tenant_id__exact=tenant_id)),
    }

    for name, response in pages.items():
        assert response.status_code == 200, name
        page = html(response)
        for value in secret_strings(secrets, onboarded):
            assert value not in page, f"a secret appears on the {name} page"
        assert "Encrypted" not in page, name
        assert "encrypted_" not in page, name
        assert "Api key hash" not in page, name
    # What may show does show.
    assert key_row.key_prefix in html(pages["keys"])
    assert key_row.key_prefix in html(pages["key"])
    assert str(credential.fingerprint) in html(pages["credentials"])
    assert str(credential.fingerprint) in html(pages["credential"])


def test_it_refuses_to_filter_or_sort_on_a_secret_column(
    superuser_client: Client, secrets: dict[str, object]
) -> None:
    key_row: TenantApiKey = secrets["key_row"]  # type: ignore[assignment]

    response = superuser_client.get(changelist(TenantApiKey, api_key_hash__exact=key_row.api_key_hash))

    assert response.status_code == 400
    assert "Unknown filter or parameter: api_key_hash__exact" in html(response)
    assert key_row.api_key_hash not in html(response)


# --- search, filters, sorting, pagination --------------------------------------------------------------
@pytest.fixture
def seven_tenants(add_tenant: AddTenant) -> list[TenantProfile]:
    """Seven tenants whose company names share a token no other test uses."""
    token = f"Zebra{datetime.now(UTC).strftime('%H%M%S%f')}"
    start = datetime(2026, 2, 1, tzinfo=UTC)
    profiles = [
        TenantProfile(
            tenant_id=f"zebra_{token[-8:]}_{i}",
            company_name=f"{token} {i}",
            admin_email=f"ops{i}@zebra.example.com",
            tenant_dataset_id=f"zebra_{i}",
            status=TenantStatus.SUSPENDED if i % 3 == 0 else TenantStatus.ACTIVE,
            subscription_plan=PlanName.SCALE if i % 2 else PlanName.STARTER,
            created_at=start + timedelta(days=i),
        )
        for i in range(7)
    ]
    central_repository(TenantProfile).insert(*profiles)
    return profiles


def test_it_searches_filters_sorts_and_pages_in_bigquery(
    staff_client: Client, seven_tenants: list[TenantProfile]
) -> None:
    token = seven_tenants[0].company_name.split()[0]
    ids = [p.tenant_id for p in seven_tenants]

    page = html(staff_client.get(changelist(TenantProfile, q=token.lower())))
    assert row_ids(page) == ids[::-1]  # newest first by default
    assert "7 tenant profiles" in page
    # A tenant's row opens its tenant page (the overview with operations), not the bare profile row.
    assert f'<a href="{reverse("admin:portal-tenant-detail", args=[ids[0]])}"><bdi>{ids[0]}</bdi></a>' in page

    page = html(staff_client.get(changelist(TenantProfile, q=token, status__exact="SUSPENDED")))
    assert row_ids(page) == [ids[6], ids[3], ids[0]]
    assert '<li class="selected">' in page

    page = html(staff_client.get(changelist(TenantProfile, q=token, subscription_plan__exact="SCALE", o="0")))
    assert row_ids(page) == [ids[1], ids[3], ids[5]]  # by tenant id, ascending

    site_admin = admin.site._registry[TenantProfile]
    per_page, site_admin.list_per_page = site_admin.list_per_page, 3
    try:
        # Column 5 is created_at (column 3 is the "can do now" verdict, which holds the status).
        first = html(staff_client.get(changelist(TenantProfile, q=token, o="-5")))
        third = html(staff_client.get(changelist(TenantProfile, q=token, o="-5", p="3")))
    finally:
        site_admin.list_per_page = per_page
    assert row_ids(first) == ids[6:3:-1]
    assert row_ids(third) == [ids[0]]
    assert 'class="this-page">3<' in third
    # Links keep the search and the order, and the search box keeps the filters.
    assert f"q={token}&amp;o=-5&amp;p=2" in first


def test_it_explains_bad_parameters_with_a_400_or_404(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    add_tenant()  # so page 1 exists and page 99999 does not
    cases = {
        "nope=1": (400, "Unknown filter or parameter: nope"),
        "p=abc": (400, "Page must be a whole number"),
        "p=0": (400, "Page must be a whole number"),
        "p=99999": (404, "does not exist"),
        "o=42": (400, "Cannot sort by"),
        "o=x": (400, "Cannot sort by"),
        "status__exact=HAPPY": (400, "is not one of the choices"),
        "status__isnull=maybe": (400, "must be True or False"),
    }
    base = changelist(TenantProfile)
    for query, (status, message) in cases.items():
        response = superuser_client.get(f"{base}?{query}")
        assert response.status_code == status, query
        assert message in html(response), query

    response = superuser_client.get(changelist(AuditLogEntry, occurred_at__gte="yesterday"))
    assert response.status_code == 400
    assert "is not a date" in html(response)
    response = superuser_client.get(changelist(TenantApiKey, is_active__exact="perhaps"))
    assert response.status_code == 400


def test_it_opens_a_row_whose_key_looks_like_an_admin_escape(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant(tenant_id=f"t_40_{uuid.uuid4().hex[:8]}").tenant_id

    response = superuser_client.get(detail(TenantProfile, tenant_id))

    assert response.status_code == 200
    assert tenant_id in html(response)


def test_it_shows_a_404_page_for_a_missing_row(superuser_client: Client, portal_dataset: str) -> None:
    response = superuser_client.get(detail(TenantApiKey, "no_such_key"))

    assert response.status_code == 404
    assert "does not exist" in html(response)


# --- per-tenant tables ----------------------------------------------------------------------------------
def test_it_asks_which_tenant_and_validates_the_answer(superuser_client: Client, portal_dataset: str) -> None:
    page = html(superuser_client.get(changelist(TenantPipelineRun, pipeline_logging_id__exact="x")))
    assert 'name="tenant_id"' in page
    assert 'name="pipeline_logging_id__exact" value="x"' in page  # kept for after the answer

    response = superuser_client.get(changelist(TenantPipelineRun, tenant_id="no such tenant!"))
    assert response.status_code == 400
    assert "letters, digits or underscores" in html(response)

    response = superuser_client.get(changelist(TenantPipelineRun, tenant_id="never_onboarded"))
    assert response.status_code == 404
    assert "has no dataset" in html(response)


def test_it_lists_a_tenants_runs_with_links_to_their_steps(
    superuser_client: Client, onboarded: OnboardingResult
) -> None:
    tenant_id = onboarded.profile.tenant_id
    start = datetime(2026, 3, 1, 8, tzinfo=UTC)
    tenant_repository(TenantPipelineRun, tenant_id).insert(
        TenantPipelineRun(
            pipeline_logging_id="run_a",
            tenant_id=tenant_id,
            pipeline_id="ingest",
            status="SUCCEEDED",
            start_time=start,
            run_metadata={"rows": 3, "source": "gcs"},
        )
    )
    tenant_repository(TenantStepLog, tenant_id).insert(
        *[
            TenantStepLog(
                step_logging_id=f"step_{run}_{i}",
                tenant_id=tenant_id,
                pipeline_logging_id=run,
                step_name=f"step {i}",
                step_type="extract",
                step_index=i,
                status="SUCCEEDED",
                start_time=start + timedelta(minutes=i),
            )
            for run in ("run_a", "run_b")
            for i in range(2)
        ]
    )

    page = html(superuser_client.get(changelist(TenantPipelineRun, tenant_id=tenant_id)))
    assert row_ids(page) == ["run_a"]
    assert "1 pipeline run" in page
    run_page = html(superuser_client.get(detail(TenantPipelineRun, "run_a", tenant_id=tenant_id)))
    assert "&quot;source&quot;: &quot;gcs&quot;" in run_page  # JSON, pretty-printed
    steps_url = changelist(TenantStepLog, tenant_id=tenant_id, pipeline_logging_id__exact="run_a")
    assert steps_url.replace("&", "&amp;") in run_page
    steps = html(superuser_client.get(steps_url))
    assert sorted(row_ids(steps)) == ["step_run_a_0", "step_run_a_1"]


def test_it_links_a_step_to_its_run_whatever_the_run_id(
    superuser_client: Client, onboarded: OnboardingResult
) -> None:
    tenant_id = onboarded.profile.tenant_id
    run_id = f"run_40_{uuid.uuid4().hex[:8]}"  # "_40" is the admin's escape of "@"
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    tenant_repository(TenantPipelineRun, tenant_id).insert(
        TenantPipelineRun(
            pipeline_logging_id=run_id,
            tenant_id=tenant_id,
            pipeline_id="ingest",
            status="FAILED",
            start_time=start,
        )
    )
    tenant_repository(TenantStepLog, tenant_id).insert(
        TenantStepLog(
            step_logging_id=f"{run_id}_s0",
            tenant_id=tenant_id,
            pipeline_logging_id=run_id,
            step_name="extract",
            step_type="extract",
            step_index=0,
            status="FAILED",
            start_time=start,
        )
    )

    steps = html(
        superuser_client.get(
            changelist(TenantStepLog, tenant_id=tenant_id, pipeline_logging_id__exact=run_id)
        )
    )
    links = set(re.findall(r'href="([^"]*/tenantpipelinerun/[^"]+/change/[^"]*)"', steps))

    assert len(links) == 1
    run_page = superuser_client.get(unescape(links.pop()))
    assert run_page.status_code == 200
    assert run_id in html(run_page)


# --- roles and tools ------------------------------------------------------------------------------------
def test_it_hides_the_onboarding_button_from_read_only_staff(
    superuser_client: Client, read_only_client: Client, portal_dataset: str
) -> None:
    onboard = reverse("admin:portal-tenant-onboard")  # NoReverseMatch, a failure, if the wizard is gone

    assert f'href="{onboard}"' in html(superuser_client.get(changelist(TenantProfile)))
    assert onboard not in html(read_only_client.get(changelist(TenantProfile)))
    assert superuser_client.get(onboard).status_code == 200
    assert read_only_client.get(onboard).status_code == 403


# --- page cost ------------------------------------------------------------------------------------------
def test_it_costs_two_jobs_per_list_and_one_per_detail_whatever_the_size(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    queue = central_repository(TenantPipelineExecutionQueue)

    def enqueue(n: int, prefix: str) -> None:
        queue.insert(
            *[
                TenantPipelineExecutionQueue(
                    run_id=f"{prefix}_{i}",
                    tenant_id=tenant_id,
                    pipeline_id="p",
                    state="QUEUED",
                    scheduled_time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i),
                    priority=1 + i % 9,
                )
                for i in range(n)
            ]
        )

    def jobs(url: str) -> int:
        with get_gateway().count_jobs() as counter:
            assert superuser_client.get(url).status_code == 200
        return counter.jobs

    enqueue(3, "small")
    filtered = changelist(TenantPipelineExecutionQueue, tenant_id__exact=tenant_id, state__exact="QUEUED")
    small = (jobs(changelist(TenantPipelineExecutionQueue)), jobs(filtered))
    small_detail = jobs(detail(TenantPipelineExecutionQueue, "small_0"))
    enqueue(30, "large")
    large = (jobs(changelist(TenantPipelineExecutionQueue)), jobs(filtered))
    large_detail = jobs(detail(TenantPipelineExecutionQueue, "large_0"))

    assert small == large == (2, 2)
    assert small_detail == large_detail == 1


# --- BigQuery down --------------------------------------------------------------------------------------
@pytest.fixture
def bigquery_down(portal_dataset: str) -> Iterator[None]:
    """BigQuery settings pointing at a closed loopback port, with a short retry bound."""
    with override_settings(
        BIGQUERY_EMULATOR_HOST=f"http://127.0.0.1:{free_port()}",
        BIGQUERY_RETRY_DEADLINE_SECONDS=0.5,
        BIGQUERY_TIMEOUT_SECONDS=0.5,
    ):
        yield


def test_it_answers_503_with_a_clear_page_when_bigquery_is_unavailable(
    superuser_client: Client, bigquery_down: None
) -> None:
    for url in (changelist(TenantProfile), detail(TenantProfile, "anything")):
        response = superuser_client.get(url)
        assert response.status_code == 503
        assert "BigQuery is unavailable right now" in html(response)
        assert "Traceback" not in html(response)


def test_it_takes_a_tenant_filter_spelled_the_short_way(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    response = superuser_client.get(changelist(AuditLogEntry, tenant_id="acme_corp"), follow=True)

    assert response.redirect_chain == [(changelist(AuditLogEntry, tenant_id__exact="acme_corp"), 302)]
    assert response.status_code == 200


def test_it_lists_staff_api_tokens_read_only_without_their_hashes(
    superuser_client: Client, read_only_client: Client, superuser: object, portal_dataset: str
) -> None:
    from tenants_app.services.admin_tokens import admin_token_create

    issued = admin_token_create(user=superuser, name="deploy script")  # type: ignore[arg-type]
    url = reverse("admin:tenants_app_adminapitoken_changelist")

    for client in (superuser_client, read_only_client):
        listing = client.get(url)
        row = client.get(reverse("admin:tenants_app_adminapitoken_change", args=[issued.token.pk]))
        for response in (listing, row):
            assert response.status_code == 200
            page = html(response)
            assert issued.token.token_prefix in page
            assert issued.token.token_hash not in page
            assert issued.plaintext not in page
        assert 'name="_save"' not in html(row)
    assert superuser_client.get(url + "add/").status_code == 403
