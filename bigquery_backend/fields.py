"""Django model fields for BigQuery types that Django has no field for."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models


class RepeatedStringField(models.JSONField):
    """An ARRAY<STRING> column (mode REPEATED): a list of strings, never NULL."""

    description = "List of strings (BigQuery REPEATED STRING)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # BigQuery has no NULL arrays: an absent value is the empty list.
        kwargs.setdefault("default", list)
        kwargs.setdefault("blank", True)
        kwargs["null"] = False
        super().__init__(*args, **kwargs)

    def validate(self, value: Any, model_instance: models.Model | None) -> None:
        super().validate(value, model_instance)
        if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
            raise ValidationError("Enter a list of strings.", code="invalid")
