"""gunicorn hooks (`gunicorn -c python:convergence.gunicorn_conf convergence.wsgi`)."""

from __future__ import annotations

from typing import Any

# A request may make several bounded BigQuery calls (each up to BIGQUERY_RETRY_DEADLINE_SECONDS):
# gunicorn's default 30 s would kill the worker first and answer a bare 500 instead of our 503.
timeout = 120
graceful_timeout = 10


def worker_exit(server: Any, worker: Any) -> None:
    """Write what is batched in memory before a worker goes: keys' `last_used_at`, API-call counts."""
    from tenants_app.services.api_keys import api_key_usage_flush

    try:
        api_key_usage_flush()
    except Exception as exc:  # a stopping worker must not crash on an unreachable BigQuery
        server.log.warning("could not write API key last_used_at on exit: %s", type(exc).__name__)
    from tenants_app.services.rate_limits import api_calls_flush

    try:
        api_calls_flush()
    except Exception as exc:  # same: never crash a stopping worker
        server.log.warning("could not write pending API-call counts on exit: %s", type(exc).__name__)
