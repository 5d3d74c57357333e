"""Webhook endpoints per tenant: created with a signing secret shown once, listed, deleted, tested.

The secret (`cvg_whsec_...`, the shape in secret_shapes) is KMS-encrypted and bound to its row like a
cloud credential (AAD `aad_for("tenant_webhook_endpoints", tenant_id, endpoint_id)`); rows, audit
entries and every answer after the creation show `secret_prefix` only. Delivery is in
services/webhook_delivery.py and services/notifications.py.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from bigquery_backend.repository import Page
from tenants_app import secret_shapes
from tenants_app.kms import KmsUnavailable, get_kms
from tenants_app.models import TenantWebhookDelivery, TenantWebhookEndpoint
from tenants_app.repositories import central_repository
from tenants_app.services.actors import UNKNOWN_ACTOR, actor_masked
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.errors import DoesNotExist, PlanLimitReached, ServiceUnavailable, ValidationFailed
from tenants_app.services.notifications import EVENT_TYPES, TEST_EVENT, notify
from tenants_app.services.tenants import tenant_get
from tenants_app.services.text_rules import bidi_require_none
from tenants_app.services.webhook_delivery import endpoint_aad, webhook_url_check

SECRET_PREFIX = secret_shapes.WEBHOOK_SECRET_PREFIX
DISPLAY_RANDOM_CHARS = 6
MAX_ENDPOINTS_PER_TENANT = 10
MAX_DESCRIPTION_LENGTH = 200
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class CreatedEndpoint:
    """A new endpoint and its secret: the only time the secret is ever returned."""

    endpoint: TenantWebhookEndpoint
    secret: str = field(repr=False)  # never in a log line or traceback


def _repository() -> Any:
    return central_repository(TenantWebhookEndpoint)


def _new_secret() -> str:
    random_part = "".join(
        secrets.choice(secret_shapes.OUR_KEY_CHARACTERS) for _ in range(secret_shapes.OUR_KEY_RANDOM_LENGTH)
    )
    return SECRET_PREFIX + random_part


def _check_event_types(event_types: object) -> list[str]:
    if event_types is None:
        return []
    if not isinstance(event_types, list | tuple) or not all(isinstance(e, str) for e in event_types):
        raise ValidationFailed(
            "event_types: a list of event names", errors={"event_types": ["Expected a list."]}
        )
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        reason = f"Unknown event(s) {', '.join(unknown)}; choose from {', '.join(EVENT_TYPES)}."
        raise ValidationFailed(f"event_types: {reason}", errors={"event_types": [reason]})
    return sorted(set(event_types))


def _check_description(description: object) -> str | None:
    if description in (None, ""):
        return None
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        reason = f"At most {MAX_DESCRIPTION_LENGTH} characters."
        raise ValidationFailed(f"description: {reason}", errors={"description": [reason]})
    # The description is the endpoint's name on every page that lists it.
    bidi_require_none("description", description)
    return description.strip()


def _encrypt(secret: str, *, tenant_id: str, endpoint_id: str) -> bytes:
    try:
        return get_kms().encrypt(secret.encode("utf-8"), aad=endpoint_aad(tenant_id, endpoint_id))
    except KmsUnavailable as exc:
        raise ServiceUnavailable(
            "the key management service is unavailable: nothing was stored, try again later"
        ) from exc


def webhook_endpoint_metadata(row: TenantWebhookEndpoint) -> dict[str, Any]:
    """What answers, pages and audit entries may show: never the secret or its ciphertext."""
    return {
        "endpoint_id": row.endpoint_id,
        "tenant_id": row.tenant_id,
        "url": row.url,
        "description": row.description,
        "event_types": list(row.event_types or []),
        "secret_prefix": row.secret_prefix,
        "is_active": row.is_active is not False,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "created_by": row.created_by,
    }


# --- services -------------------------------------------------------------------------------------------
def webhook_endpoint_create(
    *,
    tenant_id: str,
    url: object,
    event_types: object = None,
    description: object = None,
    created_by: str | None,
) -> CreatedEndpoint:
    """Check the URL (https, public address), store the endpoint with a new encrypted secret."""
    checked_url, _ = webhook_url_check(url)
    types = _check_event_types(event_types)
    text = _check_description(description)
    tenant_get(tenant_id=tenant_id)
    if len(webhook_endpoint_list(tenant_id=tenant_id)) >= MAX_ENDPOINTS_PER_TENANT:
        raise PlanLimitReached(f"at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints per tenant")
    endpoint_id = f"whe_{uuid.uuid4().hex}"
    secret = _new_secret()
    row = TenantWebhookEndpoint(
        endpoint_id=endpoint_id,
        tenant_id=tenant_id,
        url=checked_url,
        description=text,
        event_types=types,
        encrypted_secret=_encrypt(secret, tenant_id=tenant_id, endpoint_id=endpoint_id),
        secret_prefix=secret[: len(SECRET_PREFIX) + DISPLAY_RANDOM_CHARS],
        is_active=True,
        created_at=timezone.now(),
        created_by=created_by,
    )
    _repository().insert(row)
    _audit(AuditAction.WEBHOOK_CREATE, created_by, row, after=webhook_endpoint_metadata(row))
    return CreatedEndpoint(endpoint=row, secret=secret)


def webhook_endpoint_list(*, tenant_id: str, include_deleted: bool = False) -> list[TenantWebhookEndpoint]:
    """The tenant's endpoints, oldest first (the ciphertext is left in BigQuery)."""
    filters: dict[str, Any] = {"tenant_id": tenant_id}
    if not include_deleted:
        filters["is_active"] = True
    return _repository().list(filters=filters, order_by=("created_at",), fields=_SHOWN)


