"""Reports' rows for the tenants' datasets: stored with the report's commit, written by the flush."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from bigquery_backend import repository
from bigquery_backend.client import get_gateway
from bigquery_backend.emulator import EmulatorProcess
from bigquery_backend.repository import Part, RowChange
from tenants_app.models import RunState, TenantDqResult, TenantPipelineRun, TenantStepLog
from tenants_app.repositories import tenant_repository
from tenants_app.services import run_report_batches, run_tenant_rows
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.datasets import tenant_dataset
from tenants_app.services.errors import LeaseLost, ServiceUnavailable
from tenants_app.services.run_claims import run_claim, runs_claim
from tenants_app.services.run_common import queue_repository
from tenants_app.services.run_reports import pipeline_logging_id, run_complete, run_fail
from tenants_app.services.run_selectors import run_get
from tenants_app.services.run_tenant_rows import TenantRowsReport, tenant_rows_flush
from tenants_app.services.tenant_overview import tenant_overview
from tenants_app.services.tenants import tenant_offboard
from tests.api.test_faults_bigquery import writes_to
from tests.support.bigquery_faults import BigQueryFaultProxy, Fault
from tests.tenants_app.services.quota_factories import tenant_with_subscription
from tests.tenants_app.services.run_factories import enqueue, entry

pytestmark = pytest.mark.usefixtures("central")

NOW = datetime(2031, 3, 18, 12, 0, tzinfo=UTC)


@pytest.fixture
def through_proxy(bigquery_emulator: EmulatorProcess) -> Iterator[BigQueryFaultProxy]:
    proxy = BigQueryFaultProxy(bigquery_emulator.url, slow_seconds=1.0).start()
    with override_settings(BIGQUERY_EMULATOR_HOST=proxy.url, BIGQUERY_RETRY_DEADLINE_SECONDS=0.5):
        yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def _nothing_pending_from_other_tests() -> None:
    # The flush reads every tenant's entries: rows other tests left are written (or dropped) first.
    tenant_rows_flush()


def claimed(
    count: int = 1, *, with_dataset: bool = True, max_retries: int = 3, sorts: str = ""
) -> tuple[str, list[str]]:
    """A tenant (with its dataset) and `count` runs claimed by worker `w1` at NOW; run ids start with
    `run_{sorts}` (the flush reads entries in run id order)."""
    tenant_id = tenant_with_subscription(concurrent_limit=10, daily_limit=100)
    if with_dataset:
        bigquery_bootstrap(tenant_id=tenant_id)
    run_ids = [
        enqueue(tenant_id, max_retries=max_retries, run_id=f"run_{sorts}{uuid.uuid4().hex[:12]}")
        for _ in range(count)
    ]
    claims = runs_claim(worker_id="w1", tenant_id=tenant_id, max_runs=count, now=NOW)
    assert sorted(run.run_id for run in claims) == sorted(run_ids)
    return tenant_id, run_ids


def complete(run_id: str, *, worker_id: str = "w1", at: datetime = NOW) -> None:
    run_complete(
        run_id=run_id,
        worker_id=worker_id,
        status="SUCCEEDED",
        started_at=at,
        ended_at=at + timedelta(seconds=5),
        step_logs=[
            {
                "step_index": index,
                "step_name": name,
                "step_type": "query",
                "status": "SUCCEEDED",
                "start_time": at,
                "end_time": at + timedelta(seconds=2),
            }
            for index, name in enumerate(("extract", "load"))
        ],
        dq_results=[
            {
                "target_table": "billing.daily_costs",
                "dq_config_id": "dq_costs",
                "executed_at": at + timedelta(seconds=4),
                "expectations_passed": 3,
                "expectations_failed": 0,
                "overall_status": "PASS",
            }
        ],
        now=at + timedelta(seconds=6),
    )


def written(tenant_id: str) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """What the tenant's own tables hold: execution ids, (execution id, step index), DQ execution ids."""
    return (
        sorted(row.pipeline_logging_id for row in tenant_repository(TenantPipelineRun, tenant_id).list()),
        sorted(
            (row.pipeline_logging_id, row.step_index)
            for row in tenant_repository(TenantStepLog, tenant_id).list()
        ),
        sorted(row.pipeline_logging_id for row in tenant_repository(TenantDqResult, tenant_id).list()),
    )


