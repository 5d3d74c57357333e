"""Settings for bench/auth_throughput.py only: the project's plus the peer's app, the views, a temp dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from convergence.cache import embedded_cache
from convergence.settings import *  # noqa: F403
from convergence.settings import INSTALLED_APPS, LOGGING

# Everything the run writes (SQLite DB, local KMS key, emulator home) goes here; the bench removes it.
# The revocation probe's second process names the first one's directory: both then share the cache.
BENCH_DIR = Path(os.environ.get("BENCH_AUTH_DIR") or tempfile.mkdtemp(prefix="bench-auth-"))
DATA_DIR = BENCH_DIR / "data"
DATA_DIR.mkdir(exist_ok=True)
# WhiteNoise warns about a missing STATIC_ROOT at start; an empty one keeps stderr quiet.
STATIC_ROOT = BENCH_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)

# The peer, variant (c); a bench-only dependency (pip install '.[bench]').
INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework_api_key"]

# The three benchmark views, defined in the script itself.
ROOT_URLCONF = "bench.auth_throughput"
# The host the bench's WSGI environ names; nothing listens on it.
ALLOWED_HOSTS = ["localhost"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BENCH_DIR / "bench_auth.sqlite3",
        # Persistent connection: the peer's best case, so (c) is not charged a reconnect per request
        # (Django's default CONN_MAX_AGE=0 closes the connection at the end of every request).
        "CONN_MAX_AGE": None,
    }
}
# The project's default cache (diskcache in the data directory, shared by every process on the machine),
# whatever CACHE_URL says in this shell.
CACHES = {"default": embedded_cache(DATA_DIR / "cache")}
KMS_BACKEND = "local"
# This bench measures authentication: the per-tenant API-call limits (60 a minute on STARTER) would
# refuse nearly every request of (a) and (b), so they are off here.
API_RATE_LIMITS_ENABLED = False

# Onboarding and bootstrap log at INFO, and every refused request at WARNING: keep the report readable.
LOGGING = {
    **LOGGING,
    "root": {**LOGGING["root"], "level": "WARNING"},
    "loggers": {"django.request": {"level": "ERROR"}},
}
