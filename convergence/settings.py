"""Django settings: every value comes from the environment (see .env.example)."""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from convergence.cache import embedded_cache
from convergence.log_config import logging_config
from convergence.secrets import make_private_dir, private_files_only, read_or_create_secret

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env is a convenience for development; real deployments set the environment.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Here, before the first file is created (the secret key below): every entry point imports the settings
# before it creates anything (manage.py, gunicorn's workers through wsgi.py, pytest-django, scripts that
# call django.setup()), so the whole data directory and what is added to it later is owner-only;
# manage.py or wsgi.py alone would each miss the others.
private_files_only()
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
make_private_dir(DATA_DIR)

# When no key is configured we generate one per data directory instead of shipping a
# well-known default: sessions then survive restarts without anyone typing a secret.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or read_or_create_secret(DATA_DIR / "secret_key")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # Django's admin with our site (tenants_app/portal/site.py) as admin.site.
    "tenants_app.portal.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "bigquery_backend",
    "tenants_app",
]

MIDDLEWARE = [
    # First: the request id and log context cover every other middleware, and the access line every response.
    "tenants_app.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # CSP, Permissions-Policy and no-store on the API (tenants_app/security_headers.py).
    "tenants_app.security_headers.SecurityHeadersMiddleware",
    # A body over API_MAX_BODY_BYTES (API) or DATA_UPLOAD_MAX_MEMORY_SIZE (portal) is a 413, unread.
    "tenants_app.api.parsers.ApiBodyLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tenants_app.middleware.RequestContextMiddleware",
]

ROOT_URLCONF = "convergence.urls"
WSGI_APPLICATION = "convergence.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Django's own tables (users, sessions, admin log) only; tenant data lives in BigQuery.
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'portal.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The default cache is shared by every process on this machine: diskcache keeps it in SQLite files in the
# data directory, with atomic increments. A revocation, a rate-limit count or a failed login seen by one
# gunicorn worker is then seen by all of them at once; a per-process cache (locmem) let revoked keys work
# on the other workers for API_KEY_CACHE_SECONDS and multiplied every limit by the number of workers.
# Several machines need a cache server: CACHE_URL=redis://host:6379/0 (see docs on production).
CACHE_URL = env.str("CACHE_URL", default="")
CACHES = {
    "default": environ.Env.cache_url_config(CACHE_URL) if CACHE_URL else embedded_cache(DATA_DIR / "cache")
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Every time on every page in one format with its zone (convergence/formats/en/formats.py).
FORMAT_MODULE_PATH = ["convergence.formats"]

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
# Django's storages chmod every file they save (collectstatic's copies too) to this, whatever the umask
# (its default is 0644): owner-only like the rest of the data directory; WhiteNoise reads them as the owner.
FILE_UPLOAD_PERMISSIONS = 0o600
STATICFILES_DIRS = [BASE_DIR / "static"]

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"

# --- HTTPS and browser hardening (tenants_app/security_headers.py adds CSP and Permissions-Policy) ---
# Lax, not Strict: a link to the portal from a mail or chat must open logged in; every change is a POST,
# which Lax never sends cross-site.
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# The CSRF token travels in the forms; no script of ours reads the cookie.
CSRF_COOKIE_HTTPONLY = True
# An admin session ends this many seconds after login. Default: 12 hours (Django's is two weeks).
SESSION_COOKIE_AGE = env.int("DJANGO_SESSION_COOKIE_AGE", default=12 * 3600)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Strict-Transport-Security max-age; 0 sends none. Set it (31536000) only once HTTPS works everywhere.
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=False)
# Redirect plain HTTP to HTTPS; health checks stay reachable over HTTP for load balancers.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Behind a proxy that terminates TLS and sets X-Forwarded-Proto (and strips it from clients).
if env.bool("DJANGO_TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Failed portal logins per username and client address within the window, before the login form
# refuses (HTTP 429) without checking the password; counted in the Django cache
# (tenants_app/portal/login_throttle.py).
LOGIN_RATE_LIMIT_ATTEMPTS = env.int("LOGIN_RATE_LIMIT_ATTEMPTS", default=5)
LOGIN_RATE_LIMIT_WINDOW_SECONDS = env.int("LOGIN_RATE_LIMIT_WINDOW_SECONDS", default=900)
if LOGIN_RATE_LIMIT_ATTEMPTS < 1 or LOGIN_RATE_LIMIT_WINDOW_SECONDS < 1:
    raise ImproperlyConfigured("LOGIN_RATE_LIMIT_ATTEMPTS and LOGIN_RATE_LIMIT_WINDOW_SECONDS must be >= 1")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants_app.api.authentication.TenantApiKeyAuthentication",
        "tenants_app.api.authentication.AdminTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tenants_app.api.permissions.IsStaff"],
    "DEFAULT_SCHEMA_CLASS": "tenants_app.api.schema.ApiSchema",
    "EXCEPTION_HANDLER": "tenants_app.api.errors.api_exception_handler",
    # Per-tenant API-call limits for tenant keys only (staff requests return at the first check).
    "DEFAULT_THROTTLE_CLASSES": ["tenants_app.api.throttling.TenantKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "tenants_app.api.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # ASCII-escaped JSON: an error that quotes a lone surrogate from the input must still render.
    "UNICODE_JSON": False,
}

