"""Admin API tokens (per staff member) and pipeline worker tokens: shown once, stored as a sha256 hash.

Both kinds share one format and one table (admin_token_revoke revokes either); what a token may do
is decided by its user: a non-staff worker's token is refused everywhere but the worker API.

A verified token is served from the shared cache (TOKEN_CACHE_SECONDS) with its user and whether that
user is a pipeline worker. Why: workers call several times per run, and a database round trip (plus,
with SQLite, a connection opened and closed) for each call cost the worker API seconds per call under
load. Revocation and changes to the user saved through Django replace the entries' generations
(generations.py), so they take effect at once in every process; an expiry is checked on every call.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, transaction
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.utils import timezone

from tenants_app.metrics import cache_lookup_recorded
from tenants_app.models import AdminApiToken
from tenants_app.secret_shapes import ADMIN_TOKEN_PREFIX, OUR_KEY_CHARACTERS, OUR_KEY_RANDOM_LENGTH
from tenants_app.services.actors import UNKNOWN_ACTOR, staff_actor
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.generations import (
    bump,
    generation,
    generations,
    still_current,
    token_subject,
    user_subject,
)

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=Model)

TOKEN_PREFIX = ADMIN_TOKEN_PREFIX  # the shape of our keys with env `admin` (secret_shapes)
# last_used_at is for humans ("is this token still in use?"): one write a minute is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Keyed by the token's hash, never the token: cache backends may be read by other tools.
_CACHE_PREFIX = "cvg:token:v3:"
# What the cache keeps of a token's user: what deciding on the token needs, never the password hash.
_USER_FIELDS = ("id", "username", "is_active", "is_staff", "is_superuser")


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


def admin_token_authenticate(*, plaintext: str, now: datetime | None = None) -> AdminApiToken | None:
    """The live token for this plaintext, or None (unknown, revoked, expired, or user no longer staff)."""
    now = timezone.now() if now is None else now
    entry = _live_entry(plaintext, now)
    if entry is None or not entry["user"]["is_active"] or not entry["user"]["is_staff"]:
        return None
    _note_use(entry, now)
    return _token_of(entry)


def _live_entry(plaintext: str, now: datetime) -> dict[str, Any] | None:
    """The cache entry of the unrevoked, unexpired token for this plaintext (of any user), or None."""
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    entry = _token_entry(token_hash(plaintext), now)
    if entry is None:
        return None
    # Checked on every call, cached or not: an expiry takes effect to the second.
    expires_at = entry["token"]["expires_at"]
    if expires_at is not None and expires_at <= now:
        return None
    return entry


def _token_entry(digest: str, now: datetime) -> dict[str, Any] | None:
    """The token's columns, its user's (`_USER_FIELDS`) and whether that user is a pipeline worker, from
    the cache while fresh and current, else from the database and cached. Unknown and revoked tokens are
    not cached: their lookup is one indexed query, and nothing hot asks for them."""
    name, subject = _CACHE_PREFIX + digest, token_subject(digest)
    current, found = generations([subject], also=[name])
    cached = found.get(name)
    # The entry carries its own deadline, judged by the caller's clock (tests move theirs).
    if (
        cached is not None
        and cached["fresh_until"] > now
        and cached["workers_group"] == settings.PIPELINE_WORKERS_GROUP
        and still_current(cached["generations"], known=current)
    ):
        cache_lookup_recorded(cache="token", hit=True)
        return cached
    cache_lookup_recorded(cache="token", hit=False)
    token = AdminApiToken.objects.filter(token_hash=digest, revoked_at__isnull=True).values().first()
    if token is None:
        return None
    # The user's generation is read before the user is (generations.py says why).
    user_generation = generation(user_subject(token["user_id"]))
    user = User.objects.filter(pk=token["user_id"]).values(*_USER_FIELDS).first()
    if user is None:
        return None
    entry = {
        "token": token,
        "user": user,
        "worker": is_pipeline_worker(_user_of(user)),
        "workers_group": settings.PIPELINE_WORKERS_GROUP,
        "fresh_until": now + timedelta(seconds=settings.TOKEN_CACHE_SECONDS),
        "generations": {subject: current[subject], user_subject(token["user_id"]): user_generation},
    }
    cache.set(name, entry, settings.TOKEN_CACHE_SECONDS)
    return entry


def _user_of(values: dict[str, Any]) -> User:
    """The user from its cached columns; the others (the password hash first) are deferred, so they are
    never cached, and a save() of this instance could only write the columns it holds."""
    return _instance(User, values)


def _token_of(entry: dict[str, Any]) -> AdminApiToken:
    token = _instance(AdminApiToken, entry["token"])
    token.user = _user_of(entry["user"])
    return token


def _instance(model: type[M], values: dict[str, Any]) -> M:
    # from_db takes the values in the model's column order, the columns it is not given deferred.
    names = [field.attname for field in model._meta.concrete_fields if field.attname in values]
    return model.from_db(DEFAULT_DB_ALIAS, names, [values[name] for name in names])


def _note_use(entry: dict[str, Any], now: datetime) -> None:
    """Write `last_used_at` when a minute has passed; never fails the call it notes."""
    token = entry["token"]
    if token["last_used_at"] is not None and now - token["last_used_at"] < LAST_USED_RESOLUTION:
        return
    # One writer per token and minute: every call in flight sees the write due at once, and hundreds of
    # writers of one row only queue on it (SQLite refused them, "database is locked", and the calls got 500).
    minute = int(now.timestamp() // LAST_USED_RESOLUTION.total_seconds())
    if not cache.add(f"{_CACHE_PREFIX}used:{token['id']}:{minute}", True, timeout=2 * 60):
        return
    try:
        # Its own savepoint: called inside a transaction, a refused write must not break the rest of it.
        with transaction.atomic():
            AdminApiToken.objects.filter(pk=token["id"]).update(last_used_at=now)
    except DatabaseError:
        # For humans ("is this token still in use?"): the next minute's call writes it.
        logger.warning("token %s: last_used_at not written", token["id"], exc_info=True)
        return
    token["last_used_at"] = now
    # The cached copy learns of it too, or every call after the first minute would write. Stored under
    # the generations it was read with: a revocation meanwhile still makes it stale.
    left = (entry["fresh_until"] - now).total_seconds()
    if left > 0:
        cache.set(_CACHE_PREFIX + token["token_hash"], entry, left)


def admin_token_revoke(*, token_id: int, user: User | None = None, actor: str | None = None) -> None:
    """Revoke a token (one's own, or any when `user` is None, as superusers do); audited."""
    tokens = AdminApiToken.objects.filter(pk=token_id, revoked_at__isnull=True)
    if user is not None:
        tokens = tokens.filter(user=user)
    token = tokens.select_related("user").first()
    now = timezone.now()
    if token is None or tokens.update(revoked_at=now) == 0:
        raise DoesNotExist("no such live token")
    _changed([token_subject(token.token_hash)])
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


def worker_token_authenticate(*, plaintext: str, now: datetime | None = None) -> AdminApiToken | None:
    """The live token of a pipeline worker for this plaintext, or None."""
    now = timezone.now() if now is None else now
    entry = _live_entry(plaintext, now)
    if entry is None or not entry["worker"]:
        return None
    _note_use(entry, now)
    return _token_of(entry)


# --- what makes cached tokens stale -----------------------------------------------------------------
def token_cache_connect() -> None:
    """Changes to users and groups saved through Django make their tokens' cached entries stale
    (TenantsAppConfig.ready); calling it again changes nothing."""
    post_save.connect(_user_changed, sender=User, dispatch_uid="tenants_app.tokens.user_saved")
    post_delete.connect(_user_changed, sender=User, dispatch_uid="tenants_app.tokens.user_deleted")
    m2m_changed.connect(
        _memberships_changed, sender=User.groups.through, dispatch_uid="tenants_app.tokens.groups"
    )
    post_save.connect(_group_changed, sender=Group, dispatch_uid="tenants_app.tokens.group_saved")
    pre_delete.connect(_group_changed, sender=Group, dispatch_uid="tenants_app.tokens.group_deleted")


def _user_changed(sender: type[User], instance: User, **kwargs: Any) -> None:
    _users_changed([instance.pk])


def _group_changed(sender: type[Group], instance: Group, **kwargs: Any) -> None:
    # A rename can make a group the workers' group or stop it being one; a delete takes its members out.
    _users_changed(instance.user_set.values_list("pk", flat=True))


def _memberships_changed(
    sender: type[Any],
    instance: User | Group,
    action: str,
    reverse: bool,
    pk_set: set[int] | None,
    **kwargs: Any,
) -> None:
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if isinstance(instance, User):
        _users_changed([instance.pk])
    elif action == "pre_clear":
        # A clear names no users (`pk_set` is None): the group's members, read before they go.
        _users_changed(instance.user_set.values_list("pk", flat=True))
    else:
        _users_changed(pk_set or ())


def _users_changed(user_ids: Iterable[int]) -> None:
    _changed([user_subject(user_id) for user_id in user_ids])


def _changed(subjects: list[str]) -> None:
    """Bump the subjects now, and again once the transaction commits: a lookup that read the old row
    between the first bump and the commit stored its entry under the first bump's generation."""

    def bump_all() -> None:
        for subject in subjects:
            bump(subject)

    bump_all()
    transaction.on_commit(bump_all)
