"""One Kafka trigger in one worker: poll, handle, produce, then commit what is safe.

kafka-python's clients are blocking and not thread-safe, so each trigger owns one thread that does
all its Kafka I/O; the handler runs on the worker's event loop like an HTTP request does. Per poll:
records are handled in partition order (retried with back-off; failures and undecodable records
go to the dead-letter topic with the reason in headers), outputs are produced, the producer is
flushed, and only then are the offsets the :class:`OffsetTracker` allows committed. A failed
produce rewinds the partitions to their last commit instead: nothing is lost, some is repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from nuclio_sdk import Event, TriggerInfo
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential

from sluice.outputs import Reply

from ..base import EventRunner
from .events import Undecodable, record_event
from .offsets import OffsetTracker
from .settings import KafkaSettings

T = TypeVar("T")
LogFn = Callable[..., None]
NO_ACK_HEADER = "x-nuclio-stream-no-ack"
KEY_HEADER = "x-sluice-key"


def failed(reply: Reply) -> bool:
    """5xx: the handler raised or timed out; retried, then dead-lettered."""
    return reply.status >= 500


@functools.lru_cache(maxsize=1)
def _instruments() -> tuple[Any, Any, Any, Any]:
    """Registered once per process, shared by all of a worker's Kafka triggers."""
    from prometheus_client import Counter, Gauge, Histogram

    return (
        Counter("sluice_kafka_messages", "Kafka messages by outcome.",
                ["function", "trigger", "outcome"]),
        Histogram("sluice_kafka_batch_size", "Records per poll.", ["function", "trigger"],
                  buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)),
        Histogram("sluice_kafka_handler_seconds", "Handler time per poll batch.",
                  ["function", "trigger"]),
        Gauge("sluice_kafka_consumer_lag", "Messages behind the partition's end.",
              ["function", "trigger", "topic", "partition"], multiprocess_mode="livemax"),
    )


class KafkaMetrics:
    def __init__(self, function: str, trigger: str) -> None:
        messages, batch_size, latency, lag = _instruments()
        self._labels = (function, trigger)
        self.messages = messages
        self.batch_size = batch_size.labels(*self._labels)
        self.latency = latency.labels(*self._labels)
        self.lag = lag
        self._by_outcome: dict[str, Any] = {}

    def count(self, outcome: str, n: int = 1) -> None:
        child = self._by_outcome.get(outcome)
        if child is None:
            child = self._by_outcome[outcome] = self.messages.labels(*self._labels, outcome)
        child.inc(n)


