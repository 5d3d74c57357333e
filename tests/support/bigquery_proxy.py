"""What the test proxies between the app and the emulator share: HTTP plumbing and BigQuery's wire facts.

`bigquery_faults.BigQueryFaultProxy` (BigQuery failing on cue) and `bigquery_realism.BigQueryRealismProxy`
(BigQuery's latency and per-table limits) both subclass `LoopbackProxy`: a threaded HTTP/1.1 server on
127.0.0.1 that hands each request to `handle(exchange)`, where the subclass answers it, drops it or
forwards it to the emulator. What a request is (a query job, its SQL and target table, or a metadata
call) and BigQuery's own error answers are decided here too, once for both.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# Hop-by-hop headers are the proxy's own business on each side (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
)
# google.rpc.Code names of the HTTP statuses BigQuery answers errors with.
_RPC_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}
_RPC_STATUS.update({429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"})

Answer = tuple[int, str, list[tuple[str, str]], bytes]


def is_job_request(method: str, path: str) -> bool:
    """A query: jobs.query (POST .../queries) or jobs.insert (POST .../jobs), not a poll of one."""
    return method == "POST" and path.split("?")[0].endswith(("/queries", "/jobs"))


def job_payload(method: str, path: str, body: bytes) -> dict[str, Any]:
    """The JSON body of a query request ({} for anything else or a body that is not JSON)."""
    if not is_job_request(method, path) or not body:
        return {}
    try:
        payload = json.loads(body)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def job_statement(method: str, path: str, body: bytes) -> str:
    """The SQL of a query request ('' for anything else)."""
    payload = job_payload(method, path, body)
    # jobs.query has it at the top; jobs.insert inside the job's configuration.
    query = payload.get("query") or payload.get("configuration", {}).get("query", {}).get("query")
    return str(query or "").strip()


def bigquery_error_body(code: int, reason: str, message: str, **detail: str) -> bytes:
    """An error answer in BigQuery's own JSON shape, as the client library parses it."""
    error = {"domain": "global", "reason": reason, "message": message, **detail}
    body = {"error": {"code": code, "message": message, "errors": [error], "status": _RPC_STATUS[code]}}
    return json.dumps(body).encode()


# The table a DML or DDL statement writes: the word after its verb and its optional keywords.
_WRITE_TARGET = re.compile(
    r"^\s*(?:UPDATE|DELETE|MERGE|INSERT|CREATE|ALTER|DROP|TRUNCATE)\b"
    r"(?:\s+(?:FROM|INTO|OR\s+REPLACE|TEMP|TEMPORARY|MATERIALIZED|TABLE|VIEW|IF\s+NOT\s+EXISTS|IF\s+EXISTS)\b)*"
    r"\s+(?P<table>`[^`]+`(?:\.`[^`]+`)*|[A-Za-z_][\w.-]*)",
    re.IGNORECASE,
)
# The first table a SELECT reads.
_READ_SOURCE = re.compile(r"\bFROM\s+(?P<table>`[^`]+`(?:\.`[^`]+`)*|[A-Za-z_][\w.-]*)", re.IGNORECASE)
_STATEMENT_KINDS = {"SELECT": "select", "WITH": "select", "UPDATE": "update", "DELETE": "delete"}
_STATEMENT_KINDS.update({"MERGE": "merge", "INSERT": "insert"})


def statement_kind(sql: str) -> str:
    """select, update, delete, merge, insert, or ddl (anything else: CREATE, ALTER, DROP, ...)."""
    words = sql.lstrip("( \n\t").split(None, 1)
    return _STATEMENT_KINDS.get(words[0].upper(), "ddl") if words else "ddl"


def statement_table(sql: str, *, project: str) -> str:
    """`project:dataset.table` that a statement writes (or first reads), as BigQuery names it in errors."""
    match = _WRITE_TARGET.match(sql) or _READ_SOURCE.search(sql)
    if match is None:
        return ""
    parts = match.group("table").replace("`", "").split(".")
    if len(parts) == 3:
        return f"{parts[0]}:{parts[1]}.{parts[2]}"
    return f"{project}:{'.'.join(parts)}"


def path_project(path: str) -> str:
    """The project of a REST path `/bigquery/v2/projects/<project>/...` ('' if none)."""
    parts = path.split("?")[0].split("/")
    return parts[parts.index("projects") + 1] if "projects" in parts[:-1] else ""


def too_many_dml_body(table: str, limit: int) -> bytes:
    """BigQuery's refusal of a DML statement beyond a table's queue (HTTP 400, resourcesExceeded)."""
    message = (
        "Resources exceeded during query execution: Too many DML statements outstanding against "
        f"table {table}, limit is {limit}"
    )
    return bigquery_error_body(400, "resourcesExceeded", message)


def concurrent_update_body(table: str) -> bytes:
    """BigQuery's abort of a mutating DML that lost a conflict on the same table (HTTP 400, invalidQuery)."""
    message = f"Could not serialize access to table {table} due to concurrent update"
    return bigquery_error_body(400, "invalidQuery", message, location="q", locationType="parameter")


@dataclass
class Exchange:
    """One request in flight: read whole, then answered, dropped or forwarded by the proxy."""

    handler: BaseHTTPRequestHandler
    proxy: LoopbackProxy
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def statement(self) -> str:
        return job_statement(self.method, self.path, self.body)

    def forward(self) -> Answer:
        """Send the request to the emulator and return its answer."""
        return self.proxy.forward(self.method, self.path, self.headers, self.body)

    def relay(self) -> None:
        """Forward the request and pass the emulator's answer back."""
        self.answer(*self.forward())

    def answer(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        handler = self.handler
        # A client that gave up (its timeout) has closed the socket: nothing is left to tell it.
        with suppress(OSError):
            handler.send_response(status, reason)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

    def answer_json(self, status: int, data: bytes) -> None:
        self.answer(
            status, http.client.responses.get(status, ""), [("Content-Type", "application/json")], data
        )

    def drop(self) -> None:
        """Close the connection without an answer."""
        # RST instead of FIN where possible: the client sees a dead peer, not a clean close.
        with suppress(OSError):
            self.handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.handler.close_connection = True


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog is 5: a burst of 30 clients (a DML-limit test, a worker herd) overflowed
    # it and the kernel held the rest for 1, 3, 7, 15 s of SYN retries, long past the test's patience.
    request_queue_size = 128
    daemon_threads = True


class LoopbackProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 in front of `upstream` (the emulator's URL)."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream_host = target.hostname or "127.0.0.1"
        self.upstream_port = target.port or 80
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def handle(self, exchange: Exchange) -> None:
        """Answer one request; the base class passes everything through."""
        exchange.relay()

    def forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
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
                pass  # quiet: each proxy keeps its own record

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

            def _handle(self) -> None:
                body = self._body()
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
                proxy.handle(Exchange(self, proxy, self.command, self.path, headers, body))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler
