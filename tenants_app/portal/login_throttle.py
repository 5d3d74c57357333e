"""Portal login rate limiting: too many failed logins per username and client address are refused.

Counted in the Django cache: machine-wide with the default cache, cluster-wide with Redis. The
window is fixed, starting at the first failure; a success resets it. Once the limit is reached the
login form refuses (HTTP 429) without checking the password, so guessing on stops costing anything
but also stops telling the guesser anything. Unknown usernames are counted like known ones, so the
answer never says whether an account exists.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

THROTTLED_STATUS = 429


def client_address(request: HttpRequest | None) -> str:
    """The peer address. X-Forwarded-For is not read: anyone can send it, and a guesser would then
    pick a new "address" per attempt. Behind a proxy every client shares its address, so the limit
    becomes per username, which is stricter, never looser."""
    if request is None:
        return "unknown"
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def _key(username: str, address: str) -> str:
    # Hashed: usernames are arbitrary text, and cache backends (memcached) limit key characters.
    digest = hashlib.sha256(f"{username.casefold()}\x00{address}".encode("utf-8", "surrogatepass"))
    return f"portal-login-failures:{digest.hexdigest()}"


def retry_after(username: str, address: str) -> int | None:
    """Seconds until this username may try again from this address; None while it may try now."""
    key = _key(username, address)
    failures = cache.get(key) or 0
    if failures < settings.LOGIN_RATE_LIMIT_ATTEMPTS:
        return None
    since = cache.get(f"{key}:since")
    window = settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS
    if since is None:
        return window
    return max(1, math.ceil(since + window - time.time()))


def record_failure(username: str, address: str) -> int:
    """Count one failed login; returns the failures in the current window."""
    key = _key(username, address)
    window = settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS
    if cache.add(key, 1, timeout=window):
        cache.set(f"{key}:since", time.time(), timeout=window)
        return 1
    try:
        # incr keeps the key's expiry (diskcache and Redis): the window does not slide with each failure.
        return int(cache.incr(key))
    except ValueError:
        # Expired between add and incr: this failure starts a new window.
        cache.set(key, 1, timeout=window)
        cache.set(f"{key}:since", time.time(), timeout=window)
        return 1


def reset(username: str, address: str) -> None:
    key = _key(username, address)
    cache.delete_many([key, f"{key}:since"])


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, refusing without authenticating once the failures reach the limit."""

    throttled_after: int | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if not username or not password:
            return super().clean()
        address = client_address(self.request)
        wait = retry_after(username, address)
        if wait is not None:
            self.throttled_after = wait
            logger.warning(
                "portal login refused without a check: too many failures for %r from %s", username, address
            )
            raise forms.ValidationError(
                "Too many failed logins for this username from your address. Try again in %(minutes)s.",
                code="throttled",
                params={"minutes": _minutes(wait)},
            )
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            failures = record_failure(username, address)
            # Never the password: only who tried, from where, and how close to the limit.
            logger.warning(
                "portal login failed for %r from %s (%d of %d allowed in %d s)",
                username,
                address,
                failures,
                settings.LOGIN_RATE_LIMIT_ATTEMPTS,
                settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS,
            )
            raise
        reset(username, address)
        return cleaned


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def throttled_response(response: HttpResponse) -> HttpResponse:
    """The login view's response, as a 429 with Retry-After when its form was refused as throttled."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    wait = getattr(form, "throttled_after", None)
    if wait is not None:
        response.status_code = THROTTLED_STATUS
        response["Retry-After"] = str(wait)
    return response
