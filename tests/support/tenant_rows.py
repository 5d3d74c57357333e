"""A tenant's central rows read back from BigQuery: what another tenant's refused (404) write must not touch.

    with rows_left_alone(tenant_b, TenantApiKey):
        response = as_tenant(a_key).post(f"/api/v1/me/keys/{b_key_id}/revoke", ...)
    assert response.status_code == 404

A 404 only says the caller was refused; the rows say whether the write happened anyway (a check made
after the UPDATE, say). `snapshot` and `changes` serve tests that collect failures instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bigquery_backend.models import BigQueryModel
from tenants_app.repositories import central_repository

# table -> row key -> column values
Snapshot = dict[str, dict[Any, dict[str, Any]]]


def snapshot(tenant_id: str, *models: type[BigQueryModel]) -> Snapshot:
    """Every row of the tenant in these central tables (one job per table), column by column."""
    taken: Snapshot = {}
    for model in models:
        rows = central_repository(model).list(filters={"tenant_id": tenant_id})
        # Column values, not the instances: Django models compare by primary key only.
        taken[model._meta.db_table] = {
            row.pk: {f.attname: getattr(row, f.attname) for f in model._meta.concrete_fields} for row in rows
        }
    return taken


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """What differs, by table, row key and column name; never the values (some are secrets)."""
    found = []
    for table, rows in before.items():
        now = after[table]
        found += [f"{table}: row {key} added" for key in now.keys() - rows.keys()]
        found += [f"{table}: row {key} removed" for key in rows.keys() - now.keys()]
        for key in rows.keys() & now.keys():
            columns = sorted(name for name, value in rows[key].items() if now[key][name] != value)
            if columns:
                found.append(f"{table}: row {key} changed {', '.join(columns)}")
    return sorted(found)


@contextmanager
def rows_left_alone(tenant_id: str, *models: type[BigQueryModel]) -> Iterator[None]:
    """Asserts that the block left the tenant's rows in these central tables exactly as they were."""
    before = snapshot(tenant_id, *models)
    yield
    found = changes(before, snapshot(tenant_id, *models))
    assert not found, f"tenant {tenant_id}'s rows changed: " + "; ".join(found)
