"""Secret encryption: one small interface, a local AES-256-GCM backend and Cloud KMS."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import secrets
import stat
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import google_crc32c
import requests.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from google.api_core import exceptions as google_exceptions
from google.api_core import retry as google_retry
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms_v1

from convergence.secrets import publish_private_file

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Cloud KMS refuses larger plaintexts; the local backend enforces the same limit so that a secret
# accepted in development is never refused in production.
MAX_PLAINTEXT_BYTES = 64 * 1024
MAX_AAD_BYTES = 64 * 1024

LOCAL_KEY_FILENAME = "kms-local.key"
DEFAULT_TIMEOUT_SECONDS = 10.0


# --- errors -----------------------------------------------------------------------------------------
class KmsError(Exception):
    """Base class for every error this module raises; messages never hold plaintext or key material."""


class KmsUnavailable(KmsError):
    """The backend could not do the operation now (unreachable, timeout, permission): HTTP 503."""


class KmsMisconfigured(KmsUnavailable, ImproperlyConfigured):
    """A key file or key name that can never work until an operator fixes it."""


class KmsIntegrityError(KmsUnavailable):
    """A CRC32C check failed: the request or response was corrupted on the way; safe to retry later."""


class DecryptionFailed(KmsError):
    """The ciphertext does not authenticate: wrong key, tampered bytes or wrong AAD."""


@dataclass(frozen=True)
class Decrypted:
    """A plaintext and the key version its ciphertext used, so re-encryption knows what to move."""

    plaintext: bytes
    # Local: the key id (hex). Cloud KMS names no version on decrypt, only whether it was the primary.
    key_version: str
    is_primary: bool


# --- interface --------------------------------------------------------------------------------------
class KeyManagementService(ABC):
    """Encrypts and decrypts small secrets, bound to their context by additional authenticated data."""

    backend: str

    @abstractmethod
    def encrypt(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Return a ciphertext that decrypts only with the same `aad`."""

    @abstractmethod
    def decrypt(self, ciphertext: bytes, *, aad: bytes) -> bytes:
        """Return the plaintext, or raise DecryptionFailed / KmsUnavailable."""

    def encrypt_detailed(self, plaintext: bytes, *, aad: bytes) -> tuple[bytes, str]:
        """Like `encrypt`, plus the key version used (local: key id hex; Cloud KMS: version name)."""
        return self.encrypt(plaintext, aad=aad), self.backend

    def decrypt_detailed(self, ciphertext: bytes, *, aad: bytes) -> Decrypted:
        """Like `decrypt`, plus which key version decrypted and whether it is the primary."""
        # A backend that cannot tell says "not the primary": re-encrypting then costs a write, never a key.
        return Decrypted(self.decrypt(ciphertext, aad=aad), "unknown", False)

    def ciphertext_key_version(self, ciphertext: bytes) -> str | None:
        """The key version a ciphertext names, read without decrypting; None where the format is opaque."""
        return None

    def primary_key_version(self) -> str | None:
        """The key version new ciphertexts get, where it is known without a call (local only)."""
        return None

    @abstractmethod
    def check(self) -> None:
        """Raise KmsUnavailable unless the backend can encrypt right now (for readiness probes)."""


def aad_for(*parts: str) -> bytes:
    """Length-prefixed AAD for `parts`, so ("ab", "c") and ("a", "bc") never collide."""
    if not parts:
        raise ValueError("aad_for needs at least one part")
    chunks = []
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"aad_for parts must be str, not {type(part).__name__}")
        encoded = part.encode()
        chunks.append(struct.pack(">I", len(encoded)) + encoded)
    return b"".join(chunks)


def _check_input(data: bytes, aad: bytes, *, what: str) -> None:
    if not isinstance(data, bytes | bytearray) or not isinstance(aad, bytes | bytearray):
        raise TypeError(f"{what} and aad must be bytes")
    # An empty AAD would silently drop the binding to tenant and row that every caller needs.
    if not aad:
        raise ValueError("aad must not be empty: bind the ciphertext to its row with aad_for(...)")
    if len(aad) > MAX_AAD_BYTES:
        raise ValueError(f"aad is {len(aad)} bytes; the limit is {MAX_AAD_BYTES}")
    if what == "plaintext" and len(data) > MAX_PLAINTEXT_BYTES:
        raise ValueError(f"plaintext is {len(data)} bytes; the limit is {MAX_PLAINTEXT_BYTES}")


