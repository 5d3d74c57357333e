"""Under gunicorn, a scrape of any worker reports the counts of all of them, and none of a past server."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bigquery_backend.emulator import EmulatorProcess
from tests.support.servers import PortalServer, ServerEnvironment

TOKEN = "scraper-" + "t" * 40
PROBES = 40
# What a server that ran here before left behind: counts this server must not report.
_STALE_COUNTS = """
from prometheus_client import Counter
Counter("convergence_webhook_deliveries", "stale", ["outcome"]).labels(outcome="stale").inc(1000)
"""


@pytest.fixture(scope="module")
def server(
    bigquery_emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PortalServer]:
    environment = ServerEnvironment(
        data_dir=tmp_path_factory.mktemp("metrics-machine"),
        emulator_url=bigquery_emulator.url,
        project=bigquery_emulator.project,
        extra={"METRICS_TOKEN": TOKEN},
    )
    environment.prepare()
    stale_dir = environment.data_dir / "metrics"
    stale_dir.mkdir(mode=0o700)
    subprocess.run(  # noqa: S603 - our own interpreter, a fixed script
        [sys.executable, "-c", _STALE_COUNTS],
        env={"PROMETHEUS_MULTIPROC_DIR": str(stale_dir)},
        check=True,
        timeout=60,
    )
    assert list(stale_dir.glob("counter_*.db"))
    portal = PortalServer(environment, workers=2)
    try:
        yield portal.start()
    finally:
        portal.stop()


def scrape(server: PortalServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(
        f"{server.url}/metrics",
        headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_it_adds_up_the_counts_of_every_worker(server: PortalServer) -> None:
    # Each probe on a new connection: the workers race to accept them, so both serve some.
    for _ in range(PROBES):
        assert requests.get(f"{server.url}/readyz", headers={"Connection": "close"}, timeout=60).ok

    samples = scrape(server)

    selects = samples.get(
        ("convergence_bigquery_jobs_total", (("outcome", "ok"), ("statement_class", "select")))
    )
    # Every probe ran `SELECT 1` in whichever worker served it; the one scrape counts them all.
    assert selects is not None
    assert selects >= PROBES


def test_it_reports_nothing_of_a_previous_server(server: PortalServer) -> None:
    samples = scrape(server)

    assert ("convergence_webhook_deliveries_total", (("outcome", "stale"),)) not in samples


def test_it_keeps_the_counts_in_a_private_directory(server: PortalServer) -> None:
    directory = server._environment.data_dir / "metrics"
    scrape(server)

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert len(list(directory.glob("counter_*.db"))) >= 2  # one per worker that counted something
