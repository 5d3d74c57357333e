"""What a BigQuery admin page shows of a row's values: never a hidden one (secret fields and bytes are not
even read from BigQuery), every other one in its format (the table's own `value_formats`, arrays, JSON),
cut short in list cells and shown whole on the detail page.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from django.contrib.admin.utils import display_for_field, display_for_value
from django.db import models
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from bigquery_backend.fields import RepeatedStringField

# Longest text shown in a list cell; the detail page shows everything.
CELL_CHARS = 80

M = TypeVar("M", bound=models.Model)


class ValueDisplayMixin:
    """Which values of a row are read, and how each is shown, for the BigQueryModelAdmin it is mixed into."""

    def _readable_fields(self) -> list[str]:
        """Every column but the hidden ones: secrets and bytes stay in BigQuery, never reach this process."""
        hidden = self.hidden_field_names()
        return [f.name for f in self.opts.concrete_fields if f.name not in hidden]

    def _scrubbed(self, obj: M | None) -> M | None:
        """The row with its secret and bytes values dropped, so no template or error page can show them."""
        if obj is not None:
            hidden = self.hidden_field_names()
            for model_field in self.opts.concrete_fields:
                if model_field.name in hidden:
                    setattr(obj, model_field.attname, None)
        return obj

    def _list_value(self, obj: models.Model, name: str) -> str:
        model_field = self._field(name)
        if name == "__str__":
            return Truncator(str(obj)).chars(CELL_CHARS)
        if model_field is None:
            attr = getattr(self, name, None)
            value = attr(obj) if callable(attr) else getattr(obj, name, None)
            value = value() if callable(value) else value
            boolean = bool(getattr(attr, "boolean", False))
            return display_for_value(value, self.get_empty_value_display(), boolean=boolean)
        if model_field.name in self.hidden_field_names():
            return ""  # the checks refuse such declarations; this is the belt to their braces
        value = getattr(obj, model_field.attname)
        declared = self._declared_format(model_field, value)
        if declared is not None:
            return declared
        if isinstance(model_field, models.JSONField) and value is not None:
            return Truncator(json.dumps(value, sort_keys=True, default=str)).chars(CELL_CHARS)
        shown = display_for_field(value, model_field, self.get_empty_value_display())
        if isinstance(shown, SafeString):
            return shown
        return Truncator(str(shown)).chars(CELL_CHARS)

    def _detail_value(self, obj: models.Model, model_field: models.Field[Any, Any]) -> str:
        value = getattr(obj, model_field.attname)
        declared = self._declared_format(model_field, value)
        if declared is not None:
            return declared
        if isinstance(model_field, models.JSONField) and value is not None:
            pretty = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, default=str)
            return format_html("<pre class='bigquery-json'>{}</pre>", pretty)
        return display_for_field(value, model_field, self.get_empty_value_display())

    def _declared_format(self, model_field: models.Field[Any, Any], value: Any) -> str | None:
        """The admin's own format for the field (`value_formats`), or a repeated field's items; None
        when the field is shown the default way (lists and row pages differ there)."""
        if model_field.name in self.value_formats:
            return self.value_formats[model_field.name](value)
        if isinstance(model_field, RepeatedStringField):
            return ", ".join(value or []) or self.get_empty_value_display()
        return None
