"""One table or view of a tenant dataset: its schema against the declared one, and a sample of its values.

Called by genai_safety.py for every table it lists; the values found in the sample are walked by
genai_safety_values.py. Findings go into genai_safety_report.py's types.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from google.cloud import bigquery

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import BackendUnavailable, BigQueryError, InvalidIdentifier, NotFound
from bigquery_backend.identifiers import check_column, quote_column, quote_table
from bigquery_backend.schema import TableDefinition, table_definition
from tenants_app.models import TENANT_MODELS
from tenants_app.secrets import find_secrets, is_sensitive_name, is_suspicious_name
from tenants_app.secrets import fingerprint as fingerprint_of
from tenants_app.services.genai_safety_report import (
    SCHEMA,
    SECRET_NAMED_COLUMN,
    UNKNOWN_COLUMN,
    UNKNOWN_TABLE,
    UNREADABLE_TABLE,
    VALUES,
    VIEW_CHANGED,
    Finding,
    TableScan,
)
from tenants_app.services.genai_safety_values import walk_value
from tenants_app.services.onboarding import VIEW_MODELS, tenant_view_query

logger = logging.getLogger(__name__)

# One leak copied into every row of a column is one problem: report the first rows, count the rest.
MAX_FINDINGS_PER_COLUMN = 20
_SCANNED_TYPES = frozenset({"STRING", "JSON", "BYTES", "RECORD", "STRUCT"})
_KEY_TYPES = frozenset({"STRING", "INTEGER", "INT64"})
_WHITESPACE = re.compile(r"\s+")


@cache
def _declared() -> tuple[dict[str, TableDefinition], dict[str, TableDefinition]]:
    """The tables and views a tenant dataset may hold, by name (built once, whole, before any use)."""
    tables = {table_definition(m).name: table_definition(m) for m in TENANT_MODELS}
    views = {table_definition(m).name: table_definition(m) for m in VIEW_MODELS}
    return tables, views


def scan_table(
    gateway: BigQueryGateway,
    dataset_id: str,
    table_id: str,
    *,
    tenant_id: str | None,
    sample_rows: int,
) -> tuple[TableScan | None, list[Finding], dict[int, str]]:
    """The table's scan, its findings, and the key hash behind each finding of a key of ours (by index)."""
    tables, views = _declared()
    name = _safe_name(table_id)
    try:
        live = gateway.get_table(dataset_id, table_id)
    except InvalidIdentifier:
        # BigQuery allows table names our strict identifier rules refuse: such a table was not made by
        # us, and it cannot be quoted safely, so it is reported without reading it.
        scan = TableScan(dataset=dataset_id, table=name, table_type="UNKNOWN", declared=False, findings=1)
        finding = Finding(
            check=SCHEMA,
            kind=UNKNOWN_TABLE,
            dataset=dataset_id,
            table=name,
            column=None,
            reason="table not declared for tenant datasets (name not readable safely: values not sampled)",
        )
        return scan, [finding], {}
    except NotFound:
        return None, [], {}  # dropped between listing and reading
    table_type = str(live.table_type or "TABLE")
    is_view = table_type == "VIEW"
    # Ours are plain tables and views: a materialized view, external table or snapshot is never ours,
    # whatever its name.
    definition = {"TABLE": tables, "VIEW": views}.get(table_type, {}).get(table_id)
    scan = TableScan(dataset=dataset_id, table=name, table_type=table_type, declared=definition is not None)
    schema = list(live.schema)
    unreadable: list[Finding] = []
    try:
        if schema or not is_view:
            readable = [f for f in schema if _scanned(f) and _quotable(f.name)]
            key_column = _key_column(schema, definition)
            rows = _sample(
                gateway, dataset_id, table_id, readable, key_column, schema, definition, sample_rows
            )
        else:
            # The emulator lists no columns for a view (BigQuery does): read such a view whole and
            # take its columns from the rows, so its values and column names are still checked.
            rows = _sample(gateway, dataset_id, table_id, None, None, schema, None, sample_rows)
            names = dict.fromkeys(key for row in rows for key in row)
            schema = [bigquery.SchemaField(column, "STRING") for column in names]
            readable = schema
            key_column = _key_column(schema, definition)
    except (BackendUnavailable, NotFound):
        raise
    except BigQueryError as exc:
        # A view over a table it may no longer read, or a type the client cannot decode: the table
        # cannot be vouched for, which is itself a finding.
        logger.warning("genai safety: cannot sample %s.%s: %s", dataset_id, name, exc)
        readable, key_column, rows = [], None, []
        unreadable.append(
            Finding(
                check=VALUES,
                kind=UNREADABLE_TABLE,
                dataset=dataset_id,
                table=name,
                column=None,
                reason=f"sample query failed ({type(exc).__name__}): values not checked",
            )
        )
    findings = _schema_findings(gateway, live, schema, dataset_id, name, definition, tenant_id=tenant_id)
    findings += unreadable
    scan.rows_sampled = len(rows)
    scan.columns_sampled = [f.name for f in readable]
    key_hashes: dict[int, str] = {}
    per_column: Counter[tuple[str, str]] = Counter()
    for row in rows:
        row_key = _row_key(row, key_column)
        for schema_field in readable:
            for hit in walk_value(
                row.get(schema_field.name), schema_field.name, _suspicious(schema_field.name)
            ):
                per_column[(hit.path, hit.kind)] += 1
                if per_column[(hit.path, hit.kind)] > MAX_FINDINGS_PER_COLUMN:
                    scan.findings_not_listed += 1
                    continue
                if hit.key_hash is not None:
                    key_hashes[len(findings)] = hit.key_hash
                findings.append(
                    Finding(
                        check=VALUES,
                        kind=hit.kind,
                        dataset=dataset_id,
                        table=name,
                        column=hit.path,
                        reason=hit.reason,
                        row_key=row_key,
                        fingerprint=hit.fingerprint,
                    )
                )
    scan.findings = len(findings) + scan.findings_not_listed
    return scan, findings, key_hashes


