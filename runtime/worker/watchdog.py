"""Recycles a worker whose sync handler overran its timeout.

A sync handler runs on the event loop's thread, so nothing on that thread can interrupt it. This
thread can: it answers the stuck request with a 504 by writing straight to its socket (the loop
thread is blocked inside the handler, so nothing else writes there) and exits the process with
``EXIT_RECYCLED``; the supervisor starts a fresh worker at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Protocol

from sluice.outputs import dumps, error_reply

from .config import EXIT_RECYCLED


class Watched(Protocol):
    """Something whose current piece of work may be stuck: when it started (0: idle) and the
    socket to answer on (-1: none)."""

    @property
    def busy_since(self) -> float: ...

    @property
    def busy_fd(self) -> int: ...


class LoopHeartbeat:
    """For async handlers: the loop marks itself alive; a handler that blocks the loop (sync
    work inside ``async def``) stops the beat, and the watchdog sees it as busy."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float) -> None:
        self.loop = loop
        self.period = period
        self.last = time.monotonic()
        self.busy_fd = -1
        loop.call_soon(self._beat)

    def _beat(self) -> None:
        self.last = time.monotonic()
        self.loop.call_later(self.period, self._beat)

    @property
    def busy_since(self) -> float:
        # the beat is late by more than a period: the loop has been stuck since the last one
        last = self.last
        return last if time.monotonic() - last > 2 * self.period else 0.0


def _response_bytes(timeout: float) -> bytes:
    from sluice.triggers.http import wire

    reply = error_reply(504, f"handler did not finish within {timeout:g}s; worker recycled")
    return wire.encode(reply, keep_alive=False)


def start_watchdog(target: Watched, timeout: float, function: str, worker: int) -> None:
    period = max(0.01, min(0.25, timeout / 20))
    response = _response_bytes(timeout)

    def watch() -> None:
        while True:
            time.sleep(period)
            started = target.busy_since
            if started and time.monotonic() - started > timeout:
                fd = target.busy_fd
                if target.busy_since != started:  # it finished just now: not stuck after all
                    continue
                line = dumps({"level": "error", "function": function, "worker": worker,
                              "message": f"handler did not finish within {timeout:g}s; "
                                         "answered 504 and recycling the worker"})
                try:
                    if fd >= 0:
                        os.write(fd, response)
                    os.write(1, line + b"\n")
                finally:
                    os._exit(EXIT_RECYCLED)

    threading.Thread(target=watch, name="sluice-watchdog", daemon=True).start()
