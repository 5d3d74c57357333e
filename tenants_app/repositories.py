"""Repositories for the tenant tables, bound to the dataset each table lives in."""

from __future__ import annotations

from typing import TypeVar

from bigquery_backend.models import BigQueryModel
from bigquery_backend.repository import Repository
from bigquery_backend.schema import table_definition
from tenants_app.models import CENTRAL, TENANT
from tenants_app.services.datasets import central_dataset, tenant_dataset

M = TypeVar("M", bound=BigQueryModel)


def central_repository(model: type[M]) -> Repository[M]:
    """Repository of a central-dataset table."""
    if table_definition(model).spec.scope != CENTRAL:
        raise ValueError(f"{model.__name__} is not a central table")
    return Repository(model, dataset=central_dataset())


def tenant_repository(model: type[M], tenant_id: str) -> Repository[M]:
    """Repository of a table in one tenant's own dataset."""
    if table_definition(model).spec.scope != TENANT:
        raise ValueError(f"{model.__name__} is not a per-tenant table")
    return Repository(model, dataset=tenant_dataset(tenant_id))
