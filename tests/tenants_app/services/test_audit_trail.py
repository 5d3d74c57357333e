"""Every change a service makes leaves exactly one audit entry, and no entry ever carries a secret."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from bigquery_backend.client import get_gateway
from bigquery_backend.identifiers import quote_table
from tenants_app.models import (
    AuditLogEntry,
    PlanName,
    SubscriptionStatus,
    TenantApiKey,
    TenantCloudCredential,
    TenantProfile,
    TenantStatus,
    TenantSubscription,
)
from tenants_app.repositories import central_repository
from tenants_app.services.admin_tokens import admin_token_create, admin_token_revoke
from tenants_app.services.api_key_rotation import api_key_rotate
from tenants_app.services.api_keys import api_key_create, api_key_revoke
from tenants_app.services.audit import audit_list
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.credentials import credential_create, credential_deactivate, credential_replace
from tenants_app.services.errors import AlreadyExists
from tenants_app.services.onboarding import initial_api_key_id, tenant_onboard
from tenants_app.services.plans import PLANS
from tenants_app.services.tenants import (
    tenant_offboard,
    tenant_reactivate,
    tenant_suspend,
    tenant_update,
)
from tests.support.payloads import aws_payload
from tests.tenants_app.services.conftest import MakeTenant

STAFF = "user:alice"


class StopBefore(Exception):
    """Raised by a `before_step` hook to interrupt an onboarding."""


@pytest.fixture
def tenant(make_tenant: MakeTenant) -> str:
    """An ACTIVE tenant with an ACTIVE STARTER subscription (credentials need one)."""
    tenant_id = make_tenant()
    plan = PLANS[PlanName.STARTER]
    central_repository(TenantSubscription).insert(
        TenantSubscription(
            subscription_id=f"sub_{uuid.uuid4().hex}",
            tenant_id=tenant_id,
            plan_name=plan.name,
            status=SubscriptionStatus.ACTIVE,
            daily_limit=plan.daily_limit,
            monthly_limit=plan.monthly_limit,
            concurrent_limit=plan.concurrent_limit,
            created_at=timezone.now(),
        )
    )
    return tenant_id


def entries(tenant_id: str) -> list[AuditLogEntry]:
    """The tenant's audit entries, oldest first."""
    return list(reversed(audit_list(tenant_id=tenant_id, limit=200).items))


def new_tenant_id() -> str:
    return f"audit_{uuid.uuid4().hex[:12]}"


def onboard(tenant_id: str, **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "tenant_id": tenant_id,
        "company_name": "Acme Corp",
        "admin_email": "admin@acme.example",
        "plan": "STARTER",
        "created_by": STAFF,
        **overrides,
    }
    return tenant_onboard(**arguments)


# --- tenants ----------------------------------------------------------------------------------------
def test_it_records_one_tenant_onboard_entry_naming_the_initial_key(central: str) -> None:
    tenant_id = new_tenant_id()

    result = onboard(tenant_id)

    [entry] = entries(tenant_id)
    assert (entry.action, entry.actor, entry.actor_type) == ("tenant.onboard", STAFF, "staff")
    assert (entry.target_type, entry.target_id, entry.source) == ("tenant", tenant_id, "command")
    assert entry.before_values is None
    assert entry.after_values["plan_name"] == "STARTER"
    assert entry.after_values["status"] == TenantStatus.ACTIVE
    assert entry.after_values["initial_api_key_id"] == initial_api_key_id(tenant_id)
    assert entry.after_values["initial_key_prefix"] == result.api_key.row.key_prefix
    assert entry.after_values["resumed"] is False


def test_it_writes_no_second_onboard_entry_when_an_onboarding_is_resumed_or_repeated(central: str) -> None:
    tenant_id = new_tenant_id()

    def stop_before_key(step: str) -> None:
        if step == "api_key":
            raise StopBefore(step)

    with pytest.raises(StopBefore):
        onboard(tenant_id, before_step=stop_before_key)
    assert entries(tenant_id) == []

    onboard(tenant_id)
    with pytest.raises(AlreadyExists):
        onboard(tenant_id)

    [entry] = entries(tenant_id)
    assert entry.action == "tenant.onboard"
    assert entry.after_values["resumed"] is True


def test_it_records_a_profile_change_with_only_the_changed_fields(tenant: str) -> None:
    tenant_update(
        tenant_id=tenant, actor=STAFF, company_name="Acme Renamed", admin_email="admin@acme.example"
    )
    tenant_update(tenant_id=tenant, actor=STAFF, company_name="Acme Renamed")  # no change, no entry

    [entry] = entries(tenant)
    assert (entry.action, entry.target_type, entry.target_id) == ("tenant.update", "tenant", tenant)
    assert entry.before_values == {"company_name": "Acme Corp"}
    assert entry.after_values == {"company_name": "Acme Renamed"}


