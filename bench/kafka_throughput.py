"""Kafka trigger throughput and latency against a bare kafka-python loop, in the same run.

Against the embedded Tansu broker, one worker, N messages of ~200 bytes on 4 partitions:

1. consume -> no-op batch handler -> commit, for sluice (through the platform) and for a bare
   kafka-python consume-and-commit loop with the same batch size. Both are timed the same way,
   by an observer reading the group's committed offsets, from the first commit to the last.
   Target (issue 3): sluice >= 0.8x the bare loop's rate.
2. consume -> handler -> produce to an output topic -> commit, at a fixed offered rate of half
   the measured maximum: events/s and end-to-end latency p50/p99 (input record timestamp to
   output record timestamp).

    python bench/kafka_throughput.py [--messages 200000] [--record]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata, TopicPartition
from platform_process import Platform
from recording import record  # noqa: E402 - bench/ is on sys.path when run as a script

from sluice.platform.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "bench" / "apps" / "kafka_handlers.py"
PARTITIONS = 4
BATCH = 500
GROUP_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                  "max_poll_interval_ms": 30000}


def create_topic(bootstrap: str, name: str, partitions: int = PARTITIONS) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def fill(bootstrap: str, topic: str, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    payload = {"card": "", "amount": 0.0, "merchant": "m" * 120, "seq": 0}
    for i in range(count):
        payload["seq"], payload["card"], payload["amount"] = i, f"card-{i % 5000:05d}", i * 0.01
        producer.send(topic, json.dumps(payload).encode(), key=payload["card"].encode())
    producer.flush()
    producer.close()


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS))
    finally:
        consumer.close(autocommit=False)


def observe(bootstrap: str, group: str, topic: str, total: int, timeout: float = 600) -> float:
    """Messages per second between the group's first commit and its last."""
    deadline = time.monotonic() + timeout
    first_at = first_count = None
    while time.monotonic() < deadline:
        done = committed_total(bootstrap, group, topic)
        now = time.monotonic()
        if done > 0 and first_at is None:
            first_at, first_count = now, done
        if done >= total:
            assert first_at is not None and first_count is not None
            return (total - first_count) / max(now - first_at, 1e-6)
        time.sleep(0.05)
    raise TimeoutError(f"group {group} did not commit all {total} messages")


def bare_loop(bootstrap: str, topic: str, group: str, total: int) -> None:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=BATCH, fetch_max_wait_ms=100, **GROUP_SETTINGS)
    seen = 0
    try:
        while seen < total:
            records = consumer.poll(timeout_ms=200, max_records=BATCH)
            if not records:
                continue
            offsets = {}
            for tp, batch in records.items():
                seen += len(batch)
                offsets[tp] = OffsetAndMetadata(batch[-1].offset + 1, "", -1)
            consumer.commit(offsets)
    finally:
        consumer.close(autocommit=False)


def deploy(platform: Platform, name: str, handler: str, trigger: str) -> None:
    platform.run("deploy", str(HANDLERS), "--name", name, "--handler", handler, "--trigger",
                 trigger)


def offered_load(bootstrap: str, topic: str, rate: float, seconds: float) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    sent = 0
    started = time.monotonic()
    body = json.dumps({"merchant": "m" * 150}).encode()
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            producer.send(topic, body, key=str(sent).encode())
            sent += 1
        time.sleep(0.001)
    producer.flush()
    producer.close()
    return sent


def latencies(bootstrap: str, topic: str, expect: int, timeout: float = 120) -> list[float]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    deadline = time.monotonic() + timeout
    while not consumer.partitions_for_topic(topic):
        time.sleep(0.1)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out: list[float] = []
    while len(out) < expect and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            out.extend(r.timestamp - json.loads(r.value)["ts_ms"] for r in batch)
    consumer.close(autocommit=False)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    total = args.messages
    group_opts = ",".join(f"{k}={v}" for k, v in GROUP_SETTINGS.items())
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
        sluice = None
        try:
            for topic in ("bare-in", "sluice-in"):
                create_topic(bootstrap, topic)
                print(f"producing {total} messages to {topic}...", file=sys.stderr, flush=True)
                fill(bootstrap, topic, total)

            thread = threading.Thread(target=bare_loop, args=(bootstrap, "bare-in", "bare", total))
            thread.start()
            bare_rate = observe(bootstrap, "bare", "bare-in", total)
            thread.join()
            print(f"bare kafka-python: {bare_rate:,.0f} msg/s", file=sys.stderr, flush=True)

            sluice = Platform(Path(tmp) / "home", env={"SLUICE_KAFKA_BOOTSTRAP": bootstrap})
            deploy(sluice, "noop", "noop_batch",
                   f"kafka:topic=sluice-in,group=sluice,batch=true,max_batch_size={BATCH},"
                   f"{group_opts}")
            sluice_rate = observe(bootstrap, "sluice", "sluice-in", total)
            print(f"sluice no-op batch: {sluice_rate:,.0f} msg/s", file=sys.stderr, flush=True)

            # the handle-and-produce path's own maximum, measured like the no-op one ...
            produce_total = max(total // 4, 1000)
            create_topic(bootstrap, "max-in")
            fill(bootstrap, "max-in", produce_total)
            deploy(sluice, "producer", "stamp",
                   f"kafka:topic=max-in,group=producer,output=max-out,"
                   f"max_batch_size={BATCH},{group_opts}")
            produce_rate = observe(bootstrap, "producer", "max-in", produce_total)
            print(f"sluice handler+produce: {produce_rate:,.0f} msg/s", file=sys.stderr,
                  flush=True)
            # ... then half of it offered at a steady rate, for end-to-end latency
            create_topic(bootstrap, "lat-in")
            create_topic(bootstrap, "lat-out")
            deploy(sluice, "stamper", "stamp",
                   f"kafka:topic=lat-in,group=stamper,output=lat-out,"
                   f"max_batch_size={BATCH},max_wait_ms=5,{group_opts}")
            time.sleep(5)  # the group has formed
            rate = produce_rate / 2
            sent = offered_load(bootstrap, "lat-in", rate, args.latency_seconds)
            lat = sorted(latencies(bootstrap, "lat-out", sent))
        finally:
            if sluice is not None:
                sluice.stop()
            broker.stop()
    ratio = sluice_rate / bare_rate
    p50 = statistics.median(lat) if lat else float("nan")
    p99 = lat[int(len(lat) * 0.99) - 1] if lat else float("nan")
    lines = ["| measurement | value |", "| --- | --- |",
             f"| bare kafka-python consume+commit, batch {BATCH} | {bare_rate:,.0f} msg/s |",
             f"| sluice no-op batch handler + commit, batch {BATCH} | {sluice_rate:,.0f} msg/s |",
             f"| sluice / bare | {ratio:.2f}x |",
             f"| consume -> handler -> produce -> commit, max | {produce_rate:,.0f} msg/s |",
             f"| the same at half that, offered | {rate:,.0f} msg/s "
             f"({sent} sent, {len(lat)} received) |",
             f"| end-to-end latency p50 / p99 | {p50:.1f} ms / {p99:.1f} ms |"]
    verdict = "PASS" if ratio >= 0.8 else "FAIL"
    summary = f"sluice consumes at {ratio:.2f}x the bare loop's rate (target >= 0.8x: {verdict})."
    print("\n".join(lines))
    print(summary)
    if args.record:
        record("Kafka trigger throughput",
               f"embedded Tansu broker, {total} messages of ~200 bytes on {PARTITIONS} "
               "partitions, one worker.",
               f"python bench/kafka_throughput.py --messages {total} --record", lines, summary)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
