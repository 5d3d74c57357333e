# ruff: noqa: E501 (the matrix is a table: one page and method per line, one user per column)
"""Who can reach what in the portal: every admin URL (Django's and ours) x every kind of user, for tenants A and B.

The expected answer of each cell is written out in PORTAL_MATRIX below (grammar:
tests/support/access_matrix.py). The rules it encodes:

- Anonymous visitors and logged-in users who are not staff are sent to the login page (302) from
  every page but the login and logout pages themselves.
- Read-only staff get every page that shows something (200) and a 403 on every operation, whether
  they GET its form or POST it; Django's own user and group pages need model permissions they do not
  have (403), and API tokens are listed and shown but never added, changed or deleted (403).
- Superusers get every page; their operation POSTs carry an invalid form (200, the form again with
  its errors) or are aimed at a resource whose state makes them a no-op (302 back with a message), so
  the module's tenants stay as they are. Suspending is undone at once (RESTORE); run now adds this
  minute's run.
- Passwords: every staff member may change their own (Django's password_change page), which is no
  tenant operation; only superusers change other users' passwords.
- Staff see every tenant: tenant B's pages answer exactly as tenant A's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver
from django.urls.resolvers import RegexPattern

from tenants_app.models import AdminApiToken, AuditLogEntry, TenantWebhookDelivery, WebhookDeliveryStatus
from tenants_app.repositories import central_repository
from tenants_app.services.admin_tokens import admin_token_create
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.onboarding import subscription_id_for, usage_id_for
from tenants_app.services.tenants import tenant_reactivate
from tests.conftest import unique_name
from tests.support.access_matrix import Row, matches, parse_matrix, route_shape
from tests.support.matrix_tenants import (
    insert_configs,
    insert_credentials,
    insert_tenants,
    insert_webhook_endpoints,
)
from tests.tenants_app.services.quota_factories import put_usage
from tests.tenants_app.services.run_factories import enqueue_many

pytestmark = pytest.mark.django_db

PORTAL_MATRIX = """
METHOD ROUTE                                                              anon   customer read_only superuser
# our pages (tenants_app/portal/urls_*.py): read-only staff read, and get a 403 on every operation
GET    /admin/tenants/onboard/                                            login  login    403       ok
POST   /admin/tenants/onboard/                                            login  login    403       ok
GET    /admin/tenants/{t}/                                                login  login    ok        ok
GET    /admin/tenants/{t}/edit/                                           login  login    403       ok
POST   /admin/tenants/{t}/edit/                                           login  login    403       ok
GET    /admin/tenants/{t}/suspend/                                        login  login    403       ok
POST   /admin/tenants/{t}/suspend/                                        login  login    403       ok
GET    /admin/tenants/{t}/reactivate/                                     login  login    403       ok
POST   /admin/tenants/{t}/reactivate/                                     login  login    403       ok
GET    /admin/tenants/{t}/offboard/                                       login  login    403       ok
POST   /admin/tenants/{t}/offboard/                                       login  login    403       ok
GET    /admin/tenants/{t}/plan/                                           login  login    403       ok
POST   /admin/tenants/{t}/plan/                                           login  login    403       ok
GET    /admin/tenants/{t}/limits/                                         login  login    403       ok
POST   /admin/tenants/{t}/limits/                                         login  login    403       ok
GET    /admin/tenants/{t}/subscription/status/                            login  login    403       ok
POST   /admin/tenants/{t}/subscription/status/                            login  login    403       ok
GET    /admin/tenants/{t}/keys/new/                                       login  login    403       ok
POST   /admin/tenants/{t}/keys/new/                                       login  login    403       ok
GET    /admin/tenants/{t}/keys/{key}/rotate/                              login  login    403       ok
POST   /admin/tenants/{t}/keys/{key}/rotate/                              login  login    403       ok
GET    /admin/tenants/{t}/keys/{key}/revoke/                              login  login    403       ok
POST   /admin/tenants/{t}/keys/{key}/revoke/                              login  login    403       ok
GET    /admin/tenants/{t}/credentials/new/                                login  login    403       ok
POST   /admin/tenants/{t}/credentials/new/                                login  login    403       400
GET    /admin/tenants/{t}/credentials/{cred}/replace/                     login  login    403       ok
POST   /admin/tenants/{t}/credentials/{cred}/replace/                     login  login    403       400
GET    /admin/tenants/{t}/credentials/{cred_off}/deactivate/              login  login    403       ok
POST   /admin/tenants/{t}/credentials/{cred_off}/deactivate/              login  login    403       ok
GET    /admin/tenants/{t}/webhooks/                                       login  login    ok        ok
GET    /admin/tenants/{t}/webhooks/new/                                   login  login    403       ok
POST   /admin/tenants/{t}/webhooks/new/                                   login  login    403       400
GET    /admin/tenants/{t}/webhooks/{hook}/                                login  login    ok        ok
GET    /admin/tenants/{t}/webhooks/{hook}/test/                           login  login    403       405
POST   /admin/tenants/{t}/webhooks/{hook}/test/                           login  login    403       ok
GET    /admin/tenants/{t}/webhooks/{hook}/delete/                         login  login    403       ok
POST   /admin/tenants/{t}/webhooks/{hook}/delete/                         login  login    403       400
GET    /admin/tenants/{t}/pipelines/new/                                  login  login    403       ok
POST   /admin/tenants/{t}/pipelines/new/                                  login  login    403       ok
GET    /admin/tenants/{t}/pipelines/{cfg}/backfill/                       login  login    403       ok
POST   /admin/tenants/{t}/pipelines/{cfg}/backfill/                       login  login    403       400
GET    /admin/tenants/{t}/pipelines/{cfg}/delete/                         login  login    403       ok
POST   /admin/tenants/{t}/pipelines/{cfg}/delete/                         login  login    403       400
GET    /admin/tenants/{t}/runs/{run}/                                     login  login    ok        ok
GET    /admin/tenants/{t}/runs/{run}/cancel/                              login  login    403       ok
POST   /admin/tenants/{t}/runs/{run}/cancel/                              login  login    403       400
GET    /admin/tenants/{t}/runs/{run}/requeue/                             login  login    403       ok
POST   /admin/tenants/{t}/runs/{run}/requeue/                             login  login    403       400
GET    /admin/dashboard/                                                  login  login    ok        ok
GET    /admin/dashboard/{t}/                                              login  login    ok        ok
GET    /admin/tenants/{t}/pipelines/{cfg}/                                login  login    ok        ok
GET    /admin/tenants/{t}/pipelines/{cfg}/edit/                           login  login    403       ok
POST   /admin/tenants/{t}/pipelines/{cfg}/edit/                           login  login    403       ok
GET    /admin/tenants/{t}/pipelines/{cfg_paused}/pause/                   login  login    403       ok
POST   /admin/tenants/{t}/pipelines/{cfg_paused}/pause/                   login  login    403       ok
GET    /admin/tenants/{t}/pipelines/{cfg}/resume/                         login  login    403       ok
POST   /admin/tenants/{t}/pipelines/{cfg}/resume/                         login  login    403       ok
GET    /admin/tenants/{t}/pipelines/{cfg}/run/                            login  login    403       ok
POST   /admin/tenants/{t}/pipelines/{cfg}/run/                            login  login    403       ok
# Django's admin site: index, login and logout, own password, helpers
GET    /admin/                                                            login  login    ok        ok
GET    /admin/login/                                                      ok     ok       302       302
POST   /admin/login/                                                      ok     ok       ok        ok
GET    /admin/logout/                                                     302    302      405       405
POST   /admin/logout/                                                     302    302      ok        ok
GET    /admin/password_change/                                            login  login    ok        ok
POST   /admin/password_change/                                            login  login    ok        ok
GET    /admin/password_change/done/                                       login  login    ok        ok
GET    /admin/autocomplete/                                               login  login    403       403
GET    /admin/jsi18n/                                                     login  login    ok        ok
GET    /admin/r/{obj_ct}/{obj_user}/                                      login  login    404       404
# Django's users and groups: model permissions, which read-only staff do not have
GET    /admin/auth/group/                                                 login  login    403       ok
POST   /admin/auth/group/                                                 login  login    403       ok
GET    /admin/auth/group/add/                                             login  login    403       ok
POST   /admin/auth/group/add/                                             login  login    403       ok
GET    /admin/auth/group/{obj_group}/history/                             login  login    403       ok
GET    /admin/auth/group/{obj_group}/delete/                              login  login    403       ok
POST   /admin/auth/group/{obj_group}/delete/                              login  login    403       ok
GET    /admin/auth/group/{obj_group}/change/                              login  login    403       ok
POST   /admin/auth/group/{obj_group}/change/                              login  login    403       ok
GET    /admin/auth/group/{obj_group}/                                     login  login    302       302
GET    /admin/auth/user/{obj_user}/password/                              login  login    403       ok
POST   /admin/auth/user/{obj_user}/password/                              login  login    403       ok
GET    /admin/auth/user/                                                  login  login    403       ok
POST   /admin/auth/user/                                                  login  login    403       ok
GET    /admin/auth/user/add/                                              login  login    403       ok
POST   /admin/auth/user/add/                                              login  login    403       ok
GET    /admin/auth/user/{obj_user}/history/                               login  login    403       ok
GET    /admin/auth/user/{obj_user}/delete/                                login  login    403       ok
POST   /admin/auth/user/{obj_user}/delete/                                login  login    403       ok
GET    /admin/auth/user/{obj_user}/change/                                login  login    403       ok
POST   /admin/auth/user/{obj_user}/change/                                login  login    403       ok
GET    /admin/auth/user/{obj_user}/                                       login  login    302       302
# BigQuery tables: read-only for everyone (POST is 405); /<id>/ redirects to /<id>/change/
GET    /admin/tenants_app/tenantprofile/                                  login  login    ok        ok
POST   /admin/tenants_app/tenantprofile/                                  login  login    405       405
GET    /admin/tenants_app/tenantprofile/{obj_profile}/change/             login  login    ok        ok
POST   /admin/tenants_app/tenantprofile/{obj_profile}/change/             login  login    405       405
GET    /admin/tenants_app/tenantprofile/{obj_profile}/                    login  login    302       302
GET    /admin/tenants_app/tenantsubscription/                             login  login    ok        ok
POST   /admin/tenants_app/tenantsubscription/                             login  login    405       405
GET    /admin/tenants_app/tenantsubscription/{obj_subscription}/change/   login  login    ok        ok
POST   /admin/tenants_app/tenantsubscription/{obj_subscription}/change/   login  login    405       405
GET    /admin/tenants_app/tenantsubscription/{obj_subscription}/          login  login    302       302
GET    /admin/tenants_app/tenantusagequota/                               login  login    ok        ok
POST   /admin/tenants_app/tenantusagequota/                               login  login    405       405
GET    /admin/tenants_app/tenantusagequota/{obj_usage}/change/            login  login    ok        ok
POST   /admin/tenants_app/tenantusagequota/{obj_usage}/change/            login  login    405       405
GET    /admin/tenants_app/tenantusagequota/{obj_usage}/                   login  login    302       302
GET    /admin/tenants_app/tenantapikey/                                   login  login    ok        ok
POST   /admin/tenants_app/tenantapikey/                                   login  login    405       405
GET    /admin/tenants_app/tenantapikey/{obj_key}/change/                  login  login    ok        ok
POST   /admin/tenants_app/tenantapikey/{obj_key}/change/                  login  login    405       405
GET    /admin/tenants_app/tenantapikey/{obj_key}/                         login  login    302       302
GET    /admin/tenants_app/tenantcloudcredential/                          login  login    ok        ok
POST   /admin/tenants_app/tenantcloudcredential/                          login  login    405       405
GET    /admin/tenants_app/tenantcloudcredential/{obj_cred}/change/        login  login    ok        ok
POST   /admin/tenants_app/tenantcloudcredential/{obj_cred}/change/        login  login    405       405
GET    /admin/tenants_app/tenantcloudcredential/{obj_cred}/               login  login    302       302
GET    /admin/tenants_app/tenantpipelineconfig/                           login  login    ok        ok
POST   /admin/tenants_app/tenantpipelineconfig/                           login  login    405       405
GET    /admin/tenants_app/tenantpipelineconfig/{obj_cfg}/change/          login  login    ok        ok
POST   /admin/tenants_app/tenantpipelineconfig/{obj_cfg}/change/          login  login    405       405
GET    /admin/tenants_app/tenantpipelineconfig/{obj_cfg}/                 login  login    302       302
GET    /admin/tenants_app/tenantscheduledpipelinerun/                     login  login    ok        ok
POST   /admin/tenants_app/tenantscheduledpipelinerun/                     login  login    405       405
GET    /admin/tenants_app/tenantscheduledpipelinerun/{obj_run}/change/    login  login    ok        ok
POST   /admin/tenants_app/tenantscheduledpipelinerun/{obj_run}/change/    login  login    405       405
GET    /admin/tenants_app/tenantscheduledpipelinerun/{obj_run}/           login  login    302       302
GET    /admin/tenants_app/tenantpipelineexecutionqueue/                   login  login    ok        ok
POST   /admin/tenants_app/tenantpipelineexecutionqueue/                   login  login    405       405
GET    /admin/tenants_app/tenantpipelineexecutionqueue/{obj_run}/change/  login  login    ok        ok
POST   /admin/tenants_app/tenantpipelineexecutionqueue/{obj_run}/change/  login  login    405       405
GET    /admin/tenants_app/tenantpipelineexecutionqueue/{obj_run}/         login  login    302       302
GET    /admin/tenants_app/auditlogentry/                                  login  login    ok        ok
POST   /admin/tenants_app/auditlogentry/                                  login  login    405       405
GET    /admin/tenants_app/auditlogentry/{obj_audit}/change/               login  login    ok        ok
POST   /admin/tenants_app/auditlogentry/{obj_audit}/change/               login  login    405       405
GET    /admin/tenants_app/auditlogentry/{obj_audit}/                      login  login    302       302
GET    /admin/tenants_app/tenantpipelinerun/                              login  login    ok        ok
POST   /admin/tenants_app/tenantpipelinerun/                              login  login    405       405
GET    /admin/tenants_app/tenantpipelinerun/{obj_logging}/change/         login  login    ok        ok
POST   /admin/tenants_app/tenantpipelinerun/{obj_logging}/change/         login  login    405       405
GET    /admin/tenants_app/tenantpipelinerun/{obj_logging}/                login  login    302       302
GET    /admin/tenants_app/tenantsteplog/                                  login  login    ok        ok
POST   /admin/tenants_app/tenantsteplog/                                  login  login    405       405
GET    /admin/tenants_app/tenantsteplog/{obj_logging}/change/             login  login    ok        ok
POST   /admin/tenants_app/tenantsteplog/{obj_logging}/change/             login  login    405       405
GET    /admin/tenants_app/tenantsteplog/{obj_logging}/                    login  login    302       302
GET    /admin/tenants_app/tenantdqresult/                                 login  login    ok        ok
POST   /admin/tenants_app/tenantdqresult/                                 login  login    405       405
GET    /admin/tenants_app/tenantdqresult/{obj_logging}/change/            login  login    ok        ok
POST   /admin/tenants_app/tenantdqresult/{obj_logging}/change/            login  login    405       405
GET    /admin/tenants_app/tenantdqresult/{obj_logging}/                   login  login    302       302
GET    /admin/tenants_app/tenantwebhookendpoint/                          login  login    ok        ok
POST   /admin/tenants_app/tenantwebhookendpoint/                          login  login    405       405
GET    /admin/tenants_app/tenantwebhookendpoint/{obj_hook}/change/        login  login    ok        ok
POST   /admin/tenants_app/tenantwebhookendpoint/{obj_hook}/change/        login  login    405       405
GET    /admin/tenants_app/tenantwebhookendpoint/{obj_hook}/               login  login    302       302
GET    /admin/tenants_app/tenantwebhookdelivery/                          login  login    ok        ok
POST   /admin/tenants_app/tenantwebhookdelivery/                          login  login    405       405
GET    /admin/tenants_app/tenantwebhookdelivery/{obj_delivery}/change/    login  login    ok        ok
POST   /admin/tenants_app/tenantwebhookdelivery/{obj_delivery}/change/    login  login    405       405
GET    /admin/tenants_app/tenantwebhookdelivery/{obj_delivery}/           login  login    302       302
# staff API tokens: listed and shown to staff, never added, changed or deleted here
GET    /admin/tenants_app/adminapitoken/                                  login  login    ok        ok
POST   /admin/tenants_app/adminapitoken/                                  login  login    ok        ok
GET    /admin/tenants_app/adminapitoken/add/                              login  login    403       403
POST   /admin/tenants_app/adminapitoken/add/                              login  login    403       403
GET    /admin/tenants_app/adminapitoken/{obj_token}/history/              login  login    ok        ok
GET    /admin/tenants_app/adminapitoken/{obj_token}/delete/               login  login    403       403
POST   /admin/tenants_app/adminapitoken/{obj_token}/delete/               login  login    403       403
GET    /admin/tenants_app/adminapitoken/{obj_token}/change/               login  login    ok        ok
POST   /admin/tenants_app/adminapitoken/{obj_token}/change/               login  login    403       403
GET    /admin/tenants_app/adminapitoken/{obj_token}/                      login  login    302       302
# app indexes (read-only staff have no auth permissions: 404) and the catch-all
GET    /admin/auth/                                                       login  login    404       ok
GET    /admin/tenants_app/                                                login  login    ok        ok
GET    /admin/no-such-page/                                               login  login    404       404
"""

PRINCIPALS, ROWS = parse_matrix(PORTAL_MATRIX, with_scope=False)
# What an allowed portal POST may answer: the form again (invalid on purpose), or a redirect after it.
ALLOWED_WRITES = frozenset({200, 302})


@dataclass
class World:
    tenants: dict[str, dict[str, str]]  # "A"/"B" -> placeholder -> id
    objects: dict[str, str]  # obj_... placeholder -> id
    users: dict[str, User | None]  # principal -> the user logged in (None: anonymous)
    clients: dict[str, Client] = field(default_factory=dict)  # one per user, reused by every row


def _build_tenants() -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    a, b = unique_name("alpha"), unique_name("beta")
    insert_tenants([a, b])
    configs = insert_configs([a, b])
    credentials = insert_credentials([a, b])
    hooks = insert_webhook_endpoints([a, b])
    delivery = f"dlv_{unique_name('matrix')}"
    central_repository(TenantWebhookDelivery).insert(
        TenantWebhookDelivery(
            delivery_id=delivery,
            endpoint_id=hooks[a][0],
            tenant_id=a,
            event_id="evt_matrix",
            event_type="webhook.test",
            body="{}",
            status=WebhookDeliveryStatus.DELIVERED,
        )
    )
    runs = dict(zip([a, b], enqueue_many(a, [{"tenant_id": t} for t in (a, b)]), strict=True))
    keys = {
        t: api_key_create(
            tenant_id=t, name="matrix", scopes=["tenant:read"], created_by="test", record_audit=False
        ).row.api_key_id
        for t in (a, b)
    }
    day = put_usage(a, date(2026, 1, 15)).usage_date
    tenants = {
        label: {
            "t": t,
            "key": keys[t],
            "cred": credentials[t][0],
            "cred_off": credentials[t][1],
            "hook": hooks[t][0],
            "cfg": configs[t]["on"],
            "cfg_paused": configs[t]["paused"],
            "run": runs[t],
        }
        for label, t in (("A", a), ("B", b))
    }
    objects = {
        "obj_profile": a,
        "obj_subscription": subscription_id_for(a),
        "obj_usage": usage_id_for(a, day),
        "obj_key": keys[a],
        "obj_cred": credentials[a][0],
        "obj_cfg": configs[a]["on"],
        "obj_run": runs[a],
        "obj_hook": hooks[a][0],
        "obj_delivery": delivery,
        # Logs live in each tenant's own dataset: without ?tenant_id= the page asks for the tenant.
        "obj_logging": f"{runs[a]}_1",
    }
    return tenants, objects


def _build_people(objects: dict[str, str]) -> dict[str, User | None]:
    """Django's side: the users, a group and an API token to point the admin's own pages at."""
    customer = User.objects.create_user("matrix-customer")
    read_only = User.objects.create_user("matrix-auditor", is_staff=True)
    read_only.groups.add(Group.objects.get_or_create(name=settings.READ_ONLY_STAFF_GROUP)[0])
    root = User.objects.create_superuser("matrix-root", "root@matrix.example", None)
    token = admin_token_create(user=root, name="matrix")
    audit = central_repository(AuditLogEntry).list(limit=1)
    objects.update(
        obj_user=str(customer.pk),
        obj_group=str(Group.objects.create(name="matrix-group").pk),
        obj_token=str(token.token.pk),
        obj_ct=str(ContentType.objects.get_for_model(User).pk),
        obj_audit=audit[0].audit_id,
    )
    return {"anon": None, "customer": customer, "read_only": read_only, "superuser": root}


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    with override_settings(TENANTS_DATASET=unique_name("portalmatrix")):
        bigquery_bootstrap()
        tenants, objects = _build_tenants()
        # Users are committed (module scope), so they are deleted again at the end.
        with django_db_blocker.unblock():
            users = _build_people(objects)
            built = World(tenants=tenants, objects=objects, users=users)
            built.clients = {principal: new_client(built, principal) for principal in users}
        yield built
        with django_db_blocker.unblock():
            Session.objects.filter(
                session_key__in=[client.session.session_key for client in built.clients.values()]
            ).delete()
            User.objects.filter(username__startswith="matrix-").delete()
            Group.objects.filter(name="matrix-group").delete()


# Undo what an allowed POST had to change because its form has no field to make invalid.
RESTORE: dict[str, Callable[[str], object]] = {
    "POST /admin/tenants/{t}/suspend/": lambda tenant_id: tenant_reactivate(
        tenant_id=tenant_id, actor="system:test"
    ),
}


def client_for(world: World, principal: str, row: Row | None = None) -> Client:
    """The principal's client; a fresh one for logging out, which ends the session it is sent with."""
    if row is not None and row.route == "/admin/logout/":
        return new_client(world, principal)
    return world.clients[principal]


