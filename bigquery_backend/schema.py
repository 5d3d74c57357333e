"""Each table is declared once, as a Django model plus a `TableSpec`; its BigQuery schema is derived here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from google.cloud import bigquery

from bigquery_backend.fields import RepeatedStringField
from bigquery_backend.identifiers import check_column, check_table

REQUIRED = "REQUIRED"
NULLABLE = "NULLABLE"
REPEATED = "REPEATED"

# Legacy SQL names the API may report for standard types: compare on the standard name.
_TYPE_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "DECIMAL": "NUMERIC"}

# Checked in order: DateTimeField subclasses DateField and RepeatedStringField subclasses JSONField.
_FIELD_TYPES: tuple[tuple[type[models.Field], str], ...] = (
    (RepeatedStringField, "STRING"),
    (models.JSONField, "JSON"),
    (models.BooleanField, "BOOL"),
    (models.DateTimeField, "TIMESTAMP"),
    (models.DateField, "DATE"),
    (models.DecimalField, "NUMERIC"),
    (models.FloatField, "FLOAT64"),
    (models.IntegerField, "INT64"),
    (models.BinaryField, "BYTES"),
    (models.CharField, "STRING"),
    (models.TextField, "STRING"),
    (models.UUIDField, "STRING"),
)


def normalize_type(field_type: str) -> str:
    """Standard SQL name of a BigQuery type (`INTEGER` -> `INT64`)."""
    upper = field_type.upper()
    return _TYPE_ALIASES.get(upper, upper)


@dataclass(frozen=True)
class TableSpec:
    """What a model alone cannot say about its table: where it lives and how it is laid out."""

    scope: str
    description: str = ""
    partition_field: str | None = None
    partition_type: str = "DAY"
    clustering: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """One BigQuery column derived from one model field."""

    name: str
    field_type: str
    mode: str
    description: str = ""

    def to_schema_field(self) -> bigquery.SchemaField:
        return bigquery.SchemaField(
            self.name, self.field_type, mode=self.mode, description=self.description or None
        )


@dataclass(frozen=True)
class TableDefinition:
    """A model's table: name, columns, primary key and layout, validated once."""

    model: type[models.Model]
    name: str
    columns: tuple[Column, ...]
    key: str
    spec: TableSpec

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def schema(self) -> list[bigquery.SchemaField]:
        return [column.to_schema_field() for column in self.columns]

    def build_table(self, table_ref: str) -> bigquery.Table:
        """A `bigquery.Table` ready for `create_table`, with partitioning, clustering and labels."""
        table = bigquery.Table(table_ref, schema=self.schema())
        table.description = self.spec.description or None
        if self.spec.partition_field:
            # Partitioning and clustering go through the API: DDL options are not kept by every
            # BigQuery implementation (the emulator drops them).
            table.time_partitioning = bigquery.TimePartitioning(
                type_=self.spec.partition_type, field=self.spec.partition_field
            )
        if self.spec.clustering:
            table.clustering_fields = list(self.spec.clustering)
        if self.spec.labels:
            table.labels = dict(self.spec.labels)
        return table


def column_for_field(model_field: models.Field) -> Column:
    """Map one Django field to its BigQuery column (type and mode)."""
    field_type = next((name for cls, name in _FIELD_TYPES if isinstance(model_field, cls)), None)
    if field_type is None:
        model_name = model_field.model.__name__
        raise ImproperlyConfigured(
            f"{model_name}.{model_field.name}: {type(model_field).__name__} has no BigQuery type"
        )
    if isinstance(model_field, RepeatedStringField):
        mode = REPEATED
    else:
        mode = NULLABLE if model_field.null else REQUIRED
    return Column(
        name=check_column(model_field.column),
        field_type=field_type,
        mode=mode,
        description=str(model_field.help_text or ""),
    )


@cache
def table_definition(model: type[models.Model]) -> TableDefinition:
    """The validated table definition of a model that declares `table_spec`."""
    spec: Any = getattr(model, "table_spec", None)
    if not isinstance(spec, TableSpec):
        raise ImproperlyConfigured(f"{model.__name__} declares no `table_spec = TableSpec(...)`")
    columns = tuple(column_for_field(f) for f in model._meta.concrete_fields)
    by_name = {column.name: column for column in columns}
    if spec.partition_field is not None:
        partition = by_name.get(spec.partition_field)
        if partition is None or partition.field_type not in {"TIMESTAMP", "DATE"}:
            raise ImproperlyConfigured(
                f"{model.__name__}: partition field must be a TIMESTAMP or DATE column"
            )
    if len(spec.clustering) > 4 or any(name not in by_name for name in spec.clustering):
        raise ImproperlyConfigured(f"{model.__name__}: clustering takes up to 4 existing columns")
    pk = model._meta.pk
    assert pk is not None
    return TableDefinition(
        model=model,
        name=check_table(model._meta.db_table),
        columns=columns,
        key=pk.column,
        spec=spec,
    )
