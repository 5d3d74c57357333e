"""Secrets in one sampled value: strings, JSON and records walked through, field names included.

Each hit names its path and kind and carries a keyed fingerprint, never the secret; a Convergence API
key also carries its hash, so the scan can name the key to revoke (genai_safety.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tenants_app.secrets import (
    CONVERGENCE_KEY,
    GCP_SERVICE_ACCOUNT,
    SECRET_NAMED_FIELD,
    find_high_entropy,
    find_secrets,
    is_plain_name,
    is_secret_name,
    is_service_account_info,
    is_suspicious_name,
)
from tenants_app.secrets import fingerprint as fingerprint_of
from tenants_app.services.api_key_verification import hash_api_key

# JSON levels walked one by one; anything deeper is checked as text (see walk_value).
MAX_WALK_DEPTH = 64


@dataclass(frozen=True)
class Hit:
    """A secret found while walking one value: where and what, plus the hash of a key of ours."""

    path: str
    kind: str
    reason: str
    fingerprint: str
    key_hash: str | None = None


def walk_value(value: Any, path: str, suspicious: bool, depth: int = 0) -> Iterator[Hit]:
    """Every secret in a value; JSON objects, arrays and records walked through, field names included."""
    if value is None or isinstance(value, bool | int | float):
        return
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        yield from _text_hits(value, path, suspicious)
        return
    if depth >= MAX_WALK_DEPTH:
        # BigQuery JSON nests up to 500 levels, deeper than Python recursion goes: below this depth
        # the rest is checked as one text, at the path reached so far.
        yield from _text_hits(json.dumps(value, default=str), f"{path}…", suspicious)
        return
    if isinstance(value, Mapping):
        if is_service_account_info(value):
            text = json.dumps(value, sort_keys=True, default=str)
            yield Hit(
                path,
                GCP_SERVICE_ACCOUNT,
                "GCP service-account key JSON (type service_account with private_key)",
                fingerprint_of(text),
            )
            return
        for raw_key, item in value.items():
            key = str(raw_key)
            key_hits = list(_text_hits(key, path, suspicious=True))
            if key_hits:
                # The field name is the secret: the path names it by fingerprint only.
                child = f"{path}.<field {key_hits[0].fingerprint}>"
                yield from (
                    Hit(child, h.kind, f"field name: {h.reason}", h.fingerprint, h.key_hash) for h in key_hits
                )
            else:
                child = f"{path}.{key}"
            # Below a suspicious field everything is, except ids, counts and times (`job_id`).
            child_suspicious = is_suspicious_name(key) or (suspicious and not is_plain_name(key))
            inner = list(walk_value(item, child, child_suspicious, depth + 1))
            yield from inner
            if not inner and is_secret_name(key) and _holds_something(item):
                yield Hit(
                    child,
                    SECRET_NAMED_FIELD,
                    "JSON field named like a secret holds a value",
                    fingerprint_of(
                        item if isinstance(item, str) else json.dumps(item, sort_keys=True, default=str)
                    ),
                )
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from walk_value(item, f"{path}[{index}]", suspicious, depth + 1)


def _holds_something(value: Any) -> bool:
    """A non-empty text, object or array: what a field named `password` or `credentials` must not hold."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, Mapping | list | tuple) and bool(value)


def _text_hits(text: str, path: str, suspicious: bool) -> Iterator[Hit]:
    matches = find_secrets(text)
    if not matches and suspicious:
        matches = find_high_entropy(text)
    for match in matches:
        secret = text[match.start : match.end]
        key_hash = hash_api_key(secret) if match.kind == CONVERGENCE_KEY and secret.isascii() else None
        yield Hit(path, match.kind, match.reason, fingerprint_of(secret), key_hash)