def new_client(world: World, principal: str) -> Client:
    client = Client()
    user = world.users[principal]
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_it_answers_every_user_as_the_matrix_says(row: Row, world: World) -> None:
    failures = []
    for principal in PRINCIPALS:
        for column in ("A", "B") if row.per_tenant else ("A",):
            expected = row.expected(principal, column)
            tenant = world.tenants[column]
            # Row keys as the admin writes them in its own links: its pages unquote them ("_40" is "@").
            path = row.route.format(**tenant, **{name: quote(key) for name, key in world.objects.items()})
            client = client_for(world, principal, row)
            # An empty form: invalid wherever the form has a required field (see the module docstring).
            response = client.post(path, {}) if row.method == "POST" else client.get(path)
            status, location = response.status_code, response.get("Location", "")
            if row.name in RESTORE and expected == "ok" and status < 400:
                RESTORE[row.name](tenant["t"])
            if not matches(
                expected, method=row.method, status=status, location=location, allowed_writes=ALLOWED_WRITES
            ):
                failures.append(
                    f"{principal} x tenant {column}: expected {expected}, got {status} {location}"
                )
    assert not failures, f"{row.name}:\n" + "\n".join(failures)


# Regex routes have no path to fill in: the matrix names the pages they serve.
REGEX_ROUTES = {
    "app_list": {"/admin/auth/", "/admin/tenants_app/"},
    None: {"/admin/no-such-page/"},  # Django's catch-all: unknown admin URLs
}


