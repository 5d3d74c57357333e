"""What a BigQuery admin list's query string means: filters, search, ordering and page, checked and turned
into one repository query (`ListQuery`); a parameter the list cannot honour is a `BadQuery` (a 400).

Django admin's spelling is kept (`?q=text`, `?o=2.-1`, `?p=3`, `?status__exact=x`,
`?created_at__gte=2026-03-01`), so its templates and habits carry over. Generic: the table's own
declarations (list_display, list_filter, exact_filter_fields, filter_choices, search_fields, ordering)
say what is allowed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.http import QueryDict
from django.utils import timezone
from django.utils.text import capfirst

SEARCH_VAR = "q"
ORDER_VAR = "o"
PAGE_VAR = "p"
# The list's query, carried by a row's link to its detail page (Django's admin does the same).
FILTERS_VAR = "_changelist_filters"


class BadQuery(Exception):
    """A query-string parameter the list cannot honour; shown to the user with a 400."""


@dataclass(frozen=True)
class ListQuery:
    """A list's query string, checked: what to ask the repository for, and the sort the headers show."""

    filters: dict[str, Any]
    term: str
    sort: list[tuple[int, bool]]
    order_by: list[str]
    page_number: int


class ListQueryMixin:
    """Reads a list's query string by the declarations of the BigQueryModelAdmin it is mixed into."""

    def _field(self, name: str) -> models.Field[Any, Any] | None:
        try:
            found = self.opts.get_field(name)
        except FieldDoesNotExist:
            return None
        return found if isinstance(found, models.Field) and found.concrete else None

    def _filter_kind(self, name: str) -> str:
        model_field = self._field(name)
        if name in self.exact_filter_fields or model_field is None:
            return "text"
        if isinstance(model_field, models.BooleanField) or model_field.choices or name in self.filter_choices:
            return "choices"
        if isinstance(model_field, models.DateField):  # DateTimeField too
            return "date_range"
        return "text"

    def _filter_names(self) -> list[str]:
        names = [name for name in self.list_filter if isinstance(name, str)]
        return names + [name for name in self.exact_filter_fields if name not in names]

    def _filter_params(self, name: str) -> list[str]:
        kind = self._filter_kind(name)
        if kind == "date_range":
            return [f"{name}__gte", f"{name}__lte"]
        if kind == "choices":
            return [f"{name}__exact", f"{name}__isnull"]
        return [f"{name}__exact"]

    def _sortable(self, name: str) -> str | None:
        """The field to order by for a list_display entry, or None when it cannot be sorted."""
        model_field = self._field(name)
        if model_field is None:
            attr = getattr(self, name, None) or getattr(self.model, name, None)
            name = getattr(attr, "admin_order_field", None) or ""
            model_field = self._field(name.lstrip("-")) if name else None
        if model_field is None or model_field.name in self.hidden_field_names():
            return None
        if isinstance(model_field, models.JSONField | models.BinaryField):  # RepeatedStringField too
            return None
        return model_field.name

    def _canonical_query(self, params: QueryDict) -> QueryDict | None:
        """`?tenant_id=x` as Django's admin takes it, spelled `?tenant_id__exact=x`; None if already so."""
        aliases = [
            name
            for name in self._filter_names()
            if name in params
            and name != self.repository_parameter
            and f"{name}__exact" in self._filter_params(name)
        ]
        if not aliases:
            return None
        canonical = params.copy()
        for name in aliases:
            value = canonical.pop(name)[-1]
            canonical.setdefault(f"{name}__exact", value)
        return canonical

    def _parse_query(self, params: QueryDict) -> ListQuery:
        allowed = {SEARCH_VAR, ORDER_VAR, PAGE_VAR}
        if self.repository_parameter:
            allowed.add(self.repository_parameter)
        for name in self._filter_names():
            allowed.update(self._filter_params(name))
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise BadQuery(f"Unknown filter or parameter: {', '.join(unknown)}.")
        page_text = params.get(PAGE_VAR, "1") or "1"
        if not page_text.isdigit() or int(page_text) < 1 or len(page_text) > 9:
            raise BadQuery(f"Page must be a whole number from 1 (got {page_text!r}).")
        filters: dict[str, Any] = {}
        for name in self._filter_names():
            filters.update(self._parse_filter(name, params))
        term = (params.get(SEARCH_VAR) or "").strip()
        if term and not self.search_fields:
            raise BadQuery("This list has no search.")
        if len(term) > 200:
            raise BadQuery("Search for at most 200 characters.")
        sort = self._parse_ordering(params.get(ORDER_VAR))
        return ListQuery(
            filters=filters, term=term, sort=sort, order_by=self._order_by(sort), page_number=int(page_text)
        )

    def _parse_filter(self, name: str, params: QueryDict) -> dict[str, Any]:
        model_field = self._field(name)
        title = capfirst(model_field.verbose_name) if model_field is not None else name
        if model_field is None:
            return {}
        kind = self._filter_kind(name)
        found: dict[str, Any] = {}
        exact = params.get(f"{name}__exact")
        if exact is not None and exact.strip() != "":
            value = self._to_python(model_field, exact.strip(), title)
            choices = self._choices(name)
            allowed = {self._to_python(model_field, str(v), title) for v, _ in choices}
            if kind == "choices" and choices and value not in allowed:
                raise BadQuery(f"{title}: {exact!r} is not one of the choices.")
            found[f"{name}__exact"] = value
        isnull = params.get(f"{name}__isnull")
        if isnull is not None and kind == "choices":
            if isnull not in {"True", "False", "1", "0"}:
                raise BadQuery(f"{title}: 'empty' must be True or False.")
            found[f"{name}__isnull"] = isnull in {"True", "1"}
        if kind == "date_range":
            for suffix in ("gte", "lte"):
                text = (params.get(f"{name}__{suffix}") or "").strip()
                if text:
                    lookup, value = self._date_bound(model_field, text, suffix, title)
                    found[f"{name}__{lookup}"] = value
        return found

    @staticmethod
    def _to_python(model_field: models.Field[Any, Any], text: str, title: str) -> Any:
        try:
            return model_field.to_python(text)
        except ValidationError as exc:
            raise BadQuery(f"{title}: {' '.join(exc.messages)}") from None

    @staticmethod
    def _date_bound(
        model_field: models.Field[Any, Any], text: str, suffix: str, title: str
    ) -> tuple[str, Any]:
        """A date-range bound: a date, or for timestamps a date (whole day) or an ISO date-time."""
        try:
            if not isinstance(model_field, models.DateTimeField):
                return suffix, datetime.date.fromisoformat(text)
            if len(text) == 10:
                day = datetime.date.fromisoformat(text)
                if suffix == "lte":
                    # "To 2026-03-01" includes that whole day.
                    return "lt", _start_of_day(day + datetime.timedelta(days=1))
                return suffix, _start_of_day(day)
            moment = datetime.datetime.fromisoformat(text)
            if timezone.is_naive(moment):
                moment = timezone.make_aware(moment, timezone.get_current_timezone())
            # In UTC here, so an instant past year 9999 or before year 1 is refused now, not in the client.
            return suffix, moment.astimezone(datetime.UTC)
        except (ValueError, OverflowError):
            raise BadQuery(f"{title}: {text!r} is not a date (YYYY-MM-DD).") from None

    def _parse_ordering(self, text: str | None) -> list[tuple[int, bool]]:
        """`o=2.-1`: list_display indexes, most significant first, `-` for descending (as Django's admin)."""
        if not text:
            return self._default_sort()
        sort: list[tuple[int, bool]] = []
        for part in text.split("."):
            descending = part.startswith("-")
            digits = part[1:] if descending else part
            if not digits.isdigit() or int(digits) >= len(self.list_display):
                raise BadQuery(f"Cannot sort by {part!r}: use the column headers.")
            index = int(digits)
            if self._sortable(self.list_display[index]) is None:
                raise BadQuery(f"Cannot sort by {self.list_display[index]!r}.")
            if index not in {i for i, _ in sort}:
                sort.append((index, descending))
        return sort

    def _default_sort(self) -> list[tuple[int, bool]]:
        """The declared ordering, as list_display indexes where the columns are shown."""
        columns = {self._sortable(name): i for i, name in enumerate(self.list_display)}
        sort = []
        for term in self.get_ordering_terms():
            index = columns.get(term.lstrip("-"))
            if index is None:
                break  # a hidden sort column: the arrows would lie about the order from here on
            sort.append((index, term.startswith("-")))
        return sort

    def get_ordering_terms(self) -> list[str]:
        """The default order: `ordering`, else the primary key, newest first as Django does."""
        return list(self.ordering or [f"-{self.opts.pk.name}"])

    def _order_by(self, sort: list[tuple[int, bool]]) -> list[str]:
        if not sort or sort == self._default_sort():
            return self.get_ordering_terms()
        terms = [f"{'-' if desc else ''}{self._sortable(self.list_display[i])}" for i, desc in sort]
        # Columns the user did not choose keep the declared order as tie-breakers.
        chosen = {term.lstrip("-") for term in terms}
        return terms + [t for t in self.get_ordering_terms() if t.lstrip("-") not in chosen]

    def _choices(self, name: str) -> list[tuple[Any, str]]:
        if name in self.filter_choices:
            return list(self.filter_choices[name])
        model_field = self._field(name)
        if isinstance(model_field, models.BooleanField):
            return [("1", "Yes"), ("0", "No")]
        return [(value, str(label)) for value, label in (model_field.flatchoices if model_field else [])]


def _start_of_day(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(
        datetime.datetime.combine(day, datetime.time.min), timezone.get_current_timezone()
    )
