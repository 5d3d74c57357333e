"""Everything specific to the embedded BigQuery emulator (`bqemulator`) lives in this module.

Product code never depends on it: the app talks to the emulator through the official client, like to
BigQuery, and only the endpoint and credentials differ (see `client.build_gateway`). Known quirks of
the emulator, each worked around in portable code elsewhere and noted here so they are found in one place:

- It loads DuckDB's `spatial` extension at start and tries to download it, which fails offline:
  `prepare_home()` installs the file from the `duckdb-extension-spatial` wheel into a private HOME.
- Partitioning and clustering given in DDL are dropped: tables are created through the API
  (`schema.TableDefinition.build_table`), which keeps them, and is what production does anyway.
- `update_table` changes the catalog but not the storage, and `ALTER TABLE ADD COLUMN` the storage but
  not the catalog: `provisioning.add_columns` runs the DDL, then patches the catalog if it still lacks
  the columns (a no-op on BigQuery, where the DDL already did both).
- JSON and BYTES query parameters are stored still encoded: the repository sends both as STRING and
  decodes server-side (`PARSE_JSON`, `FROM_BASE64`), which is valid BigQuery SQL as well.
- REQUIRED is not enforced on DML: the repository validates fields before any statement.
- A failed query can come back as HTTP 200 with the error only in the job status, which the client
  library ignores: `client.BigQueryGateway.query` reads the job's status when a result has neither
  columns nor a DML count (DDL or a failure), so errors are never mistaken for empty results.
- `LIKE` ignores backslash escapes: text lookups use `STRPOS`/`STARTS_WITH`, which need no escaping.
- One `ALTER TABLE` takes one `ADD COLUMN` clause: `provisioning.add_columns` sends one per column.
- Query parameters inside multi-statement scripts fail: we only ever send single statements.
- In an `UPDATE ... SET ... FROM (subquery)`, parameters outside the subquery are bound to the wrong
  placeholders (it reorders the statement after numbering them): `batch_source.zipped_rows` carries
  every value of such a statement, constants included, as columns of the subquery, which BigQuery
  reads the same way.
- A 500 makes the client retry for up to 10 minutes: the gateway bounds every call's retry and timeout.
- Every DML copies the whole table (time-travel snapshots), so writes cost O(table size) here; the
  benchmark shows it, and nothing in the product relies on it. The copies are kept 7 days by default,
  which grows a long-running emulator by gigabytes: we start it with retention 0, so its garbage
  collector (every 60 s) drops them.
- Multi-row `INSERT ... VALUES` costs ~15 ms per row: seed large tables with `INSERT ... SELECT`.
- Concurrent statements are serialized: one uvicorn event loop runs each statement synchronously on a
  single DuckDB connection, so a conditional UPDATE is atomic and concurrent ones never conflict (the
  quota race tests pass for that reason and because the statement is atomic on BigQuery too). BigQuery
  instead may fail a mutating DML that lost a conflict on the same partition ("concurrent update"),
  and refuses DML beyond 2 running and 20 queued per table; the gateway's retry policy
  (`client.is_retryable_refusal`) runs those again. The emulator produces neither: the realism proxy
  of the tests (tests/support/bigquery_realism.py) adds them, with BigQuery's latency.
- A jobs.insert with a job id that exists runs the statement again (BigQuery answers 409): the gateway
  relies on that 409 to wait for a DML whose answer was lost instead of running it twice; the realism
  proxy answers it as BigQuery does.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PROJECT = "convergence-local"


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_home(home: Path) -> Path:
    """Put DuckDB's spatial extension where DuckDB looks for it, so that start needs no download."""
    import duckdb

    spec = importlib.util.find_spec("duckdb_extension_spatial")
    if spec is None or spec.origin is None:
        raise RuntimeError("duckdb-extension-spatial is not installed (pip install '.[emulator]')")
    version = f"v{duckdb.__version__}"
    source = Path(spec.origin).parent / "extensions" / version / "spatial.duckdb_extension"
    if not source.exists():
        raise RuntimeError(
            f"no spatial extension for DuckDB {version} in {source.parent}: pin matching versions"
        )
    platform = duckdb.execute("PRAGMA platform").fetchone()[0]  # type: ignore[index]
    target_dir = home / ".duckdb" / "extensions" / version / platform
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, target)
    return home


