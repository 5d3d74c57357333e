"""API input hardening: hostile text in every text field of every write endpoint, body size, depth, encoding.

The text fields come from each view's InputSerializer (nested serializers included), so a new field is
covered without touching this file; a new write view without a case here fails
`test_it_covers_every_write_endpoint`. Every hostile value is either stored and returned verbatim,
or refused with a 400 that names its field. Never a 500, never evaluated.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import get_resolver, resolve
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient

from bigquery_backend.client import get_gateway
from tenants_app.api import (
    credentials,
    keys,
    onboarding,
    pipelines,
    runs,
    subscriptions,
    tenants,
    webhooks,
    worker,
    worker_credentials,
)
from tenants_app.models import TenantPipelineConfig, TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_scopes import API_KEY_SCOPES
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.credentials import credential_create
from tenants_app.services.onboarding import tenant_onboard
from tenants_app.services.run_claims import run_claim
from tests.tenants_app.services.run_factories import enqueue
from tests.tenants_app.services.schedules import config_row

pytestmark = pytest.mark.django_db

# SQL and template injection, markup, bidi overrides, zero-width and combining characters, emoji
# (astral plane and a ZWJ sequence), other scripts, control characters, quotes and backslashes.
HOSTILE = (
    "' OR 1=1 -- \"; DROP TABLE tenant_profiles; -- `tenants`.`tenant_profiles` "
    "{{ 7*7 }} {% debug %} {{ settings.SECRET_KEY }} ${7*7} #{7*7} %s%n%(x)s "
    "<script>alert(1)</script> \u202eevil\u202c \u200b\u200d\ufeff e\u0301 "
    "\U0001f4a5\U0001f469\u200d\U0001f469\u200d\U0001f467 \u6f22\u5b57 "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 "
    "\x1b[31m \\ \\\\ \t|"
)
PAD = "\U0001f984"  # one code point: max_length counts code points
UNBOUNDED_LENGTH = 5000
OPENAI_SECRET = "sk-" + "Hq4" * 12


def hostile(path: tuple[Any, ...], limit: int | None) -> str:
    """A hostile value unique to `path`, exactly `limit` characters long (the longest accepted)."""
    size = limit or UNBOUNDED_LENGTH
    text = f"{'.'.join(map(str, path))}|{HOSTILE}"[:size].rstrip()
    return text + PAD * (size - len(text))


# --- which fields are text ---------------------------------------------------------------------------
def text_fields(
    serializer: serializers.Serializer, prefix: tuple[Any, ...] = ()
) -> Iterator[tuple[Any, ...]]:
    """Paths of every field that takes text, nested serializers (first list item) included."""
    for name, child in serializer.fields.items():
        if child.read_only:
            continue
        path = (*prefix, name)
        if isinstance(child, serializers.ListSerializer):
            yield from text_fields(child.child, (*path, 0))
        elif isinstance(child, serializers.Serializer):
            yield from text_fields(child, path)
        elif isinstance(child, serializers.ListField):
            if isinstance(child.child, serializers.CharField | serializers.ChoiceField):
                yield path
        elif isinstance(child, serializers.CharField | serializers.ChoiceField | serializers.JSONField):
            yield path


def field_at(serializer: serializers.Serializer, path: tuple[Any, ...]) -> serializers.Field:
    current: Any = serializer
    for part in path:
        current = current.child if isinstance(part, int) else current.fields[part]
    return current


def hostile_value(serializer: serializers.Serializer, path: tuple[Any, ...], base: Any) -> Any:
    target = field_at(serializer, path)
    if isinstance(target, serializers.ListField):
        return [hostile(path, getattr(target.child, "max_length", None))]
    if isinstance(target, serializers.JSONField):
        # Inside a JSON document: keep what the document needs, add a hostile member.
        return {**(base if isinstance(base, dict) else {}), "hostile": hostile(path, 1000)}
    return hostile(path, getattr(target, "max_length", None))


def get_at(body: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            body = body[part] if isinstance(body, list) and len(body) > part else None
        else:
            body = body.get(part) if isinstance(body, dict) else None
    return body


def set_at(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    current: Any = body
    for part in path[:-1]:
        current = current[part]
    current[path[-1]] = value


def error_paths(fields: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths named in an error envelope's `fields` (nested serializers give dicts and lists)."""
    if isinstance(fields, dict):
        for key, value in fields.items():
            # The parser names a place inside a JSON document as `field.key` or `field[0]`.
            head = tuple(part for part in str(key).replace("[", ".").replace("]", "").split(".") if part)
            yield from error_paths(value, (*prefix, *head))
    elif isinstance(fields, list) and fields and not all(isinstance(item, str) for item in fields):
        for index, item in enumerate(fields):
            if item:
                yield from error_paths(item, (*prefix, index))
    else:
        yield prefix


def names(path: tuple[Any, ...], named: tuple[Any, ...]) -> bool:
    """Does an error at `named` name the field at `path`?"""
    named = tuple(str(part) for part in named)
    mine = tuple(str(part) for part in path)
    if named[: len(mine)] == mine or mine[: len(named)] == named:
        return True
    # A credential's own validator names the member of the payload document ("hostile": unknown field).
    return named[:1] == ("hostile",)


def contains(data: Any, text: str) -> bool:
    if isinstance(data, str):
        return data == text
    if isinstance(data, dict):
        return any(contains(value, text) for value in data.values())
    if isinstance(data, list):
        return any(contains(item, text) for item in data)
    return False


# --- the write endpoints -------------------------------------------------------------------------------
@dataclass
class World:
    """The module's onboarded tenant (a dataset, a SCALE subscription) and its clients."""

    tenant_id: str
    staff: APIClient
    tenant_key: APIClient


Setup = Callable[[World], dict[str, str]]
Readback = Callable[[World, dict[str, str]], Any]


@dataclass
class Case:
    view: type
    method: str
    path: str
    body: dict[str, Any]
    setup: Setup = lambda world: {}
    readback: Readback | None = None
    as_tenant_key: bool = False
    # Endpoints that answer with nothing of what they were sent (a validation, a preview).
    echoes: bool = True
    # Where the view's serializer is not its own InputSerializer attribute.
    input_serializer: type[serializers.Serializer] | None = None


def new_key(world: World) -> dict[str, str]:
    key = api_key_create(tenant_id=world.tenant_id, name="k", scopes=["tenant:read"], created_by="test")
    return {"api_key_id": key.row.api_key_id}


def new_credential(world: World) -> dict[str, str]:
    row = credential_create(
        tenant_id=world.tenant_id,
        provider="OPENAI",
        name=f"c{uuid.uuid4().hex[:6]}",
        payload={"api_key": OPENAI_SECRET},
        created_by="test",
    )
    return {"credential_id": row.credential_id}


def new_config(world: World) -> dict[str, str]:
    row = config_row(world.tenant_id, index=int(uuid.uuid4().int % 10_000))
    central_repository(TenantPipelineConfig).insert(row)
    return {"config_id": row.config_id}


def new_run(world: World) -> dict[str, str]:
    return {"run_id": enqueue(world.tenant_id)}


# Worker ids have a pattern of their own (they go into logs): hostile ones are refused by name.
WORKER_ID = "w-h6"


def claimed_run(world: World) -> dict[str, str]:
    """A run claimed by WORKER_ID, which the report must then repeat."""
    enqueue(world.tenant_id)
    claimed = run_claim(worker_id=WORKER_ID, tenant_id=world.tenant_id)
    assert claimed is not None
    return {"run_id": claimed.run_id}


def claimed_by_key(world: World) -> dict[str, str]:
    """A run claimed over the API with the tenant key the case then calls with (its lease's credential)."""
    enqueue(world.tenant_id)
    answer = world.tenant_key.post("/api/v1/worker/claim", {"worker_id": WORKER_ID}, format="json")
    assert answer.status_code == 200, answer.content
    return {"run_id": answer.json()["run_id"]}


def staff_get(path: str) -> Readback:
    return lambda world, ids: world.staff.get(path.format(**ids)).json()


