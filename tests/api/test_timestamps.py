"""Every instant the API answers with is written one way: RFC 3339 in UTC, microseconds, `Z`.

The walk takes every GET operation of the OpenAPI schema, so an endpoint added later is walked too, and
calls it for a seeded tenant that has one of everything (keys, a revoked one, credentials, schedules, a
finished run with step logs and DQ results, a webhook delivery, audit entries): the `/me` paths with the
tenant's key, the others with a staff admin token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client, override_settings
from rest_framework.test import APIClient

from tenants_app.api.timestamps import timestamps_in_values
from tenants_app.services.api_keys import api_key_revoke
from tenants_app.services.notifications import notifications_deliver
from tenants_app.services.run_claims import run_claim
from tenants_app.services.run_reports import run_complete
from tenants_app.services.webhooks import webhook_endpoint_create, webhook_endpoint_send_test
from tenants_app.timestamps import api_timestamp
from tests.conftest import unique_name
from tests.support.fuzz import SeededTenant, admin_token_headers, seed_tenant
from tests.support.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.django_db

THE_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
# Anything a reader would take for an instant, in any of the formats the API used to mix.
LOOKS_LIKE_AN_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


class World:
    def __init__(self, seeded: SeededTenant, endpoint_id: str) -> None:
        self.seeded = seeded
        self.endpoint_id = endpoint_id


@pytest.fixture
def world(central: str, settings: Any) -> Iterator[World]:
    settings.WEBHOOK_ALLOW_LOCALHOST = True
    with override_settings(API_RATE_LIMITS_ENABLED=False):
        seeded = seed_tenant(unique_name("ts"))
        tenant_id = seeded.tenant_id
        api_key_revoke(
            tenant_id=tenant_id, api_key_id=seeded.doomed_key_id, reason="old", revoked_by="user:root"
        )
        claimed = run_claim(worker_id="w1", tenant_id=tenant_id)
        assert claimed is not None
        assert claimed.run_id == seeded.run_id
        now = datetime.now(UTC)
        step = {"step_index": 0, "step_name": "extract", "step_type": "query", "status": "SUCCEEDED"}
        run_complete(
            run_id=seeded.run_id,
            worker_id="w1",
            status="SUCCEEDED",
            step_logs=[{**step, "start_time": now, "end_time": now}],
            dq_results=[
                {
                    "target_table": "billing.costs",
                    "dq_config_id": "dq1",
                    "executed_at": now,
                    "expectations_passed": 1,
                    "expectations_failed": 0,
                    "overall_status": "PASS",
                }
            ],
        )
        with webhook_receiver() as receiver:
            created = webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:root")
            webhook_endpoint_send_test(
                tenant_id=tenant_id, endpoint_id=created.endpoint.endpoint_id, actor="user:root"
            )
            notifications_deliver(now=datetime.now(UTC))
            assert receiver.received
        yield World(seeded, created.endpoint.endpoint_id)


def get_paths() -> list[str]:
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return [path for path, item in schema["paths"].items() if "get" in item]


def instants(data: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(where, value) of every string in `data` that looks like an instant, at any depth."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from instants(value, f"{where}.{key}")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from instants(value, f"{where}[{index}]")
    elif isinstance(data, str) and LOOKS_LIKE_AN_INSTANT.search(data):
        yield where, data


def test_it_writes_every_instant_of_every_get_endpoint_one_way(world: World) -> None:
    seeded = world.seeded
    staff, tenant = APIClient(), APIClient()
    staff.credentials(HTTP_AUTHORIZATION=admin_token_headers()["Authorization"])
    tenant.credentials(HTTP_X_API_KEY=seeded.api_key)
    ids = {
        "tenant_id": seeded.tenant_id,
        "credential_id": seeded.credential_id,
        "config_id": seeded.config_id,
        "run_id": seeded.run_id,
        "endpoint_id": world.endpoint_id,
    }
    seen: dict[str, str] = {}
    for path in get_paths():
        url = path.format(**ids)
        callers = [tenant] if path.startswith("/api/v1/me") else [staff]
        if path == "/api/v1/pipeline-templates":
            callers = [tenant, staff]
        for client in callers:
            # Every row of every listing (90: within each listing's bound), revoked and inactive ones
            # too; the other endpoints ignore these.
            response = client.get(url, {"limit": 90, "include_revoked": "true", "include_inactive": "true"})
            assert response.status_code == 200, (url, response.content)
            seen.update({f"{path}{where}": value for where, value in instants(response.json())})

    wrong = {where: value for where, value in seen.items() if not THE_FORMAT.fullmatch(value)}
    assert wrong == {}
    # The walk reached what used to differ: credentials, deliveries, nested run records, audit values.
    reached = {re.sub(r"\[\d+\]", "[]", where) for where in seen}
    assert {
        "/api/v1/me/credentials.results[].created_at",
        "/api/v1/tenants/{tenant_id}/credentials/{credential_id}.created_at",
        "/api/v1/me/webhooks.results[].created_at",
        "/api/v1/tenants/{tenant_id}/webhooks/{endpoint_id}/deliveries.results[].delivered_at",
        "/api/v1/me/keys.results[].revoked_at",
        "/api/v1/tenants/{tenant_id}/runs/{run_id}.step_logs[].start_time",
        "/api/v1/me/runs/{run_id}.dq_results[].executed_at",
        "/api/v1/me/runs/{run_id}.queue_entry.processing_started_at",
        "/api/v1/tenants/{tenant_id}/audit.results[].occurred_at",
        "/api/v1/me/audit.results[].after_values.revoked_at",
        "/api/v1/tenants/{tenant_id}/audit.results[].after_values.created_at",
        "/api/v1/queue.results[].added_at",
        "/api/v1/me/usage.results[].last_updated",
    } <= reached


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 3, 16, 30, 5, tzinfo=UTC),
        datetime(2026, 12, 3, 16, 30, 5),
        "2026-12-03T16:30:05+00:00",
        "2026-12-03T17:30:05.000000+01:00",
        "2026-12-03T16:30:05Z",
    ],
)
def test_it_writes_an_instant_in_utc_to_the_microsecond_whatever_it_was_given(value: datetime | str) -> None:
    assert api_timestamp(value) == "2026-12-03T16:30:05.000000Z"


def test_it_rewrites_an_audit_entrys_changed_columns_but_not_the_tenants_own_json() -> None:
    values = {
        "revoked_at": "2026-12-03T16:30:05.123456+00:00",
        "name": "nightly",
        "parameters": {"since": "2026-12-03T16:30:05+00:00"},
    }

    shown = timestamps_in_values(values)

    assert shown == {**values, "revoked_at": "2026-12-03T16:30:05.123456Z"}


@pytest.mark.parametrize("typed", ["2026-02-30T10:00Z", "2026-12-03 16:30+0000"])
def test_it_answers_text_that_only_looks_like_a_time_as_it_was_typed(typed: str) -> None:
    # A key's name or a revoke reason is the caller's text: never parsed, so never a 500 or a rewrite.
    values = {"name": typed, "reason": typed, "revoked_at": "2026-02-30T10:00:00+00:00"}

    assert timestamps_in_values(values) == values


def test_it_rewrites_the_instants_of_the_entrys_own_nested_objects() -> None:
    # A rotation records its replacement as an object of ours; a schedule's parameters are the tenant's.
    values = {
        "replacement": {"api_key_id": "k2", "expires_at": "2026-12-03T16:30:05+00:00"},
        "parameters": {"expires_at": "2026-12-03T16:30:05+00:00"},
    }

    shown = timestamps_in_values(values)

    assert shown["replacement"] == {"api_key_id": "k2", "expires_at": "2026-12-03T16:30:05.000000Z"}
    assert shown["parameters"] == values["parameters"]
