"""Base class for models whose rows live in BigQuery, not in Django's database."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from typing import Any, NoReturn, TypeVar

from django.db import models


class BigQueryModel(models.Model):
    """An unmanaged model: a typed row. Persistence goes through `Repository`, never the ORM."""

    class Meta:
        abstract = True
        managed = False

    def save(self, *args: Any, **kwargs: Any) -> NoReturn:
        # Refusing loudly beats writing to a SQL table that does not exist (or, worse, does).
        raise TypeError(f"{type(self).__name__} rows live in BigQuery: write them through a Repository")

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} rows live in BigQuery: delete them through a Repository")


M = TypeVar("M", bound=models.Model)


def model_replace(obj: M, **values: Any) -> M:
    """A copy of a row with some values changed: rows read from BigQuery are shared, never edited."""
    copy = type(obj)(**{field.attname: getattr(obj, field.attname) for field in obj._meta.concrete_fields})
    for name, value in values.items():
        setattr(copy, name, value)
    return copy


def model_as_json(obj: models.Model) -> dict[str, Any]:
    """A row as JSON-ready values, to keep inside another row: instants and dates in ISO 8601, to the
    microsecond (Django's JSON encoder would cut them to the millisecond), bytes in base64."""
    values: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        value = getattr(obj, field.attname)
        if isinstance(value, datetime.date):
            value = value.isoformat()
        elif isinstance(value, bytes | memoryview):
            value = base64.b64encode(bytes(value)).decode("ascii")
        values[field.attname] = value
    return values


def model_from_json(model: type[M], values: Mapping[str, Any]) -> M:
    """The row `model_as_json` gave; names it does not know are ignored (a row kept by an older release)."""
    known = {field.attname: field for field in model._meta.concrete_fields}
    row = {}
    for name, value in values.items():
        field = known.get(name)
        if field is None:
            continue
        if isinstance(field, models.DateField) and isinstance(value, str):  # DateTimeField too
            value = field.to_python(value)
        elif isinstance(field, models.BinaryField) and isinstance(value, str):
            value = base64.b64decode(value)
        row[name] = value
    return model(**row)
