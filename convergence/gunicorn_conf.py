"""gunicorn hooks (`gunicorn -c python:convergence.gunicorn_conf convergence.wsgi`)."""

from __future__ import annotations

from typing import Any

# Threads, not sync workers: a sync worker serves one connection at a time, so two clients that send
# half their headers and stall held both workers, and /healthz went unanswered until the timeout
# (tests/api/test_slow_clients.py). A gthread worker waits for a new connection's first bytes in its
# poller and serves each request in one of `threads` threads, so a stalled client holds one thread at
# most. Requests spend their time waiting on BigQuery, not on the CPU, which threads suit. In production
# a buffering proxy (nginx) in front still reads whole requests first; see the operations docs.
worker_class = "gthread"
threads = 8
# A request may make several bounded BigQuery calls (each up to BIGQUERY_RETRY_DEADLINE_SECONDS):
# gunicorn's default 30 s would kill the worker first and answer a bare 500 instead of our 503. A
# gthread worker's main loop keeps notifying the arbiter while its threads work, so this bounds a hung
# worker, not one long request.
timeout = 120
graceful_timeout = 10
# Idle keep-alive connections are closed after this long: each one costs a socket, not a thread.
keepalive = 5


def on_starting(server: Any) -> None:
    """Before any worker forks: a fresh, private directory for the workers' Prometheus counts."""
    # The settings module only for DATA_DIR (the one rule for where it is); Django is not set up here.
    from convergence import settings as project_settings
    from convergence.prometheus import metrics_dir_prepare

    metrics_dir_prepare(project_settings.DATA_DIR)


def worker_exit(server: Any, worker: Any) -> None:
    """Write what is batched in memory before a worker goes: keys' `last_used_at`, API-call counts."""
    from tenants_app.services.api_key_verification import api_key_usage_flush

    try:
        api_key_usage_flush()
    except Exception as exc:  # a stopping worker must not crash on an unreachable BigQuery
        server.log.warning("could not write API key last_used_at on exit: %s", type(exc).__name__)
    from tenants_app.services.rate_limits import api_calls_flush

    try:
        api_calls_flush()
    except Exception as exc:  # same: never crash a stopping worker
        server.log.warning("could not write pending API-call counts on exit: %s", type(exc).__name__)