# Largest API request body (tenants_app/api/parsers.py): a larger one is a 413 before it is read.
# The largest legitimate body is a worker's completion report with many step logs. Default: 4 MiB.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=4 * 1024 * 1024)
# Django refuses larger form bodies with its own HTML 400: never below the API's limit, which answers
# first. Portal requests over it (multipart files included) are a 413 before they are read.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, API_MAX_BODY_BYTES)

SPECTACULAR_SETTINGS = {
    "TITLE": "Convergence tenant API",
    "DESCRIPTION": "Tenant onboarding, API keys, cloud credentials, subscriptions and usage.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The contract is public (integrators read it before they hold a key); it holds no data.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The default hook, then the probes (plain Django views) documented under the `health` tag.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tenants_app.api.schema.add_health_paths",
    ],
}

# Staff in this group may look at everything in the portal and the admin API but change nothing.
READ_ONLY_STAFF_GROUP = env.str("READ_ONLY_STAFF_GROUP", default="Read-only staff")

# --- BigQuery -------------------------------------------------------------------------------------
# With BIGQUERY_EMULATOR_HOST set, the client talks to that endpoint with anonymous credentials;
# without it, Application Default Credentials and the real API are used.
BIGQUERY_PROJECT = env.str("BIGQUERY_PROJECT", default="") or None
BIGQUERY_LOCATION = env.str("BIGQUERY_LOCATION", default="US")
BIGQUERY_EMULATOR_HOST = env.str("BIGQUERY_EMULATOR_HOST", default="") or None
# Every call is bounded: the client's own default retries for up to 10 minutes, which turns an
# outage into a hung request instead of a clear 503.
BIGQUERY_TIMEOUT_SECONDS = env.float("BIGQUERY_TIMEOUT_SECONDS", default=30.0)
BIGQUERY_RETRY_DEADLINE_SECONDS = env.float("BIGQUERY_RETRY_DEADLINE_SECONDS", default=20.0)
# Connections to BigQuery kept open per process: at least the server's threads that may call it at
# once. Below that, every call past the pool opens a new connection (a TLS handshake on BigQuery) and
# urllib3 logs "Connection pool is full" as it drops it.
BIGQUERY_MAX_CONNECTIONS = env.int("BIGQUERY_MAX_CONNECTIONS", default=256)
if BIGQUERY_MAX_CONNECTIONS < 1:
    raise ImproperlyConfigured("BIGQUERY_MAX_CONNECTIONS must be >= 1")

