"""BigQuery failing at every step of onboarding, plan change, key rotation and run completion.

Each flow runs once through a healthy fault proxy (tests/support/bigquery_faults.py) to learn how many
BigQuery requests it makes (K), so a statement added to a flow is covered without editing this file.
Then, for each step n in 1..K, BigQuery goes away from the n-th request on (found by what it does, as
onboarding's parallel calls come in varying order: `from_the_same_request`): the caller must get a 503
with the error envelope, within a bound. BigQuery comes back, the same request is sent again (same
Idempotency-Key where the endpoint takes one), and the state must be that of one clean call: one
profile, subscription, usage row and key set; one rotation; the run completed and its slot released
once; one audit entry per change; no plaintext secret in any central table.

Fault kinds per step, to stay within the suite's time budget:
- every step gets DROP (the emulator stopped: the request never lands; the commonest outage);
- every write gets LOST (the write lands, its answer never comes, BigQuery is then gone): the case
  that leaves a change the caller did not see done, which is what finds half-written state;
- the write whose lost answer matters most in onboarding and rotation (the key) also gets SLOW (the
  same through a real client timeout, which costs its seconds), and one step per flow gets 503 (the
  emulator failing: the client's own retries run, then give up).
The one step whose failure is no 503 by design is the audit INSERT: the change stands, the call
succeeds and the entry goes to the error log (tenants_app/services/audit.py).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import override_settings
from django.utils import timezone
from google.cloud import bigquery
from rest_framework.test import APIClient

from bigquery_backend.client import get_gateway
from bigquery_backend.emulator import EmulatorProcess
from bigquery_backend.identifiers import quote_column, quote_table
from tenants_app.models import (
    AuditLogEntry,
    RunState,
    SubscriptionStatus,
    TenantApiKey,
    TenantDqResult,
    TenantPipelineExecutionQueue,
    TenantPipelineRun,
    TenantProfile,
    TenantScheduledPipelineRun,
    TenantStatus,
    TenantStepLog,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.admin_tokens import worker_token_create
from tenants_app.services.api_key_verification import hash_api_key
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.datasets import central_dataset
from tenants_app.services.onboarding import subscription_id_for, usage_id_for
from tenants_app.services.plans import PLANS
from tenants_app.services.run_reports import pipeline_logging_id
from tenants_app.services.run_tenant_rows import tenant_rows_flush
from tenants_app.services.usage_rows import usage_rows_start
from tests.support.bigquery_faults import BigQueryFaultProxy, Fault, ProxiedRequest
from tests.support.people import create_superuser

pytestmark = pytest.mark.django_db

# While faults are armed the client gives up fast: a refused request is retried for at most
# RETRY_DEADLINE, a slow one waited for TIMEOUT. The proxy holds a slow answer longer than that.
TIMEOUT = 5.0
RETRY_DEADLINE = 0.2
SLOW_SECONDS = TIMEOUT + 1.0
# A faulted request must be answered within this: the retry deadline twice (the job retry wraps the
# call's retry) or the slow timeout, plus the steps before the fault at emulator speed on a busy box.
ANSWER_BOUND = 20.0
DML_WORDS = ("INSERT", "UPDATE", "MERGE", "DELETE")
FULL_SWEEP = os.environ.get("FAULT_SWEEP") == "full"
# Faults at the audit INSERT after which the entry is not in the table (only in the error log);
# with LOST and SLOW it landed.
ENTRY_NEVER_WRITTEN = (Fault.DROP, Fault.ERROR_503, Fault.ERROR_500)


@pytest.fixture(scope="module")
def proxy(bigquery_emulator: EmulatorProcess) -> Iterator[BigQueryFaultProxy]:
    proxy = BigQueryFaultProxy(bigquery_emulator.url, slow_seconds=SLOW_SECONDS).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def through_proxy(proxy: BigQueryFaultProxy, central: str) -> Iterator[BigQueryFaultProxy]:
    """The app talks to BigQuery through the proxy; healed whatever happens."""
    proxy.heal()
    with override_settings(BIGQUERY_EMULATOR_HOST=proxy.url):
        yield proxy
    proxy.heal()


@contextmanager
def short_bounds() -> Iterator[None]:
    """Short client bounds while a fault is armed; the retries and checks run with the usual ones, so
    that a busy machine's slow statement is not taken for a fault."""
    with override_settings(BIGQUERY_TIMEOUT_SECONDS=TIMEOUT, BIGQUERY_RETRY_DEADLINE_SECONDS=RETRY_DEADLINE):
        yield


