"""The envelope every paged API listing answers with."""

from __future__ import annotations

from typing import Any

from bigquery_backend.repository import Page


def page_body(page: Page[Any]) -> dict[str, Any]:
    """`count` (all matching rows), `limit`, `offset` and this page's `results`."""
    return {"count": page.total, "limit": page.limit, "offset": page.offset, "results": page.items}
