"""The pipeline end to end: events/s through enrich -> score, consumer lag, and where the time
goes; training throughput. Against a bare Kafka relay measured in the same run.

A fresh platform deploys functions/pipeline.yaml without its streaming functions first (the
setup: the history, etl, the first model). N live transactions are then published to
``transactions`` as a backlog (encoded beforehand: the generator is not timed, and the
publisher does not compete with the workers), and enrich and serve are deployed to drain it
into ``fraud-predictions``:

- sustained events/s: the events over the time from the first prediction to the last, with
  enrich (2 workers) and serve (1 worker) on this machine;
- consumer lag of enrich and serve, sampled every second while they drain (max and series);
- CPU time per event of each function, and the share of the workers' CPU time spent in the
  model's forward passes (serve's ``sluice_batch_compute_seconds``); the rest is features,
  the store, JSON, Kafka and batching;
- baseline, the same way: the same backlog through two bare kafka-python relays (consume,
  JSON decode and encode, produce, commit; no features, no model): the transport's ceiling;
- training: the train job's samples/s on the CPU (its last epoch), from the registry.

    python bench/pipeline_stream.py [--events 1000000] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from platform_process import Platform
from recording import record  # noqa: E402 - bench/ is on sys.path when run as a script

from sluice.functions.transactions import generate
from sluice.serving.artifacts import open_store
from sluice.serving.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "functions" / "pipeline.yaml"


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def encoded_events(count: int, days: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of the live days after the pipeline's history (days 10...)."""
    out = []
    for day in generate(count, days, seed=42, cards=500, first_day=10):
        out.extend((t.card.encode(), orjson.dumps(t.to_json())) for t in day)
    return out


def publish(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024,
                             acks=1, max_request_size=4 * 1024 * 1024)
    began = time.monotonic()
    for key, value in events:
        producer.send(topic, value, key=key)
    producer.flush()
    producer.close()
    return time.monotonic() - began