TENANTS_DATASET = env.str("TENANTS_DATASET", default="tenants")
TENANT_DATASET_TEMPLATE = env.str("TENANT_DATASET_TEMPLATE", default="{tenant_id}")

# --- API keys and onboarding --------------------------------------------------------------------
# Environment named in every API key (cvg_<env>_...): a test key never works in production.
API_KEY_ENVIRONMENT = env.str("API_KEY_ENVIRONMENT", default="live")
# Verified keys are cached this long. Revocation, rotation, suspension and offboarding make the cached
# entries stale at once in every process; this bounds only a change made by hand in BigQuery.
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=60.0)
# Unknown keys are remembered this long, so a flood of bad keys costs no BigQuery jobs.
API_KEY_NEGATIVE_CACHE_SECONDS = env.float("API_KEY_NEGATIVE_CACHE_SECONDS", default=10.0)
# At most how often each process writes last_used_at, in one batched UPDATE.
API_KEY_LAST_USED_FLUSH_SECONDS = env.float("API_KEY_LAST_USED_FLUSH_SECONDS", default=60.0)
# Verified admin and worker tokens are cached this long. Revocation and changes to their user (active,
# staff, groups; saved through Django) make the cached entries stale at once in every process; this
# bounds only a change made behind Django's back (a queryset update, SQL by hand).
TOKEN_CACHE_SECONDS = env.float("TOKEN_CACHE_SECONDS", default=60.0)
# Principal given READER on each tenant dataset, e.g. group:{tenant_id}-readers@example.com.
TENANT_READER_PRINCIPAL_TEMPLATE = env.str("TENANT_READER_PRINCIPAL_TEMPLATE", default="")
# How long an Idempotency-Key's first response is kept (encrypted) for replays.
IDEMPOTENCY_TTL_SECONDS = env.int("IDEMPOTENCY_TTL_SECONDS", default=86_400)

# --- Quotas and rate limits -----------------------------------------------------------------------
# Daily usage rows older than this many days are deleted by `manage.py roll_over_usage`.
USAGE_RETENTION_DAYS = env.int("USAGE_RETENTION_DAYS", default=90)
if USAGE_RETENTION_DAYS < 32:
    # A month's total carries from the previous row of the same month: keep at least a month.
    raise ImproperlyConfigured("USAGE_RETENTION_DAYS must be at least 32")
# Per-tenant API-call limits (per minute and per hour, from the plan or an override) for tenant keys,
# counted in the Django cache: machine-wide with the default cache, cluster-wide with Redis.
API_RATE_LIMITS_ENABLED = env.bool("API_RATE_LIMITS_ENABLED", default=True)
# How long a tenant's limits are cached: the bound for a limit change to reach other processes.
API_RATE_LIMIT_CACHE_SECONDS = env.float("API_RATE_LIMIT_CACHE_SECONDS", default=60.0)
# Counted calls are added to the day's usage row (`total_api_calls_today`) in one batched UPDATE per
# flush: when this many seconds passed since the first unwritten call, or this many calls wait.
API_CALLS_FLUSH_SECONDS = env.float("API_CALLS_FLUSH_SECONDS", default=60.0)
API_CALLS_FLUSH_COUNT = env.int("API_CALLS_FLUSH_COUNT", default=1000)

# --- Pipeline schedules (`manage.py schedule_pipelines`) ---------------------------------------------
# Attempts after the first that a failed run gets (written into each run when it is enqueued).
PIPELINE_MAX_RETRIES = env.int("PIPELINE_MAX_RETRIES", default=3)
# A late scheduler enqueues at most this many missed slots per config (the latest ones), skips the rest.
SCHEDULER_MAX_CATCH_UP = env.int("SCHEDULER_MAX_CATCH_UP", default=3)
# Configs claimed per batch of statements (bounded by query-parameter sizes, not by correctness).
SCHEDULER_BATCH_SIZE = env.int("SCHEDULER_BATCH_SIZE", default=1000)
# A claim not confirmed within this long belongs to a scheduler that died: the next run finishes it.
SCHEDULER_CLAIM_TIMEOUT_SECONDS = env.int("SCHEDULER_CLAIM_TIMEOUT_SECONDS", default=600)
if PIPELINE_MAX_RETRIES < 0 or SCHEDULER_MAX_CATCH_UP < 1 or not 1 <= SCHEDULER_BATCH_SIZE <= 10_000:
    raise ImproperlyConfigured(
        "PIPELINE_MAX_RETRIES must be >= 0, SCHEDULER_MAX_CATCH_UP >= 1, SCHEDULER_BATCH_SIZE 1..10000"
    )

