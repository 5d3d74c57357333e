"""Job observers: who wants to know how long each BigQuery call took and how it ended.

The gateway (client.py) reports every statement and metadata call here, with its class, duration and
outcome; what to do with that (Prometheus metrics, say) is the business of whoever registers an
observer. This layer knows nothing of tenants or of metrics libraries, hence a plain callback list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

# (statement class, seconds, outcome): class one of STATEMENT_CLASSES, outcome "ok" or "error".
JobObserver = Callable[[str, float, str], None]

SELECT, DML, DDL, METADATA, OTHER = "select", "dml", "ddl", "metadata", "other"
STATEMENT_CLASSES = (SELECT, DML, DDL, METADATA, OTHER)
_FIRST_WORDS = {
    "SELECT": SELECT,
    "WITH": SELECT,
    "INSERT": DML,
    "UPDATE": DML,
    "DELETE": DML,
    "MERGE": DML,
    "TRUNCATE": DML,
    "CREATE": DDL,
    "ALTER": DDL,
    "DROP": DDL,
}

_observers: list[JobObserver] = []
_observers_lock = threading.Lock()


def statement_class(sql: str) -> str:
    """`select`, `dml`, `ddl` or `other`, from the statement's first keyword."""
    words = sql.lstrip("( \n\t").split(None, 1)
    return _FIRST_WORDS.get(words[0].upper(), OTHER) if words else OTHER


def add_job_observer(observer: JobObserver) -> None:
    """Call `observer` after every BigQuery job and metadata call; adding the same one twice is a no-op."""
    with _observers_lock:
        if observer not in _observers:
            _observers.append(observer)


def remove_job_observer(observer: JobObserver) -> None:
    with _observers_lock:
        if observer in _observers:
            _observers.remove(observer)


@contextmanager
def observed(kind: str, *, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Time the block and report it to every observer as `kind`, `ok` or (when it raises) `error`."""
    if not _observers:
        yield
        return
    started = clock()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        _notify(kind, max(0.0, clock() - started), outcome)


def _notify(kind: str, seconds: float, outcome: str) -> None:
    with _observers_lock:
        observers = list(_observers)
    for observer in observers:
        try:
            observer(kind, seconds, outcome)
        except Exception:
            # Observing must never fail the statement it observed (which has already run).
            logger.exception("BigQuery job observer %r failed", observer)
