"""The embedded default cache: one diskcache store per directory and process, shared by its threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from django.core.cache import caches

from convergence.cache import SharedDiskCache, embedded_cache


def in_threads(count: int, work: Any) -> list[Any]:
    """`work()` in `count` new threads started together; what each returned."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        results[index] = work()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_it_gives_every_threads_cache_the_same_store() -> None:
    # Django builds a cache object per thread; the store behind it (and its setup) is the process's.
    objects = in_threads(8, lambda: caches["default"])

    assert len({id(cache) for cache in objects}) == 8
    assert len({id(cache._cache) for cache in objects}) == 1
    assert objects[0]._cache is caches["default"]._cache


def test_it_shares_values_between_threads_through_the_one_store() -> None:
    caches["default"].set("cvg:test:shared", "from the main thread", timeout=60)

    assert in_threads(4, lambda: caches["default"].get("cvg:test:shared")) == ["from the main thread"] * 4


def test_it_keeps_a_store_per_directory(tmp_path: Path) -> None:
    def backend(name: str) -> SharedDiskCache:
        config = embedded_cache(tmp_path / name)
        return SharedDiskCache(
            config["LOCATION"], {key: value for key, value in config.items() if key != "LOCATION"}
        )

    first, again, other = backend("one"), backend("one"), backend("two")
    first.set("key", "one's")

    assert again._cache is first._cache
    assert again.get("key") == "one's"
    assert other._cache is not first._cache
    assert other.get("key") is None
