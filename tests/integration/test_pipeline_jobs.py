"""The pipeline's batch side on real stores: the etl job on a local folder and on S3 (moto's
server through boto3), the SQLite online store against the offline replay, and the train job
registering, scoring and promoting models."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pytest
import torch

from sluice.functions import etl, layout, offline
from sluice.functions.feature_sqlite import SqliteFeatureStore
from sluice.functions.features import FEATURES, enrich
from sluice.functions.generate import write_raw_files
from sluice.functions.train import TrainParams, train
from sluice.functions.transactions import CATEGORIES, Txn
from sluice.serving.artifacts import LocalStore
from sluice.serving.registry import ModelRegistry


def test_etl_keeps_every_line_as_a_clean_row_or_a_rejected_one_with_its_reason(store):
    written = write_raw_files(store, events=4_000, days=3, seed=5, bad_rate=0.02)
    report = etl.run(store)
    assert report.files == 3
    rejected = sum(report.rejected.values())
    assert rejected == written["bad_lines"] > 0
    assert report.clean + rejected == report.lines
    assert report.clean == written["events"] - (written["bad_lines"] - report.rejected[
        "duplicate id"])
    assert set(report.rejected) >= {"duplicate id", "not valid JSON"}

    aside = [orjson.loads(line) for key in store.list(layout.REJECTED)
             for line in store.get_bytes(key).splitlines()]
    assert len(aside) == rejected
    assert all(row["reason"] and row["raw"] and row["line"] >= 1 for row in aside)

    data = offline.read_days(store, layout.DATASET)
    assert data.num_rows == report.clean == len(set(data["id"].to_pylist()))
    assert set(pc.unique(data["category"]).to_pylist()) <= set(CATEGORIES)
    assert all(len(c) == 2 and c.isupper() for c in pc.unique(data["country"]).to_pylist())
    assert len(offline.partition_keys(store, layout.DATASET)) == 3
    features = offline.read_days(store, layout.FEATURES)
    assert features.num_rows == report.clean and features.column_names[5:] == list(FEATURES)

    before = offline.fingerprint(store, layout.FEATURES)
    etl.run(store)  # a second run rebuilds the same thing
    assert offline.fingerprint(store, layout.FEATURES) == before


def cleaned(tmp_path: Path, **generate: Any) -> LocalStore:
    """A local artifact store with generated raw files put through the etl job."""
    store = LocalStore(tmp_path / "artifacts")
    write_raw_files(store, **generate)
    etl.run(store)
    return store


def test_etl_without_raw_files_says_where_it_looked(tmp_path):
    with pytest.raises(Exception, match="no raw files under 'raw/transactions/'"):
        etl.run(LocalStore(tmp_path / "empty"))


def clean_transactions(store) -> list[Txn]:  # type: ignore[no-untyped-def]
    table = offline.read_days(store, layout.DATASET)
    return [Txn(**row) for row in table.to_pylist()]


def test_online_store_values_equal_the_offline_aggregates_over_the_same_events(tmp_path):
    store = cleaned(tmp_path, events=6_000, days=2, seed=11)
    events = clean_transactions(store)
    online = SqliteFeatureStore(tmp_path / "features.db")
    rng = random.Random(3)
    vectors: dict[str, list[float]] = {}
    at = 0
    while at < len(events):  # micro-batches as the enrich function gets them
        batch = events[at:at + rng.randint(1, 300)]
        states = online.get(txn.card for txn in batch)
        for txn, vector in zip(batch, enrich(states, batch), strict=True):
            vectors.setdefault(txn.id, vector)  # the first delivery's features
        online.put(states)
        if rng.random() < 0.1:  # a crash before the commit: the batch comes again
            states = online.get(txn.card for txn in batch)
            enrich(states, batch)
            online.put(states)
        at += len(batch)

    table, final = offline.replay(events)
    assert online.count() == len(final)
    assert online.get(final) == final  # every card, exactly (not approximately)
    for row in table.to_pylist():
        assert vectors[row["id"]] == [row[name] for name in FEATURES]
    online.close()


def test_train_registers_a_model_that_beats_the_baseline_and_refuses_a_worse_one(tmp_path):
    store = cleaned(tmp_path, events=24_000, days=6, seed=21)
    steps: list[str] = []
    first = train(store, TrainParams(epochs=3, seed=1), progress=lambda s, t, m: steps.append(m))
    assert len(steps) == 3 and "held-out AUC" in steps[-1]
    assert first.version == 1 and first.promotion.promote
    assert first.auc > first.baseline_auc + 0.1 and first.auc > 0.9

    registry = ModelRegistry(store)
    record = registry.resolve("fraud@production")
    assert record.version == 1 and record.metrics["auc"] == pytest.approx(first.auc, abs=1e-5)
    assert record.data_fingerprint == offline.fingerprint(store, layout.FEATURES)
    assert record.params["features"] == list(FEATURES)
    assert record.signature["inputs"] == [{"name": "x", "datatype": "FP32", "dims": [10]}]
    exported = torch.export.load(str(registry.fetch(record, tmp_path / "fetched"))).module()
    out = exported(torch.zeros(3, len(FEATURES)))
    assert out.shape == (3, 1) and bool(((out >= 0) & (out <= 1)).all())

    # a barely trained candidate is worse: registered as candidate, not promoted
    worse = train(store, TrainParams(epochs=1, lr=1e-5, width=2, seed=2))
    assert worse.version == 2 and not worse.promotion.promote
    assert worse.promotion.production == pytest.approx(first.auc)
    assert "not better than production" in worse.promotion.reason
    assert registry.aliases("fraud") == {"candidate": 2, "production": 1}


def test_train_says_when_there_is_too_little_history(tmp_path: Path):
    store = cleaned(tmp_path, events=500, days=2, seed=1)
    with pytest.raises(Exception, match="covers 2 day\\(s\\); holding out 2"):
        train(store, TrainParams(holdout_days=2))


def test_a_backfill_never_undoes_what_the_stream_folded_in(tmp_path):
    from sluice.functions.feature_store import materialize
    from sluice.functions.transactions import generate

    history = [t for day in generate(events=2_000, days=2, seed=4) for t in day]
    stream = [t for day in generate(events=500, days=1, seed=4, first_day=2) for t in day]
    _, after_history = offline.replay(history)
    online = SqliteFeatureStore(tmp_path / "features.db")
    assert materialize(online, after_history) == len(after_history)  # an empty store: all
    states = online.get(t.card for t in stream)
    enrich(states, stream)  # the stream goes on from the history
    online.put(states)
    assert materialize(online, after_history) == 0  # older than what the stream stored
    _, after_both = offline.replay(history + stream)
    assert online.get(after_both) == after_both  # as if one replay had seen it all
    online.close()


def test_tune_searches_on_a_local_ray_and_registers_the_best(tmp_path):
    from sluice.functions.tune import TuneParams, tune_and_train

    store = cleaned(tmp_path, events=6_000, days=3, seed=3)
    messages: list[str] = []
    trials, result = tune_and_train(
        store, TuneParams(trials=3, max_epochs=2, cpus=2, holdout_days=1),
        progress=lambda step, total, message: messages.append(message))
    assert len(trials) == 3 and [t.auc for t in trials] == sorted(
        (t.auc for t in trials), reverse=True)
    assert sum(m.startswith("trial ") for m in messages) == 3  # each trial reported
    best = trials[0]
    # the best configuration, retrained with the same seed, scores what its trial scored
    assert result.auc == pytest.approx(best.auc, abs=1e-6)
    record = ModelRegistry(store).resolve("fraud@candidate")
    assert record.version == result.version == 1
    assert record.params["lr"] == best.config["lr"] and record.params["epochs"] == best.epochs
