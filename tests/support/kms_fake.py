"""A loopback Cloud KMS fake speaking the REST subset the real client uses for encrypt and decrypt.

Key versions behave like Cloud KMS's: each CryptoKey starts with version 1 as its primary, `rotate()`
adds a version and makes it primary (`gcloud kms keys versions create --primary`), encrypt uses the
primary, decrypt finds the version from the ciphertext and says whether it was the primary, and a
disabled or destroyed version answers FAILED_PRECONDITION.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import google_crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.test import override_settings

# The REST transport's URIs: encrypt accepts a key or a key version, decrypt only a key.
_PATH = re.compile(
    r"^/v1/(?P<key>projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/:]+)"
    r"(?P<version>/cryptoKeyVersions/[^/:]+)?:(?P<method>encrypt|decrypt)$"
)
_NONCE_BYTES = 12
# Our ciphertexts start with the version number, like Cloud KMS's opaque ones name their version.
_VERSION = struct.Struct(">I")
ENABLED = "ENABLED"
DISABLED = "DISABLED"
DESTROYED = "DESTROYED"

# Each one breaks exactly one CRC32C-related promise the client must check.
INTEGRITY_FAULTS = (
    "verified_plaintext_crc32c",  # encrypt: the server claims it did not verify the plaintext
    "verified_additional_authenticated_data_crc32c",  # encrypt: same for the AAD
    "ciphertext_crc32c",  # encrypt: ciphertext corrupted after its checksum was computed
    "plaintext_crc32c",  # decrypt: plaintext corrupted after its checksum was computed
)


def _crc(data: bytes) -> str:
    # int64 fields travel as JSON strings.
    return str(google_crc32c.value(data))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    # proto3 JSON allows both alphabets, with or without padding.
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class KmsFakeError(Exception):
    """An error response: HTTP status, canonical status name and message, as Google sends them."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


