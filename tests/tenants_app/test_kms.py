"""KMS backends: local AES-256-GCM on disk, and Cloud KMS through the real client against a loopback fake."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django import Settings as SettingsWrapper

from tenants_app.kms import (
    MAX_PLAINTEXT_BYTES,
    CloudKms,
    DecryptionFailed,
    KmsIntegrityError,
    KmsMisconfigured,
    KmsUnavailable,
    LocalAesGcmKms,
    aad_for,
    connect_setting_signals,
    get_kms,
    reset_kms,
)
from tests.support.file_modes import shell_umask
from tests.support.kms_fake import INTEGRITY_FAULTS, FakeCloudKms

SECRET = b'{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----sekrit-42"}'
SECRET_TEXT = SECRET.decode()
ROW_AAD = aad_for("tenant_cloud_credentials", "acme", "cred-1")
OTHER_ROW_AAD = aad_for("tenant_cloud_credentials", "acme", "cred-2")
# Short, so that every outage test proves the bound without making the suite slow.
CLOUD_TIMEOUT = 1.0


@pytest.fixture(autouse=True)
def _fresh_kms() -> Iterator[None]:
    """No backend cached across tests; settings overrides drop it as tenants_app's ready() will."""
    connect_setting_signals()
    reset_kms()
    yield
    reset_kms()


@pytest.fixture
def data_dir(settings: SettingsWrapper, tmp_path: Path) -> Path:
    """A DATA_DIR of this test's own, so no key lands in the real one."""
    settings.DATA_DIR = tmp_path
    return tmp_path


@pytest.fixture
def local(tmp_path: Path) -> LocalAesGcmKms:
    return LocalAesGcmKms(tmp_path / "kms-local.key")


@pytest.fixture
def fake() -> Iterator[FakeCloudKms]:
    with FakeCloudKms() as server:
        yield server


@pytest.fixture
def cloud(fake: FakeCloudKms) -> CloudKms:
    """The real google-cloud-kms client (REST transport) pointed at the fake."""
    return CloudKms(fake.key_name(), api_endpoint=fake.url, timeout=CLOUD_TIMEOUT)


def assert_no_secret_in(text: str) -> None:
    assert SECRET_TEXT not in text
    assert "sekrit-42" not in text
    assert base64.b64encode(SECRET).decode() not in text


# --- local backend ----------------------------------------------------------------------------------
def test_it_round_trips_with_the_local_key(local: LocalAesGcmKms) -> None:
    ciphertext = local.encrypt(SECRET, aad=ROW_AAD)

    assert SECRET not in ciphertext
    assert local.decrypt(ciphertext, aad=ROW_AAD) == SECRET


def test_it_writes_version_key_id_nonce_and_sealed_body(local: LocalAesGcmKms, tmp_path: Path) -> None:
    first = local.encrypt(SECRET, aad=ROW_AAD)
    second = local.encrypt(SECRET, aad=ROW_AAD)

    key = base64.b64decode((tmp_path / "kms-local.key").read_text())
    assert first[0] == 1
    assert first[1:5] == hashlib.sha256(key).digest()[:4] == local.key_id
    assert len(first) == 1 + 4 + 12 + len(SECRET) + 16
    assert first[5:17] != second[5:17], "every encryption must use a fresh nonce"


def test_it_creates_the_key_file_0600_once_and_reuses_it(tmp_path: Path) -> None:
    key_path = tmp_path / "nested" / "kms-local.key"
    ciphertext = LocalAesGcmKms(key_path).encrypt(SECRET, aad=ROW_AAD)
    content = key_path.read_bytes()

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert len(base64.b64decode(content)) == 32
    # A new instance (think: a restarted process) reads the same key and leaves the file alone.
    assert LocalAesGcmKms(key_path).decrypt(ciphertext, aad=ROW_AAD) == SECRET
    assert key_path.read_bytes() == content
    assert [p.name for p in key_path.parent.iterdir()] == ["kms-local.key"], "no temp files left behind"


