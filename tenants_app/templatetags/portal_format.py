"""Template filters of tenants_app/presentation.py: `timestamp`, `duration`, `as_json`, `label`."""

from __future__ import annotations

from django import template

from tenants_app import presentation
from tenants_app.labels import enum_label

register = template.Library()

register.filter("timestamp", presentation.timestamp)
register.filter("duration", presentation.duration_ms)
register.filter("as_json", presentation.json_text)
register.filter("label", enum_label)
