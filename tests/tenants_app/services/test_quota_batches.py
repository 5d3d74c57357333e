"""Batched quota release against the emulator: the leaked-slot guard for several tenants at once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tenants_app.models import RunState
from tenants_app.services.quota_batches import Release, quota_release_many
from tests.tenants_app.services.quota_factories import (
    DAY,
    put_usage,
    queue_entries,
    tenant_with_subscription,
    usage,
)

pytestmark = pytest.mark.usefixtures("central")


def test_it_releases_only_the_leaked_slots_of_several_tenants_in_one_statement() -> None:
    # `leaked` counts a slot no queue entry holds (a first report failed after moving its run);
    # `busy` counts one held by a RUNNING entry, which a repeated report must not take from it.
    leaked = tenant_with_subscription(concurrent_limit=5)
    busy = tenant_with_subscription(concurrent_limit=5)
    for tenant_id in (leaked, busy):
        put_usage(
            tenant_id, DAY, pipelines_run_today=1, pipelines_run_month=1, concurrent_pipelines_running=1
        )
    queue_entries(busy, (RunState.RUNNING, DAY))

    changed = quota_release_many(
        releases=[Release(leaked, DAY, True), Release(busy, DAY, True)], only_if_leaked=True
    )

    leaked_row, busy_row = usage(leaked, DAY), usage(busy, DAY)
    assert leaked_row is not None
    assert busy_row is not None
    assert changed == 1
    assert (leaked_row.concurrent_pipelines_running, leaked_row.pipelines_succeeded_today) == (0, 1)
    assert (busy_row.concurrent_pipelines_running, busy_row.pipelines_succeeded_today) == (1, 0)


def test_it_changes_only_the_rows_it_frees_a_slot_on_when_tenants_release_on_different_days() -> None:
    # `late` released on DAY, `early` on the day before: `late`'s row of the day before frees nothing.
    early, late = tenant_with_subscription(concurrent_limit=5), tenant_with_subscription(concurrent_limit=5)
    before = DAY - timedelta(days=1)
    for tenant_id, day in ((early, before), (late, before), (late, DAY)):
        put_usage(
            tenant_id, day, pipelines_run_today=1, pipelines_run_month=1, concurrent_pipelines_running=1
        )

    changed = quota_release_many(releases=[Release(early, before, True), Release(late, DAY, True)])

    untouched = usage(late, before)
    assert untouched is not None
    assert changed == 2
    assert (untouched.concurrent_pipelines_running, untouched.last_pipeline_completed_at) == (1, None)
