"""The audit trail: who changed what, when, for which tenant; append-only and free of secrets.

Services record their own changes with `audit_record(...)`, so the portal, the API and commands
leave the same trail. Where a change came from (portal, api, command) and the request id come
from `audit_context`, which the request middleware sets; commands get the default ("command").

Services record an entry right after their change succeeded, never before (an entry must not claim a
change that then failed). BigQuery has no transaction spanning the change and its entry, so when the
entry cannot be written (BigQuery down right after the change, the table missing) the change stands
and the call still succeeds: failing it would make the caller retry a change that was made, and lose
an API key shown only once. The entry, redacted like every entry, then goes to the application log
at ERROR (logger `tenants_app.services.audit`, message "audit entry not stored") with all its fields
as JSON, so nothing is lost and it can be re-inserted from the log; ship that logger somewhere durable.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import models
from django.utils import timezone

from bigquery_backend.exceptions import BigQueryError
from bigquery_backend.repository import Page
from tenants_app.models import AuditLogEntry
from tenants_app.repositories import central_repository
from tenants_app.secrets import redact_value
from tenants_app.services.actors import API_KEY_ACTOR_PREFIX, STAFF_ACTOR_PREFIX
from tenants_app.services.errors import ValidationFailed

logger = logging.getLogger(__name__)

SOURCES = ("portal", "api", "command")
MAX_PAGE_SIZE = 200


class AuditAction(models.TextChoices):
    """Every action a service records: writers name it from here, and the audit log offers these.

    The label is what a person reads in the portal; the value is what the API and queries filter on.
    """

    TENANT_ONBOARD = "tenant.onboard", "Tenant onboarded"
    TENANT_UPDATE = "tenant.update", "Tenant updated"
    TENANT_SUSPEND = "tenant.suspend", "Tenant suspended"
    TENANT_REACTIVATE = "tenant.reactivate", "Tenant reactivated"
    TENANT_OFFBOARD = "tenant.offboard", "Tenant offboarded"
    SUBSCRIPTION_PLAN_CHANGE = "subscription.plan_change", "Plan changed"
    SUBSCRIPTION_LIMITS_CHANGE = "subscription.limits_change", "Limits changed"
    SUBSCRIPTION_STATUS_CHANGE = "subscription.status_change", "Subscription status changed"
    SUBSCRIPTION_TRIAL_EXPIRE = "subscription.trial_expire", "Trial expired"
    API_KEY_CREATE = "api_key.create", "API key created"
    API_KEY_ROTATE = "api_key.rotate", "API key rotated"
    API_KEY_REVOKE = "api_key.revoke", "API key revoked"
    CREDENTIAL_CREATE = "credential.create", "Credential added"
    CREDENTIAL_REPLACE = "credential.replace", "Credential replaced"
    CREDENTIAL_DEACTIVATE = "credential.deactivate", "Credential deactivated"
    CREDENTIAL_FETCH = "credential.fetch", "Credential fetched by a worker"
    WEBHOOK_CREATE = "webhook.create", "Webhook added"
    WEBHOOK_DELETE = "webhook.delete", "Webhook deleted"
    PIPELINE_CONFIG_CREATE = "pipeline_config.create", "Pipeline created"
    PIPELINE_CONFIG_UPDATE = "pipeline_config.update", "Pipeline updated"
    PIPELINE_CONFIG_PAUSE = "pipeline_config.pause", "Pipeline paused"
    PIPELINE_CONFIG_RESUME = "pipeline_config.resume", "Pipeline resumed"
    PIPELINE_CONFIG_DELETE = "pipeline_config.delete", "Pipeline deleted"
    RUN_ENQUEUE_MANUAL = "run.enqueue_manual", "Run started by hand"
    RUN_ENQUEUE_BACKFILL = "run.enqueue_backfill", "Backfill queued"
    RUN_CANCEL = "run.cancel", "Run cancelled"
    RUN_REQUEUE = "run.requeue", "Run re-queued"
    RUN_LEASE_EXPIRED = "run.lease_expired", "Runs of a lost worker recovered"
    SCHEDULER_RUN = "scheduler.run", "Scheduler run"
    KMS_REENCRYPT = "kms.reencrypt", "Secrets re-encrypted"
    ADMIN_TOKEN_CREATE = "admin_token.create", "Admin token issued"
    ADMIN_TOKEN_REVOKE = "admin_token.revoke", "Admin token revoked"


@dataclass(frozen=True)
class AuditContext:
    """Where the current change comes from."""

    source: str = "command"
    request_id: str | None = None


_context: contextvars.ContextVar[AuditContext] = contextvars.ContextVar(
    "audit_context",
    default=AuditContext(),  # noqa: B039 - a frozen dataclass, never mutated
)


@contextmanager
def audit_context(*, source: str, request_id: str | None = None) -> Iterator[AuditContext]:
    """Record changes made inside this block as coming from `source` (portal, api or command)."""
    if source not in SOURCES:
        raise ValueError(f"unknown audit source {source!r}")
    token = _context.set(AuditContext(source=source, request_id=request_id))
    try:
        yield _context.get()
    finally:
        _context.reset(token)


def current_audit_context() -> AuditContext:
    """The source and request id that changes made now are recorded with."""
    return _context.get()


def actor_type_of(actor: str) -> str:
    """`staff`, `tenant_key` or `system`, from the actor's prefix (`user:`, `apikey:`, anything else)."""
    if actor.startswith(STAFF_ACTOR_PREFIX):
        return "staff"
    if actor.startswith(API_KEY_ACTOR_PREFIX):
        return "tenant_key"
    return "system"


