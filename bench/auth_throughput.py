"""Authenticated request throughput: cached X-API-Key, BigQuery lookup per request, drf-api-key on SQLite."""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))
if __name__ == "__main__":
    # ROOT_URLCONF names this module: Django's import must find the running script, not load a second copy
    # (which would run this setup again and define the views twice).
    sys.modules.setdefault("bench.auth_throughput", sys.modules[__name__])
# Assigned, not setdefault: the views and the peer's app exist only in the bench's settings.
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.auth_settings"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework import authentication, exceptions  # noqa: E402
from rest_framework.permissions import IsAuthenticated  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402
from rest_framework_api_key.models import APIKey  # noqa: E402
from rest_framework_api_key.permissions import HasAPIKey  # noqa: E402

from bigquery_backend.client import BigQueryGateway, JobCounter, get_gateway  # noqa: E402
from bigquery_backend.emulator import EmulatorProcess  # noqa: E402
from tenants_app.api.authentication import TenantApiKeyAuthentication, TenantPrincipal  # noqa: E402
from tenants_app.models import TenantApiKey  # noqa: E402
from tenants_app.repositories import central_repository  # noqa: E402
from tenants_app.services.api_key_verification import (  # noqa: E402
    api_key_environment,
    api_key_usage_flush,
    api_key_verify,
    hash_api_key,
    last_used_recorder,
)
from tenants_app.services.api_keys import (  # noqa: E402
    KEY_PREFIX,
    RANDOM_LENGTH,
    api_key_create,
    api_key_revoke,
)
from tenants_app.services.bootstrap import bigquery_bootstrap  # noqa: E402
from tenants_app.services.errors import ApiKeyRevoked  # noqa: E402
from tenants_app.services.onboarding import tenant_onboard  # noqa: E402

WARMUP_SECONDS = 0.5  # per variant, excluded from the figures: first lookups, connections, code paths
SLICE_SECONDS = 1.0  # measured time is cut into slices run round-robin, so machine noise hits every variant
MAX_SECONDS = 20.0  # keeps a run under ~90 s: setup plus 3 x (warm-up + seconds)
MAX_THREADS = 16
TENANT_ID = "bench_tenant"
PLAN = "STARTER"
OK_BODY = {"ok": True}


# --- the three views ----------------------------------------------------------------------------
class LookupPerRequestAuthentication(authentication.BaseAuthentication):
    """(b) The original's way: hash the key and query BigQuery for it on every request, no cache."""

    header = "X-API-Key"

    def authenticate(self, request: Request) -> tuple[TenantPrincipal, TenantApiKey] | None:
        key = request.headers.get(self.header)
        if key is None:
            return None
        try:
            key_hash = hash_api_key(key.strip())
        except UnicodeEncodeError:
            raise exceptions.AuthenticationFailed("API key is not valid") from None
        rows = central_repository(TenantApiKey).list(filters={"api_key_hash": key_hash}, limit=1)
        row = rows[0] if rows else None
        # The product's refusals that need only the key row. Its tenant-status check costs a second job
        # and is left out here, which favours (b): one job per request is (b)'s best case.
        if row is None or not row.is_active or row.revoked_at is not None:
            raise exceptions.AuthenticationFailed("API key is not valid")
        if row.expires_at is not None and row.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("API key has expired")
        principal = TenantPrincipal(
            tenant_id=row.tenant_id, api_key_id=row.api_key_id, scopes=tuple(row.scopes)
        )
        return principal, row

    def authenticate_header(self, request: Request) -> str:
        return self.header


class OkView(APIView):
    """The same tiny JSON answer for every variant: only authentication differs."""

    def get(self, request: Request) -> Response:
        return Response(OK_BODY)


class CachedKeyView(OkView):
    """(a) The product's X-API-Key authentication, served from Django's cache after the first lookup."""

    authentication_classes = [TenantApiKeyAuthentication]
    permission_classes = [IsAuthenticated]


class LookupPerRequestView(OkView):
    """(b) One BigQuery job per request."""

    authentication_classes = [LookupPerRequestAuthentication]
    permission_classes = [IsAuthenticated]


class DrfApiKeyView(OkView):
    """(c) djangorestframework-api-key: a permission only, checked against SQLite on every request."""

    authentication_classes: list[type[authentication.BaseAuthentication]] = []
    permission_classes = [HasAPIKey]


urlpatterns = [
    path("bench/cached", CachedKeyView.as_view()),
    path("bench/lookup", LookupPerRequestView.as_view()),
    path("bench/drf-api-key", DrfApiKeyView.as_view()),
]


