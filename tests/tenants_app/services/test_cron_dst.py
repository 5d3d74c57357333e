"""Cron schedules across daylight-saving changes, and cron/time-zone validation (no BigQuery needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from tenants_app.services.cron import cron_iter, cron_next, cron_prev, cron_validate, timezone_validate
from tenants_app.services.errors import ValidationFailed

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def slots(expression: str, zone: str, after: datetime, n: int) -> list[datetime]:
    return list(islice(cron_iter(expression=expression, timezone=zone, after=after), n))


def local(instant: datetime, zone: str) -> str:
    return instant.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M%z")


# --- daily 02:30 ---------------------------------------------------------------------------------------
def test_it_runs_a_daily_0230_once_at_the_end_of_the_gap_when_berlin_springs_forward() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that night.
    got = slots("30 2 * * *", BERLIN, utc(2026, 3, 27, 12), 3)
    assert got == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    assert [local(slot, BERLIN) for slot in got] == [
        "03-28 02:30+0100",
        "03-29 03:00+0200",
        "03-30 02:30+0200",
    ]


def test_it_runs_a_daily_0230_once_at_the_first_occurrence_when_berlin_falls_back() -> None:
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice that night.
    got = slots("30 2 * * *", BERLIN, utc(2026, 10, 23, 12), 3)
    assert got == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert [local(slot, BERLIN) for slot in got] == [
        "10-24 02:30+0200",
        "10-25 02:30+0200",
        "10-26 02:30+0100",
    ]


def test_it_runs_a_daily_0230_at_0300_when_new_york_springs_forward() -> None:
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    got = slots("30 2 * * *", NEW_YORK, utc(2026, 3, 6, 12), 3)
    assert got == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]


def test_it_runs_a_daily_0130_once_when_new_york_falls_back() -> None:
    # 2026-11-01: 02:00 EDT goes back to 01:00 EST, so 01:30 happens twice.
    got = slots("30 1 * * *", NEW_YORK, utc(2026, 10, 30, 12), 3)
    assert got == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_it_does_not_repeat_a_slot_when_asked_from_inside_the_repeated_hour() -> None:
    # 02:10 CET on 2026-10-25 is in the second pass of the repeated hour: 02:30 has already run.
    assert cron_next(expression="30 2 * * *", timezone=BERLIN, after=utc(2026, 10, 25, 1, 10)) == utc(
        2026, 10, 26, 1, 30
    )


# --- hourly ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("zone", "day_start", "day_end", "runs"),
    [
        (BERLIN, utc(2026, 3, 28, 23), utc(2026, 3, 29, 22), 23),  # a 23-hour day: 02:00 does not exist
        (BERLIN, utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), 24),  # a 25-hour day: 02:00 runs once
        (NEW_YORK, utc(2026, 3, 8, 5), utc(2026, 3, 9, 4), 23),
        (NEW_YORK, utc(2026, 11, 1, 4), utc(2026, 11, 2, 5), 24),
    ],
)
def test_it_runs_an_hourly_schedule_once_per_wall_clock_hour_on_dst_days(
    zone: str, day_start: datetime, day_end: datetime, runs: int
) -> None:
    got = [slot for slot in slots("0 * * * *", zone, day_start - timedelta(seconds=1), 30) if slot < day_end]
    wall_hours = [slot.astimezone(ZoneInfo(zone)).strftime("%H") for slot in got]
    assert len(got) == runs
    assert got == sorted(set(got))
    assert len(wall_hours) == len(set(wall_hours))  # never twice at one wall-clock hour


def test_it_runs_hourly_across_berlins_spring_gap_without_a_duplicate() -> None:
    got = slots("0 * * * *", BERLIN, utc(2026, 3, 28, 23, 30), 4)
    # 01:00 CET, then 02:00 (skipped) and 03:00 CEST are the same instant: one run.
    assert got == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2), utc(2026, 3, 29, 3)]


def test_it_runs_hourly_across_berlins_autumn_overlap_once_per_wall_hour() -> None:
    got = slots("0 * * * *", BERLIN, utc(2026, 10, 24, 23, 30), 3)
    # 02:00 CEST (00:00 UTC) runs; the repeated 02:00 CET (01:00 UTC) does not; then 03:00 CET.
    assert got == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]


def test_it_gives_the_latest_slots_before_an_instant_with_the_same_rules() -> None:
    got = cron_prev(expression="0 * * * *", timezone=BERLIN, before=utc(2026, 10, 25, 2), count=3)
    assert got == [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)]


def test_it_collapses_several_matches_in_a_gap_into_one_run() -> None:
    got = slots("*/15 2 * * *", BERLIN, utc(2026, 3, 28, 12), 2)
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0)]


def test_it_runs_in_utc_without_any_shift() -> None:
    assert slots("0 0 * * *", "UTC", utc(2026, 3, 28, 12), 2) == [utc(2026, 3, 29), utc(2026, 3, 30)]


# --- validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "Enter a cron"),
        ("* * * *", "exactly 5 fields"),
        ("0 0 * * * *", "exactly 5 fields"),
        ("@daily", "not a macro"),
        ("@reboot", "not a macro"),
        ("61 * * * *", "not a valid cron"),
        ("0 25 * * *", "not a valid cron"),
        ("0 0 30 2 *", "never fires"),
        ("R 1 * * *", "Random (R) and hashed (H)"),
        ("H * * * *", "Random (R) and hashed (H)"),
        ("x" * 201, "at most 200"),
    ],
)
def test_it_refuses_bad_cron_expressions_with_a_reason(expression: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        cron_validate(expression)
    assert list(raised.value.errors) == ["schedule_cron"]
    assert reason in raised.value.errors["schedule_cron"][0]


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("30 2 * * *", "30 2 * * *"),
        ("  */15   9-17 * *  MON-FRI ", "*/15 9-17 * * MON-FRI"),
        ("0 9 1 MAR THU", "0 9 1 MAR THU"),
        ("0 0 L * *", "0 0 L * *"),
    ],
)
def test_it_accepts_and_normalizes_five_field_expressions(expression: str, normalized: str) -> None:
    assert cron_validate(expression) == normalized


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata"])
def test_it_accepts_iana_time_zones(name: str) -> None:
    assert timezone_validate(name) == name


@pytest.mark.parametrize("name", ["", "CEST", "Europe/Atlantis", "../../etc/passwd", "utc ", 5])
def test_it_refuses_unknown_time_zones(name: object) -> None:
    with pytest.raises(ValidationFailed) as raised:
        timezone_validate(name)
    assert list(raised.value.errors) == ["timezone"]


@pytest.mark.parametrize(
    "name",
    [
        "localtime",  # the host's own system zone: each scheduler host would read the cron differently
        "Factory",  # tzdata's "zone unknown" placeholder
        "posixrules",
        "posix/Europe/Paris",
        "right/UTC",
        "/usr/share/zoneinfo/Europe/Paris",
        "Europe/../Europe/Paris",
        "zone.tab",
    ],
)
def test_it_refuses_names_that_are_host_files_or_no_place(name: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        timezone_validate(name)
    with pytest.raises(ValidationFailed) as when_scheduling:
        cron_next(expression="0 3 * * *", timezone=name, after=utc(2026, 1, 1))

    assert list(raised.value.errors) == ["timezone"]
    assert "localtime" in raised.value.errors["timezone"][0]
    assert list(when_scheduling.value.errors) == ["timezone"]
