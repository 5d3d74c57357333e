"""The gateway's one retry policy: refusals are retried inside, caller errors never, and a statement
whose answer was lost is waited for, not run twice.

Refusals come from BigQuery's own error bodies: the fault proxy answers them N times
(tests/support/bigquery_faults.py), the realism proxy when a table's DML queue is full
(tests/support/bigquery_realism.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.test import override_settings
from google.api_core import exceptions as google_exceptions

from bigquery_backend.client import BigQueryGateway, get_gateway, is_retryable_refusal
from bigquery_backend.emulator import EmulatorProcess
from bigquery_backend.exceptions import BackendUnavailable, Busy, InvalidInput
from tests.support.bigquery_faults import BigQueryFaultProxy, Fault, ProxiedRequest
from tests.support.bigquery_realism import BigQueryRealismProxy, Latency

RealisticBigQuery = Callable[..., BigQueryRealismProxy]

REFUSALS = [Fault.TOO_MANY_DML, Fault.CONCURRENT_UPDATE]


@pytest.fixture(scope="module")
def proxy(bigquery_emulator: EmulatorProcess) -> Iterator[BigQueryFaultProxy]:
    proxy = BigQueryFaultProxy(bigquery_emulator.url, slow_seconds=1.0).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def through_proxy(proxy: BigQueryFaultProxy) -> Iterator[BigQueryFaultProxy]:
    proxy.heal()
    with override_settings(BIGQUERY_EMULATOR_HOST=proxy.url):
        yield proxy
    proxy.heal()


def counter_table(gateway: BigQueryGateway, dataset: str) -> str:
    table = f"`{gateway.project}.{dataset}.counter`"
    gateway.query(f"CREATE TABLE {table} (id INT64, n INT64)")
    gateway.query(f"INSERT INTO {table} (id, n) VALUES (1, 0)")
    return table


def count_of(gateway: BigQueryGateway, table: str) -> int:
    return int(gateway.query(f"SELECT n FROM {table} WHERE id = 1").rows[0]["n"])


def is_update(request: ProxiedRequest) -> bool:
    return request.statement.startswith("UPDATE")


def job_requests(seen: list[ProxiedRequest]) -> list[ProxiedRequest]:
    return [request for request in seen if request.is_job]


# --- classification ---------------------------------------------------------------------------------
def bigquery_error(status: int, reason: str, message: str) -> google_exceptions.GoogleAPICallError:
    """An error as the library raises it from BigQuery's answer (or from a failed job's status)."""
    return google_exceptions.from_http_status(
        status, message, errors=[{"reason": reason, "message": message}]
    )


# (HTTP status, reason, message) of BigQuery errors and whether each is a refusal that never ran.
BIGQUERY_ERRORS = [
    (400, "resourcesExceeded", "Too many DML statements outstanding against table p:d.t, limit is 20", True),
    (400, "invalidQuery", "Could not serialize access to table p:d.t due to concurrent update", True),
    (400, "invalidQuery", "Transaction is aborted due to concurrent update against table p:d.t", True),
    (403, "rateLimitExceeded", "Exceeded rate limits: too many table update operations", True),
    (400, "jobRateLimitExceeded", "Exceeded rate limits: too many concurrent queries", True),
    (500, "backendError", "Error encountered during execution. Retrying may solve it.", True),
    (500, "internalError", "An internal error occurred", True),
    (400, "invalidQuery", "Syntax error: Unexpected keyword WHERE at [1:8]", False),
    (400, "resourcesExceeded", "Resources exceeded during query execution: out of memory", False),
    (404, "notFound", "Not found: Table p:d.t", False),
    (403, "quotaExceeded", "Quota exceeded: Your project exceeded quota for free query bytes", False),
    # A failed job's unknown reason becomes a 500 in the library: the reason decides, not the class.
    (500, "stopped", "Job execution was cancelled", False),
]


@pytest.mark.parametrize(("status", "reason", "message", "retryable"), BIGQUERY_ERRORS)
def test_it_tells_refusals_that_never_ran_from_caller_errors(
    status: int, reason: str, message: str, retryable: bool
) -> None:
    assert is_retryable_refusal(bigquery_error(status, reason, message)) is retryable


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (google_exceptions.ServiceUnavailable("down"), True),
        (google_exceptions.RetryError("gave up", cause=google_exceptions.TooManyRequests("slow down")), True),
        (google_exceptions.DeadlineExceeded("the outcome is unknown"), False),
        (google_exceptions.RetryError("gave up", cause=requests.exceptions.Timeout("read timed out")), False),
        (requests.exceptions.ConnectionError("refused"), False),
    ],
    ids=["503", "retried-429", "504", "retried-timeout", "connection"],
)
def test_it_retries_5xx_and_429_but_not_unknown_outcomes(error: Exception, retryable: bool) -> None:
    assert is_retryable_refusal(error) is retryable


# --- through the fault proxy ------------------------------------------------------------------------
@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda fault: fault.value)
def test_it_runs_a_refused_statement_again_until_it_succeeds(
    through_proxy: BigQueryFaultProxy, gateway: BigQueryGateway, dataset: str, refusal: Fault
) -> None:
    table = counter_table(gateway, dataset)
    through_proxy.fail(refusal, match=is_update, times=3)

    with through_proxy.recording() as seen:
        result = get_gateway().query(f"UPDATE {table} SET n = n + 1 WHERE id = 1")

    assert result.affected_rows == 1
    assert through_proxy.fired == 3
    updates = [request for request in job_requests(seen) if is_update(request)]
    assert len(updates) == 4
    assert count_of(gateway, table) == 1


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda fault: fault.value)
def test_it_gives_up_with_busy_and_a_retry_hint_once_the_deadline_has_passed(
    through_proxy: BigQueryFaultProxy, gateway: BigQueryGateway, dataset: str, refusal: Fault
) -> None:
    table = counter_table(gateway, dataset)
    through_proxy.fail(refusal, match=is_update)

    with override_settings(BIGQUERY_RETRY_DEADLINE_SECONDS=1.0):
        started = time.monotonic()
        with pytest.raises(Busy) as raised:
            get_gateway().query(f"UPDATE {table} SET n = n + 1 WHERE id = 1")
        seconds = time.monotonic() - started

    assert isinstance(raised.value, BackendUnavailable)
    assert raised.value.retry_after >= 1
    assert through_proxy.fired >= 2, "refused once and not retried"
    assert seconds < 10
    assert count_of(gateway, table) == 0


@pytest.mark.parametrize(
    "statement",
    ["UPDATE {table} SET missing = 1 WHERE id = 1", "SELECT missing FROM {table}"],
    ids=["dml", "select"],
)
def test_it_never_retries_a_genuine_invalid_query(
    through_proxy: BigQueryFaultProxy, gateway: BigQueryGateway, dataset: str, statement: str
) -> None:
    table = counter_table(gateway, dataset)

    with through_proxy.recording() as seen, pytest.raises(InvalidInput):
        get_gateway().query(statement.format(table=table))

    assert len(job_requests(seen)) == 1


# --- through the realism proxy ----------------------------------------------------------------------
def test_it_gets_thirty_concurrent_updates_of_one_table_through_its_queue_limit(
    realistic_bigquery: RealisticBigQuery, gateway: BigQueryGateway, dataset: str
) -> None:
    table = counter_table(gateway, dataset)
    # Each UPDATE takes 0.3 s: long enough that all 30 are outstanding at once even on a loaded
    # machine (at 0.03 s a slow start of the threads let them trickle in and none was refused).
    proxy = realistic_bigquery(scale=0.2)
    name = f"{gateway.project}:{dataset}.counter"
    through = get_gateway()

    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(
            pool.map(lambda _: through.query(f"UPDATE {table} SET n = n + 1 WHERE id = 1"), range(30))
        )

    # BigQuery refused some (more than 22 outstanding); the gateway ran those again, each once.
    assert proxy.refusals()[name]["too_many_dml"] > 0
    assert proxy.lane(name).peak == 2
    assert [result.affected_rows for result in results] == [1] * 30
    assert count_of(gateway, table) == 30


def test_it_waits_for_a_statement_whose_answer_timed_out_instead_of_running_it_twice(
    realistic_bigquery: RealisticBigQuery, gateway: BigQueryGateway, dataset: str
) -> None:
    table = counter_table(gateway, dataset)
    # The UPDATE takes longer than the client waits: the library sends the same request again.
    proxy = realistic_bigquery(latency=Latency(dml=1.5, select=0.0, ddl=0.0, metadata=0.0))

    with override_settings(BIGQUERY_TIMEOUT_SECONDS=0.5):
        result = get_gateway().query(f"UPDATE {table} SET n = n + 1 WHERE id = 1")

    assert result.affected_rows == 1
    assert proxy.duplicates >= 1, "the timed-out request was never sent again"
    assert count_of(gateway, table) == 1
