"""Injection attempts: hostile values are data, hostile identifiers never reach SQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import InvalidIdentifier, InvalidInput
from bigquery_backend.repository import Col, Repository
from tests.bigquery_backend.widgets import Widget, WidgetTableFactory, ids, make_widget

HOSTILE_VALUES = [
    pytest.param("x'; DROP TABLE widgets; --", id="quote-drop"),
    pytest.param('x"; DELETE FROM widgets WHERE TRUE; --', id="double-quote-delete"),
    pytest.param("`widgets`", id="backticks"),
    pytest.param("\\", id="backslash"),
    pytest.param("\\'", id="escaped-quote"),
    pytest.param("'''", id="triple-quote"),
    pytest.param("%", id="percent"),
    pytest.param("_", id="underscore"),
    pytest.param("' OR '1'='1", id="tautology"),
    pytest.param("@p0", id="parameter-name"),
    pytest.param("*/ SELECT 1 /*", id="comment"),
    pytest.param("x\n; DROP TABLE widgets", id="newline"),
    pytest.param("日本語 ✓ 🚀 \u202e", id="unicode"),
    pytest.param("\x00", id="nul"),
]


def refused(gateway: BigQueryGateway, call: Callable[[], Any]) -> InvalidInput:
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput) as caught:
        call()
    assert (counter.jobs, counter.api_calls) == (0, 0), counter.statements
    return caught.value


def assert_table_intact(gateway: BigQueryGateway, widgets: Repository[Widget], rows: int) -> None:
    assert gateway.get_table(widgets.dataset, "widgets").num_rows is not None
    assert widgets.count() == rows


# --- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_it_stores_a_hostile_value_verbatim_everywhere(
    gateway: BigQueryGateway, widgets: Repository[Widget], value: str
) -> None:
    widgets.insert(make_widget("other"))
    widgets.insert(make_widget(value, name=value, notes=value, tags=[value, "x"], attributes={value: [value]},
                               payload=value.encode()))  # fmt: skip

    got = widgets.get(value)

    assert (got.widget_id, got.name, got.notes, got.tags) == (value, value, value, [value, "x"])
    assert (got.attributes, bytes(got.payload)) == ({value: [value]}, value.encode())
    assert_table_intact(gateway, widgets, rows=2)


@pytest.fixture(scope="module")
def hostile_names(shared_widget_table: WidgetTableFactory) -> Repository[Widget]:
    """One row per hostile value (as its name) plus a plain one; shared, only read."""
    rows = [make_widget(f"v{index:02d}", name=param.values[0]) for index, param in enumerate(HOSTILE_VALUES)]
    return shared_widget_table(make_widget("plain", name="plain"), *rows)


def names_by_id() -> dict[str, str]:
    return {f"v{index:02d}": param.values[0] for index, param in enumerate(HOSTILE_VALUES)} | {
        "plain": "plain"
    }


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_it_matches_a_hostile_filter_value_only_literally(
    gateway: BigQueryGateway, hostile_names: Repository[Widget], value: str
) -> None:
    names = names_by_id()
    equal = sorted(key for key, name in names.items() if name == value)
    containing = sorted(key for key, name in names.items() if value.lower() in name.lower())

    assert len(equal) == 1
    assert ids(hostile_names.list(filters={"name": value})) == equal
    assert ids(hostile_names.list(filters={"name__in": [value, "zz"]})) == equal
    assert ids(hostile_names.list(filters={"name__icontains": value})) == containing
    assert hostile_names.count(filters={"name__ne": value}) == len(names) - 1
    assert_table_intact(gateway, hostile_names, rows=len(names))


@pytest.mark.parametrize(
    "value", [HOSTILE_VALUES[0], HOSTILE_VALUES[2], HOSTILE_VALUES[4], HOSTILE_VALUES[8]]
)
def test_it_updates_upserts_and_deletes_with_hostile_values_as_data(
    gateway: BigQueryGateway, widgets: Repository[Widget], value: str
) -> None:
    widgets.insert(make_widget("a"), make_widget("b"))

    widgets.update("a", {"notes": value, "tags": [value]})
    widgets.upsert(make_widget("c", name=value))
    assert widgets.delete_where(filters={"notes": value}) == 1

    assert [w.widget_id for w in widgets.list()] == ["b", "c"]
    assert widgets.get("c").name == value
    assert_table_intact(gateway, widgets, rows=2)


def test_it_does_not_widen_a_filter_with_a_tautology(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a"), make_widget("b"))
    assert widgets.list(filters={"widget_id": "a' OR '1'='1"}) == []
    assert widgets.delete_where(filters={"widget_id": "x' OR TRUE --"}) == 0
    assert widgets.count() == 2


# --- identifiers ----------------------------------------------------------------------------------
HOSTILE_IDENTIFIERS = [
    pytest.param("it's", id="quote"),
    pytest.param("two words", id="space"),
    pytest.param("back`tick", id="backtick"),
    pytest.param("x;DROP TABLE widgets", id="semicolon"),
    pytest.param("line\nbreak", id="newline"),
    pytest.param("other.widgets", id="dot"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("dataset_name", HOSTILE_IDENTIFIERS)
def test_it_refuses_a_hostile_dataset_name(gateway: BigQueryGateway, dataset_name: str) -> None:
    error = refused(gateway, lambda: Repository(Widget, dataset=dataset_name, gateway=gateway))
    assert isinstance(error, InvalidIdentifier)
    assert "dataset" in error.errors


@pytest.mark.parametrize("column", HOSTILE_IDENTIFIERS)
def test_it_refuses_a_hostile_column_in_a_filter(
    gateway: BigQueryGateway, widgets: Repository[Widget], column: str
) -> None:
    refused(gateway, lambda: widgets.list(filters={column: "x"}))
    refused(gateway, lambda: widgets.count(filters={column: "x"}))
    refused(gateway, lambda: widgets.delete_where(filters={column: "x"}))


@pytest.mark.parametrize("column", HOSTILE_IDENTIFIERS)
def test_it_refuses_a_hostile_column_in_order_by(
    gateway: BigQueryGateway, widgets: Repository[Widget], column: str
) -> None:
    refused(gateway, lambda: widgets.list(order_by=[column]))
    refused(gateway, lambda: widgets.list(order_by=[f"-{column}"]))


@pytest.mark.parametrize("column", HOSTILE_IDENTIFIERS)
def test_it_refuses_a_hostile_column_in_update_values(
    gateway: BigQueryGateway, widgets: Repository[Widget], column: str
) -> None:
    refused(gateway, lambda: widgets.update("a", {column: "x"}))
    refused(gateway, lambda: widgets.update_where({column: "x"}, filters={"widget_id": "a"}))


@pytest.mark.parametrize("column", HOSTILE_IDENTIFIERS)
def test_it_refuses_a_hostile_column_in_upsert_fields(
    gateway: BigQueryGateway, widgets: Repository[Widget], column: str
) -> None:
    refused(gateway, lambda: widgets.upsert(make_widget("a"), update_fields=[column]))


@pytest.mark.parametrize("column", HOSTILE_IDENTIFIERS)
def test_it_refuses_a_hostile_column_comparison(
    gateway: BigQueryGateway, widgets: Repository[Widget], column: str
) -> None:
    refused(gateway, lambda: widgets.list(filters={"used__lt": Col(column)}))


@pytest.mark.parametrize(
    "lookup",
    [
        "name__exact` OR TRUE",
        "name__icontains; DROP",
        "name OR 1=1",
        "name__gt__lt",
        "__name",
        "name__isnull) OR (TRUE",
    ],
)
def test_it_refuses_a_hostile_lookup_suffix(
    gateway: BigQueryGateway, widgets: Repository[Widget], lookup: str
) -> None:
    refused(gateway, lambda: widgets.list(filters={lookup: "x"}))


def test_it_refuses_a_field_name_that_django_knows_but_is_no_column(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    refused(gateway, lambda: widgets.list(filters={"pk": "a"}))


def test_it_keeps_the_table_after_every_refusal(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    widgets.insert(make_widget("a"))
    for column in ("x`; DROP TABLE widgets; --", "name; DELETE FROM widgets"):
        with pytest.raises(InvalidInput):
            widgets.list(filters={column: 1})
        with pytest.raises(InvalidInput):
            widgets.update("a", {column: 1})
    assert_table_intact(gateway, widgets, rows=1)