# --- measuring ----------------------------------------------------------------------------------
@dataclass
class Window:
    """Requests, latencies and BigQuery work of one or more timed windows of one variant."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    samples: list[float] = field(default_factory=list)
    jobs: int = 0
    api_calls: int = 0
    statements: list[str] = field(default_factory=list)

    def add(self, samples: list[float], errors: int, seconds: float, counter: JobCounter) -> None:
        self.requests += len(samples)
        self.errors += errors
        self.seconds += seconds
        self.samples.extend(samples)
        self.jobs += counter.jobs
        self.api_calls += counter.api_calls
        self.statements.extend(counter.statements)

    def verbs(self, verb: str) -> int:
        """How many of the window's statements start with `verb` (SELECT = lookup, UPDATE = flush)."""
        return sum(1 for statement in self.statements if statement.lstrip().upper().startswith(verb))

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        # Nearest rank: an observed latency, not an interpolation.
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else math.nan


@dataclass
class Variant:
    """One authentication scheme: its URL, its credentials, and its warm-up and measured figures."""

    name: str
    label: str
    path: str
    headers: dict[str, str]
    wrong_headers: dict[str, str]
    warmup: Window = field(default_factory=Window)
    measured: Window = field(default_factory=Window)
    refused_with: int = 0
    # Seconds from the start of the run (the last_used_at interval's restart) to this variant's last request.
    ended_at: float = 0.0


class Client:
    """Calls the project's WSGI handler in-process: every middleware and DRF, no socket or server."""

    def __init__(self, threads: int) -> None:
        self.handler = WSGIHandler()
        self.base: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "localhost",
            "HTTP_ACCEPT": "application/json",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": threads > 1,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }

    def get(self, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """Status code and body of one GET, with the response closed as a WSGI server would."""
        environ = {**self.base, **headers, "PATH_INFO": f"/{url}", "wsgi.input": io.BytesIO(b"")}
        statuses: list[str] = []

        def start_response(
            status: str, response_headers: list[Any], exc_info: Any = None
        ) -> Callable[..., None]:
            statuses.append(status)
            return lambda data: None

        response = self.handler(environ, start_response)
        try:
            body = b"".join(response)
        finally:
            # Fires request_finished, where Django closes expired DB connections: part of the cost.
            response.close()
        return int(statuses[0].split(" ", 1)[0]), body


def run_window(
    client: Client, gateway: BigQueryGateway, variant: Variant, seconds: float, threads: int
) -> tuple[list[float], int, float, JobCounter]:
    """Send requests from `threads` threads for `seconds`; latencies (ms), errors, elapsed s, jobs."""
    per_thread: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    failures: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        samples = per_thread[index]
        try:
            barrier.wait()
            while time.perf_counter() < deadline[0]:
                started = time.perf_counter()
                status, _ = client.get(variant.path, variant.headers)
                samples.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    errors[index] += 1
        except BaseException as exc:
            failures.append(exc)
        finally:
            # Django's connections are per thread: close this thread's SQLite connection with it.
            connections.close_all()

    workers = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(threads)]
    for thread in workers:
        thread.start()
    with gateway.count_jobs() as counter:
        # Every thread is already waiting at the barrier: the window opens for all at once.
        started = time.perf_counter()
        deadline[0] = started + seconds
        barrier.wait()
        for thread in workers:
            thread.join()
        elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return [sample for samples in per_thread for sample in samples], sum(errors), elapsed, counter


def check(client: Client, gateway: BigQueryGateway, variant: Variant) -> None:
    """A wrong key must be refused (401/403) and the right one get 200 {"ok": true}, before any timing."""
    status, body = client.get(variant.path, variant.wrong_headers)
    if status not in (401, 403):
        raise RuntimeError(f"{variant.name}: a wrong key got {status}, expected 401 or 403: {body[:200]!r}")
    variant.refused_with = status
    # The first right request belongs to the warm-up: for (a) it is the cache miss.
    with gateway.count_jobs() as counter:
        started = time.perf_counter()
        status, body = client.get(variant.path, variant.headers)
        elapsed = time.perf_counter() - started
    if status != 200 or json.loads(body) != OK_BODY:
        raise RuntimeError(f"{variant.name}: the right key got {status}: {body[:200]!r}")
    variant.warmup.add([elapsed * 1000], 0, elapsed, counter)


