"""Where each tenant table lives: dataset names and labels for both scopes."""

from __future__ import annotations

import re

from django.conf import settings

from bigquery_backend.exceptions import InvalidIdentifier
from bigquery_backend.identifiers import check_dataset
from tenants_app.models import CENTRAL, TENANT

# The original system's pattern (the only one: onboarding also wants lowercase for a new tenant); it also
# names the tenant's dataset, so nothing else is allowed.
TENANT_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_]{3,50}$")

CENTRAL_DATASET_LABELS = {"protection": "protected", "genai_access": "denied", "managed_by": "convergence"}
TENANT_DATASET_LABELS = {
    "protection": "tenant_operational",
    "genai_safe": "true",
    "managed_by": "convergence",
}


def check_tenant_id(tenant_id: object) -> str:
    """Return `tenant_id` if it matches the tenant id pattern, else raise InvalidIdentifier."""
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidIdentifier(
            f"tenant id {tenant_id!r} is not allowed: use 3-50 letters, digits or underscores",
            errors={"tenant_id": ["Use 3-50 letters, digits or underscores."]},
        )
    return tenant_id


def central_dataset() -> str:
    """The protected central dataset (setting TENANTS_DATASET)."""
    return check_dataset(settings.TENANTS_DATASET)


def tenant_dataset(tenant_id: str) -> str:
    """The tenant's own dataset (setting TENANT_DATASET_TEMPLATE)."""
    return check_dataset(settings.TENANT_DATASET_TEMPLATE.format(tenant_id=check_tenant_id(tenant_id)))


def dataset_for_scope(scope: str, tenant_id: str | None = None) -> str:
    """The dataset a table of `scope` lives in."""
    if scope == CENTRAL:
        return central_dataset()
    if scope == TENANT:
        if tenant_id is None:
            raise ValueError("tenant tables need a tenant_id")
        return tenant_dataset(tenant_id)
    raise ValueError(f"unknown scope {scope!r}")


def tenant_dataset_labels(tenant_id: str) -> dict[str, str]:
    """Labels of a tenant dataset; label values allow lowercase letters, digits, `_` and `-` only."""
    return {**TENANT_DATASET_LABELS, "tenant_id": tenant_id.lower()}