# --- local AES-256-GCM ------------------------------------------------------------------------------
FORMAT_VERSION = 1
_HEADER = struct.Struct(">B4s")  # format version, key id
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
# A ring holds the primary and the keys it replaced; 64 KiB is over a thousand of them.
MAX_KEY_FILE_BYTES = 64 * 1024


def key_id_of(key: bytes) -> bytes:
    """The 4-byte id stored in every ciphertext, so a ciphertext names the key it needs."""
    return hashlib.sha256(key).digest()[:4]


def local_ciphertext_key_id(ciphertext: bytes) -> str | None:
    """The key id (hex) a local ciphertext names in its header, or None if it is not in our format."""
    if len(ciphertext) < _HEADER.size + NONCE_BYTES + TAG_BYTES:
        return None
    version, key_id = _HEADER.unpack(bytes(ciphertext[: _HEADER.size]))
    return key_id.hex() if version == FORMAT_VERSION else None


@dataclass(frozen=True)
class _LoadedRing:
    # (inode, size, mtime, ctime) of the file the ring came from: a rotation replaces the file.
    signature: tuple[int, int, int, int]
    primary_id: bytes
    aeads: dict[bytes, AESGCM]


class LocalAesGcmKms(KeyManagementService):
    """AES-256-GCM with a key ring file in DATA_DIR; the default for development and single-host setups.

    The file holds one base64 key per line: the first (the primary) encrypts, every one decrypts, so a
    rotation (`manage.py rotate_local_kms_key`) breaks no stored ciphertext. A running process notices
    a replaced file on its next call (one stat), so every worker encrypts with the new primary at once.
    """

    backend = "local"

    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path
        self._lock = threading.Lock()
        self._loaded: _LoadedRing | None = None

    @property
    def key_id(self) -> bytes:
        """The primary key's id: the one new ciphertexts name."""
        return self._ring().primary_id

    @property
    def key_ids(self) -> list[str]:
        """Every key id in the ring (hex), primary first."""
        ring = self._ring()
        return [ring.primary_id.hex()] + [kid.hex() for kid in ring.aeads if kid != ring.primary_id]

    def encrypt(self, plaintext: bytes, *, aad: bytes) -> bytes:
        return self.encrypt_detailed(plaintext, aad=aad)[0]

    def encrypt_detailed(self, plaintext: bytes, *, aad: bytes) -> tuple[bytes, str]:
        _check_input(plaintext, aad, what="plaintext")
        ring = self._ring()
        header = _HEADER.pack(FORMAT_VERSION, ring.primary_id)
        # Random 96-bit nonces are safe for far more messages than tenant secrets will ever reach.
        nonce = os.urandom(NONCE_BYTES)
        # The header is authenticated too, so version and key id cannot be swapped undetected.
        sealed = ring.aeads[ring.primary_id].encrypt(nonce, bytes(plaintext), header + bytes(aad))
        return header + nonce + sealed, ring.primary_id.hex()

    def decrypt(self, ciphertext: bytes, *, aad: bytes) -> bytes:
        return self.decrypt_detailed(ciphertext, aad=aad).plaintext

    def decrypt_detailed(self, ciphertext: bytes, *, aad: bytes) -> Decrypted:
        _check_input(ciphertext, aad, what="ciphertext")
        ring = self._ring()
        if len(ciphertext) < _HEADER.size + NONCE_BYTES + TAG_BYTES:
            raise DecryptionFailed("ciphertext is too short to be ours")
        header = bytes(ciphertext[: _HEADER.size])
        version, found_key_id = _HEADER.unpack(header)
        if version != FORMAT_VERSION:
            raise DecryptionFailed(f"unknown ciphertext format version {version}")
        aead = ring.aeads.get(found_key_id)
        if aead is None:
            raise DecryptionFailed(
                f"ciphertext was made with key {found_key_id.hex()}, which is not in the key ring "
                f"(primary {ring.primary_id.hex()}, {len(ring.aeads)} keys)"
            )
        nonce = bytes(ciphertext[_HEADER.size : _HEADER.size + NONCE_BYTES])
        body = bytes(ciphertext[_HEADER.size + NONCE_BYTES :])
        try:
            plaintext = aead.decrypt(nonce, body, header + bytes(aad))
        except InvalidTag:
            raise DecryptionFailed(
                "ciphertext does not authenticate: tampered bytes or wrong context (AAD)"
            ) from None
        return Decrypted(plaintext, found_key_id.hex(), found_key_id == ring.primary_id)

    def ciphertext_key_version(self, ciphertext: bytes) -> str | None:
        return local_ciphertext_key_id(ciphertext)

    def primary_key_version(self) -> str | None:
        return self._ring().primary_id.hex()

    def check(self) -> None:
        probe = b"readiness probe"
        aad = aad_for("kms", "readiness")
        if self.decrypt(self.encrypt(probe, aad=aad), aad=aad) != probe:
            raise KmsUnavailable("local KMS round trip returned different bytes")

    def _ring(self) -> _LoadedRing:
        loaded = self._loaded
        if loaded is not None:
            try:
                current = _signature(os.stat(self.key_path))
            except FileNotFoundError:
                # Never create a new key here: it could not decrypt anything already stored.
                raise KmsMisconfigured(
                    f"the local KMS key {self.key_path} disappeared while in use; restore it from a backup"
                ) from None
            except OSError as exc:
                raise KmsMisconfigured(
                    f"cannot stat the local KMS key {self.key_path}: {exc.strerror}"
                ) from exc
            if current == loaded.signature:
                return loaded
        with self._lock:
            if self._loaded is not None and self._loaded is not loaded:
                return self._loaded  # another thread reloaded meanwhile
            if loaded is None:
                keys, signature = load_or_create_local_key_ring(self.key_path)
            else:
                keys, signature = _read_key_file(self.key_path)
            aeads = {key_id_of(key): AESGCM(key) for key in keys}
            self._loaded = _LoadedRing(signature=signature, primary_id=key_id_of(keys[0]), aeads=aeads)
            return self._loaded


