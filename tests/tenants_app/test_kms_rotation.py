"""Key rotation: the local key ring, `rotate_local_kms_key`, `reencrypt_credentials`, Cloud KMS versions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from pytest_django import Settings as SettingsWrapper

from tenants_app.kms import (
    LOCAL_KEY_FILENAME,
    DecryptionFailed,
    KmsMisconfigured,
    LocalAesGcmKms,
    aad_for,
    get_kms,
    local_ciphertext_key_id,
    local_key_ring_ids,
    reset_kms,
)
from tenants_app.models import (
    IdempotencyRecord,
    PlanName,
    Provider,
    TenantApiKey,
    TenantCloudCredential,
    TenantProfile,
    TenantStatus,
    TenantWebhookEndpoint,
)
from tenants_app.repositories import central_repository
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.audit import audit_list
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.credentials import credential_create, credential_decrypt, credential_replace
from tenants_app.services.key_rotation import STORE_CREDENTIALS, ciphertexts_reencrypt
from tenants_app.services.webhook_delivery import endpoint_secret
from tenants_app.services.webhooks import webhook_endpoint_create
from tests.conftest import unique_name
from tests.support.kms_fake import DISABLED, FakeCloudKms
from tests.support.people import insert_subscription

USER = "user:rotator"
SECRET = b"a secret worth keeping"
ROW_AAD = aad_for("tenant_cloud_credentials", "t_rotation", "cred_1")


def openai_payload() -> dict[str, str]:
    return {"api_key": f"sk-proj-{uuid.uuid4().hex}{uuid.uuid4().hex}"}


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rotation_central() -> Iterator[str]:
    """One central dataset per module: tests keep apart by tenant (--tenant) and their own key ring."""
    name = unique_name("tenants")
    with override_settings(TENANTS_DATASET=name):
        bigquery_bootstrap()
        yield name


@pytest.fixture(autouse=True)
def data_dir(settings: SettingsWrapper, tmp_path: Path) -> Iterator[Path]:
    """A key ring of this test's own, and no KMS backend cached across tests."""
    settings.DATA_DIR = tmp_path
    settings.KMS_BACKEND = "local"
    reset_kms()
    yield tmp_path
    reset_kms()


def make_tenant() -> str:
    tenant_id = f"t_{uuid.uuid4().hex[:12]}"
    central_repository(TenantProfile).insert(
        TenantProfile(
            tenant_id=tenant_id,
            company_name=f"Company {tenant_id}",
            admin_email=f"admin@{tenant_id.replace('_', '-')}.example.com",
            tenant_dataset_id=tenant_id,
            status=TenantStatus.ACTIVE,
            subscription_plan=PlanName.SCALE,
        )
    )
    insert_subscription(tenant_id, PlanName.SCALE)
    return tenant_id


def add_credential(tenant_id: str, name: str) -> tuple[str, dict[str, str]]:
    payload = openai_payload()
    row = credential_create(
        tenant_id=tenant_id, provider=Provider.OPENAI, name=name, payload=payload, created_by=USER
    )
    return row.credential_id, payload


def stored_key_ids(tenant_id: str) -> list[str | None]:
    credentials = central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id})
    keys = central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id})
    return sorted(
        [local_ciphertext_key_id(bytes(row.encrypted_credentials)) for row in credentials]
        + [local_ciphertext_key_id(bytes(row.encrypted_api_key)) for row in keys if row.encrypted_api_key]
    )