def measure(
    client: Client, gateway: BigQueryGateway, variants: Sequence[Variant], seconds: float, threads: int
) -> None:
    """Check and warm up every variant, then measure them in round-robin slices."""
    # As in a freshly started process: the last_used_at interval starts now, before (a)'s first use.
    last_used_recorder.reset()
    started = time.monotonic()
    for variant in variants:
        check(client, gateway, variant)
        variant.warmup.add(*run_window(client, gateway, variant, WARMUP_SECONDS, threads))
    slices = max(1, math.ceil(seconds / SLICE_SECONDS))
    for index in range(slices):
        # Rotate who goes first, so no variant always follows the same one.
        for variant in [*variants[index % len(variants) :], *variants[: index % len(variants)]]:
            variant.measured.add(*run_window(client, gateway, variant, seconds / slices, threads))
            variant.ended_at = time.monotonic() - started


# --- report -------------------------------------------------------------------------------------
def render_table(variants: Sequence[Variant], peer: Variant) -> str:
    """A plain aligned text table, one line per variant."""
    header = ("variant", "requests", "req/s", "vs (c)", "p50 ms", "p99 ms", "jobs/req", "errors")
    lines = [
        (
            v.label,
            str(v.measured.requests),
            f"{v.measured.rate:,.0f}",
            f"{v.measured.rate / peer.measured.rate:.2f}x",
            f"{v.measured.percentile(0.5):.2f}",
            f"{v.measured.percentile(0.99):.2f}",
            f"{v.measured.jobs / v.measured.requests:.3g}",
            str(v.measured.errors),
        )
        for v in variants
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    align = ["<" if i == 0 else ">" for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True)).rstrip()

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *(fmt(line) for line in lines)])


def interpret(
    cached: Variant, lookup: Variant, peer: Variant, *, flushed_at_end: tuple[int, int]
) -> list[str]:
    """Sentences computed from this run's figures: the two targets, then what explains them."""
    notes = []
    a, b, c = cached.measured, lookup.measured, peer.measured
    ratio = a.rate / c.rate
    if ratio >= 1:
        verdict = "holds"
    elif ratio >= 0.95:
        verdict = "does NOT hold strictly (within 5%, about the run-to-run noise here)"
    else:
        verdict = "does NOT hold"
    notes.append(
        f"- Target (a) at least as fast as (c): {verdict}: {a.rate:,.0f} vs {c.rate:,.0f} req/s "
        f"({ratio:.2f}x), p50 {a.percentile(0.5):.2f} vs {c.percentile(0.5):.2f} ms."
    )
    interval = float(settings.API_KEY_LAST_USED_FLUSH_SECONDS)
    ttl = float(settings.API_KEY_CACHE_SECONDS)
    selects, updates = a.verbs("SELECT"), a.verbs("UPDATE")
    # A long run legitimately sees jobs that are not hits: a re-lookup (2 SELECTs) each time the cache
    # entry expires, and a last_used_at flush (1 UPDATE) each interval. Anything beyond that is a hit's.
    scheduled = (
        selects % 2 == 0
        and selects // 2 <= cached.ended_at // ttl
        and updates <= cached.ended_at // interval
        and selects + updates == a.jobs
    )
    if a.jobs == 0:
        holds = "holds"
    elif scheduled:
        holds = "holds (every measured job was a cache expiry or a flush, see below)"
    else:
        holds = "does NOT hold"
    notes.append(
        f"- Target 0 BigQuery jobs per request on a cache hit: {holds}: "
        f"the {a.requests} measured (a) requests issued {a.jobs} jobs ({a.jobs / a.requests:.2g}/request) "
        f"and {a.api_calls} metadata calls. The warm-up is excluded from every figure above; (a)'s first "
        f"request, the cache miss, issued {cached.warmup.verbs('SELECT')} SELECT jobs (key row by hash, "
        f"tenant profile), its whole warm-up {cached.warmup.requests} requests and {cached.warmup.jobs} jobs."
    )
    if a.jobs:
        notes.append(
            f"  The measured jobs: {selects} SELECT ({selects // 2} re-lookup(s) after the cache entry "
            f"expired, API_KEY_CACHE_SECONDS = {ttl:g} s, and (a) ran until {cached.ended_at:.1f} s into the "
            f"run) and {updates} UPDATE (last_used_at flush); the other {a.requests - selects // 2} requests "
            "were hits."
        )
    notes.append(
        f"- (b) issued {b.jobs / b.requests:.3g} job per request ({b.verbs('SELECT')} SELECTs for "
        f"{b.requests} requests); (a) served {a.rate / b.rate:,.0f}x its requests per second "
        f"(p50 {b.percentile(0.5):.2f} ms -> {a.percentile(0.5):.2f} ms). The emulator answers over loopback "
        "in milliseconds; BigQuery's own per-job latency is far larger and every job is billed and "
        "quota-limited, so (b)'s gap only grows there."
    )
    updates += cached.warmup.verbs("UPDATE")
    flushed, keys = flushed_at_end
    covered = (
        "the (a) requests since that flush"
        if updates
        else f"all {cached.warmup.requests + a.requests} (a) requests"
    )
    if updates:
        during = (
            f"{updates} flush(es) happened during the run (UPDATE jobs, counted above): (a)'s last "
            f"request came {cached.ended_at:.1f} s into the interval"
        )
    else:
        during = (
            f"no flush happened during the run (0 UPDATE jobs): (a)'s last request came "
            f"{cached.ended_at:.1f} s into the interval"
        )
    notes.append(
        "- last_used_at: the recorder writes at most every API_KEY_LAST_USED_FLUSH_SECONDS = "
        f"{interval:g} s, its interval restarted just before (a)'s first request (as in a new process); "
        f"{during}. "
        f"Flushing at the end took {flushed} UPDATE job for {keys} key id covering {covered}: one job per "
        "process per interval, never one per request."
    )
    notes.append(
        "- Same stack for all three: Django's WSGIHandler called in-process (no socket), the project's "
        f"{len(settings.MIDDLEWARE)} middleware, a DRF APIView rendering {json.dumps(OK_BODY)} as JSON. "
        "(a) and (b) authenticate X-API-Key with IsAuthenticated; (c) has no authentication class and "
        "HasAPIKey (`Authorization: Api-Key ...`, sha512, one SELECT by unique prefix on SQLite per request, "
        "persistent connection). The cache is the project's default: diskcache in the data directory, "
        "shared by every process of the machine (an SQLite read per hit); with Redis each hit is a network "
        "round trip."
    )
    return notes


