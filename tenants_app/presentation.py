"""How values are shown to people: one rule per kind, used by templates (`{% load portal_format %}`), the
admin's Python-side columns and the audit feed's selector alike, so no page formats a time, a duration or
an enum its own way. Outside the portal package so that services may use it too.

- Times: `2026-12-03 16:30:05 UTC`, always converted to UTC (the zone is printed, never implied).
- Durations: `4 min 10 s`, `2 h 5 min`, `850 ms`: two units at most, the largest first.
- JSON: indented, keys in their stored order, never a Python repr (`{'a': 1}`).
- Enums: the label of the model's choices (`Active`, `OpenAI`): tenants_app/labels.py.
"""

from __future__ import annotations

import datetime as dt
import json

from django.utils import timezone

from tenants_app.labels import EMPTY

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
DATE_FORMAT = "%Y-%m-%d"
_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1_000))


def timestamp(value: object) -> str:
    """A datetime (aware or naive UTC), a date, or an ISO string, as one text with its zone."""
    if value in (None, ""):
        return EMPTY
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        if timezone.is_naive(value):
            value = value.replace(tzinfo=dt.UTC)
        try:
            return value.astimezone(dt.UTC).strftime(TIMESTAMP_FORMAT)
        except OverflowError:  # a moment UTC cannot hold (year 1 at +01:00): shown as stored
            return value.isoformat()
    if isinstance(value, dt.date):
        return value.strftime(DATE_FORMAT)
    return str(value)


def duration_ms(value: object) -> str:
    """Milliseconds as a human duration; anything that is not a number is shown as it is."""
    if value in (None, ""):
        return EMPTY
    try:
        ms = int(float(str(value)))
    except (TypeError, ValueError):
        return str(value)
    if ms < 1_000:
        return f"{ms} ms"
    parts = []
    for unit, size in _UNITS:
        count, ms = divmod(ms, size)
        if count or parts:
            parts.append(f"{count} {unit}")
        if len(parts) == 2:
            break
    # "2 h 0 min" says no more than "2 h".
    return " ".join(part for part in parts if not part.startswith("0 ")) or "0 s"


def json_text(value: object) -> str:
    """Structured values as indented JSON; a string holding JSON is parsed first so it is shown alike."""
    if value in (None, ""):
        return EMPTY
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
