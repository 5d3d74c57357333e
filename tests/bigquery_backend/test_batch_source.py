"""Rows sent column by column as array parameters (`batch_source.zipped_rows`)."""

from __future__ import annotations

from bigquery_backend.batch_source import zipped_rows
from bigquery_backend.client import BigQueryGateway
from bigquery_backend.repository import Repository
from tests.bigquery_backend.widgets import Widget, make_widget


def test_it_zips_columns_back_into_rows_in_their_order(gateway: BigQueryGateway) -> None:
    source, parameters = zipped_rows(
        {"name": ("STRING", ["a", "b", "c"]), "n": ("INT64", [1, 2, 3])},
        prefix="z",
        constants={"tag": ("STRING", "t")},
    )

    rows = gateway.query(f"SELECT * FROM ({source}) ORDER BY n", parameters).rows

    assert [(row["name"], row["n"], row["tag"]) for row in rows] == [
        ("a", 1, "t"),
        ("b", 2, "t"),
        ("c", 3, "t"),
    ]


def test_it_keeps_the_statement_the_same_size_whatever_the_number_of_rows() -> None:
    few, _ = zipped_rows({"name": ("STRING", ["a"])}, prefix="z")
    many, parameters = zipped_rows({"name": ("STRING", [f"n{i}" for i in range(1000)])}, prefix="z")

    assert few == many
    assert len(parameters) == 1


def test_it_feeds_an_update_from_with_every_value_inside_the_source(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    widgets.insert(make_widget("a", quantity=1), make_widget("b", quantity=2), make_widget("c", quantity=3))
    source, parameters = zipped_rows(
        {"id": ("STRING", ["a", "c"]), "add": ("INT64", [10, 30])},
        prefix="z",
        constants={"note": ("STRING", "x")},
    )

    changed = gateway.query(
        f"UPDATE {widgets.table} AS w SET quantity = w.quantity + g.add, notes = g.note "
        f"FROM ({source}) AS g WHERE w.widget_id = g.id",
        parameters,
    ).affected_rows

    assert changed == 2
    assert {row.widget_id: (row.quantity, row.notes) for row in widgets.list()} == {
        "a": (11, "x"),
        "b": (2, None),
        "c": (33, "x"),
    }
