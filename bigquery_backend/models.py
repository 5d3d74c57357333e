"""Base class for models whose rows live in BigQuery, not in Django's database."""

from __future__ import annotations

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