def test_it_creates_a_missing_data_dir_0700_for_the_key_under_a_shell_umask(tmp_path: Path) -> None:
    key_path = tmp_path / "var" / "kms-local.key"

    with shell_umask():
        LocalAesGcmKms(key_path).encrypt(SECRET, aad=ROW_AAD)

    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_it_creates_exactly_one_key_when_many_workers_start_at_once(tmp_path: Path) -> None:
    key_path = tmp_path / "kms-local.key"
    instances = [LocalAesGcmKms(key_path) for _ in range(16)]
    barrier = threading.Barrier(len(instances))
    key_ids: list[bytes] = []

    def start(kms: LocalAesGcmKms) -> None:
        barrier.wait()
        key_ids.append(kms.key_id)

    threads = [threading.Thread(target=start, args=(kms,)) for kms in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(key_ids) == len(instances)
    assert len(set(key_ids)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["kms-local.key"]


def test_it_refuses_the_wrong_aad(local: LocalAesGcmKms) -> None:
    ciphertext = local.encrypt(SECRET, aad=ROW_AAD)

    with pytest.raises(DecryptionFailed) as excinfo:
        local.decrypt(ciphertext, aad=OTHER_ROW_AAD)
    assert_no_secret_in(str(excinfo.value))


@pytest.mark.parametrize(
    ("where", "index"),
    [("version", 0), ("key id", 2), ("nonce", 8), ("body", 20), ("tag", -1)],
)
def test_it_refuses_tampered_ciphertext(local: LocalAesGcmKms, where: str, index: int) -> None:
    ciphertext = bytearray(local.encrypt(SECRET, aad=ROW_AAD))
    ciphertext[index] ^= 0x01

    with pytest.raises(DecryptionFailed):
        local.decrypt(bytes(ciphertext), aad=ROW_AAD)


def test_it_refuses_truncated_ciphertext(local: LocalAesGcmKms) -> None:
    ciphertext = local.encrypt(SECRET, aad=ROW_AAD)

    for length in (0, 5, 17, 32, len(ciphertext) - 1):
        with pytest.raises(DecryptionFailed):
            local.decrypt(ciphertext[:length], aad=ROW_AAD)


def test_it_refuses_a_ciphertext_made_with_another_key(tmp_path: Path) -> None:
    one = LocalAesGcmKms(tmp_path / "one" / "kms-local.key")
    other = LocalAesGcmKms(tmp_path / "other" / "kms-local.key")
    ciphertext = one.encrypt(SECRET, aad=ROW_AAD)

    with pytest.raises(DecryptionFailed, match=one.key_id.hex()):
        other.decrypt(ciphertext, aad=ROW_AAD)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_it_refuses_a_key_file_others_can_access(local: LocalAesGcmKms, mode: int) -> None:
    local.encrypt(SECRET, aad=ROW_AAD)
    key_text = local.key_path.read_text().strip()
    local.key_path.chmod(mode)

    with pytest.raises(ImproperlyConfigured, match="chmod 600") as excinfo:
        LocalAesGcmKms(local.key_path).encrypt(SECRET, aad=ROW_AAD)
    assert isinstance(excinfo.value, KmsUnavailable), "callers answer 503, not 500"
    assert f"{mode:04o}" in str(excinfo.value)
    assert key_text not in str(excinfo.value)


@pytest.mark.parametrize(
    "content", [base64.b64encode(b"k" * 16), base64.b64encode(b"k" * 33), b"not base64 at all!", b""]
)
def test_it_refuses_a_key_file_that_is_not_a_256_bit_key(tmp_path: Path, content: bytes) -> None:
    key_path = tmp_path / "kms-local.key"
    key_path.write_bytes(content)
    key_path.chmod(0o600)

    with pytest.raises(KmsMisconfigured) as excinfo:
        LocalAesGcmKms(key_path).encrypt(SECRET, aad=ROW_AAD)
    if content:
        assert content.decode() not in str(excinfo.value)


def test_it_passes_the_local_readiness_check_and_creates_the_key(local: LocalAesGcmKms) -> None:
    local.check()

    assert local.key_path.exists()


# --- input rules shared by both backends ------------------------------------------------------------
def test_it_builds_unambiguous_aad() -> None:
    assert aad_for("ab", "c") != aad_for("a", "bc")
    assert aad_for("a", "") != aad_for("a")
    assert aad_for("a", "b") != aad_for("a:b")
    assert aad_for("t", "acme", "1") == aad_for("t", "acme", "1")
    assert aad_for("é") != aad_for("e")
    with pytest.raises(ValueError, match="at least one"):
        aad_for()
    with pytest.raises(TypeError):
        aad_for("table", 42)  # type: ignore[arg-type]


def test_it_refuses_empty_aad_and_oversized_plaintext(local: LocalAesGcmKms) -> None:
    with pytest.raises(ValueError, match="aad_for"):
        local.encrypt(SECRET, aad=b"")
    with pytest.raises(ValueError, match="limit"):
        local.encrypt(b"x" * (MAX_PLAINTEXT_BYTES + 1), aad=ROW_AAD)
    assert local.decrypt(local.encrypt(b"", aad=ROW_AAD), aad=ROW_AAD) == b""


# --- Cloud KMS through the real client --------------------------------------------------------------
def test_it_round_trips_through_the_real_cloud_kms_client(cloud: CloudKms, fake: FakeCloudKms) -> None:
    ciphertext = cloud.encrypt(SECRET, aad=ROW_AAD)

    assert SECRET not in ciphertext
    assert cloud.decrypt(ciphertext, aad=ROW_AAD) == SECRET
    assert fake.calls == {"encrypt": 1, "decrypt": 1}
    encrypt_request, decrypt_request = fake.requests
    # The client sent every checksum Google's integrity guide asks for.
    assert {"plaintextCrc32c", "additionalAuthenticatedDataCrc32c"} <= encrypt_request.keys()
    assert {"ciphertextCrc32c", "additionalAuthenticatedDataCrc32c"} <= decrypt_request.keys()
    assert base64.b64decode(encrypt_request["additionalAuthenticatedData"]) == ROW_AAD


def test_it_refuses_a_ciphertext_copied_to_another_row_through_cloud_kms(cloud: CloudKms) -> None:
    ciphertext = cloud.encrypt(SECRET, aad=ROW_AAD)

    with pytest.raises(DecryptionFailed) as excinfo:
        cloud.decrypt(ciphertext, aad=OTHER_ROW_AAD)
    assert_no_secret_in(str(excinfo.value))


def test_it_refuses_a_ciphertext_from_another_cloud_key(cloud: CloudKms, fake: FakeCloudKms) -> None:
    other = CloudKms(fake.key_name("other-key"), api_endpoint=fake.url, timeout=CLOUD_TIMEOUT)
    ciphertext = other.encrypt(SECRET, aad=ROW_AAD)

    with pytest.raises(DecryptionFailed):
        cloud.decrypt(ciphertext, aad=ROW_AAD)


def test_it_reports_an_outage_as_unavailable_within_the_deadline(cloud: CloudKms, fake: FakeCloudKms) -> None:
    fake.simulate_outage()

    started = time.monotonic()
    with pytest.raises(KmsUnavailable) as excinfo:
        cloud.encrypt(SECRET, aad=ROW_AAD)
    elapsed = time.monotonic() - started

    assert elapsed < CLOUD_TIMEOUT + 1.5
    assert fake.calls["encrypt"] > 1, "a 503 is transient and must be retried within the deadline"
    assert "ServiceUnavailable" in str(excinfo.value)
    assert_no_secret_in(str(excinfo.value))


def test_it_gives_up_on_a_hung_kms_within_the_deadline(cloud: CloudKms, fake: FakeCloudKms) -> None:
    ciphertext = cloud.encrypt(SECRET, aad=ROW_AAD)
    fake.delay_seconds = 30.0

    started = time.monotonic()
    with pytest.raises(KmsUnavailable):
        cloud.decrypt(ciphertext, aad=ROW_AAD)

    assert time.monotonic() - started < CLOUD_TIMEOUT + 1.5


def test_it_reports_an_unreachable_kms_as_unavailable(fake: FakeCloudKms) -> None:
    cloud = CloudKms(fake.key_name(), api_endpoint=fake.url, timeout=CLOUD_TIMEOUT)
    fake.stop()

    started = time.monotonic()
    with pytest.raises(KmsUnavailable, match="unreachable"):
        cloud.encrypt(SECRET, aad=ROW_AAD)

    assert time.monotonic() - started < CLOUD_TIMEOUT + 1.5


def test_it_uses_the_timeout_setting(settings: SettingsWrapper, fake: FakeCloudKms) -> None:
    settings.KMS_BACKEND = "gcp"
    settings.KMS_KEY_NAME = fake.key_name()
    settings.KMS_EMULATOR_HOST = fake.url
    settings.KMS_TIMEOUT_SECONDS = 0.5
    fake.simulate_outage()
    started = time.monotonic()
    with pytest.raises(KmsUnavailable):
        get_kms().encrypt(SECRET, aad=ROW_AAD)
    assert time.monotonic() - started < 0.5 + 1.5


@pytest.mark.parametrize(
    ("code", "status"), [(403, "PERMISSION_DENIED"), (404, "NOT_FOUND"), (401, "UNAUTHENTICATED")]
)
def test_it_reports_refusals_as_unavailable_without_retrying(
    cloud: CloudKms, fake: FakeCloudKms, code: int, status: str
) -> None:
    fake.fail_with = (code, status)

    with pytest.raises(KmsUnavailable) as excinfo:
        cloud.encrypt(SECRET, aad=ROW_AAD)

    assert fake.calls["encrypt"] == 1
    assert_no_secret_in(str(excinfo.value))


def test_it_treats_a_disabled_key_version_as_unavailable_not_as_tampering(
    cloud: CloudKms, fake: FakeCloudKms
) -> None:
    ciphertext = cloud.encrypt(SECRET, aad=ROW_AAD)
    fake.fail_with = (400, "FAILED_PRECONDITION")

    with pytest.raises(KmsUnavailable):
        cloud.decrypt(ciphertext, aad=ROW_AAD)


@pytest.mark.parametrize("fault", INTEGRITY_FAULTS)
def test_it_detects_integrity_failures(cloud: CloudKms, fake: FakeCloudKms, fault: str) -> None:
    ciphertext = cloud.encrypt(SECRET, aad=ROW_AAD)
    fake.reset()
    fake.integrity_fault = fault

    if fault == "plaintext_crc32c":
        call = lambda: cloud.decrypt(ciphertext, aad=ROW_AAD)  # noqa: E731 - one simple statement below
    else:
        call = lambda: cloud.encrypt(SECRET, aad=ROW_AAD)  # noqa: E731
    with pytest.raises(KmsIntegrityError) as excinfo:
        call()

    assert isinstance(excinfo.value, KmsUnavailable), "callers answer 503 and store nothing"
    assert sum(fake.calls.values()) > 1, "Google's guide says to retry a checksum mismatch"
    assert_no_secret_in(str(excinfo.value))


def test_it_passes_the_cloud_readiness_check_and_fails_it_in_an_outage(
    cloud: CloudKms, fake: FakeCloudKms
) -> None:
    cloud.check()
    fake.simulate_outage()

    with pytest.raises(KmsUnavailable):
        cloud.check()


def test_it_keeps_secrets_out_of_every_log_line(cloud: CloudKms, fake: FakeCloudKms) -> None:
    """Even with DEBUG on for the google loggers, whose transports would log request bodies."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(), logging.getLogger("google")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        ciphertext = cloud.encrypt(SECRET, aad=ROW_AAD)
        assert cloud.decrypt(ciphertext, aad=ROW_AAD) == SECRET
        with pytest.raises(DecryptionFailed):
            cloud.decrypt(ciphertext, aad=OTHER_ROW_AAD)
        fake.simulate_outage()
        with pytest.raises(KmsUnavailable):
            cloud.encrypt(SECRET, aad=ROW_AAD)
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)

    assert records, "the handler saw the module's warnings, so it was listening"
    for record in records:
        text = f"{record.getMessage()} {record.__dict__}"
        assert_no_secret_in(text)


def test_it_refuses_a_malformed_key_name() -> None:
    with pytest.raises(KmsMisconfigured, match="cryptoKeys"):
        CloudKms("projects/p/locations/l/keyRings/r", client=object())  # type: ignore[arg-type]


# --- choosing the backend ---------------------------------------------------------------------------
def test_it_picks_the_local_backend_by_default_and_caches_it(
    settings: SettingsWrapper, data_dir: Path
) -> None:
    settings.KMS_BACKEND = "local"

    kms = get_kms()

    assert isinstance(kms, LocalAesGcmKms)
    assert kms.key_path == data_dir / "kms-local.key"
    assert get_kms() is kms
    kms.check()
    assert stat.S_IMODE(os.stat(data_dir / "kms-local.key").st_mode) == 0o600


def test_it_picks_cloud_kms_from_settings_and_rebuilds_when_they_change(
    settings: SettingsWrapper, data_dir: Path, fake: FakeCloudKms
) -> None:
    settings.KMS_BACKEND = "gcp"
    settings.KMS_KEY_NAME = fake.key_name()
    settings.KMS_EMULATOR_HOST = fake.url
    settings.KMS_TIMEOUT_SECONDS = CLOUD_TIMEOUT

    kms = get_kms()
    assert isinstance(kms, CloudKms)
    assert kms.decrypt(kms.encrypt(SECRET, aad=ROW_AAD), aad=ROW_AAD) == SECRET
    assert fake.calls == {"encrypt": 1, "decrypt": 1}

    settings.KMS_BACKEND = "local"
    assert isinstance(get_kms(), LocalAesGcmKms)


def test_it_refuses_an_unknown_backend(settings: SettingsWrapper) -> None:
    settings.KMS_BACKEND = "vault"

    with pytest.raises(ImproperlyConfigured, match="vault"):
        get_kms()
