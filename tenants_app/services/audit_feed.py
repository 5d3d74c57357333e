"""The audit log as people read it (selectors): one sentence per entry, its target, and what changed.

Everything here is read from the entry itself: its actor, action, target and the before/after values
that `audit_record` already stripped of secrets. Nothing is looked up elsewhere, so a sentence can
never show more than the entry holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tenants_app.labels import enum_columns, enum_label, instant_columns
from tenants_app.models import AuditLogEntry
from tenants_app.presentation import json_text, timestamp
from tenants_app.services.audit import AuditAction

# A sentence per action. `{actor}`, `{tenant}`, `{target}` and `{type}` name the entry's own columns;
# `{before_X}` and `{after_X}` its values; `{fields}` the keys that changed. The first template whose
# names the entry holds is used, so an entry without a detail loses that clause, never its sentence.
SUMMARIES: Mapping[AuditAction, tuple[str, ...]] = {
    AuditAction.TENANT_ONBOARD: (
        "{actor} onboarded {tenant} on the {after_plan_name} plan",
        "{actor} onboarded {tenant} on the {after_plan} plan",
        "{actor} onboarded {tenant}",
    ),
    AuditAction.TENANT_UPDATE: ("{actor} updated {fields} of {tenant}", "{actor} updated {tenant}"),
    AuditAction.TENANT_SUSPEND: ("{actor} suspended {tenant}",),
    AuditAction.TENANT_REACTIVATE: ("{actor} reactivated {tenant}",),
    AuditAction.TENANT_OFFBOARD: ("{actor} offboarded {tenant}",),
    AuditAction.SUBSCRIPTION_PLAN_CHANGE: (
        "{actor} changed the plan of {tenant} from {before_plan_name} to {after_plan_name}",
        "{actor} set the plan of {tenant} to {after_plan_name}",
        "{actor} changed the plan of {tenant}",
    ),
    AuditAction.SUBSCRIPTION_LIMITS_CHANGE: (
        "{actor} changed the {fields} of {tenant}",
        "{actor} changed the limits of {tenant}",
    ),
    AuditAction.SUBSCRIPTION_STATUS_CHANGE: (
        "{actor} changed the subscription of {tenant} from {before_status} to {after_status}",
        "{actor} set the subscription of {tenant} to {after_status}",
        "{actor} changed the subscription status of {tenant}",
    ),
    AuditAction.SUBSCRIPTION_TRIAL_EXPIRE: ("{actor} ended the expired trial of {tenant}",),
    AuditAction.API_KEY_CREATE: (
        "{actor} created API key {target} ({after_name})",
        "{actor} created API key {target}",
    ),
    AuditAction.API_KEY_ROTATE: (
        "{actor} rotated API key {target}, replaced by {after_replaced_by_key_id}",
        "{actor} rotated API key {target}",
    ),
    AuditAction.API_KEY_REVOKE: (
        "{actor} revoked API key {target} (reason: {after_revoked_reason})",
        "{actor} revoked API key {target}",
    ),
    AuditAction.CREDENTIAL_CREATE: (
        "{actor} added {after_provider} credential {target} ({after_name})",
        "{actor} added credential {target}",
    ),
    AuditAction.CREDENTIAL_REPLACE: ("{actor} replaced credential {target}",),
    AuditAction.CREDENTIAL_DEACTIVATE: ("{actor} deactivated credential {target}",),
    AuditAction.CREDENTIAL_FETCH: (
        "{actor} fetched credential {target} for run {after_run_id}",
        "{actor} fetched credential {target}",
    ),
    AuditAction.WEBHOOK_CREATE: (
        "{actor} added webhook {target} to {after_url}",
        "{actor} added webhook {target}",
    ),
    AuditAction.WEBHOOK_DELETE: ("{actor} deleted webhook {target}",),
    AuditAction.PIPELINE_CONFIG_CREATE: (
        "{actor} created pipeline {target} ({after_pipeline_template})",
        "{actor} created pipeline {target}",
    ),
    AuditAction.PIPELINE_CONFIG_UPDATE: (
        "{actor} changed the {fields} of pipeline {target}",
        "{actor} updated pipeline {target}",
    ),
    AuditAction.PIPELINE_CONFIG_PAUSE: ("{actor} paused pipeline {target}",),
    AuditAction.PIPELINE_CONFIG_RESUME: ("{actor} resumed pipeline {target}",),
    AuditAction.PIPELINE_CONFIG_DELETE: ("{actor} deleted pipeline {target}",),
    AuditAction.RUN_ENQUEUE_MANUAL: (
        "{actor} started run {target} of pipeline {after_config_id}",
        "{actor} started run {target}",
    ),
    AuditAction.RUN_ENQUEUE_BACKFILL: (
        "{actor} queued {after_runs_enqueued} backfill runs of pipeline {target}, "
        "{after_start_date} to {after_end_date}",
        "{actor} queued a backfill of pipeline {target}",
    ),
    AuditAction.RUN_CANCEL: (
        "{actor} cancelled run {target} (reason: {after_reason})",
        "{actor} cancelled run {target}",
    ),
    AuditAction.RUN_REQUEUE: ("{actor} re-queued run {target}",),
    AuditAction.RUN_LEASE_EXPIRED: ("{actor} recovered the runs of a lost worker: {target}",),
    AuditAction.SCHEDULER_RUN: (
        "{actor} queued {after_runs_enqueued} runs of {after_configs_claimed} pipelines",
        "{actor} queued scheduled runs",
    ),
    AuditAction.KMS_REENCRYPT: ("{actor} re-encrypted stored secrets with key version {target}",),
    AuditAction.ADMIN_TOKEN_CREATE: (
        "{actor} issued admin token {target} to {after_user}",
        "{actor} issued admin token {target}",
    ),
    AuditAction.ADMIN_TOKEN_REVOKE: (
        "{actor} revoked admin token {target} of {before_user}",
        "{actor} revoked admin token {target}",
    ),
}
# Any other action (one whose template was never written, or an entry of an action since retired).
GENERIC_SUMMARY = "{actor} {action} {subject}: {count}"
GENERIC_NO_SUBJECT = "{actor} {action}: {count}"

# How a target type reads in a sentence; others lose their underscores.
TARGET_TYPES: Mapping[str, str] = {
    "api_key": "API key",
    "pipeline_config": "pipeline",
    "webhook_endpoint": "webhook",
    "kms_key_version": "KMS key version",
}


@dataclass(frozen=True)
class Sentence:
    """A summary as its template and the entry's values, so a page can isolate each value (<bdi>)."""

    template: str
    values: Mapping[str, str]

    def text(self) -> str:
        return self.template.format_map(self.values)


@dataclass(frozen=True)
class Target:
    """What an entry is about: the tenant, the kind of thing, and its id (any of them may be empty)."""

    tenant_id: str
    type_label: str
    target_id: str


@dataclass(frozen=True)
class DiffLine:
    """One key of the entry's values: `added`, `removed`, `changed` or `unchanged`."""

    key: str
    change: str
    before: Any = None
    after: Any = None


def audit_action_label(action: str) -> str:
    """The action as people read it (`Plan changed`); an action no longer written, as stored."""
    try:
        return str(AuditAction(action).label)
    except ValueError:
        return action


def audit_target(entry: AuditLogEntry) -> Target:
    target_type = entry.target_type or ""
    return Target(
        tenant_id=entry.tenant_id or "",
        type_label=TARGET_TYPES.get(target_type, target_type.replace("_", " ")),
        target_id=entry.target_id or "",
    )


def audit_summary(entry: AuditLogEntry) -> str:
    """One sentence saying who did what to what: "user:admin revoked API key key_1 (reason: leaked)"."""
    return audit_sentence(entry).text()


def audit_sentence(entry: AuditLogEntry) -> Sentence:
    """The summary's template (from SUMMARIES, else the generic one) with the values it names."""
    values = _sentence_values(entry)
    for template in SUMMARIES.get(_known_action(entry.action), ()):
        try:
            template.format_map(values)
        except KeyError:
            continue
        return Sentence(template, values)
    return Sentence(GENERIC_SUMMARY if "subject" in values else GENERIC_NO_SUBJECT, values)


