"""The embedded default cache: one diskcache store in the data directory, shared by every process.

Why diskcache rather than Django's database cache (measured in bench/cache_backends.py): its `incr` is
one atomic SQLite transaction, where Django's DatabaseCache reads then writes and loses counts when two
processes race (rate limits and the login throttle count with `incr`); and it is several times faster
per operation, which matters on the key check of every API request.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from diskcache import DjangoCache, FanoutCache
from django.core.cache.backends.base import BaseCache

# SQLite busy timeout per operation. Writes (set, delete, incr) retry past it, so a revocation's delete is
# never skipped; a read that times out is a miss, which costs a BigQuery lookup, never a wrong answer.
_BUSY_TIMEOUT_SECONDS = 0.1
# Verified keys, rate counters and throttles are small: a few hundred MB is far more than they need.
_SIZE_LIMIT_BYTES = 256 * 1024 * 1024


# One store per directory and options in a process, shared by its threads (see SharedDiskCache).
_stores: dict[tuple[str, int, float, tuple[tuple[str, Any], ...]], FanoutCache] = {}
_stores_lock = threading.Lock()


class SharedDiskCache(DjangoCache):
    """diskcache's Django backend, keeping its SQLite connections across requests, and one store per
    process instead of one per thread.

    Django closes every cache at the end of each request. For diskcache that closes the thread's SQLite
    connections, and the last connection to close checkpoints the write-ahead log to disk: a write then
    cost about 10 ms instead of 0.05-0.08 ms (bench/cache_backends.py). The connections are per thread,
    so keeping them open shares nothing between requests that could leak; they close with their thread.

    Django also builds a cache object per thread, and diskcache's builds its store, whose setup writes
    its settings into every shard. Hundreds of gunicorn threads starting at once (a burst of workers)
    then queued on those writes: in the worker bench at 128 workers, requests waited a minute and some
    failed "database is locked". diskcache's store is thread-safe, with its connections per thread, so
    one per process is set up once and each thread only opens its connections.
    """

    def __init__(self, directory: str, params: dict[str, Any]) -> None:
        BaseCache.__init__(self, params)  # DjangoCache's own would build a store for this thread
        self._cache = _store(directory, params)

    def close(self, **kwargs: Any) -> None:
        """Nothing to release at the end of a request (see the class docstring)."""


def _store(directory: str, params: dict[str, Any]) -> FanoutCache:
    shards, timeout = params.get("SHARDS", 8), params.get("DATABASE_TIMEOUT", 0.010)
    options = params.get("OPTIONS", {})
    key = (os.path.abspath(directory), shards, timeout, tuple(sorted(options.items())))
    with _stores_lock:
        if key not in _stores:
            _stores[key] = FanoutCache(directory, shards, timeout, **options)
        return _stores[key]


def embedded_cache(directory: Path) -> dict[str, Any]:
    """CACHES entry for the machine-wide diskcache store in `directory`."""
    return {
        "BACKEND": "convergence.cache.SharedDiskCache",
        "LOCATION": str(directory),
        # Shards spread concurrent writers over separate SQLite files (each file has one writer at a time).
        "SHARDS": 4,
        "DATABASE_TIMEOUT": _BUSY_TIMEOUT_SECONDS,
        "OPTIONS": {"size_limit": _SIZE_LIMIT_BYTES},
    }
