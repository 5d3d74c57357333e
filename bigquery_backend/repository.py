"""One typed repository for every table: parameterized SQL only, identifiers checked first."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from google.cloud import bigquery

from bigquery_backend.batch_source import ArrayBatch
from bigquery_backend.client import BigQueryGateway, QueryParameter, get_gateway
from bigquery_backend.exceptions import InvalidInput, NotFound
from bigquery_backend.identifiers import quote_column, quote_table
from bigquery_backend.repository_values import UNCHANGED, Add, Col, Now, Page, Part, RowChange, Search
from bigquery_backend.schema import REPEATED, Column, TableDefinition, table_definition

M = TypeVar("M", bound=models.Model)
T = TypeVar("T")

LOOKUPS = {
    "exact": "=",
    "ne": "!=",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
}
# Text lookups are case-insensitive substring tests, not LIKE: `%`, `_` and backslashes in input
# match themselves with nothing to escape (the emulator's LIKE ignores backslash escapes).
TEXT_LOOKUPS = {
    "icontains": "STRPOS(LOWER({column}), LOWER({value})) > 0",
    "istartswith": "STARTS_WITH(LOWER({column}), LOWER({value}))",
}
MAX_LIMIT = 10_000
# What one statement carries at most: BigQuery refuses requests (query text and parameters) over 10 MB,
# and a batch near that spends its time in the upload.
MAX_BATCH_BYTES = 4 * 1024 * 1024
# Up to this many rows, `replace_group` sends each value as its own parameter instead of arrays.
_SCALAR_ROWS = 10


def batched(
    items: Iterable[T],
    *,
    rows: Callable[[T], int] = lambda item: 1,
    size: Callable[[T], int] = lambda item: 0,
) -> Iterator[list[T]]:
    """`items` in as few batches as one statement takes: at most MAX_LIMIT rows and MAX_BATCH_BYTES.

    `rows` is what an item adds to the batch's largest table, `size` its bytes as sent. An item over
    either limit alone still goes, in a batch of its own (the statement then names what is wrong).
    """
    batch: list[T] = []
    batch_rows = batch_bytes = 0
    for item in items:
        item_rows, item_bytes = rows(item), size(item)
        if batch and (batch_rows + item_rows > MAX_LIMIT or batch_bytes + item_bytes > MAX_BATCH_BYTES):
            yield batch
            batch, batch_rows, batch_bytes = [], 0, 0
        batch.append(item)
        batch_rows += item_rows
        batch_bytes += item_bytes
    if batch:
        yield batch


class _Params:
    """Collects query parameters and hands out their SQL expressions."""

    def __init__(self) -> None:
        self.parameters: list[QueryParameter] = []

    def add(self, column: Column, value: Any) -> str:
        name = f"p{len(self.parameters)}"
        if column.mode == REPEATED:
            self.parameters.append(bigquery.ArrayQueryParameter(name, column.field_type, list(value or ())))
            return f"@{name}"
        if column.field_type == "JSON":
            # JSON goes in as a string and is parsed server-side: JSON-typed parameters are not
            # accepted everywhere (the emulator stores them as a JSON string scalar).
            text = None if value is None else json.dumps(value, sort_keys=True, default=str)
            self.parameters.append(bigquery.ScalarQueryParameter(name, "STRING", text))
            return f"PARSE_JSON(@{name})"
        if column.field_type == "BYTES":
            # Same for BYTES: base64 text decoded server-side round-trips on every implementation.
            text = None if value is None else base64.b64encode(bytes(value)).decode("ascii")
            self.parameters.append(bigquery.ScalarQueryParameter(name, "STRING", text))
            return f"FROM_BASE64(@{name})"
        if column.field_type == "TIMESTAMP" and isinstance(value, datetime.datetime) and value.tzinfo is None:
            raise InvalidInput(
                f"{column.name}: timestamps must be timezone-aware",
                errors={column.name: ["Timestamp has no time zone."]},
            )
        self.parameters.append(bigquery.ScalarQueryParameter(name, column.field_type, value))
        return f"@{name}"

    def add_int(self, value: int) -> str:
        name = f"p{len(self.parameters)}"
        self.parameters.append(bigquery.ScalarQueryParameter(name, "INT64", value))
        return f"@{name}"


class Repository(Generic[M]):
    """Typed CRUD for one model's table in one dataset."""

    def __init__(self, model: type[M], *, dataset: str, gateway: BigQueryGateway | None = None) -> None:
        self.model = model
        self.definition: TableDefinition = table_definition(model)
        self.gateway = gateway or get_gateway()
        self.dataset = dataset
        self.table = quote_table(self.gateway.project, dataset, self.definition.name)

    # --- reads ------------------------------------------------------------------------------------
    def get(self, key: Any) -> M:
        """The row with this primary key, or NotFound."""
        found = self.find(key)
        if found is None:
            raise NotFound(f"{self.model._meta.verbose_name} {key!r} does not exist")
        return found

    def find(self, key: Any) -> M | None:
        """The row with this primary key, or None."""
        rows = self.list(filters={self.definition.key: key}, limit=1)
        return rows[0] if rows else None

    def list(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        search: Search | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
        offset: int = 0,
        fields: Sequence[str] | None = None,
    ) -> list[M]:
        """Rows matching `filters` (Django-style lookups) and `search`, ordered, one page at a time.

        `fields` reads only those columns (and the key); the others come back empty. Pages that must
        never hold a secret leave its column in BigQuery this way.
        """
        params = _Params()
        sql = f"SELECT {self._select_list(fields)} FROM {self.table}{self._where(filters, params, search)}"
        sql += self._order_by(order_by)
        if limit is not None or offset:
            sql += f" LIMIT {params.add_int(self._check_limit(limit))}"
            if offset:
                sql += f" OFFSET {params.add_int(self._check_offset(offset))}"
        result = self.gateway.query(sql, params.parameters)
        return [self._to_model(row) for row in result.rows]

    def count(self, *, filters: Mapping[str, Any] | None = None, search: Search | None = None) -> int:
        """Number of rows matching `filters` and `search`."""
        params = _Params()
        sql = f"SELECT COUNT(*) AS n FROM {self.table}{self._where(filters, params, search)}"
        return int(self.gateway.query(sql, params.parameters).rows[0]["n"])

    def page(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        search: Search | None = None,
        order_by: Sequence[str] = (),
        limit: int = 50,
        offset: int = 0,
        fields: Sequence[str] | None = None,
    ) -> Page[M]:
        """One page plus the total: two jobs, whatever the table size."""
        items = self.list(
            filters=filters, search=search, order_by=order_by, limit=limit, offset=offset, fields=fields
        )
        total = self.count(filters=filters, search=search)
        return Page(items=items, total=total, limit=limit, offset=offset)

    # --- writes -----------------------------------------------------------------------------------
    def insert(self, *objs: M) -> int:
        """Insert rows with one DML statement (not streaming, so they stay updatable at once)."""
        if not objs:
            return 0
        params = _Params()
        columns = self.definition.columns
        tuples = []
        for obj in objs:
            self._validate(obj)
            values = (params.add(column, self._value(obj, column)) for column in columns)
            tuples.append(f"({', '.join(values)})")
        names = ", ".join(quote_column(column.name) for column in columns)
        sql = f"INSERT INTO {self.table} ({names}) VALUES {', '.join(tuples)}"
        return self.gateway.query(sql, params.parameters).affected_rows or 0

    def update(self, key: Any, values: Mapping[str, Any]) -> None:
        """Set `values` on the row with this key; NotFound if there is none."""
        if self.update_where(values, filters={self.definition.key: key}) == 0:
            raise NotFound(f"{self.model._meta.verbose_name} {key!r} does not exist")

    def update_where(self, values: Mapping[str, Any], *, filters: Mapping[str, Any]) -> int:
        """Atomic conditional update: one statement, returns how many rows matched the conditions."""
        if not values:
            raise InvalidInput("nothing to update")
        if not filters:
            raise InvalidInput("an update needs at least one condition")
        params = _Params()
        assignments = []
        for name, value in values.items():
            column = self._column(name)
            if column.name == self.definition.key:
                raise InvalidInput(
                    f"{name}: the primary key cannot be changed", errors={name: ["Read-only."]}
                )
            assignments.append(f"{quote_column(column.name)} = {self._assignment(column, value, params)}")
        sql = f"UPDATE {self.table} SET {', '.join(assignments)}{self._where(filters, params)}"
        return self.gateway.query(sql, params.parameters).affected_rows or 0

    def upsert(self, obj: M, *, update_fields: Sequence[str] | None = None) -> int:
        """Insert the row, or update it when its key exists: one MERGE statement."""
        self._validate(obj)
        params = _Params()
        columns = self.definition.columns
        key = quote_column(self.definition.key)
        source = ", ".join(
            f"{params.add(column, self._value(obj, column))} AS {quote_column(column.name)}"
            for column in columns
        )
        if update_fields is None:
            updated = [c for c in columns if c.name != self.definition.key]
        else:
            updated = [self._column(name) for name in update_fields]
        names = ", ".join(quote_column(c.name) for c in columns)
        sources = ", ".join(f"source.{quote_column(c.name)}" for c in columns)
        sql = (
            f"MERGE {self.table} AS target USING (SELECT {source}) AS source ON target.{key} = source.{key} "
        )
        if updated:
            sets = ", ".join(f"{quote_column(c.name)} = source.{quote_column(c.name)}" for c in updated)
            sql += f"WHEN MATCHED THEN UPDATE SET {sets} "
        sql += f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({sources})"
        return self.gateway.query(sql, params.parameters).affected_rows or 0

    def replace_group(self, objs: Sequence[M], *, group: Mapping[str, Any]) -> int:
        """Make the rows matching `group` (equalities) exactly `objs`, in ONE MERGE: rows with the same
        key are updated, new ones inserted, the group's others deleted. Running it twice changes nothing
        the second time, which makes a retried write safe without a DELETE first. REPEATED columns are
        not written (new rows get empty arrays)."""
        if not group:
            raise InvalidInput("a group needs at least one column")
        if len(objs) > MAX_LIMIT:
            raise InvalidInput(f"at most {MAX_LIMIT} rows per batch", errors={"objs": ["Too many."]})
        params = _Params()
        columns = [c for c in self.definition.columns if c.mode != REPEATED]
        key = quote_column(self.definition.key)
        conditions = " AND ".join(
            self._group_condition(lookup, value, params) for lookup, value in sorted(group.items())
        )
        for obj in objs:
            self._validate(obj)
        if 0 < len(objs) <= _SCALAR_ROWS:
            # A few rows as plain parameters: a join of one UNNEST per column costs the emulator about
            # four times as much per statement (docs/benchmarks.md), and BigQuery nothing more either way.
            aliases = {c.name: f"c{index}" for index, c in enumerate(columns)}
            source = " UNION ALL ".join(
                "SELECT "
                + ", ".join(f"{params.add(c, self._value(obj, c))} AS {aliases[c.name]}" for c in columns)
                for obj in objs
            )
        elif objs:
            batch = ArrayBatch(self, params)
            aliases = {c.name: batch.add(c.name, [self._value(obj, c) for obj in objs]) for c in columns}
            source = batch.source()
        else:
            aliases = {c.name: quote_column(c.name) for c in columns}
            source = f"SELECT * FROM {self.table} WHERE FALSE"
        sets = ", ".join(
            f"{quote_column(c.name)} = source.{aliases[c.name]}"
            for c in columns
            if c.name != self.definition.key
        )
        names = ", ".join(quote_column(c.name) for c in columns)
        values = ", ".join(f"source.{aliases[c.name]}" for c in columns)
        sql = (
            f"MERGE {self.table} AS target USING ({source}) AS source "
            f"ON target.{key} = source.{aliases[self.definition.key]} "
            f"WHEN MATCHED THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values}) "
            f"WHEN NOT MATCHED BY SOURCE AND {conditions} THEN DELETE"
        )
        return self.gateway.query(sql, params.parameters).affected_rows or 0

    def _group_condition(self, lookup: str, value: Any, params: _Params) -> str:
        """`target.column = value` or `IN UNNEST(values)`: the lookups a group of rows is named by."""
        name, _, operator = lookup.partition("__")
        column = self._column(name)
        target = f"target.{quote_column(column.name)}"
        if operator == "in":
            items = [self._coerce(column, name, item) for item in value]
            if not items:
                return "FALSE"
            array_name = f"p{len(params.parameters)}"
            params.parameters.append(bigquery.ArrayQueryParameter(array_name, column.field_type, items))
            return f"{target} IN UNNEST(@{array_name})"
        if operator or value is None:
            raise InvalidInput(f"{lookup}: a group is named by = or __in", errors={name: ["Bad lookup."]})
        return f"{target} = {params.add(column, self._coerce(column, name, value))}"

    def update_many(self, changes: Sequence[RowChange], *, shared: Mapping[str, Any] | None = None) -> int:
        """Per-row compare-and-set in one MERGE: each row gets its own `values` (and `shared`) only
        where its `expected` columns still hold the given values; returns how many rows matched.

        A value of `UNCHANGED` leaves that row's column as it is, so changes of different shapes (a
        success that sets `completed_at`, a failure that sets `failed_at`) still make one statement.
        """
        if not changes:
            return 0
        if len(changes) > MAX_LIMIT:
            raise InvalidInput(f"at most {MAX_LIMIT} rows per batch", errors={"changes": ["Too many."]})
        value_names = tuple(changes[0].values)
        expected_names = tuple(changes[0].expected)
        shared = dict(shared or {})
        if not value_names and not shared:
            raise InvalidInput("nothing to update")
        keys = [change.key for change in changes]
        if len(set(keys)) != len(keys):
            # A MERGE may match each target row to one source row only.
            raise InvalidInput("each key may appear once per batch", errors={"changes": ["Duplicate key."]})
        for change in changes:
            if tuple(change.values) != value_names or tuple(change.expected) != expected_names:
                raise InvalidInput("every change must name the same columns", errors={"changes": ["Mixed."]})
        params = _Params()
        batch = ArrayBatch(self, params)
        key_column = self._column(self.definition.key)
        key_alias = batch.add(key_column.name, [self._coerce(key_column, key_column.name, k) for k in keys])
        for name in (*value_names, *expected_names):
            column = self._column(name)
            # Arrays of arrays are not valid parameters, and JSON has no equality (JSON values go as text).
            if column.mode == REPEATED or (column.field_type == "JSON" and name in expected_names):
                raise InvalidInput(f"{name}: not supported in batches", errors={name: ["Not batchable."]})
        assignments = []
        for name in value_names:
            column = self._column(name)
            if column.name == self.definition.key:
                raise InvalidInput(
                    f"{name}: the primary key cannot be changed", errors={name: ["Read-only."]}
                )
            kept = [change.values[name] is UNCHANGED for change in changes]
            cleaned = [
                None if keep else self._clean(column, change.values[name])
                for keep, change in zip(kept, changes, strict=True)
            ]
            alias = batch.add(column.name, cleaned)
            quoted = quote_column(column.name)
            if any(kept):
                flags = batch.add_flags(kept)
                assignments.append(f"{quoted} = IF(source.{flags}, target.{quoted}, source.{alias})")
            else:
                assignments.append(f"{quoted} = source.{alias}")
        conditions = [f"target.{quote_column(self.definition.key)} = source.{key_alias}"]
        for name in expected_names:
            column = self._column(name)
            alias = batch.add(column.name, [self._coerce(column, name, c.expected[name]) for c in changes])
            quoted = f"target.{quote_column(column.name)}"
            # Null-safe equality: an expected NULL matches only a NULL.
            conditions.append(f"({quoted} = source.{alias} OR ({quoted} IS NULL AND source.{alias} IS NULL))")
        for name, value in shared.items():
            column = self._column(name)
            assignments.append(f"{quote_column(column.name)} = {self._assignment(column, value, params)}")
        sql = (
            f"MERGE {self.table} AS target USING ({batch.source()}) AS source ON {' AND '.join(conditions)} "
            f"WHEN MATCHED THEN UPDATE SET {', '.join(assignments)}"
        )
        return self.gateway.query(sql, params.parameters).affected_rows or 0

    def _clean(self, column: Column, value: Any) -> Any:
        model_field = self.model._meta.get_field(column.name)
        try:
            return model_field.clean(value, None)
        except ValidationError as exc:
            raise InvalidInput(
                f"{column.name}: {'; '.join(exc.messages)}", errors={column.name: exc.messages}
            ) from None

    def delete(self, key: Any) -> bool:
        """Delete the row with this key; True if it existed."""
        return self.delete_where(filters={self.definition.key: key}) > 0

    def delete_where(self, *, filters: Mapping[str, Any]) -> int:
        """Delete rows matching `filters` (at least one); returns how many went."""
        if not filters:
            raise InvalidInput("a delete needs at least one condition")
        params = _Params()
        sql = f"DELETE FROM {self.table}{self._where(filters, params)}"
        return self.gateway.query(sql, params.parameters).affected_rows or 0

    # --- SQL building -----------------------------------------------------------------------------
    def _select_list(self, fields: Sequence[str] | None = None) -> str:
        if fields is None:
            return ", ".join(quote_column(c.name) for c in self.definition.columns)
        names = {self._column(name).name for name in fields} | {self.definition.key}
        return ", ".join(quote_column(c.name) for c in self.definition.columns if c.name in names)

    def _column(self, name: str) -> Column:
        try:
            model_field = self.model._meta.get_field(name)
        except FieldDoesNotExist:
            raise InvalidInput(
                f"{self.model.__name__} has no field {name!r}", errors={name: ["Unknown field."]}
            ) from None
        return self.definition.column(model_field.column)

    def _where(self, filters: Mapping[str, Any] | None, params: _Params, search: Search | None = None) -> str:
        conditions = [self._condition(lookup, value, params) for lookup, value in (filters or {}).items()]
        if search is not None and search.term and search.fields:
            matches = [self._condition(f"{name}__icontains", search.term, params) for name in search.fields]
            conditions.append(f"({' OR '.join(matches)})")
        return " WHERE " + " AND ".join(conditions) if conditions else ""

    def _condition(self, lookup: str, value: Any, params: _Params) -> str:
        name, _, operator = lookup.partition("__")
        operator = operator or "exact"
        column = self._column(name)
        quoted = quote_column(column.name)
        if operator == "isnull" and column.mode != REPEATED:  # a JSON value may be NULL; an array never is
            return f"{quoted} IS {'' if value else 'NOT '}NULL"
        if operator == "part":
            return self._part_condition(lookup, name, value, params)
        if column.field_type == "JSON" or column.mode == REPEATED:
            raise InvalidInput(
                f"{name}: cannot filter on a {column.field_type} column", errors={name: ["Not filterable."]}
            )
        if isinstance(value, Col):
            if operator not in LOOKUPS:
                raise InvalidInput(f"{lookup}: lookup cannot compare columns", errors={name: ["Bad lookup."]})
            return f"{quoted} {LOOKUPS[operator]} {quote_column(self._column(value.name).name)}"
        if operator in {"in", "not_in"}:
            items = [self._coerce(column, name, item) for item in value]
            if not items:
                # IN () is a syntax error; an empty set matches nothing (or everything for NOT IN).
                return "FALSE" if operator == "in" else "TRUE"
            array_name = f"p{len(params.parameters)}"
            params.parameters.append(bigquery.ArrayQueryParameter(array_name, column.field_type, items))
            negation = "NOT " if operator == "not_in" else ""
            return f"{quoted} {negation}IN UNNEST(@{array_name})"
        if operator in TEXT_LOOKUPS:
            if column.field_type != "STRING":
                raise InvalidInput(
                    f"{lookup}: text lookups need a STRING column", errors={name: ["Bad lookup."]}
                )
            if value is None:
                raise InvalidInput(
                    f"{lookup}: use __isnull to match NULL", errors={name: ["Null comparison."]}
                )
            return TEXT_LOOKUPS[operator].format(column=quoted, value=params.add(column, str(value)))
        if operator not in LOOKUPS:
            raise InvalidInput(f"{lookup}: unknown lookup {operator!r}", errors={name: ["Bad lookup."]})
        if value is None:
            raise InvalidInput(f"{lookup}: use __isnull to match NULL", errors={name: ["Null comparison."]})
        coerced = self._coerce(column, name, value)
        return f"{quoted} {LOOKUPS[operator]} {params.add(column, coerced)}"

    def _part_condition(self, lookup: str, name: str, value: Any, params: _Params) -> str:
        column = self._column(name)
        if not isinstance(value, Part) or column.field_type != "STRING" or column.mode == REPEATED:
            raise InvalidInput(
                f"{lookup}: a part is a Part of a STRING column", errors={name: ["Bad lookup."]}
            )
        of, index = params.add_int(value.of), params.add_int(value.index)
        # MOD takes the sign of the fingerprint: adding `of` once more gives 0..of-1 for every value.
        return f"MOD(MOD(FARM_FINGERPRINT({quote_column(column.name)}), {of}) + {of}, {of}) = {index}"

    def _assignment(self, column: Column, value: Any, params: _Params) -> str:
        if isinstance(value, Add):
            if column.field_type not in {"INT64", "FLOAT64", "NUMERIC"}:
                raise InvalidInput(
                    f"{column.name}: only numbers can be incremented", errors={column.name: ["Not a number."]}
                )
            return f"{quote_column(column.name)} + {params.add(column, value.amount)}"
        if isinstance(value, Now):
            if column.field_type != "TIMESTAMP":
                raise InvalidInput(
                    f"{column.name}: Now() needs a TIMESTAMP column",
                    errors={column.name: ["Not a timestamp."]},
                )
            return "CURRENT_TIMESTAMP()"
        model_field = self.model._meta.get_field(column.name)
        try:
            cleaned = model_field.clean(value, None)
        except ValidationError as exc:
            raise InvalidInput(
                f"{column.name}: {'; '.join(exc.messages)}", errors={column.name: exc.messages}
            ) from None
        return params.add(column, cleaned)

    def _coerce(self, column: Column, name: str, value: Any) -> Any:
        try:
            return self.model._meta.get_field(name).to_python(value)
        except ValidationError as exc:
            raise InvalidInput(f"{name}: {'; '.join(exc.messages)}", errors={name: exc.messages}) from None

    def _order_by(self, order_by: Sequence[str]) -> str:
        terms = []
        names = set()
        for term in order_by:
            descending = term.startswith("-")
            column = self._column(term.lstrip("-"))
            names.add(column.name)
            terms.append(f"{quote_column(column.name)}{' DESC' if descending else ''}")
        if self.definition.key not in names:
            # The key breaks ties, so LIMIT/OFFSET pages never repeat or skip a row.
            terms.append(quote_column(self.definition.key))
        return " ORDER BY " + ", ".join(terms)

    @staticmethod
    def _check_limit(limit: int | None) -> int:
        limit = MAX_LIMIT if limit is None else limit
        if not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
            raise InvalidInput(
                f"limit must be between 0 and {MAX_LIMIT}", errors={"limit": ["Out of range."]}
            )
        return limit

    @staticmethod
    def _check_offset(offset: int) -> int:
        if not isinstance(offset, int) or offset < 0:
            raise InvalidInput("offset must be 0 or more", errors={"offset": ["Out of range."]})
        return offset

    # --- model conversion -------------------------------------------------------------------------
    def _validate(self, obj: M) -> None:
        if not isinstance(obj, self.model):
            raise TypeError(f"expected {self.model.__name__}, got {type(obj).__name__}")
        try:
            # Field validation happens here and not only in BigQuery: not every implementation
            # enforces REQUIRED, and a clear per-field error beats a SQL error.
            obj.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            raise InvalidInput(
                f"invalid {self.model.__name__}: {exc.message_dict}", errors=exc.message_dict
            ) from None

    def _value(self, obj: M, column: Column) -> Any:
        return getattr(obj, self.model._meta.get_field(column.name).attname)

    def _to_model(self, row: Mapping[str, Any]) -> M:
        values = {}
        for column in self.definition.columns:
            value = row.get(column.name)
            if column.mode == REPEATED and value is None:
                value = []
            values[self.model._meta.get_field(column.name).attname] = value
        return self.model(**values)
