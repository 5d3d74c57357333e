"""What every portal page shares: the role checks, rendering, the error pages, one-time form tokens
and answering a form: its service call, or the form again with its fixable errors shown inline.

Every page is wrapped in `site.admin_view` (login and active staff); operations also refuse
read-only staff with a 403, on GET and POST alike.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.cache import patch_cache_control
from django.utils.html import format_html
from django.utils.safestring import SafeString

from bigquery_backend import exceptions as bq
from tenants_app.api.permissions import is_read_only_staff
from tenants_app.kms import KmsUnavailable
from tenants_app.portal import forms as portal_forms
from tenants_app.services.actors import staff_actor
from tenants_app.services.api_keys import (
    IssuedApiKey,
)
from tenants_app.services.errors import DoesNotExist, ServiceError

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponse]
T = TypeVar("T")
F = TypeVar("F", bound=forms.Form)

# One-time tokens of the forms whose result shows a new key: a reload (a re-POST) of that result page
# finds its token spent and shows the tenant instead of a second key. Only tokens live in the session.
_TOKENS_SESSION_KEY = "portal_form_tokens"
_MAX_TOKENS = 20


# U+2068 FIRST STRONG ISOLATE ... U+2069 POP DIRECTIONAL ISOLATE: <bdi>'s isolation in plain text.
_FSI, _PDI = "\u2068", "\u2069"
_ISOLATE_OPENERS = frozenset("\u2066\u2067\u2068")  # LRI, RLI, FSI


def isolated_text(text: object) -> str:
    """User text isolated in plain text (FSI ... PDI), where markup is stripped (a tab title) or has no
    <bdi> (an SVG <title>): a stored bidi control cannot reorder the words around it.

    The text's own isolates are balanced too: a stray PDI in it would otherwise close ours early and let
    an override after it run on past the text, and one left open would take in what follows.
    """
    value = str(text)
    depth = stray = 0
    for character in value:
        if character in _ISOLATE_OPENERS:
            depth += 1
        elif character == _PDI:
            depth, stray = (depth - 1, stray) if depth else (0, stray + 1)
    return _FSI * (1 + stray) + value + _PDI * (1 + depth)


def isolated(text: object) -> SafeString:
    """User text inside a heading or a message, isolated with <bdi> (escaped), and inside it with
    `isolated_text`, so that the isolation survives `|striptags` in a tab title. Titles built with it go
    through `format_html`."""
    return format_html("<bdi>{}</bdi>", isolated_text(text))


def actor_of(request: HttpRequest) -> str:
    """The audit actor of a staff request, as the API builds it."""
    return staff_actor(request.user.get_username())


def can_change(request: HttpRequest) -> bool:
    """Superusers and staff outside the read-only group may run operations."""
    return not is_read_only_staff(request.user)


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    site = admin.site
    return {**site.each_context(request), "can_change": can_change(request), **extra}


def render_page(request: HttpRequest, template: str, *, status: int = 200, **extra: Any) -> TemplateResponse:
    return TemplateResponse(request, template, _context(request, **extra), status=status)


def detail_url(tenant_id: str) -> str:
    return reverse("admin:portal-tenant-detail", args=[tenant_id])


def optional_url(name: str, *args: str) -> str | None:
    """A page another part of the portal provides, if it is installed."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def no_store(response: HttpResponse) -> HttpResponse:
    """Pages that show a secret are never cached, by the browser or anything between."""
    patch_cache_control(response, no_store=True, no_cache=True, must_revalidate=True, private=True, max_age=0)
    response["Pragma"] = "no-cache"
    return response


def issue_token(request: HttpRequest) -> str:
    token = secrets.token_urlsafe(16)
    tokens = [*request.session.get(_TOKENS_SESSION_KEY, []), token][-_MAX_TOKENS:]
    request.session[_TOKENS_SESSION_KEY] = tokens
    return token


def spend_token(request: HttpRequest, token: str) -> bool:
    """True once per issued token."""
    tokens = request.session.get(_TOKENS_SESSION_KEY, [])
    if not token or token not in tokens:
        return False
    tokens.remove(token)
    request.session[_TOKENS_SESSION_KEY] = tokens
    return True


def _is_inline(error: ServiceError) -> bool:
    """Errors the user can fix on the form; outages and missing objects get their own pages."""
    return error.status < 500 and not isinstance(error, DoesNotExist)


