# ruff: noqa: E501 (the matrix is a table: one request shape per line, one principal per column)
"""Who can reach what in the API: every URL and method x every kind of caller, for tenants A and B.

The expected status of each cell is written out in API_MATRIX below (grammar: tests/support/access_matrix.py).
The rules it encodes:

- 401: no credentials, or credentials that are not valid *for this API* (unknown, revoked or expired
  key; a worker token outside the worker API; a staff token or session on the worker API, which takes
  tenant keys and worker tokens only). It carries `WWW-Authenticate`.
- 403: valid credentials without the right: a tenant key outside /me/ and the worker API, or lacking the
  endpoint's scope; a key of a suspended tenant (403, not 401: the key is fine, "talk to us"); staff on
  /me/ (staff have no tenant of their own); a portal user who is not staff; read-only staff writing; a
  tenant changing its subscription.
- 404: another tenant's resource named through /me/ or the worker API. A tenant key only ever looks
  inside its own tenant, so tenant B's run is exactly as absent as a run that never existed: the answer
  cannot reveal that it exists. Under /tenants/{id}/ a tenant key is refused (403) before the id is
  looked at, so there too B's tenant and a missing tenant look the same (both checked below).

Allowed writes are sent a deliberately invalid body (or aimed at a resource whose state makes them a
no-op) so that the module's shared tenants stay as they are; the exceptions are a delete (each consumes
a config of its own), suspend (undone at once) and run now (adds this minute's run). Denied and 404
cells get a valid body, so a broken check shows up as a success instead of hiding behind a validation
error.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from django.utils.crypto import get_random_string
from rest_framework.test import APIClient

from bigquery_backend.models import BigQueryModel
from tenants_app.models import (
    PlanName,
    TenantApiKey,
    TenantCloudCredential,
    TenantPipelineConfig,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantStatus,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.admin_tokens import admin_token_create, worker_token_create
from tenants_app.services.api_key_scopes import API_KEY_SCOPES
from tenants_app.services.api_key_verification import _cache_key, api_key_verify, hash_api_key
from tenants_app.services.api_keys import IssuedApiKey, api_key_create, api_key_revoke
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.errors import ServiceError
from tenants_app.services.tenants import tenant_reactivate
from tests.conftest import unique_name
from tests.support.access_matrix import Row, matches, parse_matrix, route_shape
from tests.support.matrix_tenants import (
    CONFIG_BODY,
    SECRET,
    insert_configs,
    insert_credentials,
    insert_tenants,
    insert_webhook_endpoints,
)
from tests.support.tenant_rows import changes, snapshot
from tests.tenants_app.services.run_factories import enqueue_many

pytestmark = pytest.mark.django_db

# Columns: anonymous; tenant A's key with every scope; A's key with every scope but the row's SCOPE
# (rows without a scope: every scope but tenant:read); A's revoked key; A's expired key; the key of a
# suspended tenant (its own tenant is "A" for it); a logged-in portal user who is not staff; read-only
# staff by session and by admin token; a superuser's admin token; a pipeline worker's token.
API_MATRIX = """
METHOD ROUTE                                            SCOPE              anon key    lacks revoked expired suspended customer ro_session ro_token superuser worker
# public: probes and the API contract (a bad credential is still refused on the DRF views)
GET    /healthz                                         -                  ok   ok     ok    ok      ok      ok        ok       ok         ok       ok        ok
GET    /readyz                                          -                  ok   ok     ok    ok      ok      ok        ok       ok         ok       ok        ok
# Prometheus scrapes: absent (404 to everyone) while no METRICS_TOKEN is configured, as here; with
# one, its bearer token or a staff session (tests/api/test_metrics.py)
GET    /metrics                                         -                  404  404    404   404     404     404       404      404        404      404       404
GET    /api/schema/                                     -                  ok   ok     ok    401     401     403       ok       ok         ok       ok        401
GET    /api/docs/                                       -                  ok   ok     ok    401     401     403       ok       ok         ok       ok        401
# the site's root leads to the portal's index, and /favicon.ico to the icon (a static file), for anyone
GET    /                                                -                  302  302    302   302     302     302       302      302        302      302       302
GET    /favicon.ico                                     -                  302  302    302   302     302     302       302      302        302      302       302
# staff only, across tenants
GET    /api/v1/tenants                                  -                  401  403    403   401     401     403       403      ok         ok       ok        401
POST   /api/v1/tenants/onboard                          -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/dryrun                           -                  401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/queue                                    -                  401  403    403   401     401     403       403      ok         ok       ok        401
# the template catalogue: any tenant key (whatever its scopes) and any staff; not a worker token
GET    /api/v1/pipeline-templates                       -                  401  ok     ok    401     401     403       403      ok         ok       ok        401
# staff only, one tenant by id
GET    /api/v1/tenants/{t}                              -                  401  403    403   401     401     403       403      ok         ok       ok        401
PATCH  /api/v1/tenants/{t}                              -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/suspend                      -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/reactivate                   -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/offboard                     -                  401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/tenants/{t}/keys                         -                  401  403    403   401     401     403       403      ok         ok       ok        401
POST   /api/v1/tenants/{t}/keys                         -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/keys/{key}/rotate            -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/keys/{key}/revoke            -                  401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/tenants/{t}/credentials                  -                  401  403    403   401     401     403       403      ok         ok       ok        401
POST   /api/v1/tenants/{t}/credentials                  -                  401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/tenants/{t}/credentials/{cred}           -                  401  403    403   401     401     403       403      ok         ok       ok        401
POST   /api/v1/tenants/{t}/credentials/{cred}/replace   -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/credentials/{cred_off}/deactivate -             401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/tenants/{t}/webhooks                     -                  401  403    403   401     401     403       403      ok         ok       ok        401
POST   /api/v1/tenants/{t}/webhooks                     -                  401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/tenants/{t}/webhooks/{hook}              -                  401  403    403   401     401     403       403      ok         ok       ok        401
DELETE /api/v1/tenants/{t}/webhooks/{hook_off}          -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/webhooks/{hook}/test         -                  401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/tenants/{t}/webhooks/{hook}/deliveries   -                  401  403    403   401     401     403       403      ok         ok       ok        401
GET    /api/v1/tenants/{t}/subscription                 -                  401  403    403   401     401     403       403      ok         ok       ok        401
PATCH  /api/v1/tenants/{t}/subscription                 -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/subscription/preview         -                  401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/tenants/{t}/usage                        -                  401  403    403   401     401     403       403      ok         ok       ok        401
GET    /api/v1/tenants/{t}/audit                        -                  401  403    403   401     401     403       403      ok         ok       ok        401
GET    /api/v1/tenants/{t}/pipelines                    -                  401  403    403   401     401     403       403      ok         ok       ok        401
POST   /api/v1/tenants/{t}/pipelines                    -                  401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/tenants/{t}/pipelines/{cfg}              -                  401  403    403   401     401     403       403      ok         ok       ok        401
PATCH  /api/v1/tenants/{t}/pipelines/{cfg}              -                  401  403    403   401     401     403       403      403        403      ok        401
DELETE /api/v1/tenants/{t}/pipelines/{cfg_doomed}       -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/pipelines/{cfg_paused}/pause -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/pipelines/{cfg}/resume       -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/pipelines/{cfg}/run          -                  401  403    403   401     401     403       403      403        403      ok        401
GET    /api/v1/tenants/{t}/runs                         -                  401  403    403   401     401     403       403      ok         ok       ok        401
GET    /api/v1/tenants/{t}/runs/{run}                   -                  401  403    403   401     401     403       403      ok         ok       ok        401
POST   /api/v1/tenants/{t}/runs/{run}/cancel            -                  401  403    403   401     401     403       403      403        403      ok        401
POST   /api/v1/tenants/{t}/runs/{run}/requeue           -                  401  403    403   401     401     403       403      403        403      ok        401
# a tenant's own key, its own tenant only: another tenant's resource is a 404
GET    /api/v1/me                                       tenant:read        401  ok     403   401     401     403       403      403        403      403       401
GET    /api/v1/me/keys                                  tenant:read        401  ok     403   401     401     403       403      403        403      403       401
POST   /api/v1/me/keys                                  keys:manage        401  ok     403   401     401     403       403      403        403      403       401
POST   /api/v1/me/keys/{key}/rotate                     keys:manage        401  ok/404 403   401     401     403       403      403        403      403       401
POST   /api/v1/me/keys/{key}/revoke                     keys:manage        401  ok/404 403   401     401     403       403      403        403      403       401
GET    /api/v1/me/credentials                           tenant:read        401  ok     403   401     401     403       403      403        403      403       401
POST   /api/v1/me/credentials                           credentials:manage 401  ok     403   401     401     403       403      403        403      403       401
GET    /api/v1/me/credentials/{cred}                    tenant:read        401  ok/404 403   401     401     403       403      403        403      403       401
POST   /api/v1/me/credentials/{cred}/replace            credentials:manage 401  ok/404 403   401     401     403       403      403        403      403       401
POST   /api/v1/me/credentials/{cred_off}/deactivate     credentials:manage 401  ok/404 403   401     401     403       403      403        403      403       401
GET    /api/v1/me/webhooks                              tenant:read        401  ok     403   401     401     403       403      403        403      403       401
POST   /api/v1/me/webhooks                              credentials:manage 401  ok     403   401     401     403       403      403        403      403       401
GET    /api/v1/me/webhooks/{hook}                       tenant:read        401  ok/404 403   401     401     403       403      403        403      403       401
DELETE /api/v1/me/webhooks/{hook_off}                   credentials:manage 401  ok/404 403   401     401     403       403      403        403      403       401
POST   /api/v1/me/webhooks/{hook}/test                  credentials:manage 401  ok/404 403   401     401     403       403      403        403      403       401
GET    /api/v1/me/webhooks/{hook}/deliveries            tenant:read        401  ok/404 403   401     401     403       403      403        403      403       401
GET    /api/v1/me/subscription                          tenant:read        401  ok     403   401     401     403       403      403        403      403       401
PATCH  /api/v1/me/subscription                          tenant:read        401  403    403   401     401     403       403      403        403      403       401
POST   /api/v1/me/subscription/preview                  tenant:read        401  403    403   401     401     403       403      403        403      403       401
GET    /api/v1/me/usage                                 tenant:read        401  ok     403   401     401     403       403      403        403      403       401
GET    /api/v1/me/audit                                 tenant:read        401  ok     403   401     401     403       403      403        403      403       401
GET    /api/v1/me/pipelines                             pipelines:read     401  ok     403   401     401     403       403      403        403      403       401
POST   /api/v1/me/pipelines                             pipelines:manage   401  ok     403   401     401     403       403      403        403      403       401
GET    /api/v1/me/pipelines/{cfg}                       pipelines:read     401  ok/404 403   401     401     403       403      403        403      403       401
PATCH  /api/v1/me/pipelines/{cfg}                       pipelines:manage   401  ok/404 403   401     401     403       403      403        403      403       401
DELETE /api/v1/me/pipelines/{cfg_doomed}                pipelines:manage   401  ok/404 403   401     401     403       403      403        403      403       401
POST   /api/v1/me/pipelines/{cfg_paused}/pause          pipelines:manage   401  ok/404 403   401     401     403       403      403        403      403       401
POST   /api/v1/me/pipelines/{cfg}/resume                pipelines:manage   401  ok/404 403   401     401     403       403      403        403      403       401
POST   /api/v1/me/pipelines/{cfg}/run                   pipelines:execute  401  ok/404 403   401     401     403       403      403        403      403       401
GET    /api/v1/me/runs                                  pipelines:read     401  ok     403   401     401     403       403      403        403      403       401
GET    /api/v1/me/runs/{run}                            pipelines:read     401  ok/404 403   401     401     403       403      403        403      403       401
POST   /api/v1/me/runs/{run}/cancel                     pipelines:manage   401  ok/404 403   401     401     403       403      403        403      403       401
POST   /api/v1/me/runs/{run}/requeue                    pipelines:manage   401  ok/404 403   401     401     403       403      403        403      403       401
# pipeline workers: a tenant key with pipelines:execute (own runs only), or a worker token (every
# tenant; a superuser's token counts as a worker's). Sessions and other staff tokens are not accepted.
POST   /api/v1/worker/claim                             pipelines:execute  401  ok     403   401     401     403       401      401        401      ok        ok
POST   /api/v1/worker/runs/{run}/heartbeat              pipelines:execute  401  ok/404 403   401     401     403       401      401        401      ok        ok
POST   /api/v1/worker/runs/{run}/complete               pipelines:execute  401  ok/404 403   401     401     403       401      401        401      ok        ok
POST   /api/v1/worker/runs/{run}/fail                   pipelines:execute  401  ok/404 403   401     401     403       401      401        401      ok        ok
POST   /api/v1/worker/runs/{run}/credentials            pipelines:execute  401  ok/404 403   401     401     403       401      401        401      ok        ok
"""

PRINCIPALS, ROWS = parse_matrix(API_MATRIX, with_scope=True)
TENANT_KEY_PRINCIPALS = ("key", "lacks", "revoked", "expired", "suspended")
# What an allowed API write may answer: done, or refused for the invalid body / the resource's state.
ALLOWED_WRITES = frozenset({200, 201, 202, 204, 400, 409})

# (valid body, deliberately invalid body) of each write; None: the endpoint takes no body.
BODIES: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {
    "POST /api/v1/tenants/onboard": (
        {"tenant_id": "matrix_never", "company_name": "Never Ltd", "admin_email": "ops@never.example"},
        {},
    ),
    "POST /api/v1/tenants/dryrun": ({"tenant_id": "matrix_never", "company_name": "Never Ltd"}, {}),
    "PATCH /api/v1/tenants/{t}": ({"company_name": "Renamed Ltd"}, {"company_name": "x"}),
    "POST /api/v1/tenants/{t}/offboard": ({"confirm_tenant_id": "{t}"}, {}),
    "POST keys": ({"name": "matrix"}, {}),
    "POST keys/{key}/rotate": ({"grace": "0"}, {"grace": "forever"}),
    "POST keys/{key}/revoke": ({"reason": "matrix"}, {}),
    "POST credentials": ({"provider": "OPENAI", "name": "matrix", "payload": {"api_key": SECRET}}, {}),
    "POST credentials/{cred}/replace": ({"payload": {"api_key": SECRET}}, {}),
    "POST webhooks": ({"url": "https://93.184.216.34/hook"}, {"url": "http://10.0.0.1/"}),
    "PATCH subscription": ({"plan": PlanName.SCALE}, {}),
    "POST subscription/preview": ({"plan": PlanName.SCALE}, {"plan": "GOLD"}),
    "POST pipelines": (CONFIG_BODY, {}),
    "PATCH pipelines/{cfg}": ({"priority": 3}, {"priority": "urgent"}),
    "POST runs/{run}/cancel": ({"reason": "matrix"}, {"reason": "x" * 501}),
    "POST /api/v1/worker/claim": ({"worker_id": "matrix"}, {}),
    "POST /api/v1/worker/runs/{run}/heartbeat": ({"worker_id": "matrix"}, {}),
    "POST /api/v1/worker/runs/{run}/complete": ({"worker_id": "matrix", "status": "SUCCEEDED"}, {}),
    "POST /api/v1/worker/runs/{run}/fail": ({"worker_id": "matrix", "error": "boom"}, {}),
    "POST /api/v1/worker/runs/{run}/credentials": ({"worker_id": "matrix", "attempt": 1}, {}),
}


# Writes that take no body: an allowed call is aimed at a resource whose state makes it a no-op
# (a paused config paused again, a deactivated credential deactivated again, a queued run re-queued:
# 409), changes only what RESTORE puts back (suspend), or adds a run for this minute (run now).
BODYLESS = frozenset(
    {
        "POST /api/v1/tenants/{t}/suspend",
        "POST /api/v1/tenants/{t}/reactivate",
        "POST /api/v1/tenants/{t}/credentials/{cred_off}/deactivate",
        "POST /api/v1/tenants/{t}/webhooks/{hook}/test",
        "POST /api/v1/tenants/{t}/pipelines/{cfg_paused}/pause",
        "POST /api/v1/tenants/{t}/pipelines/{cfg}/resume",
        "POST /api/v1/tenants/{t}/pipelines/{cfg}/run",
        "POST /api/v1/tenants/{t}/runs/{run}/requeue",
        "POST /api/v1/me/credentials/{cred_off}/deactivate",
        "POST /api/v1/me/webhooks/{hook}/test",
        "POST /api/v1/me/pipelines/{cfg_paused}/pause",
        "POST /api/v1/me/pipelines/{cfg}/resume",
        "POST /api/v1/me/pipelines/{cfg}/run",
        "POST /api/v1/me/runs/{run}/requeue",
    }
)


def bodies_for(row: Row) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The row's bodies: by its full name, else by the part after /tenants/{t}/ or /me/."""
    if row.name in BODIES:
        return BODIES[row.name]
    for prefix in ("/api/v1/tenants/{t}/", "/api/v1/me/"):
        if row.route.startswith(prefix):
            return BODIES.get(f"{row.method} {row.route.removeprefix(prefix)}", (None, None))
    return None, None


