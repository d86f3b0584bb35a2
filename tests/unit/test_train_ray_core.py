"""The data-parallel train job's decisions, without a Ray: the ``workers`` param, where the
workers go on a cluster of given resources (and when they never could), which Ray a job uses,
and one worker's share of every batch."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import sluice.functions.ray_session
from sluice.errors import SpecError
from sluice.functions.ray_session import RaySession, choose, held_resources
from sluice.functions.train import Epoch, Shard, TrainParams, epochs, fit
from sluice.functions.train_ray import epoch_of, place


def test_doctests():
    assert doctest.testmod(sluice.functions.ray_session).failed == 0


@pytest.mark.parametrize(("params", "message"), [
    ({"workers": 0}, "workers must be 1 to 1024"),
    ({"workers": 5000}, "workers must be 1 to 1024"),
    ({"workers": "two"}, "workers must be a whole number"),
    ({"workers": 8, "batch_size": 4}, "batch_size must be a multiple of workers"),
    ({"workers": 3, "batch_size": 512}, "batch_size must be a multiple of workers"),
])
def test_bad_workers_are_refused_naming_the_param(params, message):
    with pytest.raises(SpecError, match=f"train params: {message}"):
        TrainParams.from_params(params)


def test_workers_default_to_one_process():
    assert TrainParams().workers == 1
    assert TrainParams.from_params({"workers": "4"}).workers == 4


def cluster(cpus: float, gpus: float = 0, **held: float) -> RaySession:
    return RaySession("address", {"CPU": cpus, "GPU": gpus, "memory": 8e9}, dict(held))


@pytest.mark.parametrize(("workers", "gpus", "session", "use_gpu", "backend", "warned"), [
    (2, 0, cluster(2), False, "gloo", False),
    (4, 0, cluster(8, 4), False, "gloo", False),  # no GPU asked for: CPUs, even with GPUs
    (2, 1, cluster(2, 2), True, "nccl", False),
    (2, 1, cluster(16, 4, GPU=1), True, "nccl", False),
    (2, 1, cluster(2), False, "gloo", True),  # asked for, none there: CPUs, with a warning
])
def test_workers_take_a_gpu_each_when_asked_and_there_else_a_cpu(
        workers, gpus, session, use_gpu, backend, warned):
    placement = place(workers, gpus, session)
    assert placement.use_gpu is use_gpu and placement.backend == backend
    assert placement.per_worker == ({"GPU": 1.0} if use_gpu else {"CPU": 1.0})
    assert (placement.warning is not None) is warned


@pytest.mark.parametrize(("workers", "gpus", "session", "message"), [
    (3, 0, cluster(2), "workers=3 needs 3 CPUs .* has 2; lower workers"),
    (2, 0, cluster(2, CPU=1), "has 2, 1 of them held by this job's own attempt"),
    (3, 1, cluster(8, 2), "workers=3 needs 3 GPUs .* has 2"),
    (2, 1, cluster(8, 2, GPU=1), "1 of them held by this job's own attempt"),
])
def test_workers_the_cluster_could_never_hold_are_refused_at_once(
        workers, gpus, session, message):
    with pytest.raises(SpecError, match=f"^train params: .*{message}"):
        place(workers, gpus, session)


@pytest.mark.parametrize(("initialized", "env", "mode"), [
    (True, {"RAY_ADDRESS": "10.0.0.5:6379"}, ("current", None)),
    (False, {"RAY_ADDRESS": "auto"}, ("address", "auto")),
    (False, {"RAY_ADDRESS": "  "}, ("local", None)),
    (False, {}, ("local", None)),  # never a cluster `ray start` left here
])
def test_a_job_uses_the_ray_it_is_in_or_the_one_named_or_its_own(initialized, env, mode):
    assert choose(initialized, env) == mode


@pytest.mark.parametrize(("text", "mode", "held"), [
    ('{"CPU": 2.0, "memory": 1048576}', "address", {"CPU": 2.0, "memory": 1048576.0}),
    ('{"CPU": 2.0}', "current", {"CPU": 2.0}),
    ('{"CPU": 2.0}', "local", {}),  # a private Ray: the attempt holds nothing of it
    ("not json", "address", {}),
    ('["CPU"]', "address", {}),
])
def test_what_the_jobs_own_attempt_holds(text, mode, held):
    assert held_resources({"SLUICE_RAY_RESOURCES": text}, mode) == held


def test_a_reported_epoch_is_read_back_ignoring_ray_trains_own_keys():
    reported = {"epoch": 2, "loss": 0.5, "auc": 0.9, "seconds": 1.0, "samples_per_s": 10.0,
                "timestamp": 1_700_000_000, "training_iteration": 2}
    assert epoch_of(reported) == Epoch(2, 0.5, 0.9, 1.0, 10.0)


def data(rows: int = 400, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 10)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=rows) > 1.2).astype(np.float32)
    return x[:300], y[:300], x[300:], y[300:]


def test_a_single_process_run_is_the_loop_with_the_whole_batch():
    x, y, x_held, y_held = data()
    params = TrainParams(epochs=2, batch_size=64, width=8, seed=3)
    looped = [epoch for epoch, _ in epochs(x, y, x_held, y_held, params)]
    seen: list[Epoch] = []
    fit(x, y, x_held, y_held, params, on_epoch=seen.append)
    assert [(e.loss, e.auc) for e in seen] == [(e.loss, e.auc) for e in looped]


@pytest.fixture
def process_group(tmp_path):
    """A gloo process group of this process alone (a worker's loss sums go through it)."""
    import torch.distributed

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}",
                                         rank=0, world_size=1)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def test_each_worker_trains_on_its_own_share_of_every_batch(process_group):
    x, y, x_held, y_held = data()
    params = TrainParams(epochs=1, batch_size=64, width=8, seed=3)
    seen: dict[int, list[int]] = {0: [], 1: []}

    def spy(rank: int):  # the DDP wrapper's place: records the rows each step trains on
        def wrap(module):
            forward = module.forward

            def recorded(rows):
                seen[rank].append(len(rows))
                return forward(rows)
            module.forward = recorded
            return module
        return wrap

    for rank in (0, 1):
        [(first, _)] = list(epochs(x, y, x_held, y_held, params, shard=Shard(rank, 2, spy(rank))))
        assert bool(np.isnan(first.auc)) == (rank == 1)  # only rank 0 scores held-out days
    # 300 rows in batches of 64: four of 32 rows each, and the last (44) as two of 22
    assert seen[0] == seen[1] == [32, 32, 32, 32, 22]