class EmulatorProcess:
    """One bqemulator server on loopback: started, waited for, stopped.

    Its files (HOME, `data_dir`, the log) get the modes of the caller's umask, which the server inherits:
    the project's settings make it owner-only, and `main` does the same when run on its own.
    """

    def __init__(
        self,
        *,
        home: Path,
        port: int | None = None,
        data_dir: Path | None = None,
        project: str = DEFAULT_PROJECT,
        log_path: Path | None = None,
    ) -> None:
        self.home = home
        self.port = port or free_port()
        self.data_dir = data_dir
        self.project = project
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "bqemulator", "start",
            "--rest-host", "127.0.0.1", "--rest-port", str(self.port),
            "--grpc-host", "127.0.0.1", "--grpc-port", "0",
            "--project", self.project, "--log-level", "warning", "--no-admin",
        ]  # fmt: skip
        if self.data_dir is not None:
            command += ["--persistent", "--data-dir", str(self.data_dir)]
        return command

    def start(self, *, timeout: float = 60.0, detach: bool = False) -> None:
        """Start the server and wait until it answers; `detach` lets it outlive this process."""
        self.launch(detach=detach)
        self.wait_ready(timeout=timeout)

    def launch(self, *, detach: bool = False) -> int:
        """Start the server process without waiting for it; returns its pid."""
        prepare_home(self.home)
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        # HOME only for the emulator: DuckDB reads its extension directory from there.
        environment = {"BQEMU_TIME_TRAVEL_RETENTION_DAYS": "0", **os.environ, "HOME": str(self.home)}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
                self.command(),
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        return self.process.pid

    def wait_ready(self, *, timeout: float) -> None:
        """Poll the datasets endpoint until it answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"emulator exited with code {self.process.returncode}; see {self.log_path}"
                )
            if is_ready(self.url, self.project):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"emulator did not answer on {self.url} within {timeout:.0f}s; see {self.log_path}"
        )

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def is_ready(url: str, project: str) -> bool:
    """True when an emulator (or any BigQuery REST endpoint) answers on `url`."""
    try:
        with urllib.request.urlopen(f"{url}/bigquery/v2/projects/{project}/datasets", timeout=2) as response:  # noqa: S310
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _running_emulator(pidfile: Path) -> int | None:
    """The pid in `pidfile` if that process is alive and is a bqemulator (pids get reused)."""
    try:
        pid = int(pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"bqemulator" in cmdline else None


def main(argv: list[str] | None = None) -> int:
    """`python -m bigquery_backend.emulator start|stop`: a detached, persistent emulator for `make run`."""
    parser = argparse.ArgumentParser(prog="python -m bigquery_backend.emulator")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--data-dir", type=Path, required=True, help="persistent storage directory")
    parser.add_argument("--port", type=int, default=9050)
    parser.add_argument("--project", default=DEFAULT_PROJECT)
    args = parser.parse_args(argv)
    # Owner-only files for this process and the server it starts (which inherits the umask): the storage
    # holds whatever rows clients write, which is no business of other local accounts. Set here, not
    # taken from the project's settings: this module runs on its own and depends on no project code.
    os.umask(0o077)

    root: Path = args.data_dir.resolve()
    pidfile = root / "emulator.pid"
    url = f"http://127.0.0.1:{args.port}"
    running = _running_emulator(pidfile)
    if args.action == "stop":
        if running is not None:
            os.killpg(running, signal.SIGTERM)
            print(f"emulator stopped (pid {running})")
        pidfile.unlink(missing_ok=True)
        return 0

    if running is not None and is_ready(url, args.project):
        print(f"emulator already running on {url}")
        return 0
    if is_ready(url, args.project):
        print(f"port {args.port} already serves a BigQuery endpoint not started from {root}", file=sys.stderr)
        return 1
    emulator = EmulatorProcess(
        home=root / "home",
        port=args.port,
        data_dir=root / "storage",
        project=args.project,
        log_path=root / "emulator.log",
    )
    root.mkdir(parents=True, exist_ok=True)
    # The pid file is written before waiting, so an interrupted start can still be stopped.
    pidfile.write_text(str(emulator.launch(detach=True)))
    try:
        emulator.wait_ready(timeout=60.0)
    except BaseException:
        emulator.stop()
        pidfile.unlink(missing_ok=True)
        raise
    print(f"emulator running on {url} (data in {root / 'storage'}, log in {root / 'emulator.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
