"""Worker claims under 1, 8 and 32 concurrent workers: our compare-and-set claim beside a naive one.

For each worker count, a fresh batch of runs is queued and the workers (real threads, each its own
loop) claim until the queue is empty. Reported per approach: claims per second, runs claimed twice
(must be 0), BigQuery jobs and DML statements per claimed run; then the cost of one completion (with
step logs and a DQ result) and of one failure report.

- `compare-and-set` is `tenants_app.services.run_queue.run_claim`: candidate query, one conditional UPDATE
  that only one worker can match, quota admission, then the run row.
- `read-then-write` is what the original system did: read the top queued run, then set it RUNNING by
  key. It issues fewer statements, and gives the same run to several workers as soon as two overlap.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))
# Everything the run writes goes to a temporary directory, removed at the end.
BENCH_DIR = Path(tempfile.mkdtemp(prefix="bench-worker-"))
os.environ["DATA_DIR"] = str(BENCH_DIR)
os.environ["DATABASE_URL"] = f"sqlite:///{BENCH_DIR / 'portal.sqlite3'}"
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convergence.settings")

import django  # noqa: E402

django.setup()
# 32 workers share the client's pool of 10 connections: urllib3 warns for each one it drops after use.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from bigquery_backend.client import BigQueryGateway, get_gateway  # noqa: E402
from bigquery_backend.emulator import EmulatorProcess  # noqa: E402
from tenants_app.models import (  # noqa: E402
    PlanName,
    RunState,
    SubscriptionStatus,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantScheduledPipelineRun,
    TenantStatus,
    TenantSubscription,
)
from tenants_app.repositories import central_repository  # noqa: E402
from tenants_app.services.bootstrap import bigquery_bootstrap  # noqa: E402
from tenants_app.services.run_claims import run_claim  # noqa: E402
from tenants_app.services.run_reports import run_complete, run_fail  # noqa: E402

DATASET = "bench_worker"
DML_PREFIXES = ("UPDATE", "INSERT", "MERGE", "DELETE")
APPROACHES = ("compare-and-set", "read-then-write")


@dataclass
class Trial:
    approach: str
    workers: int
    runs: int
    claimed: int
    duplicates: int
    seconds: float
    jobs: int
    dml: int

    @property
    def per_second(self) -> float:
        return self.claimed / self.seconds if self.seconds else 0.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 32], help="concurrent workers")
    parser.add_argument("--runs", type=int, default=24, help="runs queued per trial")
    parser.add_argument("--tenants", type=int, default=4, help="tenants the runs are spread over")
    return parser.parse_args(argv)


def seed_tenants(count: int) -> list[str]:
    """Tenants with limits high enough that quota never refuses: the bench measures claiming."""
    now = timezone.now()
    ids = [f"bench_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    central_repository(TenantProfile).insert(
        *[
            TenantProfile(
                tenant_id=tenant_id,
                company_name="Bench Ltd",
                admin_email="ops@bench.example",
                tenant_dataset_id=tenant_id,
                status=TenantStatus.ACTIVE,
                subscription_plan=PlanName.SCALE,
                created_at=now,
            )
            for tenant_id in ids
        ]
    )
    central_repository(TenantSubscription).insert(
        *[
            TenantSubscription(
                subscription_id=f"{tenant_id}_sub",
                tenant_id=tenant_id,
                plan_name=PlanName.SCALE,
                status=SubscriptionStatus.ACTIVE,
                daily_limit=100_000,
                monthly_limit=1_000_000,
                concurrent_limit=10_000,
                created_at=now,
            )
            for tenant_id in ids
        ]
    )
    for tenant_id in ids:
        bigquery_bootstrap(tenant_id=tenant_id)
    return ids


def seed_runs(tenants: list[str], count: int) -> list[str]:
    """`count` due runs over the tenants, two INSERT statements (the scheduler's row contract)."""
    now = timezone.now()
    slot = now - timedelta(minutes=5)
    runs, entries = [], []
    for index in range(count):
        run_id = f"run_{uuid.uuid4().hex[:16]}"
        common = {
            "run_id": run_id,
            "tenant_id": tenants[index % len(tenants)],
            "pipeline_id": "bench_pipeline",
            "state": RunState.QUEUED,
            "scheduled_time": slot,
            "priority": 1 if index % 6 == 0 else 5,  # mostly the default priority, some urgent
        }
        runs.append(
            TenantScheduledPipelineRun(
                config_id="cfg", retry_count=0, max_retries=3, created_at=now, **common
            )
        )
        entries.append(TenantPipelineExecutionQueue(config_id="cfg", added_at=now, attempt=0, **common))
    central_repository(TenantScheduledPipelineRun).insert(*runs)
    central_repository(TenantPipelineExecutionQueue).insert(*entries)
    return [run.run_id for run in runs]


def naive_claim(worker_id: str) -> str | None:
    """Read the most urgent queued run, then mark it RUNNING by key: two jobs, no condition."""
    queue = central_repository(TenantPipelineExecutionQueue)
    top = queue.list(filters={"state": RunState.QUEUED}, order_by=("priority", "scheduled_time"), limit=1)
    if not top:
        return None
    queue.update_where(
        {"state": RunState.RUNNING, "lease_owner": worker_id}, filters={"run_id": top[0].run_id}
    )
    return top[0].run_id


def trial(approach: str, workers: int, tenants: list[str], runs: int, gateway: BigQueryGateway) -> Trial:
    seed_runs(tenants, runs)
    claims: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def claim_once(worker_id: str) -> str | None:
        if approach == "read-then-write":
            return naive_claim(worker_id)
        claimed = run_claim(worker_id=worker_id, lease_seconds=600)
        return None if claimed is None else claimed.run_id

    def loop(index: int) -> None:
        barrier.wait()
        try:
            while (run_id := claim_once(f"bench-{index}")) is not None:
                with lock:
                    claims.append(run_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    with gateway.count_jobs() as counter:
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{approach} with {workers} workers failed: {errors[0]!r}")
    counts = Counter(claims)
    dml = sum(1 for sql in counter.statements if sql.lstrip().upper().startswith(DML_PREFIXES))
    return Trial(
        approach=approach,
        workers=workers,
        runs=runs,
        claimed=len(counts),
        duplicates=sum(n - 1 for n in counts.values()),
        seconds=seconds,
        jobs=counter.jobs,
        dml=dml,
    )


def report_costs(tenants: list[str], gateway: BigQueryGateway) -> list[tuple[str, int, int]]:
    """Jobs and DML statements of one completion with logs, and of one failure report."""
    rows = []
    now = timezone.now()
    steps = [
        {
            "step_index": i,
            "step_name": f"step{i}",
            "step_type": "query",
            "status": "SUCCEEDED",
            "start_time": now,
            "end_time": now,
        }
        for i in range(2)
    ]
    checks = [
        {
            "target_table": "t",
            "dq_config_id": "dq",
            "executed_at": now,
            "expectations_passed": 1,
            "expectations_failed": 0,
            "overall_status": "PASS",
        }
    ]
    calls: list[tuple[str, Callable[[str, str], object]]] = [
        (
            "complete (2 step logs, 1 DQ result)",
            lambda run_id, worker: run_complete(
                run_id=run_id, worker_id=worker, status="SUCCEEDED", step_logs=steps, dq_results=checks
            ),
        ),
        (
            "complete (no logs)",
            lambda run_id, worker: run_complete(run_id=run_id, worker_id=worker, status="SUCCEEDED"),
        ),
        (
            "fail (re-queued with backoff)",
            lambda run_id, worker: run_fail(run_id=run_id, worker_id=worker, error="x"),
        ),
    ]
    for label, call in calls:
        seed_runs(tenants[:1], 1)
        claimed = run_claim(worker_id="cost", tenant_id=tenants[0])
        assert claimed is not None
        with gateway.count_jobs() as counter:
            call(claimed.run_id, "cost")
        dml = sum(1 for sql in counter.statements if sql.lstrip().upper().startswith(DML_PREFIXES))
        rows.append((label, counter.jobs, dml))
    return rows


def versions() -> str:
    return (
        f"Python {platform.python_version()}, bqemulator {version('bqemulator')}, "
        f"google-cloud-bigquery {version('google-cloud-bigquery')}, {os.cpu_count()} CPUs"
    )


def run(args: argparse.Namespace, gateway: BigQueryGateway) -> int:
    bigquery_bootstrap()
    tenants = seed_tenants(args.tenants)
    results = [
        trial(approach, workers, tenants, args.runs, gateway)
        for workers in args.workers
        for approach in APPROACHES
    ]
    print(
        f"\n{args.runs} due runs over {args.tenants} tenants per trial; workers claim until none is left.\n"
    )
    header = (
        f"{'approach':<17} {'workers':>7} {'claimed':>7} {'twice':>5} {'claims/s':>9} "
        f"{'jobs/claim':>10} {'DML/claim':>9}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        claimed = max(result.claimed, 1)
        print(
            f"{result.approach:<17} {result.workers:>7} {result.claimed:>7} {result.duplicates:>5} "
            f"{result.per_second:>9.1f} {result.jobs / claimed:>10.1f} {result.dml / claimed:>9.1f}"
        )
    print("\nJobs per claim include the final empty claim of each worker (one candidate query each).")
    print("\nOne report of a claimed run")
    for label, jobs, dml in report_costs(tenants, gateway):
        print(f"  {label:<38} {jobs:>3} jobs, {dml:>2} DML")
    unsafe = [r for r in results if r.approach == "compare-and-set" and (r.duplicates or r.claimed != r.runs)]
    if unsafe:
        print("\nERROR: the compare-and-set claim gave a run twice or lost one.")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"Worker claims on {versions()}")
    emulator = EmulatorProcess(home=BENCH_DIR / "home", log_path=BENCH_DIR / "emulator.log")
    try:
        emulator.start()
        with override_settings(
            BIGQUERY_EMULATOR_HOST=emulator.url, BIGQUERY_PROJECT=emulator.project, TENANTS_DATASET=DATASET
        ):
            status = run(args, get_gateway())
    finally:
        emulator.stop()
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\nTotal wall time {time.perf_counter() - started:.1f} s; load average at the end {load}.")
    return status


if __name__ == "__main__":
    sys.exit(main())
