"""Schemathesis fuzzes the API against its own OpenAPI schema, as staff and as a tenant (issue 6, item 1).

Every response must be non-5xx, with a documented status code, content type, headers and body. Both
runs go through Django's WSGI app in process against the real emulator, in a world seeded through the
services (tests/support/fuzz.py). Per operation: each request example of the schema once (with real
path parameters, so the writes reach the services), then a few generated requests per generation mode
(positive, negative), each path parameter either generated or real. That keeps this file within the
suite's budget; `bench/fuzz_api.py` is the longer run, over every operation with both credentials.

Nothing is excluded: destructive operations are aimed where they cannot end a run. The staff run's
suspend, reactivate and offboard name a sacrificial tenant, not the one its other path parameters
name; revoke, deactivate and delete name a second key, credential and config kept for them; the tenant
run authenticates as a tenant of its own, untouched by the staff run, and no path parameter ever names
the key it authenticates with. API rate limits are off for both runs: a 429 is documented, but after
the first one every request would be refused unread.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.test import override_settings

from tenants_app.services.bootstrap import bigquery_bootstrap
from tests.conftest import unique_name
from tests.support.fuzz import (
    FuzzWorld,
    OperationReport,
    SeededTenant,
    admin_token_headers,
    fuzz_operation,
    in_process_requests,
    load_schema,
    real_path_parameters,
    seed_world,
    tenant_key_headers,
)

pytestmark = pytest.mark.django_db

# Examples per operation and generation mode (positive, negative): the suite's share; the bench runs more.
MAX_EXAMPLES = 2
# Each run fuzzes the operations its credentials are for; the other side's answer every request with
# the same 403 (the access-control matrix tests those), and bench/fuzz_api.py fuzzes them all with both.
STAFF_PATHS = ("/api/v1/tenants", "/api/v1/queue", "/api/v1/worker/")
TENANT_PATHS = ("/api/v1/me", "/api/v1/worker/")


@pytest.fixture(scope="module")
def world() -> Iterator[FuzzWorld]:
    """One bootstrapped central dataset and the seeded tenants, for both runs."""
    with override_settings(TENANTS_DATASET=unique_name("tenants"), API_RATE_LIMITS_ENABLED=False):
        bigquery_bootstrap()
        yield seed_world(unique_name("fz"))


@pytest.fixture(scope="module")
def schema() -> schemathesis.BaseSchema:
    return load_schema()


def fuzz_all(
    schema: schemathesis.BaseSchema,
    world: FuzzWorld,
    seeded: SeededTenant,
    headers: dict[str, str],
    paths: tuple[str, ...],
) -> list[OperationReport]:
    reports = []
    with in_process_requests():
        for result in schema.get_all_operations():
            operation = result.ok()
            if not operation.path.startswith(paths):
                continue
            reports.append(
                fuzz_operation(
                    operation,
                    headers=headers,
                    real_parameters=real_path_parameters(world, seeded, operation),
                    max_examples=MAX_EXAMPLES,
                )
            )
    return reports


def failures_of(reports: list[OperationReport]) -> str:
    return "\n\n".join(
        f"{report.label}: {kind} x{count}\n{report.samples[kind]}"
        for report in reports
        for kind, count in report.failures.items()
    )


def test_it_answers_staff_within_the_schema(schema: schemathesis.BaseSchema, world: FuzzWorld) -> None:
    reports = fuzz_all(schema, world, world.staff_target, admin_token_headers(), STAFF_PATHS)

    assert len(reports) >= 38
    assert sum(report.examples for report in reports) >= len(reports) * MAX_EXAMPLES
    assert failures_of(reports) == ""
    # The schema's request examples pass the serializers and the services: fuzzing reaches the writes.
    statuses = {report.label: report.statuses for report in reports}
    assert statuses["POST /api/v1/tenants/onboard"][201] == 1
    assert statuses["POST /api/v1/tenants/{tenant_id}/pipelines"][201] >= 1


def test_it_answers_a_tenant_key_within_the_schema(schema: schemathesis.BaseSchema, world: FuzzWorld) -> None:
    reports = fuzz_all(schema, world, world.tenant, tenant_key_headers(world), TENANT_PATHS)

    assert len(reports) >= 30
    assert sum(report.examples for report in reports) >= len(reports) * MAX_EXAMPLES
    assert failures_of(reports) == ""
    statuses = {report.label: report.statuses for report in reports}
    assert statuses["POST /api/v1/me/credentials"][201] >= 1
    assert statuses["POST /api/v1/me/keys"][201] >= 1


def test_it_reports_statuses_and_bodies_the_schema_does_not_describe(world: FuzzWorld) -> None:
    # The checks bite: the same fuzzing against a schema that lost a status and gained a required field.
    schema = load_schema()
    paths = schema.raw_schema["paths"]
    del paths["/api/v1/tenants/{tenant_id}"]["get"]["responses"]["404"]
    paths["/api/v1/tenants"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "type": "object",
        "required": ["not_in_any_response"],
    }
    headers = admin_token_headers()

    with in_process_requests():
        unknown_tenant = fuzz_operation(
            schema["/api/v1/tenants/{tenant_id}"]["GET"], headers=headers, real_parameters={}, max_examples=2
        )
        listing = fuzz_operation(
            schema["/api/v1/tenants"]["GET"], headers=headers, real_parameters={}, max_examples=2
        )

    assert unknown_tenant.statuses[404] >= 1
    assert set(unknown_tenant.failures) == {"Undocumented status code"}
    assert listing.statuses[200] >= 1
    assert "Response violates schema" in listing.failures
