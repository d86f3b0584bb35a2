"""A serving function's worker: the model from the registry behind the V2 routes, in place of a
user handler. It is the worker's event runner, so the HTTP trigger, its limits, metrics and
supervision are the same as any function's.

The model is resolved (``fraud@production``), fetched and checked against its sha256 when the
worker starts; a model that cannot be loaded fails the worker's start, and so the deploy, with
the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nuclio_sdk import Event

from sluice.outputs import Reply

from .batcher import Batcher
from .endpoints import Endpoints, ServedModel
from .metrics import ServingMetrics
from .policy import BatchPolicy
from .triton_config import Tensor


class ServingRunner:
    """Answers every HTTP event with the V2 routes (``event.body`` is the raw bytes)."""

    is_async = True

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.busy_since = 0.0  # read by the worker's watchdog (async: the loop heartbeat)
        self.busy_fd = -1

    async def run_async(self, event: Event) -> Reply:
        body = event.body if isinstance(event.body, bytes) else b""
        path = event.url or event.path or "/"
        status, headers, out = await self.endpoints.handle(event.method or "GET", path,
                                                           event.headers or {}, body)
        content_type = headers.pop("Content-Type", "application/json")
        return Reply(status, out, content_type, headers)

    def run(self, event: Event) -> Reply:  # the HTTP server calls run_async: is_async is True
        raise RuntimeError("a serving function runs asynchronously")

    async def run_batch_async(self, events: Any) -> list[Reply]:
        return [await self.run_async(event) for event in events]


def load_serving(settings: dict[str, Any], artifacts: str, cache_dir: Path,
                 gpus: int = 0, metrics: bool = False) -> ServingRunner:
    """The runner for ``spec.serving`` (a dict): resolve, fetch, load, batch."""
    from .registry import ModelRegistry, open_store
    from .torch_backend import TorchModel

    registry = ModelRegistry(open_store(artifacts))
    record = registry.resolve(settings["model"])
    path = registry.fetch(record, cache_dir)
    inputs = [Tensor(t["name"], t.get("datatype", "FP32"), tuple(t["dims"]))
              for t in settings["inputs"]]
    outputs = [Tensor(t["name"], t.get("datatype", "FP32"), tuple(t["dims"]))
               for t in settings["outputs"]]
    model = TorchModel.load(path, gpus=gpus, inputs=[t.name for t in inputs],
                            outputs=[t.name for t in outputs])
    instruments = ServingMetrics(record.name, str(record.version)) if metrics else None
    batcher = Batcher(model, BatchPolicy(max_batch=settings.get("max_batch", 64)),
                      latency=settings.get("latency_ms", 50.0) / 1000,
                      max_inflight=settings.get("max_inflight", 1))
    if instruments is not None:
        batcher.on_batch = lambda stats: instruments.on_batch(stats, batcher.queued)
    served = ServedModel(record.name, str(record.version), inputs, outputs, batcher,
                         count=instruments.count if instruments is not None else None)
    return ServingRunner(Endpoints([served]))
