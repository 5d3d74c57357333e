"""Move every stored ciphertext to the KMS's primary key, and tell which keys stored ciphertexts need.

Four places hold ciphertexts: cloud credentials, the encrypted copies of API keys and the webhook
endpoints' signing secrets (central BigQuery tables), and the stored responses of idempotent requests
(Django's database, kept for a day). Each is bound to its row by its AAD, which re-encryption keeps.

A ciphertext that already uses the primary is left alone, so a run interrupted at any point (KMS or
BigQuery down, process killed) is finished by running it again. Writes are compare-and-set: a row is
updated only if its ciphertext is still the one that was read, so a credential replaced meanwhile keeps
its new payload (and is counted as `changed_meanwhile`; the next run looks at it again).

Plaintexts live only in local variables between a decrypt and the encrypt; nothing here logs, prints or
audits them, nor the ciphertexts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from bigquery_backend.repository import Repository, RowChange
from tenants_app.kms import DecryptionFailed, KeyManagementService, aad_for, get_kms, local_ciphertext_key_id
from tenants_app.models import IdempotencyRecord, TenantApiKey, TenantCloudCredential, TenantWebhookEndpoint
from tenants_app.repositories import central_repository
from tenants_app.services.actors import api_key_actor, system_actor
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.credentials import AAD_TABLE as CREDENTIALS_AAD_TABLE
from tenants_app.services.webhook_delivery import endpoint_aad

logger = logging.getLogger(__name__)

STORE_CREDENTIALS = "tenant_cloud_credentials"
STORE_API_KEYS = "tenant_api_keys"
STORE_IDEMPOTENCY = "idempotency_records"
STORE_WEBHOOK_SECRETS = "tenant_webhook_endpoints"
STORES: tuple[str, ...] = (STORE_CREDENTIALS, STORE_API_KEYS, STORE_WEBHOOK_SECRETS, STORE_IDEMPOTENCY)


@dataclass(frozen=True)
class _TableStore:
    """A BigQuery table holding one ciphertext per row, and the AAD that binds it to its row."""

    model: type[Any]
    key: str
    column: str
    aad: Callable[[str, str], bytes]  # (tenant id, row key) -> AAD


_TABLE_STORES: dict[str, _TableStore] = {
    STORE_CREDENTIALS: _TableStore(
        TenantCloudCredential,
        "credential_id",
        "encrypted_credentials",
        lambda tenant, key: aad_for(CREDENTIALS_AAD_TABLE, tenant, key),
    ),
    # The AAD api_keys.issue_key binds every copy with.
    STORE_API_KEYS: _TableStore(
        TenantApiKey,
        "api_key_id",
        "encrypted_api_key",
        lambda tenant, key: aad_for("tenant_api_keys", tenant, key),
    ),
    STORE_WEBHOOK_SECRETS: _TableStore(
        TenantWebhookEndpoint, "endpoint_id", "encrypted_secret", endpoint_aad
    ),
}

# The audit log drops keys that sound secret ("credentials", "key"), so its summary uses these names.
_AUDIT_NAMES = {
    STORE_CREDENTIALS: "cloud_accounts",
    STORE_API_KEYS: "api_key_copies",
    STORE_IDEMPOTENCY: "idempotent_responses",
    STORE_WEBHOOK_SECRETS: "webhook_signing",
}

# Rows per compare-and-set MERGE: one statement (one table copy in the emulator) per batch.
DEFAULT_BATCH_SIZE = 200
# Rows read per query, by key order, so a large table never sits in memory whole.
_READ_PAGE = 1000
# Label for a ciphertext whose header names no key of ours (not our format, or truncated).
UNKNOWN_FORMAT = "unknown format"
DEFAULT_ACTOR = system_actor("reencrypt_credentials")


@dataclass(frozen=True)
class _Stored:
    store: str
    row_key: Any
    tenant_id: str | None
    ciphertext: bytes
    aad: bytes


@dataclass
class ReencryptReport:
    """What a run found and did; counts only, never a plaintext or a ciphertext."""

    dry_run: bool
    backend: str
    # The key version new ciphertexts got (local: key id; Cloud KMS: the version name), once known.
    primary: str | None = None
    # (store, key version) -> ciphertexts found, before any change.
    found: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Per store: moved to the primary (in a dry run: would be moved).
    reencrypted: Counter[str] = field(default_factory=Counter)
    # Per store: the row's ciphertext changed between read and write; left as is, the next run retries.
    changed_meanwhile: Counter[str] = field(default_factory=Counter)
    # Per store: does not decrypt for its row (tampered, foreign format or a key no longer in the ring).
    undecryptable: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.found.values())

    def summary(self) -> dict[str, Any]:
        """Counts per store, in names the audit log keeps."""
        return {
            "reencrypted": {_AUDIT_NAMES[s]: self.reencrypted[s] for s in STORES},
            "changed_meanwhile": sum(self.changed_meanwhile.values()),
            "undecryptable": sum(self.undecryptable.values()),
        }


# --- reading ----------------------------------------------------------------------------------------
def _bigquery_rows(
    repository: Repository[Any], *, key: str, column: str, tenant_id: str | None
) -> Iterator[Any]:
    """Rows holding a ciphertext in `column`, by key order, a page at a time (keyset, so updates
    made between pages move nothing)."""
    last: str | None = None
    while True:
        filters: dict[str, Any] = {f"{column}__isnull": False}
        if tenant_id is not None:
            filters["tenant_id"] = tenant_id
        if last is not None:
            filters[f"{key}__gt"] = last
        rows = repository.list(
            filters=filters, order_by=(key,), limit=_READ_PAGE, fields=[key, "tenant_id", column]
        )
        yield from rows
        if len(rows) < _READ_PAGE:
            return
        last = getattr(rows[-1], key)


def _stored(store: str, *, tenant_id: str | None) -> Iterator[_Stored]:
    table = _TABLE_STORES.get(store)
    if table is not None:
        repository = central_repository(table.model)
        for row in _bigquery_rows(repository, key=table.key, column=table.column, tenant_id=tenant_id):
            key = getattr(row, table.key)
            ciphertext = bytes(getattr(row, table.column))
            yield _Stored(store, key, row.tenant_id, ciphertext, table.aad(row.tenant_id, key))
    elif store == STORE_IDEMPOTENCY:
        records = IdempotencyRecord.objects.filter(encrypted_response__isnull=False).order_by("pk")
        if tenant_id is not None:
            # A tenant's records are those of its keys; staff requests belong to no single tenant.
            key_ids = [
                row.api_key_id
                for row in central_repository(TenantApiKey).list(
                    filters={"tenant_id": tenant_id}, fields=["api_key_id"]
                )
            ]
            records = records.filter(principal__in=[api_key_actor(key_id) for key_id in key_ids])
        # Read whole before any write: SQLite gives a cursor no isolation from updates on its connection,
        # and the records live one IDEMPOTENCY_TTL_SECONDS, so there are few.
        for record in list(records.only("pk", "principal", "key", "encrypted_response")):
            # The AAD tenants_app.api.idempotency binds every stored response with.
            aad = aad_for("idempotency", record.principal, record.key)
            yield _Stored(store, record.pk, None, bytes(record.encrypted_response), aad)
    else:
        raise ValueError(f"unknown ciphertext store {store!r}")


def _batches(items: Iterator[_Stored], size: int) -> Iterator[list[_Stored]]:
    batch: list[_Stored] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- writing ----------------------------------------------------------------------------------------
def _write(store: str, changes: list[tuple[_Stored, bytes]]) -> int:
    """Compare-and-set each row's ciphertext; returns how many rows still held the one read."""
    if store == STORE_IDEMPOTENCY:
        written = 0
        with transaction.atomic():
            for item, new in changes:
                written += IdempotencyRecord.objects.filter(
                    pk=item.row_key, encrypted_response=item.ciphertext
                ).update(encrypted_response=new)
        return written
    table = _TABLE_STORES[store]
    column = table.column
    rows = [
        # The tenant is part of the condition too: a row can never be rewritten through another tenant.
        RowChange(
            key=item.row_key,
            values={column: new},
            expected={column: item.ciphertext, "tenant_id": item.tenant_id},
        )
        for item, new in changes
    ]
    return central_repository(table.model).update_many(rows)


# --- services ---------------------------------------------------------------------------------------
def ciphertexts_reencrypt(
    *,
    tenant_id: str | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    actor: str = DEFAULT_ACTOR,
    progress: Callable[[str], None] | None = None,
) -> ReencryptReport:
    """Re-encrypt every stored ciphertext not made with the primary key; resumable, compare-and-set.

    KmsUnavailable or a BigQuery error ends the run where it is: batches written before stay written,
    and running again finishes the rest.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    kms = get_kms()
    report = ReencryptReport(dry_run=dry_run, backend=kms.backend, primary=kms.primary_key_version())
    try:
        for store in STORES:
            for number, batch in enumerate(
                _batches(_stored(store, tenant_id=tenant_id), batch_size), start=1
            ):
                changes = _reencrypt_batch(kms, batch, report)
                if changes and not dry_run:
                    written = _write(store, changes)
                    report.reencrypted[store] += written
                    report.changed_meanwhile[store] += len(changes) - written
                elif dry_run:
                    report.reencrypted[store] += len(changes)
                if progress is not None:
                    progress(
                        f"{store}: batch {number}: {len(batch)} read, {len(changes)} "
                        f"{'to re-encrypt' if dry_run else 're-encrypted'}"
                    )
    finally:
        _record(report, tenant_id=tenant_id, actor=actor)
    return report


def _reencrypt_batch(
    kms: KeyManagementService, batch: list[_Stored], report: ReencryptReport
) -> list[tuple[_Stored, bytes]]:
    changes: list[tuple[_Stored, bytes]] = []
    for item in batch:
        named = kms.ciphertext_key_version(item.ciphertext)
        if named is not None and named == report.primary:
            # The header says so: no decrypt needed (local only; Cloud KMS ciphertexts are opaque).
            report.found[(item.store, named)] += 1
            continue
        try:
            decrypted = kms.decrypt_detailed(item.ciphertext, aad=item.aad)
        except DecryptionFailed:
            report.found[(item.store, named or UNKNOWN_FORMAT)] += 1
            report.undecryptable[item.store] += 1
            logger.warning(
                "%s row %s does not decrypt for its row; left as is",
                item.store,
                item.row_key,
                extra={"tenant_id": item.tenant_id},
            )
            continue
        report.found[(item.store, decrypted.key_version)] += 1
        if decrypted.is_primary:
            continue
        if report.dry_run:
            changes.append((item, b""))
            continue
        ciphertext, version = kms.encrypt_detailed(decrypted.plaintext, aad=item.aad)
        report.primary = version
        changes.append((item, ciphertext))
    return changes


def _record(report: ReencryptReport, *, tenant_id: str | None, actor: str) -> None:
    moved = sum(report.reencrypted.values())
    if report.dry_run or not moved:
        return
    audit_record(
        action=AuditAction.KMS_REENCRYPT,
        actor=actor,
        tenant_id=tenant_id,
        target_type="kms_key_version",
        target_id=report.primary,
        after=report.summary(),
    )
    logger.info(
        "re-encrypted %d ciphertexts with %s key version %s (%d changed meanwhile, %d undecryptable)",
        moved,
        report.backend,
        report.primary,
        sum(report.changed_meanwhile.values()),
        sum(report.undecryptable.values()),
    )


def local_key_usage(*, tenant_id: str | None = None) -> Counter[tuple[str, str]]:
    """(store, key id) -> stored ciphertexts naming that local key, read from headers without decrypting."""
    usage: Counter[tuple[str, str]] = Counter()
    for store in STORES:
        for item in _stored(store, tenant_id=tenant_id):
            usage[(store, local_ciphertext_key_id(item.ciphertext) or UNKNOWN_FORMAT)] += 1
    return usage
