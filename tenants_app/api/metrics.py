"""`/metrics`: the Prometheus exposition, for scrapers holding METRICS_TOKEN (or a staff session)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from tenants_app.metrics import metrics_text

_SCHEME = "bearer "


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """200 with the metrics; 401 without the token; 404 while no token is configured (nothing exposed)."""
    token: str = settings.METRICS_TOKEN
    if not token:
        raise Http404
    if not (_bearer_matches(request, token) or request.user.is_staff):
        response = HttpResponse("Authentication required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header[: len(_SCHEME)].lower() != _SCHEME:
        return False
    # Constant time: the comparison must not tell a caller how much of a guess was right.
    return hmac.compare_digest(header[len(_SCHEME) :].strip().encode(), token.encode())