def _signature(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def load_or_create_local_key(path: Path) -> bytes:
    """Return the primary key stored at `path`, creating it (mode 0600) on first use."""
    return load_or_create_local_key_ring(path)[0][0]


def load_or_create_local_key_ring(path: Path) -> tuple[list[bytes], tuple[int, int, int, int]]:
    """The keys at `path` (primary first) and the file's signature, creating one key on first use."""
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    try:
        publish_private_file(path, base64.b64encode(AESGCM.generate_key(bit_length=KEY_BYTES * 8)) + b"\n")
    except OSError as exc:
        raise KmsMisconfigured(f"cannot create the local KMS key {path}: {exc.strerror}") from exc
    # Whoever won the race, everybody uses the key that is now on disk.
    return _read_key_file(path)


def _read_key_file(path: Path) -> tuple[list[bytes], tuple[int, int, int, int]]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KmsMisconfigured(f"cannot read the local KMS key {path}: {exc.strerror}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        # Checked before fdopen, which refuses a directory with IsADirectoryError (a 500, not a 503).
        os.close(fd)
        raise KmsMisconfigured(f"the local KMS key {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise KmsMisconfigured(
                f"the local KMS key {path} is accessible to group or others (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
        content = handle.read(MAX_KEY_FILE_BYTES + 1)
    if len(content) > MAX_KEY_FILE_BYTES:
        raise KmsMisconfigured(f"the local KMS key {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    keys = _parse_keys(path, content)
    if len({key_id_of(key) for key in keys}) != len(keys):
        raise KmsMisconfigured(f"the local KMS key {path} holds the same key (or key id) twice")
    return keys, _signature(info)


def _parse_keys(path: Path, content: bytes) -> list[bytes]:
    keys = []
    lines = [line.strip() for line in content.splitlines()]
    for number, line in enumerate(lines, start=1):
        if not line or line.startswith(b"#"):
            continue
        # Messages name the line, never its content: that is key material.
        try:
            key = base64.b64decode(line, validate=True)
        except ValueError:
            raise KmsMisconfigured(
                f"the local KMS key {path} does not hold base64 text (line {number})"
            ) from None
        if len(key) != KEY_BYTES:
            raise KmsMisconfigured(
                f"the local KMS key {path} holds {len(key)} bytes on line {number}; AES-256 needs {KEY_BYTES}"
            )
        keys.append(key)
    if not keys:
        raise KmsMisconfigured(f"the local KMS key {path} holds 0 bytes; AES-256 needs {KEY_BYTES}")
    return keys


def _write_key_file(path: Path, keys: list[bytes]) -> None:
    """Replace the ring atomically (mode 0600, fsynced): readers see the old file or the new one."""
    content = b"".join(base64.b64encode(key) + b"\n" for key in keys)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _ring_file_lock(path: Path) -> Iterator[None]:
    # Two rotations at once would each drop the other's new key: one at a time.
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def local_key_ring_ids(path: Path) -> list[str]:
    """The ids (hex) of the keys at `path`, primary first; KmsMisconfigured if there is no usable file."""
    try:
        keys, _ = _read_key_file(path)
    except FileNotFoundError:
        raise KmsMisconfigured(
            f"there is no local KMS key at {path} yet (it is created on first use)"
        ) from None
    return [key_id_of(key).hex() for key in keys]


def local_key_rotate(path: Path) -> list[str]:
    """Put a new random primary key first in the ring, keeping the others for decryption; returns the ids."""
    with _ring_file_lock(path):
        try:
            keys, _ = _read_key_file(path)
        except FileNotFoundError:
            # Creating a ring here would hide a lost key file: stored secrets need the old key.
            raise KmsMisconfigured(f"there is no local KMS key at {path} to rotate") from None
        new_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        _write_key_file(path, [new_key, *keys])
    return [key_id_of(key).hex() for key in (new_key, *keys)]


def local_key_retire(path: Path, key_ids: set[str]) -> list[str]:
    """Drop the non-primary keys `key_ids` from the ring; returns the ids that remain."""
    with _ring_file_lock(path):
        keys, _ = _read_key_file(path)
        if key_id_of(keys[0]).hex() in key_ids:
            raise KmsMisconfigured("the primary key cannot be retired: rotate first")
        kept = [key for key in keys if key_id_of(key).hex() not in key_ids]
        if len(kept) != len(keys):
            _write_key_file(path, kept)
    return [key_id_of(key).hex() for key in kept]


# --- Cloud KMS --------------------------------------------------------------------------------------
KEY_NAME_PATTERN = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")

# Per-attempt floor: the retry never starts an attempt after the deadline, but the last one must
# still get a usable timeout.
_MIN_ATTEMPT_TIMEOUT = 0.2

# These loggers write request and response bodies (base64 plaintext) at DEBUG when enabled.
_PAYLOAD_LOGGERS = (
    "google.cloud.kms_v1",
    "google.cloud.kms_v1.services.key_management_service.transports.rest",
    "google.auth.transport.requests",
)


# Labels for Cloud KMS ciphertexts, whose version is opaque to us until a decrypt says "primary" or not.
PRIMARY_VERSION = "primary"
OLDER_VERSION = "older version"


class _IntegrityMismatch(Exception):
    """A CRC32C check failed on one attempt; retried, then raised as KmsIntegrityError."""


def crc32c(data: bytes) -> int:
    return google_crc32c.value(bytes(data))


def _is_transient(exc: BaseException) -> bool:
    return isinstance(
        exc,
        google_exceptions.ServiceUnavailable
        | google_exceptions.DeadlineExceeded
        | google_exceptions.InternalServerError
        | google_exceptions.TooManyRequests
        | requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | auth_exceptions.TransportError
        # Google's integrity guide: a checksum mismatch is corruption in transit, so try again.
        | _IntegrityMismatch,
    )


class CloudKms(KeyManagementService):
    """Google Cloud KMS symmetric encryption with CRC32C integrity checks and a bounded deadline."""

    backend = "gcp"

    def __init__(
        self,
        key_name: str,
        *,
        client: kms_v1.KeyManagementServiceClient | None = None,
        api_endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if not KEY_NAME_PATTERN.match(key_name or ""):
            raise KmsMisconfigured(
                f"KMS key name {key_name!r} is not projects/*/locations/*/keyRings/*/cryptoKeys/*"
            )
        self.key_name = key_name
        self.timeout = float(timeout)
        self.client = client if client is not None else self._build_client(api_endpoint)
        # After building the client: its logging setup may have just configured these loggers.
        _silence_payload_logging()

    @staticmethod
    def _build_client(api_endpoint: str | None) -> kms_v1.KeyManagementServiceClient:
        # REST everywhere: the transport the tests exercise against the fake is the one production
        # runs, and it has none of gRPC's trouble with gunicorn's forking.
        try:
            if api_endpoint:
                return kms_v1.KeyManagementServiceClient(
                    credentials=AnonymousCredentials(),
                    transport="rest",
                    client_options={"api_endpoint": api_endpoint},
                )
            return kms_v1.KeyManagementServiceClient(transport="rest")
        except auth_exceptions.GoogleAuthError as exc:
            raise KmsUnavailable(f"Cloud KMS credentials are missing or invalid: {_short(exc)}") from exc

    def encrypt(self, plaintext: bytes, *, aad: bytes) -> bytes:
        return self.encrypt_detailed(plaintext, aad=aad)[0]

    def encrypt_detailed(self, plaintext: bytes, *, aad: bytes) -> tuple[bytes, str]:
        _check_input(plaintext, aad, what="plaintext")
        request = {
            "name": self.key_name,
            "plaintext": bytes(plaintext),
            "additional_authenticated_data": bytes(aad),
            "plaintext_crc32c": crc32c(plaintext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }

        def attempt(timeout: float) -> tuple[bytes, str]:
            response = self.client.encrypt(request=request, retry=None, timeout=timeout)
            if not response.verified_plaintext_crc32c:
                raise _IntegrityMismatch("Cloud KMS did not verify the plaintext checksum")
            if not response.verified_additional_authenticated_data_crc32c:
                raise _IntegrityMismatch("Cloud KMS did not verify the AAD checksum")
            ciphertext = bytes(response.ciphertext)
            if response.ciphertext_crc32c is None or response.ciphertext_crc32c != crc32c(ciphertext):
                raise _IntegrityMismatch("the ciphertext does not match its checksum")
            # The response names the key version that encrypted: the primary at that moment.
            return ciphertext, str(response.name or self.key_name)

        return self._call("encrypt", attempt)

    def decrypt(self, ciphertext: bytes, *, aad: bytes) -> bytes:
        return self.decrypt_detailed(ciphertext, aad=aad).plaintext

    def decrypt_detailed(self, ciphertext: bytes, *, aad: bytes) -> Decrypted:
        _check_input(ciphertext, aad, what="ciphertext")
        request = {
            "name": self.key_name,
            "ciphertext": bytes(ciphertext),
            "additional_authenticated_data": bytes(aad),
            "ciphertext_crc32c": crc32c(ciphertext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }

        def attempt(timeout: float) -> Decrypted:
            response = self.client.decrypt(request=request, retry=None, timeout=timeout)
            plaintext = bytes(response.plaintext)
            if response.plaintext_crc32c is None or response.plaintext_crc32c != crc32c(plaintext):
                raise _IntegrityMismatch("the plaintext does not match its checksum")
            # Cloud KMS finds the version from the ciphertext but only says whether it was the primary.
            used_primary = bool(response.used_primary)
            return Decrypted(plaintext, PRIMARY_VERSION if used_primary else OLDER_VERSION, used_primary)

        return self._call("decrypt", attempt)

    def check(self) -> None:
        # Encrypt only: that is the permission onboarding needs, and it costs one call per probe.
        self.encrypt(b"readiness probe", aad=aad_for("kms", "readiness"))

    def _call(self, operation: str, attempt: Callable[[float], T]) -> T:
        # Our own deadline drives the per-attempt timeout: the client's default retries for 60 s,
        # and its timeout helper hands an attempt the *full* timeout again once less than 1 s is left.
        deadline = time.monotonic() + self.timeout

        def once() -> T:
            return attempt(max(deadline - time.monotonic(), _MIN_ATTEMPT_TIMEOUT))

        retry = google_retry.Retry(
            predicate=_is_transient, initial=0.1, maximum=1.0, multiplier=2.0, timeout=self.timeout
        )
        try:
            return retry(once)()
        except Exception as exc:
            mapped = self._map_error(operation, exc)
            if mapped is None:
                raise
            logger.warning("%s: %s", type(mapped).__name__, mapped)
            raise mapped from exc

    def _map_error(self, operation: str, exc: Exception) -> KmsError | None:
        cause: BaseException = exc
        gave_up = ""
        if isinstance(exc, google_exceptions.RetryError):
            cause = exc.cause if exc.cause is not None else exc
            gave_up = f" (gave up after {self.timeout:g} s)"
        if isinstance(cause, _IntegrityMismatch):
            return KmsIntegrityError(f"Cloud KMS {operation} failed an integrity check: {cause}{gave_up}")
        if isinstance(cause, google_exceptions.BadRequest) and operation == "decrypt":
            # A disabled or destroyed key version is an operator's problem, not a bad ciphertext.
            if _rpc_status(cause) == "FAILED_PRECONDITION":
                return KmsUnavailable(f"Cloud KMS cannot use the key version: {_short(cause)}")
            return DecryptionFailed(
                "Cloud KMS could not decrypt: wrong key, tampered ciphertext or wrong context (AAD)"
            )
        if isinstance(cause, google_exceptions.GoogleAPICallError):
            return KmsUnavailable(
                f"Cloud KMS {operation} failed: {type(cause).__name__}: {_short(cause)}{gave_up}"
            )
        if isinstance(
            cause,
            requests.exceptions.RequestException
            | auth_exceptions.GoogleAuthError
            | TimeoutError
            | ConnectionError
            | google_exceptions.RetryError,
        ):
            return KmsUnavailable(f"Cloud KMS is unreachable: {type(cause).__name__}{gave_up}")
        return None


def _rpc_status(exc: google_exceptions.GoogleAPICallError) -> str:
    """The canonical status name: gRPC carries it in the class, REST only in the JSON body."""
    if isinstance(exc, google_exceptions.FailedPrecondition):
        return "FAILED_PRECONDITION"
    response = getattr(exc, "response", None)
    try:
        return str(response.json()["error"]["status"])  # type: ignore[union-attr]
    except Exception:
        return ""


def _short(exc: BaseException) -> str:
    # Server messages name the key and the missing permission, never the payload; still capped.
    message = exc.message if isinstance(exc, google_exceptions.GoogleAPICallError) else str(exc)
    return str(message).split("\n", 1)[0][:300]


def _silence_payload_logging() -> None:
    """Keep request/response bodies (base64 plaintext) out of the logs even when DEBUG is on."""
    for name in _PAYLOAD_LOGGERS:
        payload_logger = logging.getLogger(name)
        if payload_logger.level < logging.INFO:
            payload_logger.setLevel(logging.INFO)


# --- factory ----------------------------------------------------------------------------------------
_kms: KeyManagementService | None = None
_kms_lock = threading.Lock()


def get_kms() -> KeyManagementService:
    """The process-wide KMS backend, created on first use from settings."""
    global _kms
    if _kms is None:
        with _kms_lock:
            if _kms is None:
                _kms = build_kms()
    return _kms


def reset_kms() -> None:
    """Forget the cached backend, for example after settings changed in a test."""
    global _kms
    with _kms_lock:
        _kms = None


def build_kms() -> KeyManagementService:
    """Create the backend that settings.KMS_BACKEND names."""
    backend = settings.KMS_BACKEND
    if backend == "local":
        return LocalAesGcmKms(Path(settings.DATA_DIR) / LOCAL_KEY_FILENAME)
    if backend == "gcp":
        return CloudKms(
            settings.KMS_KEY_NAME,
            api_endpoint=settings.KMS_EMULATOR_HOST,
            timeout=settings.KMS_TIMEOUT_SECONDS,
        )
    raise KmsMisconfigured(f"KMS_BACKEND must be 'local' or 'gcp', not {backend!r}")


def connect_setting_signals() -> None:
    """Drop the cached backend whenever a KMS_* setting or DATA_DIR is overridden (tests do that)."""
    from django.core.signals import setting_changed

    def on_setting_changed(*, setting: str, **_: Any) -> None:
        if setting.startswith("KMS_") or setting == "DATA_DIR":
            reset_kms()

    setting_changed.connect(on_setting_changed, weak=False, dispatch_uid="tenants_app.kms.reset_kms")
