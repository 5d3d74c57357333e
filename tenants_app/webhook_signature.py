"""Webhook signatures, as Stripe signs: HMAC-SHA256 over `{timestamp}.{body}` with the endpoint's secret.

Every delivery carries `Convergence-Signature: t=<unix seconds>,v1=<hex digest>`. A receiver checks it
with `webhook_verify` before trusting the body: the digest proves the body came from us unchanged, and
the timestamp (inside the signed text) bounds how long a captured request can be replayed.

This module imports only the standard library, so receivers may copy it as it is; the sender
(tenants_app/services/webhooks.py) signs with the same `webhook_sign`, so the two cannot drift.

    from webhook_signature import WebhookSignatureError, webhook_verify

    try:
        webhook_verify(secret=SECRET, body=request_body_bytes, header=request.headers[SIGNATURE_HEADER])
    except WebhookSignatureError:
        return 400
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Convergence-Signature"
SCHEME = "v1"
# Stripe's default: a delivery older than this (or this far in the future) is refused as a replay.
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookSignatureError(ValueError):
    """The header is missing or malformed, the digest does not match, or the timestamp is too old."""


def webhook_sign(*, secret: str, body: bytes, timestamp: int) -> str:
    """The header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},{SCHEME}={_digest(secret, body, timestamp)}"


def webhook_verify(
    *,
    secret: str,
    body: bytes,
    header: str | None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a delivery's header against its raw body; its timestamp, or WebhookSignatureError.

    `body` must be the bytes as received (a re-serialised JSON document is another text). Several `v1`
    values may be present (a secret being rolled): any one matching is enough.
    """
    timestamp, digests = _parse(header)
    expected = _digest(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, digest) for digest in digests):
        raise WebhookSignatureError("signature does not match the body")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookSignatureError("timestamp outside the tolerance: possibly a replay")
    return timestamp


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def _parse(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise WebhookSignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    digests: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == SCHEME and value:
            digests.append(value)
    if timestamp is None or not digests:
        raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER} header")
    return timestamp, digests