@dataclass
class TenantWorld:
    """One tenant's ids that the matrix's routes name."""

    tenant_id: str
    ids: dict[str, str]
    doomed_configs: list[str] = field(default_factory=list)


@dataclass
class World:
    tenants: dict[str, TenantWorld]  # "A", "B", "S" (the suspended one)
    keys: dict[str, str]  # principal -> plaintext API key; "lacks:<scope>" -> key without that scope
    tokens: dict[str, str]  # principal -> plaintext bearer token
    session_users: dict[str, User]
    clients: dict[str, APIClient] = field(default_factory=dict)  # one per credential, reused by every row
    verified: dict[str, Any] = field(default_factory=dict)  # the keys' verification cache entries


def _build_world() -> World:
    """Rows are written in batches (one DML per table where the services allow): each DML copies a table."""
    a, b, s = (unique_name(prefix) for prefix in ("alpha", "beta", "sus"))
    insert_tenants([a, b, s])
    configs = insert_configs([a, b, s])
    credentials = insert_credentials([a, b, s])
    hooks = insert_webhook_endpoints([a, b, s])
    runs = dict(zip([a, b, s], enqueue_many(a, [{"tenant_id": t} for t in (a, b, s)]), strict=True))

    def key(tenant_id: str, scopes: list[str]) -> IssuedApiKey:
        return api_key_create(
            tenant_id=tenant_id, name="matrix", scopes=scopes, created_by="test", record_audit=False
        )

    everything = list(API_KEY_SCOPES)
    issued = {
        "key": key(a, everything),
        "revoked": key(a, everything),
        "expired": key(a, everything),
        "suspended": key(s, everything),
        "other": key(b, ["tenant:read"]),
        **{f"lacks:{scope}": key(a, [x for x in everything if x != scope]) for scope in everything},
    }
    api_key_revoke(
        tenant_id=a, api_key_id=issued["revoked"].row.api_key_id, reason="matrix", revoked_by="test"
    )
    # Issuing refuses a past expiry, so the key expires by an update, as time would do it.
    central_repository(TenantApiKey).update(
        issued["expired"].row.api_key_id, {"expires_at": timezone.now() - timedelta(minutes=1)}
    )
    central_repository(TenantProfile).update(s, {"status": TenantStatus.SUSPENDED})
    # The key that rotate and revoke name: one that no principal needs (A's revoked key stays revoked
    # under an invalid body; B's is only ever a 404 or refused), so the module's state holds.
    targets = {a: issued["revoked"], b: issued["other"], s: issued["suspended"]}
    tenants = {
        label: TenantWorld(
            tenant_id=tenant_id,
            ids={
                "t": tenant_id,
                "key": targets[tenant_id].row.api_key_id,
                "cred": credentials[tenant_id][0],
                "cred_off": credentials[tenant_id][1],
                "hook": hooks[tenant_id][0],
                "hook_off": hooks[tenant_id][1],
                "cfg": configs[tenant_id]["on"],
                "cfg_paused": configs[tenant_id]["paused"],
                "run": runs[tenant_id],
            },
            doomed_configs=[configs[tenant_id][f"doomed{n}"] for n in (1, 2, 3)],
        )
        for label, tenant_id in (("A", a), ("B", b), ("S", s))
    }
    keys = {name: one.plaintext for name, one in issued.items()}
    return World(tenants=tenants, keys=keys, tokens={}, session_users={})


