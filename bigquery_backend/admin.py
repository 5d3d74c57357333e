"""Django's admin over BigQuery tables: list and detail pages that page in BigQuery, never in memory.

Each table's admin is a short declaration on `BigQueryModelAdmin` (`list_display`, `search_fields`,
`list_filter`, `ordering`, `list_per_page`, `exclude`) plus `get_repository(request)`. Lists cost two
jobs (rows with LIMIT/OFFSET, then COUNT) whatever the table size; a detail page costs one. Nothing is
added, changed or deleted here: changes go through services and their own forms.

This module is the adapter to Django's ModelAdmin (declarations, hooks, permissions, checks, URLs and
views); what a list's query string means is admin_query.py, the list page admin_changelist.py, and how
values are shown (never the hidden ones) admin_values.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import update_wrapper
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core import checks
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.text import capfirst
from django.views.generic import RedirectView

from bigquery_backend.admin_changelist import ChangelistMixin
from bigquery_backend.admin_query import FILTERS_VAR, BadQuery, ListQueryMixin
from bigquery_backend.admin_values import ValueDisplayMixin
from bigquery_backend.exceptions import BackendUnavailable, BigQueryError, InvalidInput, NotFound
from bigquery_backend.repository import Repository, Search

logger = logging.getLogger(__name__)

ObjectTool = tuple[str, str] | tuple[str, str, bool]


class _Counted:
    """Stands in for an object list whose size BigQuery counted, so Django's Paginator can do the maths."""

    def __init__(self, total: int) -> None:
        self.total = total

    def count(self) -> int:
        return self.total


class BigQueryModelAdmin(ListQueryMixin, ChangelistMixin, ValueDisplayMixin, admin.ModelAdmin):
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
