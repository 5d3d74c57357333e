"""Running the catalogue's templates (`pipeline_templates.py`) against a tenant's own dataset.

What the reference worker (`manage.py run_worker`) does with a claimed run: resolve its parameters
through the catalogue, run the template's statements through the BigQuery gateway in the tenant's
dataset, and return what the worker API's completion report takes (step logs, data-quality results,
run metadata, status). Nothing here touches the queue: the worker reports over HTTP.

Outcomes: a template that ran is SUCCEEDED, or FAILED for good (bad parameters, a missing table, a
query BigQuery refused: running it again would fail again). BigQuery unreachable or busy raises
`ExecutionRetryable`, which the worker reports through `/fail`, so the run is retried with backoff.

Off the emulator a template runs as the tenant's own GCP service account (`service_account_gateway`),
whose key the worker fetches for the run it holds: BigQuery then lets the template reach only what
the tenant granted that account, not everything the worker's own identity can read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from google.cloud import bigquery
from google.oauth2 import service_account

from bigquery_backend.client import BigQueryGateway, get_gateway
from bigquery_backend.exceptions import BackendUnavailable, BigQueryError
from bigquery_backend.identifiers import quote_column, quote_table
from tenants_app.pipeline_templates import (
    DATA_QUALITY,
    SQL_TRANSFORM,
    TABLE_PLACEHOLDER,
    template_get,
    template_parameters_resolve,
)
from tenants_app.services.datasets import tenant_dataset
from tenants_app.services.errors import ValidationFailed

SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
MAX_MESSAGE_LENGTH = 2_000

Clock = Callable[[], datetime]


class ExecutionRetryable(Exception):
    """BigQuery could not be reached or stayed busy: the same run may succeed later."""


@dataclass
class Execution:
    """What a finished attempt reports: the body of the worker API's `complete`."""

    status: str
    started_at: datetime
    ended_at: datetime
    step_logs: list[dict[str, Any]] = field(default_factory=list)
    dq_results: list[dict[str, Any]] = field(default_factory=list)
    run_metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class _StepFailed(Exception):
    """A step ended the run for good; its log already says why."""