# Every column but the ciphertext: pages and answers never read the secret out of BigQuery.
_SHOWN = (
    "tenant_id",
    "url",
    "description",
    "event_types",
    "secret_prefix",
    "is_active",
    "created_at",
    "created_by",
    "deleted_at",
    "deleted_by",
)


def _find_own(tenant_id: str, endpoint_id: str) -> TenantWebhookEndpoint:
    rows = _repository().list(
        filters={"endpoint_id": endpoint_id, "tenant_id": tenant_id}, limit=1, fields=_SHOWN
    )
    if not rows:
        raise DoesNotExist(f"webhook endpoint {endpoint_id!r} does not exist")
    return rows[0]


def webhook_endpoint_get(*, tenant_id: str, endpoint_id: str) -> TenantWebhookEndpoint:
    """One of the tenant's endpoints; another tenant's (or a deleted one) is DoesNotExist."""
    row = _find_own(tenant_id, endpoint_id)
    if row.is_active is False:
        raise DoesNotExist(f"webhook endpoint {endpoint_id!r} does not exist")
    return row


def webhook_endpoint_delete(
    *, tenant_id: str, endpoint_id: str, deleted_by: str | None
) -> TenantWebhookEndpoint:
    """Deactivate the endpoint: nothing more is sent to it, its log stays; idempotent."""
    row = _find_own(tenant_id, endpoint_id)
    if row.is_active is False:
        return row
    values = {"is_active": False, "deleted_at": timezone.now(), "deleted_by": deleted_by}
    filters = {"endpoint_id": endpoint_id, "tenant_id": tenant_id, "is_active": True}
    if _repository().update_where(values, filters=filters) == 0:
        return _find_own(tenant_id, endpoint_id)  # deleted meanwhile by another request
    before = webhook_endpoint_metadata(row)
    for name, value in values.items():
        setattr(row, name, value)
    _audit(AuditAction.WEBHOOK_DELETE, deleted_by, row, before=before, after=webhook_endpoint_metadata(row))
    return row


def webhook_endpoint_send_test(*, tenant_id: str, endpoint_id: str, actor: str | None) -> str:
    """Queue a `webhook.test` event for this endpoint only; delivered by the periodic loop in seconds."""
    row = webhook_endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id)
    event_id = notify(
        event=TEST_EVENT,
        tenant_id=tenant_id,
        endpoint_id=row.endpoint_id,
        # The body goes to the tenant's endpoint: it says staff asked, never which staff member (actors.py).
        data={
            "message": "A test event sent from Convergence.",
            "requested_by": actor_masked(actor or UNKNOWN_ACTOR),
        },
    )
    if event_id is None:
        raise ServiceUnavailable("the event queue is unavailable: try again later")
    return event_id


def webhook_delivery_page(
    *, tenant_id: str, endpoint_id: str, limit: int = 50, offset: int = 0
) -> Page[TenantWebhookDelivery]:
    """The endpoint's delivery log, newest first."""
    webhook_endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationFailed("limit: out of range", errors={"limit": [f"Between 1 and {MAX_PAGE_SIZE}."]})
    return central_repository(TenantWebhookDelivery).page(
        filters={"tenant_id": tenant_id, "endpoint_id": endpoint_id},
        order_by=("-created_at",),
        limit=limit,
        offset=offset,
    )


def webhook_delivery_data(row: TenantWebhookDelivery) -> dict[str, Any]:
    """A delivery as answers show it: its event, outcome and attempts (the body holds no secret)."""
    return {
        "delivery_id": row.delivery_id,
        "endpoint_id": row.endpoint_id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "response_status": row.response_status,
        "last_error": row.last_error,
        "next_attempt_at": _iso(row.next_attempt_at),
        "last_attempt_at": _iso(row.last_attempt_at),
        "delivered_at": _iso(row.delivered_at),
        "created_at": _iso(row.created_at),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _audit(
    action: AuditAction,
    actor: str | None,
    row: TenantWebhookEndpoint,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    audit_record(
        action=action,
        actor=actor or UNKNOWN_ACTOR,
        tenant_id=row.tenant_id,
        target_type="webhook_endpoint",
        target_id=row.endpoint_id,
        before=before,
        after=after,
    )
