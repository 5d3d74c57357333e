"""`manage.py run_worker` off the emulator: each run goes to BigQuery as its tenant's service account.

The portal is served in-process and the worker speaks HTTP only, as in test_run_worker.py. The
emulator takes any identity, so the gateway the worker builds from the fetched key is recorded and
replaced by one on the emulator: what is checked is that the worker asked for the run's credentials
over the API and ran the template with a gateway made from exactly that key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from django.test import override_settings
from pytest_django.live_server_helper import LiveServer

from bigquery_backend.client import BigQueryGateway, build_gateway
from tenants_app.models import AuditLogEntry, RunState, TenantScheduledPipelineRun
from tenants_app.reference_worker import ReferenceWorker, WorkerApiClient
from tenants_app.repositories import central_repository
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.credentials import credential_create
from tenants_app.services.pipelines import pipeline_config_create, pipeline_config_run_now
from tests.support.payloads import gcp_payload

pytestmark = pytest.mark.usefixtures("central")


def queued_copy(tenant_id: str) -> str:
    config = pipeline_config_create(
        tenant_id=tenant_id,
        provider="GCP",
        domain="sales",
        pipeline_template="sql_transform",
        schedule_cron="0 3 * * *",
        parameters={"source_table": "orders", "destination_table": "copy"},
        actor="user:test",
    )
    return pipeline_config_run_now(
        tenant_id=tenant_id, config_id=config.config_id, actor="user:test"
    ).run.run_id


class RecordedGateways:
    """Stands in for `service_account_gateway`: keeps each key it is given, answers with the emulator."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []

    def __call__(self, info: Mapping[str, Any]) -> BigQueryGateway:
        self.keys.append(dict(info))
        return build_gateway()  # a client of its own: the worker closes it after the run


def worker(live_server: LiveServer, tenant_id: str, gateways: RecordedGateways) -> ReferenceWorker:
    key = api_key_create(tenant_id=tenant_id, name="worker", scopes=["pipelines:execute"], created_by="test")
    client = WorkerApiClient(base_url=live_server.url, worker_id="ref-worker", api_key=key.plaintext)
    return ReferenceWorker(client=client, poll_seconds=0, run_credentials=True, gateway_for=gateways)


def test_it_runs_the_template_as_the_service_account_fetched_for_the_run(
    live_server: LiveServer, tenant: str
) -> None:
    payload = gcp_payload()
    stored = credential_create(
        tenant_id=tenant, provider="GCP", name="pipelines", payload=payload, created_by="test"
    )
    run_id = queued_copy(tenant)
    gateways = RecordedGateways()

    assert worker(live_server, tenant, gateways).run(until_idle=True) == 1

    assert gateways.keys == [payload]
    assert central_repository(TenantScheduledPipelineRun).get(run_id).state == RunState.SUCCEEDED
    fetches = [
        entry
        for entry in central_repository(AuditLogEntry).list(filters={"tenant_id": tenant})
        if entry.action == "credential.fetch"
    ]
    assert [entry.target_id for entry in fetches] == [stored.credential_id]


def test_it_fails_the_run_for_good_when_the_tenant_has_no_gcp_credential(
    live_server: LiveServer, tenant: str
) -> None:
    run_id = queued_copy(tenant)
    gateways = RecordedGateways()

    assert worker(live_server, tenant, gateways).run(until_idle=True) == 1

    run = central_repository(TenantScheduledPipelineRun).get(run_id)
    assert (run.state, run.retry_count) == (RunState.FAILED, 0)
    assert "needs an active GCP service-account credential" in (run.error_message or "")
    assert gateways.keys == []


def test_it_fetches_credentials_only_off_the_emulator() -> None:
    client = WorkerApiClient(base_url="http://127.0.0.1:9", worker_id="w", api_key="unused")

    with override_settings(BIGQUERY_EMULATOR_HOST="127.0.0.1:9050"):
        on_emulator = ReferenceWorker(client=client).run_credentials
    with override_settings(BIGQUERY_EMULATOR_HOST=None):
        off_emulator = ReferenceWorker(client=client).run_credentials

    assert (on_emulator, off_emulator) == (False, True)
