"""What people read for a stored enum value: the label of the models' choices (`ACTIVE` -> `Active`,
`OPENAI` -> `OpenAI`), whichever table or message the value comes from.

The portal's filters (tenants_app/presentation.py) and the audit feed's sentences
(services/audit_feed.py) both read these, so a value reads the same on every page. `column_names` tells
which columns hold what kind of value, from the model declarations (enums, instants).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.db import models

from tenants_app import models as tenant_models

EMPTY = "—"


@functools.cache
def _labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in vars(tenant_models).values():
        if isinstance(item, type) and issubclass(item, models.TextChoices) and item is not models.TextChoices:
            for value, label in item.choices:
                labels.setdefault(str(value), str(label))
    return labels


def column_names(where: Callable[[Any], bool]) -> frozenset[str]:
    """Names of the columns, across this app's models, whose declared field satisfies `where`."""
    return frozenset(
        field.name
        for model in apps.get_app_config("tenants_app").get_models()
        for field in model._meta.get_fields()
        if where(field)
    )


@functools.cache
def enum_columns() -> frozenset[str]:
    """Names of the columns whose values are enum members (declared with choices in the models)."""
    return column_names(lambda field: bool(getattr(field, "choices", None)))


@functools.cache
def instant_columns() -> frozenset[str]:
    """Names of the columns our models declare as instants (TIMESTAMP/DATETIME)."""
    return column_names(lambda field: isinstance(field, models.DateTimeField))


@functools.cache
def json_columns() -> frozenset[str]:
    """Names of the JSON columns: what a tenant or a worker sent (`parameters`, `run_metadata`)."""
    return column_names(lambda field: isinstance(field, models.JSONField))


def enum_label(value: Any) -> str:
    """The choices' label of a stored enum value; an unknown value unchanged, nothing as a dash."""
    if value in (None, ""):
        return EMPTY
    return _labels().get(str(value), str(value))
