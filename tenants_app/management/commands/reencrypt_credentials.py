"""`manage.py reencrypt_credentials`: move every stored ciphertext to the KMS's primary key (version)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bigquery_backend.exceptions import BigQueryError
from tenants_app.kms import KmsError
from tenants_app.models import TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.key_rotation import (
    DEFAULT_BATCH_SIZE,
    STORES,
    ReencryptReport,
    ciphertexts_reencrypt,
)


def _batch_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= 10_000:
        raise CommandError(f"--batch-size must be a whole number from 1 to 10000, not {value!r}")
    return size


class Command(BaseCommand):
    help = (
        "Decrypt every stored ciphertext (cloud credentials, encrypted API key copies, webhook signing "
        "secrets, stored idempotent responses) that was not made with the current primary key and encrypt "
        "it again with it, bound to "
        "the same row. Compare-and-set writes in batches: a row changed meanwhile keeps its new value. "
        "Resumable: rows already on the primary are skipped, so run it again after an interruption. "
        "Run it after `manage.py rotate_local_kms_key` (local backend) or after creating a new primary "
        "Cloud KMS key version; prints counts per key version, never a secret."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count per key version; change nothing")
        parser.add_argument("--tenant", default=None, help="only this tenant's ciphertexts")
        parser.add_argument(
            "--batch-size",
            type=_batch_size,
            default=DEFAULT_BATCH_SIZE,
            help=f"rows per compare-and-set statement (default {DEFAULT_BATCH_SIZE})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity: int = options["verbosity"]
        tenant_id: str | None = options["tenant"]
        try:
            if tenant_id is not None and central_repository(TenantProfile).find(tenant_id) is None:
                raise CommandError(f"tenant {tenant_id!r} does not exist")
            report = ciphertexts_reencrypt(
                tenant_id=tenant_id,
                dry_run=options["dry_run"],
                batch_size=options["batch_size"],
                progress=(lambda line: self.stdout.write(f"  {line}")) if verbosity >= 2 else None,
            )
        except (KmsError, BigQueryError) as exc:
            # Batches written before the failure stay written; a rerun skips them.
            raise CommandError(
                f"stopped: {type(exc).__name__}: {exc}. Batches already written stay re-encrypted; "
                "run the command again to finish."
            ) from None
        if verbosity >= 1:
            self._print(report)
        undecryptable = sum(report.undecryptable.values())
        if undecryptable:
            where = ", ".join(f"{n} in {store}" for store, n in sorted(report.undecryptable.items()) if n)
            raise CommandError(
                f"{undecryptable} ciphertext(s) do not decrypt for their row and keep their old key "
                f"({where}; row ids in the log): replace those credentials, rotate or revoke those API "
                "keys; idempotent responses expire by themselves."
            )

    def _print(self, report: ReencryptReport) -> None:
        prefix = "Dry run: " if report.dry_run else ""
        primary = report.primary or "unknown until the first encrypt"
        self.stdout.write(
            f"{prefix}{report.total} stored ciphertext(s), {report.backend} KMS, primary {primary}"
        )
        for store in STORES:
            versions = sorted((version, n) for (name, version), n in report.found.items() if name == store)
            if versions:
                found = ", ".join(f"{n} on {version}" for version, n in versions)
                self.stdout.write(f"  {store}: {found}")
        verb = "would be re-encrypted" if report.dry_run else "re-encrypted"
        self.stdout.write(
            f"{prefix}{sum(report.reencrypted.values())} {verb}, "
            f"{sum(report.changed_meanwhile.values())} changed meanwhile (left for the next run), "
            f"{sum(report.undecryptable.values())} undecryptable."
        )
        if report.dry_run:
            self.stdout.write("Nothing was changed.")
