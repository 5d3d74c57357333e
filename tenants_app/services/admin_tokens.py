"""Admin API tokens (per staff member) and pipeline worker tokens: shown once, stored as a sha256 hash.

Both kinds share one format and one table (admin_token_revoke revokes either); what a token may do
is decided by its user: a non-staff worker's token is refused everywhere but the worker API.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from tenants_app.models import AdminApiToken
from tenants_app.secret_shapes import ADMIN_TOKEN_PREFIX, OUR_KEY_CHARACTERS, OUR_KEY_RANDOM_LENGTH
from tenants_app.services.actors import UNKNOWN_ACTOR, staff_actor
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.errors import DoesNotExist, ValidationFailed

TOKEN_PREFIX = ADMIN_TOKEN_PREFIX  # the shape of our keys with env `admin` (secret_shapes)
# last_used_at is for humans ("is this token still in use?"): one write a minute is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedAdminToken:
    """A new token: `plaintext` exists only here, for the one response that shows it."""

    token: AdminApiToken
    plaintext: str

    def __repr__(self) -> str:
        return f"IssuedAdminToken(token={self.token!r}, plaintext='***')"


def token_hash(plaintext: str) -> str:
    """sha256 hex: tokens are 238 random bits, so a fast hash is enough (no guessing to slow down)."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _new_plaintext() -> str:
    random_part = (secrets.choice(OUR_KEY_CHARACTERS) for _ in range(OUR_KEY_RANDOM_LENGTH))
    return TOKEN_PREFIX + "".join(random_part)


def _display_prefix(plaintext: str) -> str:
    """What lists show to tell tokens apart: the public prefix and 6 random characters."""
    return plaintext[: len(TOKEN_PREFIX) + 6]


def admin_token_create(
    *, user: User, name: str, expires_at: datetime | None = None, actor: str | None = None
) -> IssuedAdminToken:
    """Issue a token for a staff member; audited as admin_token.create by `actor` (default: that user)."""
    errors: dict[str, list[str]] = {}
    if not user.is_active or not user.is_staff:
        errors["user"] = ["Only active staff members get admin API tokens."]
    if not 1 <= len(name.strip()) <= 100:
        errors["name"] = ["Use 1 to 100 characters."]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["Must be in the future."]
    if errors:
        raise ValidationFailed("cannot issue the token", errors=errors)
    plaintext, token = _store_new_token(user=user, name=name, expires_at=expires_at)
    # Tokens live in Django's database, but the trail of who holds admin access is the audit log.
    audit_record(
        action=AuditAction.ADMIN_TOKEN_CREATE,
        actor=actor or staff_actor(user.get_username()),
        target_type="admin_token",
        target_id=str(token.pk),
        after=_audit_data(token),
    )
    return IssuedAdminToken(token=token, plaintext=plaintext)


def _audit_data(token: AdminApiToken) -> dict[str, object]:
    # "prefix", not "token_prefix": the audit log drops token-named keys as secret-sounding.
    return {
        "user": token.user.get_username(),
        "name": token.name,
        "prefix": token.token_prefix,
        "expires_at": token.expires_at,
    }


def admin_token_authenticate(*, plaintext: str) -> AdminApiToken | None:
    """The live token for this plaintext, or None (unknown, revoked, expired, or user no longer staff)."""
    token = _live_token(plaintext)
    if token is None or not token.user.is_active or not token.user.is_staff:
        return None
    _note_use(token)
    return token


def _live_token(plaintext: str) -> AdminApiToken | None:
    """The unrevoked, unexpired token for this plaintext (of any user), or None."""
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    token = (
        AdminApiToken.objects.select_related("user")
        .filter(token_hash=token_hash(plaintext), revoked_at__isnull=True)
        .first()
    )
    if token is None or (token.expires_at is not None and token.expires_at <= timezone.now()):
        return None
    return token


def _note_use(token: AdminApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        AdminApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


def admin_token_revoke(*, token_id: int, user: User | None = None, actor: str | None = None) -> None:
    """Revoke a token (one's own, or any when `user` is None, as superusers do); audited."""
    tokens = AdminApiToken.objects.filter(pk=token_id, revoked_at__isnull=True)
    if user is not None:
        tokens = tokens.filter(user=user)
    token = tokens.select_related("user").first()
    now = timezone.now()
    if token is None or tokens.update(revoked_at=now) == 0:
        raise DoesNotExist("no such live token")
    audit_record(
        action=AuditAction.ADMIN_TOKEN_REVOKE,
        actor=actor or (staff_actor(user.get_username()) if user is not None else UNKNOWN_ACTOR),
        target_type="admin_token",
        target_id=str(token.pk),
        before={**_audit_data(token), "revoked_at": None},
        after={"revoked_at": now},
    )


# --- pipeline worker tokens -------------------------------------------------------------------------
def is_pipeline_worker(user: object) -> bool:
    """Active members of PIPELINE_WORKERS_GROUP (and superusers) may drain every tenant's queue."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return False
    if getattr(user, "is_superuser", False):
        return True
    groups = getattr(user, "groups", None)
    return groups is not None and groups.filter(name=settings.PIPELINE_WORKERS_GROUP).exists()


def worker_token_create(*, user: User, name: str) -> IssuedAdminToken:
    """Issue a token (shown once) for a pipeline worker account, which need not be staff."""
    errors: dict[str, list[str]] = {}
    if not is_pipeline_worker(user):
        errors["user"] = [f"Only active members of the {settings.PIPELINE_WORKERS_GROUP!r} group."]
    if not 1 <= len(name.strip()) <= 100:
        errors["name"] = ["Use 1 to 100 characters."]
    if errors:
        raise ValidationFailed("cannot issue the worker token", errors=errors)
    plaintext, token = _store_new_token(user=user, name=name, expires_at=None)
    return IssuedAdminToken(token=token, plaintext=plaintext)


def _store_new_token(*, user: User, name: str, expires_at: datetime | None) -> tuple[str, AdminApiToken]:
    """A fresh token for either kind: its plaintext (shown once) and its row (hash and prefix only)."""
    plaintext = _new_plaintext()
    token = AdminApiToken.objects.create(
        user=user,
        name=name.strip(),
        token_hash=token_hash(plaintext),
        token_prefix=_display_prefix(plaintext),
        expires_at=expires_at,
    )
    return plaintext, token


def worker_token_authenticate(*, plaintext: str) -> AdminApiToken | None:
    """The live token of a pipeline worker for this plaintext, or None."""
    token = _live_token(plaintext)
    if token is None or not is_pipeline_worker(token.user):
        return None
    _note_use(token)
    return token
