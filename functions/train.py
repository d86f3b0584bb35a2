"""The ``train`` job: a torch model on the offline features, registered with its metrics, and
promoted to ``production`` only when it beats the current one.

A run reads the feature table (``features/transactions/`` in the artifact store, written by
the ``etl`` job), holds out its last ``holdout_days`` days, trains a small MLP on the rest
(seeded: the same data and params give the same model), and reports the held-out AUC per
epoch with progress. The model goes to the registry as an exported torch program (``.pt2``,
standardisation inside, so it takes the raw feature vector ``x`` and answers ``scores``, the
fraud probability), with its metrics, params and the data's fingerprint, under the alias
``candidate``. Then the
production model, if any, is scored on the same held-out rows, and ``candidate`` is promoted
only if it is better (:func:`sluice.functions.evaluation.decide`); the decision and both
scores are the run's outputs. Serving functions that follow ``fraud@production`` swap to a
promoted model by themselves.

With ``workers`` above 1 the same training runs data-parallel on Ray Train, one worker per
``workers`` (:mod:`sluice.functions.train_ray`): each worker takes an equal share of every
batch (``batch_size`` must be a multiple of ``workers``) and DDP averages the gradients, so the
model is the single-process one up to rounding, but for the last rows (fewer than ``workers``)
of each epoch's last, short batch, which no worker takes.

Params (``sluice run train --param epochs=8``): ``model`` (fraud), ``epochs`` (6), ``lr``
(0.003), ``width`` (32), ``batch_size`` (512), ``seed`` (0), ``holdout_days`` (2), ``promote``
(auto, always or never), ``min_gain`` (0.0), ``workers`` (1: one process, no Ray).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from sluice.errors import NotFoundError, SpecError
from sluice.serving.registry import ModelRegistry

from . import layout, offline
from .evaluation import Promotion, auc, decide
from .features import FEATURES

log = logging.getLogger("sluice.functions.train")
MAX_WORKERS = 1024  # Ray Train workers for one run; the cluster's own size is checked on Ray


@dataclass(frozen=True)
class TrainParams:
    model: str = "fraud"
    epochs: int = 6
    lr: float = 0.003
    width: int = 32
    batch_size: int = 512
    seed: int = 0
    holdout_days: int = 2
    promote: Literal["auto", "always", "never"] = "auto"
    min_gain: float = 0.0
    workers: int = 1

    def __post_init__(self) -> None:
        checks = [(1 <= self.epochs <= 1000, "epochs must be 1 to 1000"),
                  (0 < self.lr < 10, "lr must be above 0 and below 10"),
                  (2 <= self.width <= 4096, "width must be 2 to 4096"),
                  (1 <= self.batch_size <= 1 << 20, "batch_size must be at least 1"),
                  (self.holdout_days >= 1, "holdout_days must be at least 1"),
                  (self.promote in ("auto", "always", "never"),
                   "promote must be auto, always or never"),
                  (self.min_gain >= 0, "min_gain must be 0 or more"),
                  (1 <= self.workers <= MAX_WORKERS, f"workers must be 1 to {MAX_WORKERS}"),
                  (self.workers < 1 or self.batch_size % self.workers == 0,
                   "batch_size must be a multiple of "
                   "workers (each worker trains on an equal share of every batch)")]
        for ok, message in checks:
            if not ok:
                raise SpecError(f"train params: {message}")

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> TrainParams:
        """From a run's params: unknown names and wrong types are refused by name."""
        return typed_params(cls, params, "train")


P = TypeVar("P")


def typed_params(cls: type[P], params: dict[str, Any] | None, job: str) -> P:
    """A params dataclass (its fields all with defaults) from a run's params: unknown names
    and values that do not convert to a default's type are refused by name."""
    params = dict(params or {})
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise SpecError(f"{job} params: unknown {', '.join(unknown)} (known: "
                        f"{', '.join(known)})")
    typed: dict[str, Any] = {}
    for name, value in params.items():
        default = getattr(cls, name)
        try:
            typed[name] = type(default)(value) if not isinstance(default, str) else str(value)
        except (TypeError, ValueError):
            kind = {int: "a whole number", float: "a number"}[type(default)]
            raise SpecError(f"{job} params: {name} must be {kind}, got {value!r}") from None
    return cls(**typed)


class FraudNet(torch.nn.Module):
    """An MLP over standardised features; ``forward`` answers the fraud probability."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, width: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.body = torch.nn.Sequential(
            torch.nn.Linear(len(mean), width), torch.nn.ReLU(),
            torch.nn.Linear(width, max(2, width // 2)), torch.nn.ReLU(),
            torch.nn.Linear(max(2, width // 2), 1))

    mean: torch.Tensor
    std: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def choose_device(gpus: int) -> tuple[str, str | None]:
    """CUDA when the spec asks for a GPU and one exists; else the CPU, with a warning if a GPU
    was asked for."""
    if gpus > 0 and torch.cuda.is_available():
        return "cuda", None
    if gpus > 0:
        return "cpu", "the spec asks for a GPU but torch sees none: training on the CPU"
    return "cpu", None


def split(table: pa.Table, holdout_days: int) -> tuple[pa.Table, pa.Table]:
    """The rows before the last ``holdout_days`` UTC days, and the rows of those days."""
    days = pc.floor(pc.divide(table["ts"], 86_400.0))
    distinct = sorted(set(days.to_pylist()))
    if len(distinct) <= holdout_days:
        raise SpecError(f"train params: the data covers {len(distinct)} day(s); holding out "
                        f"{holdout_days} leaves nothing to train on (lower holdout_days)")
    first_held = distinct[-holdout_days]
    held = pc.greater_equal(days, first_held)
    return table.filter(pc.invert(held)), table.filter(held)


def arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix (float32, in FEATURES order) and the labels."""
    x = np.column_stack([table[name].to_numpy() for name in FEATURES]).astype(np.float32)
    return x, table["fraud"].to_numpy().astype(np.float32)


