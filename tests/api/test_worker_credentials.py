"""A run's credentials over the worker API: for the holder of its lease, while it holds it, no one else."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.utils import timezone
from rest_framework.test import APIClient

from tenants_app.models import AuditLogEntry, TenantPipelineExecutionQueue
from tenants_app.repositories import central_repository
from tenants_app.services.admin_tokens import worker_token_create
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.credentials import credential_create
from tests.support.payloads import aws_payload, gcp_payload
from tests.tenants_app.services.quota_factories import tenant_with_subscription
from tests.tenants_app.services.run_factories import enqueue

pytestmark = pytest.mark.django_db

EXECUTE = ("pipelines:execute",)
HELD = {"worker_id": "w1", "attempt": 1}


def tenant_key(tenant_id: str) -> tuple[APIClient, str]:
    key = api_key_create(tenant_id=tenant_id, name="worker", scopes=list(EXECUTE), created_by="test")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key.plaintext)
    return client, key.row.api_key_id


def worker_client() -> APIClient:
    user = User.objects.create_user("worker-pool")
    user.groups.add(Group.objects.get_or_create(name=django_settings.PIPELINE_WORKERS_GROUP)[0])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {worker_token_create(user=user, name='pool').plaintext}")
    return client


def with_credentials(tenant_id: str) -> dict[str, Any]:
    """A GCP and an AWS credential of the tenant: (credential id, payload) by provider."""
    stored = {}
    for provider, payload in (("GCP", gcp_payload()), ("AWS", aws_payload())):
        row = credential_create(
            tenant_id=tenant_id,
            provider=provider,
            name=f"{provider} main",
            payload=payload,
            created_by="test",
        )
        stored[provider] = (row.credential_id, payload)
    return stored


def held_run(client: APIClient, tenant_id: str, *, pipeline_id: str = "sql_transform") -> str:
    run_id = enqueue(tenant_id, pipeline_id=pipeline_id)
    claimed = client.post("/api/v1/worker/claim", {"worker_id": "w1"}, format="json")
    assert claimed.status_code == 200
    assert claimed.json()["run_id"] == run_id
    return run_id


def fetch(client: APIClient, run_id: str, **body: object) -> Any:
    return client.post(f"/api/v1/worker/runs/{run_id}/credentials", {**HELD, **body}, format="json")


def fetches_audited(tenant_id: str) -> list[AuditLogEntry]:
    entries = central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id})
    return [entry for entry in entries if entry.action == "credential.fetch"]


def secret_values(payload: dict[str, str]) -> list[str]:
    """The parts of a payload that must never leak (its private key's body, an AWS secret)."""
    private_key = payload.get("private_key", "")
    body = "".join(line for line in private_key.splitlines() if "-----" not in line)
    return [value for value in (body[:40], body[-40:], payload.get("secret_access_key")) if value]


@pytest.fixture
def tenant(central: str) -> str:
    return tenant_with_subscription(plan="PROFESSIONAL", concurrent_limit=3)


def test_it_gives_the_lease_holder_the_credentials_its_template_needs(tenant: str) -> None:
    stored = with_credentials(tenant)
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)

    response = fetch(holder, run_id)

    assert response.status_code == 200
    data = response.json()
    gcp_id, gcp = stored["GCP"]
    assert (data["run_id"], data["tenant_id"], data["pipeline_id"], data["attempt"]) == (
        run_id,
        tenant,
        "sql_transform",
        1,
    )
    assert (data["providers"], data["missing_providers"]) == (["GCP"], [])
    # The AWS credential is the tenant's too, but the template does not need it.
    assert [(one["credential_id"], one["provider"], one["payload"]) for one in data["credentials"]] == [
        (gcp_id, "GCP", gcp)
    ]


def test_it_answers_no_store(tenant: str) -> None:
    with_credentials(tenant)
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)

    response = fetch(holder, run_id)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


def test_it_lets_a_worker_token_fetch_the_runs_it_holds(tenant: str) -> None:
    stored = with_credentials(tenant)
    worker = worker_client()
    run_id = held_run(worker, tenant)

    response = fetch(worker, run_id)

    assert response.status_code == 200
    assert [one["credential_id"] for one in response.json()["credentials"]] == [stored["GCP"][0]]
    assert [entry.actor for entry in fetches_audited(tenant)] == ["user:worker-pool"]