NOW = "2030-01-01T00:00:00Z"
PIPELINE = {
    "provider": "GCP",
    "domain": "billing",
    "pipeline_template": "sql_transform",
    "schedule_cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "parameters": {"source_table": "raw_costs", "destination_table": "daily_costs"},
}
STEP = {
    "step_index": 0,
    "step_name": "extract",
    "step_type": "query",
    "status": "SUCCEEDED",
    "start_time": NOW,
}
DQ = {
    "target_table": "billing.costs",
    "dq_config_id": "dq1",
    "executed_at": NOW,
    "expectations_passed": 1,
    "expectations_failed": 0,
    "overall_status": "PASS",
    "failed_expectations": {"none": True},
}
T = "/api/v1/tenants/{tenant_id}"
# A pipeline body written by hand, for documents json.dumps cannot produce (lone surrogates, depth).
PIPELINE_PREFIX = (
    '{"provider": "GCP", "domain": "d", "pipeline_template": "sql_transform", "schedule_cron": "0 * * * *", '
)

CASES = {
    "onboard": Case(
        onboarding.TenantOnboardApi,
        "post",
        "/api/v1/tenants/onboard",
        {
            "tenant_id": "{new_tenant}",
            "company_name": "Acme",
            "admin_email": "ops@acme.example",
            "plan": "STARTER",
        },
        setup=lambda world: {"new_tenant": f"h6_{uuid.uuid4().hex[:10]}"},
        input_serializer=onboarding.OnboardInputSerializer,
    ),
    "onboard-dryrun": Case(
        onboarding.TenantOnboardDryRunApi,
        "post",
        "/api/v1/tenants/dryrun",
        {"tenant_id": "h6_dry", "company_name": "Acme", "admin_email": "ops@acme.example", "plan": "STARTER"},
        echoes=False,
        input_serializer=onboarding.OnboardInputSerializer,
    ),
    "tenant-edit": Case(
        tenants.TenantDetailApi, "patch", T, {"admin_email": "ops@acme.example"}, readback=staff_get(T)
    ),
    "tenant-offboard": Case(
        tenants.TenantOffboardApi,
        "post",
        "/api/v1/tenants/{other_tenant}/offboard",
        {"confirm_tenant_id": "{other_tenant}"},
        setup=lambda world: {"other_tenant": other_tenant()},
        echoes=False,
    ),
    "key-create": Case(keys.ApiKeyListApi, "post", f"{T}/keys", {"name": "k", "scopes": ["tenant:read"]}),
    "key-rotate": Case(
        keys.ApiKeyRotateApi,
        "post",
        f"{T}/keys/{{api_key_id}}/rotate",
        {"grace": "0"},
        setup=new_key,
        echoes=False,
    ),
    "key-revoke": Case(
        keys.ApiKeyRevokeApi, "post", f"{T}/keys/{{api_key_id}}/revoke", {"reason": "r"}, setup=new_key
    ),
    "credential-create": Case(
        credentials.CredentialListApi,
        "post",
        f"{T}/credentials",
        {"provider": "OPENAI", "name": "n", "payload": {"api_key": OPENAI_SECRET}},
        readback=staff_get(f"{T}/credentials"),
    ),
    "credential-replace": Case(
        credentials.CredentialReplaceApi,
        "post",
        f"{T}/credentials/{{credential_id}}/replace",
        {"payload": {"api_key": OPENAI_SECRET}},
        setup=new_credential,
        echoes=False,  # only metadata ever comes back; the payload is checked by the provider's rules
    ),
    "subscription": Case(
        subscriptions.SubscriptionApi,
        "patch",
        f"{T}/subscription",
        {"plan": "SCALE", "status": "ACTIVE", "reset_limits": ["daily_limit"]},
        echoes=False,
    ),
    "subscription-preview": Case(
        subscriptions.SubscriptionPlanPreviewApi,
        "post",
        f"{T}/subscription/preview",
        {"plan": "SCALE"},
        echoes=False,
    ),
    "pipeline-create": Case(
        pipelines.PipelineConfigListApi,
        "post",
        f"{T}/pipelines",
        PIPELINE,
        readback=lambda world, ids: world.staff.get(f"/api/v1/tenants/{world.tenant_id}/pipelines").json(),
    ),
    "pipeline-edit": Case(
        pipelines.PipelineConfigDetailApi,
        "patch",
        f"{T}/pipelines/{{config_id}}",
        PIPELINE,
        setup=new_config,
        readback=staff_get(f"{T}/pipelines/{{config_id}}"),
    ),
    "run-cancel": Case(
        runs.RunCancelApi,
        "post",
        f"{T}/runs/{{run_id}}/cancel",
        {"reason": "r"},
        setup=new_run,
        readback=staff_get(f"{T}/runs/{{run_id}}"),
        # The reason is recorded in the audit log, not on the run.
        echoes=False,
    ),
    "worker-claim": Case(
        worker.WorkerClaimApi,
        "post",
        "/api/v1/worker/claim",
        {"worker_id": "w"},
        setup=new_run,
        as_tenant_key=True,
    ),
    "worker-heartbeat": Case(
        worker.WorkerHeartbeatApi,
        "post",
        "/api/v1/worker/runs/{run_id}/heartbeat",
        {"worker_id": WORKER_ID},
        setup=claimed_run,
        as_tenant_key=True,
    ),
    "worker-complete": Case(
        worker.WorkerCompleteApi,
        "post",
        "/api/v1/worker/runs/{run_id}/complete",
        {
            "worker_id": WORKER_ID,
            "status": "SUCCEEDED",
            "step_logs": [STEP],
            "dq_results": [DQ],
            "run_metadata": {"rows": 1},
        },
        setup=claimed_run,
        readback=staff_get(f"{T}/runs/{{run_id}}"),
        as_tenant_key=True,
    ),
    "worker-fail": Case(
        worker.WorkerFailApi,
        "post",
        "/api/v1/worker/runs/{run_id}/fail",
        {"worker_id": WORKER_ID, "error": "boom"},
        setup=claimed_run,
        readback=staff_get(f"{T}/runs/{{run_id}}"),
        as_tenant_key=True,
    ),
    "worker-credentials": Case(
        worker_credentials.WorkerRunCredentialsApi,
        "post",
        "/api/v1/worker/runs/{run_id}/credentials",
        {"worker_id": WORKER_ID, "attempt": 1},
        setup=claimed_by_key,
        as_tenant_key=True,
        echoes=False,
    ),
    "webhook-create": Case(
        webhooks.WebhookEndpointListApi,
        "post",
        f"{T}/webhooks",
        # A receiver on this machine (WEBHOOK_ALLOW_LOCALHOST, below): the machine may be offline.
        {"url": "http://localhost:9/convergence", "description": "ops"},
        echoes=False,
    ),
}


