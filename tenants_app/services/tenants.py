"""Tenant lifecycle after onboarding: read, edit, suspend, reactivate, offboard."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from bigquery_backend.client import get_gateway
from bigquery_backend.repository import Page, Search
from tenants_app.models import (
    CLOSED_TENANT_STATUSES,
    WORKING_TENANT_STATUSES,
    TenantApiKey,
    TenantCloudCredential,
    TenantProfile,
    TenantStatus,
)
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import api_key_cache_invalidate
from tenants_app.services.audit import AuditAction, audit_changes, audit_record
from tenants_app.services.datasets import tenant_dataset
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.generations import bump, generations, tenant_subject
from tenants_app.services.onboarding import tenant_views_unauthorize
from tenants_app.services.profile_fields import admin_email_clean, company_name_clean
from tenants_app.services.run_tenant_rows import tenant_rows_drop
from tenants_app.services.subscription_status import subscription_cancel

TENANT_SEARCH_FIELDS = ("tenant_id", "company_name", "admin_email")
MAX_PAGE_SIZE = 200
# Which states each transition may start from: anything else is a 409-free, clear 400.
SUSPENDABLE = WORKING_TENANT_STATUSES

_PROFILE_CACHE_PREFIX = "cvg:tenant-profile:v1:"


def tenant_list(
    *,
    status: str | None = None,
    plan: str | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[TenantProfile]:
    """One page of tenants, newest first, with the total: two BigQuery jobs."""
    errors: dict[str, list[str]] = {}
    if status is not None and status not in TenantStatus.values:
        errors["status"] = [f"Choose one of {', '.join(TenantStatus.values)}."]
    if not 1 <= limit <= MAX_PAGE_SIZE:
        errors["limit"] = [f"Use 1 to {MAX_PAGE_SIZE}."]
    if offset < 0:
        errors["offset"] = ["Use 0 or more."]
    if errors:
        raise ValidationFailed("invalid tenant filter", errors=errors)
    filters: dict[str, Any] = {}
    if status is not None:
        filters["status"] = status
    if plan is not None:
        filters["subscription_plan"] = plan
    return central_repository(TenantProfile).page(
        filters=filters,
        search=Search(TENANT_SEARCH_FIELDS, search.strip()) if search and search.strip() else None,
        order_by=("-created_at",),
        limit=limit,
        offset=offset,
    )


def tenant_get(*, tenant_id: str) -> TenantProfile:
    """The tenant's profile, or DoesNotExist."""
    profile = central_repository(TenantProfile).find(tenant_id)
    if profile is None:
        raise DoesNotExist(f"tenant {tenant_id!r} does not exist")
    return profile


def tenant_get_cached(*, tenant_id: str) -> TenantProfile:
    """`tenant_get` served from the shared cache: no BigQuery job while fresh (API_KEY_CACHE_SECONDS),
    and stale in every process at once after a change made through the services, which bump the
    tenant's generation (generations.py)."""
    name = f"{_PROFILE_CACHE_PREFIX}{tenant_id}"
    current, found = generations([tenant_subject(tenant_id)], also=[name])
    cached = found.get(name)
    if cached is not None and cached["generation"] == current[tenant_subject(tenant_id)]:
        return cached["profile"]
    profile = tenant_get(tenant_id=tenant_id)
    entry = {"generation": current[tenant_subject(tenant_id)], "profile": profile}
    cache.set(name, entry, settings.API_KEY_CACHE_SECONDS)
    return profile


