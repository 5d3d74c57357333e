"""The worker API: claim, heartbeat, complete and fail over HTTP, with tenant keys and worker tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from tenants_app.models import RunState, TenantPipelineExecutionQueue, TenantStepLog, TenantUsageQuota
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.admin_tokens import admin_token_create, admin_token_revoke, worker_token_create
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.run_reports import pipeline_logging_id
from tenants_app.services.run_tenant_rows import tenant_rows_flush
from tests.support.tenant_rows import rows_left_alone
from tests.tenants_app.services.quota_factories import tenant_with_subscription
from tests.tenants_app.services.run_factories import enqueue, entry

pytestmark = pytest.mark.django_db

EXECUTE = ("pipelines:execute",)


@pytest.fixture
def worker_user(db: None) -> User:
    user = User.objects.create_user("worker-pool")
    user.groups.add(Group.objects.get_or_create(name=django_settings.PIPELINE_WORKERS_GROUP)[0])
    return user


def tenant_key(tenant_id: str, *scopes: str) -> APIClient:
    key = api_key_create(tenant_id=tenant_id, name="worker", scopes=list(scopes), created_by="test")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key.plaintext)
    return client


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def worker_client(user: User) -> APIClient:
    return bearer(worker_token_create(user=user, name="pool").plaintext)


def claim(client: APIClient, **body: object) -> object:
    return client.post("/api/v1/worker/claim", {"worker_id": "w1", **body}, format="json")


def test_it_lets_a_tenant_key_claim_only_its_own_tenants_runs(central: str) -> None:
    mine = tenant_with_subscription(concurrent_limit=3)
    other = tenant_with_subscription(concurrent_limit=3)
    own_run = enqueue(mine, priority=9, parameters={"region": "eu"})
    enqueue(other, priority=1)
    client = tenant_key(mine, *EXECUTE)

    first = claim(client, lease_seconds=120)
    second = claim(client)

    assert first.status_code == 200
    data = first.json()
    assert (data["run_id"], data["tenant_id"], data["attempt"], data["parameters"]) == (
        own_run,
        mine,
        1,
        {"region": "eu"},
    )
    assert data["lease_expires_at"]
    assert second.status_code == 204
    assert claim(client, tenant_id=other).status_code == 400


def test_it_refuses_a_tenant_key_without_the_execute_scope(central: str) -> None:
    tenant_id = tenant_with_subscription()
    enqueue(tenant_id)

    response = claim(tenant_key(tenant_id, "pipelines:read", "tenant:read"))

    assert response.status_code == 403
    assert "pipelines:execute" in response.json()["error"]["message"]


def test_it_answers_404_for_another_tenants_run(central: str) -> None:
    owner = tenant_with_subscription(concurrent_limit=3)
    run_id = enqueue(owner)
    assert claim(tenant_key(owner, *EXECUTE)).status_code == 200
    stranger = tenant_key(tenant_with_subscription(), *EXECUTE)

    # The run's queue entry and the owner's usage row (a finished run frees its slot there).
    with rows_left_alone(owner, TenantPipelineExecutionQueue, TenantUsageQuota):
        for action in ("heartbeat", "fail", "complete"):
            body = {"worker_id": "w1", "status": "SUCCEEDED", "error": "x"}
            response = stranger.post(f"/api/v1/worker/runs/{run_id}/{action}", body, format="json")
            assert response.status_code == 404, action


def test_it_lets_a_worker_token_drain_every_tenant_and_report_runs(central: str, worker_user: User) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    bigquery_bootstrap(tenant_id=tenant_id)
    run_id = enqueue(tenant_id, priority=1)
    client = worker_client(worker_user)

    claimed = claim(client, worker_id="pool-1", tenant_id=tenant_id)
    beat = client.post(
        f"/api/v1/worker/runs/{run_id}/heartbeat", {"worker_id": "pool-1", "attempt": 1}, format="json"
    )
    now = timezone.now()
    done = client.post(
        f"/api/v1/worker/runs/{run_id}/complete",
        {
            "worker_id": "pool-1",
            "attempt": 1,
            "status": "SUCCEEDED",
            "started_at": (now - timedelta(seconds=5)).isoformat(),
            "ended_at": now.isoformat(),
            "step_logs": [
                {
                    "step_index": 0,
                    "step_name": "extract",
                    "step_type": "query",
                    "status": "SUCCEEDED",
                    "start_time": (now - timedelta(seconds=5)).isoformat(),
                    "end_time": now.isoformat(),
                    "rows_processed": 10,
                }
            ],
            "run_metadata": {"rows": 10},
        },
        format="json",
    )

    assert claimed.status_code == 200
    assert claimed.json()["run_id"] == run_id
    assert beat.status_code == 200
    assert beat.json()["attempt"] == 1
    assert done.status_code == 200
    assert done.json()["state"] == RunState.SUCCEEDED
    tenant_rows_flush()  # as `run_periodic` does
    logged = tenant_repository(TenantStepLog, tenant_id).list()
    assert [(s.step_name, s.pipeline_logging_id) for s in logged] == [
        ("extract", pipeline_logging_id(run_id, 1))
    ]
    # A worker token has no other powers: the admin API refuses it.
    assert client.get("/api/v1/tenants").status_code == 401


def test_it_asks_djangos_database_nothing_for_a_worker_token_it_knows(
    central: str, worker_user: User
) -> None:
    client = worker_client(worker_user)
    idle = tenant_with_subscription()
    assert claim(client, tenant_id=idle).status_code == 204

    with CaptureQueriesContext(connection) as captured:
        assert claim(client, tenant_id=idle).status_code == 204

    assert [query["sql"] for query in captured.captured_queries] == []


def test_it_refuses_revoked_worker_tokens_and_tokens_of_staff_outside_the_group(
    central: str, worker_user: User
) -> None:
    issued = worker_token_create(user=worker_user, name="pool")
    admin_token_revoke(token_id=issued.token.pk)
    operator = User.objects.create_user("operator", is_staff=True)
    staff_token = admin_token_create(user=operator, name="scripts").plaintext

    assert claim(bearer(issued.plaintext)).status_code == 401
    assert claim(bearer(staff_token)).status_code == 401
    assert claim(APIClient()).status_code in (401, 403)


def test_it_answers_429_with_retry_after_when_quota_holds_a_tenant_keys_runs(central: str) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=1)
    runs = [enqueue(tenant_id), enqueue(tenant_id)]
    client = tenant_key(tenant_id, *EXECUTE)
    assert claim(client).status_code == 200

    refused = claim(client, worker_id="w2")

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert sorted(entry(run_id).state for run_id in runs) == [RunState.QUEUED, RunState.RUNNING]


def test_it_validates_reports_with_field_errors(central: str) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    bigquery_bootstrap(tenant_id=tenant_id)
    run_id = enqueue(tenant_id)
    client = tenant_key(tenant_id, *EXECUTE)
    assert claim(client).status_code == 200
    url = f"/api/v1/worker/runs/{run_id}/complete"

    bad_status = client.post(url, {"worker_id": "w1", "status": "DONE"}, format="json")
    bad_steps = client.post(url, {"worker_id": "w1", "status": "SUCCEEDED", "step_logs": "x"}, format="json")
    secret = client.post(
        url,
        {"worker_id": "w1", "status": "SUCCEEDED", "run_metadata": {"db_password": "hunter2"}},
        format="json",
    )
    other_worker = client.post(url, {"worker_id": "w2", "status": "SUCCEEDED"}, format="json")

    assert (bad_status.status_code, list(bad_status.json()["error"]["fields"])) == (400, ["status"])
    assert (bad_steps.status_code, list(bad_steps.json()["error"]["fields"])) == (400, ["step_logs"])
    assert (secret.status_code, list(secret.json()["error"]["fields"])) == (400, ["run_metadata"])
    assert "hunter2" not in secret.content.decode()
    assert (other_worker.status_code, other_worker.json()["error"]["code"]) == (409, "lease_lost")
    assert entry(run_id).state == RunState.RUNNING


def test_it_requeues_a_failed_attempt_over_the_api(central: str) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    bigquery_bootstrap(tenant_id=tenant_id)
    run_id = enqueue(tenant_id)
    client = tenant_key(tenant_id, *EXECUTE)
    assert claim(client).status_code == 200

    failed = client.post(
        f"/api/v1/worker/runs/{run_id}/fail", {"worker_id": "w1", "error": "upstream 503"}, format="json"
    )
    again = client.post(
        f"/api/v1/worker/runs/{run_id}/fail", {"worker_id": "w1", "error": "upstream 503"}, format="json"
    )

    assert failed.status_code == 200
    assert (failed.json()["state"], failed.json()["retry_count"]) == (RunState.QUEUED, 1)
    assert again.status_code == 200  # a retried report is answered, not counted twice
    assert again.json()["retry_count"] == 1
    assert entry(run_id).available_at is not None


def test_it_issues_a_worker_token_for_a_new_worker_account_from_the_command(central: str) -> None:
    import io

    from django.core.management import call_command

    tenant_id = tenant_with_subscription(concurrent_limit=3)
    run_id = enqueue(tenant_id, priority=1)
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "create_worker_token", "--username", "eu-pool", "--name", "eu", "--create", stdout=out, stderr=err
    )

    token = out.getvalue().strip()
    account = User.objects.get(username="eu-pool")
    assert (account.is_staff, account.has_usable_password()) == (False, False)
    assert "not shown again" in err.getvalue()
    claimed = claim(bearer(token), tenant_id=tenant_id)
    assert claimed.status_code == 200
    assert claimed.json()["run_id"] == run_id


def test_it_answers_400_for_run_metadata_nested_too_deep(central: str) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    bigquery_bootstrap(tenant_id=tenant_id)
    run_id = enqueue(tenant_id)
    client = tenant_key(tenant_id, *EXECUTE)
    assert claim(client).status_code == 200
    url = f"/api/v1/worker/runs/{run_id}/complete"

    # Deep enough to exhaust Python's recursion limit in a recursive walk, shallow enough for the parser.
    body = '{"worker_id": "w1", "status": "SUCCEEDED", "run_metadata": ' + "[" * 800 + "]" * 800 + "}"
    deep = client.post(url, body, content_type="application/json")

    assert deep.status_code == 400
    assert deep.json()["error"]["fields"] == {"run_metadata": ["Nest at most 10 levels deep."]}
    assert entry(run_id).state == RunState.RUNNING


@pytest.mark.django_db
@pytest.mark.parametrize("copier", ["other key", "worker token"])
def test_it_refuses_a_lease_to_another_credential_that_copies_the_worker_id(
    central: str, worker_user: User, copier: str
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    run_id = enqueue(tenant_id)
    holder = tenant_key(tenant_id, *EXECUTE)
    assert claim(holder).status_code == 200
    thief = tenant_key(tenant_id, *EXECUTE) if copier == "other key" else worker_client(worker_user)
    base = f"/api/v1/worker/runs/{run_id}"

    with rows_left_alone(tenant_id, TenantPipelineExecutionQueue):
        answers = [
            thief.post(f"{base}/heartbeat", {"worker_id": "w1"}, format="json"),
            thief.post(f"{base}/complete", {"worker_id": "w1", "status": "SUCCEEDED"}, format="json"),
            thief.post(f"{base}/fail", {"worker_id": "w1", "error": "taken"}, format="json"),
        ]

    assert [(a.status_code, a.json()["error"]["code"]) for a in answers] == [(409, "lease_lost")] * 3
    assert holder.post(f"{base}/heartbeat", {"worker_id": "w1"}, format="json").status_code == 200
    done = holder.post(f"{base}/complete", {"worker_id": "w1", "status": "SUCCEEDED"}, format="json")
    assert done.status_code == 200
    assert entry(run_id).state == RunState.SUCCEEDED


@pytest.mark.django_db
def test_it_keeps_serving_a_lease_claimed_before_leases_recorded_their_credential(central: str) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    run_id = enqueue(tenant_id)
    holder = tenant_key(tenant_id, *EXECUTE)
    assert claim(holder).status_code == 200
    # As an entry claimed by the previous release looks: no credential stored.
    central_repository(TenantPipelineExecutionQueue).update(run_id, {"lease_credential": None})
    base = f"/api/v1/worker/runs/{run_id}"

    beat = holder.post(f"{base}/heartbeat", {"worker_id": "w1"}, format="json")
    done = holder.post(f"{base}/complete", {"worker_id": "w1", "status": "SUCCEEDED"}, format="json")

    assert (beat.status_code, done.status_code) == (200, 200)
    assert entry(run_id).state == RunState.SUCCEEDED