def predict(model: torch.nn.Module, x: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """Scores for the rows of ``x`` (on the model's device), as a flat float array."""
    device = next(iter(model.buffers())).device
    parts = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            chunk = torch.from_numpy(x[start:start + batch]).to(device)
            parts.append(model(chunk).reshape(-1).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclass(frozen=True)
class Epoch:
    epoch: int
    loss: float
    auc: float  # NaN on the workers of a data-parallel run other than rank 0
    seconds: float
    samples_per_s: float


def _whole(module: torch.nn.Module) -> torch.nn.Module:
    return module


@dataclass(frozen=True)
class Shard:
    """One process's place in a data-parallel run: it trains on rows ``rank::world`` of every
    batch, and ``wrap`` makes its model average gradients with the others (DDP). The default
    is the whole of a single-process run."""

    rank: int = 0
    world: int = 1
    wrap: Callable[[torch.nn.Module], torch.nn.Module] = field(default=_whole, repr=False)


class _Logits(torch.nn.Module):
    """The model's logits as ``forward``, so that a DDP wrapper sees the training calls."""

    def __init__(self, net: FraudNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.logits(x)


def epochs(x: np.ndarray, y: np.ndarray, x_held: np.ndarray, y_held: np.ndarray,
           params: TrainParams, device: str | torch.device = "cpu",
           shard: Shard | None = None) -> Iterator[tuple[Epoch, FraudNet]]:
    """The training loop, single-process or one worker of a data-parallel run: after each
    epoch, its numbers and the model (in eval mode, on ``device``). Seeded: every process
    draws the same order of rows, and each trains on its share of the same batches, so the
    gradients DDP averages are those of the single-process batch."""
    shard = shard or Shard()
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    mean = torch.from_numpy(x.mean(axis=0))
    std = torch.from_numpy(np.maximum(x.std(axis=0), 1e-6))
    model = FraudNet(mean, std, params.width).to(device)
    trained = shard.wrap(_Logits(model))
    positives = float(y.sum())
    weight = torch.tensor((len(y) - positives) / max(positives, 1.0), device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=weight)  # fraud is rare: weigh it up
    optimiser = torch.optim.Adam(trained.parameters(), lr=params.lr)
    features, labels = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    for epoch in range(1, params.epochs + 1):
        began = time.perf_counter()
        trained.train()
        order = torch.randperm(len(labels), generator=generator).to(device)
        total, count = 0.0, 0
        for start in range(0, len(order), params.batch_size):
            batch = order[start:start + params.batch_size]
            # equal shares: DDP's average of the shares' mean losses is the batch's mean
            rows = batch[:len(batch) - len(batch) % shard.world][shard.rank::shard.world]
            if len(rows) == 0:
                continue
            optimiser.zero_grad()
            loss = loss_fn(trained(features[rows]).reshape(-1), labels[rows])
            loss.backward()
            optimiser.step()
            total, count = total + float(loss.detach()) * len(rows), count + len(rows)
        if shard.world > 1:  # the loss over every worker's rows, as one process reports it
            sums = torch.tensor([total, count], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(sums)
            total, count = float(sums[0]), int(sums[1])
        seconds = time.perf_counter() - began
        model.eval()
        held_auc = auc(predict(model, x_held), y_held) if shard.rank == 0 else float("nan")
        yield Epoch(epoch, total / max(count, 1), held_auc, seconds, count / seconds), model


def fit(x: np.ndarray, y: np.ndarray, x_held: np.ndarray, y_held: np.ndarray,
        params: TrainParams, device: str = "cpu",
        on_epoch: Callable[[Epoch], None] | None = None) -> FraudNet:
    """Train in this process with fixed seeds; the model comes back on the CPU in eval mode."""
    model = None
    for epoch, trained in epochs(x, y, x_held, y_held, params, device):
        model = trained
        if on_epoch is not None:
            on_epoch(epoch)
    assert model is not None  # params.epochs >= 1
    return model.cpu().eval()


@dataclass(frozen=True)
class TrainResult:
    version: int
    auc: float
    baseline_auc: float
    promotion: Promotion
    history: list[Epoch]
    checkpoint: str | None = None  # the artifact store's key of a Ray Train run's checkpoint


Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x, y, held-out x, held-out y


def training_data(store: Any, holdout_days: int) -> Data:
    """The offline features, split into training rows and the last ``holdout_days`` days."""
    train_rows, held_rows = split(offline.read_days(store, layout.FEATURES), holdout_days)
    return (*arrays(train_rows), *arrays(held_rows))


def checkpoint_key(model: str, version: int) -> str:
    """Where a data-parallel run's last checkpoint goes in the artifact store."""
    return f"checkpoints/{model}/{version}/checkpoint.pt"


def train(store: Any, params: TrainParams, gpus: int = 0,
          progress: Callable[[float, float, str], None] | None = None,
          log_metrics: Callable[[dict[str, Any]], None] | None = None,
          data: Data | None = None) -> TrainResult:
    """The whole job against an artifact store (see the module's docstring); ``data``: the
    split already read (the tune job's)."""
    x, y, x_held, y_held = data or training_data(store, params.holdout_days)
    history: list[Epoch] = []
    device, where = "cpu", "cpu"  # where: what the progress lines say it trains on

    def on_epoch(epoch: Epoch) -> None:
        history.append(epoch)
        if progress is not None:
            progress(epoch.epoch, params.epochs, f"epoch {epoch.epoch}/{params.epochs}: loss "
                     f"{epoch.loss:.4f}, held-out AUC {epoch.auc:.4f}, "
                     f"{epoch.samples_per_s:,.0f} samples/s on {where}")
        if log_metrics is not None:
            log_metrics({"epoch": epoch.epoch, "loss": round(epoch.loss, 5),
                         "held_out_auc": round(epoch.auc, 5)})

    with tempfile.TemporaryDirectory(prefix="sluice-train-") as scratch:
        checkpoint: Path | None = None
        if params.workers > 1:
            from .train_ray import fit_on_ray  # Ray only for data-parallel runs

            where = f"{params.workers} Ray Train workers"
            run = fit_on_ray(x, y, x_held, y_held, params, gpus, on_epoch, Path(scratch))
            model, checkpoint, device = run.model, run.checkpoint, run.device
        else:
            device, warning = choose_device(gpus)
            if warning:
                log.warning(warning)
            where = device
            model = fit(x, y, x_held, y_held, params, device, on_epoch)
        scores = predict(model, x_held)
        candidate_auc = auc(scores, y_held)
        # the trivial baseline: the amount alone, the rule a team starts with
        baseline_auc = auc(x_held[:, FEATURES.index("log_amount")], y_held)
        registry = ModelRegistry(store)
        path = Path(scratch) / "model.pt2"
        export(model, path)
        record = registry.push(
            params.model, path,
            metrics={"auc": round(candidate_auc, 5), "baseline_auc": round(baseline_auc, 5),
                     "train_rows": len(y), "held_out_rows": len(y_held),
                     "samples_per_s": round(history[-1].samples_per_s, 1)},
            params={**asdict(params), "device": device, "features": list(FEATURES)},
            data_fingerprint=offline.fingerprint(store, layout.FEATURES),
            signature={"inputs": [{"name": "x", "datatype": "FP32", "dims": [len(FEATURES)]}],
                       "outputs": [{"name": "scores", "datatype": "FP32", "dims": [1]}]})
        key = None
        if checkpoint is not None:
            key = checkpoint_key(params.model, record.version)
            store.put_file(key, checkpoint)
        registry.set_alias(params.model, "candidate", record.version)
        production = production_auc(registry, params.model, x_held, y_held, Path(scratch))
    if params.promote == "always":
        promotion = Promotion(True, candidate_auc, production, "promote=always")
    elif params.promote == "never":
        promotion = Promotion(False, candidate_auc, production, "promote=never")
    else:
        promotion = decide(candidate_auc, production, params.min_gain)
    if promotion.promote:
        registry.set_alias(params.model, "production", record.version)
    return TrainResult(record.version, candidate_auc, baseline_auc, promotion, history, key)


def production_auc(registry: ModelRegistry, name: str, x: np.ndarray, y: np.ndarray,
                   scratch: Path) -> float | None:
    """The production model's AUC on these rows (None: there is no production model)."""
    try:
        record = registry.resolve(f"{name}@production")
    except NotFoundError:
        return None
    model = torch.export.load(str(registry.fetch(record, scratch))).module()
    return auc(predict(model, x), y)


def export(model: FraudNet, path: Path) -> None:
    """Save as an exported program (``.pt2``: the graph and weights, no Python class needed to
    load it), with a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(model, (torch.zeros(4, len(FEATURES)),),
                                  dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))


def handler(context: Any, event: Any) -> dict[str, Any]:
    """The job's entry point (``sluice.functions.train:handler``)."""
    import os

    params = TrainParams.from_params(event.body if isinstance(event.body, dict) else {})
    result = train(layout.store_from_env(), params, int(os.environ.get("SLUICE_GPUS", "0")),
                   getattr(context, "progress", None), getattr(context, "log_metrics", None))
    outcome = {"model": f"{params.model}:{result.version}", "auc": round(result.auc, 5),
               "baseline_auc": round(result.baseline_auc, 5),
               "production_auc": None if result.promotion.production is None
               else round(result.promotion.production, 5),
               "promoted": result.promotion.promote, "decision": result.promotion.reason}
    if result.checkpoint is not None:
        outcome["checkpoint"] = result.checkpoint
    context.logger.info_with("trained", **outcome)
    return outcome
