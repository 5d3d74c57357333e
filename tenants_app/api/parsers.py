"""Request parsing hardened against inputs that make the standard parser raise instead of refuse.

Three limits, each answered with the API's error envelope instead of a 500 or Django's HTML page:
- a body larger than API_MAX_BODY_BYTES is a 413, refused from its Content-Length before it is read
  (ApiBodyLimitMiddleware; form and multipart bodies included, whose files would otherwise be spooled;
  the portal's limit there is DATA_UPLOAD_MAX_MEMORY_SIZE);
- JSON nested beyond what Python's parser can recurse into is a 400, not a RecursionError. No tighter
  cap here: each service limits its JSON fields (10 levels) and names the field, a better answer;
- a lone surrogate ("\\ud800") in any JSON string or key is a 400 naming where it is. JSON may carry
  one; no UTF-8 encoder accepts it, so BigQuery would refuse the statement after the service had
  started writing. CharFields refuse them too, JSONFields (payload, parameters, metadata) did not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.parsers import JSONParser

API_PREFIX = "/api/"


class RequestBodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"
    default_detail = "The request body is too large."


def body_too_large_message() -> str:
    return f"The request body is larger than {settings.API_MAX_BODY_BYTES} bytes."


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, with size, depth and lone surrogates answered as 4xx instead of a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        declared = _content_length(request.META) if request is not None else 0
        if declared > settings.API_MAX_BODY_BYTES:
            # Normally the middleware answered already; this holds wherever the parser is used alone.
            raise RequestBodyTooLarge(body_too_large_message())
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        surrogates = lone_surrogates(data)
        if surrogates:
            raise ValidationError(surrogates)
        return data


SURROGATE_MESSAGE = "Holds a lone surrogate (for example \\ud800), which is not Unicode text."
MAX_REPORTED = 20


def lone_surrogates(data: Any) -> dict[str, list[str]]:
    """Where parsed JSON holds lone surrogates, as error fields.

    Iterative, so a document at the parser's recursion limit costs no stack. A place is the top-level
    field name, then `.key` and `[index]` for what is inside it (for example `parameters.source[2]`);
    at most MAX_REPORTED places are named.
    """
    found: dict[str, list[str]] = {}
    stack: list[tuple[Any, str | None]] = [(data, None)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not _is_unicode(value) and len(found) < MAX_REPORTED:
                found[path or "non_field_errors"] = [SURROGATE_MESSAGE]
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _is_unicode(key):
                    # The key itself cannot be named: name the document that holds it.
                    found.setdefault(path or "non_field_errors", [SURROGATE_MESSAGE])
                    continue
                stack.append((item, key if path is None else f"{path}.{key}"))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                stack.append((item, f"{path or ''}[{index}]"))
    return found


def _is_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _content_length(meta: dict[str, Any]) -> int:
    try:
        return max(0, int(meta.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


class ApiBodyLimitMiddleware:
    """Refuse a request whose declared body is over the limit with a 413, before anything reads it.

    API: API_MAX_BODY_BYTES, answered with the error envelope, before authentication on purpose (an
    anonymous caller cannot make a worker buffer megabytes). Portal: DATA_UPLOAD_MAX_MEMORY_SIZE, which
    Django applies to form fields only; files in a multipart body would otherwise be spooled to disk
    by the CSRF check of any form, the login page's included, before anyone is authenticated.
    A body without Content-Length (chunked) is read by Django as empty, so the header is the bound.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = _content_length(request.META)
        if request.path.startswith(API_PREFIX):
            if declared > settings.API_MAX_BODY_BYTES:
                body = {
                    "error": {"code": RequestBodyTooLarge.default_code, "message": body_too_large_message()}
                }
                return JsonResponse(body, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        elif (
            settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None
            and declared > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        ):
            return HttpResponse(
                "Request body too large.\n",
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                content_type="text/plain",
            )
        return self.get_response(request)