class FakeCloudKms:
    """Cloud KMS on 127.0.0.1: real AES-GCM per key name, honest CRC32C, switchable failures."""

    project = "fake-project"
    location = "global"
    key_ring = "convergence"

    def __init__(self) -> None:
        self._master = os.urandom(32)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._port = 0
        self._thread: threading.Thread | None = None
        # Switches tests flip while the server runs.
        self.fail_with: tuple[int, str] | None = None
        self.delay_seconds = 0.0
        self.integrity_fault: str | None = None
        # What happened: attempts per method (failed ones included), and the parsed request bodies.
        self.calls: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        # Per CryptoKey name: the state of each version (index 0 is version 1) and the primary number.
        self._versions: dict[str, list[str]] = {}
        self._primary: dict[str, int] = {}

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> FakeCloudKms:
        """Serve on loopback; after a `stop()` on the same port and with the same keys (a restart)."""
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.fake = self
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="fake-cloud-kms", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes handlers sleeping for `delay_seconds`
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeCloudKms:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The api_endpoint to give the real client."""
        if self._server is None:
            raise RuntimeError("the fake is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def key_name(self, key: str = "tenant-secrets") -> str:
        return f"projects/{self.project}/locations/{self.location}/keyRings/{self.key_ring}/cryptoKeys/{key}"

    # --- key versions -------------------------------------------------------------------------------
    def rotate(self, key: str = "tenant-secrets") -> int:
        """Add a key version and make it primary; returns its number."""
        key_name = self.key_name(key)
        with self._lock:
            states = self._states(key_name)
            states.append(ENABLED)
            self._primary[key_name] = len(states)
            return len(states)

    def primary_version(self, key: str = "tenant-secrets") -> int:
        with self._lock:
            self._states(self.key_name(key))
            return self._primary[self.key_name(key)]

    def set_version_state(self, version: int, state: str, key: str = "tenant-secrets") -> None:
        """Enable, disable or destroy one version (what `gcloud kms keys versions disable` does)."""
        if state not in {ENABLED, DISABLED, DESTROYED}:
            raise ValueError(f"unknown key version state {state!r}")
        with self._lock:
            self._states(self.key_name(key))[version - 1] = state

    def version_of(self, ciphertext: bytes) -> int:
        """The version a ciphertext of this fake was made with (tests only: Cloud KMS's are opaque)."""
        return int(_VERSION.unpack(ciphertext[: _VERSION.size])[0])

    def _states(self, key_name: str) -> list[str]:
        # Call with the lock held. A CryptoKey springs into existence with version 1 as its primary.
        if key_name not in self._versions:
            self._versions[key_name] = [ENABLED]
            self._primary[key_name] = 1
        return self._versions[key_name]

    # --- switches -----------------------------------------------------------------------------------
    def simulate_outage(self, on: bool = True) -> None:
        """Answer every call with 503 UNAVAILABLE (or stop doing so)."""
        self.fail_with = (503, "UNAVAILABLE") if on else None

    def reset(self) -> None:
        """Clear switches and counters."""
        with self._lock:
            self.fail_with = None
            self.delay_seconds = 0.0
            self.integrity_fault = None
            self.calls.clear()
            self.requests.clear()

    # --- the API ------------------------------------------------------------------------------------
    def handle(self, path: str, body: bytes) -> dict[str, Any]:
        """Serve one POST; raise KmsFakeError for an error response."""
        match = _PATH.match(path.split("?", 1)[0])
        if match is None:
            raise KmsFakeError(404, "NOT_FOUND", f"no such method: {path.split('?', 1)[0]}")
        method = match["method"]
        with self._lock:
            self.calls[method] += 1
        if self.delay_seconds:
            self._stopping.wait(self.delay_seconds)
        if self.fail_with is not None:
            code, status = self.fail_with
            raise KmsFakeError(code, status, f"fake Cloud KMS answers {status}")
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            raise KmsFakeError(400, "INVALID_ARGUMENT", "request body is not JSON") from None
        with self._lock:
            self.requests.append({"method": method, **request})
        if method == "encrypt":
            return self._encrypt(match["key"], match["key"] + (match["version"] or ""), request)
        if match["version"]:
            raise KmsFakeError(400, "INVALID_ARGUMENT", "decrypt needs a CryptoKey, not a version")
        return self._decrypt(match["key"], request)

    def _encrypt(self, key_name: str, name: str, request: dict[str, Any]) -> dict[str, Any]:
        plaintext = self._field(request, "plaintext", "plaintext")
        aad = self._field(request, "additionalAuthenticatedData", "additional_authenticated_data")
        verified_plaintext = self._verify(request, "plaintextCrc32c", "plaintext_crc32c", plaintext)
        verified_aad = self._verify(
            request, "additionalAuthenticatedDataCrc32c", "additional_authenticated_data_crc32c", aad
        )
        with self._lock:
            states = self._states(key_name)
            if "/cryptoKeyVersions/" in name:
                number = name.rsplit("/", 1)[1]
                if not number.isdigit() or not 1 <= int(number) <= len(states):
                    raise KmsFakeError(404, "NOT_FOUND", f"CryptoKeyVersion {name} not found.")
                version = int(number)
            else:
                version = self._primary[key_name]
            state = states[version - 1]
        if state != ENABLED:
            raise KmsFakeError(
                400, "FAILED_PRECONDITION", f"{key_name}/cryptoKeyVersions/{version} is not enabled."
            )
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self._key(key_name, version)).encrypt(nonce, plaintext, aad or None)
        ciphertext = _VERSION.pack(version) + nonce + sealed
        checksum = _crc(ciphertext)
        fault = self.integrity_fault
        if fault == "ciphertext_crc32c":
            ciphertext = bytes([ciphertext[0] ^ 0x01]) + ciphertext[1:]
        return {
            "name": f"{key_name}/cryptoKeyVersions/{version}",
            "ciphertext": _b64(ciphertext),
            "ciphertextCrc32c": checksum,
            "verifiedPlaintextCrc32c": verified_plaintext and fault != "verified_plaintext_crc32c",
            "verifiedAdditionalAuthenticatedDataCrc32c": verified_aad
            and fault != "verified_additional_authenticated_data_crc32c",
            "protectionLevel": 1,  # SOFTWARE; the client asks for integer enums
        }

    def _decrypt(self, key_name: str, request: dict[str, Any]) -> dict[str, Any]:
        ciphertext = self._field(request, "ciphertext", "ciphertext")
        aad = self._field(request, "additionalAuthenticatedData", "additional_authenticated_data")
        self._verify(request, "ciphertextCrc32c", "ciphertext_crc32c", ciphertext)
        self._verify(
            request, "additionalAuthenticatedDataCrc32c", "additional_authenticated_data_crc32c", aad
        )
        head = _VERSION.size
        version = self.version_of(ciphertext) if len(ciphertext) > head + _NONCE_BYTES else 0
        with self._lock:
            states = self._states(key_name)
            state = states[version - 1] if 1 <= version <= len(states) else None
            primary = self._primary[key_name]
        if state in {DISABLED, DESTROYED}:
            raise KmsFakeError(
                400, "FAILED_PRECONDITION", f"{key_name}/cryptoKeyVersions/{version} is {state.lower()}."
            )
        try:
            if state is None:
                raise ValueError("no such version")
            plaintext = AESGCM(self._key(key_name, version)).decrypt(
                ciphertext[head : head + _NONCE_BYTES], ciphertext[head + _NONCE_BYTES :], aad or None
            )
        except (InvalidTag, ValueError):
            # Cloud KMS's own wording for a wrong key, wrong AAD or damaged ciphertext.
            raise KmsFakeError(
                400,
                "INVALID_ARGUMENT",
                "Decryption failed: verify that 'name' refers to the correct CryptoKey.",
            ) from None
        checksum = _crc(plaintext)
        if self.integrity_fault == "plaintext_crc32c":
            plaintext = plaintext[:-1] + bytes([plaintext[-1] ^ 0x01]) if plaintext else b"\x00"
        return {
            "plaintext": _b64(plaintext),
            "plaintextCrc32c": checksum,
            "usedPrimary": version == primary,
            "protectionLevel": 1,
        }

    def _key(self, key_name: str, version: int) -> bytes:
        # One AES key per CryptoKey version, so a ciphertext of one key fails with another.
        return hmac.new(
            self._master, f"{key_name}/cryptoKeyVersions/{version}".encode(), hashlib.sha256
        ).digest()

    @staticmethod
    def _field(request: dict[str, Any], camel: str, snake: str) -> bytes:
        value = request.get(camel, request.get(snake, ""))
        try:
            return _unb64(value)
        except (ValueError, TypeError):
            raise KmsFakeError(400, "INVALID_ARGUMENT", f"{snake} is not base64") from None

    @staticmethod
    def _verify(request: dict[str, Any], camel: str, snake: str, data: bytes) -> bool:
        """True when the client sent a checksum and it matches; 400 when it does not match."""
        value = request.get(camel, request.get(snake))
        if value is None:
            return False
        if int(value) != google_crc32c.value(data):
            raise KmsFakeError(
                400,
                "INVALID_ARGUMENT",
                f"The checksum in field {snake} did not match the data in field {snake[: -len('_crc32c')]}.",
            )
        return True