def tenant_update(
    *, tenant_id: str, actor: str, company_name: str | None = None, admin_email: str | None = None
) -> TenantProfile:
    """Change the editable profile fields (audited as tenant.update); returns the updated profile."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    if company_name is not None:
        values["company_name"] = company_name_clean(errors, company_name)
    if admin_email is not None:
        values["admin_email"] = admin_email_clean(errors, admin_email)
    if errors:
        raise ValidationFailed("invalid tenant change", errors=errors)
    profile = tenant_get(tenant_id=tenant_id)
    before, after = audit_changes({name: getattr(profile, name) for name in values}, values)
    if not after:
        # Nothing differs: no write, and no audit entry claiming a change.
        return profile
    values["updated_at"] = timezone.now()
    central_repository(TenantProfile).update(tenant_id, values)
    bump(tenant_subject(tenant_id))
    for name, value in values.items():
        setattr(profile, name, value)
    audit_record(
        action=AuditAction.TENANT_UPDATE,
        actor=actor,
        tenant_id=tenant_id,
        target_type="tenant",
        target_id=tenant_id,
        before=before,
        after=after,
    )
    return profile


def _transition(
    tenant_id: str, *, allowed_from: set[str], to: str, verb: str
) -> tuple[TenantProfile, str | None]:
    """(profile after, status before), or (profile, None) when it already had status `to`."""
    profile = tenant_get(tenant_id=tenant_id)
    if profile.status == to:
        # Idempotent: a retry after a failure in the steps that follow the status change (cache,
        # keys, dataset) must be able to finish them, so it runs them again instead of refusing.
        api_key_cache_invalidate(tenant_id=tenant_id)
        return profile, None
    if profile.status not in allowed_from:
        raise ValidationFailed(
            f"cannot {verb} a tenant that is {profile.status}",
            errors={
                "status": [f"Tenant is {profile.status}; {verb} needs {' or '.join(sorted(allowed_from))}."]
            },
        )
    changed = timezone.now()
    # The status condition makes the change atomic: a concurrent transition leaves 0 rows matched.
    previous = profile.status
    matched = central_repository(TenantProfile).update_where(
        {"status": to, "updated_at": changed},
        filters={"tenant_id": tenant_id, "status__in": sorted(allowed_from)},
    )
    if matched == 0:
        raise ValidationFailed(
            f"tenant {tenant_id!r} changed meanwhile; reload", errors={"status": ["Changed meanwhile."]}
        )
    profile.status, profile.updated_at = to, changed
    # Cached key verifications carry the tenant status: make them stale in every process at once.
    api_key_cache_invalidate(tenant_id=tenant_id)
    return profile, previous


def _record_status_change(
    action: AuditAction, *, actor: str, profile: TenantProfile, previous: str | None
) -> None:
    # A repeat that found the status already set changed nothing, so it records nothing.
    if previous is not None:
        audit_record(
            action=action,
            actor=actor,
            tenant_id=profile.tenant_id,
            target_type="tenant",
            target_id=profile.tenant_id,
            before={"status": previous},
            after={"status": profile.status},
        )


def tenant_suspend(*, tenant_id: str, actor: str) -> TenantProfile:
    """Suspend: the tenant's API keys stop working (within the key cache's bound); data stays."""
    profile, previous = _transition(
        tenant_id, allowed_from=set(SUSPENDABLE), to=TenantStatus.SUSPENDED, verb="suspend"
    )
    _record_status_change(AuditAction.TENANT_SUSPEND, actor=actor, profile=profile, previous=previous)
    return profile


def tenant_reactivate(*, tenant_id: str, actor: str) -> TenantProfile:
    """Undo a suspension."""
    profile, previous = _transition(
        tenant_id, allowed_from={TenantStatus.SUSPENDED}, to=TenantStatus.ACTIVE, verb="reactivate"
    )
    _record_status_change(AuditAction.TENANT_REACTIVATE, actor=actor, profile=profile, previous=previous)
    return profile


def tenant_offboard(*, tenant_id: str, actor: str, purge_dataset: bool = False) -> TenantProfile:
    """Cancel the tenant: keys revoked (at once), credentials deactivated, subscription cancelled; its
    dataset kept unless `purge_dataset`. Each step is safe to repeat, so sending it again finishes it."""
    allowed = set(TenantStatus.values) - set(CLOSED_TENANT_STATUSES)
    profile, previous = _transition(
        tenant_id, allowed_from=allowed, to=TenantStatus.CANCELLED, verb="offboard"
    )
    now = timezone.now()
    keys_revoked = central_repository(TenantApiKey).update_where(
        {"is_active": False, "revoked_at": now, "revoked_reason": "tenant offboarded"},
        filters={"tenant_id": tenant_id, "is_active": True},
    )
    # Again after the UPDATE: a request verifying a key between the status change and the revocation
    # cached it as not revoked; nothing may outlive the revocation.
    api_key_cache_invalidate(tenant_id=tenant_id)
    # No is_active condition here: rows from the original system have it NULL and are live too.
    credentials_deactivated = central_repository(TenantCloudCredential).update_where(
        {"is_active": False, "updated_at": now}, filters={"tenant_id": tenant_id}
    )
    # Audited on its own (subscription.status_change): nothing runs or is configured any more.
    subscription_cancel(tenant_id=tenant_id, actor=actor)
    if purge_dataset:
        tenant_views_unauthorize(tenant_id=tenant_id)
        get_gateway().delete_dataset(tenant_dataset(tenant_id), delete_contents=True)
        # Rows on their way there too (run_tenant_rows.py): no page may show what the purge removed.
        tenant_rows_drop(tenant_id=tenant_id)
    # One entry per call that changed something: the status change, or a repeat that finished the
    # steps an earlier, failed attempt left undone (keys still live, the purge).
    if previous is not None or keys_revoked or purge_dataset:
        audit_record(
            action=AuditAction.TENANT_OFFBOARD,
            actor=actor,
            tenant_id=tenant_id,
            target_type="tenant",
            target_id=tenant_id,
            before={"status": previous or profile.status},
            after={
                "status": profile.status,
                "api_keys_revoked": keys_revoked,
                # Not "credentials_...": the audit log drops secret-sounding names.
                "cloud_creds_deactivated": credentials_deactivated,
                "dataset_purged": purge_dataset,
            },
        )
    return profile
