"""Pipeline workers through the HTTP worker API of a real gunicorn, BigQuery being the realism proxy.

The worker side, end to end: W worker threads (8, 32, 64, 128) each loop claim -> one heartbeat -> complete
(SUCCEEDED, one step log) against `/api/v1/worker/...` with a worker token, on gunicorn with the
production config (tests/support/servers.py) and `manage.py run_periodic` beside it (which writes the
reports' rows into the tenants' datasets, a part of the tenants at a time), whose BigQuery is the
emulator behind `tests/support/bigquery_realism.py` (SELECT 0.5 s, DML 1.5 s, DDL 1 s, metadata 0.2 s;
at most 2 UPDATE/DELETE/MERGE running per table, 20 pending, BigQuery's refusal beyond).

Setup (not measured, straight to the emulator, realism off): 100 tenants onboarded on PROFESSIONAL
through `tenant_onboard`, their concurrent limit raised by `subscription_set_limits` (so the quota does
not cap the figure), one config each, and a burst of 2,000 due runs enqueued by the scheduler's own
`runs_enqueue` (2 MERGEs). Per point: runs completed per minute, p50/p99 per call, every non-2xx by
status and error code, mutating statements per central table per minute (the proxy's counts); then a
drain (no new claims, held runs finished) and a check that each tenant's usage row counts as many
running runs as the queue holds RUNNING entries with a slot. `--server-shapes 4x64,1x1536` runs each
point on each gunicorn shape (processes x threads) in turn, for a side-by-side summary;
`--tenant-rows 60/1,300/30` does the same for run_periodic's flush of the reports' rows (each tenant's
period in seconds / the parts the tenants are flushed in).

Bounded: every loop stops at its deadline or its count; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))
# Everything the run writes goes to a temporary directory, removed at the end. The bench process and
# gunicorn share it (SQLite with the worker token, the embedded cache), as one machine's processes do.
BENCH_DIR = Path(tempfile.mkdtemp(prefix="bench-worker-realism-"))
os.environ["DATA_DIR"] = str(BENCH_DIR)
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convergence.settings")

import django  # noqa: E402

django.setup()
# 128 client threads and the gateway's pool: urllib3 warns for every connection it drops after use.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from google.cloud import bigquery  # noqa: E402

from bench.worker_realism_points import Point, Sample, print_point, print_summary  # noqa: E402
from bigquery_backend.client import BigQueryGateway, get_gateway  # noqa: E402
from bigquery_backend.emulator import EmulatorProcess  # noqa: E402
from tenants_app.models import (  # noqa: E402
    PlanName,
    RunState,
    TenantPipelineExecutionQueue,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository  # noqa: E402
from tenants_app.services.bootstrap import bigquery_bootstrap  # noqa: E402
from tests.support.bigquery_realism import BigQueryRealismProxy, realism_proxy  # noqa: E402
from tests.support.run_burst import enqueue_due_burst, onboard_tenants  # noqa: E402
from tests.support.servers import PeriodicProcess, PortalServer, ServerEnvironment  # noqa: E402

ACTOR = "system:bench"
# Client-side bounds. HTTP (--http-timeout): a patient worker; a claim of today's path makes several
# statements, each allowed BIGQUERY_RETRY_DEADLINE_SECONDS (20 s) of retries.
HTTP_TIMEOUT_SECONDS = 130.0
IDLE_SECONDS = 1.0  # after a 204 (nothing claimable): a real worker polls, it does not spin
MAX_RETRY_AFTER_SECONDS = 30.0
MAX_ATTEMPTS = 8  # per heartbeat or completion of one run
MAX_CLAIMS_PER_WORKER = 10_000
# Requests a client gave up on go on inside gunicorn: the slot check waits until BigQuery has been idle
# this long (above the gateway's longest backoff, 4 s), at most QUIET_LIMIT_SECONDS.
QUIET_SECONDS = 10.0
QUIET_LIMIT_SECONDS = 300.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="8,32,64,128", help="worker threads per point, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="claiming time per point")
    parser.add_argument("--drain-seconds", type=float, default=300.0, help="most time to finish held runs")
    parser.add_argument("--max-runs", type=int, default=1, help="sent as max_runs in the claim body if > 1")
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2000, help="due runs enqueued before the first point")
    parser.add_argument(
        "--concurrent-limit", type=int, default=20, help="per-tenant override (0: PROFESSIONAL's own 3)"
    )
    parser.add_argument(
        "--daily-limit",
        type=int,
        default=0,
        help="per-tenant override (0: PROFESSIONAL's own 25), for more than 25 runs per tenant",
    )
    # The worker API's own gunicorn as docs/operations.md has it: one process whose threads cover every
    # waiting request (workers x max_runs + workers), since a process's requests share one tick.
    parser.add_argument("--server-workers", type=int, default=1, help="gunicorn processes")
    parser.add_argument(
        "--server-threads",
        type=int,
        default=1536,
        help="threads per gunicorn process (requests of a batched path mostly wait for their tick)",
    )
    parser.add_argument(
        "--server-shapes",
        default="",
        help="gunicorn shapes compared point by point, as PROCESSESxTHREADS, comma-separated (4x64,1x1536); "
        "overrides --server-workers and --server-threads",
    )
    parser.add_argument(
        "--tenant-rows",
        default="",
        help="run_periodic's flush of the reports' rows compared point by point, as SECONDS/PARTS, "
        "comma-separated (60/1,300/30); default: the settings' own",
    )
    parser.add_argument(
        "--parallel-runs",
        action="store_true",
        help="a worker runs the runs of one claim side by side (as one with max_runs slots would)",
    )
    parser.add_argument(
        "--http-timeout",
        type=float,
        default=HTTP_TIMEOUT_SECONDS,
        help="seconds a worker waits for an answer",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="realism latency scale (1.0: the defaults)")
    args = parser.parse_args(argv)
    args.workers = [int(item) for item in args.workers.split(",") if item.strip()]
    try:
        args.shapes = [_shape(item) for item in args.server_shapes.split(",") if item.strip()] or [
            (args.server_workers, args.server_threads)
        ]
    except ValueError:
        parser.error("--server-shapes takes PROCESSESxTHREADS items, such as 4x64,1x1536")
    try:
        args.tenant_rows = [_tenant_rows(item) for item in args.tenant_rows.split(",") if item.strip()]
    except ValueError:
        parser.error("--tenant-rows takes SECONDS/PARTS items where PARTS divides SECONDS, such as 300/30")
    if any(not 1 <= processes <= 16 or not 1 <= threads <= 4096 for processes, threads in args.shapes):
        parser.error("a server shape takes 1-16 processes and 1-4096 threads")
    if not args.workers or min(args.workers) < 1 or max(args.workers) > 256:
        parser.error("--workers takes 1 to 256 per point")
    if (
        not 1 <= args.seconds <= 600
        or not 0 <= args.drain_seconds <= 900
        or not 1 <= args.http_timeout <= 600
    ):
        parser.error("--seconds takes 1..600, --drain-seconds 0..900 and --http-timeout 1..600")
    if args.tenants < 1 or args.runs < args.tenants or args.max_runs < 1:
        parser.error("--tenants >= 1, --runs >= --tenants and --max-runs >= 1")
    return args


def _shape(text: str) -> tuple[int, int]:
    processes, _, threads = text.strip().partition("x")
    return int(processes), int(threads)


def _tenant_rows(text: str) -> str:
    seconds, parts = (int(number) for number in text.strip().partition("/")[::2])
    if parts < 1 or seconds < parts or seconds % parts:
        raise ValueError(text)
    return f"{seconds}/{parts}"


def periodic_environment(environment: ServerEnvironment, tenant_rows: str) -> ServerEnvironment:
    """The environment run_periodic gets for a point: with the flush compared, if it is."""
    if not tenant_rows:
        return environment
    seconds, parts = tenant_rows.split("/")
    extra = {"PERIODIC_TENANT_ROWS_SECONDS": seconds, "PERIODIC_TENANT_ROWS_PARTS": parts}
    return dataclasses.replace(environment, extra={**environment.extra, **extra})


# --- setup (realism off: straight to the emulator) --------------------------------------------------
def tenant_ids(count: int) -> list[str]:
    return [f"bench_{index:03d}" for index in range(count)]


# --- one worker ----------------------------------------------------------------------------------------
class WorkerClient:
    """One worker thread's HTTP session: every call timed and recorded in the point."""

    def __init__(self, base_url: str, token: str, point: Point, *, timeout: float) -> None:
        self.base = f"{base_url}/api/v1/worker"
        self.timeout = timeout
        self.point = point
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def post(self, call: str, path: str, body: dict[str, Any]) -> tuple[int, Any, float]:
        """(status, JSON body or None, Retry-After seconds); status 0 for a timeout or dropped connection."""
        started = time.monotonic()
        status, code, payload, retry_after = 0, "", None, 1.0
        try:
            response = self.session.post(self.base + path, json=body, timeout=self.timeout)
            status = response.status_code
            if response.content:
                payload = response.json()
            retry_after = float(response.headers.get("Retry-After") or 1.0)
            if status >= 300:
                code = (
                    str((payload or {}).get("error", {}).get("code", "")) if isinstance(payload, dict) else ""
                )
        except requests.Timeout:
            code = "client_timeout"
        except (requests.ConnectionError, ValueError) as exc:
            code = type(exc).__name__
        self.point.record(Sample(call, started, time.monotonic() - started, status, code))
        return status, payload, min(retry_after, MAX_RETRY_AFTER_SECONDS)