def portal_routes() -> set[str]:
    """Every admin URL (Django's and ours, as the site registers them), as route shapes."""
    routes: set[str] = set()

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern.pattern, RegexPattern):
                routes.update(route_shape(route) for route in REGEX_ROUTES[pattern.name])
            else:
                routes.add(route_shape(prefix + str(pattern.pattern)))

    walk(admin.site.get_urls(), "/admin/")
    return routes


def test_it_has_a_matrix_row_for_every_admin_url() -> None:
    listed = {route_shape(row.route) for row in ROWS}

    served = portal_routes()

    assert served - listed == set(), "add rows to PORTAL_MATRIX"
    assert listed - served == set(), "rows for pages that do not exist"


def test_it_has_a_get_row_for_every_post_row() -> None:
    gets = {row.route for row in ROWS if row.method == "GET"}

    assert [row.name for row in ROWS if row.method == "POST" and row.route not in gets] == []


@pytest.mark.parametrize("principal", ["read_only", "superuser"])
def test_it_deletes_no_api_token_through_the_changelists_actions(principal: str, world: World) -> None:
    """The token list answers a POST (Django's actions), but offers no action that deletes."""
    token_id = world.objects["obj_token"]

    # "post": "yes" is the confirmation page's answer: without it Django only renders that page.
    response = client_for(world, principal).post(
        "/admin/tenants_app/adminapitoken/",
        {"action": "delete_selected", "_selected_action": [token_id], "post": "yes"},
    )

    assert response.status_code in (200, 302)
    assert AdminApiToken.objects.filter(pk=token_id).exists()


def test_it_refuses_read_only_staff_the_user_and_group_actions(world: World) -> None:
    group_id = world.objects["obj_group"]

    response = client_for(world, "read_only").post(
        "/admin/auth/group/", {"action": "delete_selected", "_selected_action": [group_id], "post": "yes"}
    )

    assert response.status_code == 403
    assert Group.objects.filter(pk=group_id).exists()
