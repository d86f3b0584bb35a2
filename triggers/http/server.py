"""The HTTP trigger's server: admission, dispatch to the runner, batching, metrics and drain."""

from __future__ import annotations

import asyncio
import hmac
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from nuclio_sdk import Event, TriggerInfo

from sluice.outputs import Reply, error_reply
from sluice.tally import SHARED

from ..base import AnswersHttp, EventRunner
from .events import BadRequest, make_event
from .protocol import HttpConnection, Request

# GET on this path answers with the function's Prometheus metrics instead of calling the handler.
METRICS_PATH = "/metrics"


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-worker bounds; past them a request is refused at once, never queued without end."""

    max_request_body_size: int = 4 * 1024 * 1024
    max_inflight: int = 256
    max_connections: int = 10_000
    batch_size: int = 0  # 0: no batching; else Nuclio's HTTP batching mode
    batch_timeout: float = 0.01
    # a connection with nothing in flight and no bytes for this long is closed (idle keep-alive,
    # or a client trickling its headers); swept every few seconds, off the request path
    idle_timeout: float = 60.0


class RequestMetrics:
    """Prometheus instruments for one trigger, with label children cached off the hot path;
    updates go through the worker's tally (sluice.tally), written out every half second."""

    def __init__(self, function: str, trigger: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._invocations = Counter(
            "sluice_function_invocations_total",
            "Handler invocations by response status.",
            ["function", "trigger", "status"],
        )
        self._latency = Histogram(
            "sluice_function_latency_seconds",
            "Time from a request's arrival to its response.",
            ["function", "trigger"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                     10, 30, 60),
        )
        self.inflight = Gauge(
            "sluice_function_inflight",
            "Requests being handled now.",
            ["function", "trigger"],
            multiprocess_mode="livesum",
        ).labels(function, trigger)
        self._labels = (function, trigger)
        self._by_status: dict[int, Any] = {}
        self.latency = self._latency.labels(function, trigger)

    def count(self, status: int) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._invocations.labels(*self._labels, str(status))
        SHARED.inc(child)

    def entered(self) -> None:
        SHARED.inc(self.inflight)

    def left(self) -> None:
        SHARED.inc(self.inflight, -1)

    def took(self, seconds: float) -> None:
        SHARED.observe(self.latency, seconds)


class HttpServer:
    """Serves one listening socket (shared with the function's other workers)."""

    def __init__(
        self,
        runner: EventRunner,
        limits: HttpLimits,
        trigger_name: str = "http",
        metrics: RequestMetrics | None = None,
        metrics_page: Callable[[], bytes] | None = None,
        log: Callable[..., None] | None = None,
        trigger_token: str | None = None,
        raw_body: bool = False,
    ) -> None:
        self.runner = runner
        # a runner that answers requests itself, by callback (no Event, no task)
        self.answer_http = cast("AnswersHttp", runner).answer_http if hasattr(
            runner, "answer_http") else None
        self.raw_body = raw_body  # a model server decodes request bodies itself
        # only the platform knows it: a client cannot pass its request off as a cron fire
        self.trigger_token = trigger_token
        self.limits = limits
        self.trigger = TriggerInfo("http", trigger_name)
        self.metrics = metrics
        self.metrics_page = metrics_page
        self.log = log or (lambda *a, **k: None)
        self.loop = asyncio.get_event_loop()
        self.connections: set[HttpConnection] = set()
        self.inflight = 0
        # requests in flight integrated over time, up to the last change (for the load report)
        self.inflight_seconds = 0.0
        self._inflight_changed = self.loop.time()
        self.draining = False
        self._server: asyncio.AbstractServer | None = None
        self._batch: list[tuple[HttpConnection, Request, Event]] = []
        self._batch_timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, sock: socket.socket) -> None:
        self._server = await self.loop.create_server(
            lambda: HttpConnection(self), sock=sock, backlog=2048
        )
        self._sweep_period = max(0.05, min(5.0, self.limits.idle_timeout / 4))
        self.loop.call_later(self._sweep_period, self._sweep_idle)

    def _sweep_idle(self) -> None:
        cutoff = self.loop.time() - self.limits.idle_timeout
        for conn in list(self.connections):
            if conn.last_active < cutoff:
                conn.close_if_idle()
        if not self.draining:
            self.loop.call_later(self._sweep_period, self._sweep_idle)

    # -- dispatch ----------------------------------------------------------------------------
    def dispatch(self, conn: HttpConnection, request: Request) -> None:
        if request.refusal is not None:
            self._respond(conn, request, request.refusal)
            return
        if self.inflight >= self.limits.max_inflight:
            self._respond(conn, request, error_reply(
                503, f"worker has {self.inflight} requests in flight (limit "
                f"{self.limits.max_inflight}); retry shortly"), retry_after=True)
            return
        if request.method == "GET" and self.metrics_page is not None and (
            request.url == METRICS_PATH or request.url.startswith(METRICS_PATH + "?")
        ):
            page = self.metrics_page()
            self._respond(conn, request, Reply(200, page, "text/plain; version=0.0.4"), count=False)
            return
        trigger = self.trigger
        routed = dict.get(request.headers, "X-Sluice-Trigger")  # keys are stored title-cased
        if routed is not None:  # the platform delivering another trigger's event (cron/<name>)
            proof = dict.get(request.headers, "X-Sluice-Trigger-Token", "")
            dict.pop(request.headers, "X-Sluice-Trigger", None)
            dict.pop(request.headers, "X-Sluice-Trigger-Token", None)
            if self.trigger_token and hmac.compare_digest(proof, self.trigger_token):
                kind, _, name = routed.partition("/")
                trigger = TriggerInfo(kind, name)
        if self.answer_http is not None and trigger is self.trigger:
            self._enter(conn)
            self.answer_http(request.method, request.url, request.headers, request.body,
                             partial(self._answered, conn, request))
            return
        try:
            event = make_event(trigger, request.method, request.url, request.headers,
                               request.body, decode=not self.raw_body)
        except BadRequest as exc:
            self._respond(conn, request, error_reply(400, str(exc)))
            return
        if self.limits.batch_size > 0:
            self._add_to_batch(conn, request, event)
            return
        runner = self.runner
        if runner.is_async:
            self._enter(conn)
            self.loop.create_task(self._run_async(conn, request, event))
            return
        self.inflight += 1
        if self.metrics:
            self.metrics.entered()
        runner.busy_fd = conn.fd
        reply = runner.run(event)
        self.inflight -= 1
        if self.metrics:
            self.metrics.left()
        self._respond(conn, request, reply)

    def _enter(self, conn: HttpConnection) -> None:
        conn.begin()
        self._integrate()
        self.inflight += 1
        self._idle.clear()
        if self.metrics:
            self.metrics.entered()

    def _leave(self) -> None:
        self._integrate()
        self.inflight -= 1
        if self.metrics:
            self.metrics.left()
        if self.inflight == 0:
            self._idle.set()

    def _integrate(self) -> None:
        now = self.loop.time()
        self.inflight_seconds += self.inflight * (now - self._inflight_changed)
        self._inflight_changed = now

    def inflight_time(self) -> float:
        """Request-seconds in flight so far: its growth over an interval, divided by the
        interval, is the mean number of requests in flight then (async handlers, model servers
        and batches; a sync handler's one request at a time is the runner's busy time)."""
        self._integrate()
        return self.inflight_seconds

    async def _run_async(self, conn: HttpConnection, request: Request, event: Event) -> None:
        try:
            reply = await self.runner.run_async(event)
        except BaseException as exc:  # the connection must get an answer whatever happened
            reply = error_reply(503, "the worker is stopping; retry") if isinstance(
                exc, asyncio.CancelledError) else error_reply(
                500, f"internal error: {type(exc).__name__}: {exc}")
            raise
        finally:
            self._answered(conn, request, reply)

    def _answered(self, conn: HttpConnection, request: Request, reply: Reply) -> None:
        self._leave()
        conn.finish(reply, request)
        self._count(request, reply)  # after the reply went out: the caller need not wait

    def _respond(
        self,
        conn: HttpConnection,
        request: Request,
        reply: Reply,
        retry_after: bool = False,
        count: bool = True,
    ) -> None:
        if count:
            self._count(request, reply)
        conn.send(reply, request.keep_alive, request.method == "HEAD", retry_after)

    def _count(self, request: Request, reply: Reply) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.count(reply.status)
            metrics.took(self.loop.time() - request.started)

    # -- Nuclio's HTTP batching mode ----------------------------------------------------------
    def _add_to_batch(self, conn: HttpConnection, request: Request, event: Event) -> None:
        self._enter(conn)
        self._batch.append((conn, request, event))
        if len(self._batch) >= self.limits.batch_size:
            self._flush_batch()
        elif self._batch_timer is None:
            self._batch_timer = self.loop.call_later(self.limits.batch_timeout, self._flush_batch)

    def _flush_batch(self) -> None:
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        events = [event for _, _, event in batch]
        if self.runner.is_async:
            self.loop.create_task(self._run_batch_async(batch, events))
            return
        self.runner.busy_fd = batch[0][0].fd
        replies = self.runner.run_batch(events)
        self._deliver_batch(batch, replies)

    async def _run_batch_async(
        self, batch: list[tuple[HttpConnection, Request, Event]], events: list[Event]
    ) -> None:
        replies = [error_reply(503, "the worker is stopping; retry")]
        try:
            replies = await self.runner.run_batch_async(events)
        except BaseException as exc:  # every connection of the batch must get an answer
            if not isinstance(exc, asyncio.CancelledError):
                replies = [error_reply(500, f"internal error: {type(exc).__name__}: {exc}")]
            raise
        finally:
            self._deliver_batch(batch, replies)

    def _deliver_batch(
        self, batch: list[tuple[HttpConnection, Request, Event]], replies: list[Reply]
    ) -> None:
        by_id = {reply.event_id: reply for reply in replies if reply.event_id is not None}
        shared = replies[0] if len(replies) == 1 and replies[0].event_id is None else None
        for conn, request, event in batch:
            reply = by_id.get(event.id) or shared or error_reply(
                500, f"the batch handler returned no response for event {event.id}")
            self._leave()
            self._count(request, reply)
            conn.finish(reply, request)

    # -- lifecycle -----------------------------------------------------------------------------
    async def drain(self, timeout: float, idle_grace: float = 1.0) -> None:
        """Stop accepting, finish in-flight requests, then close every connection.

        Keep-alive connections stay open for ``idle_grace`` so that a client calling in a loop
        gets its next answer (with ``Connection: close``) rather than a reset.
        """
        self.draining = True
        if self._server is not None:
            self._server.close()
        if self._batch:
            self._flush_batch()
        deadline = self.loop.time() + timeout
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            self.log("warning", "drain timed out with requests still in flight",
                     inflight=self.inflight)
        await asyncio.sleep(max(0.0, min(idle_grace, deadline - self.loop.time())))
        for conn in list(self.connections):
            if not conn.close_if_idle() and conn.transport is not None:
                conn.transport.close()