def _schema_findings(
    gateway: BigQueryGateway,
    live: bigquery.Table,
    schema: Sequence[bigquery.SchemaField],
    dataset_id: str,
    table: str,
    definition: TableDefinition | None,
    *,
    tenant_id: str | None,
) -> list[Finding]:
    findings: list[Finding] = []

    def add(kind: str, column: str | None, reason: str) -> None:
        findings.append(
            Finding(check=SCHEMA, kind=kind, dataset=dataset_id, table=table, column=column, reason=reason)
        )

    if definition is None:
        what = str(live.table_type or "TABLE").lower().replace("_", " ")
        add(UNKNOWN_TABLE, None, f"{what} not declared for tenant datasets (tenants_app/models.py)")
    declared = set(definition.column_names) if definition is not None else set()
    for path in _column_paths(schema):
        if definition is not None and path not in declared:
            add(UNKNOWN_COLUMN, _safe_name(path), "column not declared for this table")
        if is_sensitive_name(path):
            add(SECRET_NAMED_COLUMN, _safe_name(path), "column named like a secret")
    # BigQuery always returns a view's query; the emulator returns none, so there is nothing to compare
    # (its columns are still checked above, which catches a view onto another table).
    if definition is not None and live.table_type == "VIEW" and tenant_id is not None and live.view_query:
        expected = tenant_view_query(gateway.project, definition.model, tenant_id)
        if _normalized(live.view_query) != _normalized(expected):
            add(VIEW_CHANGED, None, "view query differs from onboarding's (it may read other tables or rows)")
    return findings


def _sample(
    gateway: BigQueryGateway,
    dataset_id: str,
    table_id: str,
    columns: Sequence[bigquery.SchemaField] | None,
    key_column: str | None,
    schema: Sequence[bigquery.SchemaField],
    definition: TableDefinition | None,
    sample_rows: int,
) -> list[dict[str, Any]]:
    """Up to `sample_rows` rows of `columns` (and the key), newest first when partitioned; None: all."""
    if columns is not None and not columns:
        return []
    if columns is None:
        select = "*"
    else:
        names = [f.name for f in columns]
        if key_column is not None and key_column not in names:
            names.insert(0, key_column)
        select = ", ".join(quote_column(n) for n in names)
    # Identifiers only through quote_column/quote_table (checked names), the size as a parameter.
    sql = f"SELECT {select} FROM {quote_table(gateway.project, dataset_id, table_id)}"  # noqa: S608
    partition = definition.spec.partition_field if definition is not None else None
    if partition and partition in {f.name for f in schema}:
        # The newest rows: where a new leak shows up first, and the same rows on every run of a check.
        sql += f" ORDER BY {quote_column(partition)} DESC"
    sql += " LIMIT @sample_rows"
    return gateway.query(sql, [bigquery.ScalarQueryParameter("sample_rows", "INT64", sample_rows)]).rows


# --- helpers ----------------------------------------------------------------------------------------
def _scanned(schema_field: bigquery.SchemaField) -> bool:
    return schema_field.field_type.upper() in _SCANNED_TYPES


def _suspicious(name: str) -> bool:
    return is_suspicious_name(name)


def _quotable(name: str) -> bool:
    try:
        check_column(name)
    except InvalidIdentifier:
        return False
    return True


def _key_column(schema: Sequence[bigquery.SchemaField], definition: TableDefinition | None) -> str | None:
    """The declared primary key, or for an unknown table its first `id`/`*_id` column, if readable."""
    names = {f.name: f for f in schema}
    if definition is not None:
        return definition.key if definition.key in names else None
    for schema_field in schema:
        if (
            (schema_field.name == "id" or schema_field.name.endswith("_id"))
            and schema_field.field_type.upper() in _KEY_TYPES
            and schema_field.mode != "REPEATED"
            and _quotable(schema_field.name)
        ):
            return schema_field.name
    return None


def _row_key(row: Mapping[str, Any], key_column: str | None) -> dict[str, str] | None:
    if key_column is None:
        return None
    value = row.get(key_column)
    text = "" if value is None else str(value)
    if find_secrets(text):
        # The key itself is a secret: name it by fingerprint only.
        return {key_column: f"<redacted {fingerprint_of(text)}>"}
    return {key_column: text[:200]}


def _column_paths(schema: Sequence[bigquery.SchemaField], prefix: str = "") -> Iterator[str]:
    for schema_field in schema:
        path = f"{prefix}{schema_field.name}"
        yield path
        if schema_field.fields:
            yield from _column_paths(schema_field.fields, prefix=f"{path}.")


def _safe_name(name: str) -> str:
    """A table or column name for the report, unless the name itself carries a secret."""
    if find_secrets(name):
        return f"<name {fingerprint_of(name)}>"
    return name


def _normalized(sql: str | None) -> str:
    return _WHITESPACE.sub(" ", (sql or "").strip()).rstrip(";")
