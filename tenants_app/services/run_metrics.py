"""Runs by state and queue depth for /metrics: one query, shared by every process for a few seconds.

A scraper polls every 15-60 s, and there may be several (HA Prometheus pairs, a dev's curl loop): each
scrape of each process would otherwise be a BigQuery job. The figures are kept in the shared Django
cache, so the whole machine (or cluster, with Redis) runs at most one query per RUN_STATS_CACHE_SECONDS.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.client import get_gateway
from bigquery_backend.identifiers import quote_table
from bigquery_backend.schema import table_definition
from tenants_app.models import RunState, TenantPipelineExecutionQueue
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.datasets import central_dataset

RUN_STATS_CACHE_SECONDS = 15
_CACHE_KEY = "metrics:run-states:v1"


@dataclass(frozen=True)
class RunStateCounts:
    """Queue rows per state (every state present, 0 when none) and QUEUED runs claimable now."""

    by_state: dict[str, int]
    claimable: int


def run_state_counts(*, now: datetime | None = None) -> RunStateCounts:
    """The counts from the shared cache while fresh (judged by `now`), else from one query."""
    now = timezone.now() if now is None else now
    cached = cache.get(_CACHE_KEY)
    # The entry carries its own deadline on the caller's clock (tests move it; the backend's TTL they
    # cannot), and the backend's TTL only clears it away.
    if cached is not None and cached["fresh_until"] > now:
        return cached["counts"]
    counts = _query(now)
    fresh_until = now + timedelta(seconds=RUN_STATS_CACHE_SECONDS)
    cache.set(_CACHE_KEY, {"counts": counts, "fresh_until": fresh_until}, RUN_STATS_CACHE_SECONDS)
    return counts


def _query(now: datetime) -> RunStateCounts:
    gateway = get_gateway()
    table = quote_table(
        gateway.project, central_dataset(), table_definition(TenantPipelineExecutionQueue).name
    )
    sql = (
        "SELECT state, COUNT(*) AS runs, "  # noqa: S608 - table from quote_table, values are parameters
        "COUNTIF(state = @queued AND (available_at IS NULL OR available_at <= @now)) AS claimable "
        f"FROM {table} GROUP BY state"
    )
    parameters = [
        bigquery.ScalarQueryParameter("queued", "STRING", RunState.QUEUED.value),
        bigquery.ScalarQueryParameter("now", "TIMESTAMP", now),
    ]
    with bigquery_errors_translated():
        rows = gateway.query(sql, parameters).rows
    by_state = {state.value: 0 for state in RunState}
    for row in rows:
        by_state[str(row["state"])] = int(row["runs"])
    return RunStateCounts(by_state=by_state, claimable=sum(int(row["claimable"]) for row in rows))