class _Steps:
    """Step logs as the worker API takes them, timed by the injected clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.logs: list[dict[str, Any]] = []

    @contextmanager
    def step(self, name: str, step_type: str, **metadata: Any) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {
            "step_index": len(self.logs),
            "step_name": name,
            "step_type": step_type,
            "status": SUCCEEDED,
            "start_time": self.clock(),
            "metadata": metadata or None,
        }
        try:
            yield record
        except BackendUnavailable as exc:
            raise ExecutionRetryable(str(exc)) from exc
        except BigQueryError as exc:
            record.update(status=FAILED, error_message=_message(exc))
            raise _StepFailed(record["error_message"]) from exc
        finally:
            record["end_time"] = self.clock()
            self.logs.append(record)


@dataclass
class _Context:
    tenant_id: str
    gateway: BigQueryGateway
    dataset: str
    steps: _Steps

    def table(self, name: str) -> str:
        return quote_table(self.gateway.project, self.dataset, name)


def template_execute(
    *,
    tenant_id: str,
    pipeline_id: str,
    parameters: dict[str, Any] | None,
    clock: Clock = timezone.now,
    gateway: BigQueryGateway | None = None,
) -> Execution:
    """Run one attempt of `pipeline_id` for the tenant; ExecutionRetryable if BigQuery is unavailable.

    `gateway`: the tenant's own (`service_account_gateway`); the process-wide one when not given.
    """
    started = clock()
    template = template_get(pipeline_id)
    if template is None:
        return Execution(
            FAILED, started, clock(), error=f"{pipeline_id!r} is not a template of the catalogue"
        )
    try:
        resolved = template_parameters_resolve(template=template, parameters=parameters)
    except ValidationFailed as exc:
        reasons = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.errors.items())
        return Execution(
            FAILED, started, clock(), error=f"invalid parameters: {reasons}"[:MAX_MESSAGE_LENGTH]
        )
    context = _Context(tenant_id, gateway or get_gateway(), tenant_dataset(tenant_id), _Steps(clock))
    execution = Execution(SUCCEEDED, started, started)
    try:
        _RUNNERS[template.name](context, resolved, execution)
    except _StepFailed as exc:
        execution.status, execution.error = FAILED, str(exc)
    execution.step_logs = context.steps.logs
    execution.ended_at = clock()
    return execution


class CredentialUnusable(Exception):
    """A service-account key google-auth cannot load; the message never quotes the key."""


def service_account_gateway(info: Mapping[str, Any]) -> BigQueryGateway:
    """A gateway acting as the service account of the key file `info`, on the tenants' project.

    The project stays ours (the tenant datasets live there); only the identity is the tenant's.
    """
    try:
        credentials = service_account.Credentials.from_service_account_info(
            dict(info), scopes=["https://www.googleapis.com/auth/bigquery"]
        )
    except (ValueError, TypeError, KeyError) as exc:
        # google-auth's messages name what is wrong, yet a parse error could echo part of the key.
        raise CredentialUnusable(f"the service-account key cannot be loaded ({type(exc).__name__})") from None
    project = settings.BIGQUERY_PROJECT or get_gateway().project
    client = bigquery.Client(project=project, location=settings.BIGQUERY_LOCATION, credentials=credentials)
    return BigQueryGateway(
        client,
        location=settings.BIGQUERY_LOCATION,
        timeout=settings.BIGQUERY_TIMEOUT_SECONDS,
        retry_deadline=settings.BIGQUERY_RETRY_DEADLINE_SECONDS,
    )


# --- sql_transform ------------------------------------------------------------------------------------
def _sql_transform(context: _Context, parameters: dict[str, Any], execution: Execution) -> None:
    destination_name = parameters["destination_table"]
    destination = context.table(destination_name)
    select = _source_select(context, parameters)
    mode = parameters["write_mode"]
    with context.steps.step(f"write {destination_name}", "query", write_mode=mode) as record:
        if mode == "append" and _exists(context, destination_name):
            result = context.gateway.query(f"INSERT INTO {destination} SELECT * FROM (\n{select}\n)")  # noqa: S608 - quoted identifiers
            record["rows_processed"] = result.affected_rows
        else:
            # The query on lines of its own: a trailing `--` comment in it cannot swallow the parenthesis.
            context.gateway.query(f"CREATE OR REPLACE TABLE {destination} AS SELECT * FROM (\n{select}\n)")  # noqa: S608 - quoted identifiers
    with context.steps.step(f"count {destination_name}", "check") as record:
        rows = int(context.gateway.query(f"SELECT COUNT(*) AS n FROM {destination}").rows[0]["n"])  # noqa: S608 - quoted identifiers
        record["rows_processed"] = rows
    execution.run_metadata = {"destination_table": destination_name, "write_mode": mode, "table_rows": rows}


def _source_select(context: _Context, parameters: dict[str, Any]) -> str:
    if "source_table" in parameters:
        return f"SELECT * FROM {context.table(parameters['source_table'])}"  # noqa: S608 - quoted identifiers
    # The catalogue allowed no dotted name in the query: only these placeholders name tables.
    return TABLE_PLACEHOLDER.sub(lambda match: context.table(match.group(1)), parameters["source_query"])


def _exists(context: _Context, table: str) -> bool:
    return table in context.gateway.list_table_ids(context.dataset)


# --- data_quality -------------------------------------------------------------------------------------
def _data_quality(context: _Context, parameters: dict[str, Any], execution: Execution) -> None:
    target_name = parameters["target_table"]
    target = context.table(target_name)
    executed_at = context.steps.clock()
    failed: list[dict[str, Any]] = []
    for index, expectation in enumerate(parameters["expectations"]):
        label = " ".join(str(value) for value in expectation.values())
        with context.steps.step(f"expect {label}", "expectation", **expectation) as record:
            observed, passed, message = _EXPECTATIONS[expectation["type"]](context, target, expectation)
            record["metadata"] = {**expectation, "observed": observed, "passed": passed}
            if not passed:
                record.update(status=FAILED, error_message=message)
                failed.append({"index": index, **expectation, "observed": observed})
    total = len(parameters["expectations"])
    execution.dq_results = [
        {
            "target_table": f"{context.dataset}.{target_name}",
            "dq_config_id": parameters["dq_config_id"],
            "executed_at": executed_at,
            "expectations_passed": total - len(failed),
            "expectations_failed": len(failed),
            "failed_expectations": failed or None,
            "overall_status": "FAIL" if failed else "PASS",
        }
    ]
    execution.run_metadata = {"target_table": target_name, "expectations": total, "failed": len(failed)}
    if failed and parameters["fail_on_error"]:
        execution.status = FAILED
        execution.error = f"{len(failed)} of {total} expectations failed on {target_name}"


def _not_null(context: _Context, target: str, expectation: dict[str, Any]) -> tuple[int, bool, str]:
    column = quote_column(expectation["column"])
    nulls = int(
        context.gateway.query(f"SELECT COUNTIF({column} IS NULL) AS n FROM {target}").rows[0]["n"] or 0  # noqa: S608 - quoted identifiers
    )
    return nulls, nulls == 0, f"{nulls} rows have no {expectation['column']}"


def _unique(context: _Context, target: str, expectation: dict[str, Any]) -> tuple[int, bool, str]:
    column = quote_column(expectation["column"])
    sql = (
        f"SELECT COUNT(*) AS n FROM (SELECT {column} FROM {target} WHERE {column} IS NOT NULL "  # noqa: S608 - quoted identifiers
        f"GROUP BY {column} HAVING COUNT(*) > 1)"
    )
    repeated = int(context.gateway.query(sql).rows[0]["n"])
    return repeated, repeated == 0, f"{repeated} values of {expectation['column']} appear more than once"


def _row_count_between(context: _Context, target: str, expectation: dict[str, Any]) -> tuple[int, bool, str]:
    rows = int(context.gateway.query(f"SELECT COUNT(*) AS n FROM {target}").rows[0]["n"])  # noqa: S608 - quoted identifiers
    low, high = expectation.get("min"), expectation.get("max")
    passed = (low is None or rows >= low) and (high is None or rows <= high)
    return rows, passed, f"{rows} rows, expected between {low} and {high}"


_EXPECTATIONS: dict[str, Callable[[_Context, str, dict[str, Any]], tuple[int, bool, str]]] = {
    "not_null": _not_null,
    "unique": _unique,
    "row_count_between": _row_count_between,
}
_RUNNERS: dict[str, Callable[[_Context, dict[str, Any], Execution], None]] = {
    SQL_TRANSFORM.name: _sql_transform,
    DATA_QUALITY.name: _data_quality,
}


def _message(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE_LENGTH]
