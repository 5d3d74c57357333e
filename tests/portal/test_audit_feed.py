"""The audit log page as a feed (AuditLogEntryAdmin) against the emulator: sentences, diff, action choices."""

from __future__ import annotations

import ast
import re
import uuid
from html import unescape
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import reverse

from bigquery_backend.client import get_gateway
from tenants_app.services.api_keys import api_key_create, api_key_revoke
from tenants_app.services.audit import AuditAction, audit_context, audit_record
from tests.portal.conftest import AddTenant

TENANTS_APP = Path(settings.BASE_DIR) / "tenants_app"
# What an action looks like ("api_key.revoke"); argparse's action="store_true" does not.
ACTION_SHAPE = re.compile(r"[a-z_]+\.[a-z_]+")
# Modules that spell out every action by design: the enum itself and the feed's sentence table.
ENUM_MODULES = {"services/audit.py", "services/audit_feed.py"}


def feed(**params: str) -> str:
    url = reverse("admin:tenants_app_auditlogentry_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def entry_page(audit_id: str) -> str:
    return reverse("admin:tenants_app_auditlogentry_change", args=[quote(audit_id)])


def cells(page: str, field: str) -> list[str]:
    """The text of one column, row by row."""
    found = re.findall(rf'<t[hd] class="field-{field}"[^>]*>(.*?)</t[hd]>', page, flags=re.S)
    return [" ".join(unescape(re.sub(r"<[^>]+>", "", cell)).split()) for cell in found]


def action_options(page: str) -> list[str]:
    select = re.search(r'<select id="audit-action" name="action__exact">(.*?)</select>', page, flags=re.S)
    assert select is not None
    return re.findall(r'<option value="([^"]*)"', select.group(1))


# --- one list of actions --------------------------------------------------------------------------------
def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(TENANTS_APP)), ast.parse(path.read_text()))
        for path in sorted(TENANTS_APP.rglob("*.py"))
        if "migrations" not in path.parts
    ]


def _is_action_literal(node: ast.expr | None) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and bool(ACTION_SHAPE.fullmatch(node.value))
    )


def _literal_action_sites(name: str, tree: ast.Module) -> list[str]:
    """Where a module names an action as a string: `action="x.y"`, a helper's action argument, a filter."""
    helpers = {
        fn.name: [arg.arg for arg in fn.args.args]
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef) and "action" in [arg.arg for arg in fn.args.args]
    }
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
            bound = [kw.value for kw in node.keywords if kw.arg == "action"]
            if callee in helpers and helpers[callee].index("action") < len(node.args):
                bound.append(node.args[helpers[callee].index("action")])
            sites += [f"{name}:{node.lineno}" for value in bound if _is_action_literal(value)]
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "action" and _is_action_literal(value):
                    sites.append(f"{name}:{node.lineno}")
    return sites


def test_it_names_every_recorded_action_from_the_one_enum() -> None:
    sites = [site for name, tree in _modules() for site in _literal_action_sites(name, tree)]

    assert sites == [], f"audit actions spelled as strings instead of AuditAction members: {sites}"


def test_it_offers_exactly_the_actions_the_services_write() -> None:
    written = {
        node.attr
        for name, tree in _modules()
        if name not in ENUM_MODULES
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "AuditAction"
    }

    # Every member is written somewhere (no dead choices), and every write names a member.
    assert written - {"choices"} == set(AuditAction.names)


def test_it_lists_every_action_as_a_choice_above_the_feed(
    superuser_client: Client, portal_dataset: str
) -> None:
    page = superuser_client.get(feed()).content.decode()

    assert action_options(page) == ["", *AuditAction.values]
    assert ">Plan changed (subscription.plan_change)</option>" in page
    # Not also as a wall of links in the sidebar.
    assert "action__exact=api_key.revoke" not in page


# --- the feed -------------------------------------------------------------------------------------------
def test_it_filters_the_feed_by_action_in_bigquery(superuser_client: Client, add_tenant: AddTenant) -> None:
    tenant_id = add_tenant().tenant_id
    for action, target in (
        (AuditAction.API_KEY_CREATE, "key_a"),
        (AuditAction.API_KEY_REVOKE, "key_a"),
        (AuditAction.API_KEY_REVOKE, "key_b"),
    ):
        audit_record(
            action=action, actor="user:root", tenant_id=tenant_id, target_type="api_key", target_id=target
        )

    with get_gateway().count_jobs() as counter:
        response = superuser_client.get(feed(tenant_id__exact=tenant_id, action__exact="api_key.revoke"))

    page = response.content.decode()
    assert response.status_code == 200
    # One page of rows and its count, both filtered by BigQuery, whatever the table holds.
    assert counter.jobs == 2
    assert all("`action` = @" in sql for sql in counter.statements)
    assert cells(page, "action_label") == ["API key revoked api_key.revoke"] * 2
    assert cells(page, "summary") == ["user:root revoked API key key_b", "user:root revoked API key key_a"]
    # The choice stays selected, and the tenant filter is kept when another action is chosen.
    assert '<option value="api_key.revoke" selected>' in page
    assert f'<input type="hidden" name="tenant_id__exact" value="{tenant_id}">' in page


def test_it_refuses_an_unknown_action_with_a_400_naming_the_field(
    superuser_client: Client, portal_dataset: str
) -> None:
    response = superuser_client.get(feed(action__exact="widget.frobnicate"))

    assert response.status_code == 400
    assert "Action: &#x27;widget.frobnicate&#x27; is not one of the choices." in response.content.decode()


