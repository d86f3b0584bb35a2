"""The Kafka trigger against a real broker (the embedded Tansu), through the platform."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import TopicPartition

from sluice.platform.broker import EmbeddedBroker
from tests.conftest import HANDLERS, Daemon, free_port

pytestmark = pytest.mark.slow

K = HANDLERS / "kafka_handlers.py"
FAST_GROUP = "session_timeout_ms=6000,heartbeat_interval_ms=1000,max_poll_interval_ms=10000"


def broker_of(daemon: Daemon) -> str:
    return str(httpx.get(daemon.api + "/api/info").json()["broker"])


def create_topic(bootstrap: str, name: str, partitions: int, exist_ok: bool = False) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    except TopicAlreadyExistsError:
        if not exist_ok:
            raise
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, messages: list[tuple[str | None, Any]],
            partition: int | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for key, value in messages:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        producer.send(topic, value=raw, key=key.encode() if key is not None else None,
                      partition=partition)
    producer.flush()
    producer.close()


def read_all(bootstrap: str, topic: str, expect: int, timeout: float = 60.0) -> list[Any]:
    """Every record of the topic, waiting until at least ``expect`` arrived. Reading goes on
    past ``expect`` records until a poll finds nothing more: with redelivered duplicates, the
    first ``expect`` records read can miss a partition's tail. (Not until the end offsets:
    Tansu's can lag behind the records a fetch returns.)"""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    try:
        while not consumer.partitions_for_topic(topic):
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            time.sleep(0.2)
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        while time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500)
            for batch in polled.values():
                records.extend(batch)
            if len(records) >= expect and not polled:
                break
        return records
    finally:
        consumer.close(autocommit=False)


def deploy_kafka(daemon: Daemon, name: str, handler: str, options: str, *extra: str) -> dict:
    return daemon.deploy(K, name, "--handler", handler, "--trigger",
                         f"kafka:{options},content_type=application/json,{FAST_GROUP}", *extra)


def test_round_trip_keeps_partition_order_and_input_keys(daemon: Daemon):
    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "events", 4)
    deploy_kafka(daemon, "scorer", "score", "topic=events,group=scorers,output=scores")
    messages = [(f"card-{i % 8}", {"seq": i}) for i in range(400)]
    produce(bootstrap, "events", messages)
    out = read_all(bootstrap, "scores", 400)
    results = [json.loads(r.value) for r in out]
    assert sorted(r["seq"] for r in results) == list(range(400))
    assert all(r.key.decode() == json.loads(r.value)["key"] for r in out)  # keyed by input key
    first = results[0]
    assert first["topic"] == first["path"] == "events" and first["trigger"] == "kafka-cluster"
    by_key: dict[str, list[int]] = {}
    for r in results:
        by_key.setdefault(r["key"], []).append(r["seq"])
    assert all(seqs == sorted(seqs) for seqs in by_key.values())  # order within a partition
    status = daemon.cli("get", "scorer").stdout
    assert "lag:       events/0" in status


def test_batch_handler_gets_lists(daemon: Daemon):
    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "batched", 1)
    produce(bootstrap, "batched", [(str(i), {"seq": i}) for i in range(200)])
    deploy_kafka(daemon, "batcher", "score_batch",
                 "topic=batched,output=batched-out,batch=true,max_batch_size=50")
    results = [json.loads(r.value) for r in read_all(bootstrap, "batched-out", 200)]
    assert sorted(r["seq"] for r in results) == list(range(200))
    assert max(r["batch"] for r in results) > 1


def test_handler_may_set_the_output_key(daemon: Daemon):
    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "in-rekey", 1)
    deploy_kafka(daemon, "rekeyer", "rekey", "topic=in-rekey,output=out-rekey")
    produce(bootstrap, "in-rekey", [("orig", {"seq": 1})])
    out = read_all(bootstrap, "out-rekey", 1)
    assert out[0].key == b"fixed"


def test_failures_retry_then_dead_letter_without_stalling(daemon: Daemon):
    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "risky", 1)
    deploy_kafka(daemon, "risky", "score",
                 "topic=risky,output=risky-out,dead_letter=risky-dlq,retries=2,"
                 "retry_backoff_ms=10")
    messages: list[tuple[str | None, Any]] = [(str(i), {"seq": i}) for i in range(10)]
    messages[3] = ("3", {"seq": 3, "poison": True})
    messages.append(("bad", b"{not json"))
    produce(bootstrap, "risky", messages)
    dead = read_all(bootstrap, "risky-dlq", 2)
    headers = [dict(r.headers) for r in dead]
    poison = next(h for h, r in zip(headers, dead, strict=True) if r.key == b"3")
    assert b"cannot score message 3" in poison["x-sluice-error"]
    assert poison["x-sluice-attempts"] == b"3"  # first try + 2 retries
    assert poison["x-sluice-source"] == b"risky/0/3"
    bad = next(h for h, r in zip(headers, dead, strict=True) if r.key == b"bad")
    assert b"not valid JSON" in bad["x-sluice-error"]
    passed = [json.loads(r.value)["seq"] for r in read_all(bootstrap, "risky-out", 9)]
    assert sorted(passed) == [0, 1, 2, 4, 5, 6, 7, 8, 9]  # the poison did not stall the rest