def other_tenant() -> str:
    tenant_id = f"h6o_{uuid.uuid4().hex[:10]}"
    central_repository(TenantProfile).insert(
        TenantProfile(
            tenant_id=tenant_id,
            company_name="Other",
            admin_email="ops@other.example",
            tenant_dataset_id=tenant_id,
            status="ACTIVE",
            subscription_plan="STARTER",
            created_at=timezone.now(),
        )
    )
    return tenant_id


@pytest.fixture(autouse=True)
def _local_webhook_receivers(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_LOCALHOST = True


@pytest.fixture(scope="module")
def onboarded(central: str) -> str:
    tenant_id = f"h6_{uuid.uuid4().hex[:10]}"
    tenant_onboard(
        tenant_id=tenant_id,
        company_name="Acme",
        admin_email="ops@acme.example",
        plan="SCALE",
        created_by="test",
    )
    return tenant_id


@pytest.fixture(scope="module")
def tenant_key(onboarded: str) -> APIClient:
    key = api_key_create(tenant_id=onboarded, name="worker", scopes=list(API_KEY_SCOPES), created_by="test")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key.plaintext)
    return client


@pytest.fixture
def world(onboarded: str, tenant_key: APIClient) -> World:
    staff = APIClient()
    # No password: force_login needs none, and hashing one costs most of a second.
    staff.force_login(User.objects.create(username="root", is_staff=True, is_superuser=True))
    return World(tenant_id=onboarded, staff=staff, tenant_key=tenant_key)


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids) if "{" in value and "}" in value and len(value) < 100 else value
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


