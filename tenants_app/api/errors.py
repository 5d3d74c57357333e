"""The API's one error handler: every failure becomes `{"error": {code, message, fields}}`."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler

from bigquery_backend import exceptions as bq
from tenants_app.kms import KmsUnavailable
from tenants_app.metrics import api_error_recorded
from tenants_app.services.errors import ServiceError

logger = logging.getLogger(__name__)

# Backend errors that reach a view unhandled by its service; the message is ours, never BigQuery's
# raw text, which can quote SQL and parameter values.
_BACKEND_ERRORS: tuple[tuple[type[Exception], int, str, str], ...] = (
    (bq.InvalidInput, 400, "validation_failed", "The request was refused as invalid."),
    (bq.NotFound, 404, "not_found", "Not found."),
    (bq.Conflict, 409, "conflict", "A concurrent change got there first; retry the request."),
    (
        # Before BackendUnavailable, its base: BigQuery kept refusing a statement it never ran.
        bq.Busy,
        503,
        "unavailable",
        "BigQuery is busy with other changes to the same data; send the same request again later.",
    ),
    (
        bq.BackendUnavailable,
        503,
        "unavailable",
        "BigQuery is unavailable; send the same request again later.",
    ),
    (
        KmsUnavailable,
        503,
        "unavailable",
        "The key management service is unavailable; send the same request again later.",
    ),
)


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """`{"error": {code, message, fields?}}`: the one shape of every API failure."""
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def error_response(status: int, code: str, message: str, fields: dict[str, Any] | None = None) -> Response:
    """The error body every API failure uses."""
    response = Response(error_body(code, message, fields), status=status)
    if status == 503:
        # Outages here are short (a restart, a failover): tell clients when to come back.
        response["Retry-After"] = "5"
    return response


def _add_retry_details(response: Response, exc: ServiceError) -> None:
    """A 429 (quota or rate limit) says when to come back, which limit was hit and the figures."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is None:
        return
    response["Retry-After"] = str(max(1, int(retry_after)))
    body = response.data["error"]
    body["retry_after"] = max(1, int(retry_after))
    for name in ("limit", "window", "figures"):
        value = getattr(exc, name, None)
        if value is not None:
            body[name] = value


def _add_busy_hint(response: Response, exc: BaseException) -> None:
    """A 503 from BigQuery's refusals (bq.Busy, raised as such or under a service's ServiceUnavailable)
    says when to come back: the gateway's hint, not the outage default."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, bq.Busy):
            response["Retry-After"] = str(max(1, int(seen.retry_after)))
            return
        seen = seen.__cause__ or seen.__context__


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map service, backend and DRF exceptions to one error shape, in JSON; never a 500 for bad input."""
    api_error_recorded(exc=exc)
    response = _error_for(exc, context)
    request = context.get("request")
    if response is not None and request is not None:
        # A view that renders HTML or YAML (Swagger UI, the schema) still fails in JSON: DRF renders
        # the response with the request's renderer, so that is the one to set.
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
    return response


def _error_for(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        response = error_response(exc.status, exc.code, exc.message, exc.errors or None)
        _add_retry_details(response, exc)
        if exc.status == 503:
            _add_busy_hint(response, exc)
        return response
    if isinstance(exc, bq.InvalidInput) and exc.errors:
        return error_response(400, "validation_failed", "Some fields are invalid.", exc.errors)
    for error_class, status, code, message in _BACKEND_ERRORS:
        if isinstance(exc, error_class):
            logger.warning("api request failed: %s (%s)", code, type(exc).__name__)
            response = error_response(status, code, message)
            _add_busy_hint(response, exc)
            return response
    if isinstance(exc, RequestDataTooBig):
        # Django's own body limit (DATA_UPLOAD_MAX_MEMORY_SIZE), met while DRF reads the body.
        return error_response(413, "request_too_large", "The request body is too large.")
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return error_response(400, "validation_failed", "The request has too many form fields or files.")
    if isinstance(exc, drf_exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return error_response(400, "validation_failed", "Some fields are invalid.", fields)
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, drf_exceptions.APIException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        response.data = {"error": {"code": exc.default_code, "message": detail}}
        if response.status_code == 503:
            response["Retry-After"] = "5"
    return response


# --- Django's own error pages (convergence/urls.py handler400/403/404/500) ----------------------------
# What no API view answers (an unknown path, a crash outside DRF's handler) reaches Django's error
# handlers: under /api/ they answer in the API's envelope, as JSON; the portal keeps its HTML pages.
API_PATH_PREFIX = "/api/"


def is_api_path(request: HttpRequest) -> bool:
    """Whether the request is for the API (`/api/...`), whose clients read JSON, never HTML."""
    path = request.path_info
    return path == API_PATH_PREFIX.rstrip("/") or path.startswith(API_PATH_PREFIX)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return JsonResponse(error_body("bad_request", "The request was refused as malformed."), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return JsonResponse(error_body("permission_denied", "Not allowed."), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        # Never echo the path: it is the caller's text, and may carry what it should not.
        return JsonResponse(error_body("not_found", "No API endpoint at this path."), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_path(request):
        # The exception is in the ERROR log (django.request); the client gets no detail of it.
        return JsonResponse(error_body("server_error", "A server error occurred."), status=500)
    return defaults.server_error(request)
