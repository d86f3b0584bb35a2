"""The adaptive batcher: concurrent requests merged along the batch axis, run once, split back.

A caller awaits its result (:meth:`Batcher.submit`) or is called back with it
(:meth:`Batcher.submit_nowait`, the HTTP trigger's path: no task and no future per request).
The dispatcher is a callback on the event loop, scheduled by events (an arrival, a batch done,
or the end of a wait the policy asked for) and never polling; requests that arrive within one
loop iteration are decided on together (save the first to find a CPU model idle, which runs at
once: see :class:`Batcher`). What forms a batch is decided by
:class:`~sluice.serving.policy.BatchPolicy`; the batcher only does the I/O:

    >>> import asyncio, numpy as np
    >>> async def double(inputs):
    ...     return {"y": inputs["x"] * 2}
    >>> async def main():
    ...     batcher = Batcher(double, BatchPolicy(max_batch=8))
    ...     results = await asyncio.gather(*(batcher.submit({"x": np.full((1, 2), i)})
    ...                                      for i in range(3)))
    ...     await batcher.close()
    ...     return [r["y"].tolist() for r in results]
    >>> asyncio.run(main())
    [[[0, 0]], [[2, 2]], [[4, 4]]]

Errors reach callers as results: a request that cannot meet its deadline gets
:class:`~sluice.errors.OverloadedError` at once, a malformed one
:class:`~sluice.errors.InvalidTensorError`, and a model that raises gives every caller of
that batch its exception. A caller that gives up (its awaiting task is cancelled) is dropped
before the batch it would have joined is computed.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from sluice.errors import InferenceError, InvalidTensorError, OverloadedError

from .policy import ArrivalRate, BatchPolicy, Dispatch, Reject, ServiceTimes, Wait

log = logging.getLogger("sluice.serving")

Tensors = dict[str, np.ndarray]
RunBatch = Callable[[Tensors], Awaitable[Tensors]]
# called once with a request's outputs, or with the exception that stands in for them
Answer = Callable[[Tensors | BaseException], None]


@dataclass(frozen=True)
class BatchStats:
    """One batch, for metrics: its rows, requests, compute seconds, and each request's queue
    wait in seconds."""

    rows: int
    requests: int
    compute: float
    waits: tuple[float, ...]


@dataclass(eq=False, slots=True)
class _Item:
    id: int
    inputs: Tensors
    rows: int
    deadline: float
    key: Hashable
    arrived: float
    answer: Answer = field(repr=False)
    gone: Callable[[], bool] = field(repr=False)  # true once the caller stopped waiting
    answered: bool = False

    def give(self, result: Tensors | BaseException) -> None:
        """Answer once; a failing answer callback is logged, never raised into the batch."""
        if self.answered or self.gone():
            return
        self.answered = True
        try:
            self.answer(result)
        except Exception:
            log.exception("answering a request failed")


def batch_key(inputs: Tensors) -> tuple[tuple[str, np.dtype, tuple[int, ...]], ...]:
    """Requests batch together only when every input agrees in name, dtype and the shape
    after the batch axis."""
    if len(inputs) == 1:  # the common case, without the sort
        for name, array in inputs.items():
            return ((name, array.dtype, array.shape[1:]),)
    return tuple(sorted(((name, array.dtype, tuple(array.shape[1:]))
                         for name, array in inputs.items()), key=lambda part: part[0]))


def rows_of(inputs: Tensors) -> int:
    """The batch-axis length every input shares, or InvalidTensorError naming the culprit."""
    if not inputs:
        raise InvalidTensorError("the request has no inputs")
    rows = None
    for name, array in inputs.items():
        if array.ndim == 0:
            raise InvalidTensorError(f"input {name!r} is a scalar; batched inputs need a batch "
                                     "axis first, e.g. shape [1, 64]")
        if rows is None:
            rows, first = array.shape[0], name
        elif array.shape[0] != rows:
            raise InvalidTensorError(f"input {name!r} has {array.shape[0]} rows along the "
                                     f"batch axis but {first!r} has {rows}; they must agree")
    assert rows is not None
    if rows < 1:
        raise InvalidTensorError("the request has 0 rows along the batch axis")
    return int(rows)


class Batcher:
    """Merges concurrent :meth:`submit` calls into batches for ``run``.

    ``latency``: the default latency objective in seconds (a request's deadline is its arrival
    plus this, or plus its own ``timeout``). ``max_inflight``: batches that may run at once
    (model instances, GPUs). ``on_batch`` receives a :class:`BatchStats` per batch. A ``run``
    with a ``run_timed`` method (returning the outputs and the seconds the model itself took)
    is called through it, so that service times leave out the event loop's delays.

    A model that runs inline (on the event loop's thread, a CPU model) is called as soon as it
    is free, with whatever has queued meanwhile: while a batch computes, the next one gathers
    in the kernel's socket buffers, so batches grow with the load by themselves. The batcher
    never sleeps to gather more: a pause tried earlier (up to 2 ms after each small batch when
    the thread was busier than 60%) saved CPU per request at moderate load, but kept the thread
    from ever reaching full use, and capped a worker at about 10,000 req/s where the greedy
    batcher sustains 14,000 on the same machine (bench/RESULTS.md). A request that finds such
    a model idle (nothing queued, no batch ended in this turn of the event loop) runs at once,
    before :meth:`submit_nowait` returns: a loop turn would only add to its latency. Requests
    read in the turn in which a batch ended most likely waited behind it: they queue, and
    the next dispatch step batches them together."""

    def __init__(self, run: RunBatch, policy: BatchPolicy | None = None, *,
                 latency: float = 0.05, max_inflight: int = 1,
                 times: ServiceTimes | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_batch: Callable[[BatchStats], None] | None = None) -> None:
        if latency <= 0 or max_inflight < 1:
            raise ValueError("latency must be above 0 and max_inflight at least 1")
        self.run = run
        self.policy = policy or BatchPolicy()
        self.latency = latency
        self.max_inflight = max_inflight
        self.times = times or ServiceTimes(skip_first=True)
        self.clock = clock
        self.on_batch = on_batch
        self._queue: list[_Item] = []  # in deadline order
        self._queued_rows: dict[Hashable, int] = {}  # rows waiting, per group
        self._ids = itertools.count()
        self._rate = ArrivalRate()
        self._running: dict[asyncio.Task[None], float] = {}  # batch task -> expected end
        # an inline batch ended since the event loop last went around: requests read now most
        # likely waited in the socket buffers behind it, with others read in the same turn
        self._ran_this_turn = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled: asyncio.Handle | None = None  # the next dispatch step, soon
        self._timer: asyncio.TimerHandle | None = None  # the end of a wait the policy asked for
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return len(self._running)

    async def submit(self, inputs: Tensors, timeout: float | None = None) -> Tensors:
        """This request's outputs, computed in a batch with others."""
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        self._enqueue(inputs, timeout, partial(_settle, future), future.done)
        return await future

    def submit_nowait(self, inputs: Tensors, answer: Answer, timeout: float | None = None
                      ) -> None:
        """Queue a request; ``answer`` is called, on the event loop, with its outputs or the
        exception in their place. A request refused at arrival (InvalidTensorError,
        OverloadedError) raises here instead, before anything is queued."""
        self._enqueue(inputs, timeout, answer, _never)

    def _enqueue(self, inputs: Tensors, timeout: float | None, answer: Answer,
                 gone: Callable[[], bool]) -> None:
        if self._closed:
            raise OverloadedError("the model is shutting down")
        rows = rows_of(inputs)
        now = self.clock()
        deadline = now + (timeout if timeout is not None else self.latency)
        key = batch_key(inputs)
        why = self.policy.admit(now, rows, deadline, self._backlog(now, key), self.times)
        if why is not None:
            if rows > self.policy.max_batch:
                raise InvalidTensorError(why)
            raise OverloadedError(f"request rejected: {why}")
        item = _Item(next(self._ids), inputs, rows, deadline, key, now, answer, gone)
        self._rate.arrived(now)
        if not self._queue and not self._ran_this_turn and getattr(self.run, "runs_inline",
                                                                       False):
            self._run_inline([item], now)  # alone on an idle model: what the next step would do
            return
        if not self._queue or self._queue[-1].deadline <= deadline:
            self._queue.append(item)  # the common case: one latency objective for all
        else:
            bisect.insort(self._queue, item, key=lambda queued: queued.deadline)
        self._queued_rows[key] = self._queued_rows.get(key, 0) + rows
        self._poke()

    def _backlog(self, now: float, key: Hashable) -> float:
        """Seconds of work ahead of a new request of group ``key``, roughly."""
        free = self.max_inflight - len(self._running)
        wait = 0.0 if free > 0 else max(0.0, min(self._running.values()) - now)
        queued = self._queued_rows.get(key, 0)
        if not queued:
            return wait
        full, rest = divmod(queued, self.policy.max_batch)
        work = full * self.times.estimate(self.policy.max_batch) + (
            self.times.estimate(rest) if rest else 0.0)
        return wait + work / self.max_inflight

    def _poke(self) -> None:
        """Decide again soon: after the callbacks already due in this loop iteration (the
        other requests that came in the same read), not before."""
        if self._scheduled is None and not self._closed:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._scheduled = self._loop.call_soon(self._dispatch)

    async def drain(self) -> None:
        """Return once nothing is queued or running (new requests should be going elsewhere:
        a model being swapped out finishes what it took)."""
        while self._queue or self._running:
            if self._running:
                await asyncio.wait(set(self._running))
            else:
                await asyncio.sleep(0.005)  # queued, about to start: the dispatcher's next step

    async def close(self) -> None:
        """Stop taking requests, let running batches finish, fail what is still queued."""
        self._closed = True
        for handle in (self._scheduled, self._timer):  # no new batch starts from here on
            if handle is not None:
                handle.cancel()
        self._scheduled = self._timer = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        _fail(self._queue, OverloadedError("the model is shutting down"))
        self._queue.clear()
        self._queued_rows.clear()

    # -- dispatching -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """One dispatch step, as a loop callback; sets a timer when the policy waits."""
        self._scheduled = None
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        timeout = self._step()
        if timeout is not None:
            assert self._loop is not None
            if timeout <= 0:
                self._poke()
            else:
                self._timer = self._loop.call_later(timeout, self._poke)

    def _step(self) -> float | None:
        """Start what the policy says; the seconds to wait before deciding again (None: until
        something happens)."""
        while self._queue and len(self._running) < self.max_inflight:
            now = self.clock()
            decision = self.policy.decide(now, self._queue, self.times,
                                          self._rate.expected_gap(now))
            if decision is None:
                return None
            if isinstance(decision, Wait):
                return decision.until - now
            items = self._take(set(decision.ids))
            if isinstance(decision, Reject):
                _fail(items, OverloadedError(f"request dropped: {decision.reason}"))
                continue
            assert isinstance(decision, Dispatch)
            items = [item for item in items if not item.gone()]  # callers who left
            if not items:
                continue
            if getattr(self.run, "runs_inline", False):
                self._run_inline(items, now)  # no task, no hop: it would block the loop anyway
                continue
            rows = sum(item.rows for item in items)
            task = asyncio.create_task(self._run_batch(items, now))
            self._running[task] = now + self.times.estimate(rows)
        return None

    def _take(self, ids: set[int]) -> list[_Item]:
        """Remove these from the queue (mostly a prefix of it) and return them."""
        taken: list[_Item] = []
        kept: list[_Item] = []
        for item in self._queue:
            (taken if item.id in ids else kept).append(item)
            if len(taken) == len(ids):
                kept.extend(self._queue[len(taken) + len(kept):])
                break
        self._queue = kept
        for item in taken:
            left = self._queued_rows[item.key] - item.rows
            if left:
                self._queued_rows[item.key] = left
            else:
                del self._queued_rows[item.key]
        return taken

    async def _run_batch(self, items: list[_Item], started: float) -> None:
        rows = sum(item.rows for item in items)
        try:
            batch = _concatenate(items)
            began = self.clock()
            timed = getattr(self.run, "run_timed", None)
            if timed is not None:  # timed where it runs: the event loop's delays left out
                outputs, compute = await timed(batch)
            else:
                outputs = await self.run(batch)
                compute = self.clock() - began
            self._finish(items, rows, outputs, compute, started)
        except Exception as exc:
            _fail(items, exc)
        finally:
            self._running.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._poke()

    def _run_inline(self, items: list[_Item], started: float) -> None:
        """A model that computes on the event loop's thread (``runs_inline``, with a sync
        ``run_inline`` answering the outputs and the seconds taken): run it right here."""
        rows = sum(item.rows for item in items)
        try:
            outputs, compute = self.run.run_inline(_concatenate(items))  # type: ignore[attr-defined]
            self._finish(items, rows, outputs, compute, started)
        except Exception as exc:
            _fail(items, exc)
        if not self._ran_this_turn:
            self._ran_this_turn = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._ran_this_turn = False

    def _finish(self, items: list[_Item], rows: int, outputs: Any, compute: float,
                started: float) -> None:
        # the callers first: what follows is bookkeeping, and their replies need none of it
        self._deliver(items, outputs, rows)
        self.times.observe(rows, compute, at=self.clock())
        if self.on_batch is not None:
            self.on_batch(BatchStats(rows, len(items), compute,
                                     tuple(started - item.arrived for item in items)))

    @staticmethod
    def _deliver(items: list[_Item], outputs: Any, rows: int) -> None:
        if not isinstance(outputs, dict) or not outputs:
            raise InferenceError(f"the model returned {type(outputs).__name__}, not a mapping "
                                 "of output names to arrays")
        for name, array in outputs.items():
            length = len(array) if hasattr(array, "__len__") else math.nan
            if length != rows:
                raise InferenceError(f"the model returned {length} rows of output {name!r} for "
                                     f"a batch of {rows}; outputs must keep the batch axis")
        offset = 0
        for item in items:
            end = offset + item.rows
            item.give({name: array[offset:end] for name, array in outputs.items()})
            offset = end


def _concatenate(items: list[_Item]) -> Tensors:
    """One batch: the items' inputs joined on the batch axis, in fresh (writable) arrays: a
    model may write to its inputs, and the callers' arrays are read-only."""
    if len(items) == 1:  # alone (an idle model's every batch): a copy is all it takes
        return {name: array.copy() for name, array in items[0].inputs.items()}
    return {name: np.concatenate([item.inputs[name] for item in items], axis=0)
            for name in items[0].inputs}


def _fail(items: list[_Item], exc: BaseException) -> None:
    for item in items:
        item.give(exc)


def _settle(future: asyncio.Future[Tensors], result: Tensors | BaseException) -> None:
    # (never on a done future: _Item.give asks future.done first, as the item's ``gone``)
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _never() -> bool:
    return False
