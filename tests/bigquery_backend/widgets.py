"""A test-only table covering every BigQuery type the backend supports, declared once per session.

`table_definition` is cached per model class, so this module is the only place `Widget` is defined.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from django.db import models

from bigquery_backend.fields import RepeatedStringField
from bigquery_backend.models import BigQueryModel
from bigquery_backend.repository import Repository
from bigquery_backend.schema import TableSpec

UTC = datetime.UTC


class WidgetKind(models.TextChoices):
    GEAR = "GEAR"
    SPRING = "SPRING"
    LEVER = "LEVER"


class Widget(BigQueryModel):
    widget_id = models.CharField(max_length=64, primary_key=True)
    name = models.CharField(max_length=200)
    notes = models.TextField(null=True, blank=True)  # noqa: DJ001 - NULL, not "", in BigQuery
    kind = models.CharField(max_length=16, choices=WidgetKind.choices)
    quantity = models.BigIntegerField()
    used = models.BigIntegerField(default=0)
    quota = models.BigIntegerField(null=True, blank=True)
    ratio = models.FloatField(null=True, blank=True)
    price = models.DecimalField(max_digits=20, decimal_places=9, null=True, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    touched_at = models.DateTimeField(null=True, blank=True)
    due_on = models.DateField(null=True, blank=True)
    attributes = models.JSONField(null=True, blank=True)
    payload = models.BinaryField(null=True, blank=True)
    tags = RepeatedStringField()

    table_spec = TableSpec(
        scope="test",
        description="Widgets for the backend's own tests",
        partition_field="created_at",
        clustering=("kind", "name"),
        labels={"purpose": "tests"},
    )

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "widgets"


def make_widget(widget_id: str, **overrides: Any) -> Widget:
    """A valid widget with every required field set; `overrides` replace any of them."""
    values: dict[str, Any] = {
        "widget_id": widget_id,
        "name": f"widget {widget_id}",
        "kind": WidgetKind.GEAR,
        "quantity": 1,
        "created_at": datetime.datetime(2024, 5, 17, 12, 30, tzinfo=UTC),
    }
    values.update(overrides)
    return Widget(**values)


def widget_values(widget: Widget) -> dict[str, Any]:
    """Every column's value of a widget, by field name, for whole-row comparisons."""
    return {f.name: getattr(widget, f.attname) for f in Widget._meta.concrete_fields}


def ids(rows: list[Widget]) -> list[str]:
    """The keys of `rows`, in order."""
    return [row.widget_id for row in rows]


# Builds a `widgets` table in a dataset of its own holding the given rows (see conftest.py).
WidgetTableFactory = Callable[..., Repository["Widget"]]
