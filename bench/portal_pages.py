"""Portal page render time and BigQuery jobs per page at 10, 1,000 and 10,000 tenants, side by side."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))
# Everything the run writes (SQLite database, secret key, local KMS key, emulator home) goes to a
# temporary directory, removed at the end; set before Django reads its settings.
BENCH_DIR = Path(tempfile.mkdtemp(prefix="bench-portal-"))
os.environ["DATA_DIR"] = str(BENCH_DIR)
os.environ["DATABASE_URL"] = f"sqlite:///{BENCH_DIR / 'portal.sqlite3'}"
os.environ["KMS_BACKEND"] = "local"
# Onboarding and bootstrap log at INFO: keep the report readable.
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convergence.settings")
(BENCH_DIR / "staticfiles").mkdir()

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.urls import NoReverseMatch, reverse  # noqa: E402
from django.utils import timezone  # noqa: E402
from google.cloud import bigquery  # noqa: E402

from bigquery_backend.client import BigQueryGateway, get_gateway  # noqa: E402
from bigquery_backend.emulator import EmulatorProcess  # noqa: E402
from bigquery_backend.identifiers import quote_column  # noqa: E402
from bigquery_backend.models import BigQueryModel  # noqa: E402
from bigquery_backend.repository import Repository  # noqa: E402
from tenants_app.models import (  # noqa: E402
    AuditLogEntry,
    TenantProfile,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository  # noqa: E402
from tenants_app.services.bootstrap import bigquery_bootstrap  # noqa: E402
from tenants_app.services.onboarding import tenant_onboard  # noqa: E402

DATASET_PREFIX = "bench_portal"
# Rows per multi-row INSERT through Repository.insert: the emulator spends ~15-25 ms per VALUES row, so
# 500 rows (the repository bench's batch) can pass the 30 s call timeout on a busy machine.
INSERT_CHUNK = 100
STREAM_CHUNK = 500  # rows per tabledata.insertAll request
WARMUP = 1  # discarded rounds (template loading, first queries)
SEEDED_TABLES = (TenantProfile, TenantSubscription, TenantUsageQuota, AuditLogEntry)
SEED_COMPARISON_TABLES = (TenantProfile, TenantSubscription, TenantUsageQuota)
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PLAN_LIMITS = {"STARTER": (6, 180, 1), "PROFESSIONAL": (25, 750, 3), "SCALE": (100, 3000, 10)}
PLAN_NAMES = tuple(PLAN_LIMITS)


@dataclass(frozen=True)
class PortalPage:
    """One measured page: a label, its URL name, and a text its HTML must contain."""

    label: str
    url_name: str
    of_detail_tenant: bool = False  # the URL takes the size's onboarded tenant
    query: str = ""
    expect: str = ""  # empty: the size's onboarded tenant id


PAGES = (
    # Newest first: the onboarded tenant was created last, so it is on the first page at every size.
    PortalPage("tenant list", "admin:tenants_app_tenantprofile_changelist"),
    PortalPage(
        "tenant list, search",
        "admin:tenants_app_tenantprofile_changelist",
        query="?q=bench_0000",
        expect="bench_0000",
    ),
    # Sorted by pressure: the onboarded tenant has no runs and may be on a later page; any tenant will do.
    PortalPage("quota dashboard", "admin:portal-dashboard", expect="bench_"),
    PortalPage("audit log", "admin:tenants_app_auditlogentry_changelist", expect="tenant.onboard"),
    PortalPage("tenant detail", "admin:portal-tenant-detail", of_detail_tenant=True),
    PortalPage("tenant usage trend", "admin:portal-tenant-usage", of_detail_tenant=True),
)


@dataclass(frozen=True)
class World:
    """One size's central dataset and the tenant onboarded in it for the detail and trend pages."""

    size: int
    dataset: str
    detail_tenant: str


@dataclass
class Measurement:
    """Render times of one page at one size, and the jobs each request issued."""

    samples: list[float] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    missing: str = ""

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    def cell(self) -> str:
        if self.missing:
            return self.missing
        jobs = sorted(set(self.jobs))
        jobs_text = "/".join(str(j) for j in jobs)
        unit = "job " if jobs == [1] else "jobs"
        return f"{self.p50:7.0f} ms {jobs_text:>3} {unit}"


# --- seeding ------------------------------------------------------------------------------------------
def tenant_id_sql() -> str:
    return "CONCAT('bench_', LPAD(CAST(x AS STRING), 5, '0'))"


def plan_sql() -> str:
    return "CASE MOD(x, 3) WHEN 0 THEN 'STARTER' WHEN 1 THEN 'PROFESSIONAL' ELSE 'SCALE' END"


def limit_sql(position: int) -> str:
    """The plan's daily (0), monthly (1) or concurrent (2) limit of tenant x."""
    figures = [PLAN_LIMITS[name][position] for name in PLAN_NAMES]
    return f"CASE MOD(x, 3) WHEN 0 THEN {figures[0]} WHEN 1 THEN {figures[1]} ELSE {figures[2]} END"


def seed_expressions(model: type[BigQueryModel]) -> dict[str, str]:
    """SQL building tenant x's row of `model` (the same values `seed_row` builds in Python)."""
    tenant = tenant_id_sql()
    created = "TIMESTAMP_ADD(TIMESTAMP '2025-01-01 00:00:00+00', INTERVAL x MINUTE)"
    if model is TenantProfile:
        return {
            "tenant_id": tenant,
            "company_name": "CONCAT('Company ', CAST(x AS STRING))",
            "admin_email": "CONCAT('ops', CAST(x AS STRING), '@example.com')",
            "tenant_dataset_id": tenant,
            "status": "CASE MOD(x, 10) WHEN 9 THEN 'SUSPENDED' WHEN 8 THEN 'TRIAL' ELSE 'ACTIVE' END",
            "subscription_plan": plan_sql(),
            "created_at": created,
        }
    if model is TenantSubscription:
        return {
            "subscription_id": f"CONCAT({tenant}, '_subscription')",
            "tenant_id": tenant,
            "plan_name": plan_sql(),
            "status": "CASE MOD(x, 10) WHEN 9 THEN 'SUSPENDED' WHEN 8 THEN 'TRIAL' ELSE 'ACTIVE' END",
            "daily_limit": limit_sql(0),
            "monthly_limit": limit_sql(1),
            "concurrent_limit": limit_sql(2),
            "max_pipelines_per_day": limit_sql(0),
            "created_at": created,
        }
    if model is TenantUsageQuota:
        # Runs today from 0 to the daily limit, so some tenants are past 80% and the dashboard flags them.
        runs = f"MOD(x * 7, {limit_sql(0)} + 1)"
        return {
            "usage_id": f"CONCAT({tenant}, '_', FORMAT_DATE('%Y%m%d', @today))",
            "tenant_id": tenant,
            "usage_date": "@today",
            "pipelines_run_today": runs,
            "pipelines_succeeded_today": runs,
            "pipelines_failed_today": "0",
            "pipelines_run_month": f"{runs} * 10",
            "concurrent_pipelines_running": f"MOD(x, {limit_sql(2)} + 1)",
            "daily_limit": limit_sql(0),
            "monthly_limit": limit_sql(1),
            "concurrent_limit": limit_sql(2),
            "last_updated": "CURRENT_TIMESTAMP()",
            "created_at": "CURRENT_TIMESTAMP()",
        }
    if model is AuditLogEntry:
        return {
            "audit_id": "CONCAT('bench_audit_', CAST(x AS STRING))",
            "occurred_at": created,
            "actor": "'system:bench'",
            "actor_type": "'system'",
            "source": "'command'",
            "action": "'tenant.onboard'",
            "tenant_id": tenant,
            "target_type": "'tenant'",
            "target_id": tenant,
        }
    raise ValueError(f"no seed for {model.__name__}")


def seed_row(model: type[BigQueryModel], x: int, today: date) -> BigQueryModel:
    """Tenant x's row of `model`, for the Repository.insert and streaming seeders."""
    tenant = f"bench_{x:05d}"
    plan = PLAN_NAMES[x % 3]
    daily, monthly, concurrent = PLAN_LIMITS[plan]
    status = {9: "SUSPENDED", 8: "TRIAL"}.get(x % 10, "ACTIVE")
    created = EPOCH + timedelta(minutes=x)
    if model is TenantProfile:
        return TenantProfile(
            tenant_id=tenant,
            company_name=f"Company {x}",
            admin_email=f"ops{x}@example.com",
            tenant_dataset_id=tenant,
            status=status,
            subscription_plan=plan,
            created_at=created,
        )
    if model is TenantSubscription:
        return TenantSubscription(
            subscription_id=f"{tenant}_subscription",
            tenant_id=tenant,
            plan_name=plan,
            status=status,
            daily_limit=daily,
            monthly_limit=monthly,
            concurrent_limit=concurrent,
            max_pipelines_per_day=daily,
            created_at=created,
        )
    if model is TenantUsageQuota:
        runs = (x * 7) % (daily + 1)
        return TenantUsageQuota(
            usage_id=f"{tenant}_{today:%Y%m%d}",
            tenant_id=tenant,
            usage_date=today,
            pipelines_run_today=runs,
            pipelines_succeeded_today=runs,
            pipelines_run_month=runs * 10,
            concurrent_pipelines_running=x % (concurrent + 1),
            daily_limit=daily,
            monthly_limit=monthly,
            concurrent_limit=concurrent,
        )
    raise ValueError(f"no seed row for {model.__name__}")


def seed_with_select(repo: Repository[Any], first: int, last: int, today: date) -> None:
    """Tenants first..last-1 in one INSERT ... SELECT FROM UNNEST(GENERATE_ARRAY(...)) statement."""
    expressions = seed_expressions(repo.model)
    names = [column.name for column in repo.definition.columns]
    select = ", ".join(expressions.get(name, "NULL") for name in names)
    sql = (
        f"INSERT INTO {repo.table} ({', '.join(quote_column(name) for name in names)}) "
        f"SELECT {select} FROM UNNEST(GENERATE_ARRAY(@first, @last)) AS x"
    )
    parameters = [
        bigquery.ScalarQueryParameter("first", "INT64", first),
        bigquery.ScalarQueryParameter("last", "INT64", last - 1),
    ]
    if "@today" in sql:
        parameters.append(bigquery.ScalarQueryParameter("today", "DATE", today))
    inserted = repo.gateway.query(sql, parameters).affected_rows
    if inserted != last - first:
        raise RuntimeError(f"seeding {repo.model.__name__} inserted {inserted} rows, expected {last - first}")


def seed_with_inserts(repo: Repository[Any], first: int, last: int, today: date) -> None:
    """Tenants first..last-1 through Repository.insert, INSERT_CHUNK rows per multi-row INSERT."""
    for start in range(first, last, INSERT_CHUNK):
        stop = min(last, start + INSERT_CHUNK)
        repo.insert(*(seed_row(repo.model, x, today) for x in range(start, stop)))


def json_row(obj: BigQueryModel) -> dict[str, Any]:
    """A row for tabledata.insertAll: dates and times as ISO text (the seeded tables hold no JSON/BYTES)."""
    row = {}
    for model_field in obj._meta.concrete_fields:
        value = getattr(obj, model_field.attname)
        row[model_field.column] = value.isoformat() if isinstance(value, date | datetime) else value
    return row


def seed_with_streaming(repo: Repository[Any], first: int, last: int, today: date) -> None:
    """Tenants first..last-1 through the streaming API (tabledata.insertAll), STREAM_CHUNK rows a request.

    Bench only: on BigQuery, streamed rows sit in a buffer where DML cannot change them for a while, which
    is why the product never streams.
    """
    table = repo.table.strip("`")
    for start in range(first, last, STREAM_CHUNK):
        rows = [
            json_row(seed_row(repo.model, x, today)) for x in range(start, min(last, start + STREAM_CHUNK))
        ]
        errors = repo.gateway.client.insert_rows_json(table, rows)
        if errors:
            raise RuntimeError(f"streaming into {repo.model.__name__} failed: {errors[:1]}")


def try_load_job(repo: Repository[Any], today: date) -> str:
    """Whether the emulator accepts a load job from JSON (one row); the reason when it does not."""
    row = json_row(seed_row(repo.model, 99_999, today))
    try:
        repo.gateway.client.load_table_from_json([row], repo.table.strip("`")).result(timeout=30)
    except Exception as exc:  # any refusal is the answer we report
        message = str(exc).split(": ", 1)[-1]
        return f"refused by the emulator ({type(exc).__name__}: {message[:90]})"
    return "accepted"


Seeder = Callable[[Repository[Any], int, int, date], None]
SEEDERS: dict[str, Seeder] = {
    "select": seed_with_select,
    "insert": seed_with_inserts,
    "stream": seed_with_streaming,
}
SEEDER_NAMES = {
    "select": "INSERT ... SELECT FROM UNNEST(GENERATE_ARRAY()), 1 statement per table",
    "insert": f"Repository.insert, multi-row INSERT VALUES of {INSERT_CHUNK} rows",
    "stream": f"streaming tabledata.insertAll, {STREAM_CHUNK} rows per request",
}


