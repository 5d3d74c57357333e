"""Onboarding under BigQuery's latency: one call after another beside independent calls side by side.

N tenants (default 3) are onboarded twice each through `tenant_onboard`, with BigQuery being the
emulator behind the realism proxy (tests/support/bigquery_realism.py: SELECT 0.5 s, DML 1.5 s, DDL
1 s, metadata 0.2 s, times --scale): once with `max_workers=1` (every call after the previous one, as
before issue 12) and once with the default (independent calls side by side), alternately, so that a
slow moment of the machine hits both. Per onboarding: the wall time; the critical path, i.e. the
longest chain of dependent calls of the task graph onboarding ran (tenants_app/task_graph.py), each
call costing the proxy's latency for its kind (the side-by-side run's graph, for both rows of a
tenant), and the tasks along it; wall / critical path; the sum of every call's latency (what one
call after another costs at least); BigQuery calls by kind. Exits 1 if a side-by-side onboarding
takes more than 1.5x its critical path, or any onboarding is incomplete.

The reader principal is set (TENANT_READER_PRINCIPAL_TEMPLATE), so the readers' grant is one of the
steps, as in a deployment that uses it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))
# Everything the run writes goes to a temporary directory, removed at the end.
BENCH_DIR = Path(tempfile.mkdtemp(prefix="bench-onboarding-"))
os.environ["DATA_DIR"] = str(BENCH_DIR)
os.environ["DATABASE_URL"] = f"sqlite:///{BENCH_DIR / 'portal.sqlite3'}"
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convergence.settings")

import django  # noqa: E402

django.setup()

from django.test import override_settings  # noqa: E402

from bigquery_backend.client import get_gateway  # noqa: E402
from bigquery_backend.emulator import EmulatorProcess  # noqa: E402
from tenants_app.services.bootstrap import bigquery_bootstrap  # noqa: E402
from tenants_app.services.onboarding import (  # noqa: E402
    ONBOARDING_MAX_WORKERS,
    ONBOARDING_STEPS,
    tenant_onboard,
)
from tenants_app.task_graph import TaskPath, task_path, task_trace  # noqa: E402
from tests.support.bigquery_realism import POLL, Latency, classify, realism_proxy  # noqa: E402

DATASET = "bench_onboarding"
READER_TEMPLATE = "group:{tenant_id}-readers@example.com"
TARGET_RATIO = 1.5
PATHS = {"sequential": 1, "side by side": ONBOARDING_MAX_WORKERS}
KINDS = ("select", "merge", "insert", "update", "delete", "ddl", "metadata", POLL)


@dataclass
class CallLog:
    """Every BigQuery HTTP call the gateway makes while `active`: the task that made it, and its kind."""

    active: bool = False
    calls: list[tuple[TaskPath, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        # Called by requests in the thread that made the call: task_path() is that task's.
        if not self.active:
            return
        request = response.request
        url = urlsplit(request.url)
        body = request.body or b""
        call = classify(
            request.method, f"{url.path}?{url.query}", body if isinstance(body, bytes) else body.encode()
        )
        with self.lock:
            self.calls.append((task_path(), call.kind))

    def take(self) -> list[tuple[TaskPath, str]]:
        with self.lock:
            calls, self.calls = self.calls, []
        return calls


@dataclass(frozen=True)
class Onboarding:
    tenant: int
    path: str
    wall: float
    critical: float
    chain: list[str]
    latency_sum: float
    kinds: Counter[str]

    @property
    def ratio(self) -> float:
        return self.wall / self.critical if self.critical else float("inf")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=3, help="tenants onboarded on each path")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the proxy's latencies")
    return parser.parse_args(argv)


def onboard_once(index: int, path: str, log: CallLog, latency: Latency, scale: float) -> Onboarding:
    tenant_id = f"bench_{uuid.uuid4().hex[:10]}"
    log.take()
    log.active = True
    with task_trace() as trace:
        started = time.perf_counter()
        result = tenant_onboard(
            tenant_id=tenant_id,
            company_name="Bench Ltd",
            admin_email="ops@bench.example",
            plan="STARTER",
            created_by="system:bench",
            max_workers=PATHS[path],
        )
        wall = time.perf_counter() - started
    log.active = False
    if result.performed != list(ONBOARDING_STEPS) or result.api_key is None:
        raise SystemExit(f"onboarding of {tenant_id} incomplete: performed {result.performed}")
    calls = log.take()
    own_cost: Counter[TaskPath] = Counter()
    for task, kind in calls:
        own_cost[task] += 0.0 if kind == POLL else latency.of(kind) * scale
    chain = trace.critical_chain(own_cost)
    return Onboarding(
        tenant=index,
        path=path,
        wall=wall,
        critical=trace.critical_path(own_cost),
        chain=[f"{'/'.join(task)} {own_cost[task]:.1f}" for task in chain if own_cost[task]],
        latency_sum=sum(own_cost.values()),
        kinds=Counter(kind for _, kind in calls),
    )


def report(results: list[Onboarding], scale: float) -> int:
    kinds = [kind for kind in KINDS if any(r.kinds[kind] for r in results)]
    header = (
        f"{'tenant':>6}  {'path':<12}  {'wall s':>7}  {'critical s':>10}  {'wall/crit':>9}  "
        f"{'sum lat s':>9}  {'calls':>5}  " + "  ".join(f"{kind:>8}" for kind in kinds)
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.tenant:>6}  {r.path:<12}  {r.wall:>7.2f}  {r.critical:>10.2f}  {r.ratio:>9.2f}  "
            f"{r.latency_sum:>9.2f}  {sum(r.kinds.values()):>5}  "
            + "  ".join(f"{r.kinds[k]:>8}" for k in kinds)
        )
    print()
    by_path = {path: [r for r in results if r.path == path] for path in PATHS}
    for path, rows in by_path.items():
        print(
            f"{path:<12}  median wall {statistics.median(r.wall for r in rows):.2f} s, "
            f"median wall/critical {statistics.median(r.ratio for r in rows):.2f}"
        )
    sequential = statistics.median(r.wall for r in by_path["sequential"])
    parallel = statistics.median(r.wall for r in by_path["side by side"])
    print(f"side by side is {sequential / parallel:.2f}x faster than one call after another")
    chain = by_path["side by side"][0].chain
    print(f"critical path (task, seconds of latency): {' -> '.join(chain)}")
    worst = max(r.ratio for r in by_path["side by side"])
    verdict = "OK" if worst <= TARGET_RATIO else "FAILED"
    print(
        f"{verdict}: side by side at most {worst:.2f}x its critical path "
        f"(target {TARGET_RATIO}x; scale {scale})"
    )
    return 0 if worst <= TARGET_RATIO else 1


def versions() -> str:
    return (
        f"Python {platform.python_version()}, Django {version('django')}, "
        f"bqemulator {version('bqemulator')}, google-cloud-bigquery {version('google-cloud-bigquery')}, "
        f"{os.cpu_count()} CPUs"
    )


def run(args: argparse.Namespace, emulator: EmulatorProcess) -> int:
    latency = Latency()
    with override_settings(BIGQUERY_EMULATOR_HOST=emulator.url):
        bigquery_bootstrap()  # setup straight to the emulator: not measured
    with realism_proxy(emulator.url, latency=latency, scale=args.scale) as proxy:
        with override_settings(BIGQUERY_EMULATOR_HOST=proxy.url):
            log = CallLog()
            # The client's requests session: a response hook sees every round trip, in its thread.
            get_gateway().client._http.hooks.setdefault("response", []).append(log.hook)
            results = []
            for index in range(1, args.tenants + 1):
                # Alternate which path goes first, so a slow moment of the machine does not favour one.
                order = list(PATHS) if index % 2 else list(reversed(PATHS))
                for path in order:
                    results.append(onboard_once(index, path, log, latency, args.scale))
            results.sort(key=lambda r: (r.tenant, list(PATHS).index(r.path)))
            # One graph for both rows of a tenant: the side-by-side run's (with max_workers=1 the
            # dataset's tables are made in a row, which would lengthen the sequential row's own).
            graph = {r.tenant: r for r in results if r.path == "side by side"}
            results = [
                replace(r, critical=graph[r.tenant].critical, chain=graph[r.tenant].chain) for r in results
            ]
        print(f"refused by the proxy: {proxy.refusals() or 'none'}; duplicate job ids: {proxy.duplicates}")
    return report(results, args.scale)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    latency = Latency()
    print(f"Onboarding on {versions()}")
    print(
        f"Realism proxy: SELECT {latency.select} s, DML {latency.dml} s, DDL {latency.ddl} s, metadata "
        f"{latency.metadata} s, x{args.scale}; {args.tenants} tenants, each onboarded one call after another "
        f"(max_workers=1) and side by side (max_workers={ONBOARDING_MAX_WORKERS}), alternately"
    )
    emulator = EmulatorProcess(home=BENCH_DIR / "home", log_path=BENCH_DIR / "emulator.log")
    try:
        emulator.start()
        with override_settings(
            BIGQUERY_PROJECT=emulator.project,
            TENANTS_DATASET=DATASET,
            TENANT_READER_PRINCIPAL_TEMPLATE=READER_TEMPLATE,
        ):
            status = run(args, emulator)
    finally:
        emulator.stop()
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    print(f"done in {time.perf_counter() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