@pytest.fixture
def admin(db: None) -> APIClient:
    client = APIClient()
    client.force_login(create_superuser())
    return client


# --- machinery ----------------------------------------------------------------------------------
@dataclass
class Outcome:
    """The faulted call's answer, how long it took, and the first request the fault caught."""

    status: int
    body: Any
    seconds: float
    caught: ProxiedRequest | None

    @property
    def caught_audit_insert(self) -> bool:
        statement = self.caught.statement if self.caught is not None else ""
        return statement.startswith("INSERT INTO") and ".audit_log`" in statement

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300


def is_write(request: ProxiedRequest) -> bool:
    """A request that changes something: DML, or a metadata create/patch/delete."""
    if request.is_job:
        return request.statement.split(" ", 1)[0].upper() in DML_WORDS
    return request.method in ("POST", "PATCH", "PUT", "DELETE")


def with_fault(
    proxy: BigQueryFaultProxy, kind: Fault, at: int, call: Callable[[], Any], *, clean: list[ProxiedRequest]
) -> Outcome:
    """Run `call` with BigQuery failing from the clean run's `at`-th request on (the outage lasts); heal."""
    with proxy.recording() as seen, short_bounds():
        proxy.fail(kind, match=from_the_same_request(clean, at))
        started = time.monotonic()
        try:
            response = call()
        finally:
            proxy.heal()
        seconds = time.monotonic() - started
    caught = next((request for request in seen if request.fault is not None), None)
    return Outcome(response.status_code, response.json() if response.content else None, seconds, caught)


def assert_failed_clearly(outcome: Outcome) -> None:
    """A 503 with our envelope, in bounded time; or success when only the audit INSERT was lost."""
    assert outcome.caught is not None, "the fault never fired: the flow made fewer requests than counted"
    assert outcome.seconds < ANSWER_BOUND, f"took {outcome.seconds:.1f}s"
    if outcome.caught_audit_insert:
        assert outcome.succeeded, outcome.body
        return
    assert outcome.status == 503, outcome.body
    assert outcome.body["error"]["code"] == "unavailable"
    assert outcome.body["error"]["message"]


def count_requests(proxy: BigQueryFaultProxy, call: Callable[[], Any]) -> tuple[Any, list[ProxiedRequest]]:
    with proxy.recording() as seen:
        response = call()
    return response, seen


def signature(request: ProxiedRequest) -> str:
    """What a request does, without the ids: `MERGE tenant_api_keys`, `POST datasets/*/tables`..."""
    if request.is_job:
        words = request.statement.replace("`", " ").split()
        table = next((w.rsplit(".", 1)[-1] for w in words if w.count(".") == 2), "")
        return f"{words[0].upper() if words else ''} {table}"
    parts = request.path.split("?")[0].split("/")
    return request.method + " " + "/".join("*" if i % 2 == 0 else part for i, part in enumerate(parts[5:]))


def shape(request: ProxiedRequest) -> str:
    """What a request does, the same in every run of a flow: `MERGE tenant_subscriptions`,
    `POST datasets/*/tables tenant_step_logs`, `PATCH datasets/central`, `GET queries/*`..."""
    if request.is_job:
        return signature(request)
    parts = request.path.split("?")[0].split("/")[5:]  # after /bigquery/v2/projects/<project>/
    names = []
    for kind, name in zip(parts[::2], [*parts[1::2], ""], strict=False):
        if kind == "datasets":
            name = "central" if name == central_dataset() else "*" if name else ""
        elif kind != "tables":
            name = "*" if name else ""  # a job id
        names.append(f"{kind}/{name}".rstrip("/"))
    created = ""
    if request.method == "POST" and parts[-1:] == ["tables"]:
        created = " " + str(json.loads(request.body).get("tableReference", {}).get("tableId"))
    return f"{request.method} {'/'.join(names)}{created}"


def from_the_same_request(clean: list[ProxiedRequest], step: int) -> Callable[[ProxiedRequest], bool]:
    """Matches the request that was the clean run's `step`-th, and every request after it (the outage).

    Onboarding makes independent calls side by side, in an order that changes from run to run: the
    request is found by what it does and how many requests before it in the clean run did the same
    (the third `GET queries/*`), never by its place in the whole flow.
    """
    wanted = shape(clean[step - 1])
    rank = sum(1 for request in clean[:step] if shape(request) == wanted)
    seen = 0

    def match(request: ProxiedRequest) -> bool:
        nonlocal seen
        if seen < rank and shape(request) == wanted:
            seen += 1
        return seen == rank

    return match


