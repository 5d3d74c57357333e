"""Django's admin over BigQuery tables: list and detail pages that page in BigQuery, never in memory.

Each table's admin is a short declaration on `BigQueryModelAdmin` (`list_display`, `search_fields`,
`list_filter`, `ordering`, `list_per_page`, `exclude`) plus `get_repository(request)`. Lists cost two
jobs (rows with LIMIT/OFFSET, then COUNT) whatever the table size; a detail page costs one. Nothing is
added, changed or deleted here: changes go through services and their own forms.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import update_wrapper
from typing import Any, TypeVar

from django.contrib import admin
from django.contrib.admin.utils import (
    display_for_field,
    display_for_value,
    label_for_field,
    quote,
    unquote,
)
from django.core import checks
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.paginator import Paginator
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator, capfirst
from django.views.generic import RedirectView

from bigquery_backend.exceptions import BackendUnavailable, BigQueryError, InvalidInput, NotFound
from bigquery_backend.fields import RepeatedStringField
from bigquery_backend.repository import Page, Repository, Search

logger = logging.getLogger(__name__)

SEARCH_VAR = "q"
ORDER_VAR = "o"
PAGE_VAR = "p"
# The list's query, carried by a row's link to its detail page (Django's admin does the same).
FILTERS_VAR = "_changelist_filters"
# Longest text shown in a list cell; the detail page shows everything.
CELL_CHARS = 80

ObjectTool = tuple[str, str] | tuple[str, str, bool]
M = TypeVar("M", bound=models.Model)


class BadQuery(Exception):
    """A query-string parameter the list cannot honour; shown to the user with a 400."""


@dataclass(frozen=True)
class FilterChoice:
    display: str
    query_string: str
    selected: bool


@dataclass
class FilterSpec:
    """One block of the filter sidebar: links (choices, booleans), a text box, or a date range."""

    kind: str  # "choices", "text" or "date_range"
    name: str
    title: str
    choices: list[FilterChoice] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    hidden: list[tuple[str, str]] = field(default_factory=list)
    clear_url: str = ""

    @property
    def inputs(self) -> list[tuple[str, str]]:
        return list(zip(self.params, self.values, strict=True))


@dataclass(frozen=True)
class Header:
    text: str
    field_name: str
    sortable: bool
    sort_priority: int = 0
    ascending: bool = True
    url_primary: str = ""
    url_toggle: str = ""
    url_remove: str = ""

    @property
    def css_class(self) -> str:
        classes = [f"column-{self.field_name}"]
        if self.sortable:
            classes.append("sortable")
        if self.sort_priority:
            classes += ["sorted", "ascending" if self.ascending else "descending"]
        return " ".join(classes)


@dataclass(frozen=True)
class Cell:
    field_name: str
    html: str
    url: str | None
    is_link_column: bool


class _Counted:
    """Stands in for an object list whose size BigQuery counted, so Django's Paginator can do the maths."""

    def __init__(self, total: int) -> None:
        self.total = total

    def count(self) -> int:
        return self.total


