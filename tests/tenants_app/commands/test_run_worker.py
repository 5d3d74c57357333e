"""`manage.py run_worker`: the reference worker against the portal served in-process, over HTTP only."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from pytest_django.live_server_helper import LiveServer

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.identifiers import quote_table
from tenants_app.management.commands.run_worker import stop_on_signals
from tenants_app.models import RunState, TenantDqResult, TenantScheduledPipelineRun, TenantStepLog
from tenants_app.pipeline_execution import Execution, template_execute
from tenants_app.reference_worker import ClaimedRun, ReferenceWorker, WorkerApiClient
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.admin_tokens import worker_token_create
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.pipelines import pipeline_config_create, pipeline_config_run_now
from tenants_app.services.run_reports import pipeline_logging_id
from tenants_app.services.run_tenant_rows import tenant_rows_flush

pytestmark = pytest.mark.usefixtures("central")


def tenant_client(live_server: LiveServer, tenant_id: str) -> WorkerApiClient:
    key = api_key_create(tenant_id=tenant_id, name="worker", scopes=["pipelines:execute"], created_by="test")
    return WorkerApiClient(base_url=live_server.url, worker_id="ref-worker", api_key=key.plaintext)


def queued_run(tenant_id: str, template: str, parameters: dict[str, Any], *, domain: str = "sales") -> str:
    config = pipeline_config_create(
        tenant_id=tenant_id,
        provider="GCP",
        domain=domain,
        pipeline_template=template,
        schedule_cron="0 3 * * *",
        parameters=parameters,
        actor="user:test",
    )
    return pipeline_config_run_now(
        tenant_id=tenant_id, config_id=config.config_id, actor="user:test"
    ).run.run_id


def state_of(run_id: str) -> str:
    return central_repository(TenantScheduledPipelineRun).get(run_id).state


def steps_of(tenant_id: str, run_id: str) -> list[TenantStepLog]:
    tenant_rows_flush()  # the reports' rows into the tenants' datasets, as `run_periodic` does
    return tenant_repository(TenantStepLog, tenant_id).list(
        filters={"pipeline_logging_id": pipeline_logging_id(run_id, 1)}, order_by=("step_index",)
    )


def test_it_runs_a_queued_sql_transform_into_the_tenants_dataset(
    live_server: LiveServer, tenant: str, gateway: BigQueryGateway
) -> None:
    query = (
        "SELECT customer, SUM(amount) AS total FROM {{orders}} WHERE customer IS NOT NULL GROUP BY customer"
    )
    run_id = queued_run(tenant, "sql_transform", {"source_query": query, "destination_table": "totals"})
    worker = ReferenceWorker(client=tenant_client(live_server, tenant), poll_seconds=0)

    assert worker.run(until_idle=True) == 1

    assert state_of(run_id) == RunState.SUCCEEDED
    totals = gateway.query(
        f"SELECT customer, total FROM {quote_table(gateway.project, tenant, 'totals')}"
    ).rows
    assert sorted((row["customer"], row["total"]) for row in totals) == [("ann", 10.0), ("bob", 2.5)]
    steps = steps_of(tenant, run_id)
    assert [(step.step_name, step.status, step.rows_processed) for step in steps] == [
        ("write totals", "SUCCEEDED", None),
        ("count totals", "SUCCEEDED", 2),
    ]


def test_it_appends_with_a_worker_token_and_records_data_quality_results(
    live_server: LiveServer, tenant: str, gateway: BigQueryGateway, transactional_db: None
) -> None:
    user = User.objects.create_user("worker-pool")
    user.groups.add(Group.objects.get_or_create(name=settings.PIPELINE_WORKERS_GROUP)[0])
    token = worker_token_create(user=user, name="pool").plaintext
    append = {"source_table": "orders", "destination_table": "orders_log", "write_mode": "append"}
    expectations = [
        {"type": "not_null", "column": "customer"},
        {"type": "unique", "column": "id"},
        {"type": "row_count_between", "min": 1, "max": 10},
    ]
    runs = [
        queued_run(tenant, "sql_transform", append, domain="first"),
        queued_run(tenant, "sql_transform", append, domain="second"),
        queued_run(tenant, "data_quality", {"target_table": "orders", "expectations": expectations}),
    ]
    client = WorkerApiClient(base_url=live_server.url, worker_id="pool-1", worker_token=token)

    assert ReferenceWorker(client=client, poll_seconds=0, tenant_id=tenant).run(until_idle=True) == 3

    assert [state_of(run_id) for run_id in runs] == [RunState.SUCCEEDED] * 3
    log = quote_table(gateway.project, tenant, "orders_log")
    assert gateway.query(f"SELECT COUNT(*) AS n FROM {log}").rows[0]["n"] == 6
    tenant_rows_flush()
    [result] = tenant_repository(TenantDqResult, tenant).list(
        filters={"pipeline_logging_id": pipeline_logging_id(runs[2], 1)}
    )
    assert (result.overall_status, result.expectations_passed, result.expectations_failed) == ("FAIL", 1, 2)
    assert [(failed["type"], failed["observed"]) for failed in result.failed_expectations] == [
        ("not_null", 1),
        ("unique", 1),
    ]
    assert [step.status for step in steps_of(tenant, runs[2])] == ["FAILED", "FAILED", "SUCCEEDED"]


def test_it_fails_a_run_for_good_when_its_table_is_missing_or_a_failed_expectation_must_fail_it(
    live_server: LiveServer, tenant: str
) -> None:
    missing = queued_run(tenant, "sql_transform", {"source_table": "nowhere", "destination_table": "copy"})
    strict = queued_run(
        tenant,
        "data_quality",
        {
            "target_table": "orders",
            "expectations": [{"type": "unique", "column": "id"}],
            "fail_on_error": True,
        },
        domain="strict",
    )

    ReferenceWorker(client=tenant_client(live_server, tenant), poll_seconds=0).run(until_idle=True)

    missing_run = central_repository(TenantScheduledPipelineRun).get(missing)
    assert (missing_run.state, missing_run.retry_count) == (RunState.FAILED, 0)
    assert "NotFound" in (missing_run.error_message or "")
    assert [step.status for step in steps_of(tenant, missing)] == ["FAILED"]
    assert state_of(strict) == RunState.FAILED


def test_it_heartbeats_while_a_template_runs(live_server: LiveServer, tenant: str) -> None:
    run_id = queued_run(
        tenant,
        "data_quality",
        {"target_table": "orders", "expectations": [{"type": "unique", "column": "id"}]},
    )
    beaten = threading.Event()

    class Client(WorkerApiClient):
        def heartbeat(self, run: ClaimedRun, *, lease_seconds: int) -> None:
            super().heartbeat(run, lease_seconds=lease_seconds)
            beaten.set()

    def slow_execute(**arguments: Any) -> Execution:
        # Held until the lease was extended over HTTP: the template outlives a heartbeat interval.
        assert beaten.wait(timeout=30)
        return template_execute(**arguments)

    key = api_key_create(tenant_id=tenant, name="worker", scopes=["pipelines:execute"], created_by="test")
    client = Client(base_url=live_server.url, worker_id="ref-worker", api_key=key.plaintext)
    worker = ReferenceWorker(client=client, poll_seconds=0, heartbeat_seconds=0.01, execute=slow_execute)

    assert worker.run(until_idle=True) == 1
    assert state_of(run_id) == RunState.SUCCEEDED


def test_it_finishes_the_run_in_hand_when_stopped_and_claims_no_more(
    live_server: LiveServer, tenant: str
) -> None:
    parameters = {"source_table": "orders", "destination_table": "copy"}
    first = queued_run(tenant, "sql_transform", parameters, domain="first")
    second = queued_run(tenant, "sql_transform", parameters, domain="second")
    stop = threading.Event()

    def stopped_meanwhile(**arguments: Any) -> Execution:
        stop.set()  # what SIGTERM does (stop_on_signals), while this run executes
        return template_execute(**arguments)

    worker = ReferenceWorker(
        client=tenant_client(live_server, tenant), stop=stop, poll_seconds=0, execute=stopped_meanwhile
    )

    assert worker.run() == 1
    # Either may be claimed first (same priority and minute); the other is left to the next worker.
    assert sorted([state_of(first), state_of(second)]) == [RunState.QUEUED, RunState.SUCCEEDED]


def test_it_turns_sigterm_into_the_stop_request() -> None:
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    restore = stop_on_signals(stop)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        restore()

    assert stop.is_set()
    assert signal.getsignal(signal.SIGTERM) == before
