"""A claim BigQuery fails between its steps strands no slot and no run; expired leases are reaped once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from bigquery_backend.emulator import EmulatorProcess
from tenants_app.models import RunState
from tenants_app.services.errors import ServiceUnavailable
from tenants_app.services.run_claims import run_claim
from tenants_app.services.run_common import scheduled_runs_repository
from tenants_app.services.run_queue import runs_reap_orphaned
from tests.support.bigquery_faults import BigQueryFaultProxy, Fault, ProxiedRequest
from tests.tenants_app.services.quota_factories import tenant_with_subscription, usage
from tests.tenants_app.services.run_factories import enqueue, entry
from tests.tenants_app.services.test_runs_claim import race

pytestmark = pytest.mark.usefixtures("central")

NOW = datetime(2031, 3, 18, 12, 0, tzinfo=UTC)
DAY = NOW.date()


@pytest.fixture
def faults(bigquery_emulator: EmulatorProcess) -> Iterator[BigQueryFaultProxy]:
    proxy = BigQueryFaultProxy(bigquery_emulator.url, slow_seconds=1.0).start()
    try:
        # A short retry deadline: the gateway's retries of a refusal give up within a second.
        with override_settings(BIGQUERY_EMULATOR_HOST=proxy.url, BIGQUERY_RETRY_DEADLINE_SECONDS=1.0):
            yield proxy
    finally:
        proxy.stop()


def queue_update(request: ProxiedRequest) -> bool:
    """A write of queue entries: the claim tick's MERGEs, a reap's UPDATE."""
    # The target, not a table read in the source (the usage rows' MERGE counts queue entries).
    return re.match(r"(UPDATE|MERGE) `[^`]*\.tenant_pipeline_execution_queue`", request.statement) is not None


def usage_date_stamp(request: ProxiedRequest) -> bool:
    """The claim tick's second queue MERGE: each admitted entry's `usage_date` (the give-back, which
    also sets it per row, leaves `heartbeat_at` alone)."""
    statement = request.statement
    return (
        queue_update(request)
        and re.search(r"`?usage_date`? = (IF\(source|source)", statement) is not None
        and "heartbeat_at" in statement
    )


def after_the_claim(request: ProxiedRequest) -> bool:
    """A queue write of the claim tick after its compare-and-set, which alone stamps one start time
    on every entry (the stamp and the give-back set `processing_started_at` per row)."""
    return queue_update(request) and re.search(r"`?processing_started_at`? = @", request.statement) is None


def running(tenant_id: str) -> int:
    row = usage(tenant_id, DAY)
    assert row is not None
    return row.concurrent_pipelines_running


def test_it_gives_the_run_and_its_slot_back_when_the_usage_date_stamp_is_refused(
    faults: BigQueryFaultProxy,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=1)
    run_id = enqueue(tenant_id)
    faults.fail(Fault.TOO_MANY_DML, match=usage_date_stamp)

    with pytest.raises(ServiceUnavailable):
        run_claim(worker_id="w1", tenant_id=tenant_id, now=NOW)
    faults.heal()

    # Refused after its admission: before, the entry stayed RUNNING without a day and the STARTER
    # tenant's one slot stayed taken until the next rollover.
    assert (entry(run_id).state, entry(run_id).usage_date) == (RunState.QUEUED, None)
    assert running(tenant_id) == 0
    # The run row, moved beside the stamp, is put back as it was.
    row = scheduled_runs_repository().get(run_id)
    assert (row.state, row.worker_id, row.started_at) == (RunState.QUEUED, None, None)
    claimed = run_claim(worker_id="w2", tenant_id=tenant_id, now=NOW)
    assert claimed is not None
    assert claimed.run_id == run_id
    assert running(tenant_id) == 1


def test_it_frees_the_slot_at_lease_expiry_when_giving_back_failed_too(faults: BigQueryFaultProxy) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=1)
    run_id = enqueue(tenant_id)
    # The claim's compare-and-set passes; every queue write after it fails: the stamp, the give-back.
    faults.fail(Fault.TOO_MANY_DML, match=after_the_claim)

    with pytest.raises(ServiceUnavailable):
        run_claim(worker_id="w1", tenant_id=tenant_id, lease_seconds=10, now=NOW)
    faults.heal()
    stranded = entry(run_id)
    assert (stranded.state, stranded.usage_date, running(tenant_id)) == (RunState.RUNNING, None, 1)

    report = runs_reap_orphaned(now=NOW + timedelta(seconds=11))

    assert report.requeued == [run_id]
    assert report.released == 1
    assert running(tenant_id) == 0


def test_it_reaps_an_expired_lease_once_however_many_claimers_meet_it(faults: BigQueryFaultProxy) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    run_id = enqueue(tenant_id)
    run_claim(worker_id="dead", tenant_id=tenant_id, lease_seconds=10, now=NOW)
    later = NOW + timedelta(seconds=11)

    with faults.recording() as seen:
        claims, errors = race(6, lambda i: run_claim(worker_id=f"w{i}", tenant_id=tenant_id, now=later))

    assert errors == []
    reaps = [r for r in seen if queue_update(r) and "lease_owner = @token" in r.statement]
    # Before, each of the 6 claimers that read the expired entry sent its own reap UPDATE.
    assert len(reaps) == 1
    assert [claim.run_id for claim in claims if claim is not None] == [run_id]
    assert running(tenant_id) == 1


def admission(request: ProxiedRequest) -> bool:
    """The quota admission: the usage rows' conditional `+ n` UPDATE."""
    return request.statement.startswith("UPDATE") and "pipelines_run_today = u.pipelines_run_today +" in (
        request.statement
    )


def test_it_frees_the_slot_when_the_admissions_answer_is_lost(faults: BigQueryFaultProxy) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=1)
    run_id = enqueue(tenant_id)
    # The admission lands, its answer is lost, and BigQuery is then gone for it: outcome unknown.
    faults.fail(Fault.LOST, match=admission)

    with pytest.raises(ServiceUnavailable):
        run_claim(worker_id="w1", tenant_id=tenant_id, now=NOW)
    faults.heal()

    assert (entry(run_id).state, running(tenant_id)) == (RunState.QUEUED, 0)
    assert run_claim(worker_id="w2", tenant_id=tenant_id, now=NOW) is not None
