"""Consumer lag of a function's Kafka triggers, read from the broker (as kafka-consumer-groups
does): per partition, the end offset minus the group's committed offset."""

from __future__ import annotations

import contextlib
from typing import Any


def consumer_lag(settings: dict[str, Any]) -> dict[str, int]:
    """``{"topic/partition": lag}`` for one trigger's group (KafkaSettings as a dict)."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings["bootstrap_servers"], group_id=settings["group"],
        enable_auto_commit=False, request_timeout_ms=2500,
        allow_auto_create_topics=False,  # reading lag must never create the topic it reads
        **settings.get("security", {}))
    try:
        partitions = [TopicPartition(topic, p) for topic in settings["topics"]
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return {}
        ends = consumer.end_offsets(partitions)
        committed = {tp: consumer.committed(tp) or 0 for tp in partitions}
        # The embedded Tansu broker answers ListOffsets with a stale end offset when records
        # arrived in batches; a fetch's high watermark is right, so take the larger of the two.
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, committed[tp])
        consumer.poll(timeout_ms=500, max_records=1, update_offsets=False)
        for tp in partitions:
            ends[tp] = max(ends[tp], consumer.highwater(tp) or 0)
        return {f"{tp.topic}/{tp.partition}": max(0, ends[tp] - committed[tp])
                for tp in partitions}
    finally:
        with contextlib.suppress(Exception):
            consumer.close(autocommit=False)


async def function_lag(settings: list[dict[str, Any]], log: Any, broker_down: bool
                       ) -> dict[str, int]:
    """Lag of every Kafka trigger of a function; -1 for a trigger whose broker does not
    answer (at once when its workers already know the broker is down)."""
    import asyncio

    lag: dict[str, int] = {}
    for one in settings:
        if broker_down:  # known unreachable: answer at once rather than wait for a timeout
            lag[",".join(one["topics"])] = -1
            continue
        try:
            lag.update(await asyncio.wait_for(asyncio.to_thread(consumer_lag, one), 3))
        except Exception as exc:  # the broker may be down: the status still answers
            lag[",".join(one["topics"])] = -1
            log.event("warn", f"cannot read consumer lag: {type(exc).__name__}: {exc}")
    return lag