class KafkaTriggerLoop:
    """Runs until :meth:`stop`; never raises for a handler's or a broker's failure."""

    def __init__(self, settings: KafkaSettings, runner: EventRunner, log: LogFn,
                 metrics: KafkaMetrics | None = None, platform: Any = None,
                 on_health: Callable[[bool, str], None] | None = None) -> None:
        self.settings = settings
        self.on_health = on_health
        self._healthy = True
        self._checked = 0.0
        self._succeeded = 0  # counted per batch, not per message (metrics cost)
        self.runner = runner
        self.log = log
        self.metrics = metrics
        self.tracker = OffsetTracker()
        self.trigger = TriggerInfo("kafka-cluster", settings.trigger)
        self._stopping = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-{settings.trigger}")
        self._consumer: Any = None
        self._producer: Any = None
        self._sends: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        if settings.explicit_ack and platform is not None:
            platform._control_callback = self._on_control  # nuclio_sdk's explicit_ack hook

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._thread, fn, *args)

    def stop(self) -> None:
        self._stopping = True

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        backoff = 0.2
        while not self._stopping:
            try:
                await self._io(self._connect)
                break
            except Exception as exc:  # the broker may not be up yet: keep trying
                self.log("warn", f"kafka trigger {self.settings.trigger}: cannot connect "
                         f"({type(exc).__name__}: {exc}); retrying in {backoff:.1f}s")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        sends: list[Any] = []
        offsets: dict[Any, int] = {}
        try:
            while not self._stopping:
                try:
                    # one trip to the Kafka thread per batch: flush and commit the last batch,
                    # then poll the next (each trip costs a GIL hand-over)
                    records, committed = await self._io(self._cycle, sends, offsets, True)
                except Exception as exc:
                    self.log("warn", f"kafka poll failed ({type(exc).__name__}: {exc})")
                    await asyncio.sleep(0.5)
                    continue
                if committed:
                    self.tracker.committed(committed)
                await self._check_health()
                if records:
                    try:
                        await self._handle(records)
                    except Exception as exc:  # a bug here must not stop consumption silently
                        self.log("error", f"kafka trigger {self.settings.trigger}: handling a "
                                 f"batch failed ({type(exc).__name__}: {exc}); re-reading it",
                                 traceback=traceback.format_exc())
                        self._sends = []
                        await self._io(self._rewind)
                        await asyncio.sleep(1.0)
                        sends, offsets = [], {}
                        continue
                sends, self._sends = self._sends, []
                offsets = self.tracker.committable()
                if sends and self.metrics is not None:
                    self.metrics.count("produced", len(sends))
            _, committed = await self._io(self._cycle, sends, offsets, False)
            if committed:
                self.tracker.committed(committed)
        finally:
            await self._io(self._close)
            self._thread.shutdown(wait=False)

    def _cycle(self, sends: list[Any], offsets: dict[Any, int], poll: bool
               ) -> tuple[dict[Any, list[Any]], dict[Any, int] | None]:
        """On the Kafka thread: flush the outputs, commit what they allow, poll the next batch.
        A failed produce rewinds to the last commit instead (nothing lost, some repeated)."""
        committed = None
        if sends and not self._flush(sends):
            self._rewind()
        elif offsets:
            try:
                self._commit_offsets(offsets)
                committed = offsets
            except Exception as exc:  # e.g. a rebalance took the partitions: the new owner redoes
                self.log("warn", f"offset commit failed ({type(exc).__name__}: {exc}); "
                         "those messages will be delivered again")
        return (self._poll() if poll else {}), committed

    async def _check_health(self) -> None:
        """Tell the platform when the broker becomes unreachable, and when it is back."""
        now = time.monotonic()
        if self.on_health is None or now - self._checked < 2.0:
            return
        self._checked = now
        try:
            healthy = await self._io(self._broker_reachable)
        except Exception as exc:
            self.log("warn", f"cannot check the broker connection: {type(exc).__name__}: {exc}")
            return
        if healthy != self._healthy:
            self._healthy = healthy
            state = "reachable again" if healthy else "unreachable"
            self.on_health(healthy, f"kafka broker {state} "
                           f"({', '.join(self.settings.bootstrap_servers)})")

    def _broker_reachable(self) -> bool:
        client = self._consumer._client  # kafka-python keeps its connections here
        brokers = client.cluster.brokers()
        return any(client.connected(getattr(b, "node_id", getattr(b, "nodeId", None)))
                   for b in brokers)

    def _connect(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        tracker = self.tracker
        loop: asyncio.AbstractEventLoop = self._loop  # type: ignore[assignment]
        metrics = self.metrics

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                # called inside poll(): every handled message was committed before it
                loop.call_soon_threadsafe(tracker.forget, list(revoked))
                if metrics is not None:
                    for tp in revoked:
                        metrics.lag.labels(*metrics._labels, tp.topic, str(tp.partition)).set(0)

            def on_partitions_assigned(self, assigned: Any) -> None:
                pass

        consumer = KafkaConsumer(**self.settings.consumer_config())
        try:
            consumer.subscribe(self.settings.topics, listener=Listener())
            self._producer = KafkaProducer(**self.settings.producer_config())
        except BaseException:
            consumer.close(autocommit=False)  # a retry makes new clients: leak none
            raise
        self._consumer = consumer
        self.log("info", f"kafka trigger {self.settings.trigger}: consuming "
                 f"{', '.join(self.settings.topics)} as group {self.settings.group}")

    def _poll(self) -> dict[Any, list[Any]]:
        records: dict[Any, list[Any]] = self._consumer.poll(
            timeout_ms=max(100, self.settings.max_wait_ms),
            max_records=self.settings.max_batch_size)
        if records and self.metrics is not None:
            for tp, batch in records.items():
                high = self._consumer.highwater(tp)
                if high is not None:
                    lag = max(0, high - (batch[-1].offset + 1))
                    self.metrics.lag.labels(*self.metrics._labels, tp.topic,
                                            str(tp.partition)).set(lag)
        return records

    def _close(self) -> None:
        if self._consumer is not None:
            _close_without_leaving(self._consumer)
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    # -- handling ------------------------------------------------------------------------------
    async def _handle(self, records: dict[Any, list[Any]]) -> None:
        started = time.perf_counter()
        total = sum(len(batch) for batch in records.values())
        if self.metrics is not None:
            self.metrics.batch_size.observe(total)
            self.metrics.count("consumed", total)
        pairs: list[tuple[Any, Any, Event]] = []
        count = 0
        for tp, batch in records.items():
            for record in batch:
                count += 1
                self.tracker.started(tp, record.offset)
                try:
                    event = record_event(record, self.trigger, self.settings.content_type,
                                         last=count == total)
                except Undecodable as exc:
                    self._dead_letter(tp, record, str(exc), attempts=0)
                    continue
                pairs.append((tp, record, event))
        if self.settings.batch:
            await self._handle_batch(pairs)
        else:
            for tp, record, event in pairs:  # partition by partition, in offset order
                reply = await self._with_retries(functools.partial(self._call_one, event))
                self._settle(tp, record, event, reply)
        if self.metrics is not None:
            self.metrics.latency.observe(time.perf_counter() - started)
            self.metrics.count("succeeded", self._succeeded)
        self._succeeded = 0

    async def _call_one(self, event: Event) -> Reply:
        if self.runner.is_async:
            return await self.runner.run_async(event)
        return self.runner.run(event)

    async def _call_batch(self, events: Sequence[Event]) -> list[Reply]:
        if self.runner.is_async:
            return await self.runner.run_batch_async(events)
        return self.runner.run_batch(events)

    async def _with_retries(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call`` must be an async callable (tenacity awaits only those), e.g. a partial."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self.settings.retries),
            wait=wait_exponential(multiplier=self.settings.retry_backoff_ms / 1000, max=30),
            retry=retry_if_result(lambda r: failed(r) if isinstance(r, Reply)
                                  else any(failed(x) for x in r)),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            before_sleep=lambda state: self.metrics.count("failed")
            if self.metrics is not None else None,
        )
        return await retrying(call)

    async def _handle_batch(self, pairs: list[tuple[Any, Any, Event]]) -> None:
        if not pairs:
            return
        events = [event for _, _, event in pairs]
        replies = await self._with_retries(functools.partial(self._call_batch, events))
        by_id = {r.event_id: r for r in replies if r.event_id is not None}
        in_order = len(replies) == len(events) and not by_id
        shared = replies[0] if len(replies) == 1 and replies[0].event_id is None else None
        for i, (tp, record, event) in enumerate(pairs):
            reply = by_id.get(event.id) or (replies[i] if in_order else None)
            produce = True
            if reply is None and shared is not None:  # one answer for the whole batch
                reply, produce = shared, i == 0
            if reply is None:  # a list that does not match the events: not handled
                reply = Reply(500, f"the batch handler returned no response for event "
                                   f"{event.id}".encode())
            self._settle(tp, record, event, reply, produce=produce)

    def _settle(self, tp: Any, record: Any, event: Event, reply: Reply,
                produce: bool = True) -> None:
        """Record one message's outcome: output or dead letter, then finished (or not yet)."""
        if reply.status >= 400:
            reason = reply.body.decode("utf-8", "replace")[:1000]
            attempts = 1 + self.settings.retries if failed(reply) else 1
            self._dead_letter(tp, record, reason, attempts)
            return
        self._succeeded += 1
        if produce and self.settings.output and reply.body:
            key = reply.headers.get(KEY_HEADER) or reply.headers.get(KEY_HEADER.title())
            self._send(self.settings.output, reply.body,
                       key.encode() if key else record.key,
                       [("content-type", reply.content_type.encode())])
        if self.settings.explicit_ack and any(k.lower() == NO_ACK_HEADER for k in reply.headers):
            return  # stays pending until context.platform.explicit_ack(...)
        self.tracker.finished(tp, event.offset)

    def _dead_letter(self, tp: Any, record: Any, reason: str, attempts: int) -> None:
        headers = list(record.headers or []) + [
            ("x-sluice-error", reason.encode("utf-8", "replace")),
            ("x-sluice-function", self.settings.function.encode()),
            ("x-sluice-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
            ("x-sluice-attempts", str(attempts).encode()),
        ]
        self._send(self.settings.dead_letter, record.value or b"", record.key, headers)
        self.log("error", f"dead-lettered {record.topic}/{record.partition}/{record.offset} to "
                 f"{self.settings.dead_letter}: {reason}", attempts=attempts)
        if self.metrics is not None:
            self.metrics.count("dead_lettered")
        self.tracker.finished(tp, record.offset)

    def _send(self, topic: str, value: bytes, key: bytes | None,
              headers: list[tuple[str, bytes]]) -> None:
        self._sends.append(self._producer.send(topic, value=value, key=key, headers=headers))

    async def _on_control(self, message: dict[str, Any]) -> None:
        """nuclio_sdk's explicit_ack: that offset is finished now."""
        from kafka.structs import TopicPartition

        attributes = message.get("attributes", {})
        tp = TopicPartition(attributes["topic"], int(attributes["partition"]))
        self.tracker.finished(tp, int(attributes["offset"]))

    # -- committing (on the Kafka thread) --------------------------------------------------
    def _flush(self, sends: list[Any]) -> bool:
        from kafka import KafkaProducer

        self._producer.flush()
        failures = [f.exception for f in sends if f.failed()]
        if failures:
            self.log("error", f"{len(failures)} produce(s) failed ({failures[0]}); rewinding to "
                     "the last commit so nothing is lost")
            # a producer in a failed state does not recover by itself: start a fresh one
            with contextlib.suppress(Exception):
                self._producer.close(timeout=1)
            self._producer = KafkaProducer(**self.settings.producer_config())
        return not failures

    def _commit_offsets(self, offsets: dict[Any, int]) -> None:
        from kafka.structs import OffsetAndMetadata

        self._consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})

    def _rewind(self) -> None:
        consumer = self._consumer
        for tp in consumer.assignment():
            committed = consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
            else:
                consumer.seek_to_beginning(tp)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.tracker.forget, list(consumer.assignment()))


def _close_without_leaving(consumer: Any) -> None:
    """Make the consumer's close skip LeaveGroup: the group drops this member after the
    session timeout instead, as it does a killed one. Tansu (0.6) keeps a member that leaves
    while a join is pending as the group's leader for good, and every later member then waits
    for that leader's assignment forever. A join is pending more often than it looks: when
    one worker of a group leaves, the others rejoin, so the second of two workers stopping
    together (a restart, a redeploy) leaves mid-join. Seen: the platform restarted and its
    enrich group never consumed again. The cost is a session timeout (6 s by default) before
    a stopped worker's partitions move. (kafka-python 3.0.12's coordinator, pinned.)"""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None:
        coordinator.maybe_leave_group = lambda *args, **kwargs: None