def bound_form(
    request: HttpRequest, form_class: type[F], *, initial: dict[str, Any] | None = None, **kwargs: Any
) -> F:
    """The form bound to a POST's data and files; on any other method, unbound, showing `initial`."""
    if request.method == "POST":
        return form_class(request.POST, request.FILES, **kwargs)
    if initial is None:
        return form_class(**kwargs)
    return form_class(initial=initial, **kwargs)


def submit_form(
    request: HttpRequest,
    form: forms.Form,
    *,
    action: Callable[[], T],
    on_success: Callable[[T], HttpResponse],
    show_form: Callable[[], HttpResponse],
    before: Callable[[], HttpResponse | None] | None = None,
) -> HttpResponse:
    """Answer a form: on a valid POST, run the service call (`action`) and answer with `on_success`.

    `before` may answer a valid POST instead (a spent one-time token, nothing to change). Otherwise, and
    when the action refuses with errors the user can fix (put on the form), the form shows again.
    """
    if request.method == "POST" and form.is_valid():
        answered = before() if before is not None else None
        if answered is not None:
            return answered
        try:
            result = action()
        except ServiceError as exc:
            if not _is_inline(exc):
                raise
            portal_forms.add_service_errors(form, exc)
        else:
            return on_success(result)
    return show_form()


def resubmitted(request: HttpRequest, *, message: str, url: str) -> HttpResponse | None:
    """Spend a form's one-time token; when it was spent already (a reload, a second click), go to `url`
    with `message` instead: the key the first submit showed is not shown, nor issued, again."""
    if spend_token(request, request.POST.get("token", "")):
        return None
    messages.warning(request, message)
    return HttpResponseRedirect(url)


def back_to_tenant(request: HttpRequest, tenant_id: str, message: str) -> HttpResponse:
    """Flash a success message and go back to the tenant's page."""
    messages.success(request, message)
    return HttpResponseRedirect(detail_url(tenant_id))


def portal_page(view: View) -> View:
    """A missing tenant gets a 404 page, a refusal its status and reason, an outage a 503: no traceback."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        tenant_id = kwargs.get("tenant_id")
        try:
            return view(request, *args, **kwargs)
        except DoesNotExist as exc:
            return render_page(
                request,
                "portal/tenant_not_found.html",
                status=404,
                title="Not found",
                tenant_id=tenant_id,
                hide_tenant_crumb=True,
                message=exc.message,
            )
        except ServiceError as exc:
            if exc.status >= 500:
                return _unavailable(request, exc)
            # A refusal outside any form (the forms show theirs inline): its page says why.
            return render_page(
                request,
                "portal/tenant_not_found.html",
                status=exc.status,
                title="Not possible",
                tenant_id=tenant_id,
                message=exc.message,
            )
        except bq.InvalidInput:
            return render_page(
                request,
                "portal/tenant_not_found.html",
                status=400,
                title="Not possible",
                tenant_id=tenant_id,
                message="the request was refused as invalid",
            )
        except (bq.BackendUnavailable, bq.NotFound, KmsUnavailable) as exc:
            return _unavailable(request, exc)

    return wrapper


def _unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The services log the cause; BigQuery's and KMS's own text stays out of the page.
    logger.warning("portal page %s failed: %s", request.path, type(exc).__name__)
    response = render_page(
        request, "portal/tenant_unavailable.html", status=503, title="Temporarily unavailable"
    )
    response["Retry-After"] = "5"
    return response


def writer_required(view: View) -> View:
    """Read-only staff get a 403 page on every operation, whatever the method."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_change(request):
            return render_page(
                request,
                "portal/tenant_forbidden.html",
                status=403,
                title="Read-only access",
                tenant_id=kwargs.get("tenant_id"),
            )
        return view(request, *args, **kwargs)

    return portal_page(wrapper)


def form_page(
    request: HttpRequest,
    *,
    tenant_id: str | None,
    title: str,
    form: forms.Form,
    submit: str,
    intro: str = "",
    danger: bool = False,
    extra: dict[str, Any] | None = None,
    status: int = 200,
) -> TemplateResponse:
    return render_page(
        request,
        "portal/tenant_form.html",
        status=status,
        tenant_id=tenant_id,
        title=title,
        form=form,
        submit=submit,
        intro=intro,
        danger=danger,
        **(extra or {}),
    )


def issued_page(
    request: HttpRequest, *, tenant_id: str, issued: IssuedApiKey, message: str, title: str, note: str
) -> HttpResponse:
    """Flash a success message and show the new key, once."""
    messages.success(request, message)
    response = render_page(
        request,
        "portal/tenant_key_issued.html",
        tenant_id=tenant_id,
        title=title,
        note=note,
        plaintext=issued.plaintext,
        key=issued.row,
    )
    return no_store(response)
