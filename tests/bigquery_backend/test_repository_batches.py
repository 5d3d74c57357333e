"""Batched writes: per-row compare-and-set updates in one MERGE (`Repository.update_many`)."""

from __future__ import annotations

import datetime
import threading
from decimal import Decimal

import pytest

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import InvalidInput
from bigquery_backend.repository import (
    MAX_BATCH_BYTES,
    MAX_LIMIT,
    UNCHANGED,
    Now,
    Repository,
    RowChange,
    batched,
)
from tests.bigquery_backend.widgets import Widget, make_widget

UTC = datetime.UTC
T0 = datetime.datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
T1 = datetime.datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_it_sets_each_rows_own_values_in_one_statement(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    widgets.insert(make_widget("a", quantity=1), make_widget("b", quantity=2), make_widget("c", quantity=3))
    changes = [
        RowChange("a", {"quantity": 10, "notes": "first", "touched_at": T0}),
        RowChange("b", {"quantity": 20, "notes": None, "touched_at": T1}),
    ]
    with gateway.count_jobs() as counter:
        matched = widgets.update_many(changes)
    assert (matched, counter.jobs) == (2, 1)
    got = {row.widget_id: row for row in widgets.list()}
    assert (got["a"].quantity, got["a"].notes, got["a"].touched_at) == (10, "first", T0)
    assert (got["b"].quantity, got["b"].notes, got["b"].touched_at) == (20, None, T1)
    assert (got["c"].quantity, got["c"].notes) == (3, None)


def test_it_updates_only_rows_whose_expected_values_still_hold(widgets: Repository[Widget]) -> None:
    widgets.insert(
        make_widget("a", notes=None, touched_at=T0),
        make_widget("b", notes="taken", touched_at=T0),
        make_widget("c", notes=None, touched_at=T1),
    )
    changes = [
        RowChange(key, {"notes": "mine"}, expected={"notes": None, "touched_at": T0})
        for key in ("a", "b", "c")
    ]
    assert widgets.update_many(changes) == 1
    assert {row.widget_id: row.notes for row in widgets.list()} == {"a": "mine", "b": "taken", "c": None}


def test_it_applies_shared_values_to_every_matched_row(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a"), make_widget("b"))
    changes = [RowChange("a", {"quantity": 5}), RowChange("b", {"quantity": 6})]
    assert widgets.update_many(changes, shared={"notes": "batch", "touched_at": Now()}) == 2
    rows = widgets.list()
    assert [row.notes for row in rows] == ["batch", "batch"]
    assert all(row.touched_at is not None for row in rows)


def test_it_round_trips_bytes_dates_and_decimals(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a"), make_widget("b"))
    changes = [
        RowChange(
            "a", {"payload": b"\x00\xff", "due_on": datetime.date(2026, 3, 29), "price": Decimal("1.5")}
        ),
        RowChange("b", {"payload": None, "due_on": None, "price": None}),
    ]
    assert widgets.update_many(changes) == 2
    a, b = widgets.list()
    assert (bytes(a.payload), a.due_on, a.price) == (b"\x00\xff", datetime.date(2026, 3, 29), Decimal("1.5"))
    assert (b.payload, b.due_on, b.price) == (None, None, None)


def test_it_sets_json_values_per_row_and_keeps_those_left_unchanged(widgets: Repository[Widget]) -> None:
    widgets.insert(
        make_widget("a", attributes={"old": 1}), make_widget("b", attributes={"kept": True}), make_widget("c")
    )
    changes = [
        RowChange("a", {"attributes": [{"step": 1, "at": "2026-03-01T09:00:00.000001+00:00"}]}),
        RowChange("b", {"attributes": UNCHANGED}),
        RowChange("c", {"attributes": None}),
    ]
    assert widgets.update_many(changes) == 3
    got = {row.widget_id: row.attributes for row in widgets.list()}
    assert got == {
        "a": [{"step": 1, "at": "2026-03-01T09:00:00.000001+00:00"}],
        "b": {"kept": True},
        "c": None,
    }


def test_it_lets_exactly_one_of_two_racing_batches_win_each_row(widgets: Repository[Widget]) -> None:
    keys = [f"w{i}" for i in range(20)]
    widgets.insert(*(make_widget(key, touched_at=T0) for key in keys))
    barrier = threading.Barrier(2)
    results: dict[str, int] = {}

    def claim(owner: str) -> None:
        changes = [
            RowChange(key, {"notes": owner, "touched_at": T1}, expected={"touched_at": T0}) for key in keys
        ]
        barrier.wait()
        results[owner] = widgets.update_many(changes)

    threads = [threading.Thread(target=claim, args=(owner,)) for owner in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["x"] + results["y"] == len(keys)
    owners = {row.notes for row in widgets.list()}
    assert len(owners) == 1
    assert sorted(results.values()) == [0, len(keys)]


def test_it_does_nothing_for_no_changes(gateway: BigQueryGateway, widgets: Repository[Widget]) -> None:
    with gateway.count_jobs() as counter:
        assert widgets.update_many([]) == 0
    assert counter.jobs == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ([RowChange("a", {"quantity": 1}), RowChange("a", {"quantity": 2})], "changes"),
        ([RowChange("a", {"quantity": 1}), RowChange("b", {"notes": "x"})], "changes"),
        ([RowChange("a", {"widget_id": "z"})], "widget_id"),
        ([RowChange("a", {"tags": ["x"]})], "tags"),
        ([RowChange("a", {"quantity": 1}, expected={"attributes": {}})], "attributes"),
        ([RowChange("a", {"touched_at": datetime.datetime(2026, 1, 1)})], "touched_at"),
        ([RowChange("a", {"quantity": None})], "quantity"),
        ([RowChange("a", {"nope": 1})], "nope"),
    ],
)
def test_it_refuses_malformed_batches_before_any_statement(
    gateway: BigQueryGateway, widgets: Repository[Widget], changes: list[RowChange], field: str
) -> None:
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput) as raised:
        widgets.update_many(changes)
    assert field in raised.value.errors
    assert counter.jobs == 0


def test_it_leaves_a_rows_column_alone_where_its_change_says_unchanged(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", notes="kept", quantity=1), make_widget("b", notes="old", quantity=2))
    changes = [
        RowChange("a", {"quantity": 10, "notes": UNCHANGED}),
        RowChange("b", {"quantity": UNCHANGED, "notes": "new"}),
    ]
    assert widgets.update_many(changes) == 2
    got = {row.widget_id: (row.quantity, row.notes) for row in widgets.list()}
    assert got == {"a": (10, "kept"), "b": (2, "new")}


def test_it_makes_a_group_of_rows_exactly_the_given_ones_in_one_statement(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    widgets.insert(
        make_widget("a1", name="group-a", quantity=1),
        make_widget("a2", name="group-a", quantity=2),
        make_widget("b1", name="group-b", quantity=3),
    )
    rows = [
        make_widget("a1", name="group-a", quantity=10, attributes={"k": [1, 2]}),
        make_widget("a3", name="group-a", quantity=30),
    ]
    with gateway.count_jobs() as counter:
        widgets.replace_group(rows, group={"name": "group-a"})
    # Repeated: nothing changes the second time (how a retried report stays exact).
    widgets.replace_group(rows, group={"name": "group-a"})

    assert counter.jobs == 1
    got = {row.widget_id: (row.quantity, row.attributes) for row in widgets.list()}
    assert got == {"a1": (10, {"k": [1, 2]}), "a3": (30, None), "b1": (3, None)}
    widgets.replace_group([], group={"name": "group-a"})
    assert [row.widget_id for row in widgets.list()] == ["b1"]


def test_it_batches_by_rows_and_by_bytes_whichever_fills_first() -> None:
    by_rows = list(batched(range(5), rows=lambda item: MAX_LIMIT // 2))
    by_bytes = list(batched(range(5), size=lambda item: MAX_BATCH_BYTES // 3))

    assert by_rows == [[0, 1], [2, 3], [4]]
    assert by_bytes == [[0, 1, 2], [3, 4]]
    assert list(batched(range(3))) == [[0, 1, 2]]


def test_it_sends_an_item_over_the_limit_alone() -> None:
    sizes = [10, MAX_BATCH_BYTES + 1, 10]

    assert list(batched(sizes, size=lambda item: item)) == [[10], [MAX_BATCH_BYTES + 1], [10]]
