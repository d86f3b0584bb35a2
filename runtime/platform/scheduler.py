"""The platform's cron scheduler: each schedule fires once, however many workers a function has
(Nuclio fires in every replica). Fires go to one worker over the function's HTTP port with
``X-Sluice-Trigger: cron/<name>``, so the handler sees ``event.trigger.kind == "cron"``.

The last fire of every trigger is kept in the platform's state, so after downtime the catch-up
policy decides whether a missed fire runs once or is skipped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from prometheus_client import Counter

from sluice.schedule import CronSchedule, catch_up
from sluice.spec import CronTrigger

from .logs import FunctionLog
from .metrics import REGISTRY
from .store import Store

FIRES = Counter("sluice_cron_fires", "Cron fires by outcome (fired, skipped, failed).",
                ["function", "trigger", "outcome"], registry=REGISTRY)
MISSED = Counter("sluice_cron_missed_fires", "Fires missed while the platform was down.",
                 ["function", "trigger"], registry=REGISTRY)

# (method, path, headers, body, timeout) -> HTTP status; raises on transport errors
Deliver = Callable[[str, str, dict[str, str], bytes, float], Awaitable[int]]


class Scheduler:
    """One asyncio task per cron trigger; waits on timers, never polls."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    def set(self, function: str, triggers: dict[str, CronTrigger], deliver: Deliver,
            log: FunctionLog, timeout: float) -> None:
        """(Re)start the schedules of a function, e.g. after a deploy."""
        self.remove(function)
        self._tasks[function] = [
            asyncio.create_task(self._run(function, name, trigger, deliver, log, timeout))
            for name, trigger in triggers.items()
        ]

    def remove(self, function: str) -> None:
        for task in self._tasks.pop(function, []):
            task.cancel()

    def stop(self) -> None:
        for function in list(self._tasks):
            self.remove(function)

    async def _run(self, function: str, name: str, trigger: CronTrigger, deliver: Deliver,
                   log: FunctionLog, timeout: float) -> None:
        schedule = CronSchedule.parse(trigger.schedule, trigger.interval, trigger.timezone)
        request = _request(name, trigger)
        running: asyncio.Task[None] | None = None
        now = datetime.now(UTC)
        last_ts = self.store.last_fire(function, name)
        last = datetime.fromtimestamp(last_ts, UTC) if last_ts is not None else None
        if last is not None:
            missed = len(schedule.missed(last, now))
            if missed:
                MISSED.labels(function, name).inc(missed)
            due = catch_up(schedule, last, now, trigger.catch_up, trigger.starting_deadline)
            if due is not None:
                log.event("info", f"cron {name}: catching up the fire of {due.isoformat()} "
                          f"({missed} missed while the platform was down)", trigger=name)
                running = self._start(function, name, deliver, request, log, timeout, due)
            elif missed:
                log.event("info", f"cron {name}: skipped {missed} fire(s) missed while the "
                          f"platform was down (catch_up={trigger.catch_up})", trigger=name)
        self.store.set_last_fire(function, name, now.timestamp())
        fire = schedule.next_fire(now)
        while True:
            await asyncio.sleep(max(0.0, fire.timestamp() - time.time()))
            if running is not None and not running.done() and \
                    trigger.concurrency_policy == "forbid":
                FIRES.labels(function, name, "skipped").inc()
                log.event("warn", f"cron {name}: skipped the fire of {fire.isoformat()}: the "
                          "previous one is still running (concurrency_policy=forbid)",
                          trigger=name)
            else:
                running = self._start(function, name, deliver, request, log, timeout, fire)
            self.store.set_last_fire(function, name, fire.timestamp())
            fire = schedule.next_fire(fire)
            now = datetime.now(UTC)
            if fire < now:  # the machine slept or the clock jumped: no burst of stale fires
                skipped = len(schedule.missed(fire, now)) + 1
                MISSED.labels(function, name).inc(skipped)
                log.event("warn", f"cron {name}: skipped {skipped} fire(s) the scheduler could "
                          "not make in time (suspended, or the clock moved)", trigger=name)
                fire = schedule.next_fire(now)

    def _start(self, function: str, name: str, deliver: Deliver,
               request: tuple[str, str, dict[str, str], bytes], log: FunctionLog,
               timeout: float, scheduled: datetime) -> asyncio.Task[None]:
        async def fire() -> None:
            method, path, headers, body = request
            late = time.time() - scheduled.timestamp()
            try:
                status = await deliver(method, path, {**headers, "X-Sluice-Scheduled":
                                                      scheduled.isoformat()}, body, timeout)
            except Exception as exc:
                FIRES.labels(function, name, "failed").inc()
                log.event("error", f"cron {name}: could not deliver the fire: {exc}",
                          trigger=name)
                return
            outcome = "fired" if status < 500 else "failed"
            FIRES.labels(function, name, outcome).inc()
            log.event("info" if outcome == "fired" else "error",
                      f"cron {name}: fired ({status}, {late * 1000:.0f} ms after schedule)",
                      trigger=name, status=status, lateness_ms=round(late * 1000, 1))

        return asyncio.create_task(fire())


def _request(name: str, trigger: CronTrigger) -> tuple[str, str, dict[str, str], bytes]:
    event = trigger.event
    headers = {"X-Sluice-Trigger": f"cron/{name}", **event.headers}
    body = event.body
    if body is None:
        raw = b""
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    return event.method, event.path, headers, raw