def _people() -> tuple[dict[str, str], dict[str, User]]:
    """A portal user who is not staff, read-only staff, a superuser and a pipeline worker (Django's database)."""
    customer = User.objects.create_user("matrix-customer")
    read_only = User.objects.create_user("matrix-auditor", is_staff=True)
    read_only.groups.add(Group.objects.get_or_create(name=settings.READ_ONLY_STAFF_GROUP)[0])
    root = User.objects.create_superuser("matrix-root", "root@matrix.example", None)
    worker = User.objects.create_user("matrix-worker")
    worker.groups.add(Group.objects.get_or_create(name=settings.PIPELINE_WORKERS_GROUP)[0])
    tokens = {
        "ro_token": admin_token_create(user=read_only, name="matrix").plaintext,
        "superuser": admin_token_create(user=root, name="matrix").plaintext,
        "worker": worker_token_create(user=worker, name="matrix").plaintext,
    }
    return tokens, {"customer": customer, "ro_session": read_only, "superuser_session": root}


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    """Tenants A, B and a suspended one with every resource the routes name; users and their credentials."""
    with override_settings(
        TENANTS_DATASET=unique_name("matrix"),
        # Call limits are counted after the access checks and have their own tests; here they would
        # only add a limits lookup to every test.
        API_RATE_LIMITS_ENABLED=False,
        # No `last_used_at` write in the middle of a row.
        API_KEY_LAST_USED_FLUSH_SECONDS=3600.0,
        # The verifications cached once for the module (see _keys_verified_once) stay fresh all along.
        API_KEY_CACHE_SECONDS=3600.0,
    ):
        bigquery_bootstrap()
        built = _build_world()
        built.verified = _verification_entries(built.keys.values())
        # Users are committed (module scope), so they are deleted again at the end.
        with django_db_blocker.unblock():
            built.tokens, built.session_users = _people()
            built.clients = _clients(built)
        yield built
        with django_db_blocker.unblock():
            Session.objects.filter(
                session_key__in=[client.session.session_key for client in built.clients.values()]
            ).delete()
            User.objects.filter(username__startswith="matrix-").delete()


