"""A worker's load, measured for the platform's autoscaler and reported on the control pipe.

Every ``load_every`` seconds an autoscaled function's worker writes
``{"event": "load", "busy": B, "inflight": I}``, both measured over the time since its last
report:

- ``busy`` (0..1): the share of wall time the worker's one thread was taken, the larger of the
  time inside sync handler calls (which run inline, sleeps and waits included) and the time the
  thread was on the CPU (HTTP parsing, async handlers, a model server's batches);
- ``inflight``: the mean number of HTTP requests admitted and not yet answered by async
  handlers, model servers and batches (a sync handler's one request at a time is in ``busy``).

What the platform makes of them (one number: workers' worth of work) is in
:mod:`sluice.platform.autoscale`. A report costs a few clock reads; requests pay one clock
read when they enter and leave.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Clock = Callable[[], float]


class LoadMeter:
    """Busy share and mean in-flight requests since the previous :meth:`read`.

    >>> now, busy, cpu = [0.0], [0.0], [0.0]
    >>> meter = LoadMeter(lambda: busy[0], lambda: 4.0 * now[0], lambda: now[0],
    ...                   lambda: cpu[0])
    >>> now[0], busy[0], cpu[0] = 2.0, 1.5, 0.5   # 1.5 s of 2 in a sync handler
    >>> meter.read()
    (0.75, 4.0)
    """

    def __init__(self, busy_time: Clock, inflight_time: Clock, clock: Clock = time.monotonic,
                 cpu: Clock = time.thread_time) -> None:
        self._sources = busy_time, inflight_time, clock, cpu
        self._last = self._now()

    def _now(self) -> tuple[float, float, float, float]:
        busy_time, inflight_time, clock, cpu = self._sources
        return clock(), busy_time(), inflight_time(), cpu()

    def read(self) -> tuple[float, float]:
        """(busy, inflight) since the last read (or since the meter was made)."""
        now = self._now()
        (wall0, busy0, inflight0, cpu0), self._last = self._last, now
        wall = now[0] - wall0
        if wall <= 0:
            return 0.0, 0.0
        busy = max(now[1] - busy0, now[3] - cpu0) / wall
        return round(min(1.0, max(0.0, busy)), 3), round(max(0.0, now[2] - inflight0) / wall, 3)


def report_load(every: float, meter: LoadMeter, send: Callable[[float, float], None]) -> None:
    """Send ``meter``'s reading every ``every`` seconds, on the running loop, for as long as the
    worker runs (a sync handler that holds the loop delays a report; its time is still in it)."""
    loop = asyncio.get_running_loop()

    def tick() -> None:
        busy, inflight = meter.read()
        send(busy, inflight)
        loop.call_later(every, tick)

    loop.call_later(every, tick)
