"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from bigquery_backend.client import get_gateway
from bigquery_backend.exceptions import BigQueryError
from tenants_app.kms import KmsError, get_kms

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process serves requests; touches nothing else, so a BigQuery outage does not restart it."""
    return JsonResponse({"status": "ok"})


def _probe(check: Callable[[], object]) -> dict[str, object]:
    started = time.monotonic()
    try:
        check()
    except (BigQueryError, KmsError) as exc:
        # The class name is enough to act on; messages may quote endpoints and are logged instead.
        logger.warning("readiness check failed: %s: %s", type(exc).__name__, exc)
        return {"status": "unavailable", "error": type(exc).__name__}
    return {"status": "ok", "ms": round((time.monotonic() - started) * 1000)}


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """BigQuery answers a query and KMS round-trips a value: 200, else 503 naming what failed."""
    checks = {
        "bigquery": _probe(lambda: get_gateway().query("SELECT 1 AS ok")),
        "kms": _probe(lambda: get_kms().check()),
    }
    ready = all(check["status"] == "ok" for check in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