def audit_diff(entry: AuditLogEntry) -> list[DiffLine]:
    """Every key of before and after (nested objects as dotted keys), before's order first."""
    before, after = _flat(entry.before_values), _flat(entry.after_values)
    lines = []
    for key in [*before, *(key for key in after if key not in before)]:
        if key not in after:
            lines.append(DiffLine(key, "removed", before=before[key]))
        elif key not in before:
            lines.append(DiffLine(key, "added", after=after[key]))
        else:
            change = "unchanged" if before[key] == after[key] else "changed"
            lines.append(DiffLine(key, change, before=before[key], after=after[key]))
    return lines


def audit_diff_text(entry: AuditLogEntry) -> list[DiffLine]:
    """The diff as a page shows it: each value as text in its column's format (time, label, JSON)."""
    return [
        DiffLine(
            line.key,
            line.change,
            before=None if line.change == "added" else _diff_value_text(line.key, line.before),
            after=None if line.change == "removed" else _diff_value_text(line.key, line.after),
        )
        for line in audit_diff(entry)
    ]


# --- internals --------------------------------------------------------------------------------------
def _known_action(action: str) -> AuditAction | None:
    try:
        return AuditAction(action)
    except ValueError:
        return None


def _sentence_values(entry: AuditLogEntry) -> dict[str, str]:
    target = audit_target(entry)
    changed = [line.key for line in audit_diff(entry) if line.change != "unchanged"]
    values = {
        "actor": entry.actor or "someone",
        "action": entry.action or "acted on",
        "type": target.type_label,
        "target": target.target_id,
        "tenant": target.tenant_id,
        "subject": _subject(target),
        "count": f"{len(changed)} field{'' if len(changed) == 1 else 's'} changed",
    }
    if changed:
        values["fields"] = ", ".join(key.replace("_", " ") for key in changed)
    for side, data in (("before", entry.before_values), ("after", entry.after_values)):
        for key, value in data.items() if isinstance(data, Mapping) else ():
            # An enum member reads as its label ("Professional", "OpenAI"), as on every page.
            text = enum_label(value) if key in _enum_keys() and value else _scalar_text(value)
            if text:
                values[f"{side}_{key}"] = text
    return {name: value for name, value in values.items() if value}


def _enum_keys() -> frozenset[str]:
    # `plan`: the onboarding entries written before they named the column (`plan_name`).
    return enum_columns() | {"plan"}


def _diff_value_text(key: str, value: Any) -> str:
    # A nested key (`replacement.expires_at`) is of the kind its own column name says.
    column = key.rpartition(".")[2]
    if column in instant_columns():
        return timestamp(value)
    if column in _enum_keys() and not isinstance(value, Mapping | list):
        return enum_label(value)
    return json_text(value)


def _subject(target: Target) -> str:
    """`subscription sub_1 of acme`, `tenant acme`, `scheduler`: whichever parts the entry has."""
    subject = " ".join(part for part in (target.type_label, target.target_id) if part)
    if target.tenant_id and target.tenant_id != target.target_id:
        return f"{subject} of {target.tenant_id}" if subject else target.tenant_id
    return subject


def _scalar_text(value: Any) -> str:
    """A value a sentence can hold; "" for nothing, objects and lists of objects (the diff shows them)."""
    if value is None or isinstance(value, Mapping):
        return ""
    if isinstance(value, list):
        if any(isinstance(item, Mapping | list) for item in value):
            return ""
        return ", ".join(str(item) for item in value)
    return str(value)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        return {prefix or "value": data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat
