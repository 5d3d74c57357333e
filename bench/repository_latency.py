"""Repository latency on the embedded emulator: point reads both ways, writes, and jobs per call."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convergence.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.test import override_settings  # noqa: E402
from google.cloud import bigquery  # noqa: E402

from bigquery_backend import provisioning  # noqa: E402
from bigquery_backend.client import (  # noqa: E402
    BigQueryGateway,
    QueryParameter,
    QueryResult,
    build_gateway,
    get_gateway,
)
from bigquery_backend.emulator import EmulatorProcess  # noqa: E402
from bigquery_backend.identifiers import quote_column  # noqa: E402
from bigquery_backend.repository import Add, Col, Now, Repository  # noqa: E402
from tenants_app.models import TenantUsageQuota  # noqa: E402

MODEL = TenantUsageQuota
BATCH = 500  # rows per seeding INSERT: one statement per batch, never one per row
WARMUP = 3  # discarded rounds (connection pool, DuckDB catalog and plan caches)
TENANTS = 20
READ = "get (point read)"
QUERY_PATH = "jobs.query"
JOB_PATH = "jobs.insert+poll"
INSERT_SEED = "INSERT VALUES"
BULK_SEED = "INSERT SELECT"
WRITES = {"insert", "update", "update_where", "upsert", "delete"}


class JobInsertGateway(BigQueryGateway):
    """A gateway whose `query` goes through jobs.insert + getQueryResults, for the comparison."""

    def query(self, sql: str, parameters: Sequence[QueryParameter] = ()) -> QueryResult:
        return self.query_via_job(sql, parameters)


class HttpCounter:
    """Counts the HTTP requests one client sends, to explain latency by round trips."""

    def __init__(self, client: bigquery.Client) -> None:
        self.requests = 0
        # `_http` is the client's requests session: a response hook sees every round trip,
        # retries included, without patching the library.
        client._http.hooks.setdefault("response", []).append(self._hook)

    def _hook(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return response


@dataclass
class Series:
    """Latencies of one operation at one table size, and what its calls cost in jobs and requests."""

    rows: int
    seeding: str
    operation: str
    path: str
    samples: list[float] = field(default_factory=list)
    jobs: int = 0
    api_calls: int = 0
    requests: int = 0
    verbs: set[str] = field(default_factory=set)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        # Nearest rank: with 30 samples this is the 29th, an observed value, not an interpolation.
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def is_write(self) -> bool:
        return self.operation.split(" ", 1)[0] in WRITES

    def per_call(self, total: int) -> float:
        return total / len(self.samples)


@dataclass
class Operation:
    """One timed repository call, the gateway it goes through and its accumulated figures."""

    series: Series
    gateway: BigQueryGateway
    http: HttpCounter
    call: Callable[[int], object]

    def run(self, index: int, *, record: bool) -> None:
        """Call once; when `record`, keep the latency and the jobs and requests it issued."""
        before = self.http.requests
        with self.gateway.count_jobs() as counter:
            started = time.perf_counter()
            self.call(index)
            elapsed = (time.perf_counter() - started) * 1000
        if record:
            self.series.samples.append(elapsed)
            self.series.jobs += counter.jobs
            self.series.api_calls += counter.api_calls
            self.series.requests += self.http.requests - before
            self.series.verbs.update(statement.split(None, 1)[0].upper() for statement in counter.statements)


@dataclass
class Target:
    """One production-path gateway and one jobs.insert gateway, each on its own client and counter."""

    gateway: BigQueryGateway
    gateway_http: HttpCounter
    job_gateway: JobInsertGateway
    job_http: HttpCounter


def parse_sizes(text: str) -> list[int]:
    """`100,1000` -> [100, 1000]; an empty string means none."""
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--rows",
        default="100,1000",
        type=parse_sizes,
        help="table sizes seeded through Repository.insert, 500 rows per statement (default: 100,1000)",
    )
    parser.add_argument(
        "--bulk-rows",
        default="100000",
        type=parse_sizes,
        help=(
            "larger table sizes seeded with one INSERT ... SELECT FROM UNNEST(GENERATE_ARRAY()), "
            "because the emulator spends 15-20 ms per VALUES row; '' to skip (default: 100000)"
        ),
    )
    parser.add_argument("--repeat", type=int, default=30, help="measured calls per operation (default: 30)")
    parser.add_argument("--seed", type=int, default=7, help="random seed for key choice (default: 7)")
    args = parser.parse_args(argv)
    sizes = [*args.rows, *args.bulk_rows]
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes) or args.repeat < 1:
        parser.error("sizes must be positive, distinct and at least one; --repeat positive")
    return args


def usage_id(index: int) -> str:
    return f"usage_{index:07d}"


def row(index: int) -> TenantUsageQuota:
    """Row number `index`: 20 tenants, dates spread over a year (the bulk SQL builds the same)."""
    return MODEL(
        usage_id=usage_id(index),
        tenant_id=f"tenant_{index % TENANTS:02d}",
        usage_date=datetime.date(2025, 1, 1) + datetime.timedelta(days=index % 365),
        pipelines_run_today=index % 7,
        daily_limit=1_000_000,
        monthly_limit=30_000_000,
        concurrent_limit=5,
    )


def seed_with_inserts(repo: Repository[TenantUsageQuota], size: int) -> None:
    """`size` rows through `Repository.insert`, BATCH rows per multi-row INSERT statement."""
    inserted = 0
    for start in range(0, size, BATCH):
        inserted += repo.insert(*(row(index) for index in range(start, min(size, start + BATCH))))
    if inserted != size:
        raise RuntimeError(f"seeding inserted {inserted} rows, expected {size}")


def seed_in_bulk(repo: Repository[TenantUsageQuota], size: int) -> None:
    """`size` rows from one INSERT ... SELECT, with the same values `row()` would give."""
    values = {
        "usage_id": "CONCAT('usage_', LPAD(CAST(x AS STRING), 7, '0'))",
        "tenant_id": f"CONCAT('tenant_', LPAD(CAST(MOD(x, {TENANTS}) AS STRING), 2, '0'))",
        "usage_date": "DATE_ADD(DATE '2025-01-01', INTERVAL MOD(x, 365) DAY)",
        "pipelines_run_today": "MOD(x, 7)",
        "daily_limit": "1000000",
        "monthly_limit": "30000000",
        "concurrent_limit": "5",
        "last_updated": "CURRENT_TIMESTAMP()",
        "created_at": "CURRENT_TIMESTAMP()",
    }
    names = [column.name for column in repo.definition.columns]
    # Columns not listed above are the zero counters and the NULLable extras.
    defaults = {name: "0" for name in names if name.startswith("pipelines_") or name.endswith("_running")}
    select = ", ".join(values.get(name, defaults.get(name, "NULL")) for name in names)
    sql = (
        f"INSERT INTO {repo.table} ({', '.join(quote_column(name) for name in names)}) "
        f"SELECT {select} FROM UNNEST(GENERATE_ARRAY(0, @last)) AS x"
    )
    inserted = repo.gateway.query(sql, [bigquery.ScalarQueryParameter("last", "INT64", size - 1)])
    if inserted.affected_rows != size:
        raise RuntimeError(f"bulk seeding inserted {inserted.affected_rows} rows, expected {size}")


def bench_size(
    size: int, bulk: bool, target: Target, repeat: int, rng: random.Random
) -> tuple[list[Series], float]:
    """Seed a fresh dataset with `size` rows and time every repository operation on it."""
    gateway, http = target.gateway, target.gateway_http
    dataset = f"bench_{'bulk' if bulk else 'rows'}_{size}_{os.getpid()}"
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(dataset)))
    repo = Repository(MODEL, dataset=dataset, gateway=gateway)
    via_job = Repository(MODEL, dataset=dataset, gateway=target.job_gateway)
    provisioning.create_table(gateway, dataset, repo.definition)
    started = time.perf_counter()
    (seed_in_bulk if bulk else seed_with_inserts)(repo, size)
    seed_seconds = time.perf_counter() - started

    rounds = WARMUP + repeat
    picks = [rng.randrange(size) for _ in range(rounds)]
    targets = [rng.randrange(size) for _ in range(rounds)]
    # Inserted rows get keys past the seeded ones and are deleted again in the same round.
    new_rows = [row(size + index) for index in range(rounds)]

    def get(repository: Repository[TenantUsageQuota]) -> Callable[[int], object]:
        def call(index: int) -> None:
            if repository.get(usage_id(picks[index])).usage_id != usage_id(picks[index]):
                raise RuntimeError("get returned another row")

        return call

    def count(index: int) -> None:
        repo.count(filters={"tenant_id": f"tenant_{index % TENANTS:02d}"})

    def page(index: int) -> None:
        if len(repo.list(order_by=["-usage_date"], limit=50)) != min(50, size):
            raise RuntimeError("list returned a short page")

    def insert(index: int) -> None:
        repo.insert(new_rows[index])

    def update(index: int) -> None:
        repo.update(usage_id(targets[index]), {"daily_limit": 2_000_000 + index})

    def increment(index: int) -> None:
        # The atomic counter pattern: bump only while under the limit, and learn whether it matched.
        matched = repo.update_where(
            {"pipelines_run_today": Add(1), "last_updated": Now()},
            filters={"usage_id": usage_id(targets[index]), "pipelines_run_today__lt": Col("daily_limit")},
        )
        if matched != 1:
            raise RuntimeError(f"update_where matched {matched} rows, expected 1")

    def upsert(index: int) -> None:
        # An existing key, so MERGE takes the WHEN MATCHED branch (the common case: refresh a row).
        changed = row(targets[index])
        changed.pipelines_failed_today = index
        repo.upsert(changed)

    def delete(index: int) -> None:
        if not repo.delete(new_rows[index].usage_id):
            raise RuntimeError("delete found nothing")

    seeding = BULK_SEED if bulk else INSERT_SEED
    read_query = Operation(Series(size, seeding, READ, QUERY_PATH), gateway, http, get(repo))
    read_job = Operation(
        Series(size, seeding, READ, JOB_PATH), target.job_gateway, target.job_http, get(via_job)
    )
    others = [
        Operation(Series(size, seeding, name, QUERY_PATH), gateway, http, call)
        for name, call in [
            ("count (tenant filter)", count),
            ("list (page of 50)", page),
            ("insert (1 row)", insert),
            ("update (by key)", update),
            ("update_where Add()", increment),
            ("upsert (MERGE)", upsert),
            ("delete (by key)", delete),
        ]
    ]
    for index in range(rounds):
        # Round-robin rather than 30 calls in a row, so a slow spell of the emulator (or of the
        # other core's load) spreads over every operation instead of landing on one. The two read
        # paths swap order each round so neither always runs right after a write.
        reads = [read_query, read_job] if index % 2 == 0 else [read_job, read_query]
        for operation in [*reads, *others]:
            operation.run(index, record=index >= WARMUP)
    remaining = repo.count()
    if remaining != size:
        raise RuntimeError(f"table holds {remaining} rows after the run, expected {size}")
    gateway.delete_dataset(dataset, delete_contents=True)
    return [operation.series for operation in [read_query, read_job, *others]], seed_seconds


def render_table(results: Sequence[Series]) -> str:
    """A plain aligned text table, one line per (size, operation, path), a blank line between sizes."""
    header = (
        "rows",
        "seeded by",
        "operation",
        "path",
        "p50 ms",
        "p95 ms",
        "mean ms",
        "jobs/call",
        "http/call",
    )
    lines = [
        (
            str(s.rows),
            s.seeding,
            s.operation,
            s.path,
            f"{s.p50:.1f}",
            f"{s.p95:.1f}",
            f"{s.mean:.1f}",
            f"{s.per_call(s.jobs):g}",
            f"{s.per_call(s.requests):g}",
        )
        for s in results
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    align = ["<" if i in (1, 2, 3) else ">" for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True)).rstrip()

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    for position, (series, line) in enumerate(zip(results, lines, strict=True)):
        if position and (series.rows, series.seeding) != (
            results[position - 1].rows,
            results[position - 1].seeding,
        ):
            out.append("")
        out.append(fmt(line))
    return "\n".join(out)


def interpret(results: Sequence[Series]) -> list[str]:
    """A few sentences computed from this run's figures, so the footer says what was measured."""
    notes = []
    sizes = sorted({s.rows for s in results})
    by_key = {(s.rows, s.operation, s.path): s for s in results}
    jobs = sorted({s.per_call(s.jobs) for s in results})
    api = sorted({s.per_call(s.api_calls) for s in results})
    jobs_text = "exactly 1 BigQuery job" if jobs == [1.0] else f"{', '.join(f'{j:g}' for j in jobs)} jobs"
    verbs = {s.operation.split(" ", 1)[0]: "/".join(sorted(s.verbs)) for s in results}
    notes.append(
        f"- Jobs: every repository call issued {jobs_text} and "
        f"{', '.join(f'{a:g}' for a in api)} metadata API calls; the statements were "
        + ", ".join(f"{operation} = {verb}" for operation, verb in verbs.items())
        + "."
    )
    comparisons = []
    requests = set()
    for size in sizes:
        fast = by_key[(size, READ, QUERY_PATH)]
        slow = by_key[(size, READ, JOB_PATH)]
        requests.add((slow.per_call(slow.requests), fast.per_call(fast.requests)))
        comparisons.append(
            f"{size} rows {slow.p50:.1f} -> {fast.p50:.1f} ms ({slow.p50 / fast.p50:.2f}x, "
            f"{fast.p50 - slow.p50:+.1f} ms)"
        )
    notes.append(
        "- Point read, jobs.insert+poll -> jobs.query (query_and_wait), p50: "
        + "; ".join(comparisons)
        + ". HTTP requests per read: "
        + ", ".join(f"{slow:g} -> {fast:g}" for slow, fast in sorted(requests))
        + "."
    )
    if len(sizes) > 1:
        operations = list(dict.fromkeys(s.operation for s in results))
        writes = [op for op in operations if by_key[(sizes[0], op, QUERY_PATH)].is_write]
        reads = [op for op in operations if op not in writes]
        small, large = sizes[0], sizes[-1]

        def describe(names: Sequence[str]) -> str:
            parts = []
            for name in names:
                low, high = by_key[(small, name, QUERY_PATH)].p50, by_key[(large, name, QUERY_PATH)].p50
                parts.append(f"{name} {low:.0f} -> {high:.0f} ms ({high / low:.1f}x)")
            return ", ".join(parts)

        notes.append(f"- Table size {small} -> {large} rows, p50: writes {describe(writes)}.")
        notes.append(f"  Reads: {describe(reads)}.")
        notes.append(growth_verdict(by_key, small, large, writes, reads))
        seeded = sorted({s.rows for s in results if s.seeding == INSERT_SEED})
        if len(seeded) > 1 and seeded[-1] != large:
            notes.append(growth_verdict(by_key, seeded[0], seeded[-1], writes, reads))
    notes.append(
        "- These are emulator figures (DuckDB behind loopback HTTP), not BigQuery's, whose per-job overhead "
        "is much larger: what carries over is the jobs and HTTP requests per call, not the milliseconds."
    )
    return notes


def growth_verdict(
    by_key: dict[tuple[int, str, str], Series], small: int, large: int, writes: list[str], reads: list[str]
) -> str:
    """Whether writes slowed down with table size clearly more than reads did, in numbers."""

    def added(names: list[str]) -> float:
        return statistics.median(
            by_key[(large, name, QUERY_PATH)].p50 - by_key[(small, name, QUERY_PATH)].p50 for name in names
        )

    write_added, read_added = added(writes), added(reads)
    # "Clearly": twice the reads' growth and at least 5 ms, since run-to-run noise here is a few ms.
    grew = write_added > max(2 * read_added, read_added + 5.0)
    verdict = (
        "writes grow clearly more than reads, consistent with the emulator copying the whole table into a "
        "time-travel snapshot after every DML (bqemulator/versioning/snapshots.py runs CREATE TABLE ... AS "
        "SELECT * after each write): write cost is O(table size) there"
        if grew
        else "writes do not grow clearly more than reads: the emulator's per-DML table copy is lost in the "
        "fixed per-statement cost at these sizes"
    )
    return (
        f"- Median p50 added from {small} to {large} rows: writes {write_added:+.1f} ms, reads "
        f"{read_added:+.1f} ms: {verdict}."
    )


def peak_memory(emulator: EmulatorProcess) -> str:
    """The emulator's peak resident memory (Linux), since its snapshots of every write stay in memory."""
    if emulator.process is None:
        return "unknown"
    try:
        status = Path(f"/proc/{emulator.process.pid}/status").read_text()
    except OSError:
        return "unknown"
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return f"{int(line.split()[1]) / 1024:.0f} MiB"
    return "unknown"


