"""Quota admission on the embedded emulator: throughput, correctness under races, statements per run.

Side by side, for 1, 8 and 32 concurrent clients:
- `quota_admit` (the product: one atomic conditional UPDATE), and
- a naive read-then-write admission (SELECT the row, check in Python, UPDATE +1), kept here only to
  show what the conditional UPDATE prevents.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convergence.settings")

import django  # noqa: E402

django.setup()

from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from google.cloud import bigquery  # noqa: E402

from bigquery_backend.client import get_gateway  # noqa: E402
from bigquery_backend.emulator import EmulatorProcess  # noqa: E402
from bigquery_backend.repository import Add  # noqa: E402
from tenants_app.models import TenantProfile, TenantStatus, TenantSubscription, TenantUsageQuota  # noqa: E402
from tenants_app.repositories import central_repository  # noqa: E402
from tenants_app.services.bootstrap import bigquery_bootstrap  # noqa: E402
from tenants_app.services.errors import QuotaExceeded  # noqa: E402
from tenants_app.services.onboarding import subscription_id_for, usage_id_for  # noqa: E402
from tenants_app.services.quotas import quota_admit, quota_release  # noqa: E402
from tenants_app.services.usage_rows import usage_rows_start  # noqa: E402

DML = ("UPDATE", "MERGE", "INSERT", "DELETE")
NOW = datetime(2031, 3, 18, 12, 0, tzinfo=UTC)
DAY = NOW.date()


@dataclass
class Result:
    """One scenario at one concurrency."""

    approach: str
    scenario: str
    clients: int
    attempts: int = 0
    admitted: int = 0
    expected: int = 0
    counter_after: int = 0
    seconds: float = 0.0
    jobs: int = 0
    dml: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return self.admitted == self.expected and self.counter_after == self.expected

    @property
    def per_second(self) -> float:
        return self.admitted / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000 if ordered else 0.0


def make_tenant(*, daily: int, used: int, concurrent: int) -> str:
    """A tenant with a subscription and today's row with `used` runs already counted (3 DML)."""
    tenant_id = f"b_{uuid.uuid4().hex[:12]}"
    central_repository(TenantProfile).insert(
        TenantProfile(
            tenant_id=tenant_id,
            company_name="Bench Ltd",
            admin_email="bench@example.com",
            tenant_dataset_id=tenant_id,
            status=TenantStatus.ACTIVE,
            subscription_plan="SCALE",
            created_at=timezone.now(),
        )
    )
    central_repository(TenantSubscription).insert(
        TenantSubscription(
            subscription_id=subscription_id_for(tenant_id),
            tenant_id=tenant_id,
            plan_name="SCALE",
            status="ACTIVE",
            daily_limit=daily,
            monthly_limit=daily * 30,
            concurrent_limit=concurrent,
            created_at=timezone.now(),
        )
    )
    usage_rows_start(day=DAY, tenant_id=tenant_id)
    if used:
        central_repository(TenantUsageQuota).update(
            usage_id_for(tenant_id, DAY), {"pipelines_run_today": used, "pipelines_run_month": used}
        )
    return tenant_id


def naive_admit(*, tenant_id: str, now: datetime) -> None:
    """Read-then-write: the race the product avoids. Raises QuotaExceeded like quota_admit."""
    repository = central_repository(TenantUsageQuota)
    row = repository.get(usage_id_for(tenant_id, now.date()))
    if row.pipelines_run_today >= row.daily_limit or row.concurrent_pipelines_running >= (
        row.concurrent_limit or 0
    ):
        raise QuotaExceeded("full", limit="daily", figures={}, retry_after=1)
    repository.update(
        row.usage_id,
        {
            "pipelines_run_today": Add(1),
            "pipelines_run_month": Add(1),
            "concurrent_pipelines_running": Add(1),
        },
    )


APPROACHES: dict[str, Callable[..., object]] = {
    "conditional UPDATE": quota_admit,
    "read-then-write": naive_admit,
}


