"""A claimed run's life: completion into the tenant's dataset, failure and backoff, cancel, requeue, reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bigquery_backend.client import get_gateway
from bigquery_backend.exceptions import BackendUnavailable
from tenants_app.models import AuditLogEntry, RunState, TenantDqResult, TenantPipelineRun, TenantStepLog
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services import run_actions, run_report_batches, run_reports
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.datasets import central_dataset
from tenants_app.services.errors import (
    DoesNotExist,
    LeaseLost,
    RunStateConflict,
    ServiceUnavailable,
    ValidationFailed,
)
from tenants_app.services.run_actions import run_cancel, run_requeue
from tenants_app.services.run_claims import run_claim
from tenants_app.services.run_queue import run_heartbeat
from tenants_app.services.run_reports import pipeline_logging_id, run_complete, run_fail
from tenants_app.services.run_selectors import queue_list, run_get, run_list
from tenants_app.services.run_tenant_rows import tenant_rows_flush
from tests.tenants_app.services.quota_factories import tenant_with_subscription, usage
from tests.tenants_app.services.run_factories import enqueue, entry, run_row

pytestmark = pytest.mark.usefixtures("central")

NOW = datetime(2031, 3, 18, 12, 0, tzinfo=UTC)
DAY = NOW.date()


def claimed_tenant(*, max_retries: int = 3, parameters: object = None) -> tuple[str, str]:
    """A tenant with its own dataset and one run claimed by worker `w1` at NOW."""
    tenant_id = tenant_with_subscription(concurrent_limit=3)
    bigquery_bootstrap(tenant_id=tenant_id)
    run_id = enqueue(tenant_id, max_retries=max_retries, parameters=parameters)
    assert run_claim(worker_id="w1", tenant_id=tenant_id, now=NOW) is not None
    return tenant_id, run_id


def steps() -> list[dict[str, object]]:
    return [
        {
            "step_index": 0,
            "step_name": "extract",
            "step_type": "query",
            "status": "SUCCEEDED",
            "start_time": NOW,
            "end_time": NOW + timedelta(seconds=3),
            "rows_processed": 120,
            "metadata": {"bytes_billed": 1024},
        },
        {
            "step_index": 1,
            "step_name": "load",
            "step_type": "load",
            "status": "SUCCEEDED",
            "start_time": NOW + timedelta(seconds=3),
            "end_time": NOW + timedelta(seconds=5),
        },
    ]


def checks() -> list[dict[str, object]]:
    return [
        {
            "target_table": "billing.daily_costs",
            "dq_config_id": "dq_costs",
            "executed_at": NOW + timedelta(seconds=6),
            "expectations_passed": 9,
            "expectations_failed": 1,
            "failed_expectations": [{"expectation": "not_null", "column": "sku"}],
            "overall_status": "WARNING",
        }
    ]


def test_it_writes_a_completed_run_into_the_tenants_own_dataset() -> None:
    tenant_id, run_id = claimed_tenant(parameters={"region": "eu", "client_secret": "hidden"})

    run = run_complete(
        run_id=run_id,
        worker_id="w1",
        status="SUCCEEDED",
        started_at=NOW,
        ended_at=NOW + timedelta(seconds=7),
        step_logs=steps(),
        dq_results=checks(),
        run_metadata={"rows": 120},
        now=NOW + timedelta(seconds=8),
    )

    logging_id = pipeline_logging_id(run_id, 1)
    assert (run.state, run.pipeline_logging_id, run.completed_at) == (
        RunState.SUCCEEDED,
        logging_id,
        NOW + timedelta(seconds=8),
    )
    tenant_rows_flush()  # what `run_periodic` does
    execution = tenant_repository(TenantPipelineRun, tenant_id).get(logging_id)
    assert (execution.status, execution.duration_ms, execution.run_metadata) == (
        "SUCCEEDED",
        7000,
        {"rows": 120},
    )
    # The config's secret-named parameter never reaches the GenAI-visible dataset.
    assert execution.parameters == {"region": "eu"}
    logged = tenant_repository(TenantStepLog, tenant_id).list(order_by=("step_index",))
    assert [(s.step_name, s.pipeline_logging_id, s.duration_ms) for s in logged] == [
        ("extract", logging_id, 3000),
        ("load", logging_id, 2000),
    ]
    results = tenant_repository(TenantDqResult, tenant_id).list()
    assert [(r.overall_status, r.expectations_failed) for r in results] == [("WARNING", 1)]
    assert entry(run_id).state == RunState.SUCCEEDED
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.concurrent_pipelines_running, counters.pipelines_succeeded_today) == (0, 1)
    # Nothing of the run's logs lands in the central dataset: it has no such tables at all.
    central_tables = set(get_gateway().list_table_ids(central_dataset()))
    assert not central_tables & {"tenant_pipeline_runs", "tenant_step_logs", "tenant_dq_results"}


def test_it_answers_a_repeated_completion_without_counting_it_twice() -> None:
    tenant_id, run_id = claimed_tenant()
    body = {"run_id": run_id, "worker_id": "w1", "status": "SUCCEEDED", "step_logs": steps(), "now": NOW}

    first = run_complete(**body)  # type: ignore[arg-type]
    again = run_complete(**body)  # type: ignore[arg-type]

    assert (again.state, again.completed_at) == (first.state, first.completed_at)
    tenant_rows_flush()
    assert len(tenant_repository(TenantStepLog, tenant_id).list()) == 2
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.pipelines_succeeded_today == 1


def test_it_refuses_invalid_or_secret_looking_completions_and_writes_nothing() -> None:
    tenant_id, run_id = claimed_tenant()
    bad_steps = steps()
    bad_steps[1]["step_index"] = 0
    bad_steps[0]["metadata"] = {"aws_secret_access_key": "x"}

    with pytest.raises(ValidationFailed) as refused:
        run_complete(
            run_id=run_id,
            worker_id="w1",
            status="DONE",
            step_logs=bad_steps,
            run_metadata={"note": "key cvg_live_" + "a" * 40},
            now=NOW,
        )

    assert set(refused.value.errors) >= {
        "status",
        "step_logs[1].step_index",
        "step_logs[0].metadata",
        "run_metadata",
    }
    assert "cvg_live_" not in str(refused.value.errors)
    assert entry(run_id).state == RunState.RUNNING
    assert tenant_repository(TenantStepLog, tenant_id).list() == []


def test_it_redacts_connection_strings_and_bearer_tokens_from_a_workers_error() -> None:
    # The error text is copied into the tenant's GenAI-visible run row.
    _, run_id = claimed_tenant(max_retries=0)
    error = (
        "connect postgres://etl:hunter2-pass@db.example.com/x failed; "
        "sent Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl"
    )

    failed = run_fail(run_id=run_id, worker_id="w1", error=error, now=NOW)

    assert failed.error_message is not None
    assert "connect postgres://etl:" in failed.error_message
    assert "hunter2" not in failed.error_message
    assert "eyJ" not in failed.error_message


def test_it_retries_a_failed_attempt_with_exponential_backoff_then_fails_it(settings: object) -> None:
    settings.PIPELINE_RETRY_BACKOFF_SECONDS = 60  # type: ignore[attr-defined]
    settings.PIPELINE_RETRY_BACKOFF_MAX_SECONDS = 3600  # type: ignore[attr-defined]
    tenant_id, run_id = claimed_tenant(max_retries=2)

    first = run_fail(run_id=run_id, worker_id="w1", error="timeout AKIAABCDEFGHIJKLMNOP", now=NOW)

    assert (first.state, first.retry_count) == (RunState.QUEUED, 1)
    assert "AKIA" not in (first.error_message or "")
    assert entry(run_id).available_at == NOW + timedelta(seconds=60)
    assert run_claim(worker_id="w2", tenant_id=tenant_id, now=NOW + timedelta(seconds=59)) is None
    second_at = NOW + timedelta(seconds=61)
    assert run_claim(worker_id="w2", tenant_id=tenant_id, now=second_at) is not None

    second = run_fail(run_id=run_id, worker_id="w2", error="timeout", now=second_at)

    assert (second.state, second.retry_count) == (RunState.QUEUED, 2)
    assert entry(run_id).available_at == second_at + timedelta(seconds=120)
    third_at = second_at + timedelta(seconds=121)
    assert run_claim(worker_id="w3", tenant_id=tenant_id, now=third_at) is not None

    last = run_fail(run_id=run_id, worker_id="w3", error="timeout", now=third_at)

    assert (last.state, last.retry_count) == (RunState.FAILED, 2)
    assert entry(run_id).state == RunState.FAILED
    counters = usage(tenant_id, DAY)
    assert counters is not None
    # Each attempt was admitted, released and counted as failed exactly once.
    assert (counters.pipelines_run_today, counters.pipelines_failed_today) == (3, 3)
    assert counters.concurrent_pipelines_running == 0
    tenant_rows_flush()
    executions = tenant_repository(TenantPipelineRun, tenant_id).list()
    assert sorted(e.pipeline_logging_id for e in executions) == [
        pipeline_logging_id(run_id, n) for n in (1, 2, 3)
    ]
    # A repeated report of the last failure is answered, not counted again.
    assert run_fail(run_id=run_id, worker_id="w3", error="timeout", now=third_at).state == RunState.FAILED
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.pipelines_failed_today == 3


def test_it_caps_the_backoff(settings: object) -> None:
    from tenants_app.services.run_reports import retry_backoff

    settings.PIPELINE_RETRY_BACKOFF_SECONDS = 60  # type: ignore[attr-defined]
    settings.PIPELINE_RETRY_BACKOFF_MAX_SECONDS = 300  # type: ignore[attr-defined]

    assert [retry_backoff(n).total_seconds() for n in range(5)] == [60, 120, 240, 300, 300]


def test_it_cancels_a_queued_run_and_audits_it() -> None:
    tenant_id = tenant_with_subscription()
    run_id = enqueue(tenant_id)

    run = run_cancel(tenant_id=tenant_id, run_id=run_id, actor="user:operator", reason="duplicate")

    assert run.state == RunState.CANCELLED
    assert entry(run_id).state == RunState.CANCELLED
    assert run_claim(worker_id="w", tenant_id=tenant_id, now=NOW) is None
    trail = central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id, "action": "run.cancel"})
    assert [(e.actor, e.target_id, e.after_values) for e in trail] == [
        ("user:operator", run_id, {"state": "CANCELLED", "reason": "duplicate"})
    ]
    with pytest.raises(RunStateConflict):
        run_cancel(tenant_id=tenant_id, run_id=run_id, actor="user:operator")


def test_it_cancels_a_running_run_releasing_its_slot_and_the_worker_loses_its_lease() -> None:
    tenant_id, run_id = claimed_tenant()

    run_cancel(tenant_id=tenant_id, run_id=run_id, actor="user:operator")

    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.concurrent_pipelines_running == 0
    with pytest.raises(LeaseLost):
        run_heartbeat(run_id=run_id, worker_id="w1", now=NOW)
    with pytest.raises(LeaseLost):
        run_complete(run_id=run_id, worker_id="w1", status="SUCCEEDED", now=NOW)


def test_it_requeues_a_failed_run_with_retries_reset_and_audits_it() -> None:
    tenant_id, run_id = claimed_tenant(max_retries=0)
    run_fail(run_id=run_id, worker_id="w1", error="bad input", now=NOW)
    assert run_row(run_id).state == RunState.FAILED

    run = run_requeue(tenant_id=tenant_id, run_id=run_id, actor="user:operator")

    assert (run.state, run.retry_count) == (RunState.QUEUED, 0)
    claimed = run_claim(worker_id="w2", tenant_id=tenant_id, now=NOW)
    assert claimed is not None
    assert (claimed.run_id, claimed.attempt) == (run_id, 2)
    actions = [e.action for e in central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id})]
    assert actions == ["run.requeue"]
    with pytest.raises(RunStateConflict):
        run_requeue(tenant_id=tenant_id, run_id=run_id, actor="user:operator")


def test_it_hides_runs_of_other_tenants() -> None:
    owner, run_id = claimed_tenant()
    stranger = tenant_with_subscription()

    with pytest.raises(DoesNotExist):
        run_heartbeat(run_id=run_id, worker_id="w1", tenant_id=stranger, now=NOW)
    with pytest.raises(DoesNotExist):
        run_get(tenant_id=stranger, run_id=run_id)
    with pytest.raises(DoesNotExist):
        run_cancel(tenant_id=stranger, run_id=run_id, actor="apikey:k")
    assert run_get(tenant_id=owner, run_id=run_id).run.run_id == run_id


def test_it_lists_runs_and_the_queue_with_filters_and_shows_a_runs_logs() -> None:
    tenant_id, done = claimed_tenant()
    run_complete(
        run_id=done, worker_id="w1", status="SUCCEEDED", step_logs=steps(), dq_results=checks(), now=NOW
    )
    waiting = enqueue(tenant_id, scheduled_time=datetime(2030, 5, 1, tzinfo=UTC))

    succeeded = run_list(tenant_id=tenant_id, state=RunState.SUCCEEDED)
    since = run_list(tenant_id=tenant_id, since=datetime(2030, 1, 1, tzinfo=UTC))
    queued = queue_list(tenant_id=tenant_id, state=RunState.QUEUED)
    detail = run_get(tenant_id=tenant_id, run_id=done)

    assert [r.run_id for r in succeeded.items] == [done]
    assert [r.run_id for r in since.items] == [waiting]
    assert ([e.run_id for e in queued.items], queued.total) == ([waiting], 1)
    assert [s.step_name for s in detail.step_logs] == ["extract", "load"]
    assert [d.dq_config_id for d in detail.dq_results] == ["dq_costs"]
    assert [e.status for e in detail.executions] == ["SUCCEEDED"]
    with pytest.raises(ValidationFailed):
        run_list(tenant_id=tenant_id, state="DONE")


def test_it_treats_a_completion_with_failed_as_final() -> None:
    tenant_id, run_id = claimed_tenant(max_retries=3)

    run = run_complete(run_id=run_id, worker_id="w1", status="FAILED", error="3 expectations failed", now=NOW)

    assert (run.state, run.retry_count, run.error_message) == (RunState.FAILED, 0, "3 expectations failed")
    assert entry(run_id).state == RunState.FAILED
    assert run_claim(worker_id="w2", tenant_id=tenant_id, now=NOW + timedelta(hours=1)) is None
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.pipelines_failed_today, counters.concurrent_pipelines_running) == (1, 0)


class _RunRowsFailingOnce:
    """The scheduled-runs repository, whose first UPDATE fails as if BigQuery were briefly unavailable."""

    def __init__(self, repository: object, failures: list[str]) -> None:
        self._repository = repository
        self._failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self._repository, name)

    def update_where(self, values: object, *, filters: object) -> int:
        if not self._failures:
            self._failures.append("failed")
            raise BackendUnavailable("BigQuery blip")
        return self._repository.update_where(values, filters=filters)  # type: ignore[attr-defined]

    def update_many(self, changes: object, **options: object) -> int:
        if not self._failures:
            self._failures.append("failed")
            raise BackendUnavailable("BigQuery blip")
        return self._repository.update_many(changes, **options)  # type: ignore[attr-defined]


def fail_the_next_run_row_update(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """After the queue entry's compare-and-set won, the scheduled run's UPDATE fails (once)."""
    failures: list[str] = []
    rows = run_reports.scheduled_runs_repository
    for module in (run_reports, run_report_batches, run_actions):
        monkeypatch.setattr(
            module, "scheduled_runs_repository", lambda: _RunRowsFailingOnce(rows(), failures)
        )
    return failures


def test_it_frees_the_slot_of_a_completion_whose_run_row_update_failed_and_repairs_it_on_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant_id, run_id = claimed_tenant()
    failures = fail_the_next_run_row_update(monkeypatch)

    with pytest.raises(ServiceUnavailable):
        run_complete(run_id=run_id, worker_id="w1", status="SUCCEEDED", now=NOW)
    assert failures == ["failed"]
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.concurrent_pipelines_running, counters.pipelines_succeeded_today) == (0, 1)

    run = run_complete(run_id=run_id, worker_id="w1", status="SUCCEEDED", now=NOW)

    assert (run.state, run.pipeline_logging_id) == (RunState.SUCCEEDED, pipeline_logging_id(run_id, 1))
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.concurrent_pipelines_running, counters.pipelines_succeeded_today) == (0, 1)


def test_it_frees_the_slot_of_a_failure_whose_run_row_update_failed_and_repairs_it_on_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant_id, run_id = claimed_tenant(max_retries=3)
    fail_the_next_run_row_update(monkeypatch)

    with pytest.raises(ServiceUnavailable):
        run_fail(run_id=run_id, worker_id="w1", error="upstream timeout", now=NOW)
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.concurrent_pipelines_running, counters.pipelines_failed_today) == (0, 1)

    run = run_fail(run_id=run_id, worker_id="w1", error="upstream timeout", now=NOW)
    again = run_fail(run_id=run_id, worker_id="w1", error="upstream timeout", now=NOW)

    assert (run.state, run.retry_count, run.error_message) == (RunState.QUEUED, 1, "upstream timeout")
    assert (again.state, again.retry_count) == (RunState.QUEUED, 1)
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert (counters.concurrent_pipelines_running, counters.pipelines_failed_today) == (0, 1)


def test_it_frees_the_slot_of_a_cancel_whose_run_row_update_failed_and_finishes_it_on_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant_id, run_id = claimed_tenant()
    fail_the_next_run_row_update(monkeypatch)

    with pytest.raises(ServiceUnavailable):
        run_cancel(tenant_id=tenant_id, run_id=run_id, actor="user:operator", reason="wrong day")
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.concurrent_pipelines_running == 0

    run = run_cancel(tenant_id=tenant_id, run_id=run_id, actor="user:operator", reason="wrong day")

    assert (run.state, run.error_message) == (RunState.CANCELLED, "Cancelled: wrong day")
    trail = central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id, "action": "run.cancel"})
    assert [(e.before_values, e.after_values) for e in trail] == [
        ({"state": "RUNNING"}, {"state": "CANCELLED", "reason": "wrong day"})
    ]
    counters = usage(tenant_id, DAY)
    assert counters is not None
    assert counters.concurrent_pipelines_running == 0
    with pytest.raises(RunStateConflict):
        run_cancel(tenant_id=tenant_id, run_id=run_id, actor="user:operator")


def nested(depth: int) -> object:
    """A JSON document `depth` containers deep."""
    value: object = {"rows": 1}
    for level in range(depth - 1):
        value = [value] if level % 2 else {"level": value}
    return value


def test_it_refuses_numbers_bigquery_cannot_hold_with_field_errors() -> None:
    # Each would fail the statement that commits every report of the tick, not only this one.
    _, run_id = claimed_tenant()
    bad_steps = steps()
    bad_steps[0].update(rows_processed=2**63, duration_ms="fast", metadata={"ratio": float("nan")})
    bad_steps[1]["step_index"] = 2**64

    with pytest.raises(ValidationFailed) as refused:
        run_complete(
            run_id=run_id,
            worker_id="w1",
            status="SUCCEEDED",
            run_metadata={"rows": [1, -(2**63) - 1], "speed": float("inf")},
            step_logs=bad_steps,
            now=NOW,
        )

    whole = "A whole number from 0 to 9223372036854775807."
    numbers = "Numbers must be finite, and whole numbers within 64 bits."
    assert refused.value.errors == {
        "run_metadata": [numbers],
        "step_logs[0].rows_processed": [whole],
        "step_logs[0].duration_ms": [whole],
        "step_logs[0].metadata": [numbers],
        "step_logs[1].step_index": [whole],
    }
    assert entry(run_id).state == RunState.RUNNING
    run = run_complete(
        run_id=run_id, worker_id="w1", status="SUCCEEDED", run_metadata={"rows": 2**63 - 1}, now=NOW
    )
    assert run.state == RunState.SUCCEEDED


def test_it_refuses_a_report_larger_than_a_tick_may_carry_naming_its_largest_part() -> None:
    _, run_id = claimed_tenant()
    # Each result within its own limit (64 KiB), together past the report's (2 MiB).
    failed = {"rows": ["x" * 1000] * 60}
    results = [
        {
            "target_table": "billing.daily_costs",
            "dq_config_id": f"dq_{index}",
            "executed_at": NOW,
            "expectations_passed": 0,
            "expectations_failed": 1,
            "overall_status": "FAIL",
            "failed_expectations": failed,
        }
        for index in range(40)
    ]

    with pytest.raises(ValidationFailed) as refused:
        run_complete(run_id=run_id, worker_id="w1", status="SUCCEEDED", dq_results=results, now=NOW)

    assert list(refused.value.errors) == ["dq_results"]
    assert "at most 2 MiB" in refused.value.errors["dq_results"][0]
    assert entry(run_id).state == RunState.RUNNING
    run = run_complete(run_id=run_id, worker_id="w1", status="SUCCEEDED", dq_results=results[:20], now=NOW)
    assert run.state == RunState.SUCCEEDED


def test_it_counts_a_reports_size_as_sent_with_non_ascii_text_escaped() -> None:
    _, run_id = claimed_tenant()
    # 400,000 characters, each sent as a 6-byte \\uXXXX escape: 2.4 MB on the wire.
    many = [
        {**steps()[0], "step_index": index, "status": "FAILED", "error_message": "錯" * 10_000}
        for index in range(40)
    ]

    with pytest.raises(ValidationFailed) as refused:
        run_complete(run_id=run_id, worker_id="w1", status="FAILED", step_logs=many, now=NOW)

    assert list(refused.value.errors) == ["step_logs"]
    assert entry(run_id).state == RunState.RUNNING


def test_it_refuses_json_nested_too_deep_with_a_field_error() -> None:
    tenant_id, run_id = claimed_tenant()
    deep_step = steps()
    deep_step[0]["metadata"] = nested(11)

    with pytest.raises(ValidationFailed) as refused:
        run_complete(
            run_id=run_id,
            worker_id="w1",
            status="SUCCEEDED",
            run_metadata=nested(800),
            step_logs=deep_step,
            now=NOW,
        )

    assert refused.value.errors == {
        "run_metadata": ["Nest at most 10 levels deep."],
        "step_logs[0].metadata": ["Nest at most 10 levels deep."],
    }
    assert entry(run_id).state == RunState.RUNNING
    run = run_complete(run_id=run_id, worker_id="w1", status="SUCCEEDED", run_metadata=nested(10), now=NOW)
    assert run.state == RunState.SUCCEEDED
    tenant_rows_flush()
    execution = tenant_repository(TenantPipelineRun, tenant_id).get(pipeline_logging_id(run_id, 1))
    assert execution.run_metadata == nested(10)
