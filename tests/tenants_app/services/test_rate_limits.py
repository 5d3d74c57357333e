"""API-call rate limits in the cache, and their batched flush to the usage rows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings

from bigquery_backend.client import BigQueryGateway
from tenants_app.services.errors import RateLimited, ServiceUnavailable
from tenants_app.services.rate_limits import (
    ApiCallRecorder,
    _pending_key,
    api_call_recorder,
    api_calls_flush,
    rate_limit_check,
)
from tenants_app.services.subscription_overrides import subscription_set_limits
from tests.tenants_app.services.quota_factories import put_usage, tenant_with_subscription, usage

pytestmark = pytest.mark.usefixtures("central")

# 2031-03-18 12:00:00 UTC, on a minute and an hour boundary.
T0 = datetime(2031, 3, 18, 12, 0, tzinfo=UTC).timestamp()
DAY = datetime(2031, 3, 18, tzinfo=UTC).date()


@pytest.fixture(autouse=True)
def _fresh_recorder() -> Iterator[None]:
    api_call_recorder.reset()
    yield
    api_call_recorder.reset()


def test_it_admits_calls_up_to_the_minute_limit_and_says_when_the_window_reopens() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=3)
    for offset in range(3):
        decision = rate_limit_check(tenant_id=tenant_id, now=T0 + offset)
    assert (decision.minute_count, decision.hour_count) == (3, 3)

    with pytest.raises(RateLimited) as caught:
        rate_limit_check(tenant_id=tenant_id, now=T0 + 20.5)

    error = caught.value
    assert (error.status, error.code, error.window, error.limit) == (429, "rate_limited", "minute", 3)
    assert error.retry_after == 40  # 39.5 s to the next minute, rounded up
    # The next minute has room again, and the hour counted only admitted calls.
    assert rate_limit_check(tenant_id=tenant_id, now=T0 + 60).hour_count == 4


def test_it_applies_the_hourly_limit_across_minutes() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=5, api_calls_per_hour=6)
    for offset in (0, 1, 2, 61, 62, 63):
        rate_limit_check(tenant_id=tenant_id, now=T0 + offset)

    with pytest.raises(RateLimited) as caught:
        rate_limit_check(tenant_id=tenant_id, now=T0 + 600)

    assert (caught.value.window, caught.value.limit) == ("hour", 6)
    assert caught.value.retry_after == 3000


def test_it_does_not_count_refused_calls() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=1)
    rate_limit_check(tenant_id=tenant_id, now=T0)
    for _ in range(5):
        with pytest.raises(RateLimited):
            rate_limit_check(tenant_id=tenant_id, now=T0 + 1)

    assert rate_limit_check(tenant_id=tenant_id, now=T0 + 60).hour_count == 2


def test_it_keeps_tenants_apart() -> None:
    busy = tenant_with_subscription(api_calls_per_minute=1)
    quiet = tenant_with_subscription(api_calls_per_minute=1)
    rate_limit_check(tenant_id=busy, now=T0)

    with pytest.raises(RateLimited):
        rate_limit_check(tenant_id=busy, now=T0)
    assert rate_limit_check(tenant_id=quiet, now=T0).minute_count == 1


def test_it_admits_exactly_the_limit_when_threads_race() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=10)
    rate_limit_check(tenant_id=tenant_id, now=T0)  # limits cached before the race
    barrier = threading.Barrier(25)
    outcomes: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        try:
            rate_limit_check(tenant_id=tenant_id, now=T0 + 1)
            outcome = "ok"
        except RateLimited:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=call) for _ in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("ok") == 9
    assert outcomes.count("refused") == 16


def test_it_reads_the_limits_from_bigquery_once_then_from_the_cache(gateway: BigQueryGateway) -> None:
    tenant_id = tenant_with_subscription()

    with gateway.count_jobs() as first:
        rate_limit_check(tenant_id=tenant_id, now=T0)
    with gateway.count_jobs() as later:
        for offset in range(1, 10):
            rate_limit_check(tenant_id=tenant_id, now=T0 + offset)

    assert first.jobs == 1
    assert later.jobs == 0


def test_it_applies_a_limit_change_at_once_in_this_process() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=1)
    rate_limit_check(tenant_id=tenant_id, now=T0)
    with pytest.raises(RateLimited):
        rate_limit_check(tenant_id=tenant_id, now=T0 + 1)

    subscription_set_limits(tenant_id=tenant_id, actor="user:alice", api_calls_per_minute=5)

    assert rate_limit_check(tenant_id=tenant_id, now=T0 + 2).minute_count == 2


def test_it_flushes_counts_of_many_tenants_in_one_update(gateway: BigQueryGateway) -> None:
    with_row = tenant_with_subscription()
    put_usage(with_row, DAY, total_api_calls_today=10)
    without_row = tenant_with_subscription(status="SUSPENDED")  # read-only: its calls count too
    for offset in range(3):
        rate_limit_check(tenant_id=with_row, now=T0 + offset)
    rate_limit_check(tenant_id=without_row, now=T0)

    with gateway.count_jobs() as first:
        assert api_calls_flush() == 4
    rate_limit_check(tenant_id=with_row, now=T0 + 5)
    rate_limit_check(tenant_id=without_row, now=T0 + 5)
    with gateway.count_jobs() as second:
        assert api_calls_flush() == 2

    first_row, second_row = usage(with_row, DAY), usage(without_row, DAY)
    assert first_row is not None
    assert second_row is not None
    assert (first_row.total_api_calls_today, second_row.total_api_calls_today) == (14, 2)
    # First flush: one MERGE making the missing row, one UPDATE; then the rows are known: one UPDATE.
    assert first.jobs == 2
    assert second.jobs == 1
    assert api_calls_flush() == 0


def test_it_flushes_by_itself_once_the_interval_has_passed() -> None:
    tenant_id = tenant_with_subscription()
    put_usage(tenant_id, DAY)

    with override_settings(API_CALLS_FLUSH_SECONDS=30):
        rate_limit_check(tenant_id=tenant_id, now=T0)
        rate_limit_check(tenant_id=tenant_id, now=T0 + 10)
        row = usage(tenant_id, DAY)
        assert row is not None
        assert not row.total_api_calls_today
        rate_limit_check(tenant_id=tenant_id, now=T0 + 31)

    row = usage(tenant_id, DAY)
    assert row is not None
    assert row.total_api_calls_today == 3


def test_it_keeps_the_counts_when_a_flush_fails() -> None:
    tenant_id = tenant_with_subscription()
    put_usage(tenant_id, DAY)
    rate_limit_check(tenant_id=tenant_id, now=T0)

    with override_settings(TENANTS_DATASET="no_such_dataset"), pytest.raises(ServiceUnavailable):
        api_calls_flush()

    assert api_calls_flush() == 1
    row = usage(tenant_id, DAY)
    assert row is not None
    assert row.total_api_calls_today == 1


def test_it_lets_calls_through_while_the_limits_cannot_be_read() -> None:
    tenant_id = tenant_with_subscription(api_calls_per_minute=1)

    with override_settings(TENANTS_DATASET="no_such_dataset"):
        decisions = [rate_limit_check(tenant_id=tenant_id, now=T0 + offset) for offset in range(3)]

    assert all(decision.limits is None for decision in decisions)


class ReadTogetherCache(LocMemCache):
    """A local-memory cache whose reads of pending counts wait for each other while armed.

    Two flushes (as in two processes sharing Redis) then both read a count before either takes it:
    the interleaving that wrote calls twice when a flush read a count and then decremented by it.
    """

    barrier: threading.Barrier | None = None

    def get(self, key, default=None, version=None):  # type: ignore[no-untyped-def]
        value = super().get(key, default, version)
        if self.barrier is not None and ":pending:" in key:
            self.barrier.wait(timeout=30)
        return value


def test_it_writes_each_call_once_when_two_processes_flush_the_same_count() -> None:
    tenant_id = tenant_with_subscription()
    put_usage(tenant_id, DAY, total_api_calls_today=10)
    first, second = ApiCallRecorder(), ApiCallRecorder()  # one per process, one shared cache
    backend = f"{__name__}.ReadTogetherCache"
    written: list[int] = []
    lock = threading.Lock()

    def flush(recorder: ApiCallRecorder) -> None:
        count = recorder.flush()
        with lock:
            written.append(count)

    with override_settings(CACHES={"default": {"BACKEND": backend, "LOCATION": "read-together"}}):
        for _ in range(3):
            first.record(tenant_id, T0)
        for _ in range(2):
            second.record(tenant_id, T0)
        ReadTogetherCache.barrier = threading.Barrier(2)
        try:
            threads = [threading.Thread(target=flush, args=(recorder,)) for recorder in (first, second)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            ReadTogetherCache.barrier = None
        left = caches["default"].get(_pending_key(tenant_id, DAY))

    assert sorted(written) == [0, 5]
    assert left == 0  # nothing left pending, nothing owed
    row = usage(tenant_id, DAY)
    assert row is not None
    assert row.total_api_calls_today == 15
