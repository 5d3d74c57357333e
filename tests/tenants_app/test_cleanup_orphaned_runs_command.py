"""`manage.py cleanup_orphaned_runs`: dead workers' runs re-queued or failed, slots released exactly once."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from tenants_app.models import AuditLogEntry, RunState, TenantPipelineExecutionQueue
from tenants_app.repositories import central_repository
from tenants_app.services import run_claims, run_queue
from tenants_app.services.run_claims import run_claim
from tenants_app.services.run_queue import runs_reap_orphaned
from tests.tenants_app.services.quota_factories import put_usage, tenant_with_subscription, usage
from tests.tenants_app.services.run_factories import enqueue, entry, run_row

pytestmark = pytest.mark.usefixtures("central")


def cleanup(*args: str) -> str:
    out = io.StringIO()
    call_command("cleanup_orphaned_runs", *args, stdout=out)
    return out.getvalue()


def dead_claims(tenant_id: str, *, count: int, max_retries: int = 3, baseline: int = 0) -> list[str]:
    """`count` runs claimed 30 minutes ago with a 60 s lease by a worker that never came back."""
    then = timezone.now() - timedelta(minutes=30)
    if baseline:
        put_usage(tenant_id, then.date(), concurrent_pipelines_running=baseline)
    run_ids = [enqueue(tenant_id, max_retries=max_retries) for _ in range(count)]
    for _ in run_ids:
        assert run_claim(worker_id="dead-worker", tenant_id=tenant_id, lease_seconds=60, now=then) is not None
    return run_ids


def concurrent_now(tenant_id: str) -> int:
    row = usage(tenant_id, (timezone.now() - timedelta(minutes=30)).date())
    assert row is not None
    return row.concurrent_pipelines_running


def test_it_requeues_runs_with_retries_left_and_fails_the_others() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    retryable = dead_claims(tenant_id, count=1)[0]
    exhausted = dead_claims(tenant_id, count=1, max_retries=0)[0]

    output = cleanup("-v", "2")

    assert f"{retryable}: re-queued" in output
    assert f"{exhausted}: failed (no retries left)" in output
    assert "1 run(s) re-queued, 1 failed, 2 concurrent slot(s) released." in output
    assert (entry(retryable).state, run_row(retryable).state, run_row(retryable).retry_count) == (
        RunState.QUEUED,
        RunState.QUEUED,
        1,
    )
    assert (entry(exhausted).state, run_row(exhausted).state) == (RunState.FAILED, RunState.FAILED)
    assert concurrent_now(tenant_id) == 0
    trail = central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id})
    assert [(e.action, e.actor, e.after_values) for e in trail] == [
        (
            "run.lease_expired",
            "system:cleanup_orphaned_runs",
            {"requeued": [retryable], "failed": [exhausted]},
        )
    ]
    # The re-queued run is claimable again by a live worker, once the cleanup's short hold has passed.
    claimed = run_claim(worker_id="alive", tenant_id=tenant_id, now=timezone.now() + timedelta(seconds=61))
    assert claimed is not None
    assert (claimed.run_id, claimed.attempt) == (retryable, 2)


def test_it_is_idempotent() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    dead_claims(tenant_id, count=2, baseline=3)

    cleanup()
    second = cleanup()

    assert "No orphaned runs." in second
    assert concurrent_now(tenant_id) == 3


def test_it_releases_each_slot_once_when_two_cleanups_race() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=20)
    run_ids = dead_claims(tenant_id, count=3, baseline=5)
    assert concurrent_now(tenant_id) == 8
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            cleanup()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert errors == []
    # Released exactly once each: a double release would take the 5 unrelated slots below 5.
    assert concurrent_now(tenant_id) == 5
    assert [run_row(run_id).retry_count for run_id in run_ids] == [1, 1, 1]
    trail = central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id})
    moved = sorted(run_id for e in trail for run_id in e.after_values["requeued"])  # type: ignore[index]
    assert moved == sorted(run_ids)


def test_it_changes_nothing_on_a_dry_run() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    run_id = dead_claims(tenant_id, count=1)[0]

    output = cleanup("--dry-run", "-v", "2")

    assert "Dry run: " in output
    assert run_id in output
    assert entry(run_id).state == RunState.RUNNING
    assert concurrent_now(tenant_id) == 1


def test_it_uses_the_timeout_for_runs_without_a_lease() -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    run_id = enqueue(tenant_id)
    # As the original system left them: RUNNING, started two hours ago, no lease, no slot recorded.
    central_repository(TenantPipelineExecutionQueue).update(
        run_id,
        {"state": RunState.RUNNING, "processing_started_at": timezone.now() - timedelta(hours=2)},
    )

    cleanup("--timeout-minutes", "180")
    assert entry(run_id).state == RunState.RUNNING

    cleanup("--timeout-minutes", "90")
    assert entry(run_id).state == RunState.QUEUED


def test_it_refuses_a_bad_timeout() -> None:
    with pytest.raises(CommandError, match="--timeout-minutes"):
        cleanup("--timeout-minutes", "0")


# The races below call the service the command runs, at fixed times, to stop it at the exact window.
NOW = datetime(2031, 3, 18, 12, 0, tzinfo=UTC)


def test_it_keeps_the_runs_it_moved_when_a_claim_comes_right_after_its_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    run_id = enqueue(tenant_id)
    assert run_claim(worker_id="dead-worker", tenant_id=tenant_id, lease_seconds=60, now=NOW) is not None
    later = NOW + timedelta(minutes=5)
    statement = run_queue._dml
    interleaved: list[object] = []

    def update_then_claim(sql: str, params: list[object]) -> int:
        affected = statement(sql, params)
        if not interleaved:
            # Between the cleanup's UPDATE and its read-back of what it moved, a live worker claims.
            interleaved.append("pending")
            interleaved[0] = run_claim(
                worker_id="alive", tenant_id=tenant_id, now=later + timedelta(seconds=1)
            )
        return affected

    monkeypatch.setattr(run_queue, "_dml", update_then_claim)

    report = runs_reap_orphaned(now=later)

    assert interleaved == [None]  # the moved run waits until the cleanup has read it back
    # (The module's other tests leave dead claims too: a cleanup at this time finds theirs as well.)
    assert run_id in report.requeued
    assert run_row(run_id).retry_count == 1
    counters = usage(tenant_id, NOW.date())
    assert counters is not None
    assert counters.concurrent_pipelines_running == 0
    trail = central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id})
    assert [e.action for e in trail] == ["run.lease_expired"]
    claimed = run_claim(worker_id="alive", tenant_id=tenant_id, now=later + timedelta(minutes=2))
    assert claimed is not None
    assert (claimed.run_id, claimed.attempt, claimed.retry_count) == (run_id, 2, 1)


def test_it_leaves_a_newer_attempt_alone_after_stalling_between_its_read_and_its_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    run_id = enqueue(tenant_id)
    assert run_claim(worker_id="dead-worker", tenant_id=tenant_id, lease_seconds=60, now=NOW) is not None
    read = run_queue._orphan_candidates

    def read_then_stall(**kwargs: object) -> object:
        found = read(**kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(run_queue, "_orphan_candidates", read)
        # While this cleanup stalls, another one re-queues the run, and a second worker claims it and
        # dies too: the stale cleanup read attempt 1 and must not move (or release for) attempt 2.
        runs_reap_orphaned(now=NOW + timedelta(minutes=10))
        second = run_claim(
            worker_id="second", tenant_id=tenant_id, lease_seconds=60, now=NOW + timedelta(minutes=20)
        )
        assert second is not None
        return found

    monkeypatch.setattr(run_queue, "_orphan_candidates", read_then_stall)

    stale = runs_reap_orphaned(now=NOW + timedelta(minutes=30))

    assert run_id not in stale.requeued
    held = entry(run_id)
    assert (held.state, held.lease_owner, held.attempt) == (RunState.RUNNING, "second", 2)
    assert run_row(run_id).retry_count == 1
    counters = usage(tenant_id, NOW.date())
    assert counters is not None
    assert counters.concurrent_pipelines_running == 1
    # The next cleanup moves attempt 2, releasing its slot once.
    assert run_id in runs_reap_orphaned(now=NOW + timedelta(minutes=31)).requeued
    assert run_row(run_id).retry_count == 2
    counters = usage(tenant_id, NOW.date())
    assert counters is not None
    assert counters.concurrent_pipelines_running == 0


def test_it_leaves_a_claim_that_recorded_its_slot_after_the_cleanup_read_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant_id = tenant_with_subscription(concurrent_limit=10)
    run_id = enqueue(tenant_id)
    claimed_entry, cleanup_read = threading.Event(), threading.Event()
    admit, read = run_claims.quota_admit_many, run_queue._orphan_candidates
    claims: list[object] = []

    def admit_once_the_cleanup_has_read(**kwargs: object) -> object:
        claimed_entry.set()
        cleanup_read.wait(timeout=300)
        return admit(**kwargs)  # type: ignore[arg-type]

    def read_then_let_the_claim_finish(**kwargs: object) -> object:
        found = read(**kwargs)  # type: ignore[arg-type]
        cleanup_read.set()
        claimer.join(timeout=300)
        return found

    # A slow claim: its 10 s lease runs out during admission, while a cleanup reads its entry (no slot
    # recorded yet); then the claim records its slot, and only then does the cleanup's UPDATE run.
    claimer = threading.Thread(
        target=lambda: claims.append(
            run_claim(worker_id="slow", tenant_id=tenant_id, lease_seconds=10, now=NOW)
        )
    )
    monkeypatch.setattr(run_claims, "quota_admit_many", admit_once_the_cleanup_has_read)
    monkeypatch.setattr(run_queue, "_orphan_candidates", read_then_let_the_claim_finish)
    claimer.start()
    assert claimed_entry.wait(timeout=300)

    report = runs_reap_orphaned(now=NOW + timedelta(minutes=1))

    assert len(claims) == 1
    assert claims[0] is not None
    # Moving it now would leak the slot just recorded (the cleanup read none to release): left alone.
    assert run_id not in report.requeued
    held = entry(run_id)
    assert (held.state, held.lease_owner, held.usage_date) == (RunState.RUNNING, "slow", NOW.date())
    monkeypatch.setattr(run_queue, "_orphan_candidates", read)
    assert run_id in runs_reap_orphaned(now=NOW + timedelta(minutes=2)).requeued
    counters = usage(tenant_id, NOW.date())
    assert counters is not None
    assert counters.concurrent_pipelines_running == 0
