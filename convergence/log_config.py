"""Log lines to ship: plain or JSON (LOG_FORMAT), with request id, tenant id and actor, secrets masked.

- `ContextFilter` copies the request's context (tenants_app.log_context) onto each record.
- `RedactSecretsFilter` works out, once per record, the message (with its arguments), exception text and
  stack with secrets masked, and our formatters write those; the record stays as logged for other
  handlers. Masked: whatever `tenants_app.secrets.redact_secrets` finds (our API keys and admin tokens,
  PEM private-key blocks, Authorization / X-API-Key / Cookie header values, bearer tokens, provider and
  cloud keys, the values of secret-named fields such as `"secret_access_key": "..."` or `password=...`),
  SQL values, Django's template-context dumps. Services never log secrets; this is the second line of
  defence for what a library or a future change might print.
- `JsonFormatter` writes one JSON object per line: time (ISO 8601 UTC), level, logger, message,
  request_id, tenant_id, actor, and exception / stack when any. Other `extra=` fields are left out on
  purpose: google-auth and google-api-core put whole request and response bodies (KMS plaintext, base64)
  in `extra` at DEBUG. Only the access line's own fields (ACCESS_FIELDS) are added.

Nothing here imports Django models: settings configure logging before the apps are loaded.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tenants_app.log_context import FIELDS, current_log_context
from tenants_app.secrets import redact_secrets

LOG_FORMATS = ("plain", "json")
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(tenant_id)s] %(message)s"
# Fields of the middleware's access line (logger ACCESS_LOGGER), kept as JSON fields of their own.
ACCESS_LOGGER = "convergence.access"
ACCESS_FIELDS = ("method", "path", "status", "duration_ms")
# Loggers that write request or response bodies at DEBUG (KMS plaintext, base64): held at INFO even
# when LOG_LEVEL=DEBUG. tenants_app/kms.py raises them too when it builds a client; this covers the
# processes and the moments before that. django.template's DEBUG lines ("Exception while resolving
# variable") carry the whole template context, which holds a just-issued key on the page that shows it.
PAYLOAD_LOGGERS = (
    "google.cloud.kms_v1",
    "google.auth.transport.requests",
    "google.api_core.client_logging",
    "django.template",
)


class ContextFilter(logging.Filter):
    """Put request_id, tenant_id and actor on every record ("-" when unknown, for the plain format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = context_of(record)
        for name in FIELDS:
            if not getattr(record, name, None):
                setattr(record, name, context.get(name) or "-")
        return True


def context_of(record: logging.LogRecord) -> Mapping[str, str]:
    """The bound context; for a record about a finished request, the context that request ended with."""
    # Django logs a 4xx or 5xx (`django.request`, with the request in `extra`) after the middleware
    # has returned and its context has ended; the middleware leaves that context on the request.
    context = current_log_context()
    if context:
        return context
    request = getattr(record, "request", None)
    ended_with = getattr(request, "log_context", None)
    return ended_with if isinstance(ended_with, Mapping) else context


class RedactSecretsFilter(logging.Filter):
    """Work out the record's masked message (with its arguments), exception text and stack, once.

    The record itself is left as it is: our formatters write the masked copies, and other handlers
    (pytest's caplog, whatever an operator adds) still see what the code really logged, so a test can
    catch code that tries to log a secret even though these lines would never ship it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        masked_parts(record)
        return True


_MASKED = "_masked_parts"


def masked_parts(record: logging.LogRecord) -> tuple[str, str | None, str | None]:
    """The record's message, exception text and stack with secrets masked (computed once per record)."""
    parts = record.__dict__.get(_MASKED)
    if parts is None:
        try:
            parts = _mask(record)
        except Exception:
            # A line we cannot check is not shipped as it was; its level and logger still say something
            # happened. Raising here would break the code that logged.
            parts = ("[log line dropped: it could not be checked for secrets]", None, None)
        record.__dict__[_MASKED] = parts
    return parts


def _mask(record: logging.LogRecord) -> tuple[str, str | None, str | None]:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: keep the raw parts, masked, rather than drop the line
        message = f"{record.msg!s} {record.args!r}"
    if record.name.startswith("django.db.backends") and hasattr(record, "sql"):
        # Django logs each statement with its values filled in: password hashes, session data,
        # encrypted idempotent replays. Keep the statement's shape, not its values.
        message = _sql_without_values(record)
    exc_text = record.exc_text
    if record.exc_info:
        if record.name.startswith("django.template"):
            # Even if someone sets it to DEBUG: VariableDoesNotExist's text is a dump of the context.
            exc_text = f"{record.exc_info[0].__name__} (text not logged: it holds the template context)"
        elif not exc_text:
            exc_text = logging.Formatter().formatException(record.exc_info)
    stack = record.stack_info
    return (
        redact_secrets(message),
        redact_secrets(exc_text) if exc_text else None,
        redact_secrets(stack) if stack else None,
    )


# A quoted SQL literal as SQLite (X'..') and PostgreSQL (E'..', '\\x..'::bytea) render bound values.
_SQL_LITERAL = re.compile(r"(?:\b[xXeEbB])?'(?:[^']|'')*'")


def _sql_without_values(record: logging.LogRecord) -> str:
    sql = _SQL_LITERAL.sub("?", str(getattr(record, "sql", "")))
    duration = getattr(record, "duration", 0.0)
    return f"({duration:.3f}) {sql}; alias={getattr(record, 'alias', '')}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for a log shipper; fields in a fixed order, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        context = context_of(record)
        message, exc_text, stack = masked_parts(record)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if not value or value == "-":
                value = context.get(name)  # checked when it was bound (tenants_app.log_context)
            elif value != context.get(name):
                value = redact_secrets(str(value))  # given as `extra=`: not checked yet
            entry[name] = value or None
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                value = getattr(record, name)
                entry[name] = redact_secrets(value) if isinstance(value, str) else value
        if exc_text:
            entry["exception"] = exc_text
        if stack:
            entry["stack"] = self.formatStack(stack)
        return json.dumps(entry, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """The terminal format with `[request_id tenant_id]`, written from a masked copy of the record."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, style: str = "%") -> None:
        super().__init__(fmt or PLAIN_FORMAT, datefmt, style)  # type: ignore[arg-type]

    def format(self, record: logging.LogRecord) -> str:
        context = context_of(record)
        message, exc_text, stack = masked_parts(record)
        copy = logging.makeLogRecord(record.__dict__)
        copy.msg, copy.args, copy.exc_info, copy.exc_text, copy.stack_info = (
            message,
            None,
            None,
            exc_text,
            stack,
        )
        for name in FIELDS:
            value = getattr(record, name, None)
            if not value or value == "-":
                value = context.get(name)
            elif value != context.get(name):
                value = redact_secrets(str(value))
            setattr(copy, name, value or "-")
        return super().format(copy)


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {level!r}")
    return number


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The LOGGING dict for settings: one console handler in `log_format`, root at `level`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    level = level.upper()
    _level_number(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "convergence.log_config.ContextFilter"},
            "redact": {"()": "convergence.log_config.RedactSecretsFilter"},
        },
        "formatters": {
            "plain": {"()": "convergence.log_config.PlainFormatter"},
            "json": {"()": "convergence.log_config.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["context", "redact"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # google-auth (and google-api-core) switch off propagation of the whole `google` tree on their
            # first request unless that logger is configured: their warnings (BigQuery retries...) would
            # then bypass this handler for logging's last resort, plain, unmasked, without request ids.
            "google": {"level": level, "propagate": True},
            # Never below INFO, never more verbose than the root either.
            **{name: {"level": max(level, "INFO", key=_level_number)} for name in PAYLOAD_LOGGERS},
        },
    }