def is_central_write(request: ProxiedRequest) -> bool:
    return is_write(request) and request.is_job and f".{central_dataset()}." in request.statement


def fault_plan(seen: list[ProxiedRequest], *, slow_at: int | None, error_at: int) -> list[tuple[int, Fault]]:
    """Which fault at which step (see the module docstring); FAULT_SWEEP=full runs every combination.

    By default (the suite's time budget) DROP goes to the first step and to the first write of each
    kind (a failed read changes nothing, and the other table creations of an onboarding fail alike),
    LOST to each kind of central write (tenant-dataset writes are keyed by the run and rewritten whole
    by a retry), SLOW (which costs a client timeout) and 503 to one step each. The full sweep puts DROP
    and 503 at every step and LOST and SLOW at every write: minutes, for a change to these flows.
    """
    if FULL_SWEEP:
        plan = [(request.number, kind) for request in seen for kind in (Fault.DROP, Fault.ERROR_503)]
        plan += [
            (request.number, kind)
            for request in seen
            if is_write(request)
            for kind in (Fault.LOST, Fault.SLOW)
        ]
        return plan
    kinds_seen: set[tuple[Fault, str]] = set()
    plan = [(1, Fault.DROP)]
    for request in seen:
        for kind, applies in ((Fault.DROP, is_write(request)), (Fault.LOST, is_central_write(request))):
            if applies and (kind, signature(request)) not in kinds_seen:
                kinds_seen.add((kind, signature(request)))
                plan.append((request.number, kind))
    if slow_at is not None:
        plan.append((slow_at, Fault.SLOW))
    return [*plan, (error_at, Fault.ERROR_503)]


def first_step(seen: list[ProxiedRequest], predicate: Callable[[ProxiedRequest], bool]) -> int:
    return next(request.number for request in seen if predicate(request))


def writes_to(table: str) -> Callable[[ProxiedRequest], bool]:
    return lambda request: is_write(request) and f".{table}`" in request.statement


@dataclass
class Sweep:
    """Runs one case per (step, fault kind) and reports every failing case at once."""

    seen: list[ProxiedRequest]
    failures: list[str] = field(default_factory=list)

    def run(self, step: int, kind: Fault, case: Callable[[], None]) -> None:
        request = self.seen[step - 1]
        what = request.statement.split("(")[0][:90] or f"{request.method} {request.path.split('?')[0][-60:]}"
        try:
            case()
        except AssertionError as exc:
            self.failures.append(f"step {step} [{what}] {kind.value}: {exc}".replace("\n", " ")[:500])

    def check(self) -> None:
        assert not self.failures, "\n".join(self.failures)


def one_row(sql: str, **values: str) -> dict[str, Any]:
    """One row of a check query over the central dataset ({central} in `sql` names its tables)."""
    gateway = get_gateway()
    tables = {
        model._meta.db_table: quote_table(gateway.project, central_dataset(), model._meta.db_table)
        for model in (
            AuditLogEntry,
            TenantApiKey,
            TenantProfile,
            TenantSubscription,
            TenantUsageQuota,
            TenantPipelineExecutionQueue,
            TenantScheduledPipelineRun,
        )
    }
    parameters = [bigquery.ScalarQueryParameter(name, "STRING", value) for name, value in values.items()]
    return gateway.query(sql.format(**tables), parameters).rows[0]


def central_columns_containing(secrets: list[str]) -> list[str]:
    """`table.column` of every text value of the central dataset that holds one of `secrets`."""
    gateway = get_gateway()
    dataset = central_dataset()
    params = [bigquery.ArrayQueryParameter("secrets", "STRING", secrets)]
    found = []
    for table_id in gateway.list_table_ids(dataset):
        table = gateway.get_table(dataset, table_id)
        checks = []
        for column in table.schema:
            name = quote_column(column.name)
            if column.field_type == "STRING":
                text = f"ARRAY_TO_STRING({name}, ' ')" if column.mode == "REPEATED" else name
            elif column.field_type == "BYTES":
                # Ciphertext is binary: a plaintext key stored as bytes would still read as text here.
                text = f"SAFE_CONVERT_BYTES_TO_STRING({name})"
            elif column.field_type == "JSON":
                text = f"TO_JSON_STRING({name})"
            else:
                continue
            checks.append(
                f"COUNTIF(EXISTS(SELECT 1 FROM UNNEST(@secrets) AS s WHERE STRPOS({text}, s) > 0)) AS {name}"
            )
        if checks:
            sql = f"SELECT {', '.join(checks)} FROM {quote_table(gateway.project, dataset, table_id)}"
            row = gateway.query(sql, params).rows[0]
            found += [f"{table_id}.{name}" for name, hits in row.items() if hits]
    return found


