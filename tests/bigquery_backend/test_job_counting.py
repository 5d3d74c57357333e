"""The gateway's job counter: what each repository call costs, nested and across threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import InvalidInput
from bigquery_backend.repository import Add, Repository
from tests.bigquery_backend.widgets import Widget, make_widget


@pytest.fixture
def two_widgets(widgets: Repository[Widget]) -> Repository[Widget]:
    widgets.insert(make_widget("a", quota=5), make_widget("b", quota=5))
    return widgets


def insert_three(r: Repository[Widget]) -> int:
    return r.insert(make_widget("c"), make_widget("d"), make_widget("e"))


CALLS: list[Any] = [
    pytest.param(lambda r: r.get("a"), 1, id="get"),
    pytest.param(lambda r: r.find("missing"), 1, id="find"),
    pytest.param(
        lambda r: r.list(filters={"used__gte": 0}, order_by=["-name"], limit=1, offset=1), 1, id="list"
    ),
    pytest.param(lambda r: r.count(filters={"kind": "GEAR"}), 1, id="count"),
    pytest.param(lambda r: r.page(limit=1), 2, id="page"),
    pytest.param(insert_three, 1, id="insert-3-rows"),
    pytest.param(lambda r: r.update("a", {"name": "x", "used": 2}), 1, id="update"),
    pytest.param(lambda r: r.update_where({"used": Add(1)}, filters={"quota__gt": 0}), 1, id="update-where"),
    pytest.param(lambda r: r.upsert(make_widget("a", name="merged")), 1, id="upsert"),
    pytest.param(lambda r: r.delete("a"), 1, id="delete"),
    pytest.param(lambda r: r.delete_where(filters={"kind": "GEAR"}), 1, id="delete-where"),
]


@pytest.mark.parametrize(("call", "jobs"), CALLS)
def test_it_issues_the_expected_number_of_jobs_per_call(
    gateway: BigQueryGateway,
    two_widgets: Repository[Widget],
    call: Callable[[Repository[Widget]], Any],
    jobs: int,
) -> None:
    with gateway.count_jobs() as counter:
        call(two_widgets)
    assert counter.jobs == jobs
    assert counter.api_calls == 0
    assert len(counter.statements) == jobs


def test_it_records_the_statements_it_ran(gateway: BigQueryGateway, two_widgets: Repository[Widget]) -> None:
    with gateway.count_jobs() as counter:
        two_widgets.page(limit=1)
    assert counter.statements[0].startswith("SELECT ")
    assert "COUNT(*)" in counter.statements[1]


def test_it_counts_metadata_calls_apart_from_jobs(gateway: BigQueryGateway, dataset: str) -> None:
    with gateway.count_jobs() as counter:
        gateway.get_dataset(dataset)
        gateway.list_table_ids(dataset)
    assert (counter.jobs, counter.api_calls) == (0, 2)


def test_it_nests_counters(gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as outer:
        gateway.query("SELECT 1 AS n")
        with gateway.count_jobs() as inner:
            gateway.query("SELECT 2 AS n")
        gateway.query("SELECT 3 AS n")
    gateway.query("SELECT 4 AS n")

    assert outer.jobs == 3
    assert inner.jobs == 1
    assert inner.statements == ["SELECT 2 AS n"]
    assert outer.statements == ["SELECT 1 AS n", "SELECT 2 AS n", "SELECT 3 AS n"]


def test_it_counts_jobs_from_other_threads(gateway: BigQueryGateway) -> None:
    threads_seen: set[int] = set()

    def run(n: int) -> int:
        threads_seen.add(threading.get_ident())
        return gateway.query(f"SELECT {n} AS n").rows[0]["n"]

    with gateway.count_jobs() as counter, ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(8)))

    assert results == list(range(8))
    assert counter.jobs == 8
    assert sorted(counter.statements) == sorted(f"SELECT {n} AS n" for n in range(8))
    assert threading.get_ident() not in threads_seen


def test_it_counts_overlapping_blocks_of_different_threads_in_both(gateway: BigQueryGateway) -> None:
    started = threading.Barrier(2)
    counters = {}

    def worker(name: str) -> None:
        with gateway.count_jobs() as counter:
            started.wait(timeout=10)
            gateway.query(f"SELECT '{name}' AS who")
            started.wait(timeout=10)
        counters[name] = counter

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # A counter sees every job issued while it is open, whichever thread issued it.
    assert counters["one"].jobs == counters["two"].jobs == 2


def test_it_counts_a_failed_job(gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput):
        gateway.query("SELEC 1")
    assert counter.jobs == 1


def test_it_keeps_running_totals(gateway: BigQueryGateway) -> None:
    before = gateway.totals.jobs
    gateway.query("SELECT 1 AS n")
    gateway.query("SELECT 2 AS n")
    assert gateway.totals.jobs == before + 2


def test_it_stops_counting_when_the_block_ends(gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as counter:
        gateway.query("SELECT 1 AS n")
    gateway.query("SELECT 2 AS n")
    assert counter.jobs == 1