def _verification_entries(keys: Collection[str]) -> dict[str, Any]:
    """What verifying each key leaves in the cache (refused keys are cached too, with their status)."""
    for key in keys:
        with contextlib.suppress(ServiceError):
            api_key_verify(key=key)
    return cache.get_many([_cache_key(hash_api_key(key)) for key in keys])


@pytest.fixture(autouse=True)
def _keys_verified_once(_fresh_cache: None, world: World) -> None:
    """Each test starts with the keys' verification cached, as a running server has it after one call.

    The suite clears the cache before every test; without this, each row would pay two lookups per
    key before the first cell, and the matrix's cost would be mostly those.
    """
    cache.set_many(world.verified, timeout=None)


def _clients(world: World) -> dict[str, APIClient]:
    """A client per credential (a test client loads the middleware once, so each is built once)."""
    clients = {"anon": APIClient()}
    for name, key in world.keys.items():
        clients[name] = APIClient()
        clients[name].credentials(HTTP_X_API_KEY=key)
    for name, token in world.tokens.items():
        clients[name] = APIClient()
        clients[name].credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    for name, user in world.session_users.items():
        clients[name] = APIClient()
        clients[name].force_login(user)
    return clients


def client_for(world: World, principal: str, row: Row) -> APIClient:
    if principal == "lacks":
        return world.clients[f"lacks:{row.scope or 'tenant:read'}"]
    return world.clients[principal]