def count_until(bootstrap: str, topic: str, expect: int, start: dict[int, int],
                timeout: float) -> tuple[float, float]:
    """Reads ``topic`` from the offsets in ``start`` until ``expect`` records came; the
    monotonic times of the first and the last."""
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in sorted(start)]
    consumer.assign(parts)
    for tp in parts:
        consumer.seek(tp, start[tp.partition])
    seen, first, last, deadline = 0, 0.0, 0.0, time.monotonic() + timeout
    while seen < expect and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=5000).values():
            seen += len(records)
            last = time.monotonic()
            first = first or last
    consumer.close()
    if seen < expect:
        raise RuntimeError(f"only {seen} of {expect} records reached {topic} in {timeout:.0f}s")
    return first, last


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    offsets = {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    consumer.close()
    return offsets


def relay(bootstrap: str, source: str, sink: str, group: str, stop: threading.Event) -> None:
    """The bare baseline hop: consume, decode and re-encode JSON, produce, commit."""
    consumer = KafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=500, session_timeout_ms=6000,
                             heartbeat_interval_ms=1000)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=200, max_records=500)
        for records in batches.values():
            for r in records:
                producer.send(sink, orjson.dumps(orjson.loads(r.value)), key=r.key)
        if batches:
            producer.flush()
            consumer.commit()
    consumer.close()
    producer.close()


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def metric_sum(endpoint: str, name: str) -> float:
    page = urllib.request.urlopen(f"{endpoint}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    say(f"encoding {args.events:,} live events ...")
    events = encoded_events(args.events, args.days)
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        platform = Platform(Path(tmp) / "home")
        try:
            say("deploying the pipeline's jobs (history, etl, first model) ...")
            spec = yaml.safe_load(PIPELINE.read_text())
            for name in ("enrich", "serve"):
                del spec["functions"][name]
            (Path(tmp) / "jobs.yaml").write_text(yaml.safe_dump(spec))
            platform.run("pipeline", "deploy", str(Path(tmp) / "jobs.yaml"))
            info = json.loads(urllib.request.urlopen(
                f"http://127.0.0.1:{platform.port}/api/info").read())
            bootstrap = info["broker"]
            say(f"publishing the backlog: {len(events):,} events ...")
            published = publish(bootstrap, "transactions", events)
            start = ends(bootstrap, "fraud-predictions")
            say("deploying enrich and serve, which drain it ...")
            platform.run("pipeline", "deploy", str(PIPELINE))

            def status(name: str) -> dict:
                return json.loads(platform.run("get", name, "-o", "json"))["status"]

            enrich_pids, serve_pids = status("enrich")["pids"], status("serve")["pids"]
            pids = enrich_pids + serve_pids
            endpoint = status("serve")["endpoint"]
            cpu0 = cpu_seconds(pids)
            enrich_cpu0 = cpu_seconds(enrich_pids)
            compute0 = metric_sum(endpoint, "sluice_batch_compute_seconds_sum")
            lags: list[tuple[float, int, int]] = []
            stop = threading.Event()
            began = time.monotonic()

            def sample() -> None:
                while not stop.wait(1.0):
                    try:
                        e, s = status("enrich").get("lag") or {}, status("serve").get("lag") or {}
                    except Exception:
                        continue
                    lags.append((time.monotonic() - began, sum(v for v in e.values() if v > 0),
                                 sum(v for v in s.values() if v > 0)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            first, last = count_until(bootstrap, "fraud-predictions", len(events), start,
                                      timeout=3600)
            stop.set()
            sampler.join()
            seconds = last - first
            cpu = cpu_seconds(pids) - cpu0
            enrich_cpu = cpu_seconds(enrich_pids) - enrich_cpu0
            compute = metric_sum(endpoint, "sluice_batch_compute_seconds_sum") - compute0
            rate = len(events) / seconds
            say(f"sluice: {rate:,.0f} events/s; measuring the bare relay ...")

            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            admin.create_topics([NewTopic(t, 4, 1) for t in ("bare-in", "bare-mid", "bare-out")])
            admin.close()
            publish(bootstrap, "bare-in", events)  # the same backlog
            relay_stop = threading.Event()
            hops = [threading.Thread(target=relay, args=(bootstrap, a, b, f"bare-{a}", relay_stop),
                                     daemon=True)
                    for a, b in (("bare-in", "bare-mid"), ("bare-mid", "bare-out"))]
            for hop in hops:
                hop.start()
            bare_first, bare_last = count_until(bootstrap, "bare-out", len(events),
                                                {p: 0 for p in range(4)}, timeout=3600)
            relay_stop.set()
            bare_rate = len(events) / (bare_last - bare_first)

            store = open_store(str(Path(tmp) / "home" / "artifacts"))
            model = ModelRegistry(store).resolve("fraud@production")
            train_rate = float(model.metrics.get("samples_per_s", 0.0))
        finally:
            platform.stop()

    max_enrich = max((e for _, e, _ in lags), default=0)
    max_serve = max((s for _, _, s in lags), default=0)
    series = ", ".join(f"{t:.0f}s: {e + s:,}" for t, e, s in lags[::max(1, len(lags) // 10)])
    table = [
        "| measurement | value |", "| --- | ---: |",
        f"| live events | {len(events):,} (published in {published:.1f} s) |",
        f"| sustained events/s, draining the backlog (first to last prediction) | {rate:,.0f} |",
        f"| bare 2-hop kafka-python relay (JSON in and out), same backlog | {bare_rate:,.0f} |",
        f"| sluice / bare relay | {rate / bare_rate:.2f}x |",
        f"| max consumer lag: enrich / serve | {max_enrich:,} / {max_serve:,} |",
        f"| model forward passes, share of the workers' CPU time | "
        f"{compute / cpu * 100:.1f}% ({compute:.1f} s of {cpu:.1f} s) |",
        f"| CPU time per event: enrich (2 workers) / serve (1 worker) | "
        f"{enrich_cpu / len(events) * 1e6:.0f} / {(cpu - enrich_cpu) / len(events) * 1e6:.0f} us |",
        f"| training on the CPU (the first model's last epoch) | {train_rate:,.0f} samples/s |",
    ]
    summary = (f"Lag while draining (enrich + serve, seconds after deploy): {series}.\n\n"
               f"sluice moves {rate:,.0f} events/s through enrich (2 workers, SQLite feature "
               f"store) and score (1 serving worker) end to end, {rate / bare_rate:.2f}x a bare "
               f"two-hop relay that does no work; the model's forward passes are "
               f"{compute / cpu * 100:.1f}% of the workers' CPU time, the rest is features, "
               "JSON, Kafka and batching.")
    for line in table:
        print(line)
    print(summary)
    if args.record:
        record("Pipeline stream, end to end",
               "embedded Tansu broker, functions/pipeline.yaml on one platform; "
               f"{len(events):,} live events over {args.days} days",
               f"python bench/pipeline_stream.py --events {args.events} --record", table,
               summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
