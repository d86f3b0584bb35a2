"""Schedules as a table of cases (no sleeping)."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta

import pytest

import sluice.schedule
from sluice.schedule import CronSchedule, catch_up, parse_interval

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_doctest():
    assert doctest.testmod(sluice.schedule).failed == 0


@pytest.mark.parametrize(("text", "seconds"), [
    ("@every 30s", 30.0), ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0),
    ("@every 1d", 86400.0),
])
def test_intervals(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize(("text", "message"), [
    ("soon", "is not valid; examples: '@every 30s'"), ("10ms", "shorter than the 100 ms"),
    ("@every", "is not valid"),
])
def test_bad_intervals(text, message):
    with pytest.raises(ValueError, match=message):
        parse_interval(text)


@pytest.mark.parametrize(("kwargs", "after", "expected"), [
    ({"interval": "@every 1s"}, T0 + timedelta(milliseconds=300), T0 + timedelta(seconds=1)),
    ({"interval": "10s"}, T0, T0 + timedelta(seconds=10)),  # strictly after
    ({"schedule": "*/15 * * * *"}, T0 + timedelta(minutes=1), T0 + timedelta(minutes=15)),
    ({"schedule": "@hourly"}, T0, T0 + timedelta(hours=1)),
    ({"schedule": "@every 5m"}, T0, T0 + timedelta(minutes=5)),
    # 09:00 in New York is 14:00 UTC in March before the DST switch (UTC-5)
    ({"schedule": "0 9 * * *", "timezone": "America/New_York"}, T0,
     datetime(2026, 3, 1, 14, 0, tzinfo=UTC)),
    # ... and 13:00 UTC after it (8 March 2026, UTC-4)
    ({"schedule": "0 9 * * *", "timezone": "America/New_York"},
     datetime(2026, 3, 9, 0, 0, tzinfo=UTC), datetime(2026, 3, 9, 13, 0, tzinfo=UTC)),
])
def test_next_fire(kwargs, after, expected):
    assert CronSchedule.parse(**kwargs).next_fire(after) == expected


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"schedule": "61 * * * *"}, "cron schedule '61 \\* \\* \\* \\*' is not valid; it takes 5"),
    ({"schedule": "* * * *"}, "it takes 5 fields"),
    ({"schedule": "* * * * *", "timezone": "Mars/Olympus"}, "time zone 'Mars/Olympus' is not"),
    ({}, "give either a cron schedule"),
    ({"schedule": "* * * * *", "interval": "1s"}, "not both or neither"),
])
def test_invalid_schedules_say_what_is_valid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CronSchedule.parse(**kwargs)


def test_missed_fires_between_stop_and_start():
    every = CronSchedule.parse(interval="10s")
    missed = every.missed(T0, T0 + timedelta(seconds=35))
    assert missed == [T0 + timedelta(seconds=s) for s in (10, 20, 30)]


@pytest.mark.parametrize(("policy", "deadline", "down_for", "expected_offset"), [
    ("skip", None, 35, None),
    ("once", None, 35, 30),          # the latest missed fire, once
    ("once", 10, 35, 30),            # 5 s late: within the deadline
    ("once", 3, 35, None),           # too late for the deadline
    ("once", None, 5, None),         # nothing was missed
])
def test_catch_up_policy(policy, deadline, down_for, expected_offset):
    every = CronSchedule.parse(interval="10s")
    got = catch_up(every, T0, T0 + timedelta(seconds=down_for), policy, deadline)
    assert got == (None if expected_offset is None else T0 + timedelta(seconds=expected_offset))