def tenant_of(world: World, principal: str, column: str) -> TenantWorld:
    """Column A is the principal's own tenant (the suspended one's for its key), B the other tenant."""
    if column == "B":
        return world.tenants["B"]
    return world.tenants["S" if principal == "suspended" else "A"]


def fill(template: str, tenant: TenantWorld, *, doomed: str) -> str:
    return template.format(cfg_doomed=doomed, **tenant.ids)


def fill_body(body: dict[str, Any] | None, tenant: TenantWorld) -> dict[str, Any] | None:
    if body is None:
        return None
    return {
        name: value.format(**tenant.ids) if isinstance(value, str) else value for name, value in body.items()
    }


# Undo what an allowed call had to change because the endpoint takes no body to make invalid.
RESTORE: dict[str, Callable[[str], object]] = {
    "POST /api/v1/tenants/{t}/suspend": lambda tenant_id: tenant_reactivate(
        tenant_id=tenant_id, actor="system:test"
    ),
}


def call(world: World, row: Row, principal: str, column: str) -> tuple[str, Any]:
    """Make one cell's request; returns (expected, response)."""
    expected = row.expected(principal, column)
    tenant = tenant_of(world, principal, column)
    allowed = expected == "ok"
    doomed = ""
    if "{cfg_doomed}" in row.route:
        # An allowed delete consumes a config of its own; any other cell names one that must stay.
        doomed = tenant.doomed_configs.pop() if allowed else tenant.doomed_configs[-1]
    valid, invalid = bodies_for(row)
    body = fill_body(invalid if allowed and invalid is not None else valid, tenant)
    client = client_for(world, principal, row)
    path = fill(row.route, tenant, doomed=doomed)
    response = client.generic(row.method, path, data=_json(body), content_type="application/json")
    if allowed and 200 <= response.status_code < 300 and row.name in RESTORE:
        RESTORE[row.name](tenant.tenant_id)
    return expected, response


