"""``sluice topics / produce / consume``: talk to the platform's broker with kafka-python."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import PlatformError, SpecError


def add_commands(sub: Any) -> None:
    topics = sub.add_parser("topics", help="create, list or delete Kafka topics")
    topic_sub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = topic_sub.add_parser("create", help="create a topic")
    create.add_argument("topic")
    create.add_argument("--partitions", type=int, default=1)
    topic_sub.add_parser("list", help="list topics")
    delete = topic_sub.add_parser("delete", help="delete a topic")
    delete.add_argument("topic")

    produce = sub.add_parser("produce", help="send messages to a topic")
    produce.add_argument("topic")
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path,
                        help="one message per line (e.g. JSON lines); - for stdin")
    source.add_argument("--value", action="append", help="a message (repeatable)")
    produce.add_argument("--key-field", help="for JSON lines: use this field as the key")
    produce.add_argument("--key", help="the same key for every message")

    consume = sub.add_parser("consume", help="print messages from a topic")
    consume.add_argument("topic")
    consume.add_argument("--from-beginning", action="store_true")
    consume.add_argument("--limit", type=int, help="stop after this many messages")
    consume.add_argument("--timeout", type=float, default=5.0,
                         help="stop after this many seconds without a message (default 5)")
    consume.add_argument("--keys", action="store_true", help="print KEY<TAB>VALUE")
    consume.add_argument("--headers", action="store_true", help="print headers as JSON too")


def connection(cluster: Any, client_info: Any) -> dict[str, Any]:
    """kafka-python settings for the broker: the configured cluster, else the platform's."""
    value = cluster.bootstrap or client_info().get("broker")
    if not value:
        raise PlatformError("no Kafka broker: start the platform with `sluice up` (it runs one), "
                            "or set SLUICE_KAFKA_BOOTSTRAP=host:port")
    servers = [part.strip() for part in str(value).split(",") if part.strip()]
    return {"bootstrap_servers": servers, "client_id": "sluice-cli", **cluster.security}


def cmd_topics(args: argparse.Namespace, kafka: dict[str, Any]) -> int:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    admin = KafkaAdminClient(**kafka)
    try:
        if args.topics_command == "create":
            if args.partitions < 1:
                raise SpecError(f"--partitions must be at least 1 (got {args.partitions})")
            try:
                admin.create_topics([NewTopic(args.topic, args.partitions, 1)])
            except TopicAlreadyExistsError:
                raise PlatformError(f"topic {args.topic!r} already exists") from None
            except KafkaError as exc:
                raise PlatformError(f"cannot create topic {args.topic!r}: {exc}") from None
            print(f"topic {args.topic} created with {args.partitions} partition(s)")
        elif args.topics_command == "list":
            for name in sorted(admin.list_topics()):
                print(name)
        else:
            admin.delete_topics([args.topic])
            print(f"topic {args.topic} deleted")
    finally:
        admin.close()
    return 0


def _lines(path: Path) -> Iterator[bytes]:
    if str(path) == "-":
        yield from sys.stdin.buffer
        return
    if not path.exists():
        raise SpecError(f"{path}: no such file")
    with path.open("rb") as source:
        yield from source


def cmd_produce(args: argparse.Namespace, kafka: dict[str, Any]) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(linger_ms=5, acks="all", **kafka)
    started = time.monotonic()
    count = 0
    values = (v.encode() for v in args.value) if args.value else _lines(args.file)
    try:
        for number, raw in enumerate(values, 1):
            value = raw.rstrip(b"\r\n")
            if not value:
                continue
            key = args.key.encode() if args.key else None
            if args.key_field:
                try:
                    key = str(json.loads(value)[args.key_field]).encode()
                except (ValueError, KeyError, TypeError):
                    raise SpecError(f"line {number}: no JSON field {args.key_field!r} for the key"
                                    ) from None
            producer.send(args.topic, value=value, key=key)
            count += 1
            if count % 50_000 == 0:
                print(f"  {count} sent...", file=sys.stderr, flush=True)
        producer.flush()
    finally:
        producer.close()
    print(f"produced {count} message(s) to {args.topic} in {time.monotonic() - started:.2f}s",
          file=sys.stderr)
    return 0


def cmd_consume(args: argparse.Namespace, kafka: dict[str, Any]) -> int:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, **kafka)
    try:
        partitions = consumer.partitions_for_topic(args.topic)
        deadline = time.monotonic() + args.timeout
        while not partitions and time.monotonic() < deadline:  # a function may create it soon
            time.sleep(0.2)
            consumer.topics()  # refreshes the metadata
            partitions = consumer.partitions_for_topic(args.topic)
        if not partitions:
            raise PlatformError(f"no topic named {args.topic!r} after waiting {args.timeout:g}s "
                                "(see `sluice topics list`)")
        assigned = [TopicPartition(args.topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if args.from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
        seen = 0
        idle_since = time.monotonic()
        while args.limit is None or seen < args.limit:
            batch = consumer.poll(timeout_ms=200)
            if not batch:
                if time.monotonic() - idle_since > args.timeout:
                    break
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for record in records:
                    _print_record(record, args)
                    seen += 1
                    if args.limit is not None and seen >= args.limit:
                        return 0
    finally:
        with contextlib.suppress(Exception):
            consumer.close(autocommit=False)
    return 0


def _print_record(record: Any, args: argparse.Namespace) -> None:
    value = (record.value or b"").decode("utf-8", "replace")
    parts = []
    if args.keys:
        parts.append((record.key or b"").decode("utf-8", "replace"))
    parts.append(value)
    if args.headers:
        parts.append(json.dumps({k: v.decode("utf-8", "replace") for k, v in record.headers or []}))
    print("\t".join(parts), flush=True)