@pytest.mark.parametrize("name", list(CASES))
def test_it_stores_hostile_text_verbatim_or_refuses_it_naming_the_field(world: World, name: str) -> None:
    case = CASES[name]
    ids = {"tenant_id": world.tenant_id, **case.setup(world)}
    client = world.tenant_key if case.as_tenant_key else world.staff
    path = case.path.format(**ids)
    serializer = (case.input_serializer or case.view.InputSerializer)()
    base = fill(json.loads(json.dumps(case.body)), ids)
    pending = [p for p in text_fields(serializer) if get_at(base, p[:-1]) is not None or len(p) == 1]
    assert pending, f"{name}: no text fields found"
    refused: list[tuple[Any, ...]] = []

    # Every hostile value at once; the fields a 400 names go back to their plain value; again until
    # the request succeeds. Each field thereby ends stored verbatim or refused by name.
    while True:
        body = json.loads(json.dumps(base))
        sent = {}
        for text_path in pending:
            value = hostile_value(serializer, text_path, get_at(base, text_path))
            set_at(body, text_path, value)
            sent[text_path] = value
        response = getattr(client, case.method)(path, body, format="json")
        assert response.status_code < 500, (name, response.content[:500])
        if response.status_code != 400:
            break
        named = list(error_paths(response.json()["error"].get("fields", {})))
        hit = [p for p in pending if any(names(p, n) for n in named)]
        assert hit, (name, "a 400 that names none of the fields sent", response.json())
        refused += hit
        pending = [p for p in pending if p not in hit]

    assert response.status_code in {200, 201}, (name, response.status_code, response.content[:500])
    if not case.echoes:
        return
    seen = [response.json()]
    if case.readback is not None:
        seen.append(case.readback(world, ids))
    for text_path in pending:
        expected = sent[text_path]
        text = expected["hostile"] if isinstance(expected, dict) else expected
        text = text[0] if isinstance(text, list) else text
        assert any(contains(data, text) for data in seen), (name, text_path, "not returned verbatim")


# Ids that exist nowhere: every view checks its input before it looks anything up, so these requests
# end at validation (and a slip past it finds nothing to change).
NOWHERE = {
    "new_tenant": "h6_nobody",
    "other_tenant": "h6_nobody",
    "api_key_id": "key_nowhere",
    "credential_id": "cred_nowhere",
    "config_id": "cfg_nowhere",
    "run_id": "run_nowhere",
}
BAD_TEXT = {"nul": "a\x00b", "lone-surrogate": "a\ud800b"}


@pytest.mark.parametrize("name", list(CASES))
def test_it_refuses_nul_and_lone_surrogates_in_every_text_field_naming_each(world: World, name: str) -> None:
    case = CASES[name]
    ids = {"tenant_id": world.tenant_id, **NOWHERE}
    client = world.tenant_key if case.as_tenant_key else world.staff
    path = case.path.format(**ids)
    serializer = (case.input_serializer or case.view.InputSerializer)()
    base = fill(json.loads(json.dumps(case.body)), ids)
    fields = [p for p in text_fields(serializer) if get_at(base, p[:-1]) is not None or len(p) == 1]
    plain = [p for p in fields if not isinstance(field_at(serializer, p), serializers.JSONField)]
    documents = [p for p in fields if p not in plain]

    for kind, bad in BAD_TEXT.items():
        if plain:
            # All plain text fields at once: the serializer names every one of them in one answer.
            body = json.loads(json.dumps(base))
            for text_path in plain:
                listed = isinstance(field_at(serializer, text_path), serializers.ListField)
                set_at(body, text_path, [bad] if listed else bad)
            response = client.generic(
                case.method.upper(), path, json.dumps(body), content_type="application/json"
            )
            assert response.status_code == 400, (name, kind, response.content[:300])
            named = list(error_paths(response.json()["error"].get("fields", {})))
            missing = [p for p in plain if not any(names(p, n) for n in named)]
            assert missing == [], (name, kind, response.json())
        if kind != "lone-surrogate":
            continue  # NUL inside a JSON document is data (stored verbatim: see the parameters test)
        for text_path in documents:
            # Inside a JSON document: the parser finds it before anything else and names where.
            body = json.loads(json.dumps(base))
            set_at(body, text_path, {"note": bad})
            response = client.generic(
                case.method.upper(), path, json.dumps(body), content_type="application/json"
            )
            assert response.status_code == 400, (name, text_path, response.content[:300])
            where = ".".join(map(str, text_path)).replace(".0.", "[0].") + ".note"
            assert list(response.json()["error"]["fields"]) == [where], (name, response.json())


