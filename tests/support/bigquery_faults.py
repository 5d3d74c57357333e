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
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.bigquery_proxy import (
    Exchange,
    LoopbackProxy,
    concurrent_update_body,
    is_job_request,
    job_statement,
    path_project,
    statement_table,
    too_many_dml_body,
)


class Fault(enum.Enum):
    DROP = "drop"
    ERROR_503 = "503"
    ERROR_500 = "500"
    SLOW = "slow"
    LOST = "lost"
    # BigQuery's own refusals of a statement, answered with its real error body, nothing forwarded.
    TOO_MANY_DML = "too_many_dml"
    CONCURRENT_UPDATE = "concurrent_update"


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
        return is_job_request(self.method, self.path)

    @property
    def statement(self) -> str:
        """The SQL of a query request ('' for anything else)."""
        return job_statement(self.method, self.path, self.body)


Predicate = Callable[[ProxiedRequest], bool]


@dataclass
class _Armed:
    kind: Fault
    at: int
    once: bool
    match: Predicate | None
    times: int | None = None
    seen: int = 0
    fired: int = 0


class BigQueryFaultProxy(LoopbackProxy):
    """A threaded HTTP/1.1 proxy on 127.0.0.1 in front of `upstream` (the emulator's URL)."""

    def __init__(self, upstream: str, *, slow_seconds: float) -> None:
        super().__init__(upstream)
        self.slow_seconds = slow_seconds
        self._lock = threading.Lock()
        self._armed: _Armed | None = None
        self._log: list[ProxiedRequest] = []

    def start(self) -> BigQueryFaultProxy:
        super().start()
        return self

    # --- faults ---------------------------------------------------------------------------------
    def fail(
        self,
        kind: Fault,
        *,
        at: int = 1,
        once: bool = False,
        match: Predicate | None = None,
        times: int | None = None,
    ) -> None:
        """Fail the `at`-th matching request from now (and every later one unless `once`, at most `times`)."""
        if at < 1:
            raise ValueError("at counts from 1")
        with self._lock:
            self._armed = _Armed(kind=kind, at=at, once=once, match=match, times=times)

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
                spent = armed.times is not None and armed.fired >= armed.times
                if not spent and (armed.seen == armed.at or (armed.seen > armed.at and not armed.once)):
                    fault = armed.kind
                    if fault is Fault.LOST and armed.fired > 0:
                        fault = Fault.DROP  # only the first one lands
                    armed.fired += 1
            request = ProxiedRequest(number=number, method=method, path=path, body=body, fault=fault)
            self._log.append(request)
            return request

    def handle(self, exchange: Exchange) -> None:
        request = self._decide(exchange.method, exchange.path, exchange.body)
        if request.fault is Fault.DROP:
            exchange.drop()
            return
        if request.fault in (Fault.ERROR_503, Fault.ERROR_500):
            status = 503 if request.fault is Fault.ERROR_503 else 500
            message = b'{"error": {"code": %d, "message": "injected fault", "errors": []}}' % status
            exchange.answer(status, "Injected", [("Content-Type", "application/json")], message)
            return
        if request.fault in (Fault.TOO_MANY_DML, Fault.CONCURRENT_UPDATE):
            table = statement_table(request.statement, project=path_project(request.path))
            refusal = too_many_dml_body(table, 20) if request.fault is Fault.TOO_MANY_DML else None
            exchange.answer_json(400, refusal or concurrent_update_body(table))
            return
        answer = exchange.forward()
        if request.fault is Fault.SLOW:
            # The emulator did the work; the answer arrives after the client stopped waiting.
            self._stopping.wait(self.slow_seconds)
            exchange.drop()
            return
        if request.fault is Fault.LOST:
            exchange.drop()
            return
        exchange.answer(*answer)
