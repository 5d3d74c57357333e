"""Load driver: concurrent HTTP clients against a running portal for a bounded time; latency, errors per kind.

Run by `bench/load/run.py` as a second process (it imports nothing of the project, only `requests`), with a
scenario file naming the server, the tenants' keys, an admin token and a staff login. Each client is a
thread with its own `requests.Session`, sending its next request as soon as the previous one answered
(closed loop), so the server is kept busy by exactly `--*-clients` requests at a time:

- tenant API clients: `X-API-Key` GETs of /api/v1/me, /me/keys, /me/usage, /me/pipelines and /me/runs;
- admin API clients: `Authorization: Bearer` GETs of /api/v1/tenants and one tenant's profile;
- portal clients: each logs in through the login form (CSRF token from the page), then views the admin
  index, the tenant list, a tenant's detail page and the quota dashboard;
- write clients: pause and resume a pipeline schedule, then create a key and revoke it, on their own tenant.

Every request must answer its expected status (a redirect to the login page, a 429 or a 5xx is an error).
Prints a table per kind and category; exits 1 if any request failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

TENANT_API = "tenant API"
ADMIN_API = "admin API"
PORTAL = "portal"
WRITES = "writes"
CATEGORIES = (TENANT_API, ADMIN_API, PORTAL, WRITES)
TIMEOUT_SECONDS = 120.0  # gunicorn's own timeout (convergence/gunicorn_conf.py) answers first
ERROR_SAMPLES = 8
MEASURING = "MEASURING"  # printed alone on a line when the warm-up ends (run.py watches for it)
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass(frozen=True)
class Sample:
    """One request: what it was, when it started (s since the run began), how long it took, its outcome."""

    kind: str
    category: str
    started: float
    latency_ms: float
    outcome: str  # the status code, or the exception's class name
    ok: bool
    warmup: bool


@dataclass
class ClientLog:
    """A client's samples and the first few failures it saw (body excerpts carry no secrets)."""

    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # GETs resent after a dropped keep-alive connection


class Client:
    """One closed-loop client: a session, a clock, and a log of every request it made."""

    category = ""

    def __init__(self, scenario: dict[str, Any], index: int, clock: Clock) -> None:
        self.scenario = scenario
        self.base = scenario["base_url"].rstrip("/")
        self.index = index
        self.clock = clock
        self.rng = random.Random(index)
        self.session = requests.Session()
        # Like a browser, resend a GET once when a reused keep-alive connection was closed by the server
        # just as the request went out (gthread closes idle connections after gunicorn's `keepalive`,
        # 2 s): that race is not the server failing. Such retries are counted and reported; POSTs are
        # never resent.
        retry = Retry(
            total=1, connect=1, read=1, status=0, other=0, allowed_methods={"GET"}, backoff_factor=0
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.log = ClientLog()

    def setup(self) -> None:
        """Before the clock starts (login); raise to fail the client."""

    def step(self) -> None:
        """One unit of work (one or more requests)."""
        raise NotImplementedError

    def request(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        expect: int = 200,
        contains: str = "",
        category: str = "",
        **kwargs: Any,
    ) -> requests.Response | None:
        """Send one request, record it, and return the response when it was the expected one."""
        started = time.perf_counter()
        response: requests.Response | None = None
        try:
            response = self.session.request(
                method, self.base + path, timeout=TIMEOUT_SECONDS, allow_redirects=False, **kwargs
            )
            body = response.text  # read the whole body inside the measured time
            retries = getattr(response.raw, "retries", None)
            if retries is not None and retries.history:
                self.log.retried.extend(f"{kind}: {error.error!r}"[:200] for error in retries.history)
            outcome = str(response.status_code)
            ok = response.status_code == expect and (not contains or contains in body)
        except requests.RequestException as exc:
            body = f"{type(exc).__name__}: {exc}"
            outcome = type(exc).__name__
            ok = False
        elapsed = (time.perf_counter() - started) * 1000
        self.log.samples.append(
            Sample(
                kind=kind,
                category=category or self.category,
                started=started - self.clock.started,
                latency_ms=elapsed,
                outcome=outcome,
                ok=ok,
                warmup=started < self.clock.measure_from,
            )
        )
        if not ok:
            if len(self.log.failures) < ERROR_SAMPLES:
                detail = body[:300].replace("\n", " ") if body else outcome
                if response is not None and response.status_code == expect:
                    detail = f"expected text {contains!r} missing"
                location = response.headers.get("Location", "") if response is not None else ""
                self.log.failures.append(
                    f"{kind}: {method} {path} -> {outcome} (expected {expect}) "
                    f"{'Location ' + location + ' ' if location else ''}{detail}"
                )
            return None
        return response

    def run(self) -> None:
        while time.perf_counter() < self.clock.deadline:
            self.step()


class TenantApiClient(Client):
    """A tenant's integration reading its own resources with its key."""

    category = TENANT_API
    PATHS = (
        ("GET /me", "/api/v1/me"),
        ("GET /me/keys", "/api/v1/me/keys"),
        ("GET /me/usage", "/api/v1/me/usage"),
        ("GET /me/pipelines", "/api/v1/me/pipelines"),
        ("GET /me/runs", "/api/v1/me/runs"),
    )

    def setup(self) -> None:
        tenants = self.scenario["tenants"]
        self.tenant = tenants[self.index % len(tenants)]
        self.session.headers["X-API-Key"] = self.tenant["api_key"]

    def step(self) -> None:
        kind, path = self.rng.choice(self.PATHS)
        self.request(kind, "GET", path)


class AdminApiClient(Client):
    """A staff script with an admin token: the tenant list and one tenant's profile."""

    category = ADMIN_API

    def setup(self) -> None:
        self.session.headers["Authorization"] = f"Bearer {self.scenario['admin_token']}"

    def step(self) -> None:
        if self.rng.random() < 0.5:
            self.request("GET /tenants", "GET", "/api/v1/tenants?limit=50")
        else:
            tenant_id = self.rng.choice(self.scenario["tenants"])["tenant_id"]
            self.request("GET /tenants/{id}", "GET", f"/api/v1/tenants/{tenant_id}", contains=tenant_id)


class PortalClient(Client):
    """A staff member in a browser: logs in through the form, then reads the portal's main pages."""

    category = PORTAL

    def setup(self) -> None:
        portal = self.scenario["portal"]
        page = self.session.get(self.base + portal["login"], timeout=TIMEOUT_SECONDS)
        match = _CSRF_INPUT.search(page.text)
        if page.status_code != 200 or match is None:
            raise RuntimeError(f"login page answered {page.status_code} without a CSRF token")
        # Counted like any request (not warm-up), so a refused login is an error in the report.
        answer = self.request(
            "POST login",
            "POST",
            portal["login"],
            expect=302,
            data={
                "csrfmiddlewaretoken": match.group(1),
                "username": self.scenario["staff"]["username"],
                "password": self.scenario["staff"]["password"],
                "next": portal["index"],
            },
        )
        if answer is None or "sessionid" not in self.session.cookies:
            raise RuntimeError("portal login failed")

    def step(self) -> None:
        portal = self.scenario["portal"]
        tenant_id = self.rng.choice(self.scenario["tenants"])["tenant_id"]
        page = self.rng.randrange(4)
        if page == 0:
            self.request("GET admin index", "GET", portal["index"])
        elif page == 1:
            self.request("GET tenant list", "GET", portal["tenant_list"])
        elif page == 2:
            path = portal["tenant_detail"].replace("TENANT_ID", tenant_id)
            self.request("GET tenant detail", "GET", path, contains=tenant_id)
        else:
            self.request("GET quota dashboard", "GET", portal["dashboard"])


class WriteClient(Client):
    """A tenant's automation changing things: pause and resume a schedule, create a key and revoke it."""

    category = WRITES

    def setup(self) -> None:
        tenants = self.scenario["tenants"]
        # Each writer on its own tenant (while there are enough), so two writers never race on one schedule.
        self.tenant = tenants[self.index % len(tenants)]
        self.session.headers["X-API-Key"] = self.tenant["api_key"]
        self.created = 0

    def step(self) -> None:
        config = f"/api/v1/me/pipelines/{self.tenant['write_config_id']}"
        self.request("POST pipeline pause", "POST", f"{config}/pause", json={})
        self.request("POST pipeline resume", "POST", f"{config}/resume", json={})
        self.created += 1
        name = f"load writer {self.index} #{self.created}"
        created = self.request(
            "POST key create",
            "POST",
            "/api/v1/me/keys",
            expect=201,
            json={"name": name, "scopes": ["tenant:read"]},
        )
        if created is None:
            return
        key_id = created.json()["key"]["api_key_id"]
        self.request(
            "POST key revoke", "POST", f"/api/v1/me/keys/{key_id}/revoke", json={"reason": "load test"}
        )


@dataclass
class Clock:
    """The run's time line: warm-up from `started` to `measure_from`, then measured until `deadline`."""

    started: float = 0.0
    measure_from: float = 0.0
    deadline: float = 0.0
    wall_offset: float = 0.0  # time.time() - time.perf_counter(), to report the window in epoch seconds


# --- statistics -----------------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarize(samples: Sequence[Sample], seconds: float) -> dict[str, Any]:
    """Requests, rate, latency percentiles (of answered requests) and errors by outcome."""
    latencies = sorted(s.latency_ms for s in samples)
    errors = Counter(s.outcome for s in samples if not s.ok)
    return {
        "requests": len(samples),
        "rps": len(samples) / seconds if seconds else 0.0,
        "p50": percentile(latencies, 0.50),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "max": latencies[-1] if latencies else 0.0,
        "errors": sum(errors.values()),
        "error_outcomes": dict(sorted(errors.items())),
    }


def report(samples: Sequence[Sample], seconds: float) -> dict[str, Any]:
    """Per kind (in category order), per category, reads, and total; measured samples only for latency."""
    measured = [s for s in samples if not s.warmup]
    kinds: dict[str, dict[str, Any]] = {}
    for category in CATEGORIES:
        for kind in sorted({s.kind for s in measured if s.category == category}):
            stats = summarize([s for s in measured if s.kind == kind], seconds)
            kinds[kind] = {"category": category, **stats}
    categories = {
        category: summarize([s for s in measured if s.category == category], seconds)
        for category in CATEGORIES
        if any(s.category == category for s in measured)
    }
    reads = [s for s in measured if s.category != WRITES]
    warmup_errors = Counter(s.outcome for s in samples if s.warmup and not s.ok)
    return {
        "seconds": seconds,
        "kinds": kinds,
        "categories": categories,
        "reads": summarize(reads, seconds),
        "total": summarize(measured, seconds),
        "warmup_requests": sum(1 for s in samples if s.warmup),
        "warmup_errors": sum(warmup_errors.values()),
        "warmup_error_outcomes": dict(warmup_errors),
    }


def format_row(label: str, stats: dict[str, Any]) -> str:
    errors = stats["errors"]
    outcomes = ", ".join(f"{code} x{count}" for code, count in stats["error_outcomes"].items())
    return (
        f"{label:<24} {stats['requests']:>7} {stats['rps']:>7.1f} {stats['p50']:>7.0f} {stats['p95']:>7.0f} "
        f"{stats['p99']:>7.0f} {stats['max']:>7.0f} {errors:>6}{'  (' + outcomes + ')' if errors else ''}"
    )


def render(result: dict[str, Any]) -> str:
    columns = ("reqs", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms")
    header = f"{'kind':<24} " + " ".join(f"{name:>7}" for name in columns) + f" {'errors':>6}"
    lines = [header, "-" * len(header)]
    for category in CATEGORIES:
        kinds = [(k, v) for k, v in result["kinds"].items() if v["category"] == category]
        if not kinds:
            continue
        lines += [format_row(f"  {kind}", stats) for kind, stats in kinds]
        lines.append(format_row(f"{category} (all)", result["categories"][category]))
    lines.append("-" * len(header))
    lines.append(format_row("reads (all but writes)", result["reads"]))
    lines.append(format_row("TOTAL", result["total"]))
    return "\n".join(lines)


# --- running --------------------------------------------------------------------------------------------
def build_clients(args: argparse.Namespace, scenario: dict[str, Any], clock: Clock) -> list[Client]:
    plan: list[tuple[type[Client], int]] = [
        (TenantApiClient, args.api_clients),
        (AdminApiClient, args.admin_clients),
        (PortalClient, args.portal_clients),
        (WriteClient, args.write_clients),
    ]
    return [cls(scenario, index, clock) for cls, count in plan for index in range(count)]


def run_clients(clients: Sequence[Client], clock: Clock, warmup: float, duration: float) -> float:
    """Set every client up, then run them all until the deadline; returns the measured seconds."""
    clock.wall_offset = time.time() - time.perf_counter()
    clock.started = time.perf_counter()
    for client in clients:
        client.setup()
    clock.measure_from = time.perf_counter() + warmup
    clock.deadline = clock.measure_from + duration
    failures: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # a crashed client is reported, not lost in a thread
                failures.append(exc)

        return body

    threads = [threading.Thread(target=guarded(client.run), daemon=True) for client in clients]
    for thread in threads:
        thread.start()
    # Tell run.py the warm-up is over, so it counts the servers' CPU time from here.
    time.sleep(max(0.0, clock.measure_from - time.perf_counter()))
    print(MEASURING, flush=True)
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} client(s) crashed: {failures[0]!r}") from failures[0]
    # Requests started before the deadline finish after it: measure to the last answer.
    last = max((s.started + s.latency_ms / 1000 for c in clients for s in c.log.samples), default=0.0)
    return max(duration, last - (clock.measure_from - clock.started))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", type=Path, required=True, help="JSON written by run.py")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (default 3)")
    parser.add_argument("--api-clients", type=int, default=6, help="tenant-key API clients (default 6)")
    parser.add_argument("--admin-clients", type=int, default=2, help="admin-token API clients (default 2)")
    parser.add_argument("--portal-clients", type=int, default=3, help="logged-in portal sessions (default 3)")
    parser.add_argument("--write-clients", type=int, default=1, help="clients making writes (default 1)")
    parser.add_argument("--json-out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    counts = (args.api_clients, args.admin_clients, args.portal_clients, args.write_clients)
    if min(counts) < 0 or sum(counts) < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("client counts must be 0 or more (at least one client), --duration positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = json.loads(args.scenario.read_text())
    clock = Clock()
    clients = build_clients(args, scenario, clock)
    seconds = run_clients(clients, clock, args.warmup, args.duration)
    samples = [s for c in clients for s in c.log.samples]
    result = report(samples, seconds)
    # The measured window in epoch seconds, so run.py can match the server's flush log to it.
    window_start = clock.measure_from + clock.wall_offset
    result["window"] = [window_start, window_start + seconds]
    result["failures"] = [f for c in clients for f in c.log.failures][:ERROR_SAMPLES]
    result["clients"] = {
        "api": args.api_clients,
        "admin": args.admin_clients,
        "portal": args.portal_clients,
        "write": args.write_clients,
    }
    result["retried"] = [r for c in clients for r in c.log.retried]
    result["slowest"] = [
        {"kind": s.kind, "at_s": round(s.started, 2), "ms": round(s.latency_ms, 1), "outcome": s.outcome}
        for s in sorted((s for s in samples if not s.warmup), key=lambda s: -s.latency_ms)[:10]
    ]
    print(
        f"{len(clients)} clients ({args.api_clients} tenant API, {args.admin_clients} admin API, "
        f"{args.portal_clients} portal, {args.write_clients} writing), {args.warmup:.0f} s warm-up "
        f"({result['warmup_requests']} requests, not in the figures), {seconds:.1f} s measured:"
    )
    print(render(result))
    errors = result["total"]["errors"] + result["warmup_errors"]
    if result["warmup_errors"]:
        print(f"warm-up errors: {result['warmup_error_outcomes']}")
    for failure in result["failures"]:
        print(f"  failure: {failure}")
    if result["retried"]:
        print(f"  {len(result['retried'])} GET(s) resent once after a dropped keep-alive connection, e.g.")
        for retried in result["retried"][:3]:
            print(f"    {retried}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