def compare_seeders(gateway: BigQueryGateway, tenants: int, today: date) -> list[str]:
    """Seed `tenants` tenants (profile, subscription, today's usage) with each seeder into its own dataset."""
    lines = []
    load = ""
    for name, seeder in SEEDERS.items():
        dataset = f"bench_seed_{name}"
        with override_settings(TENANTS_DATASET=dataset):
            bigquery_bootstrap()
            repos = [central_repository(model) for model in SEED_COMPARISON_TABLES]
            started = time.perf_counter()
            for repo in repos:
                seeder(repo, 1, tenants + 1, today)
            seconds = time.perf_counter() - started
            counts = [repo.count() for repo in repos]
            if counts != [tenants] * len(repos):
                raise RuntimeError(f"seeder {name} left {counts} rows, expected {tenants} each")
            if not load:
                load = try_load_job(repos[0], today)
        gateway.delete_dataset(dataset, delete_contents=True)
        rows = tenants * len(SEED_COMPARISON_TABLES)
        lines.append(
            f"  {name:<6} {seconds:7.2f} s  {seconds * 1000 / rows:6.2f} ms/row  ({SEEDER_NAMES[name]})"
        )
    lines.append(f"  load   load_table_from_json: {load}")
    return lines


# --- measuring ----------------------------------------------------------------------------------------
def page_url(page: PortalPage, world: World) -> str | None:
    try:
        return (
            reverse(page.url_name, args=[world.detail_tenant] if page.of_detail_tenant else []) + page.query
        )
    except NoReverseMatch:
        return None


def measure_once(
    client: Client, gateway: BigQueryGateway, page: PortalPage, world: World, url: str
) -> tuple[float, int]:
    """One GET of the page in `world`: its latency in ms and the BigQuery jobs it issued."""
    with gateway.count_jobs() as counter:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{page.label} at {world.size}: GET {url} answered {response.status_code}")
    expected = page.expect or world.detail_tenant
    if expected not in response.content.decode():
        raise RuntimeError(f"{page.label} at {world.size}: GET {url} does not show {expected!r}")
    return elapsed, counter.jobs


def measure(
    client: Client, gateway: BigQueryGateway, worlds: Sequence[World], repeat: int
) -> dict[tuple[str, int], Measurement]:
    """Every page of every size, round-robin: WARMUP + `repeat` rounds, the size order rotating.

    Round-robin, not size after size, so that a busy spell of the machine lands on every size instead of
    making one size look slow.
    """
    results = {(page.label, world.size): Measurement() for page in PAGES for world in worlds}
    urls = {(page.label, world.size): page_url(page, world) for page in PAGES for world in worlds}
    for key, url in urls.items():
        if url is None:
            results[key].missing = "(no such page)"
    for index in range(WARMUP + repeat):
        shift = index % len(worlds)
        for world in [*worlds[shift:], *worlds[:shift]]:
            with override_settings(TENANTS_DATASET=world.dataset):
                for page in PAGES:
                    url = urls[(page.label, world.size)]
                    if url is None:
                        continue
                    elapsed, jobs = measure_once(client, gateway, page, world, url)
                    if index >= WARMUP:
                        results[(page.label, world.size)].samples.append(elapsed)
                        results[(page.label, world.size)].jobs.append(jobs)
    return results


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def render_table(sizes: Sequence[int], results: dict[tuple[str, int], Measurement]) -> str:
    """One line per page, one column per size: p50 render time and jobs per request."""
    header = ["page", *(f"{size:,} tenants" for size in sizes)]
    lines = [[page.label, *(results[(page.label, size)].cell() for size in sizes)] for page in PAGES]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join(
            [f"{first:<{widths[0]}}", *(f"{c:>{w}}" for c, w in zip(rest, widths[1:], strict=True))]
        )

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *(fmt(line) for line in lines)])


def interpret(sizes: Sequence[int], results: dict[tuple[str, int], Measurement]) -> list[str]:
    """Sentences computed from this run's figures."""
    notes = []
    for page in PAGES:
        measured = [results[(page.label, size)] for size in sizes]
        if any(m.missing for m in measured):
            notes.append(f"- {page.label}: not measured, the page does not exist ({page.url_name}).")
            continue
        jobs = {j for m in measured for j in m.jobs}
        same = (
            f"the same {plural(jobs.pop(), 'BigQuery job')} per request at every size"
            if len(jobs) == 1
            else f"jobs per request VARY with size: {', '.join(str(sorted(set(m.jobs))) for m in measured)}"
        )
        growth = measured[-1].p50 / measured[0].p50
        notes.append(
            f"- {page.label}: {same}; p50 {measured[0].p50:.0f} ms at {sizes[0]:,} -> "
            f"{measured[-1].p50:.0f} ms at {sizes[-1]:,} tenants ({growth:.1f}x)."
        )
    return notes


