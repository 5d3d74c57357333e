"""Writes: DML inserts, updates, conditional updates, MERGE upserts and deletes."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import InvalidInput, NotFound
from bigquery_backend.repository import Add, Col, Now, Repository
from tests.bigquery_backend.widgets import Widget, WidgetKind, ids, make_widget, widget_values


# --- insert ---------------------------------------------------------------------------------------
def test_it_inserts_many_rows_in_one_statement_and_reports_them(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    with gateway.count_jobs() as counter:
        inserted = widgets.insert(make_widget("a"), make_widget("b", tags=["x"]), make_widget("c"))
    assert inserted == 3
    assert counter.jobs == 1
    assert ids(widgets.list()) == ["a", "b", "c"]


def test_it_inserts_nothing_for_no_rows(gateway: BigQueryGateway, widgets: Repository[Widget]) -> None:
    with gateway.count_jobs() as counter:
        assert widgets.insert() == 0
    assert counter.jobs == 0


def test_it_makes_inserted_rows_updatable_at_once(widgets: Repository[Widget]) -> None:
    # Streaming inserts would sit in a buffer that DML cannot touch; DML inserts can be updated at once.
    widgets.insert(make_widget("a"))
    widgets.update("a", {"name": "renamed"})
    assert widgets.get("a").name == "renamed"


def test_it_applies_field_defaults_on_insert(widgets: Repository[Widget]) -> None:
    widgets.insert(Widget(widget_id="d", name="defaults", kind=WidgetKind.GEAR, quantity=1,
                          created_at=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)))  # fmt: skip
    got = widgets.get("d")
    assert (got.used, got.active, got.tags) == (0, True, [])


# --- update ---------------------------------------------------------------------------------------
def test_it_updates_only_the_given_columns_of_one_row(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", notes="keep", quantity=1), make_widget("b", quantity=1))
    before_b = widget_values(widgets.get("b"))

    widgets.update("a", {"quantity": 42, "price": Decimal("9.99"), "tags": ["new"], "attributes": {"k": [1]}})

    got = widgets.get("a")
    assert (got.quantity, got.price, got.tags, got.attributes, got.notes) == (
        42, Decimal("9.99"), ["new"], {"k": [1]}, "keep"
    )  # fmt: skip
    assert widget_values(widgets.get("b")) == before_b


def test_it_sets_a_nullable_column_to_null(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", notes="something", payload=b"\x00x", attributes={"a": 1}))
    widgets.update("a", {"notes": None, "payload": None, "attributes": None})
    got = widgets.get("a")
    assert (got.notes, got.payload, got.attributes) == (None, None, None)


def test_it_updates_bytes_timestamps_and_dates(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a"))
    touched = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    widgets.update("a", {"payload": b"\x00\xff", "touched_at": touched, "due_on": datetime.date(2025, 1, 2)})
    got = widgets.get("a")
    assert (bytes(got.payload), got.touched_at, got.due_on) == (
        b"\x00\xff",
        touched,
        datetime.date(2025, 1, 2),
    )


def test_it_raises_not_found_when_updating_a_missing_key(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a"))
    with pytest.raises(NotFound, match="nope"):
        widgets.update("nope", {"name": "x"})
    assert widgets.get("a").name == "widget a"


def test_it_refuses_to_change_the_primary_key(gateway: BigQueryGateway, widgets: Repository[Widget]) -> None:
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput) as caught:
        widgets.update("a", {"widget_id": "b"})
    assert "widget_id" in caught.value.errors
    assert counter.jobs == 0


def test_it_refuses_an_empty_update(gateway: BigQueryGateway, widgets: Repository[Widget]) -> None:
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput):
        widgets.update("a", {})
    assert counter.jobs == 0


# --- conditional update ---------------------------------------------------------------------------
def test_it_increments_atomically_and_stamps_the_server_time(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", used=1, quota=3), make_widget("b", used=1, quota=3))
    before = datetime.datetime.now(datetime.UTC)

    affected = widgets.update_where(
        {"used": Add(1), "touched_at": Now()}, filters={"widget_id": "a", "used__lt": Col("quota")}
    )

    after = datetime.datetime.now(datetime.UTC)
    got = widgets.get("a")
    assert affected == 1
    assert got.used == 2
    assert got.touched_at is not None
    assert before - datetime.timedelta(seconds=5) <= got.touched_at <= after + datetime.timedelta(seconds=5)
    assert (widgets.get("b").used, widgets.get("b").touched_at) == (1, None)


def test_it_reports_zero_rows_when_the_condition_fails(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", used=3, quota=3))
    affected = widgets.update_where({"used": Add(1)}, filters={"widget_id": "a", "used__lt": Col("quota")})
    assert affected == 0
    assert widgets.get("a").used == 3


def test_it_stops_incrementing_at_the_limit(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", used=0, quota=2))
    results = [
        widgets.update_where({"used": Add(1)}, filters={"widget_id": "a", "used__lt": Col("quota")})
        for _ in range(3)
    ]
    assert results == [1, 1, 0]
    assert widgets.get("a").used == 2


def test_it_reports_every_row_a_conditional_update_touched(widgets: Repository[Widget]) -> None:
    widgets.insert(
        make_widget("a", kind=WidgetKind.GEAR, quantity=1),
        make_widget("b", kind=WidgetKind.GEAR, quantity=2),
        make_widget("c", kind=WidgetKind.LEVER, quantity=3),
    )
    assert widgets.update_where({"quantity": Add(10)}, filters={"kind": "GEAR"}) == 2
    assert [w.quantity for w in widgets.list()] == [11, 12, 3]


def test_it_adds_negative_and_fractional_amounts(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", quantity=10, ratio=1.0, price=Decimal("1.5")))
    widgets.update_where(
        {"quantity": Add(-3), "ratio": Add(0.25), "price": Add(2)}, filters={"widget_id": "a"}
    )
    got = widgets.get("a")
    assert (got.quantity, got.ratio, got.price) == (7, 1.25, Decimal("3.5"))


@pytest.mark.parametrize(
    ("values", "column"),
    [({"name": Add(1)}, "name"), ({"due_on": Now()}, "due_on"), ({"quantity": Now()}, "quantity")],
    ids=["add-to-text", "now-into-date", "now-into-int"],
)
def test_it_refuses_an_expression_on_the_wrong_column_type(
    gateway: BigQueryGateway, widgets: Repository[Widget], values: dict[str, object], column: str
) -> None:
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput) as caught:
        widgets.update_where(values, filters={"widget_id": "a"})
    assert column in caught.value.errors
    assert counter.jobs == 0


def test_it_refuses_an_update_without_a_condition(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    widgets.insert(make_widget("a"))
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput):
        widgets.update_where({"name": "everyone"}, filters={})
    assert counter.jobs == 0
    assert widgets.get("a").name == "widget a"


# --- upsert ---------------------------------------------------------------------------------------
def test_it_upserts_by_inserting_then_updating(widgets: Repository[Widget]) -> None:
    assert widgets.upsert(make_widget("a", name="first", quantity=1, tags=["x"])) == 1
    assert widgets.get("a").name == "first"

    assert widgets.upsert(make_widget("a", name="second", quantity=2, tags=[])) == 1

    got = widgets.get("a")
    assert (got.name, got.quantity, got.tags) == ("second", 2, [])
    assert widgets.count() == 1


def test_it_upserts_only_the_named_fields_of_an_existing_row(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", name="old", quantity=1, notes="kept"))
    widgets.upsert(make_widget("a", name="new", quantity=99, notes="ignored"), update_fields=["name"])
    got = widgets.get("a")
    assert (got.name, got.quantity, got.notes) == ("new", 1, "kept")


def test_it_inserts_every_field_when_upserting_a_new_row_with_update_fields(
    widgets: Repository[Widget],
) -> None:
    widgets.upsert(make_widget("a", name="new", quantity=99, notes="all"), update_fields=["name"])
    got = widgets.get("a")
    assert (got.name, got.quantity, got.notes) == ("new", 99, "all")


def test_it_leaves_an_existing_row_alone_when_no_field_may_change(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", name="original"))
    assert widgets.upsert(make_widget("a", name="other"), update_fields=[]) == 0
    assert widgets.get("a").name == "original"
    assert widgets.upsert(make_widget("b", name="other"), update_fields=[]) == 1
    assert widgets.get("b").name == "other"


def test_it_upserts_every_type(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a"))
    row = make_widget(
        "a",
        notes="ü",
        ratio=0.5,
        price=Decimal("1.000000001"),
        touched_at=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        due_on=datetime.date(2024, 1, 1),
        attributes={"x": [None]},
        payload=b"\x00",
        tags=["t"],
        active=False,
    )
    expected = widget_values(row)
    widgets.upsert(row)
    assert widget_values(widgets.get("a")) == expected


# --- delete ---------------------------------------------------------------------------------------
def test_it_deletes_one_row_and_says_whether_it_existed(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a"), make_widget("b"))
    assert widgets.delete("a") is True
    assert widgets.delete("a") is False
    assert ids(widgets.list()) == ["b"]


def test_it_deletes_matching_rows_and_counts_them(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a", quantity=1), make_widget("b", quantity=5), make_widget("c", quantity=9))
    assert widgets.delete_where(filters={"quantity__gte": 5}) == 2
    assert widgets.delete_where(filters={"quantity__gte": 5}) == 0
    assert ids(widgets.list()) == ["a"]


def test_it_refuses_a_delete_without_a_condition(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    widgets.insert(make_widget("a"))
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput):
        widgets.delete_where(filters={})
    assert counter.jobs == 0
    assert widgets.count() == 1


def test_it_deletes_nothing_for_an_empty_in(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a"))
    assert widgets.delete_where(filters={"widget_id__in": []}) == 0
    assert widgets.count() == 1