def _json(body: dict[str, Any] | None) -> str:
    return json.dumps(body) if body is not None else ""


def _error_code(response: Any) -> str | None:
    """The `error.code` of the API's one error body, or None when the body is something else."""
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


# The central tables holding what a route's placeholder names ({cred} and {cred_off}, every {cfg...}): a
# run now adds a queue entry for the config, a finished or failed run frees its tenant's usage slot.
TABLES_NAMED: dict[str, tuple[type[BigQueryModel], ...]] = {
    "{key}": (TenantApiKey,),
    "{cred": (TenantCloudCredential,),
    "{cfg": (TenantPipelineConfig, TenantPipelineExecutionQueue),
    "{run}": (TenantPipelineExecutionQueue, TenantUsageQuota),
}


def tables_left_alone(row: Row, expected: str) -> tuple[type[BigQueryModel], ...]:
    """Where a write answered 404 (another tenant's resource) must have changed nothing."""
    if row.method == "GET" or expected != "404":
        return ()
    named = [model for part, models in TABLES_NAMED.items() if part in row.route for model in models]
    return tuple(dict.fromkeys(named))


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_it_answers_every_caller_as_the_matrix_says(row: Row, world: World) -> None:
    failures = []
    other = world.tenants["B"].tenant_id
    for principal in PRINCIPALS:
        for column in ("A", "B") if row.per_tenant else ("A",):
            watched = tables_left_alone(row, row.expected(principal, column))
            before = snapshot(other, *watched)
            expected, response = call(world, row, principal, column)
            status = response.status_code
            problem = None
            changed = changes(before, snapshot(other, *watched)) if watched else []
            if not matches(expected, method=row.method, status=status, allowed_writes=ALLOWED_WRITES):
                problem = f"expected {expected}, got {status}"
            elif changed:
                problem = f"{status}, yet tenant B's rows changed: {'; '.join(changed)}"
            elif status == 401 and not response.has_header("WWW-Authenticate"):
                problem = "401 without WWW-Authenticate"
            elif status in (401, 403, 404) and row.route.startswith("/api/v1/") and not _error_code(response):
                problem = f"{status} without the error envelope"
            elif (
                principal in TENANT_KEY_PRINCIPALS
                and world.tenants["B"].tenant_id in response.content.decode()
            ):
                problem = f"{status} names tenant B"
            if problem:
                failures.append(f"{principal} x tenant {column}: {problem}: {response.content[:200]!r}")
    assert not failures, f"{row.name}:\n" + "\n".join(failures)


