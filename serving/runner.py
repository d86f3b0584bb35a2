"""A serving function's worker: the model from the registry behind the V2 routes, in place of a
user handler. It is the worker's event runner, so the HTTP trigger, its limits, metrics and
supervision are the same as any function's.

The model is resolved (``fraud@production``), fetched and checked against its sha256 when the
worker starts; a model that cannot be loaded fails the worker's start, and so the deploy, with
the reason.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nuclio_sdk import Event

from sluice.errors import ArtifactError, HandlerError
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
        self.follower: asyncio.Task[None] | None = None  # the hot-swap loop
        self.busy_fd = -1  # EventRunner's: the socket a sync call answers on (never: async)

    async def run_async(self, event: Event) -> Reply:
        if getattr(event.trigger, "kind", "") in _STREAMS:  # a stream message for the model
            status, headers, out = await self.endpoints.score(event.body, event.headers or {})
            return Reply(status, out, headers.pop("Content-Type", "application/json"), headers)
        body = event.body if isinstance(event.body, bytes) else b""
        path = event.url or event.path or "/"
        status, headers, out = await self.endpoints.handle(event.method or "GET", path,
                                                           event.headers or {}, body)
        content_type = headers.pop("Content-Type", "application/json")
        return Reply(status, out, content_type, headers)

    def answer_http(self, method: str, url: str, headers: Mapping[str, str], body: bytes,
                    respond: Callable[[Reply], None]) -> None:
        """The HTTP trigger's path (triggers.base.AnswersHttp): no Event and no task per
        request; ``respond`` is called when the request's batch is done."""

        def done(reply: tuple[int, dict[str, str], bytes]) -> None:
            status, extra, out = reply
            respond(Reply(status, out, extra.pop("Content-Type", "application/json"), extra))

        self.endpoints.answer(method, url, headers, body, done)

    def run(self, event: Event) -> Reply:  # the HTTP server calls run_async: is_async is True
        raise RuntimeError("a serving function runs asynchronously")

    async def run_batch_async(self, events: Any) -> list[Reply]:
        """A Kafka micro-batch: every message at once, so the batcher merges them (with the
        HTTP requests arriving meanwhile) into model batches; replies in the events' order.
        Stream messages go through ``Endpoints.score_many``, which stacks one-row records."""
        if all(getattr(event.trigger, "kind", "") in _STREAMS for event in events):
            replies = await self.endpoints.score_many([event.body for event in events],
                                                      [event.headers or {} for event in events])
            return [Reply(status, out, headers.pop("Content-Type", "application/json"), headers)
                    for status, headers, out in replies]
        return list(await asyncio.gather(*(self.run_async(event) for event in events)))

    async def aclose(self) -> None:
        """At worker exit: stop following the reference, finish what was taken, close the
        models (a local Triton server stops with its model)."""
        if self.follower is not None:
            self.follower.cancel()
        for served in list(self.endpoints.models.values()):
            await shutdown(served)


