"""`manage.py rotate_local_kms_key`: add a new primary key to the local key ring, or retire unused ones."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bigquery_backend.exceptions import BigQueryError
from tenants_app.kms import (
    LOCAL_KEY_FILENAME,
    KmsError,
    local_key_retire,
    local_key_ring_ids,
    local_key_rotate,
    reset_kms,
)
from tenants_app.services.key_rotation import local_key_usage


def _gcloud_hint() -> str:
    # projects/P/locations/L/keyRings/R/cryptoKeys/K, checked by settings.
    parts = settings.KMS_KEY_NAME.split("/")
    key, ring, location, project = parts[7], parts[5], parts[3], parts[1]
    return (
        f"gcloud kms keys versions create --key {key} --keyring {ring} --location {location} "
        f"--project {project} --primary"
    )


class Command(BaseCommand):
    help = (
        "Local KMS backend only. Without options: put a new random key first in DATA_DIR/kms-local.key "
        "(it encrypts from now on; older keys stay for decryption, so nothing stored breaks), then run "
        "`manage.py reencrypt_credentials`. With --retire-unused: drop older keys no stored ciphertext "
        "names any more. Back up the key file after each change. With KMS_BACKEND=gcp, Cloud KMS rotates "
        "its own key versions: this command refuses and prints the gcloud command to use."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
        parser.add_argument(
            "--retire-unused",
            action="store_true",
            help="instead of rotating, drop the older keys that no stored ciphertext uses",
        )
        parser.add_argument(
            "--retire",
            action="append",
            default=[],
            metavar="KEY_ID",
            help="instead of rotating, drop this older key (8 hex digits); refused while anything uses it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.KMS_BACKEND != "local":
            raise CommandError(
                "KMS_BACKEND=gcp: Cloud KMS rotates its own keys. Create a new primary version with "
                f"`{_gcloud_hint()}` (or give the key a rotation schedule), then run "
                "`manage.py reencrypt_credentials`, and disable the old version once a dry run shows "
                "nothing on it."
            )
        path = Path(settings.DATA_DIR) / LOCAL_KEY_FILENAME
        try:
            if options["retire_unused"] or options["retire"]:
                self._retire(path, options)
            else:
                self._rotate(path, options)
        except KmsError as exc:
            raise CommandError(str(exc)) from None
        except BigQueryError as exc:
            raise CommandError(f"BigQuery: {exc}; nothing was changed") from None
        finally:
            # This process's cached ring reloads on its own too; a fresh start is simply clearer.
            reset_kms()

    def _rotate(self, path: Path, options: dict[str, Any]) -> None:
        verbosity: int = options["verbosity"]
        if options["dry_run"]:
            ids = local_key_ring_ids(path)
            if verbosity >= 1:
                self.stdout.write(
                    f"Dry run: would add a new primary key; the ring holds {len(ids)} key(s), "
                    f"primary {ids[0]}. Nothing was changed."
                )
            return
        ids = local_key_rotate(path)
        if verbosity >= 1:
            self.stdout.write(
                f"New primary key {ids[0]} in {path}; {len(ids) - 1} older key(s) kept for decryption "
                f"({', '.join(ids[1:])}). Back up the file now."
            )
            self.stdout.write(
                "Next: manage.py reencrypt_credentials, then manage.py rotate_local_kms_key --retire-unused."
            )

    def _retire(self, path: Path, options: dict[str, Any]) -> None:
        verbosity: int = options["verbosity"]
        ids = local_key_ring_ids(path)
        usage: Counter[str] = Counter()
        for (_store, key_id), count in local_key_usage().items():
            usage[key_id] += count
        older = ids[1:]
        asked = {key_id.lower() for key_id in options["retire"]}
        for key_id in sorted(asked):
            if key_id == ids[0]:
                raise CommandError(f"key {key_id} is the primary: rotate first, then re-encrypt")
            if key_id not in ids:
                raise CommandError(f"key {key_id} is not in the ring ({', '.join(ids)})")
            if usage[key_id]:
                raise CommandError(
                    f"key {key_id} is still used by {usage[key_id]} stored ciphertext(s): "
                    "run manage.py reencrypt_credentials first; nothing was changed"
                )
        candidates = asked or set(older)
        retire = {key_id for key_id in candidates if not usage[key_id]}
        kept = sorted(key_id for key_id in older if key_id not in retire)
        would = "would retire" if options["dry_run"] else "retired"
        if retire and not options["dry_run"]:
            local_key_retire(path, retire)
        if verbosity >= 1:
            self.stdout.write(
                f"{'Dry run: ' if options['dry_run'] else ''}{would} {len(retire)} key(s)"
                f"{': ' + ', '.join(sorted(retire)) if retire else ''}; primary {ids[0]}."
            )
            for key_id in kept:
                self.stdout.write(
                    f"  kept {key_id}: {usage[key_id]} stored ciphertext(s) still use it "
                    "(run manage.py reencrypt_credentials)"
                )
            if retire and not options["dry_run"]:
                self.stdout.write("Back up the key file now.")
