"""Security headers Django does not send itself: Content-Security-Policy, Permissions-Policy and more.

Django's SecurityMiddleware already sends X-Content-Type-Options, Referrer-Policy and
Cross-Origin-Opener-Policy (SECURE_* settings), and XFrameOptionsMiddleware X-Frame-Options: DENY.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


def _policy(**directives: str) -> str:
    return "; ".join(f"{name.replace('_', '-')} {value}" for name, value in directives.items())


_COMMON = {
    "object_src": "'none'",
    "base_uri": "'self'",
    "form_action": "'self'",
    "frame_ancestors": "'none'",
}

# The portal (Django's admin and our templates): every script is a file of ours or the admin's, so no
# inline script runs. Inline styles are allowed: the admin's change list has a <style> block, and our
# usage bars and chart swatches set their width and colour in style attributes.
PAGE_POLICY = _policy(
    default_src="'self'",
    script_src="'self'",
    style_src="'self' 'unsafe-inline'",
    img_src="'self' data:",
    font_src="'self'",
    connect_src="'self'",
    **_COMMON,
)

# API responses are JSON: nothing in them may load or run anything, even if opened in a browser.
API_POLICY = _policy(default_src="'none'", frame_ancestors="'none'", base_uri="'none'", form_action="'none'")

# Features no page of ours uses; denied so that an injected frame or script cannot ask for them either.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "usb",
    )
)

API_PREFIX = "/api/v1/"


def content_security_policy(path: str) -> str:
    """The policy for a response to `path`."""
    if path.startswith(API_PREFIX):
        return API_POLICY
    return PAGE_POLICY


class SecurityHeadersMiddleware:
    """Add CSP, Permissions-Policy and Cross-Origin-Resource-Policy; API responses are never cached.

    `setdefault` everywhere: a view that needs a different header sets its own and keeps it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", content_security_policy(request.path))
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        response.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        if request.path.startswith(API_PREFIX):
            # Responses carry new API keys and tenant data: no browser or proxy may keep a copy.
            response.setdefault("Cache-Control", "no-store")
        return response