def worker_loop(client: WorkerClient, worker_id: str, max_runs: int, parallel: bool) -> None:
    """Claim until the point's deadline; finish every run claimed, within the drain deadline."""
    point = client.point
    body: dict[str, Any] = {"worker_id": worker_id}
    if max_runs > 1:
        body["max_runs"] = max_runs
    for _ in range(MAX_CLAIMS_PER_WORKER):
        if time.monotonic() >= point.deadline:
            return
        status, payload, retry_after = client.post("claim", "/claim", body)
        if status == 200:
            runs = claimed_runs(payload)
            with point.lock:
                point.runs_per_claim[len(runs)] += 1
            if parallel and len(runs) > 1:
                finishing = [threading.Thread(target=finish, args=(client, worker_id, run)) for run in runs]
                for thread in finishing:
                    thread.start()
                for thread in finishing:
                    thread.join()
            else:
                for run in runs:
                    finish(client, worker_id, run)
        else:
            # 204: nothing claimable now; an error: back off as told (Retry-After), never past the deadline.
            pause = IDLE_SECONDS if status == 204 else retry_after
            time.sleep(max(0.0, min(pause, point.deadline - time.monotonic())))


def claimed_runs(payload: Any) -> list[dict[str, Any]]:
    """Today's answer is one run object; a batched claim may answer {"runs": [...]}."""
    if isinstance(payload, dict) and isinstance(payload.get("runs"), list):
        return [run for run in payload["runs"] if isinstance(run, dict)]
    return [payload] if isinstance(payload, dict) and "run_id" in payload else []


def finish(client: WorkerClient, worker_id: str, run: dict[str, Any]) -> None:
    """One heartbeat, then the completion; each repeated on 503/429/timeouts (both are idempotent)."""
    base = {"worker_id": worker_id, "attempt": run.get("attempt")}
    path = f"/runs/{run['run_id']}"
    if not report(client, "heartbeat", f"{path}/heartbeat", base):
        return
    now = datetime.now(UTC).isoformat()
    step = {"step_index": 0, "step_name": "extract", "step_type": "query", "status": "SUCCEEDED"}
    step |= {"start_time": now, "end_time": now, "rows_processed": 1}
    if report(client, "complete", f"{path}/complete", {**base, "status": "SUCCEEDED", "step_logs": [step]}):
        client.point.count_completion(time.monotonic())


def report(client: WorkerClient, call: str, path: str, body: dict[str, Any]) -> bool:
    point = client.point
    for _ in range(MAX_ATTEMPTS):
        status, _, retry_after = client.post(call, path, body)
        if 200 <= status < 300:
            return True
        if status not in (0, 429, 503) or time.monotonic() + retry_after >= point.drain_deadline:
            break
        time.sleep(retry_after)
    with point.lock:
        point.abandoned[call] += 1
    return False


# --- one point -----------------------------------------------------------------------------------------
def run_point(
    workers: int, args: argparse.Namespace, url: str, token: str, proxy: BigQueryRealismProxy, *, shape: str
) -> Point:
    point = Point(workers=workers, seconds=args.seconds, shape=shape)
    clients = [WorkerClient(url, token, point, timeout=args.http_timeout) for _ in range(workers)]
    threads = [
        threading.Thread(
            target=worker_loop,
            args=(client, f"bench-w{workers}-{i}", args.max_runs, args.parallel_runs),
            daemon=True,
        )
        for i, client in enumerate(clients)
    ]
    proxy.reset()
    point.started = time.monotonic()
    point.deadline = point.started + args.seconds
    point.drain_deadline = point.deadline + args.drain_seconds
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, point.deadline - time.monotonic()))
    point.window_counts, point.window_refusals = proxy.counts(), proxy.refusals()
    for thread in threads:
        thread.join(timeout=max(0.0, point.drain_deadline + args.http_timeout - time.monotonic()))
    point.drain_seconds = time.monotonic() - point.deadline
    quiet_started = time.monotonic()
    if not wait_until_quiet(proxy):
        point.check.append(
            f"BigQuery was still busy {QUIET_LIMIT_SECONDS:.0f} s after the drain: checked anyway"
        )
    point.quiet_seconds = time.monotonic() - quiet_started
    point.total_counts, point.refusals, point.duplicates = proxy.counts(), proxy.refusals(), proxy.duplicates
    if any(thread.is_alive() for thread in threads):
        point.check.append("some worker threads were still busy at the drain deadline (left as daemons)")
    for client in clients:
        client.session.close()
    return point


def wait_until_quiet(proxy: BigQueryRealismProxy) -> bool:
    """Until no statement arrived for QUIET_SECONDS and none runs or waits in a table's lane."""
    limit = time.monotonic() + QUIET_LIMIT_SECONDS
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < limit:
        counts = proxy.counts()
        total = sum(sum(kinds.values()) for kinds in counts.values())
        busy = any(
            proxy.lane(table, lane).running or proxy.lane(table, lane).pending
            for table in counts
            for lane in ("mutating", "insert")
        )
        if total != last or busy:
            last, quiet_since = total, time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_SECONDS:
            return True
        time.sleep(0.5)
    return False


def check_slots(gateway: BigQueryGateway, *, tenant_rows: str = "") -> list[str]:
    """Each tenant's usage row vs the queue's RUNNING entries holding a slot (one SELECT, not proxied)."""
    usage = central_repository(TenantUsageQuota).table
    queue = central_repository(TenantPipelineExecutionQueue).table
    sql = (
        "SELECT u.tenant_id, u.concurrent_pipelines_running AS counted, "
        "COUNTIF(q.state = @running AND q.usage_date IS NOT NULL) AS holding, "
        "COUNTIF(q.state = @running AND q.usage_date IS NULL) AS unadmitted "
        f"FROM {usage} AS u LEFT JOIN {queue} AS q ON q.tenant_id = u.tenant_id "
        "WHERE u.usage_date = @today GROUP BY u.tenant_id, u.concurrent_pipelines_running"
    )
    params = [
        bigquery.ScalarQueryParameter("running", "STRING", RunState.RUNNING),
        bigquery.ScalarQueryParameter("today", "DATE", timezone.now().astimezone(UTC).date()),
    ]
    rows = gateway.query(sql, params).rows
    lines = []
    leaked = [r for r in rows if r["counted"] > r["holding"]]
    freed = [r for r in rows if r["counted"] < r["holding"]]
    running = sum(r["holding"] for r in rows)
    unadmitted = sum(r["unadmitted"] for r in rows)
    lines.append(
        f"slots: {len(rows)} usage rows, {running} RUNNING entries holding a slot, usage rows count "
        f"{sum(r['counted'] for r in rows)}; {len(leaked)} tenants count more (leaked), {len(freed)} fewer "
        f"(double-freed); {unadmitted} RUNNING entries without a slot (a claim cut off between its "
        "compare-and-set and its admission). Every worker thread has ended, so RUNNING entries left are "
        "runs no worker knows it holds (its claim answered an error or timed out): leases run out in 5 min"
    )
    for row in (leaked + freed)[:10]:
        lines.append(f"  mismatch {row['tenant_id']}: usage row {row['counted']}, queue {row['holding']}")
    states = gateway.query(
        f"SELECT state, COUNT(*) AS n, COUNTIF(tenant_rows IS NOT NULL) AS waiting FROM {queue} "
        "GROUP BY state ORDER BY state"
    ).rows
    seconds, parts = (
        tenant_rows or f"{settings.PERIODIC_TENANT_ROWS_SECONDS}/{settings.PERIODIC_TENANT_ROWS_PARTS}"
    ).split("/")
    lines.append(
        "queue: "
        + ", ".join(f"{r['state']} {r['n']}" for r in states)
        + f"; {sum(r['waiting'] for r in states)} entries hold rows not yet in their tenant's dataset "
        f"(run_periodic writes each tenant's every {seconds} s, in {parts} parts)"
    )
    return lines


