"""Every column of the original system exists in our tables with the same name, type and mode."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.schema import normalize_type, table_definition
from tenants_app.models import CENTRAL_MODELS, TENANT_MODELS
from tenants_app.services.bootstrap import bigquery_bootstrap
from tests.conftest import unique_name

# A copy is kept in the repository so the check runs anywhere; when the shared reference sits beside
# the checkout (as in CI), the copy must still match it.
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "original-schema.md"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "original-schema.md"

HEADING = re.compile(r"^## (\w+)\s+\(central dataset `tenants`\)|^## (\w+)\s+\(per-tenant dataset\)")
ROW = re.compile(r"^\| (\w+) \| (\w+) \| (REQUIRED|NULLABLE|REPEATED) \|$")


@dataclass
class OriginalTable:
    scope: str
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)


def original_tables() -> dict[str, OriginalTable]:
    """Parse the reference into {table: OriginalTable(scope, {column: (type, mode)})}."""
    tables: dict[str, OriginalTable] = {}
    current: OriginalTable | None = None
    for line in FIXTURE.read_text().splitlines():
        heading = HEADING.match(line)
        if heading:
            central, tenant = heading.groups()
            current = tables.setdefault(central or tenant, OriginalTable("central" if central else "tenant"))
            continue
        row = ROW.match(line)
        if row and current is not None:
            current.columns[row.group(1)] = (row.group(2), row.group(3))
    return tables


ORIGINAL = original_tables()
MODELS = {table_definition(model).name: model for model in (*CENTRAL_MODELS, *TENANT_MODELS)}


def test_it_parses_all_eleven_original_tables() -> None:
    assert len(ORIGINAL) == 11
    assert sum(1 for table in ORIGINAL.values() if table.scope == "central") == 8
    assert all(len(table.columns) >= 8 for table in ORIGINAL.values())


@pytest.mark.skipif(not SHARED.exists(), reason="shared reference not beside this checkout")
def test_it_keeps_the_reference_copy_identical_to_the_shared_one() -> None:
    assert FIXTURE.read_text() == SHARED.read_text()


def test_it_declares_a_model_for_every_original_table_in_the_same_scope() -> None:
    # Our tables beyond the original 11: the central audit log (issue 4) and webhooks (issue 13).
    assert set(MODELS) - set(ORIGINAL) == {
        "audit_log",
        "tenant_webhook_endpoints",
        "tenant_webhook_deliveries",
    }
    assert set(ORIGINAL) <= set(MODELS)
    for name, table in ORIGINAL.items():
        assert table_definition(MODELS[name]).spec.scope == table.scope, name


@pytest.mark.parametrize("table", sorted(ORIGINAL))
def test_it_keeps_every_original_column_with_its_type_and_mode(table: str) -> None:
    definition = table_definition(MODELS[table])
    for column, (field_type, mode) in ORIGINAL[table].columns.items():
        ours = definition.column(column)
        assert (ours.field_type, ours.mode) == (normalize_type(field_type), mode), f"{table}.{column}"


def test_it_creates_live_tables_that_match_the_original_columns(
    central_dataset: str, gateway: BigQueryGateway
) -> None:
    tenant_id = unique_name("acme")
    bigquery_bootstrap(tenant_id=tenant_id)
    bigquery_bootstrap()
    for table, original in ORIGINAL.items():
        dataset = central_dataset if original.scope == "central" else tenant_id
        live = {f.name: f for f in gateway.get_table(dataset, table).schema}
        for column, (field_type, mode) in original.columns.items():
            assert normalize_type(live[column].field_type) == normalize_type(field_type), f"{table}.{column}"
            assert live[column].mode == mode, f"{table}.{column}"