def test_it_keeps_a_reports_rows_on_its_entry_and_writes_them_to_the_tenants_dataset_at_the_flush() -> None:
    tenant_id, (run_id,) = claimed()
    complete(run_id)
    logging_id = pipeline_logging_id(run_id, 1)

    # Durable with the report's commit, in the central queue, not yet in the tenant's dataset...
    assert written(tenant_id) == ([], [], [])
    assert [item["execution"]["pipeline_logging_id"] for item in entry(run_id).tenant_rows] == [logging_id]
    # ...and the run's page shows them all the same.
    before = run_get(tenant_id=tenant_id, run_id=run_id)
    assert [row.pipeline_logging_id for row in before.executions] == [logging_id]
    assert [step.step_name for step in before.step_logs] == ["extract", "load"]
    assert [check.overall_status for check in before.dq_results] == ["PASS"]

    report = tenant_rows_flush()

    assert (report.entries, report.tenants, report.attempts, report.failed_tenants) == (1, 1, 1, [])
    assert written(tenant_id) == ([logging_id], [(logging_id, 0), (logging_id, 1)], [logging_id])
    assert entry(run_id).tenant_rows is None
    after = run_get(tenant_id=tenant_id, run_id=run_id)
    assert (after.executions, after.step_logs, after.dq_results) == (
        before.executions,
        before.step_logs,
        before.dq_results,
    )


def tenants_in_part(tenant_ids: list[str], part: Part) -> set[str]:
    """Which of these tenants' entries the part holds, as BigQuery computes it."""
    entries = queue_repository().list(filters={"tenant_id__in": tenant_ids, "tenant_id__part": part})
    return {entry.tenant_id for entry in entries}


def test_it_writes_only_the_tenants_of_the_part_it_is_given_and_every_tenant_in_one_part() -> None:
    # Tenants until both halves hold one: which half a tenant is in follows from its (random) id.
    tenants: dict[str, str] = {}
    for _ in range(24):  # 2 ** -23 that 24 random ids all fall in one half; three do nearly always
        tenant_id, (run_id,) = claimed()
        complete(run_id)
        tenants[tenant_id] = pipeline_logging_id(run_id, 1)
        if len(tenants) >= 3 and all(tenants_in_part(list(tenants), Part(i, of=2)) for i in range(2)):
            break
    first_half = tenants_in_part(list(tenants), Part(0, of=2))
    assert first_half
    assert first_half < set(tenants)

    report = tenant_rows_flush(part=Part(0, of=2))

    assert report.tenants == len(first_half)
    assert {tenant_id for tenant_id in tenants if written(tenant_id)[0]} == first_half
    # The other half's rows wait on their entries for their own part's flush.
    report = tenant_rows_flush(part=Part(1, of=2))

    assert report.tenants == len(tenants) - len(first_half)
    assert {tenant_id: written(tenant_id)[0] for tenant_id in tenants} == {
        tenant_id: [logging_id] for tenant_id, logging_id in tenants.items()
    }


def test_it_writes_each_tenant_table_once_per_flush_however_many_runs_reported() -> None:
    tenant_id, run_ids = claimed(6)
    for run_id in run_ids:
        complete(run_id)

    with get_gateway().count_jobs() as counter:
        tenant_rows_flush()

    tables = Counter(
        match.group(1)
        for statement in counter.statements
        if (match := re.match(r"MERGE `[^`]+\.(\w+)`", statement))
    )
    # One MERGE per tenant table for all six runs, and one on the queue to clear them; one read.
    assert tables == {
        "tenant_pipeline_runs": 1,
        "tenant_step_logs": 1,
        "tenant_dq_results": 1,
        "tenant_pipeline_execution_queue": 1,
    }
    assert counter.jobs == 5
    executions, steps, checks = written(tenant_id)
    assert (len(executions), len(steps), len(checks)) == (6, 12, 6)


def test_it_keeps_every_attempts_rows_until_they_are_written() -> None:
    tenant_id, (run_id,) = claimed(max_retries=1)
    run_fail(run_id=run_id, worker_id="w1", error="timeout", now=NOW)
    retry_at = NOW + timedelta(hours=1)
    assert run_claim(worker_id="w2", tenant_id=tenant_id, now=retry_at) is not None
    complete(run_id, worker_id="w2", at=retry_at)

    first, second = pipeline_logging_id(run_id, 1), pipeline_logging_id(run_id, 2)
    assert [item["execution"]["pipeline_logging_id"] for item in entry(run_id).tenant_rows] == [first, second]
    tenant_rows_flush()

    executions, _, _ = written(tenant_id)
    assert executions == [first, second]
    assert entry(run_id).tenant_rows is None