@contextmanager
def cloud_kms_in_use(*, timeout_seconds: float = 0.5) -> Iterator[FakeCloudKms]:
    """KMS_BACKEND=gcp while inside: the real Cloud KMS client against a fresh fake, each call bounded
    by `timeout_seconds` (what an outage costs a test). tenants_app.kms drops its cached backend
    whenever a KMS_ setting changes, so the backend in use is rebuilt on the way in and out."""
    with (
        FakeCloudKms() as fake,
        override_settings(
            KMS_BACKEND="gcp",
            KMS_KEY_NAME=fake.key_name(),
            KMS_EMULATOR_HOST=fake.url,
            KMS_TIMEOUT_SECONDS=timeout_seconds,
        ),
    ):
        yield fake


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 makes a burst of clients wait out SYN retries
    daemon_threads = True
    fake: FakeCloudKms

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is expected here, not a failure of the fake.
        pass


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one connection per request, so a stopped fake really refuses the next call.
    protocol_version = "HTTP/1.0"
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            payload = self.server.fake.handle(self.path, body)
            self._send(HTTPStatus.OK, payload)
        except KmsFakeError as exc:
            error = {"error": {"code": exc.code, "message": exc.message, "status": exc.status}}
            self._send(exc.code, error)

    def do_GET(self) -> None:
        self._send(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass
