"""The audit feed's selectors (services/audit_feed.py): one sentence per entry and its diff, key by key."""

from __future__ import annotations

from typing import Any

import pytest

from tenants_app.models import AuditLogEntry
from tenants_app.services.audit import AuditAction
from tenants_app.services.audit_feed import (
    SUMMARIES,
    DiffLine,
    audit_action_label,
    audit_diff,
    audit_diff_text,
    audit_sentence,
    audit_summary,
    audit_target,
)


def entry(action: str, **values: Any) -> AuditLogEntry:
    fields: dict[str, Any] = {"audit_id": "a1", "actor": "user:admin", "tenant_id": "acme", **values}
    return AuditLogEntry(action=action, **fields)


def test_it_says_a_plan_change_in_one_sentence() -> None:
    change = entry(
        AuditAction.SUBSCRIPTION_PLAN_CHANGE,
        target_type="subscription",
        target_id="sub_1",
        before_values={"plan_name": "STARTER", "daily_limit": 6},
        after_values={"plan_name": "PROFESSIONAL", "daily_limit": 24},
    )

    assert audit_summary(change) == "user:admin changed the plan of acme from Starter to Professional"


@pytest.mark.parametrize("key", ["plan_name", "plan"])
def test_it_names_the_plan_of_an_onboarding_by_its_label(key: str) -> None:
    # `plan`: entries written before the onboarding named the column.
    onboarded = entry(
        AuditAction.TENANT_ONBOARD, target_type="tenant", target_id="acme", after_values={key: "PROFESSIONAL"}
    )

    assert audit_summary(onboarded) == "user:admin onboarded acme on the Professional plan"


def test_it_says_why_a_key_was_revoked_and_drops_a_missing_reason_not_the_sentence() -> None:
    revoked = {"is_active": False, "revoked_at": "2026-12-03T16:30:05+00:00", "revoked_reason": "leaked"}
    with_reason = entry(
        AuditAction.API_KEY_REVOKE,
        actor="apikey:k1",
        target_type="api_key",
        target_id="key_123",
        after_values=revoked,
    )
    without = entry(AuditAction.API_KEY_REVOKE, actor="apikey:k1", target_type="api_key", target_id="key_123")

    assert audit_summary(with_reason) == "apikey:k1 revoked API key key_123 (reason: leaked)"
    assert audit_summary(without) == "apikey:k1 revoked API key key_123"


def test_it_falls_back_to_a_generic_sentence_for_an_unknown_action() -> None:
    unknown = entry(
        "widget.frobnicate",
        actor="system:job",
        target_type="widget_part",
        target_id="w1",
        before_values={"size": 1, "colour": "red", "gone": True, "kept": "x"},
        after_values={"size": 2, "colour": "blue", "kept": "x"},
    )
    bare = entry("widget.frobnicate", actor="system:job", tenant_id=None)
    one = entry("widget.frobnicate", target_type="tenant", target_id="acme", after_values={"a": 1})

    assert audit_summary(unknown) == "system:job widget.frobnicate widget part w1 of acme: 3 fields changed"
    assert audit_summary(bare) == "system:job widget.frobnicate: 0 fields changed"
    assert audit_summary(one) == "user:admin widget.frobnicate tenant acme: 1 field changed"
    assert audit_action_label("widget.frobnicate") == "widget.frobnicate"


@pytest.mark.parametrize("action", list(AuditAction))
def test_it_has_its_own_sentence_for_every_action_even_without_details(action: AuditAction) -> None:
    sentence = audit_sentence(entry(action, target_type="thing", target_id="x1"))

    assert sentence.template in SUMMARIES[action]
    assert sentence.text().startswith("user:admin ")
    assert audit_action_label(action) == action.label


def test_it_keeps_each_value_apart_from_the_sentence_around_it() -> None:
    # A page isolates the values (<bdi>) by filling the template itself.
    sentence = audit_sentence(entry(AuditAction.TENANT_SUSPEND, tenant_id="\u05d0\u05d1\u05d2"))

    assert sentence.template == "{actor} suspended {tenant}"
    assert sentence.values["tenant"] == "\u05d0\u05d1\u05d2"


def test_it_diffs_before_and_after_key_by_key() -> None:
    rotated = entry(
        AuditAction.API_KEY_ROTATE,
        before_values={"is_active": True, "expires_at": None, "grace": "1h", "dropped": 3},
        after_values={
            "is_active": True,
            "expires_at": "2026-12-04T16:30:05+00:00",
            "grace": "1h",
            "replacement": {"api_key_id": "k2", "scopes": ["runs:read"]},
        },
    )

    assert audit_diff(rotated) == [
        DiffLine("is_active", "unchanged", before=True, after=True),
        DiffLine("expires_at", "changed", before=None, after="2026-12-04T16:30:05+00:00"),
        DiffLine("grace", "unchanged", before="1h", after="1h"),
        DiffLine("dropped", "removed", before=3),
        DiffLine("replacement.api_key_id", "added", after="k2"),
        DiffLine("replacement.scopes", "added", after=["runs:read"]),
    ]


def test_it_shows_each_diff_value_by_its_column_kind() -> None:
    changed = entry(
        AuditAction.SUBSCRIPTION_STATUS_CHANGE,
        before_values={
            "status": "ACTIVE",
            "updated_at": "2026-12-03T16:30:05.123456+00:00",
            "limits": {"daily_limit": 6},
            "note": "2026-12-03T16:30:05+00:00",
        },
        after_values={
            "status": "SUSPENDED",
            "updated_at": "2026-12-04T09:00:00Z",
            "limits": {"daily_limit": 24},
            "note": "2026-12-03T16:30:05+00:00",
            "replacement": {"expires_at": None, "scopes": ["runs:read"], "trusted": True},
        },
    )

    assert audit_diff_text(changed) == [
        DiffLine("status", "changed", before="Active", after="Suspended"),
        DiffLine("updated_at", "changed", before="2026-12-03 16:30:05 UTC", after="2026-12-04 09:00:00 UTC"),
        DiffLine("limits.daily_limit", "changed", before="6", after="24"),
        # Text someone typed is shown as typed, even when it looks like a time.
        DiffLine("note", "unchanged", before="2026-12-03T16:30:05+00:00", after="2026-12-03T16:30:05+00:00"),
        DiffLine("replacement.expires_at", "added", after="—"),
        DiffLine("replacement.scopes", "added", after='[\n  "runs:read"\n]'),
        DiffLine("replacement.trusted", "added", after="true"),
    ]


def test_it_diffs_an_entry_with_one_side_or_none() -> None:
    created = entry(AuditAction.WEBHOOK_CREATE, after_values={"url": "https://x.example"})
    deleted = entry(AuditAction.PIPELINE_CONFIG_DELETE, before_values={"domain": "sales"})

    assert audit_diff(created) == [DiffLine("url", "added", after="https://x.example")]
    assert audit_diff(deleted) == [DiffLine("domain", "removed", before="sales")]
    assert audit_diff(entry(AuditAction.TENANT_SUSPEND)) == []


def test_it_names_the_target_by_tenant_kind_and_id() -> None:
    target = audit_target(
        entry(AuditAction.PIPELINE_CONFIG_PAUSE, target_type="pipeline_config", target_id="c1")
    )

    assert (target.tenant_id, target.type_label, target.target_id) == ("acme", "pipeline", "c1")
