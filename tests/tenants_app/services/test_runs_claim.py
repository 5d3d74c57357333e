"""Claiming runs from the execution queue: order, exclusivity under real threads, quota, leases."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tenants_app.models import RunState
from tenants_app.services import run_claims
from tenants_app.services.errors import LeaseLost, QuotaExceeded, SubscriptionInactive
from tenants_app.services.run_actions import run_cancel
from tenants_app.services.run_claims import run_claim
from tenants_app.services.run_queue import run_heartbeat
from tenants_app.services.run_reports import run_complete
from tests.tenants_app.services.quota_factories import put_usage, tenant_with_subscription, usage
from tests.tenants_app.services.run_factories import enqueue, enqueue_many, entry, run_row

pytestmark = pytest.mark.usefixtures("central")

NOW = datetime(2031, 3, 18, 12, 0, tzinfo=UTC)
DAY = NOW.date()


def race(count: int, action: Callable[[int], object]) -> tuple[list[object], list[BaseException]]:
    """Run `action(i)` in `count` threads released at the same moment; results and errors."""
    barrier = threading.Barrier(count)
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        barrier.wait()
        try:
            outcome = action(index)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results, errors


def test_it_claims_by_priority_then_scheduled_time() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10, daily_limit=50)
    early, late = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 6, 1, tzinfo=UTC)
    low = enqueue(tenant_id, priority=5, scheduled_time=datetime(2029, 1, 1, tzinfo=UTC))
    urgent_late = enqueue(tenant_id, priority=1, scheduled_time=late)
    urgent_early = enqueue(tenant_id, priority=1, scheduled_time=early)

    order = [run_claim(worker_id=f"w{i}", tenant_id=tenant_id, now=NOW) for i in range(3)]

    assert [claimed.run_id for claimed in order if claimed] == [urgent_early, urgent_late, low]
    assert run_claim(worker_id="w9", tenant_id=tenant_id, now=NOW) is None


def test_it_marks_both_rows_and_takes_a_slot_when_claiming() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    run_id = enqueue(tenant_id, parameters={"region": "eu"})

    claimed = run_claim(worker_id="worker-a", tenant_id=tenant_id, lease_seconds=60, now=NOW)

    assert claimed is not None
    assert (claimed.run_id, claimed.attempt, claimed.parameters) == (run_id, 1, {"region": "eu"})
    assert claimed.lease_expires_at == NOW + timedelta(seconds=60)
    queued = entry(run_id)
    assert (queued.state, queued.lease_owner, queued.attempt, queued.usage_date) == (
        RunState.RUNNING,
        "worker-a",
        1,
        DAY,
    )
    row = run_row(run_id)
    assert (row.state, row.worker_id, row.started_at) == (RunState.RUNNING, "worker-a", NOW)
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.pipelines_run_today, counters.concurrent_pipelines_running) == (1, 1)


def test_it_skips_runs_not_yet_due_or_backing_off() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    enqueue(tenant_id, scheduled_time=NOW + timedelta(minutes=1))
    backing_off = enqueue(tenant_id)
    from tenants_app.models import TenantPipelineExecutionQueue
    from tenants_app.repositories import central_repository

    central_repository(TenantPipelineExecutionQueue).update(
        backing_off, {"available_at": NOW + timedelta(seconds=30)}
    )

    assert run_claim(worker_id="w", tenant_id=tenant_id, now=NOW) is None
    later = run_claim(worker_id="w", tenant_id=tenant_id, now=NOW + timedelta(seconds=31))
    assert later is not None
    assert later.run_id == backing_off


def test_it_never_gives_one_run_to_two_workers_racing_in_threads() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=20, daily_limit=50)
    run_ids = enqueue_many(tenant_id, [{"priority": 1 + i % 2} for i in range(3)])

    claims, errors = race(8, lambda i: run_claim(worker_id=f"racer-{i}", tenant_id=tenant_id, now=NOW))

    assert errors == []
    won = [claimed for claimed in claims if claimed is not None]
    assert sorted(claimed.run_id for claimed in won) == sorted(run_ids)  # each once, none twice
    for claimed in won:
        assert entry(claimed.run_id).lease_owner == claimed.worker_id
    counters = usage(tenant_id, DAY)
    assert counters is not None
    # Losers never admitted anything: exactly one run counted per claimed run.
    assert (counters.pipelines_run_today, counters.concurrent_pipelines_running) == (3, 3)


def test_it_admits_exactly_the_remaining_daily_runs_to_racing_workers() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=20, daily_limit=10)
    put_usage(tenant_id, DAY, pipelines_run_today=8, pipelines_run_month=8)
    enqueue_many(tenant_id, [{} for _ in range(5)])

    claims, errors = race(6, lambda i: run_claim(worker_id=f"racer-{i}", now=NOW))

    assert errors == []
    assert len([claimed for claimed in claims if claimed is not None]) == 2
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.pipelines_run_today == 10
    queue = [entry(run_id) for run_id in _tenant_runs(tenant_id)]
    assert sorted(item.state for item in queue) == [RunState.QUEUED] * 3 + [RunState.RUNNING] * 2


def test_it_leaves_an_over_quota_tenants_run_queued_and_claims_another_tenants() -> None:
    busy = tenant_with_subscription(concurrent_limit=1)
    other = tenant_with_subscription(concurrent_limit=1)
    first = enqueue(busy, priority=1, scheduled_time=datetime(2030, 1, 1, tzinfo=UTC))
    held_back = enqueue(busy, priority=1, scheduled_time=datetime(2030, 1, 2, tzinfo=UTC))
    other_run = enqueue(other, priority=9)
    assert run_claim(worker_id="w1", tenant_id=busy, now=NOW).run_id == first  # type: ignore[union-attr]

    claimed = run_claim(worker_id="w2", now=NOW)

    assert claimed is not None
    assert claimed.run_id == other_run
    waiting = entry(held_back)
    assert (waiting.state, waiting.attempt, waiting.lease_owner) == (RunState.QUEUED, 0, None)
    counters = usage(busy, DAY)
    assert counters is not None
    assert counters.pipelines_run_today == 1  # the refusal consumed nothing


def test_it_raises_the_quota_refusal_when_claiming_for_one_tenant() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=1)
    enqueue(tenant_id)
    enqueue(tenant_id)
    assert run_claim(worker_id="w1", tenant_id=tenant_id, now=NOW) is not None

    with pytest.raises(QuotaExceeded) as refused:
        run_claim(worker_id="w2", tenant_id=tenant_id, now=NOW)

    assert refused.value.limit == "concurrent"
    assert refused.value.retry_after > 0


def test_it_refuses_runs_of_a_suspended_subscription_at_claim_time() -> None:
    tenant_id = tenant_with_subscription(status="SUSPENDED")
    run_id = enqueue(tenant_id)

    with pytest.raises(SubscriptionInactive):
        run_claim(worker_id="w", tenant_id=tenant_id, now=NOW)
    assert entry(run_id).state == RunState.QUEUED
    assert entry(run_id).attempt == 0


def test_it_requeues_an_expired_lease_for_another_worker_releasing_the_slot_once() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=1)
    run_id = enqueue(tenant_id)
    run_claim(worker_id="dead", tenant_id=tenant_id, lease_seconds=10, now=NOW)

    later = NOW + timedelta(seconds=11)
    claimed = run_claim(worker_id="alive", tenant_id=tenant_id, now=later)

    assert claimed is not None
    assert (claimed.run_id, claimed.attempt, claimed.retry_count) == (run_id, 2, 1)
    counters = usage(tenant_id, DAY)
    assert counters is not None
    # One slot (the dead claim's) released, one taken: the limit of 1 did not refuse the takeover.
    assert (counters.concurrent_pipelines_running, counters.pipelines_run_today) == (1, 2)
    assert run_row(run_id).retry_count == 1
    with pytest.raises(LeaseLost):
        run_heartbeat(run_id=run_id, worker_id="dead", now=later)
    with pytest.raises(LeaseLost):
        run_complete(run_id=run_id, worker_id="dead", status="SUCCEEDED", now=later)


def test_it_keeps_a_lease_alive_with_heartbeats() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=2)
    run_id = enqueue(tenant_id)
    run_claim(worker_id="w1", tenant_id=tenant_id, lease_seconds=10, now=NOW)

    lease = run_heartbeat(run_id=run_id, worker_id="w1", lease_seconds=10, now=NOW + timedelta(seconds=8))

    assert lease.lease_expires_at == NOW + timedelta(seconds=18)
    assert run_claim(worker_id="w2", tenant_id=tenant_id, now=NOW + timedelta(seconds=15)) is None
    assert entry(run_id).lease_owner == "w1"


def test_it_refuses_a_heartbeat_from_another_worker() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=2)
    run_id = enqueue(tenant_id)
    run_claim(worker_id="w1", tenant_id=tenant_id, now=NOW)

    with pytest.raises(LeaseLost):
        run_heartbeat(run_id=run_id, worker_id="w2", now=NOW)
    with pytest.raises(LeaseLost):
        run_heartbeat(run_id=run_id, worker_id="w1", attempt=2, now=NOW)


def _tenant_runs(tenant_id: str) -> list[str]:
    from tenants_app.models import TenantPipelineExecutionQueue
    from tenants_app.repositories import central_repository

    return [
        row.run_id
        for row in central_repository(TenantPipelineExecutionQueue).list(filters={"tenant_id": tenant_id})
    ]


def test_it_skips_a_tenant_found_over_quota_until_one_of_its_runs_ends() -> None:
    from bigquery_backend.client import get_gateway

    tenant_id = tenant_with_subscription(concurrent_limit=1)
    first = enqueue(tenant_id, priority=1)
    held_back = enqueue(tenant_id, priority=2)
    assert run_claim(worker_id="w1", tenant_id=tenant_id, now=NOW) is not None
    assert run_claim(worker_id="w2", now=NOW) is None  # refused by the concurrent limit

    with get_gateway().count_jobs() as counter:
        assert run_claim(worker_id="w2", now=NOW) is None

    # Only the candidate query: no doomed compare-and-set, admission and undo for the busy tenant.
    assert counter.jobs == 1
    run_complete(run_id=first, worker_id="w1", status="SUCCEEDED", now=NOW)
    claimed = run_claim(worker_id="w2", now=NOW)
    assert claimed is not None
    assert claimed.run_id == held_back


def test_it_gives_back_the_slot_when_the_run_is_cancelled_while_the_claim_is_admitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    run_id = enqueue(tenant_id)
    admit = run_claims.quota_admit_many

    def cancel_then_admit(**kwargs: object) -> object:
        # The window: the claim's compare-and-set won, its slot is not yet recorded on the entry, so
        # the cancel has no slot to release.
        run_cancel(tenant_id=tenant_id, run_id=run_id, actor="user:operator")
        return admit(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run_claims, "quota_admit_many", cancel_then_admit)

    assert run_claim(worker_id="w1", tenant_id=tenant_id, now=NOW) is None
    assert (entry(run_id).state, run_row(run_id).state) == (RunState.CANCELLED, RunState.CANCELLED)
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.concurrent_pipelines_running == 0


def test_it_gives_back_the_slot_when_the_run_is_taken_over_while_the_claim_is_admitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    run_id = enqueue(tenant_id)
    admit = run_claims.quota_admit_many
    takeovers: list[object] = []

    def stall_past_the_lease(**kwargs: object) -> object:
        if not takeovers:
            # The first claim's admission outlives its 10 s lease: another process's tick (which
            # does not wait for ours) takes the run over for another worker.
            takeovers.append(None)
            later = run_claims._Claim(
                "w2", None, tenant_id, 1, timedelta(seconds=300), NOW + timedelta(seconds=11)
            )
            takeovers[0] = run_claims._ClaimTick([later]).run()[0]
        return admit(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run_claims, "quota_admit_many", stall_past_the_lease)

    assert run_claim(worker_id="w1", tenant_id=tenant_id, lease_seconds=10, now=NOW) is None
    assert takeovers[0]
    held = entry(run_id)
    assert (held.state, held.lease_owner, held.attempt) == (RunState.RUNNING, "w2", 2)
    counters = usage(tenant_id, DAY)
    assert counters is not None
    # Only the worker that holds the run holds a slot: the first claim gave its own back.
    assert counters.concurrent_pipelines_running == 1
