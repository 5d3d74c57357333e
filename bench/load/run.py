"""Load benchmark: gunicorn (several workers) on loopback, driven by bench/load/driver.py in a second process.

Starts its own BigQuery emulator, seeds tenants (keys with every scope, a credential, pipeline schedules,
queued and finished runs) and a staff superuser with an admin token in a temporary SQLite database and
DATA_DIR, and times each request kind alone in-process (BigQuery jobs, Django and emulator CPU). Then, for
each setup (a one-client-of-each baseline, worker class x cache, and a `last_used_at` flush probe), starts
gunicorn, waits for /readyz, runs the driver for --duration seconds and stops gunicorn. With
`redis-server` on PATH (and the `redis` extra installed) the worker classes also run with CACHE_URL
pointing at a redis-server it starts on a free port without persistence. Prints every run's table, then
the setups side by side; exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))

from bigquery_backend.emulator import EmulatorProcess, free_port  # noqa: E402 - stdlib only, no Django

DRIVER = Path(__file__).resolve().parent / "driver.py"
MEASURING = "MEASURING"  # the driver's line when its warm-up ends
PROBE_CONFIG = Path(__file__).resolve().parent / "gunicorn_probe.py"
ACTOR = "system:bench_load"
STAFF_USERNAME = "loadstaff"
READY_TIMEOUT = 90.0  # gunicorn boots 4 workers on a busy 2-core machine, and /readyz asks BigQuery
STOP_TIMEOUT = 30.0  # graceful_timeout (10 s) plus the workers' exit flushes
# Tenant-key calls are rate limited per tenant (SCALE: 1,000 a minute). The load must stay within the
# limits, not test them: every tenant gets the highest override the service accepts, so the rate-limit
# code still runs on every call (and a 429 would still be an error) but never refuses one.
API_CALLS_PER_MINUTE = 100_000
API_CALLS_PER_HOUR = 6_000_000


@dataclass(frozen=True)
class Setup:
    """One gunicorn configuration to drive: worker class, cache, and optional environment overrides."""

    worker_class: str
    cache: str  # "locmem" or "redis"
    last_used_flush: float | None = None  # API_KEY_LAST_USED_FLUSH_SECONDS; None keeps the default
    single_clients: bool = False  # one client of each kind instead of the configured counts

    @property
    def label(self) -> str:
        flush = f" flush {self.last_used_flush:g}s" if self.last_used_flush is not None else ""
        single = " 1 each" if self.single_clients else ""
        return f"{self.worker_class}/{self.cache}{flush}{single}"

    def clients(self, args: argparse.Namespace) -> tuple[int, int, int, int]:
        """Tenant API, admin API, portal and write clients."""
        counts = (args.api_clients, args.admin_clients, args.portal_clients, args.write_clients)
        if not self.single_clients:
            return counts
        api, admin, portal, write = (min(count, 1) for count in counts)
        return api, admin, portal, write


# --- environment and seeding (in this process, through the services) ---------------------------------
def prepare_environment(work: Path, emulator: EmulatorProcess) -> None:
    """Everything this run and its gunicorn write goes under `work`; set before Django reads settings."""
    os.environ["DATA_DIR"] = str(work)
    os.environ["DATABASE_URL"] = f"sqlite:///{work / 'portal.sqlite3'}"
    os.environ["KMS_BACKEND"] = "local"
    os.environ["BIGQUERY_EMULATOR_HOST"] = emulator.url
    os.environ["BIGQUERY_PROJECT"] = emulator.project
    # The services log at INFO (onboarding, flushes): keep the report readable; warnings still show.
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["DJANGO_SETTINGS_MODULE"] = "convergence.settings"
    inherited = (
        "CACHE_URL",
        "API_KEY_LAST_USED_FLUSH_SECONDS",
        "API_RATE_LIMITS_ENABLED",
        "API_CALLS_FLUSH_SECONDS",
        "API_CALLS_FLUSH_COUNT",
    )
    for name in inherited:
        os.environ.pop(
            name, None
        )  # production defaults unless a setup sets one; a shell's value would skew it
    # whitenoise warns at every worker start when STATIC_ROOT is missing; pages need no static files here.
    (work / "staticfiles").mkdir()


def seed(*, tenants: int) -> dict[str, Any]:
    """Django's tables, a superuser and admin token, the central dataset, and `tenants` busy tenants."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.urls import reverse

    from tenants_app.services.admin_tokens import admin_token_create
    from tenants_app.services.api_key_scopes import API_KEY_SCOPES
    from tenants_app.services.api_keys import api_key_create
    from tenants_app.services.bootstrap import bigquery_bootstrap
    from tenants_app.services.credentials import credential_create
    from tenants_app.services.onboarding import tenant_onboard
    from tenants_app.services.pipelines import pipeline_config_create, pipeline_config_run_now
    from tenants_app.services.run_claims import run_claim
    from tenants_app.services.run_reports import run_complete
    from tenants_app.services.subscription_overrides import subscription_set_limits

    call_command("migrate", verbosity=0)
    password = secrets.token_urlsafe(18)
    user = User.objects.create_superuser(STAFF_USERNAME, "loadstaff@example.com", password)
    bigquery_bootstrap()
    # After the bootstrap: its audit entry goes to the central dataset's audit table.
    token = admin_token_create(user=user, name="bench load", actor=ACTOR)
    seeded = []
    for index in range(tenants):
        tenant_id = f"load_tenant_{index:02d}"
        tenant_onboard(
            tenant_id=tenant_id,
            company_name=f"Load Tenant {index}",
            admin_email=f"ops{index}@load.example.com",
            plan="SCALE",
            created_by=ACTOR,
        )
        subscription_set_limits(
            tenant_id=tenant_id,
            actor=ACTOR,
            api_calls_per_minute=API_CALLS_PER_MINUTE,
            api_calls_per_hour=API_CALLS_PER_HOUR,
        )
        key = api_key_create(tenant_id=tenant_id, name="load driver", scopes=API_KEY_SCOPES, created_by=ACTOR)
        credential_create(
            tenant_id=tenant_id,
            provider="OPENAI",
            name="load",
            payload={"api_key": "sk-" + secrets.token_hex(20)},
            created_by=ACTOR,
        )
        configs = [
            pipeline_config_create(
                tenant_id=tenant_id,
                provider="GCP",
                domain=domain,
                pipeline_template="sql_transform",
                schedule_cron=cron,
                timezone_name="Europe/Berlin",
                parameters={"source_table": "raw_costs", "destination_table": f"{domain}_costs"},
                actor=ACTOR,
            )
            for domain, cron in (("billing", "30 2 * * *"), ("usage", "0 * * * *"), ("audit", "15 4 * * 1"))
        ]
        # Two manual runs: one claimed and finished by a worker, one left queued, so /me/runs has both.
        for config in configs[:2]:
            pipeline_config_run_now(tenant_id=tenant_id, config_id=config.config_id, actor=ACTOR)
        claimed = run_claim(worker_id="bench-load-seed", tenant_id=tenant_id)
        if claimed is None:
            raise RuntimeError(f"no run to claim for {tenant_id}")
        run_complete(run_id=claimed.run_id, worker_id="bench-load-seed", status="SUCCEEDED")
        seeded.append(
            {
                "tenant_id": tenant_id,
                "api_key": key.plaintext,
                # The writers pause and resume this one; the readers list all three.
                "write_config_id": configs[2].config_id,
                "api_key_id": key.row.api_key_id,
            }
        )
    return {
        "base_url": "",  # each run's gunicorn port, filled in by drive()
        "tenants": seeded,
        "admin_token": token.plaintext,
        "staff": {"username": STAFF_USERNAME, "password": password},
        "portal": {
            "login": reverse("admin:login"),
            "index": reverse("admin:index"),
            "tenant_list": reverse("admin:tenants_app_tenantprofile_changelist"),
            "tenant_detail": reverse("admin:portal-tenant-detail", args=["TENANT_ID"]),
            "dashboard": reverse("admin:portal-dashboard"),
        },
    }


