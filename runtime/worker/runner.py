"""Calls the user's handler and turns every outcome into a Reply (the worker never dies of it)."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from nuclio_sdk import Event, ExceptionWithResponse

from sluice.handler import LoadedHandler
from sluice.outputs import Reply, error_reply, exception_reply, new_error_id, to_reply

LogFn = Callable[..., None]


class Runner:
    """The worker's :class:`sluice.triggers.EventRunner`."""

    def __init__(self, loaded: LoadedHandler, context: Any, timeout: float, log: LogFn) -> None:
        self.function = loaded.function
        self.is_async = loaded.is_async
        self.context = context
        self.timeout = timeout
        self.log = log
        # read by the watchdog thread: when the running sync call started (0: idle), and the
        # socket of the request it serves (-1: none, e.g. a Kafka message)
        self.busy_since = 0.0
        self.busy_fd = -1
        self.busy_seconds = 0.0  # wall time spent in sync calls, all told (the load report)

    def run(self, event: Event) -> Reply:
        self.busy_since = started = time.monotonic()
        try:
            output = self.function(self.context, event)
        except ExceptionWithResponse as exc:
            return exception_reply(exc)
        except (Exception, SystemExit) as exc:
            return self._failed(exc, event)
        finally:
            self._idle(started)
        return self._convert(output)

    def _idle(self, started: float) -> None:
        self.busy_seconds += time.monotonic() - started
        self.busy_since = 0.0
        self.busy_fd = -1

    async def run_async(self, event: Event) -> Reply:
        try:
            output = await asyncio.wait_for(self.function(self.context, event), self.timeout)
        except ExceptionWithResponse as exc:
            return exception_reply(exc)
        except TimeoutError:
            return self._timed_out(event)
        except (Exception, SystemExit) as exc:
            return self._failed(exc, event)
        return self._convert(output)

    def run_batch(self, events: Sequence[Event]) -> list[Reply]:
        self.busy_since = started = time.monotonic()
        try:
            output = self.function(self.context, list(events))
        except ExceptionWithResponse as exc:
            return [exception_reply(exc)]
        except (Exception, SystemExit) as exc:
            return [self._failed(exc, events[0])]
        finally:
            self._idle(started)
        return self._convert_batch(output)

    async def run_batch_async(self, events: Sequence[Event]) -> list[Reply]:
        try:
            output = await asyncio.wait_for(self.function(self.context, list(events)),
                                            self.timeout)
        except ExceptionWithResponse as exc:
            return [exception_reply(exc)]
        except TimeoutError:
            return [self._timed_out(events[0])]
        except (Exception, SystemExit) as exc:
            return [self._failed(exc, events[0])]
        return self._convert_batch(output)

    # -- outcomes ------------------------------------------------------------------------------
    def _convert(self, output: Any) -> Reply:
        try:
            return to_reply(output)
        except Exception as exc:  # e.g. an object JSON cannot encode
            error_id = new_error_id()
            self.log("error", "handler returned a value that cannot be sent",
                     error_id=error_id, error=f"{type(exc).__name__}: {exc}")
            return error_reply(500, f"handler returned a value that cannot be sent: {exc}",
                               error_id)

    def _convert_batch(self, output: Any) -> list[Reply]:
        if isinstance(output, list):
            return [self._convert(item) for item in output]
        return [self._convert(output)]

    def _failed(self, exc: BaseException, event: Event) -> Reply:
        error_id = new_error_id()
        self.log(
            "error",
            f"handler raised {type(exc).__name__}: {exc}",
            error_id=error_id,
            event_id=event.id,
            traceback="".join(traceback.format_exception(exc)),
        )
        return error_reply(500, f"handler raised {type(exc).__name__}: {exc}", error_id)

    def _timed_out(self, event: Event) -> Reply:
        error_id = new_error_id()
        self.log("error", f"handler did not finish within {self.timeout:g}s",
                 error_id=error_id, event_id=event.id)
        return error_reply(504, f"handler did not finish within {self.timeout:g}s", error_id)