def served_routes() -> dict[str, set[str]]:
    """Every URL outside the admin portal (route shape -> methods served), read from the URLconf."""
    served: dict[str, set[str]] = {}

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                if route != "admin/":  # the portal has its own matrix (tests/portal/test_access_matrix.py)
                    walk(pattern.url_patterns, route)
                continue
            view_class = getattr(pattern.callback, "view_class", None)
            if view_class is not None:
                methods = {
                    m.upper()
                    for m in view_class.http_method_names
                    if hasattr(view_class, m) and m != "options"
                }
                # Django answers HEAD with the GET handler; the matrix lists GET for both.
                methods.discard("HEAD")
            else:
                # A function view: its decorator (require_GET) says in the 405's Allow header.
                allow = Client().generic("PATCH", "/" + route)["Allow"]
                methods = {m.strip() for m in allow.split(",")} - {"HEAD"}
            served[route_shape("/" + route)] = methods

    walk(get_resolver().url_patterns, "")
    return served


def test_it_has_a_matrix_row_for_every_url_and_method_served() -> None:
    listed: dict[str, set[str]] = {}
    for row in ROWS:
        listed.setdefault(route_shape(row.route), set()).add(row.method)

    served = served_routes()

    missing = {route: methods - listed.get(route, set()) for route, methods in served.items()}
    stale = {route: methods - served.get(route, set()) for route, methods in listed.items()}
    assert {route: methods for route, methods in missing.items() if methods} == {}, "add rows to API_MATRIX"
    assert {route: methods for route, methods in stale.items() if methods} == {}, "rows for nothing served"


