"""The list page of a BigQuery admin: column headers with their sort links, rows of cells, the filter
sidebar, pagination and object tools, built from a parsed `ListQuery` and one page of rows.

Every link keeps the rest of the query (a filter or a new order starts again from page 1), and a row's
link to its detail page carries the list's query so that "back" returns to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.admin.utils import label_for_field
from django.core.paginator import Paginator
from django.db import models
from django.http import HttpRequest, QueryDict

from bigquery_backend.admin_query import FILTERS_VAR, ORDER_VAR, PAGE_VAR, SEARCH_VAR, ListQuery
from bigquery_backend.repository import Page


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


class ChangelistMixin:
    """Builds the list page's context for the BigQueryModelAdmin it is mixed into."""

    def _changelist_context(
        self, request: HttpRequest, query: ListQuery, page: Page[Any], paginator: Paginator
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