# --- revocation delay across 2 processes -------------------------------------------------------------
PROBE_SECONDS = 10.0  # the watcher gives up this long after the revocation (a per-process cache: 60 s)


def watch_until_refused(key: str, emulator_url: str, project: str, ready: Any, result: Any) -> None:
    """Second process: verify `key` (cached after the first time) until it is refused; report when."""
    with override_settings(BIGQUERY_EMULATOR_HOST=emulator_url, BIGQUERY_PROJECT=project):
        api_key_verify(key=key)  # warm: this process's verification is now in the cache
        ready.set()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                api_key_verify(key=key)
            except ApiKeyRevoked:
                result.put(time.time())
                return
        result.put(None)


def revocation_delay(tenant_id: str, emulator_url: str, project: str) -> tuple[float | None, float]:
    """(seconds from the revocation's return until another process refuses the key, the revocation's own
    seconds); the other process had verified the key before, so only the shared cache can tell it."""
    issued = api_key_create(tenant_id=tenant_id, name="probe", scopes=["tenant:read"], created_by="bench")
    api_key_verify(key=issued.plaintext)
    context = multiprocessing.get_context("spawn")
    ready, result = context.Event(), context.Queue()
    os.environ["BENCH_AUTH_DIR"] = str(settings.BENCH_DIR)
    watcher = context.Process(
        target=watch_until_refused, args=(issued.plaintext, emulator_url, project, ready, result)
    )
    watcher.start()
    try:
        if not ready.wait(timeout=120):
            raise RuntimeError("the watching process did not start")
        started = time.time()
        api_key_revoke(
            tenant_id=tenant_id, api_key_id=issued.row.api_key_id, reason="probe", revoked_by="bench"
        )
        returned = time.time()
        refused_at = result.get(timeout=PROBE_SECONDS + 60)
    finally:
        watcher.join(timeout=10)
        if watcher.is_alive():
            watcher.kill()
    delay = None if refused_at is None else max(0.0, refused_at - returned)
    return delay, returned - started


