"""The envelope every API listing answers with, and its `limit`/`offset` parameters.

Every list endpoint answers `{"count", "limit", "offset", "results"}`: `count` is every matching row,
`results` the page. Most services page in BigQuery (a page and its total). The few listings they read
whole are paged here, so a client pages them all alike: a tenant's credentials (one per provider and
name), webhook endpoints (at most 10 active), usage days (bounded by MAX_USAGE_DAYS) and the template
catalogue (in code).
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar

from rest_framework import serializers
from rest_framework.response import Response

from bigquery_backend.repository import Page

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class PageFilterSerializer(serializers.Serializer):
    """`limit` and `offset`; a listing's filters extend it, so the schema documents both everywhere.

    A subclass sets `max_page_size` (its service's bound) and may set `default_page_size`.
    """

    max_page_size: ClassVar[int] = MAX_PAGE_SIZE
    default_page_size: ClassVar[int] = DEFAULT_PAGE_SIZE

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # Built here, not declared: the bounds are the subclass's, and the schema shows them.
        fields["limit"] = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=self.max_page_size,
            default=min(self.default_page_size, self.max_page_size),
            help_text="Rows per page.",
        )
        fields["offset"] = serializers.IntegerField(
            required=False, min_value=0, default=0, help_text="Rows to skip (of `count`)."
        )
        return fields

    def other_filters(self) -> dict[str, Any]:
        """The valid filters but `limit` and `offset`: for a service that reads its listing whole."""
        return {name: value for name, value in self.validated_data.items() if name not in ("limit", "offset")}

    def page_of(self, items: list[Any]) -> Page[Any]:
        """The asked-for page of a listing read whole."""
        limit, offset = self.validated_data["limit"], self.validated_data["offset"]
        return Page(items=items[offset : offset + limit], total=len(items), limit=limit, offset=offset)


@cache
def page_serializer(item: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The envelope of a page of `item`s (one class per item, so the schema names it once)."""
    name = item.__name__.removesuffix("Serializer").removesuffix("Output") + "PageSerializer"
    return type(
        name,
        (serializers.Serializer,),
        {
            "__qualname__": name,
            "__module__": item.__module__,
            "count": serializers.IntegerField(help_text="Every matching row, across all pages."),
            "limit": serializers.IntegerField(),
            "offset": serializers.IntegerField(),
            "results": item(many=True),
        },
    )


def page_body(page: Page[Any]) -> dict[str, Any]:
    """`count` (all matching rows), `limit`, `offset` and this page's `results`."""
    return {"count": page.total, "limit": page.limit, "offset": page.offset, "results": page.items}


def page_response(page: Page[Any], item: type[serializers.Serializer]) -> Response:
    """The answer of every list endpoint: `page` in the envelope, each row through `item`."""
    return Response(page_serializer(item)(page_body(page)).data)