def test_it_has_a_body_for_every_write_that_takes_one() -> None:
    for row in ROWS:
        if row.method in ("POST", "PATCH"):
            valid, _ = bodies_for(row)
            takes_body = row.name not in BODYLESS
            assert (valid is not None) == takes_body, row.name


def test_it_refuses_a_tenant_key_a_missing_tenant_exactly_like_another_tenant(world: World) -> None:
    """Neither /tenants/{id}/ nor /me/ tells a tenant key whether another tenant or resource exists."""
    client = client_for(world, "key", ROWS[0])
    other = world.tenants["B"]

    staff_routes = [
        client.get(f"/api/v1/tenants/{tenant_id}/runs") for tenant_id in (other.tenant_id, "nobody_here")
    ]
    own_routes = [client.get(f"/api/v1/me/runs/{run_id}") for run_id in (other.ids["run"], "run_nobody_here")]

    assert [r.status_code for r in staff_routes] == [403, 403]
    assert staff_routes[0].json() == staff_routes[1].json()
    assert [r.status_code for r in own_routes] == [404, 404]
    bodies = [
        r.content.decode().replace(run_id, "<id>")
        for r, run_id in zip(own_routes, (other.ids["run"], "run_nobody_here"), strict=True)
    ]
    assert bodies[0] == bodies[1]


def test_it_refuses_anonymous_options_and_head_on_every_private_url() -> None:
    """OPTIONS describes an endpoint and HEAD runs GET: DRF checks access first, so neither is a way around."""
    client = APIClient()
    # A URL absent for everyone (404: /metrics without METRICS_TOKEN) has no access check to get around,
    # nor has a public redirect (`/` and /favicon.ico answer everyone alike).
    private = [
        row
        for row in ROWS
        if row.cells["anon"] not in ("ok", "404") and not row.cells["anon"].startswith("3")
    ]
    calls = {("OPTIONS", row.route) for row in private} | {
        ("HEAD", row.route) for row in private if row.method == "GET"
    }

    answers = {
        (method, route): client.generic(method, route.replace("{", "").replace("}", "")).status_code
        for method, route in sorted(calls)
    }

    assert {call: status for call, status in answers.items() if status != 401} == {}


def test_it_refuses_a_staff_sessions_write_without_the_csrf_token(world: World) -> None:
    """A session is a browser's credential: its writes need Django's CSRF token, an API key's do not."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world.session_users["superuser_session"])
    path = f"/api/v1/tenants/{world.tenants['A'].tenant_id}/keys"

    without = client.post(path, {}, format="json")
    # What a portal page gives the browser: the CSRF cookie, and the same secret for the header.
    token = get_random_string(32)
    client.cookies[settings.CSRF_COOKIE_NAME] = token
    with_token = client.post(path, {}, format="json", HTTP_X_CSRFTOKEN=token)

    assert without.status_code == 403
    assert "CSRF" in without.json()["error"]["message"]
    assert with_token.status_code == 400  # past the checks: the empty body is refused as invalid
