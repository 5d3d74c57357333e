"""Secret encryption: one small interface, a local AES-256-GCM backend and Cloud KMS."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import stat
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
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


def key_id_of(key: bytes) -> bytes:
    """The 4-byte id stored in every ciphertext, so a ciphertext names the key it needs."""
    return hashlib.sha256(key).digest()[:4]


class LocalAesGcmKms(KeyManagementService):
    """AES-256-GCM with a key file in DATA_DIR; the default for development and single-host setups."""

    backend = "local"

    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path
        self._lock = threading.Lock()
        self._aead: AESGCM | None = None
        self._key_id = b""

    @property
    def key_id(self) -> bytes:
        return self._load()[1]

    def encrypt(self, plaintext: bytes, *, aad: bytes) -> bytes:
        _check_input(plaintext, aad, what="plaintext")
        aead, key_id = self._load()
        header = _HEADER.pack(FORMAT_VERSION, key_id)
        # Random 96-bit nonces are safe for far more messages than tenant secrets will ever reach.
        nonce = os.urandom(NONCE_BYTES)
        # The header is authenticated too, so version and key id cannot be swapped undetected.
        return header + nonce + aead.encrypt(nonce, bytes(plaintext), header + bytes(aad))

    def decrypt(self, ciphertext: bytes, *, aad: bytes) -> bytes:
        _check_input(ciphertext, aad, what="ciphertext")
        aead, key_id = self._load()
        if len(ciphertext) < _HEADER.size + NONCE_BYTES + TAG_BYTES:
            raise DecryptionFailed("ciphertext is too short to be ours")
        header = bytes(ciphertext[: _HEADER.size])
        version, found_key_id = _HEADER.unpack(header)
        if version != FORMAT_VERSION:
            raise DecryptionFailed(f"unknown ciphertext format version {version}")
        if found_key_id != key_id:
            raise DecryptionFailed(
                f"ciphertext was made with key {found_key_id.hex()}, the current key is {key_id.hex()}"
            )
        nonce = bytes(ciphertext[_HEADER.size : _HEADER.size + NONCE_BYTES])
        body = bytes(ciphertext[_HEADER.size + NONCE_BYTES :])
        try:
            return aead.decrypt(nonce, body, header + bytes(aad))
        except InvalidTag:
            raise DecryptionFailed(
                "ciphertext does not authenticate: tampered bytes or wrong context (AAD)"
            ) from None

    def check(self) -> None:
        probe = b"readiness probe"
        aad = aad_for("kms", "readiness")
        if self.decrypt(self.encrypt(probe, aad=aad), aad=aad) != probe:
            raise KmsUnavailable("local KMS round trip returned different bytes")

    def _load(self) -> tuple[AESGCM, bytes]:
        if self._aead is None:
            with self._lock:
                if self._aead is None:
                    key = load_or_create_local_key(self.key_path)
                    self._key_id = key_id_of(key)
                    self._aead = AESGCM(key)
        return self._aead, self._key_id


def load_or_create_local_key(path: Path) -> bytes:
    """Return the key stored at `path`, creating it (mode 0600) on first use."""
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


def _read_key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KmsMisconfigured(f"cannot read the local KMS key {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KmsMisconfigured(f"the local KMS key {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise KmsMisconfigured(
                f"the local KMS key {path} is accessible to group or others (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
        content = handle.read(1024)
    try:
        key = base64.b64decode(content.strip(), validate=True)
    except ValueError:
        raise KmsMisconfigured(f"the local KMS key {path} does not hold base64 text") from None
    if len(key) != KEY_BYTES:
        raise KmsMisconfigured(f"the local KMS key {path} holds {len(key)} bytes; AES-256 needs {KEY_BYTES}")
    return key


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
        _check_input(plaintext, aad, what="plaintext")
        request = {
            "name": self.key_name,
            "plaintext": bytes(plaintext),
            "additional_authenticated_data": bytes(aad),
            "plaintext_crc32c": crc32c(plaintext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }

        def attempt(timeout: float) -> bytes:
            response = self.client.encrypt(request=request, retry=None, timeout=timeout)
            if not response.verified_plaintext_crc32c:
                raise _IntegrityMismatch("Cloud KMS did not verify the plaintext checksum")
            if not response.verified_additional_authenticated_data_crc32c:
                raise _IntegrityMismatch("Cloud KMS did not verify the AAD checksum")
            ciphertext = bytes(response.ciphertext)
            if response.ciphertext_crc32c is None or response.ciphertext_crc32c != crc32c(ciphertext):
                raise _IntegrityMismatch("the ciphertext does not match its checksum")
            return ciphertext

        return self._call("encrypt", attempt)

    def decrypt(self, ciphertext: bytes, *, aad: bytes) -> bytes:
        _check_input(ciphertext, aad, what="ciphertext")
        request = {
            "name": self.key_name,
            "ciphertext": bytes(ciphertext),
            "additional_authenticated_data": bytes(aad),
            "ciphertext_crc32c": crc32c(ciphertext),
            "additional_authenticated_data_crc32c": crc32c(aad),
        }

        def attempt(timeout: float) -> bytes:
            response = self.client.decrypt(request=request, retry=None, timeout=timeout)
            plaintext = bytes(response.plaintext)
            if response.plaintext_crc32c is None or response.plaintext_crc32c != crc32c(plaintext):
                raise _IntegrityMismatch("the plaintext does not match its checksum")
            return plaintext

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
