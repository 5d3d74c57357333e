"""Run reads: scheduled runs, queue entries in claim order, and one run with what its attempts wrote."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bigquery_backend.exceptions import NotFound as BackendNotFound
from bigquery_backend.repository import Page
from tenants_app.models import (
    RunState,
    TenantDqResult,
    TenantPipelineExecutionQueue,
    TenantPipelineRun,
    TenantScheduledPipelineRun,
    TenantStepLog,
)
from tenants_app.repositories import tenant_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.run_common import (
    MAX_PAGE_SIZE,
    RUN_ID_MAX,
    queue_repository,
    scheduled_runs_repository,
)
from tenants_app.services.run_reports import pipeline_logging_id
from tenants_app.services.run_tenant_rows import tenant_rows_merged, tenant_rows_pending


@dataclass(frozen=True)
class RunDetail:
    """A run, its queue entry, and what its attempts wrote into the tenant's dataset."""

    run: TenantScheduledPipelineRun
    entry: TenantPipelineExecutionQueue | None
    executions: list[TenantPipelineRun]
    step_logs: list[TenantStepLog]
    dq_results: list[TenantDqResult]


def run_list(
    *,
    tenant_id: str | None,
    state: str | None = None,
    config_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[TenantScheduledPipelineRun]:
    """Scheduled runs, newest slot first, with the total: two BigQuery jobs."""
    errors = _page_errors(limit, offset)
    if state is not None and state not in RunState.values:
        errors["state"] = [f"Choose one of {', '.join(RunState.values)}."]
    if since is not None and until is not None and since > until:
        errors["until"] = ["Must not be before 'since'."]
    if errors:
        raise ValidationFailed("invalid run filter", errors=errors)
    filters: dict[str, Any] = {}
    for name, value in (("tenant_id", tenant_id), ("state", state), ("config_id", config_id)):
        if value:
            filters[name] = value
    if since is not None:
        filters["scheduled_time__gte"] = since
    if until is not None:
        filters["scheduled_time__lt"] = until
    with bigquery_errors_translated():
        return scheduled_runs_repository().page(
            filters=filters, order_by=("-scheduled_time",), limit=limit, offset=offset
        )


def queue_list(
    *, tenant_id: str | None = None, state: str | None = None, limit: int = 50, offset: int = 0
) -> Page[TenantPipelineExecutionQueue]:
    """Queue entries in claim order (priority, then scheduled time), with the total: two jobs."""
    errors = _page_errors(limit, offset)
    if state is not None and state not in RunState.values:
        errors["state"] = [f"Choose one of {', '.join(RunState.values)}."]
    if errors:
        raise ValidationFailed("invalid queue filter", errors=errors)
    filters: dict[str, Any] = {}
    if tenant_id:
        filters["tenant_id"] = tenant_id
    if state:
        filters["state"] = state
    with bigquery_errors_translated():
        return queue_repository().page(
            filters=filters, order_by=("priority", "scheduled_time"), limit=limit, offset=offset
        )


def run_get(*, tenant_id: str, run_id: str) -> RunDetail:
    """One run with its queue entry, and each attempt's record, step logs and DQ results."""
    if len(run_id) > RUN_ID_MAX:
        raise DoesNotExist(f"run {run_id!r} does not exist")
    with bigquery_errors_translated():
        runs = scheduled_runs_repository().list(filters={"run_id": run_id, "tenant_id": tenant_id}, limit=1)
        if not runs:
            raise DoesNotExist(f"run {run_id!r} does not exist")
        run = runs[0]
        entry = queue_repository().find(run_id)
        attempts = max(entry.attempt or 0, 1) if entry is not None else 1
        logging_ids = [pipeline_logging_id(run_id, number) for number in range(1, attempts + 1)]
        if run.pipeline_logging_id and run.pipeline_logging_id not in logging_ids:
            logging_ids.append(run.pipeline_logging_id)
        try:
            where = {"pipeline_logging_id__in": logging_ids}
            executions = tenant_repository(TenantPipelineRun, tenant_id).list(
                filters=where, order_by=("start_time",)
            )
            steps = tenant_repository(TenantStepLog, tenant_id).list(
                filters=where, order_by=("pipeline_logging_id", "step_index")
            )
            checks = tenant_repository(TenantDqResult, tenant_id).list(
                filters=where, order_by=("pipeline_logging_id", "executed_at")
            )
            # Rows of reports not yet written to the tenant's dataset (run_tenant_rows.py) are on the entry.
            executions, steps, checks = tenant_rows_merged(
                executions=executions, steps=steps, checks=checks, pending=tenant_rows_pending(entry)
            )
        except BackendNotFound:
            # A tenant whose dataset was purged at offboarding: its central rows remain, its logs do not
            # (nor the rows that were on their way there).
            executions, steps, checks = [], [], []
        executions.sort(key=lambda row: row.start_time)
        steps.sort(key=lambda row: (row.pipeline_logging_id, row.step_index))
        checks.sort(key=lambda row: (row.pipeline_logging_id, row.executed_at))
    return RunDetail(run=run, entry=entry, executions=executions, step_logs=steps, dq_results=checks)


def _page_errors(limit: int, offset: int) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not 1 <= limit <= MAX_PAGE_SIZE:
        errors["limit"] = [f"Use 1 to {MAX_PAGE_SIZE}."]
    if offset < 0:
        errors["offset"] = ["Use 0 or more."]
    return errors
