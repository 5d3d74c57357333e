"""The one way an instant leaves this system in machine-readable form: RFC 3339 in UTC, to the
microsecond, with `Z` (`2026-12-03T16:30:05.123456Z`).

API responses (tenants_app/api/timestamps.py) and webhook event bodies (services/notifications.py) both
write instants here, so a receiver parses one format whichever way the value reached it. People read
times through the portal's own rule instead (tenants_app/presentation.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def api_timestamp(value: datetime | str) -> str:
    """`value` written the one way; a naive datetime is UTC (how BigQuery's rows come back)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime(TIMESTAMP_FORMAT)