def test_it_shows_each_entry_on_one_line_with_its_time_to_the_second_in_utc(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    audit_record(
        action=AuditAction.SUBSCRIPTION_PLAN_CHANGE,
        actor="user:admin",
        tenant_id=tenant_id,
        target_type="subscription",
        target_id="sub_1",
        before={"plan_name": "STARTER"},
        after={"plan_name": "PROFESSIONAL"},
    )

    page = superuser_client.get(feed(tenant_id__exact=tenant_id)).content.decode()

    [when] = cells(page, "when")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", when)
    assert cells(page, "actor") == ["user:admin"]
    assert cells(page, "target") == [f"{tenant_id} subscription sub_1"]
    assert cells(page, "summary") == [
        f"user:admin changed the plan of {tenant_id} from Starter to Professional"
    ]
    # Each value of the sentence is isolated from the words around it.
    assert f"of <bdi>{tenant_id}</bdi> from <bdi>Starter</bdi>" in page


# --- one entry ------------------------------------------------------------------------------------------
def test_it_shows_an_entrys_before_and_after_key_by_key_as_json(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    entry = audit_record(
        action=AuditAction.API_KEY_ROTATE,
        actor="user:admin",
        tenant_id=tenant_id,
        target_type="api_key",
        target_id="key_old",
        before={"is_active": True, "replaced_by_key_id": None, "grace": "1h"},
        after={"is_active": True, "replaced_by_key_id": "key_new", "scopes": ["runs:read", "runs:write"]},
    )

    page = superuser_client.get(entry_page(entry.audit_id)).content.decode()

    assert "user:admin rotated API key key_old, replaced by key_new" in unescape(re.sub(r"<[^>]+>", "", page))
    diff = re.search(r'<table class="audit-diff" id="audit-diff">(.*?)</table>', page, flags=re.S)
    assert diff is not None
    rows = re.findall(r'<tr class="audit-diff-(\w+)">.*?<code>([^<]+)</code>', diff.group(1), flags=re.S)
    # Stored JSON comes back with its keys sorted; keys only after come last.
    assert rows == [
        ("removed", "grace"),
        ("unchanged", "is_active"),
        ("changed", "replaced_by_key_id"),
        ("added", "scopes"),
    ]
    # JSON as JSON: true, null and a list, never Python's True, None or ['...'].
    assert "<pre>true</pre>" in diff.group(1)
    assert "<pre>—</pre>" in diff.group(1)
    assert "&quot;runs:read&quot;" in diff.group(1)
    assert "True" not in diff.group(1)
    assert "'runs:read'" not in diff.group(1)


def test_it_shows_an_entrys_times_labels_and_source_as_every_page_does(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    with audit_context(source="api"):
        entry = audit_record(
            action=AuditAction.SUBSCRIPTION_STATUS_CHANGE,
            actor="user:admin",
            tenant_id=tenant_id,
            target_type="subscription",
            target_id="sub_1",
            before={"status": "ACTIVE", "updated_at": "2026-12-03T16:30:05+00:00"},
            after={"status": "SUSPENDED", "updated_at": "2026-12-04T09:00:00+00:00"},
        )
    feed_page = superuser_client.get(feed(tenant_id__exact=tenant_id)).content.decode()

    page = superuser_client.get(entry_page(entry.audit_id)).content.decode()

    diff = re.search(r'<table class="audit-diff" id="audit-diff">(.*?)</table>', page, flags=re.S)
    assert diff is not None
    assert re.findall(r"<pre>([^<]*)</pre>", diff.group(1)) == [
        "Active",
        "Suspended",
        "2026-12-03 16:30:05 UTC",
        "2026-12-04 09:00:00 UTC",
    ]
    # The source reads as the feed's filter names it, on the entry's line and in its columns.
    assert 'source__exact=api">API</a>' in feed_page
    assert '<span class="audit-source">API</span>' in page
    source_row = re.search(
        r'class="form-row field-source">.*?class="readonly"[^>]*>([^<]*)<', page, flags=re.S
    )
    assert source_row is not None
    assert source_row.group(1) == "API"


def test_it_never_shows_a_key_on_the_feed_or_an_entry(
    superuser_client: Client, add_tenant: AddTenant
) -> None:
    tenant_id = add_tenant().tenant_id
    issued = api_key_create(
        tenant_id=tenant_id, name="feed key", scopes=["tenant:read"], created_by="user:root"
    )
    api_key_revoke(
        tenant_id=tenant_id, api_key_id=issued.row.api_key_id, reason="leaked", revoked_by="user:root"
    )
    feed_page = superuser_client.get(feed(tenant_id__exact=tenant_id)).content.decode()
    audit_ids = re.findall(r"auditlogentry/([0-9a-f]{32})/change/", feed_page)

    pages = [
        feed_page,
        *(superuser_client.get(entry_page(audit_id)).content.decode() for audit_id in audit_ids),
    ]

    assert len(audit_ids) == 2
    assert f"user:root revoked API key {issued.row.api_key_id} (reason: leaked)" in cells(
        feed_page, "summary"
    )
    for page in pages:
        assert issued.plaintext not in page
        assert issued.plaintext[-12:] not in page
        assert "api_key_hash" not in page


def test_it_opens_every_kind_of_entry_without_error(superuser_client: Client, add_tenant: AddTenant) -> None:
    tenant_id = add_tenant().tenant_id
    ids = [
        audit_record(
            action=action, actor="system:test", tenant_id=tenant_id, target_id=uuid.uuid4().hex
        ).audit_id
        for action in (AuditAction.SCHEDULER_RUN, AuditAction.TENANT_SUSPEND)
    ]
    ids.append(audit_record(action=AuditAction.ADMIN_TOKEN_CREATE, actor="user:root").audit_id)

    for audit_id in ids:
        response = superuser_client.get(entry_page(audit_id))
        assert response.status_code == 200
        assert "This entry records no values." in response.content.decode()
