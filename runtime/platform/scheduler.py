"""The platform's cron scheduler: each schedule fires once, however many workers a function has
(Nuclio fires in every replica), and whatever the function is: an http function gets the fire
over its port (:class:`~sluice.platform.cron_targets.HttpCronTarget`), a job function gets a
run (:class:`~sluice.platform.cron_targets.JobCronTarget`).

The last fire of every trigger is kept in the platform's state, so after downtime the catch-up
policy decides whether a missed fire runs once or is skipped. A paused trigger has no task; on
resume it starts afresh (fires missed while paused are not caught up, as a resumed CronJob).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Counter

from sluice.errors import NotFoundError
from sluice.schedule import CronSchedule, catch_up, cron_action
from sluice.spec import CronTrigger

from .logs import FunctionLog
from .metrics import REGISTRY
from .store import Store

FIRES = Counter("sluice_cron_fires", "Cron fires by outcome (fired, skipped, failed).",
                ["function", "trigger", "outcome"], registry=REGISTRY)
MISSED = Counter("sluice_cron_missed_fires", "Fires missed while the platform was down.",
                 ["function", "trigger"], registry=REGISTRY)


class Firing(Protocol):
    """A fire in progress: an HTTP delivery or a job run."""

    def done(self) -> bool: ...

    async def stop(self, reason: str) -> None: ...


class CronTarget(Protocol):
    """Where a function's fires go."""

    def fire(self, trigger: str, cron: CronTrigger, scheduled: datetime) -> Firing | None: ...

    def skip(self, trigger: str, cron: CronTrigger, scheduled: datetime, reason: str) -> None: ...


@dataclass(frozen=True)
class ScheduleInfo:
    """One cron trigger as ``sluice schedule list`` shows it."""

    function: str
    trigger: str
    schedule: str
    timezone: str
    concurrency_policy: str
    paused: bool
    last_fire: float | None  # the last fire that ran (skipped ones do not count)
    next_fire: float | None


@dataclass
class _Entry:
    triggers: dict[str, CronTrigger]
    target: CronTarget
    log: FunctionLog


