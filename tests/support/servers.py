"""Real gunicorn processes of the portal, for tests of what several server processes share.

Each `PortalServer` is `gunicorn convergence.wsgi` with the production config
(convergence/gunicorn_conf.py) on a free loopback port. Servers started with one `ServerEnvironment`
share its data directory (SQLite, the embedded cache, the local KMS key) and BigQuery datasets, as
the gunicorn workers of one machine do; each server is its own process, so a test can choose which
process answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

BASE_DIR = Path(__file__).resolve().parents[2]
# Environment of the test runner that must not leak into the servers' settings.
_NOT_INHERITED = ("DJANGO_", "LOGIN_", "CACHE_URL", "DATA_DIR", "TENANTS_DATASET", "API_")
START_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerEnvironment:
    """One machine's worth of configuration: data directory, BigQuery endpoint and central dataset."""

    data_dir: Path
    emulator_url: str
    project: str
    extra: dict[str, str] = field(default_factory=dict)
    tenants_dataset: str = field(default_factory=lambda: f"tenants_{uuid.uuid4().hex[:12]}")

    def env(self) -> dict[str, str]:
        keep = {name: value for name, value in os.environ.items() if not name.startswith(_NOT_INHERITED)}
        return {
            **keep,
            "DATA_DIR": str(self.data_dir),
            "DJANGO_SECRET_KEY": "servers-" + uuid.uuid4().hex * 2,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "BIGQUERY_EMULATOR_HOST": self.emulator_url,
            "BIGQUERY_PROJECT": self.project,
            "TENANTS_DATASET": self.tenants_dataset,
            "LOG_LEVEL": "WARNING",
            **self.extra,
        }

    def manage(self, *args: str) -> str:
        """Run `manage.py` with this environment; returns its standard output."""
        finished = subprocess.run(  # noqa: S603 - our own manage.py with arguments of the test
            [sys.executable, str(BASE_DIR / "manage.py"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=180,
            cwd=BASE_DIR,
            check=False,
        )
        assert finished.returncode == 0, finished.stderr
        return finished.stdout

    def prepare(self) -> str:
        """Django tables, the BigQuery datasets and a staff token; returns the token."""
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("bootstrap_bigquery", "-v", "0")
        self.manage("ensure_admin", "-v", "0")
        return self.manage("create_admin_token", "--username", "admin", "--name", "tests", "-v", "0").strip()


class PortalServer:
    """`gunicorn convergence.wsgi` with the production config, `workers` processes on a free port."""

    def __init__(
        self, environment: ServerEnvironment, *, workers: int = 1, threads: int | None = None
    ) -> None:
        self.port = free_port()
        self._threads = threads
        self.url = f"http://127.0.0.1:{self.port}"
        self._environment = environment
        self._workers = workers
        self._process: subprocess.Popen[bytes] | None = None
        self._log = environment.data_dir / f"gunicorn-{self.port}.log"

    def start(self) -> PortalServer:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "convergence.wsgi",
            "--config",
            "python:convergence.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self._workers),
        ]
        if self._threads is not None:
            command += ["--threads", str(self._threads)]
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own server
                command, env=self._environment.env(), cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_healthy()
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def _wait_until_healthy(self) -> None:
        # Waiting for a real process to come up: polling, not a clock the test could inject.
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self._process.returncode}:\n{self.log_text()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or a worker still warming up on a busy machine: ask again
            time.sleep(0.2)
        self.stop()
        raise AssertionError(
            f"gunicorn did not answer /healthz within {START_TIMEOUT_SECONDS} s:\n{self.log_text()}"
        )


class PeriodicProcess:
    """`manage.py run_periodic` with this environment, as production runs it beside gunicorn."""

    def __init__(self, environment: ServerEnvironment) -> None:
        self._environment = environment
        self._process: subprocess.Popen[bytes] | None = None
        self._log = environment.data_dir / f"run-periodic-{uuid.uuid4().hex[:8]}.log"

    def start(self) -> PeriodicProcess:
        command = [sys.executable, str(BASE_DIR / "manage.py"), "run_periodic", "-v", "0"]
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own manage.py
                command, env=self._environment.env(), cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # it finishes the job it runs, then exits
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""
