"""The embedded default cache: one diskcache store in the data directory, shared by every process.

Why diskcache rather than Django's database cache (measured in bench/cache_backends.py): its `incr` is
one atomic SQLite transaction, where Django's DatabaseCache reads then writes and loses counts when two
processes race (rate limits and the login throttle count with `incr`); and it is several times faster
per operation, which matters on the key check of every API request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diskcache import DjangoCache

# SQLite busy timeout per operation. Writes (set, delete, incr) retry past it, so a revocation's delete is
# never skipped; a read that times out is a miss, which costs a BigQuery lookup, never a wrong answer.
_BUSY_TIMEOUT_SECONDS = 0.1
# Verified keys, rate counters and throttles are small: a few hundred MB is far more than they need.
_SIZE_LIMIT_BYTES = 256 * 1024 * 1024


class SharedDiskCache(DjangoCache):
    """diskcache's Django backend, keeping its SQLite connections across requests.

    Django closes every cache at the end of each request. For diskcache that closes the thread's SQLite
    connections, and the last connection to close checkpoints the write-ahead log to disk: a write then
    cost about 10 ms instead of 0.05-0.08 ms (bench/cache_backends.py). The connections are per thread,
    so keeping them open shares nothing between requests that could leak; they close with their thread.
    """

    def close(self, **kwargs: Any) -> None:
        """Nothing to release at the end of a request (see the class docstring)."""


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
