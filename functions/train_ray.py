"""The ``train`` job data-parallel on Ray Train: ``sluice run train --param workers=2``.

:func:`fit_on_ray` runs a ``TorchTrainer`` with ``workers`` workers. Each runs the very loop
a single-process run runs (:func:`sluice.functions.train.epochs`) on its :class:`Shard`: the
same seeded order of rows, its share of every batch, the model wrapped in DDP by
``ray.train.torch.prepare_model`` (gloo on CPUs, NCCL on GPUs), so the averaged gradients are
those of the single-process batch and the model equals the single-process one up to rounding
(but for the last rows, fewer than ``workers``, of each epoch's last, short batch).

After each epoch every worker reports to Ray Train, and rank 0 attaches a checkpoint (the
model's state, the epoch and the params). Ray Train keeps it in the run's scratch folder; the
last one comes back to the job, which loads the model from it, registers the model as a
single-process run does (the same ``.pt2``) and puts the checkpoint in the artifact store
(:func:`sluice.functions.train.checkpoint_key`). The metrics Ray Train receives come back to
the job as each epoch's progress: a callback on Ray Train's controller hands them over a Ray
queue.

Where it runs: see :mod:`sluice.functions.ray_session` (a private local Ray with this
machine's CPUs, or the cluster ``RAY_ADDRESS`` names). Each worker takes one CPU, or one GPU
when the function's spec asks for a GPU (``resources.gpu``) and the cluster has GPUs; without
any it trains on CPUs and says so, as a single-process run does. A run the cluster could never
place (more workers than its CPUs or GPUs, less what the job's own attempt holds) is refused
at once, naming ``workers``, instead of waiting for resources forever. Ray Train's scratch
folder is on the job's machine, so the workers must share its disk: one machine for now.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer, get_device, prepare_model
from ray.util.queue import Queue

from sluice.errors import PlatformError, SpecError

from .features import FEATURES
from .ray_session import RaySession, local_cpus, ray_session
from .train import Epoch, FraudNet, Shard, TrainParams, epochs

log = logging.getLogger("sluice.functions.train")
CHECKPOINT = "checkpoint.pt"  # the file in each of Ray Train's checkpoint folders


@dataclass(frozen=True)
class Placement:
    """How the workers are placed: one GPU each, or one CPU each (with why, when the spec
    asked for GPUs the cluster does not have)."""

    use_gpu: bool
    warning: str | None = None

    @property
    def backend(self) -> str:
        return "nccl" if self.use_gpu else "gloo"

    @property
    def per_worker(self) -> dict[str, float]:
        return {"GPU": 1.0} if self.use_gpu else {"CPU": 1.0}


def place(workers: int, gpus: int, session: RaySession) -> Placement:
    """Where ``workers`` workers go on this cluster; SpecError, naming ``workers``, when the
    cluster could never hold them all at once (Ray would wait for them forever)."""
    placement = Placement(False)
    if gpus > 0 and session.resources.get("GPU", 0.0) > 0:
        placement = Placement(True)
    elif gpus > 0:
        placement = Placement(False, "the spec asks for a GPU but the Ray cluster has none: "
                                     "training on CPUs")
    kind = "GPU" if placement.use_gpu else "CPU"
    free = session.free(kind)
    if workers > free:
        held = session.held.get(kind, 0.0)
        mine = f", {held:g} of them held by this job's own attempt" if held else ""
        raise SpecError(f"train params: workers={workers} needs {workers} {kind}s (one per "
                        f"worker) but the Ray cluster has {session.resources.get(kind, 0):g}"
                        f"{mine}; lower workers (1 trains in one process) or add nodes")
    return placement


def _report(rank: int, epoch: Epoch, model: FraudNet, params: TrainParams) -> None:
    """One epoch to Ray Train, every worker's numbers and rank 0's checkpoint."""
    if rank != 0:
        ray.train.report(asdict(epoch))
        return
    with tempfile.TemporaryDirectory(prefix="sluice-checkpoint-") as folder:
        torch.save({"epoch": epoch.epoch, "params": asdict(params),
                    "model": model.state_dict()}, Path(folder) / CHECKPOINT)
        ray.train.report(asdict(epoch), checkpoint=ray.train.Checkpoint.from_directory(folder))


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the single-process loop on this worker's shard."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    params: TrainParams = config["params"]
    x, y, x_held, y_held = config["data"]
    shard = Shard(rank, world, prepare_model)
    for epoch, model in epochs(x, y, x_held, y_held, params, get_device(), shard):
        _report(rank, epoch, model, params)


class Forward(ray.train.UserCallback):  # type: ignore[misc]
    """A Ray Train callback (it runs on Ray Train's controller) that puts rank 0's metrics
    of each epoch on a Ray queue for the job."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        self.queue.put(metrics[0])


def epoch_of(metrics: Mapping[str, Any]) -> Epoch:
    """The :class:`Epoch` a worker reported (Ray Train may add keys of its own)."""
    return Epoch(**{f.name: metrics[f.name] for f in fields(Epoch)})


def _follow(queue: Any, on_epoch: Callable[[Epoch], None] | None) -> None:
    """Hand each reported epoch to ``on_epoch`` until the end mark (None)."""
    while (metrics := queue.get()) is not None:
        if on_epoch is not None:
            on_epoch(epoch_of(metrics))


@dataclass(frozen=True)
class RayRun:
    """What a data-parallel run leaves: the model (on the CPU, in eval mode), its last
    checkpoint's file, and the device kind its workers trained on."""

    model: FraudNet
    checkpoint: Path
    device: str


def load_checkpoint(path: Path, width: int) -> FraudNet:
    """The model in a checkpoint written by a worker, on the CPU in eval mode."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    zeros = torch.zeros(len(FEATURES))
    model = FraudNet(zeros, zeros + 1, width)
    model.load_state_dict(state["model"])
    return model.eval()


def fit_on_ray(x: np.ndarray, y: np.ndarray, x_held: np.ndarray, y_held: np.ndarray,
               params: TrainParams, gpus: int, on_epoch: Callable[[Epoch], None] | None,
               scratch: Path) -> RayRun:
    """Train with ``params.workers`` Ray Train workers (see the module's docstring); Ray
    Train's own files go under ``scratch``, and so does the last checkpoint's file."""
    with ray_session(local_cpus()) as session:
        placement = place(params.workers, gpus, session)
        if placement.warning:
            log.warning(placement.warning)
        queue = Queue(actor_options={"num_cpus": 0})
        trainer = TorchTrainer(
            _worker, train_loop_config={"params": params, "data": (x, y, x_held, y_held)},
            torch_config=TorchConfig(backend=placement.backend),
            scaling_config=ScalingConfig(num_workers=params.workers,
                                         use_gpu=placement.use_gpu,
                                         resources_per_worker=placement.per_worker),
            run_config=RunConfig(name="train", storage_path=str(scratch / "ray-train"),
                                 callbacks=[Forward(queue)],  # type: ignore[list-item]
                                 checkpoint_config=CheckpointConfig(num_to_keep=1),
                                 failure_config=FailureConfig(max_failures=0)))
        follower = threading.Thread(target=_follow, args=(queue, on_epoch),
                                    name="ray-train-epochs", daemon=True)
        follower.start()
        try:
            result = trainer.fit()
        finally:
            queue.put(None)  # after the last epoch Ray Train reported
            follower.join()
        if result.checkpoint is None:
            raise PlatformError("Ray Train finished without a checkpoint from rank 0")
        path = scratch / CHECKPOINT
        with result.checkpoint.as_directory() as folder:
            shutil.copyfile(Path(folder) / CHECKPOINT, path)
    return RayRun(load_checkpoint(path, params.width), path,
                  "cuda" if placement.use_gpu else "cpu")