def versions() -> str:
    import bqemulator
    import duckdb

    return (
        f"Django {version('django')}, bqemulator {getattr(bqemulator, '__version__', '?')} "
        f"(DuckDB {duckdb.__version__}, in memory), google-cloud-bigquery {bigquery.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )


def parse_sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", type=parse_sizes, default="10,1000,10000", help="tenant counts (default: 10,1000,10000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="measured requests per page and size (default: 5)"
    )
    parser.add_argument(
        "--seed",
        choices=sorted(SEEDERS),
        default="select",
        help="how tenants are seeded for the pages (default: select, the fastest; see --compare-seeding)",
    )
    parser.add_argument(
        "--compare-seeding",
        type=int,
        default=300,
        metavar="N",
        help="first time each seeder on N tenants x 3 tables, in own datasets (default: 300; 0 skips)",
    )
    args = parser.parse_args(argv)
    if not args.sizes or min(args.sizes) < 2 or args.sizes != sorted(set(args.sizes)) or args.repeat < 1:
        parser.error("--sizes must be increasing and at least 2 (one tenant is onboarded); --repeat positive")
    if args.compare_seeding < 0:
        parser.error("--compare-seeding must be 0 or more")
    return args


def build_world(size: int, seeder: Seeder, today: date) -> tuple[World, float]:
    """A bootstrapped central dataset with `size` tenants: one onboarded for real, the rest seeded in bulk."""
    world = World(size=size, dataset=f"{DATASET_PREFIX}_{size}", detail_tenant=f"bench_detail_{size}")
    with override_settings(TENANTS_DATASET=world.dataset):
        bigquery_bootstrap()
        # Its own dataset, key, subscription, usage row and audit entry: the detail and trend pages' tenant.
        tenant_onboard(
            tenant_id=world.detail_tenant,
            company_name="Bench Detail Ltd",
            admin_email="ops@bench-detail.example.com",
            plan="PROFESSIONAL",
            created_by="system:bench",
        )
        started = time.perf_counter()
        for model in SEEDED_TABLES:
            repo = central_repository(model)
            # The audit log is seeded with the `select` seeder whatever --seed says: the streaming seeder
            # does not handle its JSON columns, and one entry per tenant is only background.
            (seed_with_select if model is AuditLogEntry else seeder)(repo, 1, size, today)
        return world, time.perf_counter() - started


def run(args: argparse.Namespace, gateway: BigQueryGateway) -> int:
    """Set up Django's tables and a logged-in superuser, build one dataset per size, measure round-robin."""
    today = timezone.now().date()
    setup_started = time.perf_counter()
    call_command("migrate", verbosity=0)
    setup_test_environment()  # lets the test client's `testserver` host through ALLOWED_HOSTS
    user = User.objects.create_superuser("bench", "bench@example.com", "bench-password")
    client = Client()
    client.force_login(user)
    print(f"Setup: Django's tables and a superuser in {time.perf_counter() - setup_started:.1f} s.")

    if args.compare_seeding:
        print(f"Seeding {args.compare_seeding} tenants (profile, subscription, today's usage), each way:")
        for line in compare_seeders(gateway, args.compare_seeding, today):
            print(line)

    worlds = []
    seeding_notes = []
    for size in args.sizes:
        world, seconds = build_world(size, SEEDERS[args.seed], today)
        worlds.append(world)
        seeding_notes.append(f"{size - 1} tenants in {seconds:.1f} s")
    results = measure(client, gateway, worlds, args.repeat)

    print()
    print(
        f"One central dataset per size, each with 1 onboarded tenant and the rest seeded "
        f"({SEEDER_NAMES[args.seed]}): {'; '.join(seeding_notes)}."
    )
    print(
        f"Each cell: p50 of {args.repeat} GETs through Django's test client, logged in as a superuser, and "
        f"the BigQuery jobs each GET issued (gateway.count_jobs()); {WARMUP} warm-up round discarded; pages "
        "and sizes taken round-robin."
    )
    print()
    print(render_table(args.sizes, results))
    print()
    print("Interpretation")
    for note in interpret(args.sizes, results):
        print(note)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"Portal pages on {versions()}")
    emulator = EmulatorProcess(home=BENCH_DIR / "home", log_path=BENCH_DIR / "emulator.log")
    try:
        emulator.start()
        with override_settings(BIGQUERY_EMULATOR_HOST=emulator.url, BIGQUERY_PROJECT=emulator.project):
            status = run(args, get_gateway())
    finally:
        emulator.stop()
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\nTotal wall time {time.perf_counter() - started:.1f} s; load average at the end {load}.")
    return status


if __name__ == "__main__":
    sys.exit(main())
