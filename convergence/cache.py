"""The embedded default cache: one diskcache store in the data directory, shared by every process.

Why diskcache rather than Django's database cache (measured in bench/cache_backends.py): its `incr` is
one atomic SQLite transaction, where Django's DatabaseCache reads then writes and loses counts when two
processes race (rate limits and the login throttle count with `incr`); and it is several times faster
per operation, which matters on the key check of every API request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# SQLite busy timeout per operation. Writes (set, delete, incr) retry past it, so a revocation's delete is
# never skipped; a read that times out is a miss, which costs a BigQuery lookup, never a wrong answer.
_BUSY_TIMEOUT_SECONDS = 0.1
# Verified keys, rate counters and throttles are small: a few hundred MB is far more than they need.
_SIZE_LIMIT_BYTES = 256 * 1024 * 1024


def embedded_cache(directory: Path) -> dict[str, Any]:
    """CACHES entry for the machine-wide diskcache store in `directory`."""
    return {
        "BACKEND": "diskcache.DjangoCache",
        "LOCATION": str(directory),
        # Shards spread concurrent writers over separate SQLite files (each file has one writer at a time).
        "SHARDS": 4,
        "DATABASE_TIMEOUT": _BUSY_TIMEOUT_SECONDS,
        "OPTIONS": {"size_limit": _SIZE_LIMIT_BYTES},
    }