def command(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


# --- the local key ring -----------------------------------------------------------------------------
def test_it_keeps_old_ciphertexts_decrypting_and_switches_running_processes_to_the_new_key(
    data_dir: Path,
) -> None:
    running = LocalAesGcmKms(data_dir / LOCAL_KEY_FILENAME)
    old = running.encrypt(SECRET, aad=ROW_AAD)
    old_id = running.key_id.hex()

    out = command("rotate_local_kms_key")

    ring = local_key_ring_ids(data_dir / LOCAL_KEY_FILENAME)
    assert ring[1:] == [old_id]
    assert ring[0] != old_id
    assert f"New primary key {ring[0]}" in out
    assert (data_dir / LOCAL_KEY_FILENAME).stat().st_mode & 0o777 == 0o600
    # The process that loaded the ring before the rotation notices the new file on its next call.
    new = running.encrypt(SECRET, aad=ROW_AAD)
    assert local_ciphertext_key_id(new) == ring[0]
    assert running.decrypt(old, aad=ROW_AAD) == SECRET
    assert LocalAesGcmKms(data_dir / LOCAL_KEY_FILENAME).decrypt(new, aad=ROW_AAD) == SECRET


def test_it_changes_nothing_in_a_rotation_dry_run_and_refuses_a_missing_key_file(data_dir: Path) -> None:
    with pytest.raises(CommandError, match="no local KMS key"):
        command("rotate_local_kms_key")
    assert not (data_dir / LOCAL_KEY_FILENAME).exists(), "a missing ring must not be created by a rotation"
    get_kms().encrypt(SECRET, aad=ROW_AAD)
    before = (data_dir / LOCAL_KEY_FILENAME).read_bytes()

    out = command("rotate_local_kms_key", "--dry-run")

    assert "Nothing was changed" in out
    assert (data_dir / LOCAL_KEY_FILENAME).read_bytes() == before


def test_it_refuses_a_ciphertext_whose_key_was_retired(data_dir: Path) -> None:
    kms = get_kms()
    old = kms.encrypt(SECRET, aad=ROW_AAD)
    command("rotate_local_kms_key")
    old_id = local_ciphertext_key_id(old)
    path = data_dir / LOCAL_KEY_FILENAME
    # Retiring by hand (editing the file) what the command would refuse to retire.
    path.write_text(path.read_text().splitlines()[0] + "\n")

    with pytest.raises(DecryptionFailed, match=f"{old_id}, which is not in the key ring"):
        kms.decrypt(old, aad=ROW_AAD)


def test_it_reads_a_ring_with_comments_and_refuses_a_repeated_key(data_dir: Path) -> None:
    path = data_dir / LOCAL_KEY_FILENAME
    kms = get_kms()
    ciphertext = kms.encrypt(SECRET, aad=ROW_AAD)
    key_line = path.read_text().strip()
    path.write_text(f"# primary first\n\n{key_line}\n")
    assert LocalAesGcmKms(path).decrypt(ciphertext, aad=ROW_AAD) == SECRET

    path.write_text(f"{key_line}\n{key_line}\n")

    with pytest.raises(KmsMisconfigured, match="same key") as excinfo:
        LocalAesGcmKms(path).encrypt(SECRET, aad=ROW_AAD)
    assert key_line not in str(excinfo.value)


def test_it_never_replaces_a_key_ring_that_disappeared_while_in_use(data_dir: Path) -> None:
    kms = get_kms()
    kms.encrypt(SECRET, aad=ROW_AAD)
    (data_dir / LOCAL_KEY_FILENAME).unlink()

    with pytest.raises(KmsMisconfigured, match="restore it from a backup"):
        kms.encrypt(SECRET, aad=ROW_AAD)
    assert not (data_dir / LOCAL_KEY_FILENAME).exists(), "a new key would not decrypt what is stored"


@pytest.mark.django_db
def test_it_refuses_to_retire_the_primary_or_a_key_not_in_the_ring(
    rotation_central: str, data_dir: Path
) -> None:
    get_kms().check()
    primary = local_key_ring_ids(data_dir / LOCAL_KEY_FILENAME)[0]

    with pytest.raises(CommandError, match="is the primary"):
        command("rotate_local_kms_key", "--retire", primary)
    with pytest.raises(CommandError, match="is not in the ring"):
        command("rotate_local_kms_key", "--retire", "deadbeef")
    assert local_key_ring_ids(data_dir / LOCAL_KEY_FILENAME) == [primary]


# --- re-encryption with the local backend -----------------------------------------------------------
@pytest.mark.django_db
def test_it_moves_every_ciphertext_to_the_new_key_and_only_then_retires_the_old_one(
    central_dataset: str, data_dir: Path, settings: SettingsWrapper
) -> None:
    # A dataset of this test's own: the run below covers every row there is, not one tenant's.
    bigquery_bootstrap()
    settings.WEBHOOK_ALLOW_LOCALHOST = True  # an endpoint URL that passes, offline
    tenant_a, tenant_b = make_tenant(), make_tenant()
    cred_a, payload_a = add_credential(tenant_a, "a")
    cred_b, payload_b = add_credential(tenant_b, "b")
    hook = webhook_endpoint_create(tenant_id=tenant_a, url="http://127.0.0.1:9/in", created_by=USER)
    issued = api_key_create(tenant_id=tenant_a, name="ci", scopes=["tenant:read"], created_by=USER)
    principal = f"apikey:{issued.row.api_key_id}"
    IdempotencyRecord.objects.create(
        principal=principal,
        key="k1",
        request_fingerprint="f" * 64,
        status_code=201,
        encrypted_response=get_kms().encrypt(b'{"ok": true}', aad=aad_for("idempotency", principal, "k1")),
    )
    old_id = get_kms().primary_key_version()
    assert old_id is not None

    command("rotate_local_kms_key")
    new_id = local_key_ring_ids(data_dir / LOCAL_KEY_FILENAME)[0]
    with pytest.raises(CommandError, match=f"key {old_id} is still used by 5 stored"):
        command("rotate_local_kms_key", "--retire", old_id)
    kept = command("rotate_local_kms_key", "--retire-unused")
    assert f"kept {old_id}: 5 stored ciphertext(s)" in kept
    assert local_key_ring_ids(data_dir / LOCAL_KEY_FILENAME) == [new_id, old_id]

    dry = command("reencrypt_credentials", "--dry-run")
    assert f"tenant_cloud_credentials: 2 on {old_id}" in dry
    assert f"tenant_api_keys: 1 on {old_id}" in dry
    assert f"idempotency_records: 1 on {old_id}" in dry
    assert f"tenant_webhook_endpoints: 1 on {old_id}" in dry
    assert "5 would be re-encrypted" in dry
    assert stored_key_ids(tenant_a) == [old_id, old_id]

    out = command("reencrypt_credentials", "--batch-size", "1", "--verbosity", "2")

    assert "5 re-encrypted, 0 changed meanwhile" in out
    assert "tenant_cloud_credentials: batch 2" in out
    assert stored_key_ids(tenant_a) == [new_id, new_id]
    assert stored_key_ids(tenant_b) == [new_id]
    record = IdempotencyRecord.objects.get(principal=principal)
    assert local_ciphertext_key_id(bytes(record.encrypted_response)) == new_id
    for secret in (payload_a["api_key"], payload_b["api_key"], issued.plaintext, hook.secret):
        assert secret not in out + dry
    entries = audit_list(action="kms.reencrypt").items
    assert len(entries) == 1
    assert entries[0].actor == "system:reencrypt_credentials"
    assert entries[0].target_id == new_id
    assert entries[0].after_values["reencrypted"] == {
        "cloud_accounts": 2,
        "api_key_copies": 1,
        "idempotent_responses": 1,
        "webhook_signing": 1,
    }
    assert "0 re-encrypted" in command("reencrypt_credentials"), "a second run finds nothing to do"
    assert command("reencrypt_credentials", "--verbosity", "0") == ""

    retired = command("rotate_local_kms_key", "--retire-unused")

    assert f"retired 1 key(s): {old_id}" in retired
    assert local_key_ring_ids(data_dir / LOCAL_KEY_FILENAME) == [new_id]
    reset_kms()  # a fresh process: only the new key is left, and it decrypts everything
    assert credential_decrypt(tenant_id=tenant_a, credential_id=cred_a) == payload_a
    assert credential_decrypt(tenant_id=tenant_b, credential_id=cred_b) == payload_b
    [endpoint] = central_repository(TenantWebhookEndpoint).list(filters={"tenant_id": tenant_a})
    assert endpoint_secret(endpoint) == hook.secret  # deliveries still sign with it


@pytest.mark.django_db
def test_it_reencrypts_one_tenant_only_and_leaves_a_row_changed_meanwhile_alone(
    rotation_central: str,
) -> None:
    tenant, other = make_tenant(), make_tenant()
    first, _ = add_credential(tenant, "first")
    second, _ = add_credential(tenant, "second")
    add_credential(other, "other")
    old_id = get_kms().primary_key_version()
    command("rotate_local_kms_key")
    new_id = get_kms().primary_key_version()
    replacement = openai_payload()
    later = max(first, second)  # rows go by key order: this one is in the second batch

    def replace_later_after_first_batch(line: str) -> None:
        # Between the read of every row and the write of the later one: a tenant replaces it.
        if line.startswith(f"{STORE_CREDENTIALS}: batch 1"):
            credential_replace(tenant_id=tenant, credential_id=later, payload=replacement, updated_by=USER)

    report = ciphertexts_reencrypt(tenant_id=tenant, batch_size=1, progress=replace_later_after_first_batch)

    assert report.reencrypted[STORE_CREDENTIALS] == 1
    assert report.changed_meanwhile[STORE_CREDENTIALS] == 1
    assert credential_decrypt(tenant_id=tenant, credential_id=later) == replacement, "the new payload won"
    assert stored_key_ids(tenant) == [new_id, new_id]
    assert stored_key_ids(other) == [old_id], "another tenant's row is not touched with --tenant"


@pytest.mark.django_db
def test_it_reports_a_ciphertext_that_does_not_decrypt_and_moves_the_rest(rotation_central: str) -> None:
    tenant = make_tenant()
    good, payload = add_credential(tenant, "good")
    bad, _ = add_credential(tenant, "bad")
    command("rotate_local_kms_key")
    good_row = central_repository(TenantCloudCredential).get(good)
    # A ciphertext copied from another row: authentic bytes, wrong binding.
    central_repository(TenantCloudCredential).update(
        bad, {"encrypted_credentials": bytes(good_row.encrypted_credentials)}
    )

    with pytest.raises(CommandError, match=r"1 ciphertext\(s\) do not decrypt"):
        command("reencrypt_credentials", "--tenant", tenant)

    assert credential_decrypt(tenant_id=tenant, credential_id=good) == payload
    moved = local_ciphertext_key_id(
        bytes(central_repository(TenantCloudCredential).get(good).encrypted_credentials)
    )
    assert moved == get_kms().primary_key_version()


def test_it_refuses_an_unknown_tenant(rotation_central: str) -> None:
    with pytest.raises(CommandError, match="does not exist"):
        command("reencrypt_credentials", "--tenant", "t_nobody_here")


# --- Cloud KMS --------------------------------------------------------------------------------------
def test_it_refuses_to_rotate_a_cloud_key_and_names_the_gcloud_command(cloud_kms: FakeCloudKms) -> None:
    with pytest.raises(CommandError) as excinfo:
        command("rotate_local_kms_key")

    assert "gcloud kms keys versions create --key tenant-secrets --keyring convergence" in str(excinfo.value)
    assert "--primary" in str(excinfo.value)


@pytest.mark.django_db
def test_it_moves_cloud_ciphertexts_to_the_new_primary_version_resuming_after_an_outage(
    rotation_central: str, cloud_kms: FakeCloudKms
) -> None:
    tenant = make_tenant()
    first, payload = add_credential(tenant, "first")
    second, _ = add_credential(tenant, "second")
    assert cloud_kms.rotate() == 2

    dry = command("reencrypt_credentials", "--tenant", tenant, "--dry-run")
    assert "tenant_cloud_credentials: 2 on older version" in dry
    cloud_kms.simulate_outage()
    with pytest.raises(CommandError, match="run the command again"):
        command("reencrypt_credentials", "--tenant", tenant)
    cloud_kms.simulate_outage(False)

    out = command("reencrypt_credentials", "--tenant", tenant)

    assert "2 re-encrypted" in out
    rows = central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant})
    assert {cloud_kms.version_of(bytes(row.encrypted_credentials)) for row in rows} == {2}
    assert "2 on primary" in command("reencrypt_credentials", "--tenant", tenant, "--dry-run")
    # Only now may the old version go: everything still decrypts with version 1 disabled.
    cloud_kms.set_version_state(1, DISABLED)
    assert credential_decrypt(tenant_id=tenant, credential_id=first) == payload
    assert credential_decrypt(tenant_id=tenant, credential_id=second)