def test_it_finds_a_planted_plaintext_key_with_the_secret_scan(central: str) -> None:
    """The scan the sweeps end with can fail: a key written in clear into any text column is found."""
    tenant_id = new_tenants(1)[0]
    issued = api_key_create(tenant_id=tenant_id, name="x", scopes=["tenant:read"], created_by="test")
    central_repository(TenantProfile).update(tenant_id, {"company_name": f"Leak {issued.plaintext}"})

    assert central_columns_containing([issued.plaintext]) == ["tenant_profiles.company_name"]


def new_tenants(count: int, *, plan: str = "STARTER", **limits: int) -> list[str]:
    """`count` tenants with profile, subscription and today's usage row, in three statements."""
    chosen = PLANS[plan]
    now = timezone.now()
    ids = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    central_repository(TenantProfile).insert(
        *[
            TenantProfile(
                tenant_id=tenant_id,
                company_name="Faulty Ltd",
                admin_email="ops@faulty.example",
                tenant_dataset_id=tenant_id,
                status=TenantStatus.ACTIVE,
                subscription_plan=plan,
                created_at=now,
            )
            for tenant_id in ids
        ]
    )
    figures = {
        "daily_limit": chosen.daily_limit,
        "monthly_limit": chosen.monthly_limit,
        "concurrent_limit": chosen.concurrent_limit,
        **limits,
    }
    central_repository(TenantSubscription).insert(
        *[
            TenantSubscription(
                subscription_id=subscription_id_for(tenant_id),
                tenant_id=tenant_id,
                plan_name=plan,
                status=SubscriptionStatus.ACTIVE,
                max_pipelines_per_day=figures["daily_limit"],
                created_at=now,
                **figures,
            )
            for tenant_id in ids
        ]
    )
    usage_rows_start(day=now.astimezone(UTC).date(), tenant_ids=ids)
    return ids


# --- onboarding ---------------------------------------------------------------------------------
TENANT_TABLES = sorted(
    [
        "tenant_pipeline_runs",
        "tenant_step_logs",
        "tenant_dq_results",
        "tenant_pipeline_configs",
        "tenant_scheduled_pipeline_runs",
    ]
)
ONBOARDED = """
SELECT
  (SELECT COUNT(*) FROM {tenant_profiles} WHERE tenant_id = @t) AS profiles,
  (SELECT COUNT(*) FROM {tenant_subscriptions} WHERE tenant_id = @t) AS subscriptions,
  (SELECT COUNT(*) FROM {tenant_usage_quotas} WHERE tenant_id = @t) AS usage_rows,
  (SELECT COUNT(*) FROM {tenant_api_keys} WHERE tenant_id = @t) AS api_keys,
  (SELECT COUNT(*) FROM {tenant_api_keys} WHERE tenant_id = @t AND api_key_hash = @h) AS shown_key,
  (SELECT COUNT(*) FROM {audit_log} WHERE tenant_id = @t AND action = 'tenant.onboard') AS audited
"""