# --- Pipeline workers (execution queue) -------------------------------------------------------------
# Members of this Django group may use their token (`create_worker_token`) on the worker API for every
# tenant's runs, and nothing else unless they are also staff.
PIPELINE_WORKERS_GROUP = env.str("PIPELINE_WORKERS_GROUP", default="pipeline-workers")
# A claim holds a run this long unless the worker asks for another lease (up to the maximum);
# heartbeats extend it. Past it the run is re-queued for another worker.
PIPELINE_LEASE_SECONDS = env.int("PIPELINE_LEASE_SECONDS", default=300)
PIPELINE_LEASE_MAX_SECONDS = env.int("PIPELINE_LEASE_MAX_SECONDS", default=3600)
# A failed attempt is retried after base * 2**retry_count seconds, at most the cap.
PIPELINE_RETRY_BACKOFF_SECONDS = env.int("PIPELINE_RETRY_BACKOFF_SECONDS", default=60)
PIPELINE_RETRY_BACKOFF_MAX_SECONDS = env.int("PIPELINE_RETRY_BACKOFF_MAX_SECONDS", default=3600)
# `cleanup_orphaned_runs`: a RUNNING run without a lease and no sign of life for this long is orphaned.
PIPELINE_ORPHAN_TIMEOUT_MINUTES = env.int("PIPELINE_ORPHAN_TIMEOUT_MINUTES", default=60)
# How long a claim skips a tenant it found over quota (never longer than the quota's Retry-After).
PIPELINE_QUOTA_BLOCK_SECONDS = env.int("PIPELINE_QUOTA_BLOCK_SECONDS", default=30)
# Worker claims and reports are group-committed (bigquery_backend/batching.py): every process's claims
# of a tick are one set of statements, and ticks of a kind start at least this far apart across all
# processes sharing the cache. Statements per central table per minute are then bounded by
# 60 / spacing x (statements per tick): 2 on the queue per claim tick, 1 per report tick.
PIPELINE_CLAIM_TICK_SECONDS = env.float("PIPELINE_CLAIM_TICK_SECONDS", default=5.0)
PIPELINE_REPORT_TICK_SECONDS = env.float("PIPELINE_REPORT_TICK_SECONDS", default=3.0)
# Runs one claim may ask for (`max_runs`).
PIPELINE_CLAIM_MAX_RUNS = env.int("PIPELINE_CLAIM_MAX_RUNS", default=10)