FLUSH_REPEATS = 5


def flush_costs(tenants: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Median ms of each batched bookkeeping write a request may run inline, on the idle emulator.

    `last_used_at` (one UPDATE of the keys table) and the API-call counts (one UPDATE of the usage table,
    after a MERGE the first time a process meets a tenant's day), each with every load tenant pending,
    as one request of a busy worker pays them once per interval.
    """
    from django.test import override_settings

    timings: dict[str, list[float]] = {"last_used_at": [], "api_calls": []}
    # Recording must not flush by itself (seeding can take longer than the interval): only the timed call.
    with override_settings(API_KEY_LAST_USED_FLUSH_SECONDS=1e9, API_CALLS_FLUSH_SECONDS=1e9):
        _time_flushes(tenants, timings)
    return {name: statistics.median(values) for name, values in timings.items()}


def _time_flushes(tenants: Sequence[dict[str, Any]], timings: dict[str, list[float]]) -> None:
    from tenants_app.services.api_key_verification import api_key_usage_flush, last_used_recorder
    from tenants_app.services.rate_limits import api_call_recorder, api_calls_flush

    for _ in range(FLUSH_REPEATS):
        for tenant in tenants:
            last_used_recorder.record(tenant["api_key_id"])
        started = time.perf_counter()
        if api_key_usage_flush() != len(tenants):
            raise RuntimeError("the last_used_at flush did not cover every pending key")
        timings["last_used_at"].append((time.perf_counter() - started) * 1000)
        now = time.time()
        for tenant in tenants:
            api_call_recorder.record(tenant["tenant_id"], now)
        started = time.perf_counter()
        if api_calls_flush() != len(tenants):
            raise RuntimeError("the API-call flush did not write every pending call")
        timings["api_calls"].append((time.perf_counter() - started) * 1000)


@dataclass(frozen=True)
class Profile:
    """One request kind served alone, in-process: its BigQuery jobs and median costs."""

    jobs: int
    wall_ms: float
    django_ms: float  # CPU time of this process (Django, DRF, the BigQuery client)
    emulator_ms: float  # CPU time of the emulator process


def serial_profile(scenario: dict[str, Any], emulator_pid: int, repeat: int) -> dict[str, Profile]:
    """Each request kind, one at a time, through Django's test client in this process: jobs and CPU.

    No HTTP and no concurrency: what one request costs the server and the emulator, which no other
    load on the machine inflates (CPU time, not wall time). The jobs also carry over to BigQuery, where
    each costs a job's latency. One pass first fills the caches (key, limits, templates), as in a busy
    worker; then `repeat` measured passes.
    """
    from django.contrib.auth.models import User
    from django.test import Client, override_settings

    from bigquery_backend.client import get_gateway

    tenant = scenario["tenants"][0]
    tenant_id = tenant["tenant_id"]
    config = f"/api/v1/me/pipelines/{tenant['write_config_id']}"
    portal = scenario["portal"]
    as_tenant = Client(HTTP_HOST="127.0.0.1", HTTP_X_API_KEY=tenant["api_key"])
    as_admin = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {scenario['admin_token']}")
    as_staff = Client(HTTP_HOST="127.0.0.1")
    as_staff.force_login(User.objects.get(username=STAFF_USERNAME))
    issued: list[str] = []

    def get(client: Client, path: str) -> Callable[[], Any]:
        return lambda: client.get(path)

    def post(path: str | Callable[[], str], body: dict[str, Any]) -> Callable[[], Any]:
        return lambda: as_tenant.post(
            path() if callable(path) else path, body, content_type="application/json"
        )

    calls: list[tuple[str, Callable[[], Any], int]] = [
        ("GET /me", get(as_tenant, "/api/v1/me"), 200),
        ("GET /me/keys", get(as_tenant, "/api/v1/me/keys"), 200),
        ("GET /me/usage", get(as_tenant, "/api/v1/me/usage"), 200),
        ("GET /me/pipelines", get(as_tenant, "/api/v1/me/pipelines"), 200),
        ("GET /me/runs", get(as_tenant, "/api/v1/me/runs"), 200),
        ("GET /tenants", get(as_admin, "/api/v1/tenants?limit=50"), 200),
        ("GET /tenants/{id}", get(as_admin, f"/api/v1/tenants/{tenant_id}"), 200),
        ("GET admin index", get(as_staff, portal["index"]), 200),
        ("GET tenant list", get(as_staff, portal["tenant_list"]), 200),
        ("GET tenant detail", get(as_staff, portal["tenant_detail"].replace("TENANT_ID", tenant_id)), 200),
        ("GET quota dashboard", get(as_staff, portal["dashboard"]), 200),
        ("POST pipeline pause", post(f"{config}/pause", {}), 200),
        ("POST pipeline resume", post(f"{config}/resume", {}), 200),
        (
            "POST key create",
            post("/api/v1/me/keys", {"name": "serial probe", "scopes": ["tenant:read"]}),
            201,
        ),
        ("POST key revoke", post(lambda: f"/api/v1/me/keys/{issued[-1]}/revoke", {"reason": "probe"}), 200),
    ]
    gateway = get_gateway()
    samples: dict[str, list[tuple[int, float, float, float]]] = {kind: [] for kind, _, _ in calls}
    # No bookkeeping flush inside a measured request (flush_costs times those on their own).
    quiet = override_settings(API_KEY_LAST_USED_FLUSH_SECONDS=1e9, API_CALLS_FLUSH_SECONDS=1e9)
    with quiet:
        _serial_passes(calls, samples, gateway, emulator_pid, repeat, issued)
    return {
        kind: Profile(
            jobs=Counter(s[0] for s in values).most_common(1)[0][0],
            wall_ms=statistics.median(s[1] for s in values),
            django_ms=statistics.median(s[2] for s in values),
            emulator_ms=statistics.median(s[3] for s in values),
        )
        for kind, values in samples.items()
    }


def _serial_passes(
    calls: Sequence[tuple[str, Callable[[], Any], int]],
    samples: dict[str, list[tuple[int, float, float, float]]],
    gateway: Any,
    emulator_pid: int,
    repeat: int,
    issued: list[str],
) -> None:
    for index in range(1 + repeat):
        for kind, call, expect in calls:
            emulator_before = cpu_seconds(emulator_pid)
            cpu_before = time.process_time()
            started = time.perf_counter()
            with gateway.count_jobs() as counter:
                answer = call()
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
            emulator = cpu_seconds(emulator_pid) - emulator_before
            if answer.status_code != expect:
                raise RuntimeError(f"{kind} answered {answer.status_code} in-process, expected {expect}")
            if kind == "POST key create":
                issued.append(answer.json()["key"]["api_key_id"])
            if index:
                samples[kind].append((counter.jobs, wall * 1000, cpu * 1000, emulator * 1000))


# --- processes ----------------------------------------------------------------------------------------
def stop(process: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM, then wait; SIGKILL only a process that will not stop."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"  {name} did not stop in {STOP_TIMEOUT:.0f} s; killing it")
        process.kill()
        process.wait()


@contextmanager
def redis_server(work: Path) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port (no RDB, no AOF); yields its CACHE_URL."""
    port = free_port()
    command = [
        shutil.which("redis-server") or "redis-server",
        "--bind", "127.0.0.1", "--port", str(port),
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(work),
    ]  # fmt: skip
    with open(work / "redis.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - fixed arguments
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start (log: {work / 'redis.log'})") from None
                time.sleep(0.1)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process, "redis-server")


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> float:
    """Poll /readyz until it answers 200; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=30) as answer:  # noqa: S310 - loopback http
                if answer.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"gunicorn was not ready in {READY_TIMEOUT:.0f} s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@contextmanager
def gunicorn(
    setup: Setup, args: argparse.Namespace, work: Path, cache_url: str | None, flush_log: Path
) -> Iterator[tuple[str, float, int]]:
    """gunicorn serving convergence.wsgi on a free loopback port; yields its URL, time to ready and pid."""
    port = free_port()
    environment = dict(os.environ)
    if cache_url:
        environment["CACHE_URL"] = cache_url
    if setup.last_used_flush is not None:
        environment["API_KEY_LAST_USED_FLUSH_SECONDS"] = str(setup.last_used_flush)
    environment["LOAD_FLUSH_LOG"] = str(flush_log)
    command = [
        sys.executable, "-m", "gunicorn", "convergence.wsgi",
        # The project's gunicorn settings plus a timer on the bookkeeping flushes (see gunicorn_probe.py).
        "--config", str(PROBE_CONFIG),
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(args.workers),
        "--worker-class", setup.worker_class,
        "--log-level", "warning",
    ]  # fmt: skip
    if setup.worker_class == "gthread":
        command += ["--threads", str(args.threads)]
    log = work / f"gunicorn-{setup.label.replace('/', '-').replace(', ', '-')}.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, wait_ready(url, process, log), process.pid
    finally:
        stop(process, "gunicorn")
        # Server-side errors (500 tracebacks, worker timeouts) are in its log: show them, not only counts.
        problems = [
            line
            for line in tail(log, 400).splitlines()
            if "Traceback" in line or "ERROR" in line or "CRITICAL" in line
        ]
        if problems:
            print(f"  gunicorn log has {len(problems)} error line(s), last lines of {log.name}:")
            print("    " + tail(log, 15).replace("\n", "\n    "))


def drive(
    setup: Setup, args: argparse.Namespace, work: Path, scenario: dict[str, Any], emulator_pid: int
) -> dict[str, Any]:
    """One setup: (redis,) gunicorn, readiness, the driver subprocess; returns the driver's figures."""
    print(
        f"\n=== {setup.label}: {args.workers} workers"
        + (f" x {args.threads} threads" if setup.worker_class == "gthread" else "")
    )
    api, admin, portal, write = setup.clients(args)
    flush_log = work / "flushes.jsonl"
    flush_log.unlink(missing_ok=True)
    with (
        redis_server(work) if setup.cache == "redis" else _nothing() as cache_url,
        gunicorn(setup, args, work, cache_url, flush_log) as (url, ready_seconds, gunicorn_pid),
    ):
        print(f"  gunicorn ready (/readyz 200) in {ready_seconds:.1f} s at {url}")
        scenario_path = work / "scenario.json"
        scenario_path.write_text(json.dumps({**scenario, "base_url": url}))
        scenario_path.chmod(0o600)  # it holds the tenants' keys and the staff password
        out = work / "result.json"
        out.unlink(missing_ok=True)
        command = [
                sys.executable, str(DRIVER), "--scenario", str(scenario_path),
                "--duration", str(args.duration), "--warmup", str(args.warmup),
                "--api-clients", str(api), "--admin-clients", str(admin),
                "--portal-clients", str(portal), "--write-clients", str(write),
                "--json-out", str(out),
            ]  # fmt: skip
        # The driver prints MEASURING when its warm-up ends: CPU is counted from there, so the workers'
        # first requests (imports, templates, clients) and the logins are left out, like their latencies.
        children_before = children_cpu()
        driver = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1)  # noqa: S603
        assert driver.stdout is not None
        before: dict[str, float] | None = None
        for line in driver.stdout:
            if line.strip() == MEASURING and before is None:
                before = {
                    "emulator": cpu_seconds(emulator_pid),
                    "gunicorn": cpu_seconds(gunicorn_pid),
                    "driver": cpu_seconds(driver.pid),
                }
                continue
            print(line, end="")
        returncode = driver.wait()
        after = {
            "emulator": cpu_seconds(emulator_pid),
            "gunicorn": cpu_seconds(gunicorn_pid),
            "driver": children_cpu() - children_before,
        }
    if not out.exists():
        raise RuntimeError(f"the driver failed without figures (exit {returncode})")
    result = json.loads(out.read_text())
    result["exit"] = returncode
    result["flushes"] = flushes_in(flush_log, *result["window"])
    print(f"  inline flushes in the measured window: {describe_flushes(result['flushes'])}")
    requests = result["total"]["requests"]
    result["cpu_ms"] = {
        name: (after[name] - before[name]) * 1000 / requests if requests and before else 0.0 for name in after
    }
    print(
        "  CPU time per measured request (CPU time: other load on the machine does not add to it): "
        + ", ".join(f"{name} {value:.0f} ms" for name, value in result["cpu_ms"].items())
    )
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children still alive (Linux /proc); 0 elsewhere."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for candidate in [pid, *children_of(pid)]:
        try:
            fields = Path(f"/proc/{candidate}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)
    return total


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's workers)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc").is_dir() else []:
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:  # ppid (field 4)
            found.append(int(entry.parent.name))
    return found


def children_cpu() -> float:
    """CPU seconds of this process's children that were waited for (the driver, once it exits)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def flushes_in(path: Path, start: float, end: float) -> dict[str, list[float]]:
    """Durations (ms) of the flushes that wrote rows and started inside the window, by kind."""
    found: dict[str, list[float]] = {"last_used_at": [], "api_calls": []}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        # rows 0: nothing was pending, no statement ran; None: it failed (counted, it still cost time).
        if start <= entry["at"] <= end and entry["rows"] != 0:
            found.setdefault(entry["what"], []).append(entry["ms"])
    return found


def describe_flushes(flushes: dict[str, list[float]]) -> str:
    parts = []
    for name, label in (("last_used_at", "last_used_at"), ("api_calls", "API-call counts")):
        values = flushes.get(name, [])
        if values:
            parts.append(
                f"{label} {len(values)} (median {statistics.median(values):.0f} ms, max {max(values):.0f} ms)"
            )
        else:
            parts.append(f"{label} 0")
    return "; ".join(parts)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


# --- report -------------------------------------------------------------------------------------------
def side_by_side(results: dict[str, dict[str, Any]]) -> str:
    """One column per setup; per category (and reads, writes, total) req/s, p50, p95, p99 and errors."""
    labels = list(results)
    width = max(14, *(len(label) for label in labels))
    lines = [f"{'':<26}" + "".join(f"{label:>{width + 2}}" for label in labels)]
    lines.append("-" * len(lines[0]))
    groups = ["tenant API", "admin API", "portal", "reads", "writes", "TOTAL"]
    for group in groups:
        for metric, unit in (
            ("rps", "req/s"),
            ("p50", "p50 ms"),
            ("p95", "p95 ms"),
            ("p99", "p99 ms"),
            ("errors", "errors"),
        ):
            cells = []
            for label in labels:
                stats = pick(results[label], group)
                if stats is None:
                    cells.append("-")
                elif metric == "rps":
                    cells.append(f"{stats[metric]:.1f}")
                elif metric == "errors":
                    errors = stats["errors"]
                    cells.append(str(errors) if not errors else f"{errors} {stats['error_outcomes']}")
                else:
                    cells.append(f"{stats[metric]:.0f}")
            if any(cell != "-" for cell in cells):
                lines.append(f"{group + ' ' + unit:<26}" + "".join(f"{cell:>{width + 2}}" for cell in cells))
        lines.append("")
    for name in ("emulator", "gunicorn", "driver"):
        cells = [f"{result['cpu_ms'][name]:.0f}" for result in results.values()]
        lines.append(f"{'CPU ms/req ' + name:<26}" + "".join(f"{cell:>{width + 2}}" for cell in cells))
    for name, label in (("last_used_at", "last_used_at flushes"), ("api_calls", "API-call count flushes")):
        cells = []
        for result in results.values():
            values = result["flushes"].get(name, [])
            cells.append(f"{len(values)} x {statistics.median(values):.0f} ms" if values else "0")
        lines.append(f"{label:<26}" + "".join(f"{cell:>{width + 2}}" for cell in cells))
    cells = [str(len(result.get("retried", []))) for result in results.values()]
    lines.append(f"{'GETs resent (keep-alive)':<26}" + "".join(f"{cell:>{width + 2}}" for cell in cells))
    return "\n".join(lines).rstrip()


def render_profile(profiles: dict[str, Profile]) -> str:
    """The serial in-process table: jobs, wall time and CPU of Django and of the emulator per request."""
    lines = [f"{'kind':<22}{'jobs':>5}{'wall ms':>9}{'Django CPU ms':>15}{'emulator CPU ms':>17}"]
    lines.append("-" * len(lines[0]))
    for kind, p in profiles.items():
        lines.append(f"{kind:<22}{p.jobs:>5}{p.wall_ms:>9.0f}{p.django_ms:>15.0f}{p.emulator_ms:>17.0f}")
    return "\n".join(lines)


def per_kind(results: dict[str, dict[str, Any]], profiles: dict[str, Profile]) -> str:
    """One line per request kind: its jobs and serial wall time, then p50 / p99 ms under each setup."""
    labels = list(results)
    kinds = list(profiles) + sorted({k for r in results.values() for k in r["kinds"]} - set(profiles))
    width = max(14, *(len(label) for label in labels))
    lines = [f"{'kind':<22}{'jobs':>5}{'alone':>7}" + "".join(f"{label:>{width + 2}}" for label in labels)]
    lines.append(f"{'':<27}{'ms':>7}" + "".join(f"{'p50 / p99 ms':>{width + 2}}" for _ in labels))
    lines.append("-" * len(lines[0]))
    for kind in kinds:
        cells = []
        for label in labels:
            stats = results[label]["kinds"].get(kind)
            cells.append(f"{stats['p50']:.0f} / {stats['p99']:.0f}" if stats else "-")
        profile = profiles.get(kind)
        count, alone = (str(profile.jobs), f"{profile.wall_ms:.0f}") if profile else ("-", "-")
        lines.append(f"{kind:<22}{count:>5}{alone:>7}" + "".join(f"{cell:>{width + 2}}" for cell in cells))
    return "\n".join(lines)


def pick(result: dict[str, Any], group: str) -> dict[str, Any] | None:
    if group == "TOTAL":
        return result["total"]
    if group == "reads":
        return result["reads"]
    return result["categories"].get(group)


def interpret(
    results: dict[str, dict[str, Any]],
    setups: Sequence[Setup],
    costs: dict[str, float],
    workers: int,
    profiles: dict[str, Profile],
) -> list[str]:
    """Sentences computed from this run's figures."""
    notes = []
    total_errors = sum(r["total"]["errors"] + r["warmup_errors"] for r in results.values())
    notes.append(
        f"- Errors: {total_errors} in {sum(r['total']['requests'] for r in results.values())} measured "
        f"requests over {len(results)} run{'' if len(results) == 1 else 's'}"
        + (" (zero: the acceptance bar holds)." if not total_errors else ": see above.")
    )
    best = max(results, key=lambda label: results[label]["total"]["rps"])
    notes.append(
        f"- Highest throughput: {best}, {results[best]['total']['rps']:.1f} req/s in total (differences "
        "between setups are within the run-to-run noise unless the machine was otherwise idle; see the "
        "load average)."
    )
    by_label = {setup.label: setup for setup in setups}
    for label, result in results.items():
        if by_label[label].single_clients:
            continue
        cpu = result["cpu_ms"]
        if cpu["emulator"] > 0 and cpu["gunicorn"] > 0:
            total = sum(cpu.values())
            cores = os.cpu_count() or 1
            notes.append(
                f"- CPU ({label}): per request the emulator spent {cpu['emulator']:.0f} ms, gunicorn "
                f"{cpu['gunicorn']:.0f} ms, the driver {cpu['driver']:.0f} ms. The emulator is one process "
                f"running one statement at a time, so this mix tops out near {1000 / cpu['emulator']:.0f} "
                f"req/s on it, and near {1000 * cores / total:.0f} req/s on {cores} otherwise idle cores; "
                f"measured {result['total']['rps']:.1f} req/s with the machine shared (see load average)."
            )
        break
    ratios = []
    for label, result in results.items():
        # The emulator's CPU per request if each request cost what it costs alone (serial profile),
        # weighted by this run's mix, against what it spent under this run's concurrency.
        counted = {k: v["requests"] for k, v in result["kinds"].items() if k in profiles}
        measured = result["cpu_ms"]["emulator"]
        if counted and measured:
            alone = sum(profiles[k].emulator_ms * n for k, n in counted.items()) / result["total"]["requests"]
            ratios.append(f"{label} {measured:.0f} vs {alone:.0f} ms ({measured / alone:.1f}x)")
    if ratios:
        notes.append(
            "- Emulator CPU per request under each run's concurrency vs the same mix of requests each "
            "served alone (serial table): " + "; ".join(ratios) + "."
        )
    probes = [label for label in results if by_label[label].last_used_flush is not None]
    singles = [label for label in results if by_label[label].single_clients]
    for single in singles:
        base = Setup(by_label[single].worker_class, by_label[single].cache).label
        if base not in results:
            continue
        alone, loaded = results[single]["total"], results[base]["total"]
        notes.append(
            f"- Queueing: with one client of each kind ({single}) requests took p50 {alone['p50']:.0f} ms "
            f"at {alone['rps']:.1f} req/s; with all clients ({base}) p50 {loaded['p50']:.0f} ms at "
            f"{loaded['rps']:.1f} req/s. The emulator runs one statement at a time, so more clients mostly "
            "wait longer: latency under load is queueing for it, not work done per request."
        )
    for probe in probes:
        base = Setup(by_label[probe].worker_class, by_label[probe].cache).label
        if base not in results:
            continue
        before = results[base]["categories"].get("tenant API")
        after = results[probe]["categories"].get("tenant API")
        if not (before and after):
            continue
        interval = by_label[probe].last_used_flush
        changes = ", ".join(
            f"{name} {before[name]:.0f} -> {after[name]:.0f} ms" for name in ("p50", "p95", "p99", "max")
        )
        timed = results[probe]["flushes"].get("last_used_at", [])
        cost = (
            f"{len(timed)} flushes in the window, each one UPDATE of median "
            f"{statistics.median(timed):.0f} ms (max {max(timed):.0f} ms) under this load, paid by the "
            "request that found it due"
            if timed
            else "no flush fell inside the window"
        )
        notes.append(
            f"- last_used_at flush every {interval:g} s per worker ({probe}): {cost}. Tenant-key reads "
            f"against {base} (default {default_flush():g} s: no flush inside a run this short, each "
            f"worker's first is due {default_flush():g} s after it starts): {changes}; "
            f"{before['rps']:.1f} -> {after['rps']:.1f} req/s (the machine's load moves these as much)."
        )
    main_label = next(
        (setup.label for setup in setups if setup.label in results and not setup.single_clients), ""
    )
    first = results[main_label]["categories"].get("tenant API") if main_label else None
    if first:
        per_flush = first["rps"] / workers * default_flush()
        share = 100 / per_flush if per_flush else 100.0
        where = "fewer than 1%: beyond p99, in the tail" if share < 1 else "more than 1%: inside p99"
        notes.append(
            f"- At the default {default_flush():g} s, one tenant-key request per worker per "
            f"{default_flush():g} s pays the last_used_at UPDATE inline ({costs['last_used_at']:.0f} ms "
            f"on the idle emulator; a DML job's latency, about a second or more, on BigQuery). At "
            f"{main_label}'s {first['rps']:.1f} tenant-key req/s over {workers} workers that is 1 "
            f"request in {per_flush:.0f} ({share:.2f}%, {where}); a worker serving over 100 tenant-key "
            f"requests a minute keeps it out of p99. The API-call count flush "
            f"({costs['api_calls']:.0f} ms idle) works the same way, due {api_calls_flush():g} s after "
            "a process's first unwritten call."
        )
    return notes


def api_calls_flush() -> float:
    from django.conf import settings

    return float(settings.API_CALLS_FLUSH_SECONDS)


def default_flush() -> float:
    from django.conf import settings

    return float(settings.API_KEY_LAST_USED_FLUSH_SECONDS)


def versions() -> str:
    from importlib.metadata import version

    return (
        f"gunicorn {version('gunicorn')}, Django {version('django')}, bqemulator {version('bqemulator')}, "
        f"requests {version('requests')}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )


def redis_available() -> str:
    """Empty when a Redis run is possible, else why not."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (Debian: apt-get install redis-server)"
    if importlib.util.find_spec("redis") is None:
        return "the python redis package is missing (.venv/bin/pip install -e '.[redis]')"
    return ""


def parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per run (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default 3)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (default 4)")
    parser.add_argument(
        "--worker-classes",
        type=parse_list,
        default="sync,gthread",
        help="gunicorn worker classes (default sync,gthread)",
    )
    parser.add_argument(
        "--caches",
        type=parse_list,
        default="locmem,redis",
        help="caches to run with (default locmem,redis; redis only when available)",
    )
    parser.add_argument(
        "--flush-probe",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="one more run (first worker class, locmem), API_KEY_LAST_USED_FLUSH_SECONDS=SECONDS; 0 skips",
    )
    parser.add_argument(
        "--single-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first one run (first worker class, locmem) with one client of each kind (default on)",
    )
    parser.add_argument(
        "--serial-repeat", type=int, default=5, help="measured in-process passes over every kind (default 5)"
    )
    parser.add_argument("--json-out", type=Path, help="also write every run's figures here as JSON")
    parser.add_argument("--tenants", type=int, default=4, help="tenants onboarded (default 4)")
    parser.add_argument("--api-clients", type=int, default=6, help="tenant-key API clients (default 6)")
    parser.add_argument("--admin-clients", type=int, default=2, help="admin-token API clients (default 2)")
    parser.add_argument("--portal-clients", type=int, default=3, help="logged-in portal clients (default 3)")
    parser.add_argument("--write-clients", type=int, default=1, help="writing clients (default 1)")
    args = parser.parse_args(argv)
    if not set(args.worker_classes) <= {"sync", "gthread"} or not args.worker_classes:
        parser.error("--worker-classes: sync and/or gthread")
    if not set(args.caches) <= {"locmem", "redis"} or not args.caches:
        parser.error("--caches: locmem and/or redis")
    if (
        min(args.tenants, args.workers, args.threads, args.serial_repeat) < 1
        or args.duration <= 0
        or args.flush_probe < 0
    ):
        parser.error(
            "--tenants, --workers, --threads and --duration must be positive, --flush-probe 0 or more"
        )
    if args.write_clients > args.tenants:
        parser.error("--write-clients may not exceed --tenants: each writer needs a tenant of its own")
    return args


def plan_setups(args: argparse.Namespace) -> tuple[list[Setup], str]:
    caches = list(args.caches)
    skipped = ""
    if "redis" in caches:
        skipped = redis_available()
        if skipped:
            caches.remove("redis")
    setups = [Setup(worker_class, cache) for cache in caches for worker_class in args.worker_classes]
    if args.flush_probe and "locmem" in caches:
        setups.append(Setup(args.worker_classes[0], "locmem", last_used_flush=args.flush_probe))
    if args.single_baseline and "locmem" in caches:
        # First, so that a machine that gets busier during the run does not flatter it.
        setups.insert(0, Setup(args.worker_classes[0], "locmem", single_clients=True))
    return setups, skipped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setups, redis_skipped = plan_setups(args)
    if not setups:
        print(f"nothing to run: {redis_skipped}")
        return 2
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    emulator = EmulatorProcess(home=work / "home", log_path=work / "emulator.log")
    prepare_environment(work, emulator)
    print(f"Load benchmark on {versions()}")
    if redis_skipped:
        print(f"Redis runs skipped: {redis_skipped}.")
    results: dict[str, dict[str, Any]] = {}
    try:
        emulator.start()
        seeding = time.perf_counter()
        scenario = seed(tenants=args.tenants)
        print(
            f"Seeded in {time.perf_counter() - seeding:.1f} s: {args.tenants} SCALE tenants (key with every "
            f"scope, an OPENAI credential, 3 schedules, 1 finished and 1 queued run each; API-call limits "
            f"raised to {API_CALLS_PER_MINUTE:,}/min so the load stays within them), a superuser with an "
            "admin token."
        )
        costs = flush_costs(scenario["tenants"])
        assert emulator.process is not None  # started above
        profiles = serial_profile(scenario, emulator.process.pid, args.serial_repeat)
        print(
            f"\nEach request kind alone, in-process through Django's test client (no HTTP, no concurrency; "
            f"median of {args.serial_repeat} after a pass that fills the caches):\n"
        )
        print(render_profile(profiles))
        print()
        print(
            f"Inline bookkeeping writes on the idle emulator (median of {FLUSH_REPEATS}, {args.tenants} "
            f"pending): last_used_at flush {costs['last_used_at']:.0f} ms, API-call count flush "
            f"{costs['api_calls']:.0f} ms."
        )
        for setup in setups:
            results[setup.label] = drive(setup, args, work, scenario, emulator.process.pid)
    finally:
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)

    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {"runs": results, "serial": {k: vars(p) for k, p in profiles.items()}, "flush_costs": costs}
            )
        )
    print("\nSide by side (measured window only):\n")
    print(side_by_side(results))
    print("\nPer request kind: BigQuery jobs, time alone (in-process) and latency under each setup:\n")
    print(per_kind(results, profiles))
    print("\nInterpretation")
    for note in interpret(results, setups, costs, args.workers, profiles):
        print(note)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\nTotal wall time {time.perf_counter() - started:.1f} s; load average at the end {load}.")
    failed = [label for label, r in results.items() if r["exit"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