def test_it_finishes_an_onboarding_that_bigquery_failed_at_any_step(
    through_proxy: BigQueryFaultProxy, admin: APIClient, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = through_proxy

    def onboard(tenant_id: str, key: str) -> Any:
        body = {
            "tenant_id": tenant_id,
            "company_name": "Faulty Ltd",
            "admin_email": "ops@f.example",
            "plan": "STARTER",
        }
        return admin.post("/api/v1/tenants/onboard", body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    clean, seen = count_requests(proxy, lambda: onboard(f"f_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex))
    assert clean.status_code == 201, clean.json()
    issued = [clean.json()["api_key"]]
    sweep = Sweep(seen)
    plan = fault_plan(seen, slow_at=first_step(seen, writes_to("tenant_api_keys")), error_at=1)

    for step, kind in plan:

        def case(step: int = step, kind: Fault = kind) -> None:
            tenant_id, key = f"f_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
            caplog.clear()
            outcome = with_fault(proxy, kind, step, lambda: onboard(tenant_id, key), clean=seen)
            assert_failed_clearly(outcome)
            again = onboard(tenant_id, key)
            assert again.status_code == 201, again.json()
            if outcome.succeeded:
                # Only the audit INSERT failed: the repeat replays the stored answer; the entry is in
                # the error log (and, had the answer itself been lost, the retry would write it).
                assert again["Idempotent-Replayed"] == "true"
                assert any("audit entry not stored" in r.getMessage() for r in caplog.records)
            plaintext = again.json()["api_key"]
            assert plaintext, again.json()
            issued.append(plaintext)
            state = one_row(ONBOARDED, t=tenant_id, h=hash_api_key(plaintext))
            audited = 0 if outcome.caught_audit_insert and kind in ENTRY_NEVER_WRITTEN else 1
            expected = dict(
                profiles=1, subscriptions=1, usage_rows=1, api_keys=1, shown_key=1, audited=audited
            )
            assert state == expected
            assert sorted(get_gateway().list_table_ids(tenant_id)) == TENANT_TABLES

        sweep.run(step, kind, case)

    sweep.check()
    assert central_columns_containing(issued) == []


# --- plan change --------------------------------------------------------------------------------
PLAN_CHANGED = """
SELECT
  (SELECT STRING_AGG(CONCAT(plan_name, ':', CAST(daily_limit AS STRING), ':',
     CAST(concurrent_limit AS STRING))) FROM {tenant_subscriptions} WHERE tenant_id = @t) AS subscriptions,
  (SELECT STRING_AGG(CONCAT(CAST(daily_limit AS STRING), ':', CAST(concurrent_limit AS STRING)))
     FROM {tenant_usage_quotas} WHERE tenant_id = @t) AS usage_rows,
  (SELECT STRING_AGG(subscription_plan) FROM {tenant_profiles} WHERE tenant_id = @t) AS profiles,
  (SELECT COUNT(*) FROM {audit_log} WHERE tenant_id = @t AND action = 'subscription.plan_change') AS audited
"""


def test_it_finishes_a_plan_change_that_bigquery_failed_at_any_step(
    through_proxy: BigQueryFaultProxy, admin: APIClient
) -> None:
    proxy = through_proxy

    def change(tenant_id: str) -> Any:
        return admin.patch(f"/api/v1/tenants/{tenant_id}/subscription", {"plan": "SCALE"}, format="json")

    first = new_tenants(1)[0]
    clean, seen = count_requests(proxy, lambda: change(first))
    assert clean.status_code == 200, clean.json()
    sweep = Sweep(seen)
    plan = fault_plan(seen, slow_at=None, error_at=2)
    tenants = iter(new_tenants(len(plan)))
    scale = PLANS["SCALE"]
    expected = {
        "subscriptions": f"SCALE:{scale.daily_limit}:{scale.concurrent_limit}",
        "usage_rows": f"{scale.daily_limit}:{scale.concurrent_limit}",
        "profiles": "SCALE",
        # The repeat is a new PATCH (no Idempotency-Key): when it finds the change made but not
        # recorded, it records it, whichever step failed.
        "audited": 1,
    }

    for step, kind in plan:

        def case(step: int = step, kind: Fault = kind) -> None:
            tenant_id = next(tenants)
            outcome = with_fault(proxy, kind, step, lambda: change(tenant_id), clean=seen)
            assert_failed_clearly(outcome)
            again = change(tenant_id)
            assert again.status_code == 200, again.json()
            assert again.json()["plan_name"] == "SCALE"
            assert one_row(PLAN_CHANGED, t=tenant_id) == expected

        sweep.run(step, kind, case)

    sweep.check()


# --- key rotation -------------------------------------------------------------------------------
ROTATED = """
SELECT
  (SELECT COUNT(*) FROM {tenant_api_keys} WHERE tenant_id = @t) AS api_keys,
  (SELECT COUNT(*) FROM {tenant_api_keys} WHERE tenant_id = @t AND api_key_id = @old
     AND replaced_by_key_id = @new AND NOT is_active) AS old_rotated,
  (SELECT COUNT(*) FROM {tenant_api_keys} WHERE tenant_id = @t AND api_key_id = @new
     AND is_active AND api_key_hash = @h) AS new_usable,
  (SELECT COUNT(*) FROM {audit_log} WHERE tenant_id = @t AND action = 'api_key.rotate' AND target_id = @old)
    AS audited
"""


def test_it_rotates_a_key_once_when_bigquery_failed_at_any_step(
    through_proxy: BigQueryFaultProxy, admin: APIClient
) -> None:
    proxy = through_proxy

    def new_key(tenant_id: str) -> str:
        return api_key_create(
            tenant_id=tenant_id, name="ci", scopes=["tenant:read"], created_by="test"
        ).row.api_key_id

    def rotate(tenant_id: str, api_key_id: str, key: str) -> Any:
        return admin.post(
            f"/api/v1/tenants/{tenant_id}/keys/{api_key_id}/rotate",
            {"grace": "0"},
            format="json",
            HTTP_IDEMPOTENCY_KEY=key,
        )

    first = new_tenants(1)[0]
    first_key = new_key(first)
    clean, seen = count_requests(proxy, lambda: rotate(first, first_key, uuid.uuid4().hex))
    assert clean.status_code == 201, clean.json()
    issued = [clean.json()["api_key"]]
    sweep = Sweep(seen)
    plan = fault_plan(seen, slow_at=first_step(seen, lambda r: r.statement.startswith("UPDATE")), error_at=3)
    tenants = iter(new_tenants(len(plan)))

    for step, kind in plan:

        def case(step: int = step, kind: Fault = kind) -> None:
            tenant_id = next(tenants)
            old_id, request_key = new_key(tenant_id), uuid.uuid4().hex
            outcome = with_fault(
                proxy, kind, step, lambda: rotate(tenant_id, old_id, request_key), clean=seen
            )
            assert_failed_clearly(outcome)
            # Same Idempotency-Key: a replay, or the rotation finished (and its key shown) by the retry.
            again = rotate(tenant_id, old_id, request_key)
            assert again.status_code == 201, again.json()
            new_id, plaintext = again.json()["key"]["api_key_id"], again.json()["api_key"]
            issued.append(plaintext)
            audited = 0 if outcome.caught_audit_insert and kind in ENTRY_NEVER_WRITTEN else 1
            state = one_row(ROTATED, t=tenant_id, old=old_id, new=new_id, h=hash_api_key(plaintext))
            assert state == {"api_keys": 2, "old_rotated": 1, "new_usable": 1, "audited": audited}

        sweep.run(step, kind, case)

    sweep.check()
    assert central_columns_containing(issued) == []


# --- run completion -----------------------------------------------------------------------------
@pytest.fixture
def worker(db: None) -> APIClient:
    user = User.objects.create_user("worker-pool")
    user.groups.add(Group.objects.get_or_create(name=settings.PIPELINE_WORKERS_GROUP)[0])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {worker_token_create(user=user, name='pool').plaintext}")
    return client


@dataclass
class RunTenant:
    """One tenant with a dataset and runs held by worker w1 (attempt 1), each with a concurrent slot."""

    tenant_id: str

    def running(self, count: int) -> Iterator[str]:
        """`count` runs as a claim leaves them (queue entry, run row, slot counted), in three statements."""
        now = timezone.now()
        today = now.astimezone(UTC).date()
        ids = [f"run_{uuid.uuid4().hex[:12]}" for _ in range(count)]
        common = {"tenant_id": self.tenant_id, "pipeline_id": "gcp_cost_ingest", "state": RunState.RUNNING}
        common |= {"scheduled_time": now - timedelta(minutes=5), "priority": 5, "config_id": "cfg_daily"}
        central_repository(TenantScheduledPipelineRun).insert(
            *[
                TenantScheduledPipelineRun(
                    run_id=run_id,
                    retry_count=0,
                    max_retries=3,
                    created_at=now,
                    worker_id="w1",
                    started_at=now,
                    **common,
                )
                for run_id in ids
            ]
        )
        central_repository(TenantPipelineExecutionQueue).insert(
            *[
                TenantPipelineExecutionQueue(
                    run_id=run_id,
                    added_at=now,
                    attempt=1,
                    lease_owner="w1",
                    lease_expires_at=now + timedelta(hours=1),
                    heartbeat_at=now,
                    processing_started_at=now,
                    usage_date=today,
                    **common,
                )
                for run_id in ids
            ]
        )
        usage = central_repository(TenantUsageQuota)
        row = usage.get(usage_id_for(self.tenant_id, today))
        usage.update(
            row.usage_id,
            {
                "concurrent_pipelines_running": row.concurrent_pipelines_running + count,
                "pipelines_run_today": row.pipelines_run_today + count,
            },
        )
        return iter(ids)


@pytest.fixture
def run_tenant(central: str) -> RunTenant:
    tenant_id = new_tenants(1, concurrent_limit=500, daily_limit=5000, monthly_limit=50000)[0]
    bigquery_bootstrap(tenant_id=tenant_id)
    return RunTenant(tenant_id)


def completion() -> dict[str, Any]:
    now = timezone.now().isoformat()
    step = {
        "step_index": 0,
        "step_name": "extract",
        "step_type": "sql",
        "status": "SUCCEEDED",
        "start_time": now,
    }
    check = {
        "target_table": "costs",
        "dq_config_id": "dq1",
        "executed_at": now,
        "expectations_passed": 3,
        "expectations_failed": 0,
        "overall_status": "PASS",
    }
    return {
        "worker_id": "w1",
        "attempt": 1,
        "status": "SUCCEEDED",
        "step_logs": [step],
        "dq_results": [check],
    }


RUN_FINISHED = """
SELECT
  (SELECT STRING_AGG(state) FROM {tenant_pipeline_execution_queue} WHERE run_id = @r) AS entry,
  (SELECT STRING_AGG(CONCAT(state, ':', CAST(retry_count AS STRING))) FROM {tenant_scheduled_pipeline_runs}
     WHERE run_id = @r) AS run,
  (SELECT concurrent_pipelines_running FROM {tenant_usage_quotas} WHERE usage_id = @u) AS running,
  (SELECT pipelines_succeeded_today FROM {tenant_usage_quotas} WHERE usage_id = @u) AS succeeded,
  (SELECT pipelines_failed_today FROM {tenant_usage_quotas} WHERE usage_id = @u) AS failed
"""


def usage_figures(tenant: RunTenant) -> dict[str, Any]:
    usage_id = usage_id_for(tenant.tenant_id, timezone.now().astimezone(UTC).date())
    row = one_row(RUN_FINISHED, r="", u=usage_id)
    return {name: row[name] for name in ("running", "succeeded", "failed")}


def test_it_completes_a_run_once_when_bigquery_failed_at_any_step(
    run_tenant: RunTenant, worker: APIClient, through_proxy: BigQueryFaultProxy
) -> None:
    proxy = through_proxy
    usage_id = usage_id_for(run_tenant.tenant_id, timezone.now().astimezone(UTC).date())

    def complete(run_id: str) -> Any:
        return worker.post(f"/api/v1/worker/runs/{run_id}/complete", completion(), format="json")

    first = next(run_tenant.running(1))
    clean, seen = count_requests(proxy, lambda: complete(first))
    assert clean.status_code == 200, clean.json()
    sweep = Sweep(seen)
    plan = fault_plan(seen, slow_at=None, error_at=len(seen) // 2)
    runs = run_tenant.running(len(plan))

    for step, kind in plan:

        def case(step: int = step, kind: Fault = kind) -> None:
            run_id = next(runs)
            before = usage_figures(run_tenant)
            outcome = with_fault(proxy, kind, step, lambda: complete(run_id), clean=seen)
            assert_failed_clearly(outcome)
            again = complete(run_id)
            assert again.status_code == 200, again.json()
            assert again.json()["state"] == "SUCCEEDED"
            state = one_row(RUN_FINISHED, r=run_id, u=usage_id)
            assert state == {
                "entry": "SUCCEEDED",
                "run": "SUCCEEDED:0",
                "running": before["running"] - 1,  # released once
                "succeeded": before["succeeded"] + 1,  # counted once
                "failed": before["failed"],
            }
            logging_id = pipeline_logging_id(run_id, 1)
            tenant_rows_flush()  # the report's rows, kept on its entry, into the tenant's dataset
            for model in (TenantPipelineRun, TenantStepLog, TenantDqResult):
                rows = tenant_repository(model, run_tenant.tenant_id).count(
                    filters={"pipeline_logging_id": logging_id}
                )
                assert rows == 1, f"{model.__name__}: {rows}"

        sweep.run(step, kind, case)

    sweep.check()


def test_it_fails_a_run_once_when_bigquery_failed_at_any_step(
    run_tenant: RunTenant, worker: APIClient, through_proxy: BigQueryFaultProxy
) -> None:
    proxy = through_proxy
    usage_id = usage_id_for(run_tenant.tenant_id, timezone.now().astimezone(UTC).date())

    def fail(run_id: str) -> Any:
        body = {"worker_id": "w1", "attempt": 1, "error": "source timed out"}
        return worker.post(f"/api/v1/worker/runs/{run_id}/fail", body, format="json")

    first = next(run_tenant.running(1))
    clean, seen = count_requests(proxy, lambda: fail(first))
    assert clean.status_code == 200, clean.json()
    sweep = Sweep(seen)
    # 503 behaves as in the completion sweep (same gateway, same kinds of steps).
    plan = fault_plan(seen, slow_at=None, error_at=1)[:-1]
    runs = run_tenant.running(len(plan))

    for step, kind in plan:

        def case(step: int = step, kind: Fault = kind) -> None:
            run_id = next(runs)
            before = usage_figures(run_tenant)
            outcome = with_fault(proxy, kind, step, lambda: fail(run_id), clean=seen)
            assert_failed_clearly(outcome)
            again = fail(run_id)
            assert again.status_code == 200, again.json()
            # Re-queued for a retry (one retry counted), its slot released once, the failure counted once.
            assert one_row(RUN_FINISHED, r=run_id, u=usage_id) == {
                "entry": "QUEUED",
                "run": "QUEUED:1",
                "running": before["running"] - 1,
                "succeeded": before["succeeded"],
                "failed": before["failed"] + 1,
            }

        sweep.run(step, kind, case)

    sweep.check()


# --- Idempotency-Key after a 503 ----------------------------------------------------------------
def test_it_shows_a_rotated_key_again_only_to_the_caller_whose_request_failed(
    through_proxy: BigQueryFaultProxy, admin: APIClient
) -> None:
    tenant_id = new_tenants(1)[0]
    old_id = api_key_create(
        tenant_id=tenant_id, name="ci", scopes=["tenant:read"], created_by="test"
    ).row.api_key_id
    url = f"/api/v1/tenants/{tenant_id}/keys/{old_id}/rotate"
    other = APIClient()
    other.force_login(User.objects.create_superuser("root2", "root2@example.com", "x"))

    def rotate(client: APIClient, body: dict[str, str]) -> Any:
        return client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="rotate-1")

    # The link UPDATE lands, its answer is lost: the rotation is done but nobody saw the new key.
    through_proxy.fail(Fault.LOST, match=lambda r: r.statement.startswith("UPDATE"))
    with short_bounds():
        lost = rotate(admin, {"grace": "0"})
    through_proxy.heal()
    reused = rotate(admin, {"grace": "1h"})
    stranger = rotate(other, {"grace": "0"})
    mine = rotate(admin, {"grace": "0"})
    replayed = rotate(admin, {"grace": "0"})

    assert lost.status_code == 503
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    # Another caller with the same key string is another request: the key is rotated already.
    assert stranger.status_code == 400, stranger.json()
    assert "api_key" not in stranger.json()
    assert mine.status_code == 201, mine.json()
    assert replayed.status_code == 201
    assert replayed["Idempotent-Replayed"] == "true"
    assert replayed.json()["api_key"] == mine.json()["api_key"]
    state = one_row(
        ROTATED,
        t=tenant_id,
        old=old_id,
        new=mine.json()["key"]["api_key_id"],
        h=hash_api_key(mine.json()["api_key"]),
    )
    assert state == {"api_keys": 2, "old_rotated": 1, "new_usable": 1, "audited": 1}


def test_it_does_not_show_a_lost_initial_key_again_without_the_idempotency_key(
    through_proxy: BigQueryFaultProxy, admin: APIClient
) -> None:
    tenant_id = f"f_{uuid.uuid4().hex[:10]}"
    body = {
        "tenant_id": tenant_id,
        "company_name": "Faulty Ltd",
        "admin_email": "ops@f.example",
        "plan": "STARTER",
    }

    through_proxy.fail(Fault.LOST, match=writes_to("tenant_api_keys"))
    with short_bounds():
        lost = admin.post("/api/v1/tenants/onboard", body, format="json")
    through_proxy.heal()
    again = admin.post("/api/v1/tenants/onboard", body, format="json")

    assert lost.status_code == 503
    # Complete, and recorded by the repeat, but the key stays unseen: the answer names what to rotate.
    assert again.status_code == 409, again.json()
    assert f"rotate API key {tenant_id}_initial" in again.json()["error"]["message"]
    state = one_row(ONBOARDED, t=tenant_id, h="")
    assert state == {
        "profiles": 1,
        "subscriptions": 1,
        "usage_rows": 1,
        "api_keys": 1,
        "shown_key": 0,
        "audited": 1,
    }
