"""The train job data-parallel on a real local Ray (2 CPUs): Ray Train with 2 workers (gloo)
trains the model the single-process run trains on the same data, registers it as that run
does, and puts its last checkpoint in the artifact store; a run the cluster cannot hold is
refused at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sluice.errors import SpecError
from sluice.functions import etl
from sluice.functions.evaluation import auc
from sluice.functions.generate import write_raw_files
from sluice.functions.train import TrainParams, predict, train, training_data
from sluice.functions.train_ray import load_checkpoint
from sluice.serving.artifacts import LocalStore
from sluice.serving.registry import ModelRegistry

# Ray Data's DataContext (which Ray Train builds) sets its own deprecated fields
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray with 2 CPUs for the module (the job uses a Ray already started here)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def cleaned(tmp_path: Path) -> LocalStore:
    """A local artifact store with six days of generated transactions put through etl."""
    store = LocalStore(tmp_path / "artifacts")
    write_raw_files(store, events=24_000, days=6, seed=21)
    etl.run(store)
    return store


@pytest.mark.timeout(300)  # Ray Train's start on a busy 2-core machine; no timing asserted
def test_two_ray_train_workers_train_the_model_one_process_trains(local_ray, tmp_path):
    store = cleaned(tmp_path)
    single = train(store, TrainParams(epochs=3, seed=1))
    steps: list[str] = []
    spread = train(store, TrainParams(epochs=3, seed=1, workers=2),
                   progress=lambda step, total, message: steps.append(message))

    # equal in quality: the same held-out AUC, well above the amount-alone baseline
    assert spread.auc == pytest.approx(single.auc, abs=0.005)
    assert spread.auc > 0.9 and spread.auc > spread.baseline_auc + 0.1
    # and the same training, epoch by epoch (DDP averages the single-process batch's gradient)
    assert [e.epoch for e in spread.history] == [1, 2, 3]
    assert [e.loss for e in spread.history] == pytest.approx(
        [e.loss for e in single.history], rel=1e-3)
    assert len(steps) == 3 and all("held-out AUC" in m and "2 Ray Train workers" in m
                                   for m in steps)

    registry = ModelRegistry(store)
    record = registry.get("fraud", spread.version)
    assert spread.version == 2 and record.params["workers"] == 2
    assert record.params["device"] == "cpu"
    assert registry.aliases("fraud")["candidate"] == 2
    _, _, x_held, y_held = training_data(store, 2)
    exported = torch.export.load(str(registry.fetch(record, tmp_path / "fetched"))).module()
    assert auc(predict(exported, x_held), y_held) == pytest.approx(spread.auc, abs=1e-6)

    assert spread.checkpoint == "checkpoints/fraud/2/checkpoint.pt"
    store.get_file(spread.checkpoint, tmp_path / "checkpoint.pt")
    restored = load_checkpoint(tmp_path / "checkpoint.pt", width=32)
    assert auc(predict(restored, x_held), y_held) == pytest.approx(spread.auc, abs=1e-6)


def test_more_workers_than_the_cluster_holds_are_refused_naming_workers(
        local_ray, tmp_path, monkeypatch):
    store = cleaned(tmp_path)
    with pytest.raises(SpecError, match="workers=3 needs 3 CPUs .* has 2; lower workers"):
        train(store, TrainParams(epochs=1, workers=3, batch_size=513))
    # on sluice up --platform ray, the job's own attempt holds a CPU of the same cluster
    monkeypatch.setenv("SLUICE_RAY_RESOURCES", '{"CPU": 1.0}')
    with pytest.raises(SpecError, match="1 of them held by this job's own attempt"):
        train(store, TrainParams(epochs=1, workers=2))
    assert ModelRegistry(store).versions("fraud") == []
