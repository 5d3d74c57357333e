"""What every log line says about where it comes from: request id, tenant id and actor, per request.

The middleware opens a `log_context(request_id=...)` for each request and closes it after the
response, so nothing leaks into the next request a worker thread serves. Code that learns more
during the request (the tenant key's tenant, a staff URL's tenant id) calls `bind_log_context(...)`,
which lasts until that block ends. Commands wrap their `handle` with `command_log_context`.

No Django import here: logging is configured from settings, before the apps are loaded.
"""

from __future__ import annotations

import contextvars
import functools
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from tenants_app.secrets import find_secrets
from tenants_app.services.actors import system_actor

FIELDS = ("request_id", "tenant_id", "actor")
# Values come from URLs and headers: only short plain ones are kept, so a line cannot be forged
# (newlines) or carry a secret through a context field.
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9._:@+-]{1,128}$")

_EMPTY: Mapping[str, str] = {}
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("log_context", default=_EMPTY)

Handler = TypeVar("Handler", bound=Callable[..., Any])
Params = ParamSpec("Params")
Result = TypeVar("Result")


def _cleaned(fields: Mapping[str, str | None]) -> dict[str, str]:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log context fields: {sorted(unknown)}")
    return {
        name: value
        for name, value in fields.items()
        # A plain value can still be a secret (a key pasted as a tenant id in a URL): never bound, so
        # the formatters need not mask context fields on every line.
        if value and _PLAIN_VALUE.fullmatch(value) and not find_secrets(value)
    }


def bind_log_context(
    *, request_id: str | None = None, tenant_id: str | None = None, actor: str | None = None
) -> None:
    """Add fields to the current context until the enclosing `log_context` block ends."""
    added = _cleaned({"request_id": request_id, "tenant_id": tenant_id, "actor": actor})
    if added:
        _context.set({**_context.get(), **added})


@contextmanager
def log_context(
    *, request_id: str | None = None, tenant_id: str | None = None, actor: str | None = None
) -> Iterator[None]:
    """A fresh context for this block (a request, a command run); everything bound inside ends with it."""
    token = _context.set(_cleaned({"request_id": request_id, "tenant_id": tenant_id, "actor": actor}))
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> Mapping[str, str]:
    """The fields bound now (request_id, tenant_id, actor), only those that are known."""
    return _context.get()


def new_correlation_id(prefix: str = "") -> str:
    """A request id for work that has no request (a command run), so its lines can be grouped."""
    return f"{prefix}{uuid.uuid4().hex}"


def command_log_context(handle: Handler) -> Handler:
    """Decorate a command's `handle`: its lines carry actor `system:<command>` and one id per run."""

    @functools.wraps(handle)
    def wrapper(self: Any, *args: Any, **options: Any) -> Any:
        name = type(self).__module__.rsplit(".", 1)[-1]
        with log_context(actor=system_actor(name), request_id=new_correlation_id("cmd-")):
            return handle(self, *args, **options)

    return wrapper  # type: ignore[return-value]


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose tasks run in a copy of the submitter's context.

    A plain pool's threads start with an empty context: their lines (BigQuery calls, services) would
    lose the request id, tenant and actor, and changes they audit the request's source.
    """

    def submit(
        self, fn: Callable[Params, Result], /, *args: Params.args, **kwargs: Params.kwargs
    ) -> Future[Result]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)  # type: ignore[arg-type]
