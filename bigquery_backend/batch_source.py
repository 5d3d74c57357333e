"""Many rows as one query parameter per column (`Repository.update_many`, `Repository.replace_group`).

A few parameters for any number of rows, where `VALUES` tuples would need one per value.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.cloud import bigquery

from bigquery_backend.exceptions import InvalidInput

if TYPE_CHECKING:
    from bigquery_backend.repository import Repository, _Params

# Array parameters may not hold NULL on BigQuery: a NULL goes as this placeholder plus a BOOL mask.
_NULL_PLACEHOLDERS: dict[str, Any] = {
    "STRING": "",
    "INT64": 0,
    "FLOAT64": 0.0,
    "NUMERIC": decimal.Decimal(0),
    "BOOL": False,
    "TIMESTAMP": datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC),
    "DATE": datetime.date(1970, 1, 1),
}


class ArrayBatch:
    """Many rows as one array parameter per column, zipped back together by offset.

    A few parameters for any number of rows, where `VALUES` tuples would need one per value (and the
    emulator's cost grows with the number of parameter values either way).
    """

    def __init__(self, repository: Repository[Any], params: _Params) -> None:
        self.repository = repository
        self.params = params
        self.selects: list[str] = []
        self.unnests: list[str] = []
        self._first: str | None = None

    def add(self, column_name: str, values: Sequence[Any]) -> str:
        """Add one column's values (one per row, in row order); returns its alias in the source."""
        column = self.repository.definition.column(column_name)
        index = len(self.selects)
        # BYTES go as base64 and JSON as its text (parsed server-side, as single-row writes do).
        sent_type = "STRING" if column.field_type in ("BYTES", "JSON") else column.field_type
        items = []
        for value in values:
            if value is None:
                items.append(_NULL_PLACEHOLDERS[sent_type])
            elif column.field_type == "BYTES":
                items.append(base64.b64encode(bytes(value)).decode("ascii"))
            elif column.field_type == "JSON":
                items.append(json.dumps(value))
            elif column.field_type == "TIMESTAMP" and value.tzinfo is None:
                raise InvalidInput(
                    f"{column.name}: timestamps must be timezone-aware",
                    errors={column.name: ["Timestamp has no time zone."]},
                )
            else:
                items.append(value)
        expression = self._unnest(f"v{index}", sent_type, items)
        if column.field_type == "BYTES":
            expression = f"FROM_BASE64({expression})"
        elif column.field_type == "JSON":
            expression = f"PARSE_JSON({expression})"
        nulls = [value is None for value in values]
        if any(nulls):
            expression = f"IF({self._unnest(f'm{index}', 'BOOL', nulls)}, NULL, {expression})"
        alias = f"c{index}"
        self.selects.append(f"{expression} AS {alias}")
        return alias

    def add_flags(self, values: Sequence[bool]) -> str:
        """Add a BOOL column (one per row); returns its alias in the source."""
        alias = f"c{len(self.selects)}"
        self.selects.append(f"{self._unnest(f'f{len(self.selects)}', 'BOOL', list(values))} AS {alias}")
        return alias

    def _unnest(self, alias: str, field_type: str, items: list[Any]) -> str:
        name = f"p{len(self.params.parameters)}"
        self.params.parameters.append(bigquery.ArrayQueryParameter(name, field_type, items))
        self.unnests.append(_zipped(name, alias, first=self._first))
        self._first = self._first or alias
        return alias

    def source(self) -> str:
        # Aliases and parameter names only: the values travel as parameters.
        return f"SELECT {', '.join(self.selects)} FROM {' JOIN '.join(self.unnests)}"  # noqa: S608


def zipped_rows(
    columns: Mapping[str, tuple[str, Sequence[Any]]],
    *,
    prefix: str,
    constants: Mapping[str, tuple[str, Any]] | None = None,
) -> tuple[str, list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter]]:
    """A subquery of rows given column by column (`{alias: (type, values)}`, no NULLs) and its parameters;
    `constants` (`{alias: (type, value)}`) are columns with one value for every row.

    For a statement that joins many rows of its own (not a table's columns), such as one UPDATE per
    tick: the text stays the same size whatever the number of rows, where a `CASE` arm per row grows
    it (BigQuery compiles it, the emulator parses it, each in proportion). An UPDATE ... FROM takes its
    values from here only (emulator.py: parameters elsewhere in it are bound out of order there).
    """
    if len({len(values) for _, values in columns.values()}) > 1:
        raise ValueError(f"zipped_rows: columns of different lengths ({', '.join(columns)})")
    parameters: list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter] = []
    selects = list(columns)
    for alias, (field_type, value) in (constants or {}).items():
        parameters.append(bigquery.ScalarQueryParameter(f"{prefix}_{alias}", field_type, value))
        selects.append(f"@{prefix}_{alias} AS {alias}")
    unnests: list[str] = []
    first = next(iter(columns), None)
    for index, (alias, (field_type, values)) in enumerate(columns.items()):
        name = f"{prefix}{index}"
        parameters.append(bigquery.ArrayQueryParameter(name, field_type, list(values)))
        unnests.append(_zipped(name, alias, first=None if alias == first else first))
    return f"SELECT {', '.join(selects)} FROM {' JOIN '.join(unnests)}", parameters  # noqa: S608


def _zipped(parameter: str, alias: str, *, first: str | None) -> str:
    """One array as a column, joined by offset to the `first` (rows zipped back together)."""
    unnest = f"UNNEST(@{parameter}) AS {alias} WITH OFFSET AS o_{alias}"
    return unnest if first is None else f"{unnest} ON o_{alias} = o_{first}"
