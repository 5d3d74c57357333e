"""The cloud credentials a held run needs, decrypted for the worker holding its lease, and for no one else.

A worker asks for them while it holds the run (worker API: `POST /worker/runs/{run_id}/credentials`).
The lease is read from BigQuery, not from the shared cache, and must be held right now: the same
worker id, the same key or token that claimed it, the same attempt, RUNNING and not yet expired. Unlike
heartbeats and reports, a lease that recorded no credential (claimed before leases did) and one that has
expired but was not taken over yet are refused: a report may repair what such a lease did, a secret
once handed out cannot be taken back.

Which credentials: the tenant's active ones of each provider the run's template declares
(`pipeline_templates.py`; the run's `pipeline_id` is the template's name). A run of a template the
catalogue does not know needs none. Every credential handed out is audited (`credential.fetch`: who,
which credential, which run and attempt), never with its value; nothing here logs the payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from tenants_app.models import TenantCloudCredential, TenantPipelineExecutionQueue
from tenants_app.pipeline_templates import template_get
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.credentials import credential_decrypt, credential_list
from tenants_app.services.errors import LeaseLost, ValidationFailed
from tenants_app.services.run_common import candidate_of, check_worker_id
from tenants_app.services.run_reports import _require_lease


@dataclass(frozen=True)
class RunCredential:
    """One decrypted credential; `payload` is the secret (kept out of repr, so out of tracebacks)."""

    credential_id: str
    provider: str
    name: str | None
    credential_type: str | None
    fingerprint: str | None
    payload: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class RunCredentials:
    run_id: str
    tenant_id: str
    pipeline_id: str
    attempt: int
    lease_expires_at: datetime
    providers: tuple[str, ...]
    missing_providers: tuple[str, ...]
    credentials: tuple[RunCredential, ...]


def run_credentials_fetch(
    *,
    run_id: str,
    worker_id: str,
    credential: str,
    tenant_id: str | None,
    attempt: int,
    actor: str,
    now: datetime | None = None,
) -> RunCredentials:
    """The decrypted credentials of the providers the held run needs; LeaseLost unless held right now.

    `credential` is the calling key or token (`api_key:<id>`, `token:<id>`), `tenant_id` a tenant key's
    own tenant (None for a worker token), `actor` who is audited (`apikey:<id>`, `user:<name>`).
    """
    worker_id = check_worker_id(worker_id)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValidationFailed(
            "invalid attempt", errors={"attempt": ["The attempt of your claim, 1 or more."]}
        )
    now = now or timezone.now()
    with bigquery_errors_translated():
        entry = candidate_of(run_id, tenant_id).entry
        _require_lease(entry, worker_id=worker_id, credential=credential, attempt=attempt)
        _require_held_now(
            entry.run_id,
            lease_credential=entry.lease_credential,
            credential=credential,
            expires=entry.lease_expires_at,
            now=now,
        )
        template = template_get(entry.pipeline_id)
        providers = template.providers if template is not None else ()
        rows = [row for row in credential_list(tenant_id=entry.tenant_id) if row.provider in providers]
        fetched = tuple(_decrypted(row) for row in rows)
    _audit_fetches(rows, entry=entry, worker_id=worker_id, actor=actor)
    found = {row.provider for row in rows}
    return RunCredentials(
        run_id=entry.run_id,
        tenant_id=entry.tenant_id,
        pipeline_id=entry.pipeline_id,
        attempt=int(entry.attempt or 0),
        lease_expires_at=entry.lease_expires_at,
        providers=tuple(providers),
        missing_providers=tuple(provider for provider in providers if provider not in found),
        credentials=fetched,
    )


def _audit_fetches(
    rows: list[TenantCloudCredential], *, entry: TenantPipelineExecutionQueue, worker_id: str, actor: str
) -> None:
    # One entry per credential, so each credential's own history shows every run that used it.
    for row in rows:
        audit_record(
            action=AuditAction.CREDENTIAL_FETCH,
            actor=actor,
            tenant_id=entry.tenant_id,
            target_type="credential",
            target_id=row.credential_id,
            after={
                "run_id": entry.run_id,
                "attempt": entry.attempt,
                "worker_id": worker_id,
                "provider": row.provider,
            },
        )


def _require_held_now(
    run_id: str, *, lease_credential: str | None, credential: str, expires: datetime | None, now: datetime
) -> None:
    # _require_lease lets a lease without a recorded credential pass (reports of older claims): a
    # secret needs proof that this very key or token claimed the run.
    if lease_credential != credential:
        raise LeaseLost(f"run {run_id} is held by another credential than this one")
    if expires is None or expires <= now:
        raise LeaseLost(f"the lease of run {run_id} has expired: heartbeat, then ask again")


def _decrypted(row: TenantCloudCredential) -> RunCredential:
    return RunCredential(
        credential_id=row.credential_id,
        provider=row.provider,
        name=row.credential_name,
        credential_type=row.credential_type,
        fingerprint=row.fingerprint,
        payload=credential_decrypt(tenant_id=row.tenant_id, credential_id=row.credential_id),
    )