def run_clients(clients: int, work: Callable[[Result], None], result: Result) -> None:
    """Start `clients` threads at one barrier, each running `work`; time the whole."""
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        barrier.wait()
        work(result)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    gateway = get_gateway()
    with gateway.count_jobs() as counter:
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        result.seconds = time.perf_counter() - started
    result.jobs = counter.jobs
    result.dml = sum(1 for sql in counter.statements if sql.lstrip().upper().startswith(DML))


def throughput(approach: str, clients: int, total: int) -> Result:
    """`total` admissions split over `clients`, limits far away: admitted per second and latency."""
    admit = APPROACHES[approach]
    tenant_id = make_tenant(daily=100_000, used=0, concurrent=100_000)
    result = Result(approach, "throughput", clients, expected=total)
    lock = threading.Lock()
    per_client = total // clients

    def work(result: Result) -> None:
        for _ in range(per_client):
            started = time.perf_counter()
            admit(tenant_id=tenant_id, now=NOW)
            elapsed = time.perf_counter() - started
            with lock:
                result.attempts += 1
                result.admitted += 1
                result.latencies.append(elapsed)

    result.expected = per_client * clients
    run_clients(clients, work, result)
    row = central_repository(TenantUsageQuota).get(usage_id_for(tenant_id, DAY))
    result.counter_after = row.pipelines_run_today
    return result


def race(approach: str, clients: int, remaining: int) -> Result:
    """Every client admits until refused, racing for the last `remaining` daily slots."""
    admit = APPROACHES[approach]
    tenant_id = make_tenant(daily=10 + remaining, used=10, concurrent=100_000)
    result = Result(approach, f"race for {remaining}", clients, expected=remaining)
    lock = threading.Lock()

    def work(result: Result) -> None:
        while True:
            started = time.perf_counter()
            try:
                admit(tenant_id=tenant_id, now=NOW)
                admitted = True
            except QuotaExceeded:
                admitted = False
            elapsed = time.perf_counter() - started
            with lock:
                result.attempts += 1
                result.admitted += admitted
                result.latencies.append(elapsed)
            if not admitted:
                return

    run_clients(clients, work, result)
    row = central_repository(TenantUsageQuota).get(usage_id_for(tenant_id, DAY))
    result.counter_after = row.pipelines_run_today - 10
    return result


@dataclass
class Cost:
    what: str
    jobs: int
    dml: int


def costs() -> list[Cost]:
    """Jobs and DML statements of each kind of call, measured one call at a time."""
    gateway = get_gateway()
    measured = []

    def measure(what: str, call: Callable[[], object]) -> None:
        with gateway.count_jobs() as counter, contextlib.suppress(QuotaExceeded):
            call()
        dml = sum(1 for sql in counter.statements if sql.lstrip().upper().startswith(DML))
        measured.append(Cost(what, counter.jobs, dml))

    tenant_id = make_tenant(daily=2, used=0, concurrent=10)
    fresh = make_tenant(daily=2, used=0, concurrent=10)
    central_repository(TenantUsageQuota).delete(usage_id_for(fresh, DAY))
    measure("admission, first of the day (row created)", lambda: quota_admit(tenant_id=fresh, now=NOW))
    measure("admission, row exists", lambda: quota_admit(tenant_id=tenant_id, now=NOW))
    quota_admit(tenant_id=tenant_id, now=NOW)
    measure("refused admission (daily limit)", lambda: quota_admit(tenant_id=tenant_id, now=NOW))
    measure(
        "release with outcome", lambda: quota_release(tenant_id=tenant_id, usage_date=DAY, succeeded=True)
    )
    return measured


