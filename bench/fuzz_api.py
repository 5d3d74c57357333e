"""The long fuzzing run: schemathesis against our OpenAPI schema, every operation, admin token and tenant key.

tests/api/test_fuzzing.py runs the same fuzzing (tests/support/fuzz.py) with a few examples per
operation; this script runs many more, in positive and negative generation modes, and prints for each
operation and auth scheme the examples sent, the statuses seen and the failures by kind (a 5xx, an
undocumented status, content type or header, a body not matching the schema), then a total. It exits
non-zero on any failure and prints one sample request (curl, credentials masked) per kind.

    .venv/bin/python bench/fuzz_api.py                  # 25 examples per operation and mode
    .venv/bin/python bench/fuzz_api.py --examples 100   # longer
    .venv/bin/python bench/fuzz_api.py --only /me/      # operations whose path contains /me/
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a plain script from the repo root: the project packages are not installed in the venv.
sys.path.insert(0, str(ROOT))
# Everything the run writes goes to a temporary directory, removed at the end.
BENCH_DIR = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
os.environ["DATA_DIR"] = str(BENCH_DIR)
os.environ["DATABASE_URL"] = f"sqlite:///{BENCH_DIR / 'portal.sqlite3'}"
# Refused requests log a warning each; thousands of them would bury the report.
os.environ["LOG_LEVEL"] = "ERROR"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convergence.settings")

import django  # noqa: E402

django.setup()
logging.disable(logging.CRITICAL)
# Requests go to the WSGI app, which serves no static files here (no collectstatic): WhiteNoise says so once.
warnings.filterwarnings("ignore", message="No directory at")

from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402

from bigquery_backend.emulator import EmulatorProcess  # noqa: E402
from tenants_app.services.bootstrap import bigquery_bootstrap  # noqa: E402
from tests.support.fuzz import (  # noqa: E402
    CHECK_NAMES,
    FuzzWorld,
    OperationReport,
    SeededTenant,
    admin_token_headers,
    fuzz_operation,
    in_process_requests,
    load_schema,
    real_path_parameters,
    seed_world,
    tenant_key_headers,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=25, help="examples per operation and mode (25)")
    parser.add_argument("--only", default="", help="fuzz only operations whose path contains this")
    return parser.parse_args(argv)


def fuzz_scheme(
    world: FuzzWorld, seeded: SeededTenant, headers: dict[str, str], *, examples: int, only: str
) -> list[OperationReport]:
    schema = load_schema()
    reports = []
    with in_process_requests():
        for result in schema.get_all_operations():
            operation = result.ok()
            if only not in operation.path:
                continue
            reports.append(
                fuzz_operation(
                    operation,
                    headers=headers,
                    real_parameters=real_path_parameters(world, seeded, operation),
                    max_examples=examples,
                )
            )
    return reports


def print_table(scheme: str, reports: list[OperationReport], seconds: float) -> None:
    print(f"\n{scheme}: {len(reports)} operations in {seconds:.1f} s")
    print(f"{'operation':<66} {'examples':>8} {'seconds':>7} {'fail':>5}  statuses / failures by kind")
    print("-" * 130)
    for report in reports:
        statuses = " ".join(f"{code}x{n}" for code, n in sorted(report.statuses.items()))
        failed = sum(report.failures.values())
        print(f"{report.label:<66} {report.examples:>8} {report.seconds:>7.1f} {failed:>5}  {statuses}")
        for kind, count in report.failures.most_common():
            print(f"{'':<90}  ! {kind} x{count}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Each auth scheme's table as soon as it is done, also when the output goes to a file.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    started = time.perf_counter()
    emulator = EmulatorProcess(home=BENCH_DIR / "home", log_path=BENCH_DIR / "emulator.log")
    totals: Counter[str] = Counter()
    samples: dict[tuple[str, str], str] = {}
    try:
        emulator.start()
        with override_settings(
            BIGQUERY_EMULATOR_HOST=emulator.url,
            BIGQUERY_PROJECT=emulator.project,
            BIGQUERY_TIMEOUT_SECONDS=30.0,
            BIGQUERY_RETRY_DEADLINE_SECONDS=15.0,
            # A 429 is documented, but after the first one every request would be refused unread.
            API_RATE_LIMITS_ENABLED=False,
        ):
            call_command("migrate", verbosity=0)
            bigquery_bootstrap()
            step = time.perf_counter()
            world = seed_world("fuzz")
            seeded_in = time.perf_counter() - step
            print(f"Seeded 3 tenants (keys, credentials, pipeline configs, a run) in {seeded_in:.1f} s")
            schemes = (
                ("admin token (superuser)", world.staff_target, admin_token_headers()),
                ("tenant key (every scope)", world.tenant, tenant_key_headers(world)),
            )
            for name, seeded, headers in schemes:
                step = time.perf_counter()
                reports = fuzz_scheme(world, seeded, headers, examples=args.examples, only=args.only)
                print_table(name, reports, time.perf_counter() - step)
                for report in reports:
                    totals["operations"] += 1
                    totals["examples"] += report.examples
                    for kind, count in report.failures.items():
                        totals["failures"] += count
                        samples.setdefault((report.label, kind), report.samples[kind])
    finally:
        emulator.stop()
        shutil.rmtree(BENCH_DIR, ignore_errors=True)

    print(
        f"\nschemathesis {version('schemathesis')}, hypothesis {version('hypothesis')}, "
        f"bqemulator {version('bqemulator')}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"Checks: {', '.join(CHECK_NAMES)}; modes positive and negative, {args.examples} examples each")
    print(
        f"Total: {totals['operations']} operation runs, {totals['examples']} requests, "
        f"{totals['failures']} failures, in {time.perf_counter() - started:.1f} s; "
        f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for (label, kind), sample in samples.items():
        print(f"\n--- {label}: {kind}\n{sample}")
    return 1 if totals["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
