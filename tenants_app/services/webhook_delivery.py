"""Webhook delivery: where a URL may point, the signed POST, and the delivery log's rows and retries.

The periodic loop (services/notifications.py, `notifications_deliver`) calls these in batches: the
deliveries of a tick are attempted side by side, then written with ONE INSERT (new ones) and ONE MERGE
(retried ones), whatever their number. Each attempt counts in `webhook_delivery_recorded`.

SSRF: an endpoint URL is https, and every address its host resolves to is a public one; the POST then
connects to the address that was checked (not to a second resolution a DNS rebinding could change) and
follows no redirect. http:// and loopback addresses pass only with WEBHOOK_ALLOW_LOCALHOST (DEBUG,
tests). Nothing here logs or stores the secret: errors name the failure's class or HTTP status only.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from bigquery_backend.models import model_replace
from bigquery_backend.repository import RowChange
from tenants_app import metrics
from tenants_app.kms import DecryptionFailed, KmsUnavailable, aad_for, get_kms
from tenants_app.log_context import ContextThreadPoolExecutor
from tenants_app.models import TenantWebhookDelivery, TenantWebhookEndpoint, WebhookDeliveryStatus
from tenants_app.repositories import central_repository
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.retries import exponential_backoff
from tenants_app.webhook_signature import SIGNATURE_HEADER, webhook_sign

logger = logging.getLogger(__name__)

# The AAD's first part names the table: a ciphertext copied from another table never decrypts here.
AAD_TABLE = "tenant_webhook_endpoints"
MAX_URL_LENGTH = 2048
USER_AGENT = "Convergence-Webhooks/1"
EVENT_HEADER = "Convergence-Event"
# Rows per INSERT: 14 parameters each, far below BigQuery's 10,000 per statement.
_INSERT_CHUNK = 300
_PARALLEL_POSTS = 8
_MAX_ERROR_LENGTH = 200
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})

DELIVERED, RETRYING, FAILED = "delivered", "retrying", "failed"  # metric outcomes

# `(url, addresses, body, headers) -> (status, error)`: the network, injectable in tests of the rules.
Sender = Callable[[str, Sequence[str], bytes, Mapping[str, str]], tuple[int | None, str | None]]


# --- where a URL may point ------------------------------------------------------------------------------
def _url_error(reason: str) -> ValidationFailed:
    return ValidationFailed(f"url: {reason}", errors={"url": [reason]})


def _allowed_address(address: str, *, allow_local: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_local
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def webhook_url_check(url: object) -> tuple[str, list[str]]:
    """The URL if an endpoint may point there, and the addresses it resolves to; else a 400 naming `url`."""
    if not isinstance(url, str) or not url.strip():
        raise _url_error("This field is required.")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH or any(char.isspace() for char in url):
        raise _url_error(f"Enter a URL of at most {MAX_URL_LENGTH} characters, without spaces.")
    allow_local = bool(settings.WEBHOOK_ALLOW_LOCALHOST)
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _url_error("Enter a valid URL.") from None
    if parts.scheme != "https" and not (parts.scheme == "http" and allow_local):
        raise _url_error("Use an https:// URL.")
    if parts.username or parts.password:
        # Credentials in a URL would be a secret stored and shown in the clear.
        raise _url_error("Put no user name or password in the URL: verify our signature instead.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _url_error("Enter a URL with a host name.")
    if parts.scheme == "http" and host.lower() not in _LOCAL_NAMES and not _is_loopback_literal(host):
        raise _url_error("Use an https:// URL (http:// is for localhost only).")
    addresses = _resolve(host, port)
    if not addresses:
        raise _url_error("The host name does not resolve.")
    if not all(_allowed_address(address, allow_local=allow_local) for address in addresses):
        raise _url_error("The host resolves to a private, loopback or link-local address.")
    return url, addresses


def _is_loopback_literal(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the signed POST ------------------------------------------------------------------------------------
class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address checked beforehand, whatever the host name resolves to by now."""

    def __init__(self, host: str, port: int | None, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As above, with TLS verified for the host name (SNI and certificate), not for the address."""

    def __init__(self, host: str, port: int | None, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def http_send(
    url: str, addresses: Sequence[str], body: bytes, headers: Mapping[str, str]
) -> tuple[int | None, str | None]:
    """POST `body` to `url` at its first checked address: (HTTP status, None) or (None, what failed)."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    connection = kind(parts.hostname or "", parts.port, addresses[0], float(settings.WEBHOOK_TIMEOUT_SECONDS))
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        response = connection.getresponse()
        response.read(64 * 1024)  # drained, never stored: a receiver's answer is not ours to keep
        return response.status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, f"connection failed: {type(exc).__name__}"
    finally:
        connection.close()


# --- secrets --------------------------------------------------------------------------------------------
def endpoint_aad(tenant_id: str, endpoint_id: str) -> bytes:
    """The endpoint's ciphertext decrypts only on its own row."""
    return aad_for(AAD_TABLE, tenant_id, endpoint_id)


def endpoint_secret(endpoint: TenantWebhookEndpoint) -> str:
    """The signing secret, for signing only: never in a response, a log line or a row."""
    plaintext = get_kms().decrypt(
        bytes(endpoint.encrypted_secret), aad=endpoint_aad(endpoint.tenant_id, endpoint.endpoint_id)
    )
    return plaintext.decode("utf-8")


# --- the delivery log -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One event to deliver: to every endpoint of the tenant subscribed to it, or to one (`endpoint_id`)."""

    event_id: str
    event_type: str
    tenant_id: str
    created: str
    data: Mapping[str, Any]
    endpoint_id: str | None = None

    def body(self) -> str:
        document = {
            "id": self.event_id,
            "type": self.event_type,
            "created": self.created,
            "tenant_id": self.tenant_id,
            "data": dict(self.data),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)


def endpoints_active(*, tenant_ids: Iterable[str]) -> dict[str, list[TenantWebhookEndpoint]]:
    """The tenants' active endpoints (one read), by tenant."""
    tenants = sorted(set(tenant_ids))
    found: dict[str, list[TenantWebhookEndpoint]] = {tenant: [] for tenant in tenants}
    if not tenants:
        return found
    rows = central_repository(TenantWebhookEndpoint).list(
        filters={"tenant_id__in": tenants, "is_active": True}, order_by=("created_at",)
    )
    for row in rows:
        found[row.tenant_id].append(row)
    return found


def _wants(endpoint: TenantWebhookEndpoint, event: Event) -> bool:
    if event.endpoint_id is not None:
        return endpoint.endpoint_id == event.endpoint_id
    return not endpoint.event_types or event.event_type in endpoint.event_types


def _delivery_id(event_id: str, endpoint_id: str) -> str:
    return f"whd_{uuid.uuid5(uuid.NAMESPACE_URL, f'{event_id}/{endpoint_id}').hex}"


def deliveries_build(
    *, events: Sequence[Event], endpoints: Mapping[str, Sequence[TenantWebhookEndpoint]], now: datetime
) -> list[TenantWebhookDelivery]:
    """One PENDING delivery per event and endpoint that wants it; ids derived, so a repeat is the same."""
    rows = []
    for event in events:
        for endpoint in endpoints.get(event.tenant_id, ()):
            if not _wants(endpoint, event):
                continue
            rows.append(
                TenantWebhookDelivery(
                    delivery_id=_delivery_id(event.event_id, endpoint.endpoint_id),
                    endpoint_id=endpoint.endpoint_id,
                    tenant_id=event.tenant_id,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    body=event.body(),
                    status=WebhookDeliveryStatus.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
    return rows


def deliveries_pending(*, limit: int) -> list[TenantWebhookDelivery]:
    """PENDING deliveries, the soonest retry first (one read): the due ones and when the next falls due."""
    return central_repository(TenantWebhookDelivery).list(
        filters={"status": WebhookDeliveryStatus.PENDING}, order_by=("next_attempt_at",), limit=limit
    )


def deliveries_attempt(
    *,
    deliveries: Sequence[TenantWebhookDelivery],
    endpoints: Mapping[str, TenantWebhookEndpoint],
    now: datetime,
    send: Sender = http_send,
) -> list[TenantWebhookDelivery]:
    """Each delivery after one more attempt (side by side): delivered, retrying later, or failed."""
    if not deliveries:
        return []
    secrets = _secrets({d.endpoint_id for d in deliveries}, endpoints)
    with ContextThreadPoolExecutor(min(_PARALLEL_POSTS, len(deliveries))) as pool:
        futures = [
            pool.submit(_attempt, delivery, endpoints.get(delivery.endpoint_id), secrets, now, send)
            for delivery in deliveries
        ]
        return [future.result() for future in futures]


def _secrets(ids: set[str], endpoints: Mapping[str, TenantWebhookEndpoint]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for endpoint_id in sorted(ids):
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None or endpoint.is_active is False:
            continue
        try:
            found[endpoint_id] = endpoint_secret(endpoint)
        except (KmsUnavailable, DecryptionFailed, UnicodeDecodeError) as exc:
            # Unavailable: these deliveries wait for the next attempt. The class only, never the value.
            logger.warning("webhook endpoint %s secret unavailable: %s", endpoint_id, type(exc).__name__)
            found[endpoint_id] = None
    return found


def _attempt(
    delivery: TenantWebhookDelivery,
    endpoint: TenantWebhookEndpoint | None,
    secrets: Mapping[str, str | None],
    now: datetime,
    send: Sender,
) -> TenantWebhookDelivery:
    if endpoint is None or endpoint.is_active is False:
        metrics.webhook_delivery_recorded(outcome=FAILED)
        return model_replace(
            delivery, status=WebhookDeliveryStatus.FAILED, next_attempt_at=None, last_error="endpoint deleted"
        )
    secret = secrets.get(delivery.endpoint_id)
    status, error = (
        (None, "signing secret unavailable")
        if secret is None
        else _post(delivery, endpoint, secret, now, send)
    )
    attempts = delivery.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now, "response_status": status}
    if status is not None and 200 <= status < 300:
        metrics.webhook_delivery_recorded(outcome=DELIVERED)
        return model_replace(
            delivery,
            **values,
            status=WebhookDeliveryStatus.DELIVERED,
            next_attempt_at=None,
            delivered_at=now,
            last_error=None,
        )
    error = error or f"HTTP {status}"
    if attempts >= int(settings.WEBHOOK_MAX_ATTEMPTS):
        metrics.webhook_delivery_recorded(outcome=FAILED)
        return model_replace(
            delivery, **values, status=WebhookDeliveryStatus.FAILED, next_attempt_at=None, last_error=error
        )
    metrics.webhook_delivery_recorded(outcome=RETRYING)
    delay = exponential_backoff(
        retry_count=attempts - 1,
        base_seconds=float(settings.WEBHOOK_RETRY_BASE_SECONDS),
        cap_seconds=float(settings.WEBHOOK_RETRY_MAX_SECONDS),
    )
    return model_replace(
        delivery,
        **values,
        status=WebhookDeliveryStatus.PENDING,
        next_attempt_at=now + delay,
        last_error=error,
    )


def _post(
    delivery: TenantWebhookDelivery, endpoint: TenantWebhookEndpoint, secret: str, now: datetime, send: Sender
) -> tuple[int | None, str | None]:
    try:
        url, addresses = webhook_url_check(endpoint.url)
    except ValidationFailed as exc:
        # Checked again at each attempt: the host may resolve elsewhere since the endpoint was made.
        return None, f"refused: {exc.errors['url'][0]}"
    body = delivery.body.encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event_type,
        SIGNATURE_HEADER: webhook_sign(secret=secret, body=body, timestamp=int(now.timestamp())),
    }
    status, error = send(url, addresses, body, headers)
    return status, (error[:_MAX_ERROR_LENGTH] if error else None)


_SAVED = (
    "status",
    "attempts",
    "next_attempt_at",
    "last_attempt_at",
    "response_status",
    "last_error",
    "delivered_at",
)


def deliveries_save(
    *, new: Sequence[TenantWebhookDelivery], attempted: Sequence[tuple[int, TenantWebhookDelivery]]
) -> None:
    """New rows in MERGEs of up to 300 (written again, never twice), attempted ones in ONE MERGE (if
    still at the attempt count read)."""
    repository = central_repository(TenantWebhookDelivery)
    # Keyed by delivery id, last copy wins: a tick that failed after writing its rows (or two hosts)
    # may build the same deliveries again, and a row written twice would wedge every later MERGE.
    fresh = list({row.delivery_id: row for row in new}.values())
    for start in range(0, len(fresh), _INSERT_CHUNK):
        chunk = fresh[start : start + _INSERT_CHUNK]
        repository.replace_group(chunk, group={"delivery_id__in": [row.delivery_id for row in chunk]})
    latest = {row.delivery_id: (attempts_read, row) for attempts_read, row in attempted}
    changes = [
        RowChange(
            key=row.delivery_id,
            values={name: getattr(row, name) for name in _SAVED},
            expected={"attempts": attempts_read},
        )
        for attempts_read, row in latest.values()
    ]
    if changes:
        repository.update_many(changes)
