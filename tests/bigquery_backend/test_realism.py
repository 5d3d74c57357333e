"""The BigQuery realism proxy (tests/support/bigquery_realism.py): latency per kind of call, the per-table
DML limits with BigQuery's own refusals, concurrent-update aborts, job-id uniqueness and the counts.

Statements go through the real BigQuery client. Latency is injected (`sleep`): a recorder to see which
delay each call got, or a gate that keeps statements in their slots until the test has seen the queue.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as google_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from bigquery_backend.client import BigQueryGateway, get_gateway
from tests.support.bigquery_realism import BigQueryRealismProxy, DmlLimits, Latency

RealisticBigQuery = Callable[..., BigQueryRealismProxy]


def still_clock() -> float:
    """A clock that stands still: however long the emulator takes, a statement's whole latency is left,
    so every statement reaches the injected `sleep` (a gate holds it in its slot)."""
    return 0.0


class Gate:
    """An injected `sleep` that holds every statement in its slot until `open()` (or the block's end)."""

    def __init__(self) -> None:
        self._open = threading.Event()

    def __call__(self, seconds: float) -> None:
        assert self._open.wait(30), "the gate was never opened"

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Opened before the pool waits for its statements, even when an assertion failed in between.
        self.open()


def raw_client(proxy: BigQueryRealismProxy, project: str) -> bigquery.Client:
    """The real client with no retries of its own: each refusal reaches the test as BigQuery sent it."""
    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=proxy.url),
    )


def send(proxy: BigQueryRealismProxy, project: str, sql: str) -> Any:
    """One statement through jobs.query; the library's exception instead of raising it."""
    try:
        return (
            raw_client(proxy, project).query_and_wait(sql, retry=None, job_retry=None).num_dml_affected_rows
        )
    except google_exceptions.GoogleAPICallError as exc:
        return exc


def counter_table(gateway: BigQueryGateway, dataset: str) -> str:
    """`project.dataset.counter` with one row (id 1, n 0), created before the proxy is in the way."""
    table = f"`{gateway.project}.{dataset}.counter`"
    gateway.query(f"CREATE TABLE {table} (id INT64, n INT64)")
    gateway.query(f"INSERT INTO {table} (id, n) VALUES (1, 0)")
    return table


def count_of(gateway: BigQueryGateway, table: str) -> int:
    """The counter's value, read past the proxy (`gateway` was made before it)."""
    return int(gateway.query(f"SELECT n FROM {table} WHERE id = 1").rows[0]["n"])


def test_it_delays_each_kind_of_call_by_its_scaled_latency_and_counts_it(
    realistic_bigquery: RealisticBigQuery, dataset: str
) -> None:
    slept: list[float] = []
    latency = Latency(select=0.5, dml=1.5, ddl=1.0, metadata=0.2)
    proxy = realistic_bigquery(latency=latency, scale=0.1, sleep=slept.append, clock=still_clock)
    gateway = get_gateway()
    table = f"`{gateway.project}.{dataset}.t`"
    name = f"{gateway.project}:{dataset}.t"

    gateway.get_dataset(dataset)
    gateway.query(f"CREATE TABLE {table} (id INT64, n INT64)")
    gateway.query(f"INSERT INTO {table} (id, n) VALUES (1, 0)")
    gateway.query(f"UPDATE {table} SET n = n + 1 WHERE id = 1")
    gateway.query(f"MERGE {table} AS t USING (SELECT 1 AS id) AS s ON t.id = s.id WHEN MATCHED THEN DELETE")
    gateway.query(f"SELECT n FROM {table}")

    # Each statement once, however many requests it took (jobs.insert + getQueryResults for writes).
    assert slept == pytest.approx([0.02, 0.1, 0.15, 0.15, 0.15, 0.05])
    assert proxy.counts() == {
        f"{gateway.project}:{dataset}": {"metadata": 1},
        name: {"ddl": 1, "insert": 1, "update": 1, "merge": 1, "select": 1},
    }
    proxy.reset()
    assert proxy.counts() == {}


def test_it_counts_the_emulators_own_time_in_the_latency(realistic_bigquery: RealisticBigQuery) -> None:
    slept: list[float] = []
    ticks = itertools.count(step=0.2)  # each reading of the clock 0.2 s after the one before
    proxy = realistic_bigquery(latency=Latency(select=0.5), sleep=slept.append, clock=lambda: next(ticks))

    answer = get_gateway().query("SELECT 41 + 1 AS n")

    assert answer.rows[0]["n"] == 42
    # End to end: the 0.2 s the emulator took are part of the SELECT's 0.5 s.
    assert slept == pytest.approx([0.3])
    assert [kinds.get("select") for kinds in proxy.counts().values()] == [1]


def test_it_answers_a_statement_slower_than_its_latency_when_the_emulator_does(
    realistic_bigquery: RealisticBigQuery, gateway: BigQueryGateway, dataset: str
) -> None:
    table = counter_table(gateway, dataset)
    slept: list[float] = []
    ticks = itertools.count(step=2.0)  # the emulator "took" 2 s, past the DML's 1.5 s
    realistic_bigquery(sleep=slept.append, clock=lambda: next(ticks))

    result = get_gateway().query(f"UPDATE {table} SET n = n + 1 WHERE id = 1")

    assert (result.affected_rows, slept) == (1, [])
    assert count_of(gateway, table) == 1


