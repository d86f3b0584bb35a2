"""Where a cron fire goes: to one worker of an http function over its port, or to a new run of a
job function. Both log each fire with its lateness and count it in ``sluice_cron_fires``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sluice.errors import SluiceError
from sluice.spec import CronTrigger, cron_params

from .jobs import Jobs, JobTarget
from .logs import FunctionLog
from .scheduler import FIRES

# (method, path, headers, body, timeout) -> HTTP status; raises on transport errors
Deliver = Callable[[str, str, dict[str, str], bytes, float], Awaitable[int]]


@dataclass
class _Delivery:
    task: asyncio.Task[None]

    def done(self) -> bool:
        return self.task.done()

    async def stop(self, reason: str) -> None:  # the spec refuses 'replace' for http functions
        raise NotImplementedError("an HTTP handler call cannot be stopped midway")


class HttpCronTarget:
    """Fires become requests to the function's port with ``X-Sluice-Trigger: cron/<name>``, so
    the handler sees ``event.trigger.kind == "cron"``."""

    def __init__(self, function: str, deliver: Deliver, log: FunctionLog, timeout: float
                 ) -> None:
        self.function = function
        self.deliver = deliver
        self.log = log
        self.timeout = timeout

    def skip(self, trigger: str, cron: CronTrigger, scheduled: datetime, reason: str) -> None:
        pass  # the scheduler has logged and counted it

    def fire(self, trigger: str, cron: CronTrigger, scheduled: datetime) -> _Delivery:
        method, path, headers, body = cron_request(trigger, cron)
        headers["X-Sluice-Scheduled"] = scheduled.isoformat()

        async def deliver() -> None:
            late = time.time() - scheduled.timestamp()
            try:
                status = await self.deliver(method, path, headers, body, self.timeout)
            except Exception as exc:
                FIRES.labels(self.function, trigger, "failed").inc()
                self.log.event("error", f"cron {trigger}: could not deliver the fire: {exc}",
                               trigger=trigger)
                return
            outcome = "fired" if status < 500 else "failed"
            FIRES.labels(self.function, trigger, outcome).inc()
            self.log.event("info" if outcome == "fired" else "error",
                           f"cron {trigger}: fired ({status}, {late * 1000:.0f} ms after "
                           "schedule)", trigger=trigger, status=status,
                           lateness_ms=round(late * 1000, 1))

        return _Delivery(asyncio.create_task(deliver()))


def cron_request(name: str, trigger: CronTrigger) -> tuple[str, str, dict[str, str], bytes]:
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


@dataclass
class _RunFiring:
    jobs: Jobs
    run_id: str

    def done(self) -> bool:
        task = self.jobs.task(self.run_id)
        return task is None or task.done()

    async def stop(self, reason: str) -> None:
        if not self.done():
            try:
                await self.jobs.cancel(self.run_id, reason)
            except SluiceError:
                pass  # it finished in the meantime


class JobCronTarget:
    """Fires become runs (trigger ``cron``) with the trigger's params; skipped fires are
    recorded as runs with status ``skipped`` and the reason."""

    def __init__(self, jobs: Jobs, target: JobTarget) -> None:
        self.jobs = jobs
        self.target = target

    def skip(self, trigger: str, cron: CronTrigger, scheduled: datetime, reason: str) -> None:
        run = self.jobs.skip(self.target, trigger, f"fire of {scheduled.isoformat()} skipped: "
                             f"{reason}", scheduled.timestamp())
        self.target.log.event("warn", f"cron {trigger}: recorded run {run.id} as skipped",
                              trigger=trigger, run=run.id)

    def fire(self, trigger: str, cron: CronTrigger, scheduled: datetime) -> _RunFiring | None:
        late = time.time() - scheduled.timestamp()
        try:
            run = self.jobs.submit(self.target, cron_params(cron), "cron", trigger,
                                   scheduled.timestamp())
        except SluiceError as exc:
            FIRES.labels(self.target.spec.name, trigger, "failed").inc()
            self.target.log.event("error", f"cron {trigger}: could not start a run: {exc}",
                                  trigger=trigger)
            return None
        FIRES.labels(self.target.spec.name, trigger, "fired").inc()
        self.target.log.event("info", f"cron {trigger}: fired run {run.id} "
                              f"({late * 1000:.0f} ms after schedule)", trigger=trigger,
                              run=run.id, lateness_ms=round(late * 1000, 1))
        return _RunFiring(self.jobs, run.id)
