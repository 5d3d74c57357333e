"""Every supported type goes in as a parameter and comes back unchanged."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest

from bigquery_backend.repository import Repository
from tests.bigquery_backend.widgets import Widget, WidgetKind, make_widget, widget_values

PARIS_SUMMER = datetime.timezone(datetime.timedelta(hours=2))


def roundtrip(widgets: Repository[Widget], **values: Any) -> Widget:
    widgets.insert(make_widget("w1", **values))
    return widgets.get("w1")


def test_it_round_trips_a_row_with_every_column_set(widgets: Repository[Widget]) -> None:
    original = make_widget(
        "full",
        name="Gear - Größe 5",
        notes="line one\nline two\ttabbed",
        kind=WidgetKind.LEVER,
        quantity=-(2**62),
        used=7,
        quota=2**40,
        ratio=1 / 3,
        price=Decimal("-12345678901.123456789"),
        active=False,
        created_at=datetime.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=datetime.UTC),
        touched_at=datetime.datetime(2024, 6, 1, 8, 0, 0, 123456, tzinfo=PARIS_SUMMER),
        due_on=datetime.date(2024, 2, 29),
        attributes={"nested": {"list": [1, 2.5, "three", None, True]}, "ünï": "cödé"},
        payload=bytes(range(256)),
        tags=["alpha", "beta gamma", "δ"],
    )
    expected = widget_values(original)
    widgets.insert(original)

    assert widget_values(widgets.get("full")) == expected


def test_it_round_trips_a_row_with_every_nullable_column_null(widgets: Repository[Widget]) -> None:
    got = roundtrip(widgets)
    assert [got.notes, got.quota, got.ratio, got.price, got.touched_at, got.due_on] == [None] * 6
    assert [got.attributes, got.payload] == [None, None]
    assert got.tags == []


def test_it_keeps_required_defaults(widgets: Repository[Widget]) -> None:
    got = roundtrip(widgets)
    assert (got.used, got.active) == (0, True)


@pytest.mark.parametrize(
    "payload",
    [b"\x00", b"\x00\x00abc\x00", b"\xff\xfe\xfd", "caf\u00e9".encode(), b"'; DROP TABLE widgets; --"],
    ids=["nul", "embedded-nul", "high-bytes", "utf8", "sql-text"],
)
def test_it_round_trips_bytes(widgets: Repository[Widget], payload: bytes) -> None:
    got = roundtrip(widgets, payload=payload)
    assert bytes(got.payload) == payload


@pytest.mark.parametrize(
    "text",
    ["", "日本語のテキスト", "emoji 🚀🎉", "zero\u200bwidth", "combining e\u0301", "right-to-left עברית"],
    ids=["empty", "cjk", "emoji", "zero-width", "combining", "rtl"],
)
def test_it_round_trips_unicode_text_verbatim(widgets: Repository[Widget], text: str) -> None:
    got = roundtrip(widgets, notes=text)
    assert got.notes == text


def test_it_keeps_an_empty_string_distinct_from_null(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("empty", notes=""), make_widget("null", notes=None))
    assert widgets.get("empty").notes == ""
    assert widgets.get("null").notes is None


@pytest.mark.parametrize(
    "document",
    [
        {"a": {"b": {"c": [1, {"d": "deep"}]}}},
        [1, "two", {"three": 3}],
        {"empty": {}, "none": None, "list": []},
        {"quote": 'it\'s "quoted" \\ back'},
        {"number": 12345678901234, "float": 0.5, "bool": False},
    ],
    ids=["nested", "top-level-list", "empties", "quotes", "scalars"],
)
def test_it_round_trips_json(widgets: Repository[Widget], document: Any) -> None:
    got = roundtrip(widgets, attributes=document)
    assert got.attributes == document


@pytest.mark.parametrize(
    "price",
    [Decimal("0"), Decimal("0.000000001"), Decimal("-1.5"), Decimal("99999999999.999999999")],
    ids=["zero", "smallest", "negative", "largest"],
)
def test_it_round_trips_decimals_exactly(widgets: Repository[Widget], price: Decimal) -> None:
    got = roundtrip(widgets, price=price)
    assert got.price == price
    assert isinstance(got.price, Decimal)


@pytest.mark.parametrize("ratio", [0.1, -2.5e-300, 1.7976931348623157e308, 0.0])
def test_it_round_trips_floats(widgets: Repository[Widget], ratio: float) -> None:
    got = roundtrip(widgets, ratio=ratio)
    assert got.ratio == ratio


@pytest.mark.parametrize("quantity", [0, -1, 2**63 - 1, -(2**63)], ids=["zero", "minus-one", "max", "min"])
def test_it_round_trips_int64_limits(widgets: Repository[Widget], quantity: int) -> None:
    got = roundtrip(widgets, quantity=quantity)
    assert got.quantity == quantity


def test_it_returns_aware_utc_datetimes_for_the_same_instant(widgets: Repository[Widget]) -> None:
    touched = datetime.datetime(2024, 6, 1, 8, 0, 0, 654321, tzinfo=PARIS_SUMMER)
    got = roundtrip(widgets, touched_at=touched)
    assert got.touched_at == touched
    assert got.touched_at.utcoffset() == datetime.timedelta(0)
    assert got.touched_at.microsecond == 654321


@pytest.mark.parametrize(
    "day",
    [datetime.date(2024, 2, 29), datetime.date(1, 1, 1), datetime.date(9999, 12, 31)],
    ids=["leap-day", "first", "last"],
)
def test_it_round_trips_dates(widgets: Repository[Widget], day: datetime.date) -> None:
    got = roundtrip(widgets, due_on=day)
    assert got.due_on == day


@pytest.mark.parametrize(
    "tags",
    [[], ["one"], ["", " ", "x"], ["same", "same"], ["ünï", "🚀", "a,b", "'q'"]],
    ids=["empty", "one", "blank-items", "duplicates", "unicode-and-punctuation"],
)
def test_it_round_trips_repeated_strings_in_order(widgets: Repository[Widget], tags: list[str]) -> None:
    got = roundtrip(widgets, tags=tags)
    assert got.tags == tags


def test_it_round_trips_false_and_true(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("off", active=False), make_widget("on", active=True))
    assert (widgets.get("off").active, widgets.get("on").active) == (False, True)