class Scheduler:
    """One asyncio task per cron trigger; waits on timers, never polls."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._entries: dict[str, _Entry] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._next: dict[tuple[str, str], datetime] = {}
        # the latest fire of each trigger; kept across a redeploy, so that forbid and replace
        # still see a run that an earlier version of the function started
        self._running: dict[tuple[str, str], Firing] = {}

    def set(self, function: str, triggers: dict[str, CronTrigger], target: CronTarget,
            log: FunctionLog) -> None:
        """(Re)start the schedules of a function, e.g. after a deploy; paused ones stay so."""
        self.remove(function, keep_running=True)
        if not triggers:
            return
        self._entries[function] = _Entry(dict(triggers), target, log)
        paused = self.store.paused(function)
        for name in triggers:
            if name not in paused:
                self._start(function, name, catch_up_missed=True)

    def _start(self, function: str, name: str, catch_up_missed: bool) -> None:
        entry = self._entries[function]
        self._tasks[(function, name)] = asyncio.create_task(
            self._run(function, name, entry.triggers[name], entry.target, entry.log,
                      catch_up_missed))

    def remove(self, function: str, keep_running: bool = False) -> None:
        self._entries.pop(function, None)
        for key in [k for k in self._tasks if k[0] == function]:
            self._tasks.pop(key).cancel()
            self._next.pop(key, None)
        if not keep_running:
            for key in [k for k in self._running if k[0] == function]:
                del self._running[key]

    def stop(self) -> None:
        for function in list(self._entries):
            self.remove(function)

    # -- pause and resume ----------------------------------------------------------------------
    def _names(self, function: str, trigger: str | None) -> list[str]:
        entry = self._entries.get(function)
        if entry is None:
            raise NotFoundError(f"function {function!r} has no cron trigger")
        if trigger is None:
            return list(entry.triggers)
        if trigger not in entry.triggers:
            raise NotFoundError(f"function {function!r} has no cron trigger {trigger!r} (its "
                                f"cron triggers: {', '.join(entry.triggers)})")
        return [trigger]

    def pause(self, function: str, trigger: str | None = None) -> list[str]:
        names = self._names(function, trigger)
        for name in names:
            self.store.set_paused(function, name, True)
            task = self._tasks.pop((function, name), None)
            if task is not None:
                task.cancel()
                self._next.pop((function, name), None)
                self._entries[function].log.event("info", f"cron {name}: paused", trigger=name)
        return names

    def resume(self, function: str, trigger: str | None = None) -> list[str]:
        names = self._names(function, trigger)
        for name in names:
            self.store.set_paused(function, name, False)
            if (function, name) not in self._tasks:
                self.store.set_last_fire(function, name, time.time())  # no catch-up of a pause
                self._start(function, name, catch_up_missed=False)
                self._entries[function].log.event("info", f"cron {name}: resumed", trigger=name)
        return names

    def list(self) -> list[ScheduleInfo]:
        out = []
        for function, entry in sorted(self._entries.items()):
            for name, trigger in entry.triggers.items():
                key = (function, name)
                upcoming = self._next.get(key)
                out.append(ScheduleInfo(
                    function, name, trigger.schedule or f"@every {trigger.interval}",
                    trigger.timezone, trigger.concurrency_policy, key not in self._tasks,
                    self.store.last_fired(function, name),
                    upcoming.timestamp() if upcoming is not None else None))
        return out

    # -- the loop ------------------------------------------------------------------------------
    def _fired(self, key: tuple[str, str], firing: Firing | None) -> None:
        if firing is None:
            self._running.pop(key, None)
        else:
            self._running[key] = firing

    async def _run(self, function: str, name: str, trigger: CronTrigger, target: CronTarget,
                   log: FunctionLog, catch_up_missed: bool) -> None:
        schedule = CronSchedule.parse(trigger.schedule, trigger.interval, trigger.timezone)
        key = (function, name)
        now = datetime.now(UTC)
        last_ts = self.store.last_fire(function, name)
        last = datetime.fromtimestamp(last_ts, UTC) if last_ts is not None else None
        if last is not None and catch_up_missed:
            missed = len(schedule.missed(last, now))
            if missed:
                MISSED.labels(function, name).inc(missed)
            due = catch_up(schedule, last, now, trigger.catch_up, trigger.starting_deadline)
            if due is not None:
                log.event("info", f"cron {name}: catching up the fire of {due.isoformat()} "
                          f"({missed} missed while the platform was down)", trigger=name)
                self._fired(key, target.fire(name, trigger, due))
                self.store.set_last_fired(function, name, due.timestamp())
            elif missed:
                log.event("info", f"cron {name}: skipped {missed} fire(s) missed while the "
                          f"platform was down (catch_up={trigger.catch_up})", trigger=name)
        self.store.set_last_fire(function, name, now.timestamp())
        fire = schedule.next_fire(now)
        while True:
            self._next[(function, name)] = fire
            await asyncio.sleep(max(0.0, fire.timestamp() - time.time()))
            running = self._running.get(key)
            busy = running is not None and not running.done()
            action = cron_action(trigger.concurrency_policy, busy)
            if action == "skip":
                FIRES.labels(function, name, "skipped").inc()
                reason = (f"the previous fire was still running (concurrency_policy="
                          f"{trigger.concurrency_policy})")
                log.event("warn", f"cron {name}: skipped the fire of {fire.isoformat()}: "
                          f"{reason}", trigger=name)
                target.skip(name, trigger, fire, reason)
            else:
                if action == "replace" and running is not None:
                    log.event("info", f"cron {name}: the fire of {fire.isoformat()} replaces "
                              "the one still running (concurrency_policy=replace)", trigger=name)
                    await running.stop(f"replaced by the fire of {fire.isoformat()} "
                                       "(concurrency_policy=replace)")
                self._fired(key, target.fire(name, trigger, fire))
                self.store.set_last_fired(function, name, fire.timestamp())
            self.store.set_last_fire(function, name, fire.timestamp())
            fire = schedule.next_fire(fire)
            now = datetime.now(UTC)
            if fire < now:  # the machine slept or the clock jumped: no burst of stale fires
                skipped = len(schedule.missed(fire, now)) + 1
                MISSED.labels(function, name).inc(skipped)
                log.event("warn", f"cron {name}: skipped {skipped} fire(s) the scheduler could "
                          "not make in time (suspended, or the clock moved)", trigger=name)
                fire = schedule.next_fire(now)