def test_two_workers_share_four_partitions(daemon: Daemon):
    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "shared", 4)
    deploy_kafka(daemon, "sharers", "score", "topic=shared,output=shared-out", "--workers", "2")
    # warm up until both workers answer, so the group is settled before the measured run
    deadline = time.monotonic() + 60
    warm = 0
    while True:
        produce(bootstrap, "shared", [(f"w{warm}-{p}", {"seq": -1}) for p in range(8)])
        warm += 1
        time.sleep(1)
        pids = {json.loads(r.value)["pid"] for r in read_all(bootstrap, "shared-out", 1, 5)}
        if len(pids) == 2:
            break
        assert time.monotonic() < deadline, "the second worker never got partitions"
    produce(bootstrap, "shared", [(f"k{i}", {"seq": i}) for i in range(400)])
    results = [json.loads(r.value) for r in read_all(bootstrap, "shared-out", 400 + 8 * warm)]
    results = [r for r in results if r["seq"] >= 0]
    assert sorted(r["seq"] for r in results) == list(range(400))
    partitions_by_pid: dict[int, set[int]] = {}
    for r in results:
        partitions_by_pid.setdefault(r["pid"], set()).add(r["partition"])
    assert len(partitions_by_pid) == 2, partitions_by_pid
    first, second = partitions_by_pid.values()
    assert not first & second  # a partition belongs to one worker
    assert first | second == {0, 1, 2, 3}


def where_missing(daemon: Daemon, bootstrap: str, topic: str, output: str, group: str,
                  missing: set[int]) -> str:
    """For a failure message: where the lost sequence numbers sit in the input topic, against
    the group's committed offsets; the output partitions' offsets (gaps or repeats would be
    the broker's); and the function's last log lines."""
    found: dict[int, list[int]] = {}
    for r in read_all(bootstrap, topic, 1 << 30, timeout=15):
        if json.loads(r.value)["seq"] in missing:
            found.setdefault(r.partition, []).append(r.offset)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        committed = {tp.partition: meta.offset
                     for tp, meta in admin.list_group_offsets(group)[group].items()}
    finally:
        admin.close()
    spans = {p: (min(o), max(o), len(o)) for p, o in sorted(found.items())}
    out: dict[int, list[int]] = {}
    seen = set()
    for r in read_all(bootstrap, output, 1 << 30, timeout=15):
        out.setdefault(r.partition, []).append(r.offset)
        seen.add(json.loads(r.value)["seq"])
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = consumer.end_offsets([TopicPartition(output, p) for p in out])
    finally:
        consumer.close()
    holes = {p: (ends[TopicPartition(output, p)], len(o), len(set(o)),
                 [(a, b) for a, b in zip(o, o[1:], strict=False) if b != a + 1][:5])
             for p, o in sorted(out.items())}
    late = len(missing & seen)  # there after all, read for 15 s
    logs = daemon.cli("logs", group, "--tail", "60", check=False).stdout
    return (f"{len(missing)} lost (seq {min(missing)}..{max(missing)}); in the input topic "
            f"(partition: first offset, last offset, count): {spans}; the group's committed "
            f"offsets: {committed}; output partitions (end offset, records, distinct "
            f"offsets, first jumps): {holes}; found by a 15 s read: {late}\n{logs}")


@pytest.mark.timeout(300)  # on a loaded 2-core machine the redelivered tail takes a while
def test_kill_9_mid_run_loses_nothing(daemon: Daemon):
    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "stream", 4)
    deploy_kafka(daemon, "survivor", "score", "topic=stream,output=stream-out,max_batch_size=200")
    total = 20_000
    produce(bootstrap, "stream", [(f"key-{i}", {"seq": i}) for i in range(total)])
    # kill the worker once it is part way through
    deadline = time.monotonic() + 60
    while True:
        out = read_all(bootstrap, "stream-out", 1, timeout=10)
        if out:
            pid = json.loads(out[0].value)["pid"]
            break
        assert time.monotonic() < deadline
    os.kill(pid, signal.SIGKILL)
    # redelivered messages come out twice, so a count of records can reach the total while
    # the stream's tail is still to come: wait for every sequence number, not for a count
    deadline = time.monotonic() + 180  # (within the test's own time limit, with a message)
    while True:
        results = read_all(bootstrap, "stream-out", total, timeout=20)
        seqs = Counter(json.loads(r.value)["seq"] for r in results)
        missing = set(range(total)) - set(seqs)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not missing, where_missing(daemon, bootstrap, "stream", "stream-out", "survivor",
                                     missing)
    duplicates = sum(c - 1 for c in seqs.values())
    print(f"kill -9 mid-run: 0 lost, {duplicates} duplicate(s) out of {total}")
    status = httpx.get(f"{daemon.api}/api/functions/survivor").json()["status"]
    assert status["restarts"] >= 1


