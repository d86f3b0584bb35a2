"""The pipeline's batch functions as jobs on a real daemon: generate -> etl -> train, each
through `sluice run`, reading and writing the platform's artifact store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sluice.functions import layout
from sluice.functions.features import FEATURES
from sluice.platform.broker import free_port
from sluice.serving.artifacts import LocalStore
from sluice.serving.registry import ModelRegistry
from tests.conftest import ROOT, Daemon

pytestmark = pytest.mark.slow

JOBS = {
    "generate": {"params": {"events": 12_000, "days": 5, "seed": 42, "fraud_rate": 0.01,
                            "bad_rate": 0.005}},
    "etl": {},
    "train": {"params": {"epochs": 2, "lr": 0.003, "width": 32, "seed": 0, "holdout_days": 2,
                         "promote": "auto"}},
}


def deploy(daemon: Daemon, tmp_path: Path) -> None:
    for name, extra in JOBS.items():
        spec = {"name": name, "kind": "job", "handler": f"sluice.functions.{name}:handler",
                "timeout": 300, **extra}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        daemon.cli("deploy", str(tmp_path / f"{name}.yaml"))


def last_run(daemon: Daemon, name: str) -> dict:
    return json.loads(daemon.cli("runs", name, "--limit", "1", "-o", "json").stdout)[0]


def test_generate_etl_train_run_as_jobs_against_the_platform_store(daemon: Daemon, tmp_path):
    deploy(daemon, tmp_path)
    daemon.cli("run", "generate")
    generated = last_run(daemon, "generate")
    assert generated["status"] == "succeeded"
    assert generated["outputs"]["result"]["events"] == 12_000

    result = daemon.cli("run", "etl")
    assert "5/5" in result.stderr  # progress per raw file
    etl = last_run(daemon, "etl")["outputs"]["result"]
    assert etl["lines"] == etl["clean_rows"] + etl["rejected_rows"]
    assert etl["rejected_rows"] == generated["outputs"]["result"]["bad_lines"] > 0

    result = daemon.cli("run", "train", "--param", "epochs=3")
    assert "held-out AUC" in result.stderr
    run = last_run(daemon, "train")
    outcome = run["outputs"]["result"]
    assert outcome["model"] == "fraud:1" and outcome["promoted"] is True
    assert outcome["auc"] > outcome["baseline_auc"] + 0.1
    assert run["outputs"]["metrics"]["epoch"] == 3  # per-epoch metrics reached the run

    store = LocalStore(daemon.home / "artifacts")  # the platform's default store
    assert store.list(layout.FEATURES)
    assert ModelRegistry(store).resolve("fraud@production").version == 1

    # a worse candidate (almost untrained) is registered but not promoted
    daemon.cli("run", "train", "--param", "epochs=1", "--param", "lr=0.00001")
    outcome = last_run(daemon, "train")["outputs"]["result"]
    assert outcome["model"] == "fraud:2" and outcome["promoted"] is False
    assert "not better than production" in outcome["decision"]
    assert ModelRegistry(store).aliases("fraud") == {"candidate": 2, "production": 1}


def test_enrich_streams_features_that_match_the_offline_replay(daemon: Daemon, tmp_path):
    from sluice.functions.feature_sqlite import SqliteFeatureStore
    from sluice.functions.offline import replay
    from sluice.functions.transactions import generate
    from tests.e2e.test_kafka import FAST_GROUP, broker_of, create_topic, produce, read_all

    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "tx", 4)
    events = [txn for day in generate(events=3_000, days=2, seed=8) for txn in day]
    messages: list[tuple[str | None, object]] = [(t.card, t.to_json()) for t in events]
    messages.insert(100, ("c0001", {"id": "broken", "seq": 1}))  # missing most fields
    produce(bootstrap, "tx", messages)
    db = tmp_path / "features.db"
    spec = {"name": "enrich", "kind": "http", "handler": "sluice.functions.enrich:handler",
            "env": {"SLUICE_FEATURE_STORE": str(db)}, "workers": 2,
            "triggers": {"events": {
                "kind": "kafka", "topics": ["tx"], "output": "tx-enriched", "batch": True,
                "content_type": "application/json", "max_batch_size": 200,
                **{k: int(v) for k, v in (p.split("=") for p in FAST_GROUP.split(","))}}}}
    (tmp_path / "enrich.yaml").write_text(yaml.safe_dump(spec))
    daemon.cli("deploy", str(tmp_path / "enrich.yaml"))

    out = {}
    for record in read_all(bootstrap, "tx-enriched", len(events), timeout=90):
        value = json.loads(record.value)
        out[value["id"]] = (record.key, value)
    table, final = replay(events)
    assert len(out) == len(events)
    for row in table.to_pylist():
        key, value = out[row["id"]]
        assert key == row["card"].encode()  # keyed by card, as the input
        assert value["x"] == [row[name] for name in FEATURES]
    store = SqliteFeatureStore(db)
    assert store.get(final) == final  # the online store holds the offline aggregates
    store.close()
    [dead] = read_all(bootstrap, "enrich.dead-letter", 1)
    assert b"missing field(s): card, ts, amount" in dict(dead.headers)["x-sluice-error"]


def small_pipeline(tmp_path: Path, **generate: object) -> Path:
    """functions/pipeline.yaml with less history and a quicker training."""
    data = yaml.safe_load((ROOT / "functions" / "pipeline.yaml").read_text())
    data["functions"]["generate"]["params"].update(events=4_000, days=4, **generate)
    data["functions"]["train"]["params"].update(epochs=2, holdout_days=1)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_pipeline_deploy_is_idempotent_and_status_shows_each_function(daemon: Daemon, tmp_path):
    path = small_pipeline(tmp_path)
    before = json.loads(daemon.cli("pipeline", "status", str(path), "-o", "json").stdout)
    assert {row["state"] for row in before["functions"]} == {"not deployed"}
    first = daemon.cli("pipeline", "deploy", str(path), "-o", "json")
    report = json.loads(first.stdout)
    assert report["topics"] == {"transactions": "created (4 partitions)",
                                "transactions-enriched": "created (4 partitions)",
                                "fraud-predictions": "created (4 partitions)"}
    assert all(report["setup"][name].startswith("succeeded") for name in
               ("generate", "etl", "train"))
    assert report["functions"]["serve"].startswith("ready")
    assert "epoch 2/2" in first.stderr  # the setup runs' progress was shown

    again = json.loads(daemon.cli("pipeline", "deploy", str(path), "-o", "json").stdout)
    assert set(again["functions"].values()) == {"unchanged"}
    assert set(again["setup"].values()) == {"done before (skipped)"}
    assert set(again["topics"].values()) == {"exists"}

    rows = {row["name"]: row for row in json.loads(
        daemon.cli("pipeline", "status", str(path), "-o", "json").stdout)["functions"]}
    assert rows["serve"]["state"] == "ready" and rows["serve"]["model"] == "fraud:1"
    assert rows["enrich"]["lag"] == 0 and rows["enrich"]["workers"] == "2/2"
    assert rows["train"]["last_run"]["status"] == "succeeded"
    assert rows["train"]["last_run"]["result"]["promoted"] is True
    text = daemon.cli("pipeline", "status", str(path)).stdout
    assert "serving fraud:1" in text and "-> fraud:1 AUC" in text


def test_make_run_runs_the_pipeline_end_to_end(tmp_path):
    """The main job, as `make run ARGS=--once` runs it, on a small stream (about a minute)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SLUICE_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "sluice.functions.demo", "--once", "--events", "3000",
         "--requests", "50", "--home", str(tmp_path / "demo"), "--port", str(free_port()),
         "--file", str(small_pipeline(tmp_path))],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "enriched and scored: 3,000 of 3,000" in out
    live_auc = float(re.search(r"AUC of the live scores: ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    assert live_auc > 0.9  # the live features are the ones the model was trained on
    assert re.search(r"fraud:1  AUC [\d.]+ .*\[production\]|fraud:1  AUC", out)
    assert "fraud:2" in out and ("promoted" in out or "production unchanged" in out)
    assert re.search(r"50 V2 requests one by one: p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert "sluice pipeline status" in out  # where to look next


@pytest.mark.timeout(300)
def test_a_platform_restart_mid_stream_loses_no_event(tmp_path):
    """The platform dies (SIGKILL) while the stream flows and its workers are still joining
    their groups; restarted, it resumes from the committed offsets: every event is scored.
    (Workers that stopped during a join once wedged Tansu's group for good: see the Kafka
    trigger's _no_leave_while_joining.)"""
    from sluice.functions.stream import Predictions, Scored, publish
    from sluice.functions.transactions import generate
    from sluice.platform.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=free_port()).start()  # outlives the platform
    daemon = Daemon(home=tmp_path / "home", port=free_port())
    os.environ["SLUICE_KAFKA_BOOTSTRAP"] = broker.bootstrap
    try:
        daemon.start()
        daemon.cli("pipeline", "deploy", str(small_pipeline(tmp_path)))
        live = [t for day in generate(4_000, 1, 42, cards=500, first_day=4) for t in day]
        predictions = Predictions([broker.bootstrap], "fraud-predictions")
        publish([broker.bootstrap], "transactions", live[:2_000])
        time.sleep(1.0)  # some of it is in flight
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGKILL)  # the platform dies; its workers follow
        daemon.process.wait()
        publish([broker.bootstrap], "transactions", live[2_000:])  # the stream goes on
        daemon.start()  # restores the functions; their groups resume from the commits
        scored = predictions.collect({t.id for t in live}, Scored(), time.monotonic() + 150)
        predictions.close()
        assert len(scored.labels) == len(live)
    finally:
        os.environ.pop("SLUICE_KAFKA_BOOTSTRAP", None)
        daemon.stop()
        broker.stop()