def test_it_covers_every_write_endpoint() -> None:
    """A write view with an InputSerializer that has no case above fails here."""
    covered = {case.view for case in CASES.values()}
    views = set()
    for entry in get_resolver("tenants_app.api.urls").url_patterns:
        route = str(entry.pattern)
        view = resolve("/api/v1/" + route.replace("<str:", "x").replace(">", "")).func.view_class  # type: ignore[attr-defined]
        if hasattr(view, "InputSerializer") and any(hasattr(view, m) for m in ("post", "put", "patch")):
            views.add(view)

    assert views - covered == set()


def test_it_leaves_every_table_in_place(world: World, central: str) -> None:
    """After the injection strings (`DROP TABLE ...`) every table is still there, rows readable."""
    gateway = get_gateway()
    tables = {table.table_id for table in gateway.client.list_tables(gateway.dataset_ref(central))}
    tenant_tables = {
        table.table_id for table in gateway.client.list_tables(gateway.dataset_ref(world.tenant_id))
    }

    assert {"tenant_profiles", "tenant_api_keys", "tenant_cloud_credentials"} <= tables
    assert len(tables) >= 8
    assert tenant_tables
    assert central_repository(TenantProfile).get(world.tenant_id).tenant_id == world.tenant_id


# --- body size, depth and encoding -----------------------------------------------------------------------
def post_raw(client: APIClient, path: str, body: bytes, content_type: str = "application/json") -> Any:
    return client.generic("POST", path, body, content_type=content_type)


def test_it_refuses_an_oversized_body_with_413_before_reading_it(world: World, settings: Any) -> None:
    settings.API_MAX_BODY_BYTES = 10_000
    path = f"/api/v1/tenants/{world.tenant_id}/keys"
    json_body = json.dumps({"name": "x" * 20_000}).encode()
    form_body = ("name=" + "x" * 20_000).encode()

    as_json = post_raw(world.staff, path, json_body)
    as_form = post_raw(world.staff, path, form_body, "application/x-www-form-urlencoded")
    anonymous = post_raw(APIClient(), path, json_body)

    for response in (as_json, as_form, anonymous):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        assert "10000 bytes" in response.json()["error"]["message"]


def test_it_answers_django_s_own_body_limit_with_the_envelope(world: World, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000  # below the API's limit: Django's check meets it first
    response = post_raw(
        world.staff, f"/api/v1/tenants/{world.tenant_id}/keys", json.dumps({"name": "x" * 2000}).encode()
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_it_refuses_too_many_form_fields_with_the_envelope(world: World) -> None:
    body = "&".join(f"f{i}=1" for i in range(1_100)).encode()
    response = post_raw(
        world.staff, f"/api/v1/tenants/{world.tenant_id}/keys", body, "application/x-www-form-urlencoded"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_failed"


@pytest.mark.parametrize("depth", [11, 850, 100_000])
def test_it_refuses_deeply_nested_json_with_400(world: World, depth: int) -> None:
    document = "[" * depth + "]" * depth
    body = PIPELINE_PREFIX + f'"parameters": {{"a": {document}}}}}'

    response = post_raw(world.staff, f"/api/v1/tenants/{world.tenant_id}/pipelines", body.encode())

    assert response.status_code == 400
    error = response.json()["error"]
    if depth < 800:
        # What Python's parser can read, the service checks and names (10 levels at most).
        assert error["fields"] == {"parameters": ["Nest at most 10 levels deep."]}
    else:
        # Around Python's recursion limit the parser gives up: a 400 too, never a RecursionError.
        assert error["code"] in {"parse_error", "validation_failed"}


def test_it_accepts_json_nested_as_deep_as_the_services_allow(world: World) -> None:
    metadata: dict[str, Any] = {"leaf": "x"}
    for _ in range(8):
        metadata = {"a": metadata}
    # Free-form JSON goes under the template's `metadata` parameter (one level of the ten).
    parameters = {**PIPELINE["parameters"], "metadata": metadata}
    response = world.staff.post(
        f"/api/v1/tenants/{world.tenant_id}/pipelines", {**PIPELINE, "parameters": parameters}, format="json"
    )

    assert response.status_code == 201, response.json()
    assert response.json()["parameters"] == parameters


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('{"name": "a\\ud800b"}', "name"),
        ('{"name": "ok", "scopes": ["tenant:read\\udfff"]}', "scopes"),
    ],
)
def test_it_refuses_lone_surrogates_in_text_fields_naming_them(world: World, body: str, named: str) -> None:
    response = post_raw(world.staff, f"/api/v1/tenants/{world.tenant_id}/keys", body.encode())

    assert response.status_code == 400
    assert any(key.startswith(named) for key in response.json()["error"]["fields"])


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ('{"a": "x\\udc00y"}', "parameters.a"),
        ('{"\\udc00": 1}', "parameters"),
        ('{"a": ["\\ud800"]}', "parameters.a[0]"),
    ],
)
def test_it_refuses_lone_surrogates_inside_json_documents_before_writing(
    world: World, parameters: str, named: str
) -> None:
    body = PIPELINE_PREFIX + f'"parameters": {parameters}}}'
    gateway = get_gateway()

    with gateway.count_jobs() as counter:
        response = post_raw(world.staff, f"/api/v1/tenants/{world.tenant_id}/pipelines", body.encode())

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [named]
    assert counter.jobs <= 1  # the tenant lookup; no statement reached BigQuery with the bad text


