"""The batched hot path under the BigQuery realism proxy, with real threads: claims and reports of a
tick share their statements, and the guarantees (K of N admitted, each run claimed once, each slot
freed once) hold under BigQuery's latency and per-table limits."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from tenants_app.models import RunState
from tenants_app.services import run_claims
from tenants_app.services.errors import QuotaExceeded
from tenants_app.services.quotas import quota_release
from tenants_app.services.run_claims import ClaimedRun, run_claim, runs_claim
from tenants_app.services.run_common import queue_repository, reports_lane, slot_repair
from tenants_app.services.run_queue import run_heartbeat
from tenants_app.services.run_reports import run_complete
from tests.support.bigquery_realism import BigQueryRealismProxy
from tests.tenants_app.services.quota_factories import tenant_with_subscription, usage
from tests.tenants_app.services.run_factories import enqueue, entry
from tests.tenants_app.services.test_runs_claim import race

pytestmark = pytest.mark.usefixtures("central")

NOW = datetime(2031, 3, 18, 12, 0, tzinfo=UTC)
DAY = NOW.date()
RealisticBigQuery = Callable[..., BigQueryRealismProxy]
# BigQuery's latencies at a tenth: statements overlap as they would, and a test stays short.
SCALE = 0.1


def mutating(proxy: BigQueryRealismProxy, table: str) -> int:
    counts = next((kinds for name, kinds in proxy.counts().items() if name.endswith(f".{table}")), {})
    return sum(counts.get(kind, 0) for kind in ("update", "merge", "delete"))


def queue_states(run_ids: list[str]) -> Counter[str]:
    return Counter(entry(run_id).state for run_id in run_ids)


def test_it_admits_exactly_five_of_thirty_two_racing_claims_for_five_slots(
    realistic_bigquery: RealisticBigQuery,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=5, daily_limit=100)
    runs = [enqueue(tenant_id) for _ in range(10)]
    proxy = realistic_bigquery(scale=SCALE, conflict_probability=0.3, seed=7)

    with override_settings(PIPELINE_CLAIM_TICK_SECONDS=0.3):
        results, errors = race(
            32, lambda i: run_claim(worker_id=f"w{i}", credential=f"token:{i}", tenant_id=tenant_id, now=NOW)
        )

    claimed = [result for result in results if isinstance(result, ClaimedRun)]
    assert len(claimed) == 5
    assert len({run.run_id for run in claimed}) == 5
    # The others were told nothing is claimable for them (None) or the quota's 429, nothing else.
    assert all(isinstance(error, QuotaExceeded) for error in errors), errors
    assert len(results) - len(claimed) + len(errors) == 27
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.concurrent_pipelines_running, counters.pipelines_run_today) == (5, 5)
    assert queue_states(runs) == Counter({RunState.RUNNING: 5, RunState.QUEUED: 5})
    assert proxy.refusals() == {}
    # Every claim was served by a few ticks, not one set of statements per claim.
    assert mutating(proxy, "tenant_pipeline_execution_queue") < 16


def test_it_never_gives_one_run_to_two_processes_whose_ticks_overlap(
    realistic_bigquery: RealisticBigQuery,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=50, daily_limit=100)
    runs = [enqueue(tenant_id) for _ in range(15)]
    realistic_bigquery(scale=SCALE)

    # Two processes that share no cache: their ticks are not serialised by a lane, and both read the
    # same candidates. Each asks for 10 of the 15 runs.
    def process(index: int) -> list[ClaimedRun] | BaseException:
        claim = run_claims._Claim(f"p{index}", f"token:{index}", None, 10, timedelta(seconds=300), NOW)
        return run_claims._ClaimTick([claim]).run()[0]

    outcomes, errors = race(2, process)

    assert errors == []
    claimed = [run.run_id for outcome in outcomes if isinstance(outcome, list) for run in outcome]
    assert len(claimed) == len(set(claimed))
    assert len(claimed) >= 10
    assert queue_states(runs)[RunState.RUNNING] == len(claimed)
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.concurrent_pipelines_running == len(claimed)


def test_it_hands_out_up_to_max_runs_per_claim_and_spreads_them_over_claims() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=20, daily_limit=100)
    for _ in range(12):
        enqueue(tenant_id)

    first = runs_claim(worker_id="w1", tenant_id=tenant_id, max_runs=10, now=NOW)
    second = runs_claim(worker_id="w2", tenant_id=tenant_id, max_runs=10, now=NOW)

    assert (len(first), len(second)) == (10, 2)
    assert {run.worker_id for run in first} == {"w1"}
    assert not {run.run_id for run in first} & {run.run_id for run in second}
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.concurrent_pipelines_running == 12


def test_it_counts_a_report_once_when_it_is_repeated_within_a_tick_and_across_ticks(
    realistic_bigquery: RealisticBigQuery,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=5)
    run_id = enqueue(tenant_id)
    claimed = run_claim(worker_id="w1", credential="token:1", tenant_id=tenant_id, now=NOW)
    assert claimed is not None
    realistic_bigquery(scale=SCALE)

    def report(_: int) -> object:
        return run_complete(
            run_id=run_id, worker_id="w1", credential="token:1", status="SUCCEEDED", attempt=1, now=NOW
        )

    with override_settings(PIPELINE_REPORT_TICK_SECONDS=0.3):
        # Three copies at once (one tick, or two), then one more after those ticks ended.
        results, errors = race(3, report)
        results.append(report(3))

    assert errors == []
    assert {run.state for run in results} == {RunState.SUCCEEDED}  # type: ignore[attr-defined]
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.concurrent_pipelines_running, counters.pipelines_succeeded_today) == (0, 1)
    assert entry(run_id).state == RunState.SUCCEEDED


def test_it_commits_many_workers_reports_in_one_statement_per_table(
    realistic_bigquery: RealisticBigQuery,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=20, daily_limit=100)
    for _ in range(12):
        enqueue(tenant_id)
    claimed = [
        run
        for max_runs in (10, 2)
        for run in runs_claim(
            worker_id="w", credential="token:1", tenant_id=tenant_id, max_runs=max_runs, now=NOW
        )
    ]
    assert len(claimed) == 12
    proxy = realistic_bigquery(scale=SCALE)
    gate = threading.Barrier(12)

    def report(index: int) -> object:
        gate.wait()
        return run_complete(
            run_id=claimed[index].run_id, worker_id="w", credential="token:1", status="SUCCEEDED", now=NOW
        )

    # Spaced well beyond how far apart the reports reach their commit: at most the first and one more.
    with override_settings(PIPELINE_REPORT_TICK_SECONDS=3.0):
        proxy.reset()
        results, errors = race(12, report)

    assert errors == []
    assert len(results) == 12
    # One tick after the spacing, or two if one report was early: never one statement per report.
    assert mutating(proxy, "tenant_pipeline_execution_queue") <= 2
    assert mutating(proxy, "tenant_usage_quotas") <= 2
    assert mutating(proxy, "tenant_scheduled_pipeline_runs") <= 2
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.concurrent_pipelines_running, counters.pipelines_succeeded_today) == (0, 12)


def test_it_writes_a_heartbeat_only_when_less_than_half_the_lease_is_left(
    realistic_bigquery: RealisticBigQuery,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=5)
    run_id = enqueue(tenant_id)
    claimed = run_claim(worker_id="w1", credential="token:1", tenant_id=tenant_id, lease_seconds=60, now=NOW)
    assert claimed is not None
    proxy = realistic_bigquery(scale=SCALE)

    early = run_heartbeat(run_id=run_id, worker_id="w1", credential="token:1", lease_seconds=60, now=NOW)
    assert early.lease_expires_at == NOW + timedelta(seconds=60)  # what BigQuery holds
    assert mutating(proxy, "tenant_pipeline_execution_queue") == 0

    later = NOW + timedelta(seconds=35)
    extended = run_heartbeat(run_id=run_id, worker_id="w1", credential="token:1", lease_seconds=60, now=later)

    assert extended.lease_expires_at == later + timedelta(seconds=60)
    assert mutating(proxy, "tenant_pipeline_execution_queue") == 1
    assert entry(run_id).lease_expires_at == later + timedelta(seconds=60)


def test_it_never_repairs_a_slot_that_a_report_tick_is_about_to_free() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=5)
    first, second = enqueue(tenant_id), enqueue(tenant_id)
    claimed = runs_claim(worker_id="w1", tenant_id=tenant_id, max_runs=2, now=NOW)
    assert {run.run_id for run in claimed} == {first, second}
    repaired: list[int] = []

    with reports_lane().hold(wait=5):
        # A report tick between its two statements: the entry left RUNNING, its slot not yet freed,
        # so the usage row counts one slot more than the queue holds.
        queue_repository().update_where({"state": RunState.SUCCEEDED}, filters={"run_id": first})
        repair = threading.Thread(
            target=lambda: repaired.append(slot_repair(tenant_id=tenant_id, usage_date=DAY, succeeded=None))
        )
        repair.start()
        repair.join(timeout=1.0)
        assert repair.is_alive()  # waits for the tick instead of freeing the slot the tick frees
        quota_release(tenant_id=tenant_id, usage_date=DAY, succeeded=True)
    repair.join(timeout=30)

    assert repaired == [0]
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.concurrent_pipelines_running == 1  # the second run's slot, not freed twice