def versions() -> str:
    """Versions of everything that shapes the figures."""
    import bqemulator
    import duckdb

    return (
        f"bqemulator {getattr(bqemulator, '__version__', '?')} (DuckDB {duckdb.__version__}, in memory), "
        f"google-cloud-bigquery {bigquery.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Start an emulator, measure every size, print the table and the footer, stop the emulator."""
    args = parse_args(argv)
    rng = random.Random(args.seed)
    started = time.perf_counter()
    results: list[Series] = []
    seeding: list[str] = []
    memory = "unknown"
    with tempfile.TemporaryDirectory(prefix="bench-bq-") as temp:
        root = Path(temp)
        emulator = EmulatorProcess(home=root / "home", log_path=root / "emulator.log")
        try:
            emulator.start()
            with override_settings(BIGQUERY_EMULATOR_HOST=emulator.url, BIGQUERY_PROJECT=emulator.project):
                gateway = get_gateway()
                # A second client for the jobs.insert path, so each path's HTTP requests are counted apart.
                other = build_gateway()
                job_gateway = JobInsertGateway(
                    other.client,
                    location=other.location,
                    timeout=other.timeout,
                    retry_deadline=settings.BIGQUERY_RETRY_DEADLINE_SECONDS,
                )
                target = Target(gateway, HttpCounter(gateway.client), job_gateway, HttpCounter(other.client))
                plan = [(size, False) for size in args.rows] + [(size, True) for size in args.bulk_rows]
                for size, bulk in plan:
                    series, seconds = bench_size(size, bulk, target, args.repeat, rng)
                    results.extend(series)
                    statements = math.ceil(size / BATCH)
                    how = (
                        "one INSERT ... SELECT"
                        if bulk
                        else f"{statements} multi-row INSERT{'s' if statements > 1 else ''}, "
                        f"{seconds * 1000 / size:.1f} ms/row"
                    )
                    seeding.append(f"{size} rows in {seconds:.1f} s ({how})")
                memory = peak_memory(emulator)
        finally:
            emulator.stop()

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"Repository latency on {versions()}")
    print(
        f"Model {MODEL.__name__} ({len(MODEL._meta.concrete_fields)} columns), fresh dataset per size; "
        f"{args.repeat} measured calls per line after {WARMUP} warm-up rounds, operations run round-robin."
    )
    print(f"Seeding: {'; '.join(seeding)}.")
    print()
    print(render_table(results))
    print()
    print("Interpretation")
    for note in interpret(results):
        print(note)
    print(
        f"\nTotal wall time {time.perf_counter() - started:.1f} s; load average at the end {load}; "
        f"emulator peak RSS {memory}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