def test_it_refuses_nul_characters_in_text_fields_naming_them(world: World) -> None:
    response = world.staff.post(
        f"/api/v1/tenants/{world.tenant_id}/pipelines",
        {**PIPELINE, "domain": "a\x00b", "pipeline_template": "\x00"},
        format="json",
    )

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"domain", "pipeline_template"}


def test_it_keeps_a_nul_inside_json_parameters_verbatim(world: World) -> None:
    parameters = {**PIPELINE["parameters"], "metadata": {"sep": "a\x00b", "note": HOSTILE}}
    created = world.staff.post(
        f"/api/v1/tenants/{world.tenant_id}/pipelines", {**PIPELINE, "parameters": parameters}, format="json"
    )
    assert created.status_code == 201, created.json()
    config_id = created.json()["config_id"]

    again = world.staff.get(f"/api/v1/tenants/{world.tenant_id}/pipelines/{config_id}")

    assert again.json()["parameters"] == parameters
    # Returned escaped: ASCII-only JSON, so no raw control or bidi character reaches a client.
    assert again.content.isascii()


@pytest.mark.parametrize(
    "body",
    [b'{"name": "a\xff\xfeb"}', b'{"name": "\xed\xa0\x80"}', b'\xef\xbb\xbf{"name": "bom"}', b'{"name": "x"'],
    ids=["invalid-utf8", "encoded-surrogate", "bom", "truncated"],
)
def test_it_refuses_undecodable_json_with_400(world: World, body: bytes) -> None:
    response = post_raw(world.staff, f"/api/v1/tenants/{world.tenant_id}/keys", body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_it_treats_hostile_text_in_query_and_path_as_data(world: World) -> None:
    staff = world.staff
    for search in ["' OR 1=1 --", '"; DROP TABLE tenant_profiles; -- `x`', "%", "_\\"]:
        listing = staff.get("/api/v1/tenants", {"search": search, "limit": 200})
        assert listing.status_code == 200, search
        # Matched as literal text (rows that hold it, if any), never as SQL or a LIKE wildcard.
        for row in listing.json()["results"]:
            text = " ".join([row["tenant_id"], row["company_name"], row["admin_email"]]).casefold()
            assert search.casefold() in text, search
    assert staff.get("/api/v1/tenants", {"search": "a\x00"}).status_code == 400
    assert staff.get("/api/v1/tenants/x' OR '1'='1").status_code == 404
    assert staff.get("/api/v1/tenants/%ff%fe/keys").status_code == 404
    assert staff.get(f"/api/v1/tenants/{world.tenant_id}/runs/x`; DROP TABLE t; --").status_code == 404
