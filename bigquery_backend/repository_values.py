"""What callers hand the repository besides plain values: other columns, increments, the server's
clock, searches, stable parts of a column's values, per-row changes, and the pages it returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from django.db import models

M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True)
class Col:
    """Another column of the same row, usable as a filter value (`used__lt=Col("limit")`)."""

    name: str


@dataclass(frozen=True)
class Add:
    """`SET column = column + amount`: an in-place increment for atomic counters."""

    amount: int | float


@dataclass(frozen=True)
class Now:
    """`SET column = CURRENT_TIMESTAMP()`: the server's clock, not the caller's."""


@dataclass(frozen=True)
class Search:
    """A case-insensitive substring match on any of `fields` (OR), as an admin search box does."""

    fields: tuple[str, ...]
    term: str


@dataclass(frozen=True)
class Part:
    """One of `of` stable parts of a STRING column's values (`tenant_id__part=Part(2, of=6)`).

    By FARM_FINGERPRINT: a value is in the same part on every host and in every query, and the parts
    together hold every row whose value is not NULL. Spreads periodic work over a period, a part at a time.
    """

    index: int
    of: int

    def __post_init__(self) -> None:
        # Built by code, never from input: a bad part is a bug, and would silently match no row.
        if not all(type(number) is int for number in (self.index, self.of)) or not 0 <= self.index < self.of:
            raise ValueError(f"Part({self.index!r}, of={self.of!r}): needs 0 <= index < of")


@dataclass(frozen=True)
class Page(Generic[M]):
    """One page of a listing plus the total number of matching rows."""

    items: list[M]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class RowChange:
    """One row of `Repository.update_many`: `values` are set where `expected` columns still hold theirs."""

    key: Any
    values: Mapping[str, Any]
    expected: Mapping[str, Any] = field(default_factory=dict)


class _Unchanged:
    """`RowChange.values` marker: this row keeps its column as it is (others in the batch change it)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()
