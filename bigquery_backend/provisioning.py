"""Create and check datasets and tables from their declarations; report and repair schema drift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.cloud import bigquery

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import Conflict, InvalidInput, NotFound
from bigquery_backend.identifiers import quote_column, quote_table
from bigquery_backend.schema import NULLABLE, Column, TableDefinition, normalize_type

MISSING = "missing"
EXTRA = "extra"
TYPE_MISMATCH = "type"
MODE_MISMATCH = "mode"
LAYOUT_MISMATCH = "layout"


@dataclass(frozen=True)
class Drift:
    """One difference between a declared table and the live one."""

    kind: str
    column: str
    expected: str | None
    actual: str | None

    @property
    def fixable(self) -> bool:
        """Only a missing NULLABLE column can be added safely; nothing is ever dropped or retyped."""
        return self.kind == MISSING and self.expected is not None and self.expected.endswith(NULLABLE)

    def describe(self) -> str:
        if self.kind == MISSING:
            return f"column {self.column} ({self.expected}) is missing"
        if self.kind == EXTRA:
            return f"column {self.column} ({self.actual}) is not declared"
        return f"{self.column}: expected {self.expected}, found {self.actual}"


def ensure_dataset(
    gateway: BigQueryGateway,
    dataset_id: str,
    *,
    labels: Mapping[str, str],
    description: str,
    dry_run: bool = False,
) -> str:
    """Create the dataset or add our labels; returns `created`, `labelled`, `exists` or `would ...`."""
    try:
        dataset = gateway.get_dataset(dataset_id)
    except NotFound:
        if dry_run:
            return "would create"
        dataset = bigquery.Dataset(gateway.dataset_ref(dataset_id))
        dataset.location = gateway.location
        dataset.labels = dict(labels)
        dataset.description = description
        try:
            gateway.create_dataset(dataset)
        except Conflict:
            # Another bootstrap won the race: the dataset exists, which is all we wanted.
            return "exists"
        return "created"
    missing = {key: value for key, value in labels.items() if dataset.labels.get(key) != value}
    if not missing:
        return "exists"
    if dry_run:
        return "would label"
    dataset.labels = {**dataset.labels, **missing}
    gateway.update_dataset(dataset, ["labels"])
    return "labelled"


def live_table(
    gateway: BigQueryGateway, dataset_id: str, definition: TableDefinition
) -> bigquery.Table | None:
    """The live table, or None when it does not exist."""
    try:
        return gateway.get_table(dataset_id, definition.name)
    except NotFound:
        return None


def create_table(gateway: BigQueryGateway, dataset_id: str, definition: TableDefinition) -> bool:
    """Create the table through the API; False if it appeared meanwhile."""
    try:
        gateway.create_table(definition.build_table(gateway.table_ref(dataset_id, definition.name)))
    except Conflict:
        return False
    return True


def compare(definition: TableDefinition, table: bigquery.Table) -> list[Drift]:
    """Every column and layout difference between the declaration and the live table."""
    drift: list[Drift] = []
    live = {field.name: field for field in table.schema}
    for column in definition.columns:
        field = live.get(column.name)
        if field is None:
            drift.append(Drift(MISSING, column.name, f"{column.field_type} {column.mode}", None))
            continue
        if normalize_type(field.field_type) != column.field_type:
            drift.append(
                Drift(TYPE_MISMATCH, column.name, column.field_type, normalize_type(field.field_type))
            )
        if (field.mode or NULLABLE) != column.mode:
            drift.append(Drift(MODE_MISMATCH, column.name, column.mode, field.mode or NULLABLE))
    declared = set(definition.column_names)
    drift.extend(
        Drift(EXTRA, name, None, f"{normalize_type(field.field_type)} {field.mode or NULLABLE}")
        for name, field in live.items()
        if name not in declared
    )
    spec = definition.spec
    partitioning = table.time_partitioning
    expected_partition = f"{spec.partition_type}({spec.partition_field})" if spec.partition_field else "none"
    actual_partition = f"{partitioning.type_}({partitioning.field})" if partitioning else "none"
    if expected_partition != actual_partition:
        drift.append(Drift(LAYOUT_MISMATCH, "(partitioning)", expected_partition, actual_partition))
    expected_clustering = ",".join(spec.clustering) or "none"
    actual_clustering = ",".join(table.clustering_fields or ()) or "none"
    if expected_clustering != actual_clustering:
        drift.append(Drift(LAYOUT_MISMATCH, "(clustering)", expected_clustering, actual_clustering))
    return drift


def add_columns(
    gateway: BigQueryGateway, dataset_id: str, definition: TableDefinition, columns: Sequence[Column]
) -> None:
    """Add NULLABLE columns with DDL, then make sure the table's metadata lists them too."""
    if not columns:
        return
    refused = [column.name for column in columns if column.mode != NULLABLE]
    if refused:
        # The DDL below adds NULLABLE columns only; REQUIRED or REPEATED ones need a migration.
        raise InvalidInput(
            f"only NULLABLE columns can be added: {', '.join(refused)}",
            errors={name: ["Not NULLABLE."] for name in refused},
        )
    table_sql = quote_table(gateway.project, dataset_id, definition.name)
    for column in columns:
        # One column per statement: the emulator refuses several ADD COLUMN clauses in one ALTER.
        addition = f"ADD COLUMN IF NOT EXISTS {quote_column(column.name)} {column.field_type}"
        gateway.query(f"ALTER TABLE {table_sql} {addition}")
    # On BigQuery the DDL updates both storage and metadata and this is a no-op. The emulator only
    # alters storage (see emulator.py), so patch the metadata when it still lacks the columns.
    table = gateway.get_table(dataset_id, definition.name)
    present = {field.name for field in table.schema}
    missing = [column.to_schema_field() for column in columns if column.name not in present]
    if missing:
        table.schema = [*table.schema, *missing]
        gateway.update_table(table, ["schema"])
