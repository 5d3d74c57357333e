"""DRF throttle: per-tenant API-call limits for tenant API keys; staff and worker tokens pass untouched."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from tenants_app.services.rate_limits import rate_limit_check

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView


class TenantKeyRateThrottle(BaseThrottle):
    """Counts each tenant-key request against its tenant's per-minute and per-hour limits.

    Over a limit, `rate_limit_check` raises RateLimited, which the API's error handler turns into a
    429 with `Retry-After` and the usual error body (DRF's own Throttled would lose the window and limit).
    """

    def allow_request(self, request: Request, view: APIView) -> bool:
        if not settings.API_RATE_LIMITS_ENABLED:
            return True
        if getattr(view, "tenant_rate_limit_exempt", False):
            # Operational endpoints (e.g. a pipeline worker's claim loop) opt out explicitly.
            return True
        tenant_id = getattr(request.user, "tenant_id", None)
        if tenant_id is None or getattr(request.user, "api_key_id", None) is None:
            # Not a tenant key (staff session or token, worker token, anonymous): no cache work at all.
            return True
        rate_limit_check(tenant_id=str(tenant_id))
        return True
