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
from datetime import datetime
from typing import Any

from rest_framework import serializers

from tenants_app.labels import instant_columns, json_columns
from tenants_app.timestamps import api_timestamp

# An instant some service wrote as an ISO string: a date, a time and a zone (which an instant always has).
_ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})")


def timestamps_in_values(values: Any) -> Any:
    """An audit entry's `before`/`after` values with each instant written the API's way.

    Only under a column name our models declare as an instant, at any depth of our own objects (a
    rotation's `replacement.expires_at`): those values are ours (stored as ISO strings in the entry's
    JSON). Anything else is text someone typed (a key's name, a revoke reason) that may merely look like
    a time, and is answered exactly as it was stored, as is a value under an instant's name that does not
    parse. A JSON column's value (a schedule's `parameters`) is the tenant's own and is not entered.
    """
    if not isinstance(values, dict):
        return values
    return {name: _shown(name, value) for name, value in values.items()}


def _shown(name: str, value: Any) -> Any:
    if isinstance(value, dict) and name not in json_columns():
        return timestamps_in_values(value)
    return _instant_or_as_is(name, value)


def _instant_or_as_is(name: str, value: Any) -> Any:
    if name not in instant_columns() or not isinstance(value, str) or not _ISO_INSTANT.fullmatch(value):
        return value
    try:
        return api_timestamp(value)
    except (ValueError, OverflowError):  # not a date, or one that UTC cannot hold (year 1 at +01:00)
        return value


class TimestampField(serializers.DateTimeField):
    """A DRF datetime field that answers through `api_timestamp`; input parsing is DRF's own."""

    def to_representation(self, value: datetime | str | None) -> str | None:
        if value is None or value == "":
            return None
        return api_timestamp(value)
