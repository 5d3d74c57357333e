"""The audit trail: entries round-trip through BigQuery, filter, and never carry a secret."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants_app.services.audit import (
    audit_changes,
    audit_context,
    audit_list,
    audit_record,
    audit_redact,
)
from tenants_app.services.errors import ValidationFailed


def test_it_records_an_entry_with_source_request_id_and_actor_type(central: str) -> None:
    tenant_id = "audit_roundtrip"
    with audit_context(source="portal", request_id="req-12345678"):
        audit_record(
            action="tenant.suspend",
            actor="user:alice",
            tenant_id=tenant_id,
            target_type="tenant",
            target_id=tenant_id,
            before={"status": "ACTIVE"},
            after={"status": "SUSPENDED"},
        )

    [entry] = audit_list(tenant_id=tenant_id).items

    assert (entry.action, entry.actor, entry.actor_type) == ("tenant.suspend", "user:alice", "staff")
    assert (entry.source, entry.request_id) == ("portal", "req-12345678")
    assert (entry.before_values, entry.after_values) == ({"status": "ACTIVE"}, {"status": "SUSPENDED"})


def test_it_records_commands_as_such_outside_a_request(central: str) -> None:
    audit_record(action="usage.rollover", actor="system:roll_over_usage", tenant_id="audit_command")

    [entry] = audit_list(tenant_id="audit_command").items

    assert (entry.source, entry.actor_type, entry.request_id) == ("command", "system", None)


def test_it_filters_by_action_and_period_newest_first(central: str) -> None:
    tenant_id = "audit_filters"
    for action in ("key.create", "key.revoke", "key.create"):
        audit_record(action=action, actor="apikey:k1", tenant_id=tenant_id)

    created = audit_list(tenant_id=tenant_id, action="key.create")
    future = audit_list(tenant_id=tenant_id, since=timezone.now() + timedelta(minutes=5))

    assert created.total == 2
    assert created.items[0].occurred_at >= created.items[1].occurred_at
    assert {e.actor_type for e in created.items} == {"tenant_key"}
    assert future.total == 0


def test_it_drops_secret_fields_bytes_and_key_values() -> None:
    leaked = "cvg_live_" + "A" * 40
    redacted = audit_redact(
        {
            "name": f"key {leaked}",
            "api_key_hash": "abc",
            "encrypted_credentials": b"\x00",
            "payload": {"private_key": "x"},
            "nested": [{"client_secret": "s", "scopes": ["tenant:read"]}],
        }
    )

    assert redacted == {"name": "key [redacted]", "nested": [{"scopes": ["tenant:read"]}]}
    assert leaked not in repr(redacted)


def test_it_keeps_only_changed_fields() -> None:
    before, after = audit_changes(
        {"plan": "STARTER", "status": "ACTIVE"}, {"plan": "SCALE", "status": "ACTIVE"}
    )

    assert (before, after) == ({"plan": "STARTER"}, {"plan": "SCALE"})


def test_it_refuses_a_bad_filter_with_the_field_named() -> None:
    with pytest.raises(ValidationFailed) as refused:
        audit_list(limit=0, source="fax")

    assert set(refused.value.errors) == {"limit", "source"}
