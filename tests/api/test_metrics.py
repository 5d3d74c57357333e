"""`/metrics`: Prometheus text for scrapers with METRICS_TOKEN; counts that move with what happens."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from bigquery_backend.client import BigQueryGateway
from tenants_app.metrics import webhook_delivery_recorded
from tenants_app.models import RunState
from tenants_app.services.api_key_verification import api_key_verify
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.datasets import central_dataset
from tenants_app.services.run_metrics import RUN_STATS_CACHE_SECONDS, run_state_counts
from tests.api.test_throttling import tenant_client
from tests.support.people import create_staff
from tests.tenants_app.services.quota_factories import tenant_with_subscription
from tests.tenants_app.services.run_factories import enqueue_many

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-" + "x" * 40
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", autouse=True)
def _central(central: str) -> str:
    return central


@pytest.fixture(autouse=True)
def _token() -> None:
    with override_settings(METRICS_TOKEN=TOKEN):
        yield


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, parsed by prometheus-client's own parser: (name, labels) -> value."""
    response = Client().get("/metrics", **BEARER)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def warm_scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A scrape after the run-state query is cached, so that it adds no job of its own between two scrapes."""
    scrape()
    return scrape()


def test_it_answers_404_while_no_token_is_configured() -> None:
    with override_settings(METRICS_TOKEN=""):
        assert Client().get("/metrics", **BEARER).status_code == 404
        assert Client().get("/metrics").status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": "Bearer wrong-token"},
        {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}x"},
        {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"},
        {"HTTP_AUTHORIZATION": "Bearer"},
    ],
    ids=["none", "wrong", "longer", "other-scheme", "empty"],
)
def test_it_answers_401_with_www_authenticate_without_the_token(headers: dict[str, str]) -> None:
    response = Client().get("/metrics", **headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"convergence_" not in response.content


def test_it_lets_staff_in_by_session_and_no_other_user() -> None:
    staff, customer = Client(), Client()
    staff.force_login(create_staff())
    customer.force_login(User.objects.create_user(username="customer", password="x" * 20))

    assert staff.get("/metrics").status_code == 200
    assert customer.get("/metrics").status_code == 401


def test_it_never_logs_the_token(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN[:-1]}?")
        scrape()

    assert TOKEN[:20] not in caplog.text


def test_it_counts_bigquery_jobs_and_their_latency_by_class(gateway: BigQueryGateway) -> None:
    before = warm_scrape()

    gateway.query("SELECT 1 AS one")
    gateway.query("SELECT 2 AS two")
    gateway.get_dataset(central_dataset())

    after = scrape()
    for name, labels in [
        ("convergence_bigquery_jobs_total", {"statement_class": "select", "outcome": "ok"}),
        ("convergence_bigquery_job_seconds_count", {"statement_class": "select"}),
    ]:
        assert value(after, name, **labels) - value(before, name, **labels) == 2, name
    metadata = {"statement_class": "metadata", "outcome": "ok"}
    assert value(after, "convergence_bigquery_jobs_total", **metadata) > value(
        before, "convergence_bigquery_jobs_total", **metadata
    )
    seconds = "convergence_bigquery_job_seconds_sum"
    assert value(after, seconds, statement_class="select") > value(before, seconds, statement_class="select")
    assert value(
        after, "convergence_bigquery_job_seconds_bucket", statement_class="select", le="+Inf"
    ) == value(after, "convergence_bigquery_job_seconds_count", statement_class="select")


def test_it_counts_refused_admissions_by_code() -> None:
    client = tenant_client(tenant_with_subscription(api_calls_per_minute=1))
    before = warm_scrape()

    statuses = [client.get("/api/v1/me").status_code for _ in range(3)]

    after = scrape()
    refused = "convergence_admissions_refused_total"
    assert value(after, refused, code="rate_limited") - value(before, refused, code="rate_limited") == (
        statuses.count(429)
    )
    assert statuses.count(429) >= 1


def test_it_counts_key_cache_hits_and_misses() -> None:
    tenant_id = tenant_with_subscription()
    issued = api_key_create(tenant_id=tenant_id, name="metrics", scopes=["tenant:read"], created_by="test")
    before = warm_scrape()

    for _ in range(3):
        api_key_verify(key=issued.plaintext)

    after = scrape()
    lookups = "convergence_cache_lookups_total"
    assert (
        value(after, lookups, cache="api_key", result="miss")
        - value(before, lookups, cache="api_key", result="miss")
        == 1
    )
    assert (
        value(after, lookups, cache="api_key", result="hit")
        - value(before, lookups, cache="api_key", result="hit")
        == 2
    )


def test_it_counts_webhook_deliveries_by_outcome() -> None:
    before = warm_scrape()

    webhook_delivery_recorded(outcome="delivered")
    webhook_delivery_recorded(outcome="delivered")
    webhook_delivery_recorded(outcome="failed")

    after = scrape()
    deliveries = "convergence_webhook_deliveries_total"
    for outcome, added in (("delivered", 2), ("failed", 1)):
        assert value(after, deliveries, outcome=outcome) - value(before, deliveries, outcome=outcome) == added


def test_it_reports_runs_by_state_and_the_queue_depth() -> None:
    tenant_id = tenant_with_subscription()
    before = scrape()

    enqueue_many(tenant_id, [{}, {}, {"scheduled_time": timezone.now() + timedelta(days=1)}])
    cache.clear()  # the figures are cached for RUN_STATS_CACHE_SECONDS
    after = scrape()

    assert value(after, "convergence_run_stats_up") == 1
    queued = value(after, "convergence_runs", state="QUEUED") - value(
        before, "convergence_runs", state="QUEUED"
    )
    assert queued == 3
    assert {value(after, "convergence_runs", state=state.value) >= 0 for state in RunState} == {True}
    depth = value(after, "convergence_queue_depth") - value(before, "convergence_queue_depth")
    assert depth in (2, 3)  # available_at is what holds a run back, not its scheduled time


def test_it_runs_one_query_per_cache_period_whatever_the_scrapes(gateway: BigQueryGateway) -> None:
    tenant_id = tenant_with_subscription()
    start = timezone.now()
    first = run_state_counts(now=start)
    enqueue_many(tenant_id, [{}])

    with gateway.count_jobs() as jobs:
        within = [
            run_state_counts(now=start + timedelta(seconds=s)) for s in (1, 5, RUN_STATS_CACHE_SECONDS - 1)
        ]
    with gateway.count_jobs() as later_jobs:
        later = run_state_counts(now=start + timedelta(seconds=RUN_STATS_CACHE_SECONDS + 1))

    assert jobs.jobs == 0
    assert within == [first] * 3
    assert later_jobs.jobs == 1
    assert later.by_state["QUEUED"] == first.by_state["QUEUED"] + 1
    assert later.claimable == first.claimable + 1


def test_it_still_answers_when_bigquery_cannot_give_the_run_states(settings: pytest.FixtureRequest) -> None:
    settings.TENANTS_DATASET = "no_such_central_dataset"  # type: ignore[attr-defined]
    webhook_delivery_recorded(outcome="delivered")

    samples = scrape()

    assert value(samples, "convergence_run_stats_up") == 0
    assert value(samples, "convergence_webhook_deliveries_total", outcome="delivered") >= 1
    assert not any(name == "convergence_runs" for name, _ in samples)