class ModelLoader:
    """Resolves the spec's model reference and builds what serves it; with a reload interval,
    follows the reference (an alias) and swaps to the version it moves to."""

    def __init__(self, settings: dict[str, Any], artifacts: str, cache_dir: Path,
                 gpus: int = 0, metrics: bool = False,
                 log: Callable[..., None] | None = None, handler: str | None = None,
                 source_dir: Path | None = None) -> None:
        from .registry import ModelRegistry, open_store

        self.settings = settings
        self.registry = ModelRegistry(open_store(artifacts))
        self.cache_dir = cache_dir
        self.gpus = gpus
        self.metrics = metrics
        self.log = log or (lambda *args, **fields: None)
        self.kserve_class = self._kserve_class(handler, source_dir)
        self.backend = "kserve" if self.kserve_class else settings.get("backend") or "torch"

    def _kserve_class(self, handler: str | None, source_dir: Path | None) -> type | None:
        """The handler file's kserve.Model subclass: a function with handler code serves it
        (unless the spec names another backend)."""
        backend = self.settings.get("backend")
        module_name, _, class_name = (handler or "").partition(":")
        has_code = source_dir is not None and module_name != "" and (
            (source_dir / f"{module_name}.py").is_file() or (source_dir / module_name).is_dir())
        if backend not in (None, "kserve") or not has_code:
            if backend == "kserve":
                raise HandlerError("backend kserve serves the kserve.Model subclass of the "
                                   "function's handler file, and this function has none: "
                                   "deploy it from the file (sluice deploy serve.py ...)")
            return None
        from sluice.handler import import_handler_module

        from .kserve_backend import find_model_class, import_kserve

        import_kserve()  # before the handler's own `import kserve` (it reads sys.argv)
        module = import_handler_module(str(handler), source_dir)
        if class_name == "handler" and not hasattr(module, "handler"):
            class_name = ""  # the default handler name: the module's one Model subclass
        return find_model_class(module, class_name or None)

    def signature(self, record: Any) -> tuple[list[Tensor], list[Tensor]]:
        """The spec's inputs and outputs, else those pushed with the version."""
        pushed = record.signature or {}
        inputs = self.settings.get("inputs") or pushed.get("inputs")
        outputs = self.settings.get("outputs") or pushed.get("outputs")
        if not inputs or not outputs:
            raise ArtifactError(
                f"model {record.name} version {record.version} was pushed without a "
                "signature and the spec names no tensors: give serving.inputs and "
                "serving.outputs (sluice deploy --inputs/--outputs), or push the model with "
                "--inputs/--outputs")
        return _tensors(inputs), _tensors(outputs)

    def build(self, record: Any) -> ServedModel:
        """Fetch (sha256-checked) and load one version, with its own batcher."""
        inputs, outputs = self.signature(record)
        path = self.registry.fetch(record, self.cache_dir)
        name, version = record.name, str(record.version)
        backend = self.backend
        model: Any
        if self.kserve_class is not None:
            from .kserve_backend import KServeModel

            model = KServeModel.load(self.kserve_class, path, name=name,
                                     outputs=[t.name for t in outputs])
        elif backend == "triton":
            from .triton_backend import local_backend

            model = local_backend(path, name, version, inputs, outputs,
                                  self.cache_dir / "triton" / f"{name}-{version}",
                                  max_batch=self.settings.get("max_batch", 64),
                                  latency_ms=self.settings.get("latency_ms", 50.0),
                                  gpus=self.gpus)
        else:
            from .torch_backend import TorchModel

            model = TorchModel.load(path, gpus=self.gpus, inputs=[t.name for t in inputs],
                                    outputs=[t.name for t in outputs])
        return self.serve(name, version, model, backend, inputs, outputs)

    def build_remote(self) -> ServedModel:
        """A model that a remote Triton server already serves (``serving.triton_url``): the
        reference is its name there, with an optional ``:version``."""
        from .triton_backend import TritonBackend

        name, _, version = self.settings["model"].partition(":")
        inputs, outputs = (_tensors(self.settings.get(side) or []) for side in ("inputs",
                                                                                 "outputs"))
        model = TritonBackend(self.settings["triton_url"], name, version, inputs, outputs)
        model.check()  # and, for a spec that names no tensors, the server's signature
        return self.serve(name, version or "latest", model, "triton", model.inputs,
                          model.outputs)

    def serve(self, name: str, version: str, model: Any, backend: str,
              inputs: list[Tensor], outputs: list[Tensor]) -> ServedModel:
        """``model`` (a backend) behind its own batcher, with its metrics."""
        instruments = ServingMetrics(name, version) if self.metrics else None
        # a Triton server batches too: keep requests in flight so that it has some to merge
        inflight = self.settings.get("max_inflight") or (4 if backend == "triton" else 1)
        batcher = Batcher(model, BatchPolicy(max_batch=self.settings.get("max_batch", 64)),
                          latency=self.settings.get("latency_ms", 50.0) / 1000,
                          max_inflight=inflight)
        if instruments is not None:
            batcher.on_batch = lambda stats: instruments.on_batch(stats, batcher.queued)
        return ServedModel(name, version, inputs, outputs, batcher,
                           platform=_PLATFORMS.get(backend, backend),
                           count=instruments.count if instruments else None)

    async def follow(self, endpoints: Endpoints) -> None:
        """Every ``reload_interval`` seconds: if the reference names another version now, load
        it beside the one serving, switch new requests to it, let the old one finish what it
        took, then close it. A version that fails to load leaves the old one serving."""
        interval = float(self.settings.get("reload_interval", 5.0))
        if interval <= 0:
            return
        ref = self.settings["model"]
        while True:
            await asyncio.sleep(interval)
            try:
                record = await asyncio.to_thread(self.registry.resolve, ref)
            except Exception as exc:  # the store may be unreachable for a while
                self.log("warn", f"cannot check {ref}: {type(exc).__name__}: {exc}")
                continue
            current = endpoints.models.get(record.name)
            if current is None or current.version == str(record.version):
                continue
            try:
                fresh = await asyncio.to_thread(self.build, record)
            except Exception as exc:
                self.log("error", f"{ref} moved to version {record.version}, which cannot be "
                         f"served: {type(exc).__name__}: {exc}; version {current.version} "
                         "keeps serving")
                continue
            endpoints.models[record.name] = fresh
            self.log("info", f"{ref}: now serving version {record.version} (was "
                     f"{current.version})")
            await current.batcher.drain()
            await shutdown(current)


async def shutdown(served: ServedModel) -> None:
    """Close a model's batcher (what it took finishes), then its backend."""
    await served.batcher.close()
    close = getattr(served.batcher.run, "close", None)
    if close is not None:
        result = close()
        if inspect.isawaitable(result):
            await result


def _tensors(specs: list[dict[str, Any]]) -> list[Tensor]:
    """spec.serving's inputs or outputs (TensorSpec as dicts) as the serving side's Tensors."""
    return [Tensor(t["name"], t.get("datatype", "FP32"), tuple(t["dims"])) for t in specs]


def load_serving(settings: dict[str, Any], artifacts: str, cache_dir: Path,
                 gpus: int = 0, metrics: bool = False,
                 log: Callable[..., None] | None = None, handler: str | None = None,
                 source_dir: Path | None = None) -> ServingRunner:
    """The runner for ``spec.serving`` (a dict): resolve, fetch, load, batch; and, in the
    background, follow the reference to new versions. ``handler`` and ``source_dir``: the
    function's handler code, whose kserve.Model subclass is then the model."""
    loader = ModelLoader(settings, artifacts, cache_dir, gpus, metrics, log, handler,
                         source_dir)
    if settings.get("triton_url"):  # the model lives on that server: nothing to follow
        return ServingRunner(Endpoints([loader.build_remote()]))
    served = loader.build(loader.registry.resolve(settings["model"]))
    endpoints = Endpoints([served])
    runner = ServingRunner(endpoints)
    runner.follower = asyncio.get_running_loop().create_task(loader.follow(endpoints))
    return runner


_PLATFORMS = {"torch": "pytorch", "kserve": "kserve"}  # the model metadata's "platform", by backend
_STREAMS = ("kafka-cluster", "kafka")  # trigger kinds whose events are messages to score