# --- reporting -------------------------------------------------------------------------------------------
def log_lines(label: str, process: PortalServer | PeriodicProcess, seen: set[str]) -> list[str]:
    """A process's log lines (WARNING and up) not reported before: counted, first words of a few."""
    lines = [line for line in process.log_text().splitlines() if line.strip() and line not in seen]
    seen.update(lines)
    if not lines:
        return [f"{label}: nothing new"]
    # Digits (times, pids, ids) masked, so the same message from many requests counts as one kind.
    kinds = Counter(re.sub(r"\S*\d\S*", "#", line)[:140] for line in lines)
    return [f"{label}: {len(lines)} new lines"] + [f"  {n} x {text}" for text, n in kinds.most_common(5)]


def versions() -> str:
    return (
        f"Python {platform.python_version()}, Django {version('django')}, gunicorn {version('gunicorn')}, "
        f"bqemulator {version('bqemulator')}, google-cloud-bigquery {version('google-cloud-bigquery')}, "
        f"{os.cpu_count()} CPUs"
    )


# --- main ------------------------------------------------------------------------------------------------
def setup(args: argparse.Namespace, environment: ServerEnvironment) -> str:
    """Django's tables, the datasets, tenants, the burst of runs and a worker token; returns the token."""
    started = time.perf_counter()
    environment.manage("migrate", "--noinput", "-v", "0")
    bigquery_bootstrap()
    tenants = tenant_ids(args.tenants)
    onboard_tenants(
        tenant_ids=tenants,
        plan=PlanName.PROFESSIONAL,
        concurrent_limit=args.concurrent_limit,
        daily_limit=args.daily_limit,
        actor=ACTOR,
    )
    onboarded = time.perf_counter()
    enqueued = enqueue_due_burst(tenant_ids=tenants, runs=args.runs, now=timezone.now(), actor=ACTOR)
    token = environment.manage(
        "create_worker_token", "--username", "bench-worker", "--name", "bench", "--create", "-v", "0"
    ).strip()
    limit = (
        f"concurrent limit overridden to {args.concurrent_limit}" if args.concurrent_limit else "plan limits"
    ) + (f", daily limit overridden to {args.daily_limit}" if args.daily_limit else "")
    print(
        f"Setup (realism off) {time.perf_counter() - started:.1f} s: {len(tenants)} tenants onboarded on "
        f"PROFESSIONAL ({limit}) in {onboarded - started:.1f} s; {enqueued} due runs enqueued "
        f"(runs_enqueue, 2 MERGEs) in {time.perf_counter() - onboarded:.1f} s; a worker token.",
        flush=True,
    )
    return token


