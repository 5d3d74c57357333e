"""The gateway reports every job and metadata call to its observers: class, seconds, outcome."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import pytest

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import BigQueryError
from bigquery_backend.observers import (
    add_job_observer,
    observed,
    remove_job_observer,
    statement_class,
)

Seen = list[tuple[str, float, str]]


@pytest.fixture
def seen() -> Iterator[Seen]:
    calls: Seen = []

    def observer(kind: str, seconds: float, outcome: str) -> None:
        calls.append((kind, seconds, outcome))

    add_job_observer(observer)
    yield calls
    remove_job_observer(observer)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", "select"),
        ("  (WITH x AS (SELECT 1) SELECT * FROM x)", "select"),
        ("insert into t (a) values (1)", "dml"),
        ("UPDATE t SET a = 1 WHERE TRUE", "dml"),
        ("MERGE t USING s ON FALSE WHEN NOT MATCHED THEN INSERT ROW", "dml"),
        ("DELETE FROM t WHERE TRUE", "dml"),
        ("CREATE TABLE t (a INT64)", "ddl"),
        ("DROP TABLE t", "ddl"),
        ("CALL p()", "other"),
        ("", "other"),
    ],
)
def test_it_classes_statements_by_their_first_keyword(sql: str, expected: str) -> None:
    assert statement_class(sql) == expected


def test_it_reports_each_statement_with_its_class_and_outcome(
    gateway: BigQueryGateway, dataset: str, seen: Seen
) -> None:
    table = f"`{gateway.table_ref(dataset, 'observed')}`"

    gateway.query(f"CREATE TABLE {table} (a INT64)")
    gateway.query(f"INSERT INTO {table} (a) VALUES (1)")
    gateway.query(f"SELECT a FROM {table}")
    gateway.get_table(dataset, "observed")
    with pytest.raises(BigQueryError):
        gateway.query(f"SELECT a FROM `{gateway.table_ref(dataset, 'missing')}`")

    assert [(kind, outcome) for kind, _, outcome in seen] == [
        ("ddl", "ok"),
        ("dml", "ok"),
        ("select", "ok"),
        ("metadata", "ok"),
        ("select", "error"),
    ]
    assert all(seconds > 0 for _, seconds, _ in seen)


def test_it_reports_a_failed_metadata_call_as_an_error(gateway: BigQueryGateway, seen: Seen) -> None:
    with pytest.raises(BigQueryError):
        gateway.get_dataset("no_such_dataset_here")

    assert [(kind, outcome) for kind, _, outcome in seen] == [("metadata", "error")]


def test_it_keeps_the_statement_s_result_when_an_observer_fails(gateway: BigQueryGateway, seen: Seen) -> None:
    def broken(kind: str, seconds: float, outcome: str) -> None:
        raise RuntimeError("observer bug")

    add_job_observer(broken)
    try:
        result = gateway.query("SELECT 1 AS one")
    finally:
        remove_job_observer(broken)

    assert result.rows == [{"one": 1}]
    assert [kind for kind, _, _ in seen] == ["select"]


def test_it_times_the_block_with_the_clock_it_is_given(seen: Seen) -> None:
    ticks = count(start=10.0, step=2.5)

    with observed("dml", clock=lambda: next(ticks)):
        pass

    assert seen == [("dml", 2.5, "ok")]


def test_it_notifies_no_one_once_removed(gateway: BigQueryGateway) -> None:
    calls: Seen = []

    def observer(kind: str, seconds: float, outcome: str) -> None:
        calls.append((kind, seconds, outcome))

    add_job_observer(observer)
    add_job_observer(observer)  # a second add is a no-op, not a second report
    gateway.query("SELECT 1")
    remove_job_observer(observer)
    gateway.query("SELECT 1")

    assert len(calls) == 1
