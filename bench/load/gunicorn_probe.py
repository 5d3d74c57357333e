"""gunicorn settings for bench/load: the project's own, plus a log of every batched bookkeeping flush.

The `last_used_at` flush (tenants_app.services.api_keys) and the API-call count flush
(tenants_app.services.rate_limits) run inline, in whichever request finds them due. The driver sees only
latencies; this hook, installed in each worker once Django is loaded, appends one JSON line per flush
(when, how long, how many rows it covered, which worker) to $LOAD_FLUSH_LOG, so run.py can say how many
flushes fell inside the measured window and what each cost under load. Bench only: the product's
`convergence/gunicorn_conf.py` is untouched, and its hooks and timeouts are reused as they are.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from typing import Any

from convergence.gunicorn_conf import graceful_timeout, timeout, worker_exit

__all__ = ["graceful_timeout", "post_worker_init", "timeout", "worker_exit"]

_write_lock = threading.Lock()


def post_worker_init(worker: Any) -> None:
    """Wrap both flushes of this worker with a timer (Django is set up by now)."""
    path = os.environ.get("LOAD_FLUSH_LOG")
    if not path:
        return
    from tenants_app.services.api_key_verification import LastUsedRecorder
    from tenants_app.services.rate_limits import ApiCallRecorder

    _timed(LastUsedRecorder, "flush", "last_used_at", path, worker)
    # The inline path calls _flush_locked directly (flush() takes the lock first): time that one.
    _timed(ApiCallRecorder, "_flush_locked", "api_calls", path, worker)


def _timed(cls: type, name: str, label: str, path: str, worker: Any) -> None:
    original = getattr(cls, name, None)
    if original is None:
        worker.log.warning("bench/load: %s.%s is gone; its flushes are not timed", cls.__name__, name)
        return

    @functools.wraps(original)
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        wall = time.time()
        started = time.perf_counter()
        written: Any = None
        try:
            written = original(self, *args, **kwargs)
            return written
        finally:
            line = {
                "what": label,
                "at": wall,
                "ms": (time.perf_counter() - started) * 1000,
                "rows": written if isinstance(written, int) else None,
                "pid": os.getpid(),
            }
            with _write_lock, open(path, "a") as log:
                log.write(json.dumps(line) + "\n")

    setattr(cls, name, timed)
