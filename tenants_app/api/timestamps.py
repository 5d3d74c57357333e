"""The one way the API writes an instant: RFC 3339 in UTC, to the microsecond, with `Z`.

`2026-12-03T16:30:05.123456Z`, always 26 characters and the fraction always there, so clients can compare
them as strings and parse them with one format. Microseconds, not seconds: BigQuery keeps them, and a
value read from one answer (`created_at`) must select the same row when sent back (`since=`).

Every serializer of the API writes instants through `TimestampField`, which also takes the ISO strings
some services hand over (credential and webhook metadata, audit values) and reformats them. Dates
(`usage_date`, `trial_end_date`) stay `YYYY-MM-DD`. JSON a tenant or a worker sent (`parameters`,
`run_metadata`, step `metadata`) is answered exactly as it was sent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from rest_framework import serializers

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# An instant some service wrote as an ISO string: a date, a time and a zone (which an instant always has).
_ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})")


def api_timestamp(value: datetime | str) -> str:
    """`value` written the API's way; a naive datetime is UTC (how BigQuery's rows come back)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def timestamps_in_values(values: Any) -> Any:
    """An audit entry's `before`/`after` values with each instant written the API's way.

    Only the top level: those are the changed columns of the row, where an instant is ours (stored as an
    ISO string in the entry's JSON). Deeper values (a schedule's `parameters`) are the tenant's own.
    """
    if not isinstance(values, dict):
        return values
    return {
        name: api_timestamp(value) if isinstance(value, str) and _ISO_INSTANT.fullmatch(value) else value
        for name, value in values.items()
    }


class TimestampField(serializers.DateTimeField):
    """A DRF datetime field that answers through `api_timestamp`; input parsing is DRF's own."""

    def to_representation(self, value: datetime | str | None) -> str | None:
        if value is None or value == "":
            return None
        return api_timestamp(value)