@pytest.mark.xfail(strict=False, reason=(
    "known bug, about 1 run in 5: when the in-memory broker comes back empty and the topic is "
    "recreated while the worker's consumer rejoins its group, kafka-python 3.0.12 against "
    "Tansu logs 'Elected group leader -- performing partition assignments' and never gets an "
    "assignment, so the worker consumes nothing (no error, no restart); a stalled-group "
    "watchdog in the Kafka trigger is the fix, not done yet"))
def test_processing_resumes_after_broker_restart_without_worker_restart(tmp_path):
    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    daemon = Daemon(home=tmp_path / "home", port=free_port())
    os.environ["SLUICE_KAFKA_BOOTSTRAP"] = broker.bootstrap
    try:
        daemon.start()
    finally:
        del os.environ["SLUICE_KAFKA_BOOTSTRAP"]
    try:
        create_topic(broker.bootstrap, "flaky", 1)
        deploy_kafka(daemon, "resilient", "score", "topic=flaky,output=flaky-out")
        produce(broker.bootstrap, "flaky", [("a", {"seq": 1})])
        assert len(read_all(broker.bootstrap, "flaky-out", 1)) == 1
        broker.stop()
        deadline = time.monotonic() + 30
        while True:  # the platform notices: the function is degraded, its worker still up
            status = httpx.get(f"{daemon.api}/api/functions/resilient",
                               timeout=30).json()["status"]
            if status["state"] == "degraded":
                assert "kafka broker unreachable" in status["message"]
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        broker = EmbeddedBroker(port=port).start()  # in memory: topics are gone
        # the reconnecting worker's consumer and producer may have auto-created them already
        create_topic(broker.bootstrap, "flaky", 1, exist_ok=True)
        create_topic(broker.bootstrap, "flaky-out", 1, exist_ok=True)
        # The in-memory broker lost its offsets: a consumer that kept its position (1) skips
        # the new topic's offset 0, one that rejoined after the topic came back reads it. Either
        # way the worker must go on consuming, with no restart: the second message shows it.
        # Both go to partition 0, the one the worker held: if something recreated the topic
        # with the broker's default partition count first, the worker sees the new partitions
        # only at its next metadata refresh (metadata_max_age_ms, minutes).
        produce(broker.bootstrap, "flaky", [("b", {"seq": 2}), ("c", {"seq": 3})], partition=0)
        deadline = time.monotonic() + 60
        while True:
            seqs = [json.loads(r.value)["seq"]
                    for r in read_all(broker.bootstrap, "flaky-out", 1, timeout=60)]
            if 3 in seqs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert seqs in ([2, 3], [3]), daemon.cli("logs", "resilient", "--tail", "30").stdout
        deadline = time.monotonic() + 20
        while True:  # health is checked every 2 s: the state follows the connections shortly
            status = httpx.get(f"{daemon.api}/api/functions/resilient").json()["status"]
            if status["state"] == "ready" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status["restarts"] == 0
        assert status["state"] == "ready", daemon.cli("logs", "resilient", "--tail", "30").stdout
    finally:
        daemon.stop()
        broker.stop()


def test_explicit_ack_mode_commits_only_acknowledged_offsets(daemon: Daemon):
    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "acked", 1)
    deploy_kafka(daemon, "acker", "ack_some", "topic=acked,output=acked-out,explicit_ack=true")
    produce(bootstrap, "acked", [(str(i), {"seq": i}) for i in range(5)])
    assert len(read_all(bootstrap, "acked-out", 5)) == 5  # all handled ...
    deadline = time.monotonic() + 30
    while True:  # ... but the commit stops at the first unacknowledged offset (3)
        lag = httpx.get(f"{daemon.api}/api/functions/acker", timeout=30).json()["status"]["lag"]
        if lag.get("acked/0") == 2:
            break
        assert time.monotonic() < deadline, lag
        time.sleep(0.5)
    time.sleep(2)
    lag = httpx.get(f"{daemon.api}/api/functions/acker", timeout=30).json()["status"]["lag"]
    assert lag["acked/0"] == 2  # and stays there