def test_it_runs_two_updates_of_a_table_at_once_queues_twenty_and_refuses_the_rest(
    realistic_bigquery: RealisticBigQuery, gateway: BigQueryGateway, dataset: str
) -> None:
    table = counter_table(gateway, dataset)
    gate = Gate()
    proxy = realistic_bigquery(sleep=gate, clock=still_clock)
    name = f"{gateway.project}:{dataset}.counter"

    with ThreadPoolExecutor(max_workers=30) as pool, gate:
        futures = [
            pool.submit(send, proxy, gateway.project, f"UPDATE {table} SET n = n + 1 WHERE id = 1")
            for _ in range(30)
        ]
        proxy.wait_until(lambda p: p.refusals().get(name, {}).get("too_many_dml") == 8)
        held = proxy.lane(name)
        gate.open()
        outcomes = [future.result(timeout=60) for future in futures]

    assert (held.running, held.pending) == (2, 20)
    assert proxy.lane(name).peak == 2
    refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(refused) == 8
    for error in refused:
        assert isinstance(error, google_exceptions.BadRequest)
        assert error.errors[0]["reason"] == "resourcesExceeded"
        assert error.errors[0]["message"] == (
            "Resources exceeded during query execution: Too many DML statements outstanding against "
            f"table {name}, limit is 20"
        )
    assert outcomes.count(1) == 22
    assert count_of(gateway, table) == 22
    assert proxy.counts()[name] == {"update": 30}


def test_it_queues_inserts_only_after_the_days_free_allowance(
    realistic_bigquery: RealisticBigQuery, gateway: BigQueryGateway, dataset: str
) -> None:
    table = counter_table(gateway, dataset)
    day = [date(2026, 3, 1)]
    gate = Gate()
    limits = DmlLimits(insert_free_per_day=3, insert_running=1, insert_pending=1)
    proxy = realistic_bigquery(sleep=gate, clock=still_clock, limits=limits, today=lambda: day[0])
    name = f"{gateway.project}:{dataset}.counter"
    insert = f"INSERT INTO {table} (id, n) VALUES (2, 0)"

    with ThreadPoolExecutor(max_workers=6) as pool, gate:
        free = [pool.submit(send, proxy, gateway.project, insert) for _ in range(3)]
        proxy.wait_until(lambda p: p.lane(name, "insert").running == 3)  # all free ones at once
        limited = [pool.submit(send, proxy, gateway.project, insert) for _ in range(3)]
        proxy.wait_until(lambda p: p.refusals().get(name, {}).get("too_many_dml") == 2)
        assert proxy.lane(name, "insert").pending == 1
        gate.open()
        outcomes = [future.result(timeout=60) for future in free + limited]
        # A new day, a new allowance: two run at once again although the limit (1) applied yesterday.
        gate.close()
        day[0] += timedelta(days=1)
        next_day = [pool.submit(send, proxy, gateway.project, insert) for _ in range(2)]
        proxy.wait_until(lambda p: p.lane(name, "insert").running == 2)
        gate.open()
        assert [future.result(timeout=60) for future in next_day] == [1, 1]

    # Which of the three later ones waited depends on arrival order: three free, one queued, two refused.
    assert outcomes.count(1) == 4
    refused = [outcome for outcome in outcomes if outcome != 1]
    assert len(refused) == 2
    assert all("limit is 1" in str(outcome) for outcome in refused)


def test_it_aborts_the_later_of_two_overlapping_updates_with_the_concurrent_update_error(
    realistic_bigquery: RealisticBigQuery, gateway: BigQueryGateway, dataset: str
) -> None:
    table = counter_table(gateway, dataset)
    gate = Gate()
    proxy = realistic_bigquery(sleep=gate, clock=still_clock, conflict_probability=1.0, seed=7)
    name = f"{gateway.project}:{dataset}.counter"
    update = f"UPDATE {table} SET n = n + 1 WHERE id = 1"

    with ThreadPoolExecutor(max_workers=2) as pool, gate:
        first = pool.submit(send, proxy, gateway.project, update)
        proxy.wait_until(lambda p: p.lane(name).running == 1)
        later = pool.submit(send, proxy, gateway.project, update)
        proxy.wait_until(lambda p: p.lane(name).running == 2)
        gate.open()
        assert first.result(timeout=60) == 1
        error = later.result(timeout=60)

    assert isinstance(error, google_exceptions.BadRequest)
    assert error.errors[0]["reason"] == "invalidQuery"
    assert (
        error.errors[0]["message"] == f"Could not serialize access to table {name} due to concurrent update"
    )
    assert count_of(gateway, table) == 1
    assert proxy.refusals() == {name: {"concurrent_update": 1}}


def test_it_answers_a_reused_job_id_with_409_instead_of_running_the_statement_again(
    realistic_bigquery: RealisticBigQuery, gateway: BigQueryGateway, dataset: str
) -> None:
    table = counter_table(gateway, dataset)
    proxy = realistic_bigquery(scale=0.0)
    client = raw_client(proxy, gateway.project)
    update = f"UPDATE {table} SET n = n + 1 WHERE id = 1"

    client.query(update, job_id="realism_reused_id", job_retry=None).result()
    with pytest.raises(google_exceptions.Conflict, match="Already Exists: Job"):
        client.query(update, job_id="realism_reused_id", job_retry=None)

    assert count_of(gateway, table) == 1
    assert proxy.duplicates == 1