def test_it_names_the_needed_providers_the_tenant_has_no_credential_for(tenant: str) -> None:
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)

    response = fetch(holder, run_id)

    assert response.status_code == 200
    assert (response.json()["credentials"], response.json()["missing_providers"]) == ([], ["GCP"])


def test_it_answers_404_to_another_tenants_key(tenant: str) -> None:
    with_credentials(tenant)
    holder, key_id = tenant_key(tenant)
    run_id = held_run(holder, tenant)
    stranger, _ = tenant_key(tenant_with_subscription())

    refused = fetch(stranger, run_id)
    served = fetch(holder, run_id)

    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"
    assert tenant not in refused.content.decode()
    assert served.status_code == 200
    assert [entry.actor for entry in fetches_audited(tenant)] == [f"apikey:{key_id}"]


def test_it_answers_409_to_another_key_of_the_same_tenant_copying_the_worker_id(tenant: str) -> None:
    with_credentials(tenant)
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)
    other, _ = tenant_key(tenant)

    response = fetch(other, run_id)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_lost"
    assert fetches_audited(tenant) == []


def test_it_answers_409_to_a_worker_token_copying_a_tenant_keys_lease(tenant: str) -> None:
    with_credentials(tenant)
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)

    response = fetch(worker_client(), run_id)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_lost"


def test_it_answers_409_once_the_run_is_complete(tenant: str) -> None:
    with_credentials(tenant)
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)
    done = holder.post(
        f"/api/v1/worker/runs/{run_id}/complete", {**HELD, "status": "SUCCEEDED"}, format="json"
    )
    assert done.status_code == 200

    response = fetch(holder, run_id)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_lost"
    assert "payload" not in response.content.decode()


def test_it_answers_409_once_the_lease_has_expired(tenant: str) -> None:
    with_credentials(tenant)
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)
    # Nobody has taken the run over yet: a heartbeat could still revive it, a secret is not handed out.
    central_repository(TenantPipelineExecutionQueue).update(
        run_id, {"lease_expires_at": timezone.now() - timedelta(seconds=1)}
    )

    response = fetch(holder, run_id)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_lost"


def test_it_answers_409_to_another_attempt(tenant: str) -> None:
    with_credentials(tenant)
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)

    response = fetch(holder, run_id, attempt=2)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_lost"


def test_it_answers_409_to_a_lease_that_recorded_no_credential(tenant: str) -> None:
    with_credentials(tenant)
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)
    # As an entry claimed before leases recorded their credential: reports still pass, secrets do not.
    central_repository(TenantPipelineExecutionQueue).update(run_id, {"lease_credential": None})

    response = fetch(holder, run_id)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_lost"


def test_it_answers_400_naming_a_missing_attempt(tenant: str) -> None:
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)

    response = holder.post(f"/api/v1/worker/runs/{run_id}/credentials", {"worker_id": "w1"}, format="json")

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["attempt"]


def test_it_audits_who_which_credential_and_which_run_never_the_value(tenant: str) -> None:
    stored = with_credentials(tenant)
    holder, key_id = tenant_key(tenant)
    run_id = held_run(holder, tenant)

    assert fetch(holder, run_id).status_code == 200

    entries = fetches_audited(tenant)
    assert [(entry.actor, entry.target_type, entry.target_id) for entry in entries] == [
        (f"apikey:{key_id}", "credential", stored["GCP"][0])
    ]
    after = entries[0].after_values
    after = json.loads(after) if isinstance(after, str) else after
    assert (after["run_id"], after["attempt"], after["worker_id"]) == (run_id, 1, "w1")
    written = json.dumps([entry.__dict__ for entry in central_repository(AuditLogEntry).list()], default=str)
    for value in secret_values(stored["GCP"][1]) + secret_values(stored["AWS"][1]):
        assert value not in written


def test_it_logs_no_value_of_the_credentials(tenant: str, caplog: pytest.LogCaptureFixture) -> None:
    stored = with_credentials(tenant)
    holder, _ = tenant_key(tenant)
    run_id = held_run(holder, tenant)
    caplog.set_level(logging.DEBUG)

    assert fetch(holder, run_id).status_code == 200
    assert fetch(holder, run_id, attempt=2).status_code == 409

    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "credentials" in logged  # the access lines are there
    for value in secret_values(stored["GCP"][1]):
        assert value not in logged
