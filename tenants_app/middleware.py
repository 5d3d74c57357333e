"""Request middleware: a request id on every request, log context, one access line, and the audit source."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject, empty

from convergence.log_config import redact_secrets
from tenants_app.log_context import bind_log_context, current_log_context, log_context
from tenants_app.services.actors import staff_actor
from tenants_app.services.audit import audit_context

# A caller's own id is kept only if it is short and plain, so it is safe in logs and the audit log.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
PORTAL_PREFIX = "/admin/"
# Load balancers poll these every few seconds: their access lines go out at DEBUG, not INFO.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
MAX_LOGGED_PATH = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

access_logger = logging.getLogger("convergence.access")


class RequestLogMiddleware:
    """Outermost: the request id (X-Request-ID), the log context of all the request does, its access line.

    First in MIDDLEWARE, so the other middlewares' lines (a session saved after the view, a 413 for an
    oversized body) carry the request id too, and every response gets the header.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get("X-Request-ID", "")
        request_id = offered if _acceptable_request_id(offered) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        started = time.monotonic()
        status = 500  # what the client gets if the view raises past Django's own handling
        with log_context(request_id=request_id):
            try:
                response = self.get_response(request)
                status = response.status_code
            finally:
                _log_access(request, status=status, duration=time.monotonic() - started)
                # Django logs a 4xx or 5xx (`django.request`) after every middleware has returned: that
                # line finds the request's context here.
                request.log_context = current_log_context()  # type: ignore[attr-defined]
        response["X-Request-ID"] = request_id
        return response


class RequestContextMiddleware:
    """Where audited changes come from (portal for /admin/, else api), and the URL's tenant for the logs.

    Last in MIDDLEWARE, where URL arguments are known (process_view). Without RequestLogMiddleware in
    front it does that one's work too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if getattr(request, "request_id", None) is None:
            return RequestLogMiddleware(self._audited)(request)
        return self._audited(request)

    def _audited(self, request: HttpRequest) -> HttpResponse:
        source = "portal" if request.path.startswith(PORTAL_PREFIX) else "api"
        with audit_context(source=source, request_id=request.request_id):  # type: ignore[attr-defined]
            return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> None:
        """Staff routes and portal pages name their tenant in the URL: log lines carry it from here on."""
        tenant_id = view_kwargs.get("tenant_id")
        if isinstance(tenant_id, str):
            bind_log_context(tenant_id=tenant_id)
        if request.path.startswith(PORTAL_PREFIX):
            # The admin site loads the session user for its login check right after this anyway.
            bind_log_context(actor=_actor_of(request, load=True))


def _acceptable_request_id(offered: str) -> bool:
    # A key pasted into the wrong header would otherwise be echoed and kept in the audit log.
    return bool(REQUEST_ID.fullmatch(offered)) and redact_secrets(offered) == offered


def _log_access(request: HttpRequest, *, status: int, duration: float) -> None:
    actor = _actor_of(request)
    if actor:
        bind_log_context(actor=actor)
    path = loggable_path(request)
    duration_ms = round(duration * 1000, 1)
    level = logging.DEBUG if request.path in PROBE_PATHS else logging.INFO
    access_logger.log(
        level,
        "%s %s %s %.1fms",
        request.method,
        path,
        status,
        duration_ms,
        extra={"method": request.method, "path": path, "status": status, "duration_ms": duration_ms},
    )


def loggable_path(request: HttpRequest) -> str:
    """The path and its query parameter names (`/x?page&token`), never their values (tokens hide there)."""
    path = _CONTROL.sub("?", request.path)[:MAX_LOGGED_PATH]
    names = list(dict.fromkeys(request.GET.keys()))
    if names:
        query = "&".join(_CONTROL.sub("?", name)[:50] for name in names[:20])
        path = f"{path}?{query}"
    return path


def _actor_of(request: HttpRequest, *, load: bool = False) -> str | None:
    """`user:<name>` or `apikey:<id>` if authentication already ran (or `load`: the session's user)."""
    user = request.__dict__.get("user")
    if user is None or (not load and isinstance(user, SimpleLazyObject) and user._wrapped is empty):
        return None
    if not getattr(user, "is_authenticated", False):
        return None
    get_username = getattr(user, "get_username", None)
    return staff_actor(get_username()) if callable(get_username) else str(user)
