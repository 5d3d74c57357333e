"""A fault-injecting HTTP proxy in front of the test emulator: BigQuery stopped, failing or slow on cue.

The app is pointed at `proxy.url` (BIGQUERY_EMULATOR_HOST) and every request goes through to the real
emulator, except those an armed fault catches:

- `DROP`: the connection is closed without an answer, as when the emulator is stopped or crashed;
- `ERROR_503` / `ERROR_500`: an error answer, as from an emulator (or BigQuery front end) failing;
- `SLOW`: the request IS forwarded (a write lands) but the answer is held past the client's timeout
  and then dropped: the client gives up on a change that happened, the nastiest case;
- `LOST`: the same without the wait: the first caught request is forwarded and its answer dropped at
  once, later ones are dropped unforwarded (the connection died after the write, then BigQuery was
  gone). Cheap enough to run at every write; SLOW shows the timeout path does the same.

A fault catches the `at`-th request matching its predicate (counted from when it was armed) and, unless
`once`, every matching request after it, until `heal()`: an outage, during which the client's own
retries fail too. `requests` logs every request with the fault it got, so a test can first run a flow
through a healthy proxy to learn how many requests it makes, then fail each of them in turn.
"""

from __future__ import annotations

import enum
import http.client
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Hop-by-hop headers are the proxy's own business on each side (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
)


class Fault(enum.Enum):
    DROP = "drop"
    ERROR_503 = "503"
    ERROR_500 = "500"
    SLOW = "slow"
    LOST = "lost"


@dataclass(frozen=True)
class ProxiedRequest:
    """One request the proxy saw, and the fault it got (None: passed through)."""

    number: int
    method: str
    path: str
    body: bytes
    fault: Fault | None

    @property
    def is_job(self) -> bool:
        """A query (jobs.query or jobs.insert), as opposed to a metadata call or a job poll."""
        return self.method == "POST" and (self.path.split("?")[0].endswith(("/queries", "/jobs")))

    @property
    def statement(self) -> str:
        """The SQL of a query request ('' for anything else)."""
        if not self.is_job or not self.body:
            return ""
        try:
            payload = json.loads(self.body)
        except ValueError:
            return ""
        # jobs.query has it at the top; jobs.insert inside the job's configuration.
        query = payload.get("query") or payload.get("configuration", {}).get("query", {}).get("query")
        return str(query or "").strip()


Predicate = Callable[[ProxiedRequest], bool]


@dataclass
class _Armed:
    kind: Fault
    at: int
    once: bool
    match: Predicate | None
    seen: int = 0
    fired: int = 0


class BigQueryFaultProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 in front of `upstream` (the emulator's URL)."""

    def __init__(self, upstream: str, *, slow_seconds: float) -> None:
        target = urlsplit(upstream)
        self.upstream_host = target.hostname or "127.0.0.1"
        self.upstream_port = target.port or 80
        self.slow_seconds = slow_seconds
        self._lock = threading.Lock()
        self._armed: _Armed | None = None
        self._log: list[ProxiedRequest] = []
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> BigQueryFaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    # --- faults ---------------------------------------------------------------------------------
    def fail(self, kind: Fault, *, at: int = 1, once: bool = False, match: Predicate | None = None) -> None:
        """Fail the `at`-th matching request from now (and every later one unless `once`)."""
        if at < 1:
            raise ValueError("at counts from 1")
        with self._lock:
            self._armed = _Armed(kind=kind, at=at, once=once, match=match)

    def heal(self) -> None:
        """Pass every request again (the emulator is back)."""
        with self._lock:
            self._armed = None

    @property
    def fired(self) -> int:
        """How many requests the armed fault has caught so far."""
        with self._lock:
            return 0 if self._armed is None else self._armed.fired

    # --- log ------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    @contextmanager
    def recording(self) -> Iterator[list[ProxiedRequest]]:
        """The requests made inside the block (the list fills when the block ends)."""
        self.clear_log()
        seen: list[ProxiedRequest] = []
        try:
            yield seen
        finally:
            seen.extend(self.requests)

    # --- internals ------------------------------------------------------------------------------
    def _decide(self, method: str, path: str, body: bytes) -> ProxiedRequest:
        with self._lock:
            number = len(self._log) + 1
            probe = ProxiedRequest(number=number, method=method, path=path, body=body, fault=None)
            fault: Fault | None = None
            armed = self._armed
            if armed is not None and (armed.match is None or armed.match(probe)):
                armed.seen += 1
                if armed.seen == armed.at or (armed.seen > armed.at and not armed.once):
                    fault = armed.kind
                    if fault is Fault.LOST and armed.fired > 0:
                        fault = Fault.DROP  # only the first one lands
                    armed.fired += 1
            request = ProxiedRequest(number=number, method=method, path=path, body=body, fault=fault)
            self._log.append(request)
            return request

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            connection.request(method, path, body=body or None, headers=dict(headers))
            response = connection.getresponse()
            data = response.read()
            return response.status, response.reason, response.getheaders(), data
        finally:
            connection.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the request log is `proxy.requests`

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _drop(self) -> None:
                # RST instead of FIN where possible: the client sees a dead peer, not a clean close.
                with suppress(OSError):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status, reason)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                body = self._body()
                request = proxy._decide(self.command, self.path, body)
                if request.fault is Fault.DROP:
                    self._drop()
                    return
                if request.fault in (Fault.ERROR_503, Fault.ERROR_500):
                    status = 503 if request.fault is Fault.ERROR_503 else 500
                    message = b'{"error": {"code": %d, "message": "injected fault", "errors": []}}' % status
                    self._answer(status, "Injected", [("Content-Type", "application/json")], message)
                    return
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
                status, reason, response_headers, data = proxy._forward(
                    self.command, self.path, headers, body
                )
                if request.fault is Fault.SLOW:
                    # The emulator did the work; the answer arrives after the client stopped waiting.
                    proxy._stopping.wait(proxy.slow_seconds)
                    self._drop()
                    return
                if request.fault is Fault.LOST:
                    self._drop()
                    return
                self._answer(status, reason, response_headers, data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler
