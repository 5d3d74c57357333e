"""The main flows under DEBUG logging everywhere: no secret in any line, every line JSON with its ids.

One test drives onboarding, credentials (GCP service-account JSON, AWS), key issue/rotate/revoke, a
credential replacement, a refused payload, a KMS outage (503), an idempotent replay (a decryption), a
pipeline run through the worker API and the portal pages, all while every logger (google.*, urllib3,
django.*, ours) is at DEBUG under the real LOGGING in JSON. Then it looks for every key, hash, token,
credential payload, ciphertext and any 16-character piece of them in what was emitted (raw) and in
what would be shipped (after the redaction filter), and checks each request's lines for its ids.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tenants_app.models import (
    AdminApiToken,
    IdempotencyRecord,
    TenantApiKey,
    TenantCloudCredential,
)
from tenants_app.portal.credential_forms import key_file_inputs
from tenants_app.repositories import central_repository
from tenants_app.services.admin_tokens import admin_token_create, worker_token_create
from tests.conftest import unique_name
from tests.support.kms_fake import cloud_kms_in_use
from tests.support.log_capture import ShippedLogs, shipped_logs
from tests.support.payloads import aws_payload, gcp_payload
from tests.support.people import create_superuser

pytestmark = pytest.mark.django_db

# Every piece of this length of a secret counts as a leak; shorter ones could occur by chance.
PIECE = 16
# Django's loggers whose raw text holds secrets by design (template contexts, SQL values): LOGGING keeps
# them at INFO, the filter masks them, and the shipped lines are checked; their raw text is not.
UNSHIPPED_RAW = ("django.template", "django.db")


@dataclass(frozen=True)
class Call:
    """One request: what came back, which tenant it was about, and where its lines are."""

    label: str
    status: int
    request_id: str
    tenant_id: str | None
    lines: slice


class Session:
    """Sends requests and remembers each one's lines and every secret that went through."""

    def __init__(self, logs: ShippedLogs) -> None:
        self.logs = logs
        self.calls: list[Call] = []
        self.secrets: dict[str, str] = {}

    def secret(self, label: str, value: str) -> str:
        self.secrets[label] = value
        return value

    def send(
        self, label: str, client: Client, method: str, path: str, *, tenant_id: str | None, **kwargs: Any
    ) -> Any:
        start, _ = self.logs.position()
        response = getattr(client, method)(path, **kwargs)
        end, _ = self.logs.position()
        self.calls.append(
            Call(label, response.status_code, response["X-Request-ID"], tenant_id, slice(start, end))
        )
        return response


def secret_lines(session: Session, label: str, pem: str) -> None:
    """Each base64 line of a PEM body on its own: a log may join them with "\\n" or real newlines."""
    for number, line in enumerate(pem.splitlines()[1:-1]):
        session.secret(f"{label}, line {number}", line)


def as_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def pieces(value: str) -> set[str]:
    """The value and its 16-character pieces (every 8th start): any leak of 24+ characters hits one."""
    if len(value) <= PIECE:
        return {value}
    return {value[i : i + PIECE] for i in range(0, len(value) - PIECE + 1, PIECE // 2)} | {value[-PIECE:]}


def stored_secrets(tenant_id: str) -> dict[str, str]:
    """Hashes and ciphertexts as stored (BigQuery and Django's database), in the encodings a log could use."""
    found: dict[str, str] = {}
    blobs: list[tuple[str, bytes]] = []
    for row in central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id}):
        found[f"hash {row.api_key_id}"] = row.api_key_hash
        blobs.append((f"encrypted key {row.api_key_id}", bytes(row.encrypted_api_key or b"")))
    for row in central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id}):
        blobs.append((f"encrypted credential {row.credential_id}", bytes(row.encrypted_credentials)))
    for record in IdempotencyRecord.objects.exclude(encrypted_response=None):
        blobs.append((f"encrypted replay {record.pk}", bytes(record.encrypted_response)))
    for token in AdminApiToken.objects.all():
        found[f"admin token hash {token.pk}"] = token.token_hash
    for label, blob in blobs:
        assert blob, label
        found[f"{label} (base64)"] = base64.b64encode(blob).decode()
        found[f"{label} (hex)"] = blob.hex()
    return found


def run_flows(session: Session, tenant_id: str) -> None:
    """Everything a day of operations does with secrets, over the API and the portal."""
    root = create_superuser()
    staff = bearer(session.secret("admin token", admin_token_create(user=root, name="ops").plaintext))
    worker_user = User.objects.create_user("worker-pool")
    worker_user.groups.add(Group.objects.get_or_create(name=django_settings.PIPELINE_WORKERS_GROUP)[0])
    worker = bearer(
        session.secret("worker token", worker_token_create(user=worker_user, name="pool").plaintext)
    )

    onboarded = session.send(
        "onboard",
        staff,
        "post",
        "/api/v1/tenants/onboard",
        tenant_id=None,  # no tenant in the URL or the credentials: the body names it
        data={
            "tenant_id": tenant_id,
            "company_name": "Logs Ltd",
            "admin_email": "ops@logs.example",
            "plan": "SCALE",
        },
        format="json",
    )
    assert onboarded.status_code == 201, onboarded.json()
    owner = as_key(session.secret("first key", onboarded.json()["api_key"]))

    gcp, aws = gcp_payload(), aws_payload()
    secret_lines(session, "gcp private key", gcp["private_key"])
    session.secret("aws secret", aws["secret_access_key"])
    created = []
    for provider, payload in (("GCP", gcp), ("AWS", aws)):
        response = session.send(
            f"credential {provider}",
            owner,
            "post",
            "/api/v1/me/credentials",
            tenant_id=tenant_id,
            data={"provider": provider, "name": provider.lower(), "payload": payload},
            format="json",
        )
        assert response.status_code == 201, response.json()
        created.append(response.json()["credential_id"])

    refused_value = session.secret("refused aws secret", "Rq7" + secrets.token_urlsafe(24))
    refused = session.send(
        "refused credential",
        owner,
        "post",
        "/api/v1/me/credentials",
        tenant_id=tenant_id,
        data={"provider": "AWS", "name": "typo", "payload": {**aws, "secret_access_key": refused_value}},
        format="json",
    )
    assert refused.status_code == 400
    assert "secret_access_key" in json.dumps(refused.json()["error"]["fields"])

    new_aws = aws_payload()
    session.secret("replaced aws secret", new_aws["secret_access_key"])
    replaced = session.send(
        "replace credential (staff)",
        staff,
        "post",
        f"/api/v1/tenants/{tenant_id}/credentials/{created[1]}/replace",
        tenant_id=tenant_id,
        data={"payload": new_aws},
        format="json",
    )
    assert replaced.status_code == 200, replaced.json()

    issued = session.send(
        "issue key",
        owner,
        "post",
        "/api/v1/me/keys",
        tenant_id=tenant_id,
        data={"name": "ci", "scopes": ["tenant:read"]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="logs-issue-1",
    )
    assert issued.status_code == 201
    session.secret("issued key", issued.json()["api_key"])
    replay = session.send(
        "issue key again (replayed, decrypted)",
        owner,
        "post",
        "/api/v1/me/keys",
        tenant_id=tenant_id,
        data={"name": "ci", "scopes": ["tenant:read"]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="logs-issue-1",
    )
    assert replay["Idempotent-Replayed"] == "true"
    key_id = issued.json()["key"]["api_key_id"]
    rotated = session.send(
        "rotate key",
        owner,
        "post",
        f"/api/v1/me/keys/{key_id}/rotate",
        tenant_id=tenant_id,
        data={"grace": "0"},
        format="json",
    )
    assert rotated.status_code == 201
    session.secret("rotated key", rotated.json()["api_key"])
    revoked = session.send(
        "revoke key",
        owner,
        "post",
        f"/api/v1/me/keys/{rotated.json()['key']['api_key_id']}/revoke",
        tenant_id=tenant_id,
        data={"reason": "leaked in a chat"},
        format="json",
    )
    assert revoked.status_code == 200
    refused_key = session.send(
        "revoked key used", as_key(rotated.json()["api_key"]), "get", "/api/v1/me", tenant_id=None
    )
    assert refused_key.status_code == 401
    for path in ("/api/v1/me", "/api/v1/me/keys", "/api/v1/me/credentials"):
        assert session.send(f"read {path}", owner, "get", path, tenant_id=tenant_id).status_code == 200

    with cloud_kms_in_use() as fake:
        # Cloud KMS through the real client, then down: its DEBUG loggers carry payloads.
        openai = session.secret("openai key", "sk-proj-" + secrets.token_urlsafe(36))
        ok = session.send(
            "credential via Cloud KMS",
            owner,
            "post",
            "/api/v1/me/credentials",
            tenant_id=tenant_id,
            data={"provider": "OPENAI", "name": "openai", "payload": {"api_key": openai}},
            format="json",
        )
        assert ok.status_code == 201, ok.json()
        fake.simulate_outage()
        anthropic = session.secret("anthropic key", "sk-ant-api03-" + secrets.token_urlsafe(48))
        down = session.send(
            "credential while KMS is down",
            owner,
            "post",
            "/api/v1/me/credentials",
            tenant_id=tenant_id,
            data={"provider": "ANTHROPIC", "name": "claude", "payload": {"api_key": anthropic}},
            format="json",
        )
        assert down.status_code == 503

    runner_issued = session.send(
        "issue runner key (staff)",
        staff,
        "post",
        f"/api/v1/tenants/{tenant_id}/keys",
        tenant_id=tenant_id,
        data={"name": "runner", "scopes": ["pipelines:read", "pipelines:manage", "pipelines:execute"]},
        format="json",
    )
    assert runner_issued.status_code == 201
    runner = as_key(session.secret("runner key", runner_issued.json()["api_key"]))
    config = session.send(
        "create pipeline",
        runner,
        "post",
        "/api/v1/me/pipelines",
        tenant_id=tenant_id,
        data={
            "provider": "GCP",
            "domain": "billing",
            "pipeline_template": "sql_transform",
            "schedule_cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "parameters": {"source_table": "raw_costs", "destination_table": "daily_costs"},
            "priority": 2,
        },
        format="json",
    )
    assert config.status_code == 201, config.json()
    run = session.send(
        "run now",
        runner,
        "post",
        f"/api/v1/me/pipelines/{config.json()['config_id']}/run",
        tenant_id=tenant_id,
    )
    assert run.status_code == 201, run.json()
    run_id = run.json()["run"]["run_id"]
    claimed = session.send(
        "worker claim",
        worker,
        "post",
        "/api/v1/worker/claim",
        tenant_id=None,  # a worker token serves every tenant
        data={"worker_id": "pool-1", "tenant_id": tenant_id},
        format="json",
    )
    assert claimed.status_code == 200, claimed.content
    now = timezone.now()
    done = session.send(
        "worker complete",
        worker,  # the credential holding the lease: another one copying its worker_id gets 409
        "post",
        f"/api/v1/worker/runs/{run_id}/complete",
        tenant_id=None,
        data={
            "worker_id": "pool-1",
            "attempt": 1,
            "status": "SUCCEEDED",
            "started_at": (now - timedelta(seconds=5)).isoformat(),
            "ended_at": now.isoformat(),
            "run_metadata": {"rows": 10},
        },
        format="json",
    )
    assert done.status_code == 200, done.json()

    portal = Client()
    portal.force_login(root)
    detail = session.send(
        "portal tenant page",
        portal,
        "get",
        reverse("admin:portal-tenant-detail", args=[tenant_id]),
        tenant_id=tenant_id,
    )
    assert detail.status_code == 200
    portal_gcp = gcp_payload()
    secret_lines(session, "portal gcp private key", portal_gcp["private_key"])
    replaced_in_portal = session.send(
        "portal replace credential",
        portal,
        "post",
        reverse("admin:portal-tenant-credential-replace", args=[tenant_id, created[0]]),
        tenant_id=tenant_id,
        # The replace form of a GCP credential takes the key file, here pasted (its upload twin is tested
        # in tests/portal/test_credential_forms.py).
        data={key_file_inputs("GCP")[1]: json.dumps(portal_gcp, indent=2)},
    )
    assert replaced_in_portal.status_code == 302
    key_form = reverse("admin:portal-tenant-key-create", args=[tenant_id])
    form = session.send("portal key form", portal, "get", key_form, tenant_id=tenant_id).content.decode()
    token = form.split('name="token" value="', 1)[1].split('"', 1)[0]
    shown = session.send(
        "portal issue key",
        portal,
        "post",
        key_form,
        tenant_id=tenant_id,
        data={"name": "portal", "scopes": ["tenant:read"], "token": token},
    )
    assert shown.status_code == 200
    session.secret("portal key", re.search(r"cvg_live_[A-Za-z0-9]{40}", shown.content.decode()).group())  # type: ignore[union-attr]


def assert_no_secret_in(text: str, where: str, session: Session, stored: dict[str, str]) -> None:
    for label, value in {**session.secrets, **stored}.items():
        leaked = [piece for piece in pieces(value) if piece in text]
        assert not leaked, f"{where}: a piece of the {label} is in the logs"


def test_it_keeps_every_secret_out_of_the_logs_at_debug(
    central: str, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_id = unique_name("logs")

    # Django logs SQL (with its values filled in) only with DEBUG=True: force it, as DEBUG would.
    connection.force_debug_cursor = True
    try:
        with shipped_logs() as logs:
            session = Session(logs)
            run_flows(session, tenant_id)
    finally:
        connection.force_debug_cursor = False

    stored = stored_secrets(tenant_id)
    entries = logs.entries()  # each line parses as JSON, or this fails
    assert len(entries) == len(logs.raw.lines) > 100
    # The google libraries' own lines reach our handler too (LOGGING keeps them propagating).
    assert any(entry["logger"].startswith("google.") for entry in entries)
    assert any(entry["logger"] == "django.db.backends" for entry in entries)
    emitted = "\n".join(line.text for line in logs.raw.lines if not line.logger.startswith(UNSHIPPED_RAW))
    assert_no_secret_in(emitted, "emitted", session, stored)
    assert_no_secret_in(logs.text(), "shipped", session, stored)
    assert_no_secret_in(
        "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(UNSHIPPED_RAW)),
        "caplog",
        session,
        stored,
    )

    main = threading.get_ident()
    for call in session.calls:
        lines = [
            entry
            for entry, raw in zip(entries[call.lines], logs.raw.lines[call.lines], strict=True)
            if raw.thread == main
        ]
        access = [line for line in lines if line["logger"] == "convergence.access"]
        assert len(access) == 1, call.label
        assert (access[0]["status"], access[0]["tenant_id"]) == (call.status, call.tenant_id), call.label
        assert {line["request_id"] for line in lines} == {call.request_id}, call.label
        ours = [line for line in lines if line["logger"].startswith("tenants_app")]
        if call.tenant_id is not None:
            assert {line["tenant_id"] for line in ours} <= {call.tenant_id}, call.label