def audit_redact(value: Any) -> Any:
    """A JSON-safe copy of `value` without secrets (tenants_app.secrets.redact_value).

    Names that hold a secret or something derived from it (`*_hash`, `encrypted_*`, `payload`) are
    dropped even hashed or encrypted: a hash of a short secret can be brute-forced offline.
    """
    return redact_value(value, leaf=_json_safe)


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def audit_snapshot(obj: models.Model, *, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The row's values (all, or `fields`) as JSON-safe data, secret columns left out."""
    names = fields or tuple(field.name for field in obj._meta.concrete_fields)
    return audit_redact({name: getattr(obj, name) for name in names})


def audit_changes(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields whose value differs, as (before, after), secrets removed."""
    old, new = audit_redact(before), audit_redact(after)
    changed = [name for name in new if old.get(name) != new[name]]
    return {name: old.get(name) for name in changed}, {name: new[name] for name in changed}


def audit_record(
    *,
    action: AuditAction,
    actor: str,
    tenant_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditLogEntry:
    """Append one entry to the audit log (one DML statement); values pass through `audit_redact`.

    Call it after the change succeeded. If the entry cannot be stored it is logged instead (see the
    module docstring) and returned all the same: the change it records has happened.
    """
    context = current_audit_context()
    entry = AuditLogEntry(
        audit_id=uuid.uuid4().hex,
        occurred_at=timezone.now(),
        actor=actor,
        actor_type=actor_type_of(actor),
        source=context.source,
        # The plain value: the entry is stored, logged and compared as text.
        action=str(action),
        tenant_id=tenant_id,
        target_type=target_type,
        target_id=target_id,
        before_values=None if before is None else audit_redact(before),
        after_values=None if after is None else audit_redact(after),
        request_id=context.request_id,
    )
    try:
        central_repository(AuditLogEntry).insert(entry)
    except BigQueryError as exc:
        logger.error(
            "audit entry not stored (%s): %s", type(exc).__name__, json.dumps(audit_entry_data(entry))
        )
    return entry


def audit_entry_data(entry: AuditLogEntry) -> dict[str, Any]:
    """Every field of an entry as JSON-safe data (entries hold no secrets by construction)."""
    return audit_redact({field.name: getattr(entry, field.name) for field in entry._meta.concrete_fields})


def audit_list(
    *,
    tenant_id: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    source: str | None = None,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[AuditLogEntry]:
    """One page of entries, newest first, with the total: two BigQuery jobs."""
    errors: dict[str, list[str]] = {}
    if not 1 <= limit <= MAX_PAGE_SIZE:
        errors["limit"] = [f"Use 1 to {MAX_PAGE_SIZE}."]
    if offset < 0:
        errors["offset"] = ["Use 0 or more."]
    if source is not None and source not in SOURCES:
        errors["source"] = [f"Choose one of {', '.join(SOURCES)}."]
    if since is not None and until is not None and since > until:
        errors["until"] = ["Must not be before 'since'."]
    if errors:
        raise ValidationFailed("invalid audit filter", errors=errors)
    filters: dict[str, Any] = {}
    for name, value in (("tenant_id", tenant_id), ("action", action), ("actor", actor), ("source", source)):
        if value:
            filters[name] = value
    if since is not None:
        filters["occurred_at__gte"] = since
    if until is not None:
        filters["occurred_at__lt"] = until
    return central_repository(AuditLogEntry).page(
        filters=filters, order_by=("-occurred_at", "audit_id"), limit=limit, offset=offset
    )