def test_it_stores_no_rows_for_a_report_that_did_not_commit() -> None:
    tenant_id, (run_id,) = claimed()

    with pytest.raises(LeaseLost):
        complete(run_id, worker_id="not-the-holder")

    assert entry(run_id).tenant_rows is None
    assert entry(run_id).state == RunState.RUNNING
    tenant_rows_flush()
    assert written(tenant_id) == ([], [], [])


def test_it_keeps_a_tenants_rows_for_the_next_flush_when_their_write_fails(
    through_proxy: BigQueryFaultProxy,
) -> None:
    tenant_id, (run_id,) = claimed()
    complete(run_id)
    through_proxy.fail(Fault.ERROR_503, match=writes_to("tenant_step_logs"))

    report = tenant_rows_flush()

    assert report.failed_tenants == [tenant_id]
    assert entry(run_id).tenant_rows is not None
    through_proxy.heal()
    assert tenant_rows_flush().failed_tenants == []
    logging_id = pipeline_logging_id(run_id, 1)
    assert written(tenant_id) == ([logging_id], [(logging_id, 0), (logging_id, 1)], [logging_id])
    assert entry(run_id).tenant_rows is None


def test_it_rewrites_rather_than_duplicates_when_the_clear_failed(through_proxy: BigQueryFaultProxy) -> None:
    tenant_id, (run_id,) = claimed()
    complete(run_id)
    through_proxy.fail(Fault.ERROR_503, match=writes_to("tenant_pipeline_execution_queue"))

    with pytest.raises(ServiceUnavailable):
        tenant_rows_flush()

    through_proxy.heal()
    assert entry(run_id).tenant_rows is not None  # the clear was lost: written, still held
    tenant_rows_flush()
    logging_id = pipeline_logging_id(run_id, 1)
    assert written(tenant_id) == ([logging_id], [(logging_id, 0), (logging_id, 1)], [logging_id])
    assert entry(run_id).tenant_rows is None


def test_it_keeps_rows_a_report_added_between_the_flushs_read_and_its_clear() -> None:
    tenant_id, (run_id,) = claimed(max_retries=1)
    run_fail(run_id=run_id, worker_id="w1", error="timeout", now=NOW)
    as_read = queue_repository().list(
        filters={"run_id": run_id}, fields=["run_id", "tenant_id", "tick_id", "tenant_rows"]
    )
    # The retry reports while the flush writes what it read (attempt 1 only).
    retry_at = NOW + timedelta(hours=1)
    assert run_claim(worker_id="w2", tenant_id=tenant_id, now=retry_at) is not None
    complete(run_id, worker_id="w2", at=retry_at)

    run_tenant_rows._flush_round(as_read, TenantRowsReport())

    first, second = pipeline_logging_id(run_id, 1), pipeline_logging_id(run_id, 2)
    assert written(tenant_id)[0] == [first]
    # The clear found the entry changed and left it: attempt 2's rows wait for the next flush.
    assert [item["execution"]["pipeline_logging_id"] for item in entry(run_id).tenant_rows] == [first, second]
    tenant_rows_flush()
    assert written(tenant_id)[0] == [first, second]
    assert entry(run_id).tenant_rows is None


def test_it_writes_the_other_tenants_when_one_tenants_write_fails(
    through_proxy: BigQueryFaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One entry a round: the failing tenant's entry must not be read again and again in its place.
    monkeypatch.setattr(run_tenant_rows, "_ENTRIES_PER_ROUND", 1)
    failing, (failing_run,) = claimed(sorts="0")  # read first
    healthy, (healthy_run,) = claimed(sorts="z")
    complete(failing_run)
    complete(healthy_run)
    dataset = tenant_dataset(failing)
    through_proxy.fail(
        Fault.ERROR_503,
        match=lambda request: writes_to("tenant_step_logs")(request) and dataset in request.statement,
    )

    report = tenant_rows_flush()

    assert (report.failed_tenants, report.tenants, report.entries) == ([failing], 1, 1)
    assert entry(failing_run).tenant_rows is not None
    assert entry(healthy_run).tenant_rows is None
    assert written(healthy)[0] == [pipeline_logging_id(healthy_run, 1)]


def test_it_leaves_an_unreadable_entry_as_it_is_and_writes_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, (broken_run,) = claimed()
    _, (healthy_run,) = claimed()
    complete(broken_run)
    complete(healthy_run)
    garbage = [{"execution": {"pipeline_logging_id": "x", "start_time": "not a time"}}]
    queue_repository().update_many([RowChange(key=broken_run, values={"tenant_rows": garbage})])

    report = tenant_rows_flush()

    assert entry(broken_run).tenant_rows == garbage
    assert entry(healthy_run).tenant_rows is None
    assert (report.tenants, report.failed_tenants) == (1, [])
    assert f"run {broken_run}: tenant rows unreadable, left on its queue entry" in caplog.text
    # Its pages still open, without the rows they cannot read.
    assert run_get(tenant_id=broken, run_id=broken_run).executions == []
    assert tenant_overview(tenant_id=broken, now=NOW).runs == []
    # Cleared here so later flushes (and tests) do not meet it again.
    queue_repository().update_many([RowChange(key=broken_run, values={"tenant_rows": None})])


def test_it_keeps_the_rows_when_the_dataset_is_there_but_a_table_is_not() -> None:
    tenant_id, (run_id,) = claimed()
    complete(run_id)
    get_gateway().delete_table(tenant_dataset(tenant_id), "tenant_step_logs")

    report = tenant_rows_flush()

    assert report.failed_tenants == [tenant_id]
    assert entry(run_id).tenant_rows is not None
    bigquery_bootstrap(tenant_id=tenant_id)
    assert tenant_rows_flush().failed_tenants == []
    assert entry(run_id).tenant_rows is None


def test_it_drops_the_rows_of_a_tenant_whose_dataset_is_gone(caplog: pytest.LogCaptureFixture) -> None:
    _, (run_id,) = claimed(with_dataset=False)
    complete(run_id)

    report = tenant_rows_flush()

    assert (report.failed_tenants, entry(run_id).tenant_rows) == ([], None)
    assert "has no dataset" in caplog.text


def test_it_forgets_the_rows_on_their_way_to_a_dataset_purged_at_offboarding() -> None:
    tenant_id, (run_id,) = claimed()
    complete(run_id)

    tenant_offboard(tenant_id=tenant_id, actor="admin@example.com", purge_dataset=True)

    assert entry(run_id).tenant_rows is None
    assert run_get(tenant_id=tenant_id, run_id=run_id).executions == []


def test_it_shows_runs_not_yet_written_on_the_tenants_page() -> None:
    tenant_id, run_ids = claimed(2)
    complete(run_ids[0], at=NOW)
    tenant_rows_flush()
    complete(run_ids[1], at=NOW + timedelta(minutes=1))

    overview = tenant_overview(tenant_id=tenant_id, now=NOW + timedelta(minutes=2))

    newest, oldest = overview.runs
    assert newest.run.pipeline_logging_id == pipeline_logging_id(run_ids[1], 1)
    assert [step.step_name for step in newest.steps] == ["extract", "load"]
    assert [check.overall_status for check in newest.dq_results] == ["PASS"]
    assert oldest.run.pipeline_logging_id == pipeline_logging_id(run_ids[0], 1)
    assert [step.step_name for step in oldest.steps] == ["extract", "load"]


def test_it_splits_a_tick_whose_reports_carry_more_than_a_request_may(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repository, "MAX_BATCH_BYTES", 120)
    changes = [RowChange(key=f"r{index}", values={"tenant_rows": [{"x": "y" * 60}]}) for index in range(3)]
    changes.append(RowChange(key="r3", values={"tenant_rows": None}))
    # Every value counts, not only the tenant rows: a failure's long error message, say.
    changes.append(RowChange(key="r4", values={"tenant_rows": None, "error_message": "e" * 100}))

    chunks = list(run_report_batches._by_payload(changes))

    assert [[change.key for change in chunk] for chunk in chunks] == [["r0"], ["r1"], ["r2", "r3"], ["r4"]]
