"""Schemathesis fuzzing of our own OpenAPI schema, shared by tests/api/test_fuzzing.py and bench/fuzz_api.py.

The world it fuzzes is seeded through the services: tenants with a key of every scope, a credential,
a pipeline config and a run, so that path parameters sometimes name real resources (see
`real_path_parameters`) and the requests get past the 404 into the views' own rules.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import schemathesis
from django.contrib.auth.models import User
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tenants_app.services.admin_tokens import admin_token_create
from tenants_app.services.api_key_scopes import API_KEY_SCOPES
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.credentials import credential_create
from tenants_app.services.onboarding import tenant_onboard
from tenants_app.services.pipelines import pipeline_config_create, pipeline_config_run_now

# No 5xx, a documented status, a documented content type, a body and headers matching the schema.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
CHECK_NAMES = [check.__name__ for check in CHECKS]

# Staff operations that change a tenant's lifecycle; their tenant_id is a sacrificial tenant's, so the
# staff run's own tenant stays active (and usable by the operations fuzzed after them).
LIFECYCLE_OPERATIONS = ("/suspend", "/reactivate", "/offboard")


@dataclass(frozen=True)
class SeededTenant:
    """A tenant with one of everything, and a second one of each for the operations that end it."""

    tenant_id: str
    api_key: str = field(repr=False)
    api_key_id: str  # the key a tenant run authenticates with: no path parameter ever names it
    spare_key_id: str
    credential_id: str
    config_id: str
    run_id: str
    doomed_key_id: str
    doomed_credential_id: str
    doomed_config_id: str


@dataclass(frozen=True)
class FuzzWorld:
    staff_target: SeededTenant  # what the admin-token run's path parameters name
    tenant: SeededTenant  # the tenant-key run authenticates as this tenant
    sacrificial_tenant_id: str  # suspended, reactivated and offboarded by the admin-token run


def seed_tenant(tenant_id: str) -> SeededTenant:
    """Onboard `tenant_id` (SCALE) and give it a key of every scope, a credential, a config and a run."""
    tenant_onboard(
        tenant_id=tenant_id,
        company_name=f"{tenant_id} Ltd",
        admin_email="ops@example.com",
        plan="SCALE",
        created_by="system:fuzz",
    )
    key = api_key_create(
        tenant_id=tenant_id, name="fuzz", scopes=list(API_KEY_SCOPES), created_by="system:fuzz"
    )
    spare, doomed_key = (
        api_key_create(tenant_id=tenant_id, name=name, scopes=["tenant:read"], created_by="system:fuzz")
        for name in ("spare", "doomed")
    )
    credential, doomed_credential = (
        credential_create(
            tenant_id=tenant_id,
            provider=provider,
            name="main",
            payload={"api_key": prefix + secrets.token_urlsafe(36)},
            created_by="system:fuzz",
        )
        for provider, prefix in (("OPENAI", "sk-proj-"), ("ANTHROPIC", "sk-ant-api03-"))
    )
    config, doomed_config = (
        pipeline_config_create(
            tenant_id=tenant_id,
            provider="GCP",
            domain=domain,
            pipeline_template="sql_transform",
            schedule_cron="30 2 * * *",
            parameters={"source_table": "raw_costs", "destination_table": "daily_costs"},
            actor="system:fuzz",
        )
        for domain in ("billing", "doomed")
    )
    run = pipeline_config_run_now(tenant_id=tenant_id, config_id=config.config_id, actor="system:fuzz")
    return SeededTenant(
        tenant_id=tenant_id,
        api_key=key.plaintext,
        api_key_id=key.row.api_key_id,
        spare_key_id=spare.row.api_key_id,
        credential_id=credential.credential_id,
        config_id=config.config_id,
        run_id=run.run.run_id,
        doomed_key_id=doomed_key.row.api_key_id,
        doomed_credential_id=doomed_credential.credential_id,
        doomed_config_id=doomed_config.config_id,
    )


def seed_world(prefix: str) -> FuzzWorld:
    """Three tenants: the staff run's target, the tenant run's own, and one for lifecycle operations."""
    sacrificial = f"{prefix}_life"
    tenant_onboard(
        tenant_id=sacrificial,
        company_name="Lifecycle Ltd",
        admin_email="ops@example.com",
        plan="STARTER",
        created_by="system:fuzz",
    )
    return FuzzWorld(
        staff_target=seed_tenant(f"{prefix}_staff"),
        tenant=seed_tenant(f"{prefix}_own"),
        sacrificial_tenant_id=sacrificial,
    )


def admin_token_headers() -> dict[str, str]:
    """A fresh superuser (in the current database) and an Authorization header with its admin token."""
    user = User.objects.filter(username="fuzz-root").first() or User.objects.create_superuser(
        "fuzz-root", "fuzz-root@example.com", secrets.token_urlsafe(16)
    )
    issued = admin_token_create(user=user, name="fuzz")
    return {"Authorization": f"Bearer {issued.plaintext}"}


def tenant_key_headers(world: FuzzWorld) -> dict[str, str]:
    return {"X-API-Key": world.tenant.api_key}


@contextmanager
def in_process_requests() -> Iterator[None]:
    """Django's WSGI handler without closing the database connection around each request.

    What Django's own test client does: inside a test's transaction a closed connection would end it.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def load_schema() -> schemathesis.BaseSchema:
    """Our schema as the app serves it at /api/schema/, with requests sent to the same app in process."""
    config = schemathesis.Config.from_dict(
        {
            "generation": {
                # Each run authenticates with its own scheme; generated X-API-Key or Authorization
                # headers would replace it with garbage, and every such request would only be a 401.
                "with-security-parameters": False,
            }
        }
    )
    with in_process_requests():
        return schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler(), config=config)


