"""When a schedule fires: 5-field cron expressions (croniter) or ``@every 30s`` intervals, in a
time zone. Pure: every answer is a function of the times given, so it is tested as a table.

    >>> from datetime import datetime, UTC
    >>> every = CronSchedule.parse(interval="@every 30s")
    >>> every.next_fire(datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)).isoformat()
    '2026-01-01T12:00:30+00:00'
    >>> hourly = CronSchedule.parse(schedule="0 * * * *", timezone="Europe/Paris")
    >>> hourly.next_fire(datetime(2026, 1, 1, 12, 30, tzinfo=UTC)).isoformat()
    '2026-01-01T13:00:00+00:00'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAMED = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
          "@annually": "0 0 1 1 *"}


def parse_interval(text: str) -> float:
    """``@every 1m30s``, ``30s``, ``500ms`` -> seconds (Nuclio's cron ``interval`` too)."""
    raw = text.strip()
    body = raw[len("@every"):].strip() if raw.startswith("@every") else raw
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", body)
    if not parts or "".join(n + u for n, u in parts) != body.replace(" ", ""):
        raise ValueError(f"interval {text!r} is not valid; examples: '@every 30s', '5m', '1h30m'")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 0.1:
        raise ValueError(f"interval {text!r} is shorter than the 100 ms the scheduler allows")
    return seconds


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {name!r} is not known; examples: 'UTC', 'Europe/Paris', "
                         "'America/New_York'") from None


@dataclass(frozen=True)
class CronSchedule:
    """A cron expression or a fixed interval, evaluated in ``timezone``."""

    expression: str | None
    interval: float | None
    timezone: str = "UTC"

    @classmethod
    def parse(cls, schedule: str | None = None, interval: str | None = None,
              timezone: str = "UTC") -> CronSchedule:
        """Validate; errors say what is wrong and show a valid example."""
        from croniter import croniter

        if (schedule is None) == (interval is None):
            raise ValueError("give either a cron schedule (e.g. '*/5 * * * *') or an interval "
                             "(e.g. '@every 30s'), not both or neither")
        parse_timezone(timezone)
        if interval is not None:
            return cls(None, parse_interval(interval), timezone)
        assert schedule is not None
        text = schedule.strip()
        if text.startswith("@every"):
            return cls(None, parse_interval(text), timezone)
        expression = _NAMED.get(text, text)
        if len(expression.split()) != 5 or not croniter.is_valid(expression):
            raise ValueError(f"cron schedule {schedule!r} is not valid; it takes 5 fields "
                             "(minute hour day-of-month month day-of-week), e.g. '0 */6 * * *' "
                             "or '*/15 9-17 * * 1-5'")
        return cls(expression, None, timezone)

    def next_fire(self, after: datetime) -> datetime:
        """The first fire strictly after ``after`` (an aware datetime), in UTC.

        Intervals are aligned to the epoch, so every replica of a scheduler agrees on them."""
        if after.tzinfo is None:
            raise ValueError("next_fire needs an aware datetime")
        if self.interval is not None:
            epoch = after.timestamp()
            steps = int(epoch // self.interval) + 1
            return datetime.fromtimestamp(steps * self.interval, UTC)
        from croniter import croniter

        local = after.astimezone(parse_timezone(self.timezone))
        fire = croniter(self.expression, local).get_next(datetime)
        return fire.astimezone(UTC)

    def missed(self, last: datetime, now: datetime, limit: int = 1000) -> list[datetime]:
        """Fires after ``last`` up to and including ``now`` (those a stopped platform missed)."""
        out: list[datetime] = []
        fire = self.next_fire(last)
        while fire <= now and len(out) < limit:
            out.append(fire)
            fire = self.next_fire(fire)
        return out


def catch_up(schedule: CronSchedule, last: datetime | None, now: datetime, policy: str,
             starting_deadline: float | None) -> datetime | None:
    """After downtime: the one missed fire to run now, or None.

    ``policy`` "skip" runs none; "once" runs the latest missed fire, if it is not older than
    ``starting_deadline`` seconds (as a Kubernetes CronJob's startingDeadlineSeconds)."""
    if last is None or policy == "skip":
        return None
    missed = schedule.missed(last, now)
    if not missed:
        return None
    latest = missed[-1]
    if starting_deadline is not None and now - latest > timedelta(seconds=starting_deadline):
        return None
    return latest


def cron_action(policy: str, previous_running: bool) -> str:
    """What a fire does, given whether the previous fire of its trigger still runs:
    ``"fire"``, ``"skip"`` (forbid) or ``"replace"`` (stop the previous one, then fire), as a
    Kubernetes CronJob's concurrencyPolicy.

    >>> cron_action("forbid", previous_running=True), cron_action("forbid", False)
    ('skip', 'fire')
    >>> cron_action("replace", True), cron_action("allow", True)
    ('replace', 'fire')
    """
    if not previous_running or policy == "allow":
        return "fire"
    if policy == "forbid":
        return "skip"
    if policy == "replace":
        return "replace"
    raise ValueError(f"unknown concurrency_policy {policy!r} (allow, forbid or replace)")
