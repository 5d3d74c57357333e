"""Existing tenants' read-only views brought up to the current query (`onboarding.tenant_view_query`).

Onboarding creates each tenant's views once; when their query changes (a column masked, say the actors
of `actors.actor_masked_sql`), `bootstrap_bigquery` replaces the query of the views already there, so
every tenant reads through the same, current rule. A view keeps its authorisation on the central
dataset when its query is replaced (the access entry names the view, not its SQL).
"""

from __future__ import annotations

import logging

from bigquery_backend.client import get_gateway
from bigquery_backend.exceptions import NotFound
from bigquery_backend.schema import table_definition
from tenants_app.models import TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.datasets import tenant_dataset
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.onboarding import VIEW_MODELS, tenant_view_query

logger = logging.getLogger(__name__)


def tenant_views_refresh(*, tenant_id: str, dry_run: bool = False) -> list[str]:
    """Replace the query of the tenant's views that differ from the current one; the names replaced.

    A missing dataset or view is left alone: creating and authorising views is onboarding's step (a
    resumed onboarding finishes it), never a side effect of a schema check.
    """
    gateway = get_gateway()
    dataset_id = tenant_dataset(tenant_id)
    replaced = []
    for model in VIEW_MODELS:
        name = table_definition(model).name
        try:
            view = gateway.get_table(dataset_id, name)
        except NotFound:
            continue
        try:
            wanted = tenant_view_query(gateway.project, model, tenant_id)
        except ValidationFailed:
            # An id no view can embed (a tenant of the original system): onboarding made no view for
            # it, so whatever sits there is not ours to rewrite; audit_genai_safety reports it.
            logger.warning("view %s.%s left as it is: its tenant id cannot be embedded", dataset_id, name)
            continue
        # The emulator answers without a view's query: then it is replaced every time, harmlessly.
        if view.table_type != "VIEW" or view.view_query == wanted:
            continue
        if not dry_run:
            view.view_query = wanted
            gateway.update_table(view, ["view_query"])
            logger.info("view %s.%s now reads through the current query", dataset_id, name)
        replaced.append(name)
    return replaced


def tenant_views_refresh_all(*, dry_run: bool = False) -> dict[str, list[str]]:
    """`tenant_views_refresh` for every tenant with a profile; tenant id -> the views replaced."""
    try:
        tenant_ids = [p.tenant_id for p in central_repository(TenantProfile).list(fields=("tenant_id",))]
    except NotFound:
        return {}  # no central dataset yet (a dry run before the first bootstrap): no tenant either
    results = {
        tenant_id: tenant_views_refresh(tenant_id=tenant_id, dry_run=dry_run) for tenant_id in tenant_ids
    }
    return {tenant_id: names for tenant_id, names in results.items() if names}
