"""Schema derivation: every model field maps to one BigQuery column, layouts are validated."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from bigquery_backend import provisioning
from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import InvalidIdentifier
from bigquery_backend.fields import RepeatedStringField
from bigquery_backend.models import BigQueryModel
from bigquery_backend.schema import TableSpec, column_for_field, normalize_type, table_definition
from tenants_app.models import CENTRAL_MODELS, TENANT_MODELS, TenantApiKey
from tests.bigquery_backend.widgets import Widget

ALL_MODELS = [pytest.param(model, id=model.__name__) for model in (*CENTRAL_MODELS, *TENANT_MODELS)]

# What BigQuery type each Django field type must become, written from the BigQuery type list and not
# from schema.py: keyed by Django's own internal type name.
EXPECTED_TYPES = {
    "CharField": "STRING",
    "TextField": "STRING",
    "UUIDField": "STRING",
    "SlugField": "STRING",
    "IntegerField": "INT64",
    "BigIntegerField": "INT64",
    "SmallIntegerField": "INT64",
    "PositiveIntegerField": "INT64",
    "PositiveBigIntegerField": "INT64",
    "FloatField": "FLOAT64",
    "DecimalField": "NUMERIC",
    "BooleanField": "BOOL",
    "DateTimeField": "TIMESTAMP",
    "DateField": "DATE",
    "JSONField": "JSON",
    "BinaryField": "BYTES",
}


def expected_type(field: models.Field) -> str:
    if isinstance(field, RepeatedStringField):
        return "STRING"
    return EXPECTED_TYPES[field.get_internal_type()]


def expected_mode(field: models.Field) -> str:
    if isinstance(field, RepeatedStringField):
        return "REPEATED"
    return "NULLABLE" if field.null else "REQUIRED"


@pytest.mark.parametrize("model", ALL_MODELS)
def test_it_derives_one_column_per_field_in_declaration_order(model: type[models.Model]) -> None:
    definition = table_definition(model)
    assert definition.column_names == tuple(f.column for f in model._meta.concrete_fields)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_it_gives_every_column_the_type_and_mode_of_its_field(model: type[models.Model]) -> None:
    definition = table_definition(model)
    for field in model._meta.concrete_fields:
        column = definition.column(field.column)
        assert (column.field_type, column.mode) == (expected_type(field), expected_mode(field)), field.name


@pytest.mark.parametrize("model", ALL_MODELS)
def test_it_names_the_table_and_key_after_the_model(model: type[models.Model]) -> None:
    definition = table_definition(model)
    assert definition.name == model._meta.db_table
    assert definition.key == model._meta.pk.column


@pytest.mark.parametrize("model", ALL_MODELS)
def test_it_partitions_only_on_a_timestamp_or_date_column(model: type[models.Model]) -> None:
    definition = table_definition(model)
    if definition.spec.partition_field is None:
        return
    partition = definition.column(definition.spec.partition_field)
    assert partition.field_type in {"TIMESTAMP", "DATE"}
    assert definition.spec.partition_type == "DAY"


@pytest.mark.parametrize("model", ALL_MODELS)
def test_it_clusters_on_at_most_four_existing_columns(model: type[models.Model]) -> None:
    definition = table_definition(model)
    assert 1 <= len(definition.spec.clustering) <= 4
    assert set(definition.spec.clustering) <= set(definition.column_names)


def test_it_declares_eleven_central_and_three_tenant_tables() -> None:
    # Issue 2: the original 8 central tables and 3 per tenant; issue 4 adds the central audit log,
    # issue 13 the webhook endpoints and deliveries.
    names = [model._meta.db_table for model in (*CENTRAL_MODELS, *TENANT_MODELS)]
    assert (len(CENTRAL_MODELS), len(TENANT_MODELS)) == (11, 3)
    assert len(set(names)) == 14


def test_it_turns_help_text_into_the_column_description() -> None:
    assert table_definition(Widget).column("name").description == ""
    field = TenantApiKey._meta.get_field("api_key_hash")
    assert table_definition(TenantApiKey).column("api_key_hash").description == str(field.help_text)
    assert table_definition(TenantApiKey).column("api_key_hash").to_schema_field().description


def _named(field: models.Field, name: str = "value") -> models.Field:
    field.set_attributes_from_name(name)
    return field


@pytest.mark.parametrize(
    ("field", "bigquery_type"),
    [
        (models.CharField(max_length=10), "STRING"),
        (models.TextField(), "STRING"),
        (models.EmailField(), "STRING"),
        (models.SlugField(), "STRING"),
        (models.URLField(), "STRING"),
        (models.UUIDField(), "STRING"),
        (models.IntegerField(), "INT64"),
        (models.BigIntegerField(), "INT64"),
        (models.SmallIntegerField(), "INT64"),
        (models.PositiveIntegerField(), "INT64"),
        (models.FloatField(), "FLOAT64"),
        (models.DecimalField(max_digits=10, decimal_places=2), "NUMERIC"),
        (models.BooleanField(), "BOOL"),
        (models.DateTimeField(), "TIMESTAMP"),
        (models.DateField(), "DATE"),
        (models.JSONField(), "JSON"),
        (models.BinaryField(), "BYTES"),
        (RepeatedStringField(), "STRING"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, models.Field) else value,
)
def test_it_maps_each_django_field_type(field: models.Field, bigquery_type: str) -> None:
    assert column_for_field(_named(field)).field_type == bigquery_type


@pytest.mark.parametrize(
    ("field", "mode"),
    [
        (models.CharField(max_length=10), "REQUIRED"),
        (models.CharField(max_length=10, null=True), "NULLABLE"),
        (models.DateTimeField(), "REQUIRED"),
        (models.DateTimeField(null=True), "NULLABLE"),
        (models.JSONField(null=True), "NULLABLE"),
        (models.BinaryField(), "REQUIRED"),
        (RepeatedStringField(), "REPEATED"),
    ],
)
def test_it_takes_the_mode_from_null(field: models.Field, mode: str) -> None:
    assert column_for_field(_named(field)).mode == mode


def test_it_never_makes_a_repeated_field_nullable() -> None:
    field = RepeatedStringField(null=True)
    assert field.null is False
    assert column_for_field(_named(field)).mode == "REPEATED"


def test_it_names_the_column_after_db_column() -> None:
    field = models.CharField(max_length=10, db_column="label_text")
    assert column_for_field(_named(field, "label")).name == "label_text"


@pytest.mark.parametrize(
    ("alias", "standard"),
    [
        ("INTEGER", "INT64"),
        ("FLOAT", "FLOAT64"),
        ("BOOLEAN", "BOOL"),
        ("DECIMAL", "NUMERIC"),
        ("string", "STRING"),
    ],
)
def test_it_normalizes_legacy_type_names(alias: str, standard: str) -> None:
    assert normalize_type(alias) == standard


# --- refused declarations: every model below is declared once (table_definition is cached) ----------
class SchemaBadPartitionType(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    label = models.CharField(max_length=10)
    table_spec = TableSpec(scope="test", partition_field="label")

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_bad_partition_type"


class SchemaMissingPartition(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    table_spec = TableSpec(scope="test", partition_field="created_at")

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_missing_partition"


class SchemaUnknownClustering(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    table_spec = TableSpec(scope="test", clustering=("key", "nope"))

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_unknown_clustering"


class SchemaTooMuchClustering(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    a = models.CharField(max_length=10)
    b = models.CharField(max_length=10)
    c = models.CharField(max_length=10)
    d = models.CharField(max_length=10)
    table_spec = TableSpec(scope="test", clustering=("key", "a", "b", "c", "d"))

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_too_much_clustering"


class SchemaDuration(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    elapsed = models.DurationField()
    table_spec = TableSpec(scope="test")

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_duration"


class SchemaTime(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    at = models.TimeField()
    table_spec = TableSpec(scope="test")

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_time"


class SchemaNoSpec(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_no_spec"


class SchemaDictSpec(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    table_spec = {"scope": "test"}

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_dict_spec"


class SchemaBadTableName(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    table_spec = TableSpec(scope="test")

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema bad; name"


class SchemaBadColumnName(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    label = models.CharField(max_length=10, db_column="la`bel")
    table_spec = TableSpec(scope="test")

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_bad_column_name"


class SchemaDatePartition(BigQueryModel):
    key = models.CharField(max_length=10, primary_key=True)
    day = models.DateField()
    table_spec = TableSpec(scope="test", partition_field="day", clustering=("key",))

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_date_partition"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (SchemaBadPartitionType, "partition"),
        (SchemaMissingPartition, "partition"),
        (SchemaUnknownClustering, "clustering"),
        (SchemaTooMuchClustering, "clustering"),
        (SchemaDuration, "elapsed"),
        (SchemaTime, "at"),
        (SchemaNoSpec, "table_spec"),
        (SchemaDictSpec, "table_spec"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else value,
)
def test_it_refuses_a_bad_declaration(model: type[models.Model], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        table_definition(model)


@pytest.mark.parametrize("model", [SchemaBadTableName, SchemaBadColumnName], ids=["table", "column"])
def test_it_refuses_a_declared_name_that_is_not_a_safe_identifier(model: type[models.Model]) -> None:
    with pytest.raises(InvalidIdentifier):
        table_definition(model)


def test_it_accepts_a_date_partition() -> None:
    definition = table_definition(SchemaDatePartition)
    assert definition.column("day").field_type == "DATE"


class SchemaImplicitKey(BigQueryModel):
    label = models.CharField(max_length=10)
    table_spec = TableSpec(scope="test")

    class Meta(BigQueryModel.Meta):
        app_label = "bigquery_backend"
        db_table = "schema_implicit_key"


def test_it_derives_an_implicit_auto_key_as_a_required_int64() -> None:
    definition = table_definition(SchemaImplicitKey)
    assert definition.key == "id"
    assert (definition.column("id").field_type, definition.column("id").mode) == ("INT64", "REQUIRED")


# --- tables created in the emulator ---------------------------------------------------------------
@pytest.mark.parametrize("model", ALL_MODELS)
def test_it_creates_a_table_with_the_declared_schema_and_layout(
    gateway: BigQueryGateway, dataset: str, model: type[models.Model]
) -> None:
    definition = table_definition(model)
    assert provisioning.create_table(gateway, dataset, definition)

    live = gateway.get_table(dataset, definition.name)

    assert [(f.name, normalize_type(f.field_type), f.mode) for f in live.schema] == [
        (f.column, expected_type(f), expected_mode(f)) for f in model._meta.concrete_fields
    ]
    spec = definition.spec
    if spec.partition_field:
        assert live.time_partitioning is not None
        assert (live.time_partitioning.type_, live.time_partitioning.field) == ("DAY", spec.partition_field)
    else:
        assert live.time_partitioning is None
    assert live.clustering_fields == list(spec.clustering)
    assert live.description == spec.description
    assert provisioning.compare(definition, live) == []


def test_it_creates_a_table_with_labels_and_column_descriptions(
    gateway: BigQueryGateway, dataset: str
) -> None:
    provisioning.create_table(gateway, dataset, table_definition(Widget))
    provisioning.create_table(gateway, dataset, table_definition(TenantApiKey))

    assert gateway.get_table(dataset, "widgets").labels == {"purpose": "tests"}
    live = {f.name: f for f in gateway.get_table(dataset, "tenant_api_keys").schema}
    assert live["api_key_hash"].description == str(TenantApiKey._meta.get_field("api_key_hash").help_text)


def test_it_creates_a_date_partitioned_table(gateway: BigQueryGateway, dataset: str) -> None:
    provisioning.create_table(gateway, dataset, table_definition(SchemaDatePartition))
    live = gateway.get_table(dataset, "schema_date_partition")
    assert live.time_partitioning is not None
    assert live.time_partitioning.field == "day"