def test_it_records_suspend_and_reactivate_once_each_even_when_repeated(tenant: str) -> None:
    tenant_suspend(tenant_id=tenant, actor=STAFF)
    tenant_suspend(tenant_id=tenant, actor="user:bob")  # already suspended: nothing changes
    tenant_reactivate(tenant_id=tenant, actor="user:bob")

    suspended, reactivated = entries(tenant)
    assert (suspended.action, suspended.actor) == ("tenant.suspend", STAFF)
    assert (suspended.before_values, suspended.after_values) == (
        {"status": "ACTIVE"},
        {"status": "SUSPENDED"},
    )
    assert (reactivated.action, reactivated.actor) == ("tenant.reactivate", "user:bob")
    assert reactivated.after_values == {"status": "ACTIVE"}


def test_it_records_an_offboarding_with_what_it_revoked(tenant: str) -> None:
    api_key_create(tenant_id=tenant, name="ci", scopes=["tenant:read"], created_by=STAFF)

    tenant_offboard(tenant_id=tenant, actor=STAFF)
    tenant_offboard(tenant_id=tenant, actor=STAFF)  # nothing left to do: no second entry

    offboarded = [entry for entry in entries(tenant) if entry.action == "tenant.offboard"]
    assert len(offboarded) == 1
    assert offboarded[0].before_values == {"status": "ACTIVE"}
    assert offboarded[0].after_values == {
        "status": "CANCELLED",
        "api_keys_revoked": 1,
        "cloud_creds_deactivated": 0,
        "dataset_purged": False,
    }


# --- API keys ---------------------------------------------------------------------------------------
def test_it_records_key_creation_rotation_and_revocation_with_metadata_only(tenant: str) -> None:
    issued = api_key_create(tenant_id=tenant, name="ci", scopes=["tenant:read"], created_by="apikey:k1")
    key_id = issued.row.api_key_id
    rotated = api_key_rotate(tenant_id=tenant, api_key_id=key_id, grace=timedelta(hours=1), rotated_by=STAFF)
    new_id = rotated.row.api_key_id
    api_key_revoke(tenant_id=tenant, api_key_id=new_id, reason="leaked in a log", revoked_by=STAFF)
    api_key_revoke(tenant_id=tenant, api_key_id=new_id, reason="again", revoked_by=STAFF)  # no-op

    created, rotation, revocation = entries(tenant)
    assert (created.action, created.actor, created.actor_type) == (
        "api_key.create",
        "apikey:k1",
        "tenant_key",
    )
    assert (created.target_type, created.target_id) == ("api_key", key_id)
    assert created.after_values["key_prefix"] == issued.row.key_prefix
    assert created.after_values["scopes"] == ["tenant:read"]
    assert (rotation.action, rotation.target_id) == ("api_key.rotate", key_id)
    assert rotation.after_values["replaced_by_key_id"] == new_id
    assert rotation.after_values["grace"] == "1 h"
    assert rotation.after_values["replacement"]["key_prefix"] == rotated.row.key_prefix
    assert (revocation.action, revocation.target_id) == ("api_key.revoke", new_id)
    assert revocation.before_values["is_active"] is True
    assert revocation.after_values["is_active"] is False
    assert revocation.after_values["revoked_reason"] == "leaked in a log"


# --- credentials ------------------------------------------------------------------------------------
def test_it_records_credential_changes_with_metadata_and_fingerprint(tenant: str) -> None:
    row = credential_create(
        tenant_id=tenant, provider="AWS", name="prod", payload=aws_payload(), created_by=STAFF
    )
    first_fingerprint = row.fingerprint
    replaced = credential_replace(
        tenant_id=tenant, credential_id=row.credential_id, payload=aws_payload(), updated_by=STAFF
    )
    credential_deactivate(tenant_id=tenant, credential_id=row.credential_id, updated_by=STAFF)
    credential_deactivate(tenant_id=tenant, credential_id=row.credential_id, updated_by=STAFF)  # no-op

    created, replacement, deactivation = entries(tenant)
    assert [e.action for e in (created, replacement, deactivation)] == [
        "credential.create",
        "credential.replace",
        "credential.deactivate",
    ]
    assert {e.target_id for e in (created, replacement, deactivation)} == {row.credential_id}
    assert {e.target_type for e in (created, replacement, deactivation)} == {"credential"}
    assert created.after_values["provider"] == "AWS"
    assert created.after_values["fingerprint"] == first_fingerprint
    assert replacement.before_values == {"type": "ACCESS_KEY", "fingerprint": first_fingerprint}
    assert replacement.after_values == {"type": "ACCESS_KEY", "fingerprint": replaced.fingerprint}
    assert (deactivation.before_values, deactivation.after_values) == (
        {"is_active": True},
        {"is_active": False},
    )


