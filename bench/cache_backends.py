"""Which embedded cache should every gunicorn worker share? diskcache vs Django's database cache vs locmem.

Measures, side by side in one run, what the API's hot path asks of the cache:
- per-operation cost: get (hit), set, incr, and one API request's worth (a key-check get and the four
  increments of the rate limiter), each followed by Django's per-request `close()`;
- correctness across processes: 2 processes increment one counter N times each, as rate limits and the
  login throttle do; a lost update lets calls past a limit;
- visibility across processes: how long after process A deletes an entry (a revocation) process B stops
  seeing it.
locmem is the per-process baseline: fastest, but it shares nothing, so it fails the last two by design.

    .venv/bin/python bench/cache_backends.py [--ops 2000] [--increments 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BACKENDS = ("locmem", "diskcache", "database")


def configure(backend: str, directory: Path) -> None:
    """Minimal Django settings with `backend` as the default cache, its files under `directory`."""
    import django
    from django.conf import settings

    from convergence.cache import embedded_cache

    caches = {
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "diskcache": embedded_cache(directory / "cache"),
        "database": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache_table"},
    }
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": directory / "db.sqlite3"}},
        CACHES={"default": caches[backend]},
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


def per_op_micros(operation: Callable[[], Any], ops: int) -> float:
    from django.core.cache import close_caches

    samples = []
    for _ in range(ops):
        started = time.perf_counter()
        operation()
        close_caches()  # what Django does at the end of every request
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def operation_costs(backend: str, directory: str, ops: int, out: Any) -> None:
    configure(backend, Path(directory))
    from django.core.cache import cache

    cache.set("key-check", {"tenant_id": "t", "scopes": ["runs:read"]}, 60)
    for name in ("minute", "hour", "pending", "recorded"):
        cache.set(name, 0, 120)

    def request() -> None:
        cache.get("key-check")
        for name in ("minute", "hour", "pending", "recorded"):
            cache.incr(name)

    out.put(
        {
            "get": per_op_micros(lambda: cache.get("key-check"), ops),
            "set": per_op_micros(lambda: cache.set("other", {"a": 1}, 60), ops),
            "incr": per_op_micros(lambda: cache.incr("minute"), ops),
            "request": per_op_micros(request, ops),
        }
    )


def increment(backend: str, directory: str, count: int, start: Any) -> None:
    configure(backend, Path(directory))
    from django.core.cache import cache

    cache.add("shared-counter", 0, 600)  # as the rate limiter starts a window: a no-op where it exists
    start.wait()
    for _ in range(count):
        cache.incr("shared-counter")


def watch_for_delete(backend: str, directory: str, ready: Any, deleted_at: Any, out: Any) -> None:
    configure(backend, Path(directory))
    from django.core.cache import cache

    if cache.get("revoked-key") is None:
        # Never saw the entry the other process wrote: nothing is shared.
        ready.set()
        out.put(None)
        return
    ready.set()
    deadline = time.time() + 5
    while time.time() < deadline:
        if cache.get("revoked-key") is None and deleted_at.value:
            out.put(time.time() - deleted_at.value)
            return
        time.sleep(0.0005)
    out.put(None)


def cross_process(backend: str, directory: Path, increments: int) -> tuple[int, float | None]:
    """(counts lost of 2 x increments, seconds until process B saw process A's delete)."""
    context = multiprocessing.get_context("spawn")
    setup = context.Process(target=seed, args=(backend, str(directory)))
    setup.start()
    setup.join()
    start = context.Event()
    workers = [
        context.Process(target=increment, args=(backend, str(directory), increments, start)) for _ in "ab"
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join()
    final = context.Queue()
    reader = context.Process(target=read_counter, args=(backend, str(directory), final))
    reader.start()
    counted = final.get()
    reader.join()

    ready, deleted_at, seen = context.Event(), context.Value("d", 0.0), context.Queue()
    watcher = context.Process(
        target=watch_for_delete, args=(backend, str(directory), ready, deleted_at, seen)
    )
    watcher.start()
    ready.wait()
    deleter = context.Process(target=delete_entry, args=(backend, str(directory), deleted_at))
    deleter.start()
    deleter.join()
    delay = seen.get()
    watcher.join()
    return 2 * increments - counted, delay


def seed(backend: str, directory: str) -> None:
    configure(backend, Path(directory))
    from django.core.cache import cache
    from django.core.management import call_command

    if backend == "database":
        call_command("createcachetable", verbosity=0)
    cache.set("shared-counter", 0, 600)
    cache.set("revoked-key", {"tenant_id": "t"}, 600)


def read_counter(backend: str, directory: str, out: Any) -> None:
    configure(backend, Path(directory))
    from django.core.cache import cache

    out.put(cache.get("shared-counter") or 0)


def delete_entry(backend: str, directory: str, deleted_at: Any) -> None:
    configure(backend, Path(directory))
    from django.core.cache import cache

    time.sleep(0.2)  # the watcher is polling by now
    cache.delete("revoked-key")
    deleted_at.value = time.time()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=2000, help="operations timed per kind (default 2000)")
    parser.add_argument("--increments", type=int, default=2000, help="increments per process (default 2000)")
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    rows = []
    for backend in BACKENDS:
        with tempfile.TemporaryDirectory(prefix=f"bench-cache-{backend}-") as directory:
            out = context.Queue()
            if backend == "database":
                prepare = context.Process(target=seed, args=(backend, directory))
                prepare.start()
                prepare.join()
            costs_process = context.Process(target=operation_costs, args=(backend, directory, args.ops, out))
            costs_process.start()
            costs = out.get()
            costs_process.join()
            lost, delay = cross_process(backend, Path(directory), args.increments)
        rows.append((backend, costs, lost, delay))

    print(f"median µs per operation, each followed by Django's per-request close(); {args.ops} of each")
    print(f"2 processes x {args.increments} increments of one counter; B polls while A deletes an entry")
    header = ("backend", "get", "set", "incr", "request*", "increments lost", "delete seen by B after")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for backend, costs, lost, delay in rows:
        seen = "never (per process)" if delay is None else f"{delay * 1000:.1f} ms"
        cells = [backend, *(f"{costs[k]:.0f}" for k in ("get", "set", "incr", "request")), str(lost), seen]
        print("| " + " | ".join(cells) + " |")
    print("* one API request's cache work: the key check (get) and the rate limiter's 4 increments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
