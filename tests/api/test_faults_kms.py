"""KMS faults over the API: Cloud KMS stopped, slow or refusing, and a broken local key file.

Every request that needs KMS answers a 503 in the error envelope, writes nothing half-done to
BigQuery and no plaintext anywhere; once KMS is back, the same request succeeds, exactly once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from pytest_django import Settings as SettingsWrapper
from rest_framework.test import APIClient

from bigquery_backend.models import BigQueryModel
from tenants_app.kms import LOCAL_KEY_FILENAME, get_kms
from tenants_app.models import (
    CENTRAL,
    PlanName,
    TenantApiKey,
    TenantCloudCredential,
    TenantProfile,
)
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_scopes import INITIAL_API_KEY_SCOPES
from tenants_app.services.api_keys import api_key_create
from tests.conftest import unique_name
from tests.support.kms_fake import FakeCloudKms, cloud_kms_in_use
from tests.support.people import insert_profile, insert_subscription

pytestmark = pytest.mark.django_db

# Short, so each failing call gives up quickly; the retry still makes several attempts.
KMS_TIMEOUT_SECONDS = 0.5
STOPPED, SLOW, FAILING, REFUSING = "stopped", "slow", "failing", "refusing"


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    key: str


class Kms:
    """The Cloud KMS fake behind KMS_BACKEND=gcp, with one switch per kind of outage."""

    def __init__(self, fake: FakeCloudKms) -> None:
        self.fake = fake

    def down(self, how: str) -> None:
        if how == STOPPED:
            self.fake.stop()
        elif how == SLOW:
            self.fake.delay_seconds = KMS_TIMEOUT_SECONDS * 4
        elif how == FAILING:
            self.fake.simulate_outage()
        elif how == REFUSING:
            self.fake.fail_with = (403, "PERMISSION_DENIED")
        else:
            raise ValueError(how)

    def up(self) -> None:
        if self.fake._server is None:
            self.fake.start()  # same port, same keys: a restart
        self.fake.reset()


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tenant(central: str) -> Tenant:
    """A SCALE tenant inserted directly, with a key issued under the local backend (verified by hash,
    which needs no KMS)."""
    tenant_id = unique_name("kmsfault")
    insert_profile(tenant_id, subscription_plan=PlanName.SCALE)
    insert_subscription(tenant_id, PlanName.SCALE)
    issued = api_key_create(tenant_id=tenant_id, name="ops", scopes=INITIAL_API_KEY_SCOPES, created_by="test")
    return Tenant(tenant_id, issued.plaintext)


@pytest.fixture
def kms() -> Iterator[Kms]:
    with cloud_kms_in_use(timeout_seconds=KMS_TIMEOUT_SECONDS) as fake:
        yield Kms(fake)


def as_tenant(tenant: Tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=tenant.key)
    return client


def secret_payload() -> tuple[str, dict[str, str]]:
    secret = f"sk-proj-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    return secret, {"api_key": secret}


def central_text() -> tuple[str, bytes]:
    """Every value of every central table, as text and as raw bytes (BYTES columns)."""
    text, raw = [], []
    for model in apps.get_app_config("tenants_app").get_models():
        if not issubclass(model, BigQueryModel) or model.table_spec.scope != CENTRAL:
            continue
        for row in central_repository(model).list():
            for column in model._meta.concrete_fields:
                value = getattr(row, column.attname)
                if isinstance(value, bytes | bytearray | memoryview):
                    raw.append(bytes(value))
                else:
                    text.append(str(value))
    return "\n".join(text), b"\n".join(raw)


def assert_nowhere(secret: str, *texts: str) -> None:
    text, raw = central_text()
    assert secret not in text, "the plaintext is in a central table"
    assert secret.encode() not in raw, "the plaintext is in a BYTES column"
    for other in texts:
        assert secret not in other, "the plaintext is in a response or a log line"


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"]
    assert response["Retry-After"]


def credential_rows(tenant_id: str, name: str) -> list[TenantCloudCredential]:
    return central_repository(TenantCloudCredential).list(
        filters={"tenant_id": tenant_id, "credential_name": name}
    )


# --- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", [STOPPED, SLOW, FAILING, REFUSING])
def test_it_answers_503_for_a_credential_add_and_stores_it_once_when_kms_is_back(
    tenant: Tenant, kms: Kms, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret, payload = secret_payload()
    body = {"provider": "OPENAI", "name": f"add-{how}", "payload": payload}
    client = as_tenant(tenant)
    kms.down(how)

    with caplog.at_level(logging.DEBUG):
        failed = client.post("/api/v1/me/credentials", body, format="json", HTTP_IDEMPOTENCY_KEY=f"add-{how}")

    assert_unavailable(failed)
    assert credential_rows(tenant.tenant_id, f"add-{how}") == []

    kms.up()
    created = client.post("/api/v1/me/credentials", body, format="json", HTTP_IDEMPOTENCY_KEY=f"add-{how}")
    replayed = client.post("/api/v1/me/credentials", body, format="json", HTTP_IDEMPOTENCY_KEY=f"add-{how}")

    assert created.status_code == 201, created.content
    assert replayed["Idempotent-Replayed"] == "true"
    assert replayed.json() == created.json()
    assert len(credential_rows(tenant.tenant_id, f"add-{how}")) == 1
    assert_nowhere(
        secret, failed.content.decode(), created.content.decode(), replayed.content.decode(), caplog.text
    )


def test_it_keeps_the_old_payload_when_a_replace_meets_a_kms_outage(tenant: Tenant, kms: Kms) -> None:
    client = as_tenant(tenant)
    _, first = secret_payload()
    created = client.post(
        "/api/v1/me/credentials", {"provider": "OPENAI", "name": "replace", "payload": first}, format="json"
    ).json()
    before = credential_rows(tenant.tenant_id, "replace")[0]
    secret, second = secret_payload()
    path = f"/api/v1/me/credentials/{created['credential_id']}/replace"
    kms.down(FAILING)

    failed = client.post(path, {"payload": second}, format="json")

    assert_unavailable(failed)
    after = credential_rows(tenant.tenant_id, "replace")[0]
    assert bytes(after.encrypted_credentials) == bytes(before.encrypted_credentials)
    assert (after.fingerprint, after.updated_at) == (before.fingerprint, before.updated_at)

    kms.up()
    replaced = client.post(path, {"payload": second}, format="json")

    assert replaced.status_code == 200, replaced.content
    assert replaced.json()["fingerprint"] != created["fingerprint"]
    assert len(credential_rows(tenant.tenant_id, "replace")) == 1
    assert_nowhere(secret, failed.content.decode(), replaced.content.decode())


def test_it_issues_rotates_and_replays_api_keys_only_while_kms_answers(tenant: Tenant, kms: Kms) -> None:
    client = as_tenant(tenant)
    keys = central_repository(TenantApiKey)
    issued = client.post("/api/v1/me/keys", {"name": "replayable"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert issued.status_code == 201, issued.content
    count = keys.count(filters={"tenant_id": tenant.tenant_id})
    kms.down(STOPPED)

    new_key = client.post("/api/v1/me/keys", {"name": "new"}, format="json")
    rotated = client.post(
        f"/api/v1/me/keys/{issued.json()['key']['api_key_id']}/rotate", {"grace": "0"}, format="json"
    )
    # The stored response holds the new key, encrypted: no KMS, no replay (and never a second key).
    replay = client.post("/api/v1/me/keys", {"name": "replayable"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    for response in (new_key, rotated, replay):
        assert_unavailable(response)
    assert keys.count(filters={"tenant_id": tenant.tenant_id}) == count
    assert as_tenant(Tenant(tenant.tenant_id, issued.json()["api_key"])).get("/api/v1/me").status_code == 200
    for response in (new_key, rotated, replay):
        assert issued.json()["api_key"] not in response.content.decode()

    kms.up()
    replayed = client.post(
        "/api/v1/me/keys", {"name": "replayable"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert replayed["Idempotent-Replayed"] == "true"
    assert replayed.json() == issued.json()
    assert keys.count(filters={"tenant_id": tenant.tenant_id}) == count


def test_it_finishes_an_onboarding_that_met_a_kms_outage_when_repeated(
    central: str, kms: Kms, staff: User
) -> None:
    client = APIClient()
    client.force_login(staff)
    tenant_id = unique_name("kmsonb")
    body = {
        "tenant_id": tenant_id,
        "company_name": "Outage Inc",
        "admin_email": "ops@example.com",
        "plan": "STARTER",
    }
    kms.down(FAILING)

    failed = client.post("/api/v1/tenants/onboard", body, format="json")
    ready = client.get("/readyz")

    assert_unavailable(failed)
    assert ready.status_code == 503
    assert ready.json()["checks"]["kms"] == {"status": "unavailable", "error": "KmsUnavailable"}
    assert ready.json()["checks"]["bigquery"]["status"] == "ok"
    # KMS is checked before the first write (onboarding_checks.kms_reachable): nothing stands, and
    # the repeat does it all. An outage after that check is finished by a repeat too (service tests).
    assert central_repository(TenantApiKey).count(filters={"tenant_id": tenant_id}) == 0
    assert central_repository(TenantProfile).count(filters={"tenant_id": tenant_id}) == 0

    kms.up()
    done = client.post("/api/v1/tenants/onboard", body, format="json")

    assert done.status_code == 201, done.content
    assert done.json()["resumed"] is False
    assert done.json()["api_key"]
    assert client.get("/readyz").status_code == 200
    assert central_repository(TenantProfile).count(filters={"tenant_id": tenant_id}) == 1
    assert central_repository(TenantApiKey).count(filters={"tenant_id": tenant_id}) == 1


@pytest.mark.parametrize("breakage", ["readable by others", "a directory"])
def test_it_answers_503_and_tells_only_the_operator_when_the_local_key_file_is_broken(
    tenant: Tenant,
    settings: SettingsWrapper,
    tmp_path: Path,
    breakage: str,
    caplog: pytest.LogCaptureFixture,
    client: Any,
) -> None:
    settings.DATA_DIR = tmp_path
    settings.KMS_BACKEND = "local"
    key_path = tmp_path / LOCAL_KEY_FILENAME
    get_kms().check()  # creates the ring
    good = key_path.read_bytes()
    repair: Callable[[], None]
    if breakage == "readable by others":
        # Tests run as root, for whom mode 000 changes nothing: the permission check is what bites.
        key_path.chmod(0o644)
        repair = lambda: key_path.chmod(0o600)  # noqa: E731
    else:
        key_path.unlink()
        key_path.mkdir()

        def repair() -> None:
            key_path.rmdir()
            key_path.write_bytes(good)
            key_path.chmod(0o600)

    secret, payload = secret_payload()
    body = {"provider": "OPENAI", "name": f"local-{breakage}", "payload": payload}

    with caplog.at_level(logging.WARNING):
        failed = as_tenant(tenant).post("/api/v1/me/credentials", body, format="json")
    request_log = caplog.text
    ready = client.get("/readyz")

    assert_unavailable(failed)
    assert str(tmp_path) not in failed.content.decode(), "the key's path is for the operator's log only"
    assert str(key_path) in request_log, "the operator learns which file is wrong"
    assert ready.json()["checks"]["kms"] == {"status": "unavailable", "error": "KmsMisconfigured"}
    assert credential_rows(tenant.tenant_id, f"local-{breakage}") == []
    assert secret not in failed.content.decode() + caplog.text

    repair()
    created = as_tenant(tenant).post("/api/v1/me/credentials", body, format="json")

    assert created.status_code == 201, created.content
    assert len(credential_rows(tenant.tenant_id, f"local-{breakage}")) == 1
