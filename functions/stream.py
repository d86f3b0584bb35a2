"""Live traffic for the pipeline: transactions published to Kafka, and the predictions that
come back, followed until every event is scored.

:func:`publish` sends events keyed by card (so one card's events stay in order on one
partition). :class:`Predictions` reads the predictions topic from where it ended when it
was opened, keeping each event's label and score, so a run measures only its own events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .transactions import Txn


def publish(bootstrap: list[str], topic: str, txns: Iterable[Txn],
            progress: Callable[[int], None] | None = None, every: int = 5_000) -> int:
    """Send every event (JSON, keyed by card) and wait until the broker has them all."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024,
                             acks=1, client_id="sluice-stream")
    sent = 0
    try:
        for txn in txns:
            producer.send(topic, orjson.dumps(txn.to_json()), key=txn.card.encode())
            sent += 1
            if progress is not None and sent % every == 0:
                progress(sent)
        producer.flush()
    finally:
        producer.close()
    if progress is not None:
        progress(sent)
    return sent


@dataclass
class Scored:
    """What came back for the events a run sent."""

    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    first: float | None = None  # monotonic time of the first prediction
    last: float | None = None


class Predictions:
    """A reader of the predictions topic from its current end (every partition)."""

    def __init__(self, bootstrap: list[str], topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                       client_id="sluice-stream")
        partitions = self._consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise LookupError(f"topic {topic!r} does not exist (deploy the pipeline first)")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_end()
        for tp in assigned:  # resolve the end now, before anything new is produced
            self._consumer.position(tp)

    def collect(self, wanted: set[str], into: Scored, until: float,
                on_batch: Callable[[int], None] | None = None) -> Scored:
        """Read until every id in ``wanted`` was scored or the monotonic time ``until``."""
        seen: set[str] = set()
        while len(seen) < len(wanted) and time.monotonic() < until:
            for records in self._consumer.poll(timeout_ms=200).values():
                now = time.monotonic()
                for record in records:
                    value: Any = orjson.loads(record.value)
                    if value.get("id") not in wanted or value["id"] in seen:
                        continue  # another run's, or a redelivery's second answer
                    seen.add(value["id"])
                    into.labels.append(int(value["fraud"]))
                    into.scores.append(float(value["scores"][0]))
                    into.first = into.first or now
                    into.last = now
            if on_batch is not None:
                on_batch(len(seen))
        return into

    def close(self) -> None:
        self._consumer.close()
