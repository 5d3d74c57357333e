"""Prometheus metrics of the portal and API: what they count, and the text a scraper reads.

Two kinds, decided by where the truth lives:

- Events (BigQuery jobs and their latency, refused admissions, key-cache hits and misses, webhook
  deliveries) happen in whichever process served the request, so each process counts its own. Under
  gunicorn several processes serve one address: prometheus-client's multiprocess mode keeps each
  process's counts in files of one private directory ($DATA_DIR/metrics, set up by the gunicorn master,
  convergence/prometheus.py) and a scrape adds them up, so any worker answers for all of them. Without
  that directory (runserver, tests, commands) the counts are this process's own, in memory.
- State (runs by state, queue depth) is not any process's to count: it is in BigQuery, read at scrape
  time by one query cached in the shared cache (services/run_metrics.py), so scrapers cost BigQuery at
  most one job per cache period whatever their number and interval.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from bigquery_backend.exceptions import BigQueryError
from bigquery_backend.observers import add_job_observer
from convergence.prometheus import MULTIPROCESS_DIR_VARIABLE
from tenants_app.services.errors import ServiceError

logger = logging.getLogger(__name__)


BIGQUERY_JOBS = Counter(
    "convergence_bigquery_jobs",
    "BigQuery jobs and metadata calls, by statement class and outcome.",
    ["statement_class", "outcome"],
)
BIGQUERY_JOB_SECONDS = Histogram(
    "convergence_bigquery_job_seconds",
    "Duration of BigQuery jobs and metadata calls (retries included), by statement class.",
    ["statement_class"],
    # BigQuery answers short statements in tenths of a second and DML in seconds; past 30 s the request
    # has met BIGQUERY_TIMEOUT_SECONDS.
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0),
)
ADMISSIONS_REFUSED = Counter(
    "convergence_admissions_refused",
    "Requests refused for a limit (quota, rate limit), by error code.",
    ["code"],
)
CACHE_LOOKUPS = Counter(
    "convergence_cache_lookups",
    "Lookups in the shared cache, by cache and result (hit rate: hits over all).",
    ["cache", "result"],
)
WEBHOOK_DELIVERIES = Counter(
    "convergence_webhook_deliveries",
    "Webhook delivery attempts, by outcome.",
    ["outcome"],
)

# The HTTP status of a refusal for a limit: a 503 is an outage, not an admission decision.
_REFUSED_STATUS = 429


# --- what other modules call --------------------------------------------------------------------------
def bigquery_job_observed(statement_class: str, seconds: float, outcome: str) -> None:
    """The gateway's job observer (bigquery_backend/observers.py), registered by `metrics_connect`."""
    BIGQUERY_JOBS.labels(statement_class=statement_class, outcome=outcome).inc()
    BIGQUERY_JOB_SECONDS.labels(statement_class=statement_class).observe(seconds)


def admission_refused(*, code: str) -> None:
    """A request, run or claim was refused for a limit (`quota_exceeded`, `rate_limited`, ...)."""
    ADMISSIONS_REFUSED.labels(code=code).inc()


def api_error_recorded(*, exc: Exception) -> None:
    """The API's error handler saw `exc`: refusals for a limit are counted by their code."""
    if isinstance(exc, ServiceError) and exc.status == _REFUSED_STATUS:
        admission_refused(code=exc.code)


def cache_lookup_recorded(*, cache: str, hit: bool) -> None:
    """A lookup in the shared cache named `cache` (e.g. `api_key`) was a hit or a miss."""
    CACHE_LOOKUPS.labels(cache=cache, result="hit" if hit else "miss").inc()


def webhook_delivery_recorded(*, outcome: str) -> None:
    """One webhook delivery attempt ended (`delivered`, `failed`, `retrying`: the webhook module decides)."""
    WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()


def metrics_connect() -> None:
    """Start observing BigQuery jobs (TenantsAppConfig.ready); calling it again changes nothing."""
    add_job_observer(bigquery_job_observed)


# --- exposition ---------------------------------------------------------------------------------------
def metrics_text() -> bytes:
    """The Prometheus text exposition of every metric, as a scrape should see it."""
    registry = CollectorRegistry(auto_describe=False)
    directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(RunStateCollector())
    return generate_latest(registry)


class _Forward(Collector):
    """This process's own metrics (single-process mode), next to the scrape-time ones."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()


class RunStateCollector(Collector):
    """Runs by state and queue depth from BigQuery, read when scraped (one cached query)."""

    def collect(self) -> Iterator[Metric]:
        from tenants_app.services.run_metrics import run_state_counts

        up = GaugeMetricFamily(
            "convergence_run_stats_up", "1 when runs by state and queue depth could be read from BigQuery."
        )
        try:
            counts = run_state_counts()
        except (BigQueryError, ServiceError) as exc:
            # The event counters are still worth a scrape: report the gap instead of failing it.
            logger.warning("metrics: could not read run states: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        runs = GaugeMetricFamily(
            "convergence_runs", "Runs in the execution queue, by state.", labels=["state"]
        )
        for state, number in sorted(counts.by_state.items()):
            runs.add_metric([state], number)
        yield runs
        yield GaugeMetricFamily(
            "convergence_queue_depth", "Queued runs a worker could claim now.", value=counts.claimable
        )
