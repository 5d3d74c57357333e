"""The hostile round of issue 11: secrets under any name or form never reach a GenAI-visible dataset.

A tenant tries every spelling of a secret-named pipeline parameter (400 naming it), a worker reports run
metadata and step metadata holding secrets (400 naming the field) and error texts quoting them
(stored redacted), and `manage.py audit_genai_safety` then passes on that tenant.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import uuid
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from tenants_app.models import TenantPipelineRun, TenantStepLog
from tenants_app.repositories import tenant_repository
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.audit import audit_list
from tenants_app.services.onboarding import tenant_onboard
from tenants_app.services.run_tenant_rows import tenant_rows_flush

pytestmark = pytest.mark.django_db

# Built at run time: no secret-shaped literal in the repository.
SECRET = "Hx7" + secrets.token_urlsafe(12)
BASIC = base64.b64encode(f"etl:{SECRET}".encode()).decode()
BODY = {
    "provider": "GCP",
    "domain": "billing",
    "pipeline_template": "sql_transform",
    "schedule_cron": "30 2 * * *",
    "parameters": {"source_table": "raw_costs", "destination_table": "daily_costs"},
}
# Each spelling the hostile test used: camelCase, plural, compound, kebab, SCREAMING, short.
SECRET_PARAMETER_NAMES = [
    "dbPassword", "tokens", "connectionString", "apiKeys", "client_secret", "AWS_SECRET_ACCESS_KEY",
    "privateKeyPem", "x-api-key", "Authorization", "refreshToken", "sessionCookie", "accessKeyId",
    "pwd", "passwd", "pw", "dsn", "auth", "credentials", "passphrase", "db.password", "session_id",
]  # fmt: skip
# Secrets under harmless names: found by their look.
SECRET_VALUES = {
    "note": f"password={SECRET}",
    "header": f"Basic {BASIC}",
    "jar": f"Cookie: sessionid={SECRET}",
    "query": f"https://api.example.com/v1?api_key={SECRET}&page=2",
}
SECRET_RUN_METADATA = [
    {"pwd": SECRET},
    {"passwd": SECRET},
    {"dbPassword": SECRET},
    {"auth": {"tokens": [SECRET]}},
    {"connection": {"connectionString": f"Server=db;Password={SECRET}"}},
    {"headers": {"x-api-key": SECRET}},
    {"retries": [{"note": f"retried with password={SECRET}"}]},
]


@pytest.fixture(scope="module", autouse=True)
def _central(central: str) -> str:
    return central


@pytest.fixture
def tenant() -> tuple[str, APIClient]:
    """An onboarded tenant (dataset and views) and a client with a key that manages and runs pipelines."""
    tenant_id = f"hostile_{uuid.uuid4().hex[:12]}"
    tenant_onboard(
        tenant_id=tenant_id,
        company_name="Hostile Corp",
        admin_email="admin@hostile.example",
        plan="PROFESSIONAL",
        created_by="ops@convergence.example",
    )
    scopes = ["pipelines:read", "pipelines:manage", "pipelines:execute"]
    key = api_key_create(tenant_id=tenant_id, name="runner", scopes=scopes, created_by="test").plaintext
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return tenant_id, client


def step(**values: Any) -> dict[str, Any]:
    started = "2031-03-18T12:00:00+00:00"
    return {
        "step_index": 0,
        "step_name": "load",
        "step_type": "load",
        "status": "FAILED",
        "start_time": started,
        **values,
    }


def refused_field(response: Any) -> tuple[int, list[str], str]:
    error = response.json()["error"]
    return response.status_code, list(error.get("fields") or {}), json.dumps(error)


def test_it_keeps_every_form_of_secret_out_of_the_tenants_dataset_and_the_audit_passes(
    tenant: tuple[str, APIClient],
) -> None:
    tenant_id, client = tenant

    for name in SECRET_PARAMETER_NAMES:
        response = client.post("/api/v1/me/pipelines", {**BODY, "parameters": {name: SECRET}}, format="json")
        status, fields, text = refused_field(response)
        assert (status, fields) == (400, ["parameters"]), name
        assert f"'{name}'" in text, name
    for name, value in SECRET_VALUES.items():
        response = client.post("/api/v1/me/pipelines", {**BODY, "parameters": {name: value}}, format="json")
        assert refused_field(response)[:2] == (400, ["parameters"]), name
        assert SECRET not in response.content.decode()

    parameters = {
        **BODY["parameters"],
        "metadata": {"max_tokens": 4096, "token_count": 3, "key_prefix": "cvg_live_Ab12Cd"},
    }
    created = client.post("/api/v1/me/pipelines", {**BODY, "parameters": parameters}, format="json")
    assert created.status_code == 201, created.json()
    run_id = client.post(f"/api/v1/me/pipelines/{created.json()['config_id']}/run").json()["run"]["run_id"]
    assert client.post("/api/v1/worker/claim", {"worker_id": "w1"}, format="json").status_code == 200
    complete = f"/api/v1/worker/runs/{run_id}/complete"

    for metadata in SECRET_RUN_METADATA:
        body = {"worker_id": "w1", "status": "SUCCEEDED", "run_metadata": metadata}
        response = client.post(complete, body, format="json")
        assert refused_field(response)[:2] == (400, ["run_metadata"]), metadata
        assert SECRET not in response.content.decode()
    steps = [step(metadata={"sessionCookie": SECRET})]
    response = client.post(
        complete, {"worker_id": "w1", "status": "FAILED", "step_logs": steps}, format="json"
    )
    assert refused_field(response)[:2] == (400, ["step_logs[0].metadata"])

    error = (
        f"load failed: Authorization: Basic {BASIC}; retry with password={SECRET} cookie: sessionid={SECRET}"
    )
    body = {"worker_id": "w1", "status": "FAILED", "error": error, "step_logs": [step(error_message=error)]}
    body["run_metadata"] = {"rows": 0, "tokens_used": 812, "max_tokens": 4096}
    assert client.post(complete, body, format="json").status_code == 200

    tenant_rows_flush()  # into the tenant's dataset, as `run_periodic` does
    stored = [r.error_message for r in tenant_repository(TenantPipelineRun, tenant_id).list()]
    stored += [s.error_message for s in tenant_repository(TenantStepLog, tenant_id).list()]
    assert len(stored) == 2
    assert all(text and "load failed: Authorization: [redacted]" in text for text in stored)
    assert not [text for text in stored if text and (SECRET in text or BASIC in text)]
    entries = audit_list(tenant_id=tenant_id, limit=200).items
    assert SECRET not in json.dumps([(e.before_values, e.after_values) for e in entries])
    out = io.StringIO()
    call_command("audit_genai_safety", "--tenant", tenant_id, stdout=out, stderr=io.StringIO())
    assert "Clean: no secrets and no undeclared tables or columns." in out.getvalue()  # and exit status 0