# --- admin tokens -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_it_records_admin_tokens_without_a_tenant(central: str) -> None:
    user = User.objects.create_user(f"ops_{uuid.uuid4().hex[:8]}", password="x", is_staff=True)

    issued = admin_token_create(user=user, name="terraform", actor="system:create_admin_token")
    admin_token_revoke(token_id=issued.token.pk, user=user)

    found = audit_list(action="admin_token.create", limit=200).items
    [created] = [entry for entry in found if entry.target_id == str(issued.token.pk)]
    [revoked] = [
        entry
        for entry in audit_list(action="admin_token.revoke", limit=200).items
        if entry.target_id == str(issued.token.pk)
    ]
    assert (created.actor, created.tenant_id, created.target_type) == (
        "system:create_admin_token",
        None,
        "admin_token",
    )
    assert created.after_values == {
        "user": user.username,
        "name": "terraform",
        "prefix": issued.token.token_prefix,
        "expires_at": None,
    }
    assert revoked.actor == f"user:{user.username}"
    assert revoked.after_values["revoked_at"] is not None
    assert issued.plaintext not in json.dumps([created.after_values, revoked.before_values])
    assert issued.token.token_hash not in json.dumps([created.after_values, revoked.before_values])


# --- no secrets, anywhere ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_it_never_writes_a_key_hash_ciphertext_or_credential_value_into_any_audit_row(central: str) -> None:
    tenant_id = new_tenant_id()
    onboarded = onboard(tenant_id)
    issued = api_key_create(tenant_id=tenant_id, name="ci", scopes=["tenant:read"], created_by=STAFF)
    rotated = api_key_rotate(
        tenant_id=tenant_id, api_key_id=issued.row.api_key_id, grace=timedelta(0), rotated_by=STAFF
    )
    api_key_revoke(tenant_id=tenant_id, api_key_id=rotated.row.api_key_id, reason="done", revoked_by=STAFF)
    first, second = aws_payload(), aws_payload()
    credential = credential_create(
        tenant_id=tenant_id, provider="AWS", name="prod", payload=first, created_by=STAFF
    )
    credential_replace(
        tenant_id=tenant_id, credential_id=credential.credential_id, payload=second, updated_by=STAFF
    )
    credential_deactivate(tenant_id=tenant_id, credential_id=credential.credential_id, updated_by=STAFF)
    user = User.objects.create_user(f"ops_{uuid.uuid4().hex[:8]}", password="x", is_staff=True)
    token = admin_token_create(user=user, name="ci")
    tenant_offboard(tenant_id=tenant_id, actor=STAFF)

    plaintexts = [onboarded.api_key.plaintext, issued.plaintext, rotated.plaintext, token.plaintext]
    forbidden = {
        *plaintexts,
        *(hashlib.sha256(key.encode()).hexdigest() for key in plaintexts),
        first["secret_access_key"],
        second["secret_access_key"],
    }
    keys = central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id})
    credentials = central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id})
    ciphertexts = [bytes(k.encrypted_api_key) for k in keys] + [
        bytes(c.encrypted_credentials) for c in credentials
    ]
    assert len(ciphertexts) == 4
    forbidden |= {base64.b64encode(c).decode() for c in ciphertexts} | {c.hex() for c in ciphertexts}
    forbidden |= {k.api_key_hash for k in keys}

    # Every column of every row of the audit table, as BigQuery returns it, not as our model parses it.
    gateway = get_gateway()
    table = quote_table(gateway.project, central, "audit_log")
    rows = gateway.query(f"SELECT TO_JSON_STRING(t) AS row FROM {table} AS t").rows
    dump = "\n".join(row["row"] for row in rows)

    assert len([row for row in rows if tenant_id in row["row"]]) >= 8
    found = sorted(secret[:12] for secret in forbidden if secret in dump)
    assert found == []


# --- when the entry cannot be written ----------------------------------------------------------------
@pytest.fixture
def central_without_audit_table(central_dataset: str) -> str:
    """A fresh central dataset whose audit_log table was dropped after bootstrap."""
    bigquery_bootstrap()
    get_gateway().delete_table(central_dataset, "audit_log")
    return central_dataset


def test_it_keeps_the_change_and_logs_the_entry_when_the_audit_table_is_unavailable(
    central_without_audit_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_id = new_tenant_id()
    central_repository(TenantProfile).insert(
        TenantProfile(
            tenant_id=tenant_id,
            company_name="Acme Corp",
            admin_email="admin@acme.example",
            tenant_dataset_id=tenant_id,
            status=TenantStatus.ACTIVE,
            subscription_plan="STARTER",
            created_at=timezone.now(),
        )
    )

    with caplog.at_level(logging.ERROR, logger="tenants_app.services.audit"):
        profile = tenant_suspend(tenant_id=tenant_id, actor=STAFF)

    assert profile.status == TenantStatus.SUSPENDED
    assert central_repository(TenantProfile).get(tenant_id).status == TenantStatus.SUSPENDED
    [record] = [r for r in caplog.records if "audit entry not stored" in r.getMessage()]
    logged = json.loads(record.getMessage().split(": ", 1)[1])
    assert (logged["action"], logged["actor"], logged["tenant_id"]) == ("tenant.suspend", STAFF, tenant_id)
    assert logged["after_values"] == {"status": "SUSPENDED"}