# --- Periodic work (`manage.py run_periodic`, tenants_app/services/periodic.py) -----------------------
# How often the loop looks for due jobs: a job runs at most this late after its period starts.
PERIODIC_TICK_SECONDS = env.float("PERIODIC_TICK_SECONDS", default=5.0)
# The scheduler runs once per this period (cron's granularity is a minute), orphan cleanup once per
# the other; periods are epoch-aligned and shared by every host through the default cache.
PERIODIC_SCHEDULER_SECONDS = env.int("PERIODIC_SCHEDULER_SECONDS", default=60)
PERIODIC_ORPHAN_CLEANUP_SECONDS = env.int("PERIODIC_ORPHAN_CLEANUP_SECONDS", default=300)
# Reports' rows reach the tenants' datasets once per this period (run_tenant_rows.py): each tenant table
# gets at most one statement per period, however many runs report; until then they sit on the queue.
PERIODIC_TENANT_ROWS_SECONDS = env.int("PERIODIC_TENANT_ROWS_SECONDS", default=300)
# ...spread over this many flushes, each writing one part of the tenants, so that BigQuery never gets
# every tenant's statements in the same second. Must divide the period; 1 writes them all at once.
PERIODIC_TENANT_ROWS_PARTS = env.int("PERIODIC_TENANT_ROWS_PARTS", default=30)
# A host running a job holds its period this long at most: past it (the host died), another host runs it.
PERIODIC_JOB_LEASE_SECONDS = env.int("PERIODIC_JOB_LEASE_SECONDS", default=600)
if (
    PERIODIC_TICK_SECONDS <= 0
    or min(
        PERIODIC_SCHEDULER_SECONDS,
        PERIODIC_ORPHAN_CLEANUP_SECONDS,
        PERIODIC_TENANT_ROWS_SECONDS,
        PERIODIC_TENANT_ROWS_PARTS,
        PERIODIC_JOB_LEASE_SECONDS,
    )
    < 1
):
    raise ImproperlyConfigured("PERIODIC_TICK_SECONDS must be > 0 and the other PERIODIC_* settings >= 1")
if PERIODIC_TENANT_ROWS_SECONDS % PERIODIC_TENANT_ROWS_PARTS:
    raise ImproperlyConfigured("PERIODIC_TENANT_ROWS_PARTS must divide PERIODIC_TENANT_ROWS_SECONDS")

# --- Notifications (tenants_app/services/notifications.py, webhooks.py) ------------------------------
# Emails to tenants' admin_email: printed to the console unless an SMTP backend is configured.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="notifications@convergence.localhost")
# The periodic loop delivers queued webhook events once per this period.
PERIODIC_NOTIFICATIONS_SECONDS = env.int("PERIODIC_NOTIFICATIONS_SECONDS", default=5)
# Failed deliveries are retried after base * 2**(attempt - 1) seconds, capped, up to the last attempt.
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=30)
WEBHOOK_RETRY_MAX_SECONDS = env.int("WEBHOOK_RETRY_MAX_SECONDS", default=3600)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
# http:// and loopback addresses as endpoints: for local development and tests only, never production.
WEBHOOK_ALLOW_LOCALHOST = env.bool("WEBHOOK_ALLOW_LOCALHOST", default=DEBUG)

# --- Metrics (/metrics, tenants_app/metrics.py) ------------------------------------------------------
# Bearer token of Prometheus scrapers. Empty (the default): /metrics answers 404, nothing is exposed.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    # The token is the only thing between the internet and the operational figures: no guessable one.
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 32 characters (or empty to disable /metrics)")

# --- KMS ------------------------------------------------------------------------------------------
KMS_BACKEND = env.str("KMS_BACKEND", default="local")
KMS_KEY_NAME = env.str("KMS_KEY_NAME", default="")
# Bound on each Cloud KMS operation, retries included: an outage becomes a 503 instead of a hung request.
KMS_TIMEOUT_SECONDS = env.float("KMS_TIMEOUT_SECONDS", default=10.0)
# http://host:port of a Cloud KMS fake, used with anonymous credentials; empty means the real API.
KMS_EMULATOR_HOST = env.str("KMS_EMULATOR_HOST", default="") or None
if KMS_BACKEND not in {"local", "gcp"}:
    raise ImproperlyConfigured(f"KMS_BACKEND must be 'local' or 'gcp', not {KMS_BACKEND!r}")
if KMS_BACKEND == "gcp" and not KMS_KEY_NAME:
    raise ImproperlyConfigured("KMS_BACKEND=gcp needs KMS_KEY_NAME (projects/.../cryptoKeys/...)")

# --- Logging (convergence/log_config.py) ----------------------------------------------------------------
# plain for a terminal; json (one object per line with request_id, tenant_id, actor) for a log shipper.
# Every line goes through a filter that masks secrets; bodies-at-DEBUG loggers stay at INFO.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
try:
    LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None
