"""Request middleware: a request id on every request, and where audited changes come from."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from tenants_app.services.audit import audit_context

# A caller's own id is kept only if it is short and plain, so it is safe in logs and the audit log.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
PORTAL_PREFIX = "/admin/"


class RequestContextMiddleware:
    """Tag each request with an id (X-Request-ID) and an audit source: portal for /admin/, else api."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get("X-Request-ID", "")
        request_id = offered if REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        source = "portal" if request.path.startswith(PORTAL_PREFIX) else "api"
        with audit_context(source=source, request_id=request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
