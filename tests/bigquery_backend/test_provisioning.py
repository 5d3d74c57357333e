"""Provisioning: datasets with labels, tables from declarations, drift reports and safe repairs."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable

import pytest
from google.cloud import bigquery

from bigquery_backend import provisioning
from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import InvalidInput, NotFound
from bigquery_backend.provisioning import Drift
from bigquery_backend.repository import Add, Now, Repository
from bigquery_backend.schema import TableDefinition, table_definition
from tests.bigquery_backend.widgets import Widget, make_widget, widget_values

WIDGETS = table_definition(Widget)


def new_dataset_name() -> str:
    return f"prov_{uuid.uuid4().hex[:12]}"


def create_variant(
    gateway: BigQueryGateway,
    dataset: str,
    *,
    drop: Iterable[str] = (),
    replace: dict[str, bigquery.SchemaField] | None = None,
    add: Iterable[bigquery.SchemaField] = (),
    partition_field: str | None = "created_at",
    clustering: list[str] | None = None,
) -> bigquery.Table:
    """Create `widgets` with a deliberately different schema or layout and return the live table."""
    replace = replace or {}
    schema = [replace.get(f.name, f) for f in WIDGETS.schema() if f.name not in set(drop)] + list(add)
    table = bigquery.Table(gateway.table_ref(dataset, WIDGETS.name), schema=schema)
    if partition_field:
        table.time_partitioning = bigquery.TimePartitioning(type_="DAY", field=partition_field)
    table.clustering_fields = clustering if clustering is not None else list(WIDGETS.spec.clustering)
    gateway.create_table(table)
    return gateway.get_table(dataset, WIDGETS.name)


def drift_of(
    definition: TableDefinition, table: bigquery.Table
) -> set[tuple[str, str, str | None, str | None]]:
    return {(d.kind, d.column, d.expected, d.actual) for d in provisioning.compare(definition, table)}


# --- datasets -------------------------------------------------------------------------------------
def test_it_creates_a_missing_dataset_with_labels_and_description(gateway: BigQueryGateway) -> None:
    name = new_dataset_name()
    outcome = provisioning.ensure_dataset(gateway, name, labels={"data": "protected"}, description="Central")
    live = gateway.get_dataset(name)
    assert outcome == "created"
    assert live.labels == {"data": "protected"}
    assert live.description == "Central"
    assert live.location == gateway.location


def test_it_reports_an_existing_labelled_dataset_as_existing(gateway: BigQueryGateway) -> None:
    name = new_dataset_name()
    provisioning.ensure_dataset(gateway, name, labels={"data": "protected"}, description="")
    with gateway.count_jobs() as counter:
        outcome = provisioning.ensure_dataset(gateway, name, labels={"data": "protected"}, description="")
    assert outcome == "exists"
    assert counter.api_calls == 1


def test_it_adds_missing_labels_and_keeps_the_others(gateway: BigQueryGateway) -> None:
    name = new_dataset_name()
    dataset = bigquery.Dataset(gateway.dataset_ref(name))
    dataset.labels = {"owner": "ops", "data": "public"}
    gateway.create_dataset(dataset)

    outcome = provisioning.ensure_dataset(
        gateway, name, labels={"data": "protected", "tier": "gold"}, description=""
    )

    assert outcome == "labelled"
    assert gateway.get_dataset(name).labels == {"owner": "ops", "data": "protected", "tier": "gold"}


def test_it_changes_nothing_in_a_dry_run(gateway: BigQueryGateway) -> None:
    missing, unlabelled = new_dataset_name(), new_dataset_name()
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(unlabelled)))

    assert provisioning.ensure_dataset(gateway, missing, labels={"a": "b"}, description="", dry_run=True) == (
        "would create"
    )
    assert provisioning.ensure_dataset(
        gateway, unlabelled, labels={"a": "b"}, description="", dry_run=True
    ) == ("would label")
    with pytest.raises(NotFound):
        gateway.get_dataset(missing)
    assert not gateway.get_dataset(unlabelled).labels


def test_it_refuses_a_hostile_dataset_name_before_any_call(gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput):
        provisioning.ensure_dataset(gateway, "tenants; DROP", labels={}, description="")
    assert (counter.jobs, counter.api_calls) == (0, 0)


# --- tables ---------------------------------------------------------------------------------------
def test_it_creates_a_table_once(gateway: BigQueryGateway, dataset: str) -> None:
    assert provisioning.live_table(gateway, dataset, WIDGETS) is None
    assert provisioning.create_table(gateway, dataset, WIDGETS) is True
    assert provisioning.create_table(gateway, dataset, WIDGETS) is False
    assert gateway.list_table_ids(dataset) == ["widgets"]
    live = provisioning.live_table(gateway, dataset, WIDGETS)
    assert live is not None
    assert [f.name for f in live.schema] == list(WIDGETS.column_names)


def test_it_finds_no_drift_on_a_table_it_created(gateway: BigQueryGateway, dataset: str) -> None:
    provisioning.create_table(gateway, dataset, WIDGETS)
    assert provisioning.compare(WIDGETS, gateway.get_table(dataset, "widgets")) == []


# --- drift ----------------------------------------------------------------------------------------
def test_it_reports_missing_and_extra_columns(gateway: BigQueryGateway, dataset: str) -> None:
    live = create_variant(
        gateway, dataset, drop=["notes", "quantity"], add=[bigquery.SchemaField("legacy_flag", "BOOL")]
    )
    assert drift_of(WIDGETS, live) == {
        ("missing", "notes", "STRING NULLABLE", None),
        ("missing", "quantity", "INT64 REQUIRED", None),
        ("extra", "legacy_flag", None, "BOOL NULLABLE"),
    }


def test_it_reports_type_and_mode_mismatches(gateway: BigQueryGateway, dataset: str) -> None:
    live = create_variant(
        gateway,
        dataset,
        replace={
            "quantity": bigquery.SchemaField("quantity", "STRING", mode="REQUIRED"),
            "name": bigquery.SchemaField("name", "STRING", mode="NULLABLE"),
            "ratio": bigquery.SchemaField("ratio", "NUMERIC", mode="REQUIRED"),
            "tags": bigquery.SchemaField("tags", "STRING", mode="NULLABLE"),
        },
    )
    assert drift_of(WIDGETS, live) == {
        ("type", "quantity", "INT64", "STRING"),
        ("mode", "name", "REQUIRED", "NULLABLE"),
        ("type", "ratio", "FLOAT64", "NUMERIC"),
        ("mode", "ratio", "NULLABLE", "REQUIRED"),
        ("mode", "tags", "REPEATED", "NULLABLE"),
    }


def test_it_accepts_legacy_type_names_as_the_same_type(gateway: BigQueryGateway, dataset: str) -> None:
    live = create_variant(
        gateway,
        dataset,
        replace={
            "quantity": bigquery.SchemaField("quantity", "INTEGER", mode="REQUIRED"),
            "ratio": bigquery.SchemaField("ratio", "FLOAT", mode="NULLABLE"),
            "active": bigquery.SchemaField("active", "BOOLEAN", mode="REQUIRED"),
        },
    )
    assert provisioning.compare(WIDGETS, live) == []


def test_it_reports_a_missing_partitioning(gateway: BigQueryGateway, dataset: str) -> None:
    live = create_variant(gateway, dataset, partition_field=None)
    assert drift_of(WIDGETS, live) == {("layout", "(partitioning)", "DAY(created_at)", "none")}


def test_it_reports_partitioning_on_another_column(gateway: BigQueryGateway, dataset: str) -> None:
    live = create_variant(gateway, dataset, partition_field="touched_at")
    assert drift_of(WIDGETS, live) == {("layout", "(partitioning)", "DAY(created_at)", "DAY(touched_at)")}


@pytest.mark.parametrize(
    ("clustering", "actual"),
    [(["name"], "name"), (["name", "kind"], "name,kind"), ([], "none")],
    ids=["fewer", "reordered", "none"],
)
def test_it_reports_a_different_clustering(
    gateway: BigQueryGateway, dataset: str, clustering: list[str], actual: str
) -> None:
    live = create_variant(gateway, dataset, clustering=clustering)
    assert drift_of(WIDGETS, live) == {("layout", "(clustering)", "kind,name", actual)}


def test_it_marks_only_missing_nullable_columns_as_fixable() -> None:
    assert Drift("missing", "notes", "STRING NULLABLE", None).fixable
    assert not Drift("missing", "quantity", "INT64 REQUIRED", None).fixable
    assert not Drift("missing", "tags", "STRING REPEATED", None).fixable
    assert not Drift("extra", "legacy", None, "STRING NULLABLE").fixable
    assert not Drift("type", "quantity", "INT64", "STRING").fixable
    assert not Drift("mode", "name", "REQUIRED", "NULLABLE").fixable


def test_it_describes_each_drift_with_its_column() -> None:
    for drift in (
        Drift("missing", "notes", "STRING NULLABLE", None),
        Drift("extra", "legacy", None, "BOOL NULLABLE"),
        Drift("type", "quantity", "INT64", "STRING"),
        Drift("layout", "(clustering)", "kind,name", "none"),
    ):
        text = drift.describe()
        assert drift.column in text
        assert (drift.expected or drift.actual or "") in text


# --- repairs --------------------------------------------------------------------------------------
NEW_COLUMNS = ["notes", "touched_at", "due_on", "attributes", "payload", "price"]


@pytest.fixture
def outdated(gateway: BigQueryGateway, dataset: str) -> Repository[Widget]:
    """A live `widgets` table lacking several NULLABLE columns, holding one old row."""
    create_variant(gateway, dataset, drop=NEW_COLUMNS)
    old_columns = [name for name in WIDGETS.column_names if name not in NEW_COLUMNS]
    gateway.query(
        f"INSERT INTO `{gateway.project}.{dataset}.widgets` ({', '.join(old_columns)}) "
        "VALUES ('old', 'old row', 'GEAR', 1, 0, NULL, NULL, TRUE, TIMESTAMP '2024-01-01 00:00:00+00', [])"
    )
    return Repository(Widget, dataset=dataset, gateway=gateway)


def fixable_columns(gateway: BigQueryGateway, dataset: str) -> list[provisioning.Column]:
    drift = provisioning.compare(WIDGETS, gateway.get_table(dataset, "widgets"))
    return [WIDGETS.column(d.column) for d in drift if d.fixable]


def test_it_adds_missing_nullable_columns_to_the_catalog(
    gateway: BigQueryGateway, dataset: str, outdated: Repository[Widget]
) -> None:
    columns = fixable_columns(gateway, dataset)
    assert sorted(c.name for c in columns) == sorted(NEW_COLUMNS)

    provisioning.add_columns(gateway, dataset, WIDGETS, columns)

    live = gateway.get_table(dataset, "widgets")
    added = {f.name: (f.field_type, f.mode) for f in live.schema if f.name in NEW_COLUMNS}
    assert added == {c.name: (c.field_type, "NULLABLE") for c in columns}
    assert provisioning.compare(WIDGETS, live) == []


def test_it_makes_added_columns_usable_by_dml_at_once(
    gateway: BigQueryGateway, dataset: str, outdated: Repository[Widget]
) -> None:
    provisioning.add_columns(gateway, dataset, WIDGETS, fixable_columns(gateway, dataset))
    row = make_widget(
        "new", notes="ü", due_on=datetime.date(2024, 2, 29), attributes={"a": [1]}, payload=b"\x00"
    )
    expected = widget_values(row)

    outdated.insert(row)
    outdated.update_where({"notes": "updated", "touched_at": Now()}, filters={"widget_id": "old"})
    outdated.update_where({"used": Add(1)}, filters={"notes": "updated"})

    assert widget_values(outdated.get("new")) == expected
    old = outdated.get("old")
    assert (old.notes, old.used, old.due_on, old.payload) == ("updated", 1, None, None)
    assert old.touched_at is not None
    assert outdated.count(filters={"due_on__isnull": True}) == 1


def test_it_adds_columns_idempotently(
    gateway: BigQueryGateway, dataset: str, outdated: Repository[Widget]
) -> None:
    columns = fixable_columns(gateway, dataset)
    provisioning.add_columns(gateway, dataset, WIDGETS, columns)
    provisioning.add_columns(gateway, dataset, WIDGETS, columns)
    names = [f.name for f in gateway.get_table(dataset, "widgets").schema]
    assert sorted(names) == sorted(WIDGETS.column_names)


def test_it_adds_nothing_for_no_columns(gateway: BigQueryGateway, dataset: str) -> None:
    with gateway.count_jobs() as counter:
        provisioning.add_columns(gateway, dataset, WIDGETS, [])
    assert (counter.jobs, counter.api_calls) == (0, 0)


@pytest.mark.parametrize("name", ["quantity", "tags"], ids=["required", "repeated"])
def test_it_refuses_to_add_a_column_that_is_not_nullable(
    gateway: BigQueryGateway, dataset: str, name: str
) -> None:
    create_variant(gateway, dataset, drop=[name])
    with gateway.count_jobs() as counter, pytest.raises(InvalidInput):
        provisioning.add_columns(gateway, dataset, WIDGETS, [WIDGETS.column(name)])
    assert counter.jobs == 0
    assert name not in [f.name for f in gateway.get_table(dataset, "widgets").schema]