def real_path_parameters(world: FuzzWorld, seeded: SeededTenant, operation: APIOperation) -> dict[str, str]:
    """Path parameters naming `seeded`'s resources; operations that end a resource get a doomed one.

    So a revoke, a deactivate or a delete that succeeds early leaves the resources the operations after
    it name alive, and a suspend or offboard hits the sacrificial tenant.
    """
    ends = operation.method.upper() == "DELETE" or operation.path.endswith(("/revoke", "/deactivate"))
    return {
        "tenant_id": (
            world.sacrificial_tenant_id if operation.path.endswith(LIFECYCLE_OPERATIONS) else seeded.tenant_id
        ),
        # Never the key a run authenticates with: revoking it would end that run.
        "api_key_id": seeded.doomed_key_id if ends else seeded.spare_key_id,
        "credential_id": seeded.doomed_credential_id if ends else seeded.credential_id,
        "config_id": seeded.doomed_config_id if ends else seeded.config_id,
        "run_id": seeded.run_id,
    }


@dataclass
class OperationReport:
    """What fuzzing one operation found: examples sent, statuses, failures by kind with one sample each."""

    label: str
    examples: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)

    def record_failure(self, kind: str, detail: str) -> None:
        self.failures[kind] += 1
        self.samples.setdefault(kind, detail)


def fuzz_operation(
    operation: APIOperation,
    *,
    headers: dict[str, str],
    real_parameters: dict[str, str],
    max_examples: int,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
) -> OperationReport:
    """Send `max_examples` generated requests per mode to `operation` and check each response.

    Failures are collected, not raised, so one bad response neither stops the run nor costs a shrink;
    each path parameter is, at Hypothesis' choice, the generated value or the real one.
    """
    report = OperationReport(label=operation.label)
    started = time.perf_counter()
    settings = hypothesis.settings(
        deadline=None,
        # Repeatable in CI: the same cases on every run (the seeded world differs only in its ids).
        derandomize=True,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
        print_blob=False,
    )
    if not (len(operation.body) or len(operation.query) or len(operation.headers)):
        # Only path parameters, and those are free strings: no request is invalid, and Hypothesis would
        # spend seconds looking for one before giving up.
        modes = tuple(mode for mode in modes if mode is GenerationMode.POSITIVE)
    # The schema's request examples first (one request each: they pass the serializers, so they reach
    # the services), then generated requests per mode.
    runs: list[tuple[st.SearchStrategy[schemathesis.Case], int, GenerationMode | None]] = [
        (strategy, 1, None) for strategy in operation.schema.get_strategies_from_examples(operation)
    ]
    runs += [(operation.as_strategy(generation_mode=mode), max_examples, mode) for mode in modes]
    for strategy, examples, mode in runs:
        send = _sender(report, strategy, headers, real_parameters, always_real=mode is None)
        try:
            hypothesis.settings(settings, max_examples=examples)(send)()
        except hypothesis.errors.Unsatisfiable:
            # Nothing to negate: an operation without parameters or body has no invalid request.
            if mode is not GenerationMode.NEGATIVE:
                raise
    report.seconds = time.perf_counter() - started
    return report


def _sender(
    report: OperationReport,
    strategy: st.SearchStrategy[schemathesis.Case],
    headers: dict[str, str],
    real_parameters: dict[str, str],
    *,
    always_real: bool,
) -> Callable[[], None]:
    """A Hypothesis test that sends each case drawn from `strategy` and records what came back."""

    @hypothesis.given(case=strategy, data=st.data())
    def send(case: schemathesis.Case, data: st.DataObject) -> None:
        for name in list(case.path_parameters or {}):
            # An example is meant to pass: it always names real resources.
            if name in real_parameters and (always_real or data.draw(st.booleans(), label=name)):
                case.path_parameters[name] = real_parameters[name]
        report.examples += 1
        try:
            response = case.call(headers=headers)
        except Exception as error:  # a crash in the app is exactly what we look for
            report.record_failure(f"exception {type(error).__name__}", f"{error}\n{_curl(case, headers)}")
            return
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                report.record_failure(failure.title, _describe(failure, case, response, headers))
        except Failure as failure:
            report.record_failure(failure.title, _describe(failure, case, response, headers))

    return send


def _describe(failure: Failure, case: schemathesis.Case, response: Any, headers: dict[str, str]) -> str:
    body = response.text[:300] if hasattr(response, "text") else ""
    return f"{failure.message}\nstatus {response.status_code}: {body}\n{_curl(case, headers)}"


def _curl(case: schemathesis.Case, headers: dict[str, str]) -> str:
    """The request as a curl command, with our credentials masked."""
    masked = {name: "***" for name in headers}
    try:
        return case.as_curl_command(headers=masked)
    except Exception:  # a description of a failure must not fail
        return f"{case.method} {case.formatted_path}"