def versions() -> str:
    """Versions of everything that shapes the figures."""
    return (
        f"Django {django.get_version()}, DRF {version('djangorestframework')}, "
        f"djangorestframework-api-key {version('djangorestframework-api-key')}, "
        f"bqemulator {version('bqemulator')} (DuckDB {version('duckdb')}, in memory), "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help=f"measured seconds per variant (default 5, max {MAX_SECONDS:g})",
    )
    parser.add_argument("--threads", type=int, default=1, help="client threads per variant (default 1)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS or not 1 <= args.threads <= MAX_THREADS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS:g}], --threads in [1, {MAX_THREADS}]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start an emulator, onboard a tenant, migrate SQLite, measure, print the table, clean up."""
    args = parse_args(argv)
    started = time.perf_counter()
    bench_dir = Path(settings.BENCH_DIR)
    emulator = EmulatorProcess(home=bench_dir / "home", log_path=bench_dir / "emulator.log")
    setup: list[str] = []
    try:
        emulator.start()
        setup.append(f"emulator up in {time.perf_counter() - started:.1f} s")
        with override_settings(
            BIGQUERY_EMULATOR_HOST=emulator.url,
            BIGQUERY_PROJECT=emulator.project,
            # Short bounds: a stuck emulator fails the run in seconds instead of stretching it.
            BIGQUERY_TIMEOUT_SECONDS=15.0,
            BIGQUERY_RETRY_DEADLINE_SECONDS=10.0,
        ):
            step = time.perf_counter()
            bigquery_bootstrap()
            onboarded = tenant_onboard(
                tenant_id=TENANT_ID,
                company_name="Bench Co",
                admin_email="bench@example.com",
                plan=PLAN,
                created_by="bench/auth_throughput.py",
            )
            assert onboarded.api_key is not None  # a fresh tenant always gets its key shown
            elapsed = time.perf_counter() - step
            setup.append(f"central dataset bootstrapped and tenant {TENANT_ID} onboarded in {elapsed:.1f} s")
            step = time.perf_counter()
            call_command("migrate", verbosity=0)
            _, peer_key = APIKey.objects.create_key(name="bench")
            setup.append(f"SQLite migrated and a drf-api-key issued in {time.perf_counter() - step:.1f} s")

            key = onboarded.api_key.plaintext
            unknown = f"{KEY_PREFIX}_{api_key_environment()}_{'0' * RANDOM_LENGTH}"
            variants = [
                Variant(
                    "(a)",
                    "(a) cached X-API-Key (ours)",
                    "bench/cached",
                    {"HTTP_X_API_KEY": key},
                    {"HTTP_X_API_KEY": unknown},
                ),
                Variant(
                    "(b)",
                    "(b) BigQuery lookup per request",
                    "bench/lookup",
                    {"HTTP_X_API_KEY": key},
                    {"HTTP_X_API_KEY": unknown},
                ),
                Variant(
                    "(c)",
                    "(c) djangorestframework-api-key, SQLite",
                    "bench/drf-api-key",
                    {"HTTP_AUTHORIZATION": f"Api-Key {peer_key}"},
                    {"HTTP_AUTHORIZATION": f"Api-Key {peer_key[:-4]}XXXX"},
                ),
            ]
            gateway = get_gateway()
            client = Client(args.threads)
            measure(client, gateway, variants, args.seconds, args.threads)
            with gateway.count_jobs() as counter:
                keys = api_key_usage_flush()
            flushed_at_end = (counter.jobs, keys)
            delay, revoke_seconds = revocation_delay(TENANT_ID, emulator.url, emulator.project)
    except BaseException:
        log = bench_dir / "emulator.log"
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-20:]
            print("emulator log (last lines):", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        emulator.stop()
        connections.close_all()
        shutil.rmtree(bench_dir, ignore_errors=True)

    cached, lookup, peer = variants
    slices = max(1, math.ceil(args.seconds / SLICE_SECONDS))
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"Authenticated request throughput on {versions()}")
    print(f"Setup: {'; '.join(setup)}.")
    print(
        f"Each variant: {WARMUP_SECONDS:g} s warm-up (excluded), then {args.seconds:g} s measured in "
        f"{slices} slice(s) run round-robin with the other variants; {args.threads} client thread(s). "
        f"A wrong key was refused first: {', '.join(f'{v.name} {v.refused_with}' for v in variants)}."
    )
    print()
    print(render_table(variants, peer))
    print()
    print("Interpretation")
    for note in interpret(cached, lookup, peer, flushed_at_end=flushed_at_end):
        print(note)
    seen = "never within the probe" if delay is None else f"{delay * 1000:.1f} ms"
    print(
        f"Revocation across 2 processes ({settings.CACHES['default']['BACKEND']}): another process that had "
        f"verified the key refused it {seen} after the revocation returned (the revocation itself took "
        f"{revoke_seconds:.2f} s); with a per-process cache it kept working for up to "
        f"API_KEY_CACHE_SECONDS ({settings.API_KEY_CACHE_SECONDS:g} s)."
    )
    print(f"\nTotal wall time {time.perf_counter() - started:.1f} s; load average at the end {load}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