class BigQueryModelAdmin(admin.ModelAdmin):
    """A read-only admin for one BigQuery-backed model, declared like a ModelAdmin."""

    # Columns never rendered, searched, filtered or sorted on (BinaryFields are added automatically).
    secret_fields: Sequence[str] = ()
    # Fields filtered by a text box holding an exact value (ids, states without choices).
    exact_filter_fields: Sequence[str] = ()
    # Links for fields whose values the model does not enumerate: {"source": [("api", "API"), ...]}.
    filter_choices: Mapping[str, Sequence[tuple[str, str]]] = {}
    # A query parameter that `get_repository` needs first (say, which tenant's dataset), or None.
    repository_parameter: str | None = None
    repository_parameter_label: str = ""
    repository_parameter_help: str = ""
    # Fields shown through a function of their own, on lists and detail pages alike (say, milliseconds
    # as a human duration); the function takes the stored value, None included, and returns text.
    value_formats: Mapping[str, Callable[[Any], str]] = {}
    list_per_page = 50

    change_list_template = "admin/bigquery/change_list.html"
    detail_template = "admin/bigquery/detail.html"
    choose_parameter_template = "admin/bigquery/choose_parameter.html"
    error_template = "admin/bigquery/error.html"

    # --- hooks --------------------------------------------------------------------------------------
    def get_repository(self, request: HttpRequest) -> Repository[Any] | None:
        """The repository to read, or None when `repository_parameter` must be asked for first."""
        raise NotImplementedError(f"{type(self).__name__} must define get_repository()")

    def get_row_url(self, obj: models.Model) -> str:
        """Where a row of the list links to: by default its read-only detail page."""
        info = (self.admin_site.name, self.opts.app_label, self.opts.model_name)
        return reverse("{}:{}_{}_change".format(*info), args=[quote(obj.pk)])

    def get_cell_url(self, request: HttpRequest, obj: models.Model, field_name: str) -> str | None:
        """A link for one value (say, a tenant id to its tenant), or None."""
        return None

    def get_detail_links(self, request: HttpRequest, obj: models.Model) -> list[tuple[str, str]]:
        """Related pages shown on a row's detail page, as (label, url)."""
        return []

    def annotate_page(self, request: HttpRequest, items: list[Any]) -> None:
        """Attach to a list page's rows what its list_display methods show from other tables: read
        for the whole page at once (one job), never once per row."""

    def get_object_tools(self, request: HttpRequest) -> list[ObjectTool]:
        """Buttons above the list, as (label, url) or (label, url, is_change); changes need permission."""
        return []

    def get_missing_table_message(self, request: HttpRequest) -> str:
        """What to say when the table (or its dataset) does not exist."""
        return f"The {self.opts.verbose_name_plural} table does not exist yet."

    def has_operation_permission(self, request: HttpRequest) -> bool:
        """Whether this user may use object tools marked as changes (read-only staff may not)."""
        return bool(request.user.is_active and request.user.is_staff)

    # --- permissions: everyone on staff reads, nobody writes through these pages -------------------------
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}

    # --- declarations -------------------------------------------------------------------------------
    def hidden_field_names(self) -> set[str]:
        """Secret fields and every BinaryField: never rendered, not even their length."""
        binary = {f.name for f in self.opts.concrete_fields if isinstance(f, models.BinaryField)}
        return binary | set(self.secret_fields)

    def get_detail_fields(self) -> list[models.Field[Any, Any]]:
        hidden = self.hidden_field_names() | set(self.exclude or ())
        return [f for f in self.opts.concrete_fields if f.name not in hidden]

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = list(super().check(**kwargs))
        hidden = self.hidden_field_names()
        names = {f.name for f in self.opts.concrete_fields}
        for name in self.secret_fields:
            if name not in names:
                errors.append(self._check_error(f"secret_fields names unknown field {name!r}", "E001"))
        declared = {
            "list_display": self.list_display,
            "search_fields": self.search_fields,
            "list_filter": self.list_filter,
            "exact_filter_fields": self.exact_filter_fields,
            "ordering": [name.lstrip("-") for name in self.ordering or ()],
        }
        for option, values in declared.items():
            for name in values:
                if isinstance(name, str) and name in hidden:
                    errors.append(self._check_error(f"{option} shows secret field {name!r}", "E002"))
        for name in [*self.search_fields, *self.exact_filter_fields]:
            if name not in names:
                errors.append(self._check_error(f"{name!r} is not a field of the table", "E003"))
        for name in self.search_fields:
            found = self._field(name)
            # Search is a substring match, which BigQuery only does on STRING columns.
            if found is not None and (not isinstance(found, models.CharField | models.TextField)):
                errors.append(self._check_error(f"search field {name!r} is not a text column", "E004"))
        for name in self._filter_names():
            found = self._field(name)
            if isinstance(found, models.JSONField | models.BinaryField):  # RepeatedStringField too
                errors.append(self._check_error(f"cannot filter on {name!r}: JSON, arrays and bytes", "E005"))
        return errors

    def _check_error(self, message: str, code: str) -> checks.Error:
        return checks.Error(f"{type(self).__name__}: {message}", obj=type(self), id=f"bigquery_admin.{code}")

    # --- URLs ---------------------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        def wrap(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
            def wrapper(*args: Any, **kwargs: Any) -> HttpResponse:
                return self.admin_site.admin_view(view)(*args, **kwargs)

            wrapper.model_admin = self  # type: ignore[attr-defined]
            return update_wrapper(wrapper, view)

        info = self.opts.app_label, self.opts.model_name
        change_name = f"{self.admin_site.name}:{info[0]}_{info[1]}_change"
        return [
            path("", wrap(self.changelist_view), name="{}_{}_changelist".format(*info)),
            path("<path:object_id>/change/", wrap(self.detail_view), name="{}_{}_change".format(*info)),
            path(
                "<path:object_id>/", wrap(RedirectView.as_view(pattern_name=change_name, query_string=True))
            ),
        ]

    # --- views --------------------------------------------------------------------------------------
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The list: search, filters, sortable columns and pagination, all done by BigQuery."""
        request.current_app = self.admin_site.name
        denied = self._deny(request)
        if denied is not None:
            return denied
        canonical = self._canonical_query(request.GET)
        if canonical is not None:
            return HttpResponseRedirect(f"{request.path}?{canonical.urlencode()}")
        repository, response = self._repository_or_prompt(request)
        if repository is None:
            return response  # type: ignore[return-value]
        try:
            query = self._parse_query(request.GET)
            page = repository.page(
                filters=query.filters,
                search=Search(tuple(self.search_fields), query.term) if query.term else None,
                order_by=query.order_by,
                limit=self.list_per_page,
                offset=(query.page_number - 1) * self.list_per_page,
                fields=self._readable_fields(),
            )
            self.annotate_page(request, page.items)
        except BadQuery as exc:
            return self._error(request, str(exc), status=400, title="Bad filter or page")
        except (BigQueryError, InvalidInput) as exc:
            return self._backend_error(request, exc)
        paginator = Paginator(_Counted(page.total), self.list_per_page)  # type: ignore[arg-type]
        if query.page_number > paginator.num_pages:
            return self._error(
                request,
                f"Page {query.page_number} does not exist: there are {paginator.num_pages}.",
                status=404,
                title="No such page",
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": capfirst(self.opts.verbose_name_plural),
            "subtitle": None,
            "cl": self._changelist_context(request, query, page, paginator),
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.change_list_template, context)

    def detail_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One row, read-only, every column but the secrets; one job."""
        request.current_app = self.admin_site.name
        denied = self._deny(request)
        if denied is not None:
            return denied
        repository, response = self._repository_or_prompt(request)
        if repository is None:
            return response  # type: ignore[return-value]
        key = unquote(object_id)
        try:
            found = repository.list(
                filters={self.opts.pk.name: self.opts.pk.to_python(key)},
                limit=1,
                fields=self._readable_fields(),
            )
            obj = self._scrubbed(found[0] if found else None)
        except ValidationError:
            obj = None
        except (BigQueryError, InvalidInput) as exc:
            return self._backend_error(request, exc)
        if obj is None:
            return self._error(
                request,
                f"{capfirst(self.opts.verbose_name)} {key!r} does not exist.",
                status=404,
                title="Not found",
            )
        rows = [
            {
                "label": capfirst(f.verbose_name),
                "name": f.name,
                "html": self._detail_value(obj, f),
                "url": self.get_cell_url(request, obj, f.name),
                "help_text": f.help_text,
            }
            for f in self.get_detail_fields()
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{capfirst(self.opts.verbose_name)} {obj.pk}",
            "subtitle": None,
            "object": obj,
            "rows": rows,
            "links": self.get_detail_links(request, obj),
            "changelist_url": self._changelist_url(request),
        }
        return TemplateResponse(request, self.detail_template, context)

    # --- view helpers -------------------------------------------------------------------------------
    def _deny(self, request: HttpRequest) -> HttpResponse | None:
        if request.method not in {"GET", "HEAD"}:
            # Read-only pages: every change goes through a service's own form.
            return HttpResponseNotAllowed(["GET", "HEAD"])
        if self.has_view_permission(request):
            return None
        return self._error(request, "You may not view this table.", status=403, title="Forbidden")

    def _repository_or_prompt(
        self, request: HttpRequest
    ) -> tuple[Repository[Any] | None, HttpResponse | None]:
        try:
            repository = self.get_repository(request)
        except InvalidInput as exc:
            return None, self._prompt(request, error=self._messages(exc), status=400)
        if repository is None:
            return None, self._prompt(request)
        return repository, None

    def _prompt(self, request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
        name = self.repository_parameter or ""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": capfirst(self.opts.verbose_name_plural),
            "subtitle": None,
            "parameter": name,
            "label": self.repository_parameter_label or name,
            "help_text": self.repository_parameter_help,
            "value": request.GET.get(name, ""),
            "error": error,
            "hidden": [(k, v) for k, v in request.GET.items() if k != name],
        }
        return TemplateResponse(request, self.choose_parameter_template, context, status=status)

    def _error(self, request: HttpRequest, message: str, *, status: int, title: str) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "subtitle": None,
            "message": message,
            "changelist_url": self._changelist_url(request),
        }
        return TemplateResponse(request, self.error_template, context, status=status)

    def _backend_error(self, request: HttpRequest, exc: Exception) -> HttpResponse:
        if isinstance(exc, NotFound):
            return self._error(
                request, self.get_missing_table_message(request), status=404, title="Not found"
            )
        if isinstance(exc, InvalidInput):
            # Our own validation names the field; BigQuery's own wording (SQL) is not for the page.
            if exc.errors:
                return self._error(request, self._messages(exc), status=400, title="Bad filter or page")
            logger.warning("BigQuery refused a %s list query: %s", self.opts.model_name, exc)
            return self._error(
                request, "BigQuery refused this query.", status=400, title="Bad filter or page"
            )
        logger.warning("BigQuery unavailable for %s: %s", self.opts.model_name, type(exc).__name__)
        message = "BigQuery is unavailable right now. Try again in a moment."
        if not isinstance(exc, BackendUnavailable):
            message = "BigQuery could not answer this page. Try again in a moment."
        response = self._error(request, message, status=503, title="BigQuery unavailable")
        response["Retry-After"] = "30"
        return response

    @staticmethod
    def _messages(exc: InvalidInput) -> str:
        if exc.errors:
            return "; ".join(f"{name}: {' '.join(reasons)}" for name, reasons in exc.errors.items())
        return str(exc)

    def _changelist_base(self) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_changelist")

    def _changelist_url(self, request: HttpRequest) -> str:
        """The list to go back to: the one the user came from, else the whole list (same parameter)."""
        url = self._changelist_base()
        saved = request.GET.get(FILTERS_VAR)
        if saved:
            # Re-encoded, and only ever appended to our own list's path: no open redirect.
            return f"{url}?{QueryDict(saved).urlencode()}"
        name = self.repository_parameter
        if name and request.GET.get(name):
            url += "?" + QueryDict.fromkeys([name], value=request.GET[name]).urlencode()
        return url

    # --- query parsing ------------------------------------------------------------------------------
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

    def _parse_query(self, params: QueryDict) -> _ListQuery:
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
        return _ListQuery(
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

    # --- rendering ----------------------------------------------------------------------------------
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

    def _changelist_context(
        self, request: HttpRequest, query: _ListQuery, page: Page[Any], paginator: Paginator
    ) -> dict[str, Any]:
        params = request.GET

        def url_with(**changes: str | None) -> str:
            new = params.copy()
            for key, value in changes.items():
                new.pop(key, None)
                if value is not None:
                    new[key] = value
            if PAGE_VAR not in changes:
                new.pop(PAGE_VAR, None)  # another filter or order starts again from page 1
            encoded = new.urlencode()
            return f"?{encoded}" if encoded else "?"

        filter_specs = [self._filter_spec(name, params, url_with) for name in self._filter_names()]
        # Exact-value boxes share one form and one button: a sidebar of single-box forms is a wall.
        text_specs = [spec for spec in filter_specs if spec.kind == "text"]
        text_params = {param for spec in text_specs for param in spec.params}
        text_filter = {
            "specs": text_specs,
            "hidden": [(k, v) for k, v in params.items() if k not in text_params and k != PAGE_VAR],
            "clear_url": url_with(**dict.fromkeys(text_params, None)),
            "active": any(params.get(param) for param in text_params),
        }
        filter_keys = {p for name in self._filter_names() for p in self._filter_params(name)}
        active = any(params.get(key) for key in filter_keys)
        headers = self._headers(query.sort, url_with)
        results = [self._row(request, self._scrubbed(obj)) for obj in page.items]
        number = query.page_number
        return {
            "opts": self.opts,
            "search_fields": self.search_fields,
            "search_var": SEARCH_VAR,
            "query": query.term,
            "search_hidden": [(k, v) for k, v in params.items() if k not in {SEARCH_VAR, PAGE_VAR}],
            "result_count": page.total,
            "headers": headers,
            "results": results,
            "num_sorted_fields": len(query.sort),
            "filter_specs": [spec for spec in filter_specs if spec.kind != "text"],
            "text_filter": text_filter if text_specs else None,
            "has_filters": bool(filter_specs),
            "has_active_filters": active,
            "clear_all_filters_qs": url_with(**dict.fromkeys(filter_keys | {SEARCH_VAR}, None)),
            "page_number": number,
            "num_pages": paginator.num_pages,
            "pagination_required": paginator.num_pages > 1,
            "page_range": [
                (item, url_with(**{PAGE_VAR: str(item)}) if isinstance(item, int) else "")
                for item in paginator.get_elided_page_range(number, on_each_side=3, on_ends=2)
            ],
            "object_tools": self._object_tools(request),
            "repository_parameter": self.repository_parameter,
            "repository_value": params.get(self.repository_parameter or "", ""),
            "repository_parameter_label": self.repository_parameter_label,
            "change_parameter_url": url_with(**dict.fromkeys([*params.keys()], None)),
        }

    def _object_tools(self, request: HttpRequest) -> list[tuple[str, str]]:
        tools = []
        allowed = self.has_operation_permission(request)
        for tool in self.get_object_tools(request):
            label, url = tool[0], tool[1]
            is_change = bool(tool[2]) if len(tool) > 2 else True  # type: ignore[misc]
            if allowed or not is_change:
                tools.append((label, url))
        return tools

    def _filter_spec(self, name: str, params: QueryDict, url_with: Callable[..., str]) -> FilterSpec:
        model_field = self._field(name)
        title = model_field.verbose_name if model_field is not None else name
        kind = self._filter_kind(name)
        own = self._filter_params(name)
        spec = FilterSpec(kind=kind, name=name, title=str(title), params=own)
        spec.values = [params.get(p, "") for p in own]
        spec.hidden = [(k, v) for k, v in params.items() if k not in own and k != PAGE_VAR]
        spec.clear_url = url_with(**dict.fromkeys(own, None))
        if kind == "choices":
            exact, isnull = params.get(f"{name}__exact"), params.get(f"{name}__isnull")
            spec.choices.append(FilterChoice("All", spec.clear_url, selected=not exact and isnull is None))
            for value, label in self._choices(name):
                spec.choices.append(
                    FilterChoice(
                        label,
                        url_with(**{f"{name}__exact": str(value), f"{name}__isnull": None}),
                        selected=exact == str(value),
                    )
                )
            if model_field is not None and model_field.null:
                spec.choices.append(
                    FilterChoice(
                        "Empty",
                        url_with(**{f"{name}__isnull": "True", f"{name}__exact": None}),
                        selected=isnull in {"True", "1"},
                    )
                )
        return spec

    def _headers(self, sort: list[tuple[int, bool]], url_with: Callable[..., str]) -> list[Header]:
        def encode(terms: list[tuple[int, bool]]) -> str:
            return ".".join(f"{'-' if desc else ''}{i}" for i, desc in terms)

        headers = []
        positions = {i: (priority, desc) for priority, (i, desc) in enumerate(sort, start=1)}
        for i, name in enumerate(self.list_display):
            text = label_for_field(name, self.model, self)
            if self._sortable(name) is None:
                headers.append(Header(text=text, field_name=name, sortable=False))
                continue
            priority, desc = positions.get(i, (0, False))
            others = [(j, d) for j, d in sort if j != i]
            # A click on a header makes it the primary sort, flipping it if it already was.
            primary = [(i, not desc if priority == 1 else False), *others]
            toggled = [(j, not d) if j == i else (j, d) for j, d in sort]
            headers.append(
                Header(
                    text=text,
                    field_name=name,
                    sortable=True,
                    sort_priority=priority,
                    ascending=not desc,
                    url_primary=url_with(**{ORDER_VAR: encode(primary)}),
                    url_toggle=url_with(**{ORDER_VAR: encode(toggled)}),
                    url_remove=url_with(**{ORDER_VAR: encode(others) or None}),
                )
            )
        return headers

    def _row(self, request: HttpRequest, obj: models.Model) -> list[Cell]:
        links = self.list_display_links or self.list_display[:1]
        cells = []
        for name in self.list_display:
            is_link = name in links
            url = self._preserving(request, self.get_row_url(obj)) if is_link else None
            url = url or self.get_cell_url(request, obj, name)
            cells.append(Cell(name, self._list_value(obj, name), url, is_link))
        return cells

    def _preserving(self, request: HttpRequest, url: str) -> str:
        """A link to our own detail page keeps the repository parameter, and the list's query for "back"."""
        path, _, query = url.partition("?")
        if not path.startswith(self._changelist_base()) or not request.GET:
            return url
        params = QueryDict(query, mutable=True)
        name = self.repository_parameter
        if name and name not in params and request.GET.get(name):
            params[name] = request.GET[name]
        params[FILTERS_VAR] = request.GET.urlencode()
        return f"{path}?{params.urlencode()}"

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
        if model_field.name in self.value_formats:
            return self.value_formats[model_field.name](value)
        if isinstance(model_field, RepeatedStringField):
            return ", ".join(value or []) or self.get_empty_value_display()
        if isinstance(model_field, models.JSONField) and value is not None:
            return Truncator(json.dumps(value, sort_keys=True, default=str)).chars(CELL_CHARS)
        shown = display_for_field(value, model_field, self.get_empty_value_display())
        if isinstance(shown, SafeString):
            return shown
        return Truncator(str(shown)).chars(CELL_CHARS)

    def _detail_value(self, obj: models.Model, model_field: models.Field[Any, Any]) -> str:
        value = getattr(obj, model_field.attname)
        if model_field.name in self.value_formats:
            return self.value_formats[model_field.name](value)
        if isinstance(model_field, RepeatedStringField):
            return ", ".join(value or []) or self.get_empty_value_display()
        if isinstance(model_field, models.JSONField) and value is not None:
            pretty = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, default=str)
            return format_html("<pre class='bigquery-json'>{}</pre>", pretty)
        return display_for_field(value, model_field, self.get_empty_value_display())


@dataclass(frozen=True)
class _ListQuery:
    filters: dict[str, Any]
    term: str
    sort: list[tuple[int, bool]]
    order_by: list[str]
    page_number: int


def _start_of_day(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(
        datetime.datetime.combine(day, datetime.time.min), timezone.get_current_timezone()
    )
