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
