"""Runs and the queue over the API: staff and tenant reads, filters, detail with logs, cancel, requeue."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tenants_app.models import AuditLogEntry, RunState, TenantPipelineExecutionQueue
from tenants_app.repositories import central_repository
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.run_claims import run_claim
from tenants_app.services.run_reports import run_complete, run_fail
from tests.support.tenant_rows import rows_left_alone
from tests.tenants_app.services.quota_factories import tenant_with_subscription
from tests.tenants_app.services.run_factories import enqueue

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]
NOW = datetime(2031, 3, 18, 12, 0, tzinfo=UTC)


def as_key(tenant_id: str, *scopes: str) -> APIClient:
    key = api_key_create(tenant_id=tenant_id, name="reader", scopes=list(scopes), created_by="test")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key.plaintext)
    return client


def finished_run(tenant_id: str) -> str:
    """A run claimed and completed with one step log and one DQ result."""
    run_id = enqueue(tenant_id, scheduled_time=datetime(2030, 1, 1, tzinfo=UTC))
    assert run_claim(worker_id="w1", tenant_id=tenant_id, now=NOW) is not None
    run_complete(
        run_id=run_id,
        worker_id="w1",
        status="SUCCEEDED",
        step_logs=[
            {
                "step_index": 0,
                "step_name": "extract",
                "step_type": "query",
                "status": "SUCCEEDED",
                "start_time": NOW,
            }
        ],
        dq_results=[
            {
                "target_table": "billing.costs",
                "dq_config_id": "dq1",
                "executed_at": NOW,
                "expectations_passed": 3,
                "expectations_failed": 0,
                "overall_status": "PASS",
            }
        ],
        now=NOW,
    )
    return run_id


def test_it_lists_a_tenants_runs_for_staff_with_filters_and_paging(
    api_as: ApiAs, staff: User, central: str
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    bigquery_bootstrap(tenant_id=tenant_id)
    done = finished_run(tenant_id)
    queued = [enqueue(tenant_id, scheduled_time=datetime(2030, 2, day, tzinfo=UTC)) for day in (1, 2, 3)]
    client = api_as(staff)

    everything = client.get(f"/api/v1/tenants/{tenant_id}/runs", {"limit": 2})
    succeeded = client.get(f"/api/v1/tenants/{tenant_id}/runs", {"state": "SUCCEEDED"})
    window = client.get(
        f"/api/v1/tenants/{tenant_id}/runs",
        {"since": "2030-02-02T00:00:00Z", "until": "2030-02-03T00:00:00Z"},
    )
    bad = client.get(f"/api/v1/tenants/{tenant_id}/runs", {"state": "DONE", "limit": 0})

    assert everything.status_code == 200
    assert everything.json()["count"] == 4
    assert [r["run_id"] for r in everything.json()["results"]] == [queued[2], queued[1]]  # newest slot first
    assert [r["run_id"] for r in succeeded.json()["results"]] == [done]
    assert [r["run_id"] for r in window.json()["results"]] == [queued[1]]
    assert bad.status_code == 400
    assert set(bad.json()["error"]["fields"]) == {"state", "limit"}
    assert client.get("/api/v1/tenants/nobody_here/runs").status_code == 404


def test_it_shows_a_runs_queue_entry_logs_and_dq_results(api_as: ApiAs, staff: User, central: str) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    bigquery_bootstrap(tenant_id=tenant_id)
    run_id = finished_run(tenant_id)

    response = api_as(staff).get(f"/api/v1/tenants/{tenant_id}/runs/{run_id}")

    assert response.status_code == 200
    data = response.json()
    assert data["run"]["state"] == RunState.SUCCEEDED
    assert data["queue_entry"]["attempt"] == 1
    assert [s["step_name"] for s in data["step_logs"]] == ["extract"]
    assert [d["overall_status"] for d in data["dq_results"]] == ["PASS"]
    assert [e["status"] for e in data["executions"]] == ["SUCCEEDED"]


def test_it_serves_a_tenant_its_own_runs_with_the_read_scope(central: str) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    run_id = enqueue(tenant_id)
    other_run = enqueue(tenant_with_subscription())

    reader = as_key(tenant_id, "pipelines:read")
    listed = reader.get("/api/v1/me/runs")

    assert listed.status_code == 200
    assert [r["run_id"] for r in listed.json()["results"]] == [run_id]
    assert reader.get(f"/api/v1/me/runs/{run_id}").status_code == 200
    assert reader.get(f"/api/v1/me/runs/{other_run}").status_code == 404
    assert as_key(tenant_id, "tenant:read").get("/api/v1/me/runs").status_code == 403
    assert reader.post(f"/api/v1/me/runs/{run_id}/cancel", {}, format="json").status_code == 403
    assert reader.get("/api/v1/queue").status_code == 403


def test_it_lets_a_tenant_cancel_its_own_queued_run_with_the_manage_scope(central: str) -> None:
    tenant_id = tenant_with_subscription()
    run_id = enqueue(tenant_id)

    response = as_key(tenant_id, "pipelines:read", "pipelines:manage").post(
        f"/api/v1/me/runs/{run_id}/cancel", {"reason": "not needed"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["state"] == RunState.CANCELLED


def test_it_answers_404_when_a_tenant_cancels_or_requeues_another_tenants_run(central: str) -> None:
    owner = tenant_with_subscription()
    run_id = enqueue(owner)
    intruder = as_key(tenant_with_subscription(), "pipelines:read", "pipelines:manage")

    with rows_left_alone(owner, TenantPipelineExecutionQueue):
        cancel = intruder.post(f"/api/v1/me/runs/{run_id}/cancel", {"reason": "mine"}, format="json")
        requeue = intruder.post(f"/api/v1/me/runs/{run_id}/requeue", format="json")

    assert (cancel.status_code, requeue.status_code) == (404, 404)


def test_it_lists_the_queue_for_staff_in_claim_order(api_as: ApiAs, staff: User, central: str) -> None:
    tenant_id = tenant_with_subscription()
    low = enqueue(tenant_id, priority=7)
    urgent = enqueue(tenant_id, priority=1)

    response = api_as(staff).get("/api/v1/queue", {"tenant_id": tenant_id, "state": "QUEUED"})

    assert response.status_code == 200
    assert [e["run_id"] for e in response.json()["results"]] == [urgent, low]
    assert api_as(staff).get("/api/v1/queue", {"state": "LATE"}).status_code == 400


def test_it_lets_staff_cancel_and_requeue_runs_and_audits_both(
    api_as: ApiAs, superuser: User, read_only_staff: User, central: str
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    queued = enqueue(tenant_id)
    failed = enqueue(tenant_id, max_retries=0, priority=1)
    assert run_claim(worker_id="w1", tenant_id=tenant_id, now=NOW) is not None
    run_fail(run_id=failed, worker_id="w1", error="boom", now=NOW)
    client = api_as(superuser)

    refused = api_as(read_only_staff).post(
        f"/api/v1/tenants/{tenant_id}/runs/{queued}/cancel", {}, format="json"
    )
    cancelled = client.post(
        f"/api/v1/tenants/{tenant_id}/runs/{queued}/cancel", {"reason": "dup"}, format="json"
    )
    conflict = client.post(f"/api/v1/tenants/{tenant_id}/runs/{queued}/cancel", {}, format="json")
    requeued = client.post(f"/api/v1/tenants/{tenant_id}/runs/{failed}/requeue", format="json")

    assert refused.status_code == 403
    assert (cancelled.status_code, cancelled.json()["state"]) == (200, RunState.CANCELLED)
    assert cancelled.json()["error_message"] == "Cancelled: dup"
    # The tenant sees that its run was cancelled, never which staff member did it.
    seen_by_tenant = as_key(tenant_id, "pipelines:read").get(f"/api/v1/me/runs/{queued}")
    assert seen_by_tenant.status_code == 200
    assert "root" not in seen_by_tenant.content.decode()
    assert (conflict.status_code, conflict.json()["error"]["code"]) == (409, "run_state_conflict")
    assert (requeued.status_code, requeued.json()["state"], requeued.json()["retry_count"]) == (
        200,
        RunState.QUEUED,
        0,
    )
    trail = central_repository(AuditLogEntry).list(
        filters={"tenant_id": tenant_id, "target_type": "run"}, order_by=("occurred_at",)
    )
    assert [(e.action, e.actor, e.target_id) for e in trail] == [
        ("run.cancel", "user:root", queued),
        ("run.requeue", "user:root", failed),
    ]
