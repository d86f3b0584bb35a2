"""The dispatch contract every trigger uses: hand events to a runner, get replies back.

A trigger turns outside stimuli (an HTTP request, a Kafka record, a cron fire) into
``nuclio_sdk.Event`` objects and gives them to the worker's :class:`EventRunner`. The runner never
raises: a handler's exception, timeout or bad output comes back as an error :class:`Reply`, so a
trigger only has to turn replies into responses, acks or commits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from nuclio_sdk import Event

from sluice.outputs import Reply


class EventRunner(Protocol):
    """Calls the user's handler; sync handlers run inline, async ones on the loop."""

    is_async: bool
    busy_fd: int  # the socket a sync call answers on, for the watchdog's 504 (-1: none)

    def run(self, event: Event) -> Reply: ...

    async def run_async(self, event: Event) -> Reply: ...

    def run_batch(self, events: Sequence[Event]) -> list[Reply]: ...

    async def run_batch_async(self, events: Sequence[Event]) -> list[Reply]: ...


class AnswersHttp(Protocol):
    """A runner that answers HTTP requests itself, with no Event and no task per request (a
    model server: its batcher calls back when a batch is done). ``respond`` must be called
    exactly once, now or later, whatever happens; ``answer_http`` never raises."""

    def answer_http(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
                    respond: Callable[[Reply], None]) -> None: ...