def run(args: argparse.Namespace, emulator: EmulatorProcess) -> int:
    with realism_proxy(emulator.url, scale=args.scale) as proxy:
        environment = ServerEnvironment(data_dir=BENCH_DIR, emulator_url=proxy.url, project=emulator.project)
        central = environment.tenants_dataset
        with override_settings(
            BIGQUERY_EMULATOR_HOST=emulator.url, BIGQUERY_PROJECT=emulator.project, TENANTS_DATASET=central
        ):
            token = setup(args, environment)
            servers: dict[str, PortalServer] = {}
            periodic: PeriodicProcess | None = None
            points: list[Point] = []
            try:
                for processes, threads in args.shapes:
                    servers[f"{processes}x{threads}"] = PortalServer(
                        environment, workers=processes, threads=threads
                    ).start()
                print(
                    "gunicorn (processes x threads): "
                    + ", ".join(f"{shape} on {server.url}" for shape, server in servers.items())
                    + (" (each point runs on each shape in turn)" if len(servers) > 1 else "")
                    + f"; realism scale {args.scale}; "
                    f"{args.seconds:.0f} s per point, drain at most {args.drain_seconds:.0f} s; "
                    f"HTTP timeout {args.http_timeout:.0f} s"
                    + (f"; max_runs={args.max_runs} sent in each claim" if args.max_runs > 1 else "")
                    + ("; the runs of a claim run side by side" if args.parallel_runs else ""),
                    flush=True,
                )
                seen = {shape: set(server.log_text().splitlines()) for shape, server in servers.items()}
                seen_periodic: set[str] = set()
                running_rows: str | None = None
                for workers in args.workers:
                    for shape, server in servers.items():
                        for tenant_rows in args.tenant_rows or [""]:
                            if tenant_rows != running_rows:
                                # As production runs it beside gunicorn, through the proxy (its
                                # statements are counted); restarted only when the flush compared changes.
                                if periodic is not None:
                                    periodic.stop()
                                periodic = PeriodicProcess(periodic_environment(environment, tenant_rows))
                                periodic.start()
                                running_rows, seen_periodic = tenant_rows, set()
                            point = run_point(workers, args, server.url, token, proxy, shape=shape)
                            point.tenant_rows = tenant_rows
                            point.check.extend(check_slots(get_gateway(), tenant_rows=tenant_rows))
                            point.check.extend(log_lines("server log", server, seen[shape]))
                            point.check.extend(log_lines("run_periodic log", periodic, seen_periodic))
                            print_point(point, central)
                            points.append(point)
            finally:
                for server in servers.values():
                    server.stop()
                if periodic is not None:
                    periodic.stop()
            print_summary(points, central)
            mismatched = any("mismatch" in line for p in points for line in p.check)
    return 1 if mismatched else 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit:  # --help or a bad option: the directory made at import is not needed
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
        raise
    started = time.perf_counter()
    print(f"Worker API under BigQuery realism on {versions()}", flush=True)
    emulator = EmulatorProcess(home=BENCH_DIR / "home", log_path=BENCH_DIR / "emulator.log")
    try:
        emulator.start()
        status = run(args, emulator)
    finally:
        emulator.stop()
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\nTotal wall time {time.perf_counter() - started:.1f} s; load average at the end {load}.")
    return status


if __name__ == "__main__":
    sys.exit(main())