def render(results: Sequence[Result]) -> str:
    header = (
        f"{'approach':<18}  {'scenario':<15}  {'clients':>7}  {'attempts':>8}  {'admitted':>8}  "
        f"{'expected':>8}  {'counter':>7}  {'correct':>7}  {'adm/s':>6}  {'p50 ms':>7}  {'p95 ms':>7}  "
        f"{'jobs/adm':>8}  {'DML/adm':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        per = max(r.admitted, 1)
        lines.append(
            f"{r.approach:<18}  {r.scenario:<15}  {r.clients:>7}  {r.attempts:>8}  {r.admitted:>8}  "
            f"{r.expected:>8}  {r.counter_after:>7}  {'yes' if r.correct else 'NO':>7}  "
            f"{r.per_second:>6.1f}  {r.pct(0.5):>7.1f}  {r.pct(0.95):>7.1f}  "
            f"{r.jobs / per:>8.2f}  {r.dml / per:>7.2f}"
        )
    return "\n".join(lines)


def versions() -> str:
    import bqemulator
    import duckdb

    return (
        f"bqemulator {getattr(bqemulator, '__version__', '?')} (DuckDB {duckdb.__version__}, in memory), "
        f"google-cloud-bigquery {bigquery.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument("--total", type=int, default=64, help="admissions per throughput run (default 64)")
    parser.add_argument("--remaining", type=int, default=5, help="slots left in the race (default 5)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="races per concurrency and approach (default 3)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # 32 threads share the client's pool of 10 connections: extra ones are opened and dropped, which
    # urllib3 reports at WARNING for every request. It is part of the measured cost, not news.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    levels = [int(value) for value in args.clients.split(",") if value]
    started = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-admission-") as temp:
        root = Path(temp)
        emulator = EmulatorProcess(home=root / "home", log_path=root / "emulator.log")
        try:
            emulator.start()
            with override_settings(
                BIGQUERY_EMULATOR_HOST=emulator.url,
                BIGQUERY_PROJECT=emulator.project,
                TENANTS_DATASET=f"bench_{uuid.uuid4().hex[:8]}",
                DATA_DIR=root,
            ):
                bigquery_bootstrap()
                cost_table = costs()
                for clients in levels:
                    for approach in APPROACHES:
                        results.append(throughput(approach, clients, args.total))
                for clients in levels:
                    for approach in APPROACHES:
                        for _ in range(args.rounds):
                            results.append(race(approach, clients, args.remaining))
        finally:
            emulator.stop()

    print(f"Quota admission on {versions()}")
    print(
        f"Throughput: {args.total} admissions split over the clients, limits far away. Race: every client "
        f"admits until refused, {args.remaining} daily slots left, {args.rounds} rounds. 'counter' is the "
        "row's count afterwards (race: above the 10 already used); 'correct' = admitted and counter both "
        "equal the expected figure."
    )
    print()
    print(render(results))
    print()
    print("Cost per call (jobs and DML statements, one call at a time):")
    for cost in cost_table:
        print(f"  {cost.what:<45} {cost.jobs} jobs, {cost.dml} DML")
    print()
    ours = [r for r in results if r.approach == "conditional UPDATE"]
    naive = [r for r in results if r.approach != "conditional UPDATE"]
    wrong = [r for r in naive if not r.correct]
    print(
        f"conditional UPDATE: {sum(r.correct for r in ours)}/{len(ours)} runs exact; "
        f"read-then-write: {len(wrong)}/{len(naive)} runs admitted more (or counted fewer) than allowed"
        + (f", worst {max(r.admitted - r.expected for r in wrong)} extra." if wrong else ".")
    )
    for clients in levels:
        mine = [r for r in ours if r.scenario == "throughput" and r.clients == clients]
        if mine:
            rate, p50 = mine[0].per_second, mine[0].pct(0.5)
            print(f"  {clients:>2} client(s): {rate:.1f} admissions/s, p50 {p50:.0f} ms")
    print(f"Total wall time {time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.2f}.")
    return 0 if all(r.correct for r in ours) else 1


if __name__ == "__main__":
    sys.exit(main())
