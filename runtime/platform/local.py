"""LocalPlatform: the embedded control plane (one machine, worker processes, SQLite state)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from sluice.errors import DeployError, NotFoundError, PlatformError, SpecError
from sluice.settings import Settings
from sluice.spec import FunctionSpec, HttpTrigger, Kind, parse_spec
from sluice.worker.config import WorkerConfig

from . import metrics
from .base import FunctionStatus, InvokeRequest, InvokeResponse
from .logs import FunctionLog
from .scheduler import Scheduler
from .states import FunctionState, can_move
from .store import FunctionRecord, Store
from .supervisor import WorkerSet, listen


@dataclass
class Deployed:
    """A deployed function as the platform holds it in memory."""

    spec: FunctionSpec
    generation: int
    log: FunctionLog
    created: float
    state: FunctionState = FunctionState.DEPLOYING
    message: str = ""
    sock: socket.socket | None = None
    workers: WorkerSet | None = None
    restarts: int = 0
    updated: float = field(default_factory=time.time)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def port(self) -> int | None:
        return self.sock.getsockname()[1] if self.sock is not None else None


def with_default_trigger(spec: FunctionSpec) -> FunctionSpec:
    """HTTP and serving functions get an HTTP trigger when the spec names no trigger at all."""
    if not spec.triggers and spec.kind in (Kind.HTTP, Kind.SERVING):
        triggers = {name: t.model_dump(mode="json") for name, t in spec.triggers.items()}
        triggers["http"] = HttpTrigger().model_dump(mode="json")
        return spec.with_changes(triggers=triggers)
    return spec


class LocalPlatform:
    """Implements :class:`sluice.platform.base.Platform` with local worker processes."""

    def __init__(self, settings: Settings, api_url: str | None = None,
                 kafka_bootstrap: str | None = None,
                 kafka_security: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.api_url = api_url
        self.kafka_bootstrap = kafka_bootstrap
        self.kafka_security = kafka_security or {}
        self.functions: dict[str, Deployed] = {}
        self._store: Store | None = None
        self._lifeline_r = self._lifeline_w = -1
        self._client: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._scheduler: Scheduler | None = None
        self._reserved: dict[str, int] = {}  # highest generation handed out per function
        self._trigger_token = secrets.token_hex(16)  # signs cron deliveries to workers

    @property
    def store(self) -> Store:
        if self._store is None:
            raise PlatformError("the platform is not started")
        return self._store

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.settings.ensure_dirs()
        self._store = Store(self.settings.db_path)
        # workers read this pipe; it closes when the platform dies, and they stop
        self._lifeline_r, self._lifeline_w = os.pipe()
        self._client = httpx.AsyncClient(timeout=None)
        self._scheduler = Scheduler(self._store)
        await self._restore()

    async def _restore(self) -> None:
        records = self.store.all()
        if not records:
            return
        results = await asyncio.gather(*(self._restore_one(r) for r in records),
                                       return_exceptions=True)
        for record, result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                self.store.set_state(record.name, FunctionState.ERROR,
                                     f"could not be restored: {result}")

    async def _restore_one(self, record: FunctionRecord) -> None:
        spec = parse_spec(record.spec)
        source_dir = self._source_dir(spec.name, record.generation)
        await self._deploy(spec, source_dir if source_dir.exists() else None, port=record.port,
                           created=record.created, generation=record.generation)

    async def stop(self) -> None:
        """Drain every function's workers; their records stay, to be restored on next start."""
        if self._scheduler is not None:
            self._scheduler.stop()
        await asyncio.gather(*(self._teardown(d, persist=False)
                               for d in list(self.functions.values())), return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        for fd in (self._lifeline_w, self._lifeline_r):
            if fd >= 0:
                os.close(fd)
        if self._client is not None:
            await self._client.aclose()
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- deploy --------------------------------------------------------------------------------
    def _source_dir(self, name: str, generation: int) -> Path:
        return self.settings.functions_dir / name / f"g{generation}"

    async def deploy(self, spec: FunctionSpec) -> FunctionStatus:
        spec = with_default_trigger(spec)
        self._kafka_settings(spec)  # refuse now what the workers could not start with
        if spec.cron_triggers and spec.http_trigger is None:
            name = next(iter(spec.cron_triggers))
            raise SpecError(f"triggers.{name}: a cron trigger is delivered over the function's "
                            "HTTP port; add an http trigger (job functions run without one "
                            "once they land)")
        generation = self._reserve_generation(spec.name)
        source_dir: Path | None = None
        if spec.source is not None:
            source_dir = self._source_dir(spec.name, generation)
            source_dir.mkdir(parents=True, exist_ok=True)
            (source_dir / spec.source.filename).write_bytes(spec.source.text())
            spec = spec.with_changes(source=None)
        return await self._deploy(spec, source_dir, generation=generation)

    def _reserve_generation(self, name: str) -> int:
        """The next generation number, taken now so that concurrent deploys never share one
        (each writes its own source folder before waiting for the function's lock)."""
        existing = self.functions.get(name)
        record = self.store.get(name)
        generation = max(existing.generation if existing else 0,
                         record.generation if record else 0,
                         self._reserved.get(name, 0)) + 1
        self._reserved[name] = generation
        return generation

    async def _deploy(
        self,
        spec: FunctionSpec,
        source_dir: Path | None,
        generation: int,
        port: int | None = None,
        created: float | None = None,
    ) -> FunctionStatus:
        fn = self.functions.get(spec.name)
        if fn is None:
            path = self.settings.logs_dir / f"{spec.name}.jsonl"
            fn = Deployed(spec, generation, FunctionLog(path, spec.name), created or time.time())
            self.functions[spec.name] = fn
        async with fn.lock:
            if self.functions.get(spec.name) is not fn:  # deleted while this deploy waited
                raise NotFoundError(f"function {spec.name!r} was deleted while this deploy "
                                    "waited; deploy it again")
            return await self._roll_out(fn, spec, source_dir, generation, port)

    async def _roll_out(
        self,
        fn: Deployed,
        spec: FunctionSpec,
        source_dir: Path | None,
        generation: int,
        port: int | None,
    ) -> FunctionStatus:
        started = time.monotonic()
        previous = fn.workers
        self._move(fn, FunctionState.DEPLOYING, f"deploying generation {generation}")
        fn.log.event("info", f"deploying generation {generation}", generation=generation)
        trigger = spec.http_trigger
        new_sock = None
        try:
            if trigger is not None:
                wanted = trigger.port or port or fn.port
                if fn.sock is None or wanted != fn.port:
                    new_sock = self._listen(trigger.host, wanted, trigger.port is not None)
            sock = new_sock or fn.sock
            workers = WorkerSet(
                self._worker_configs(spec, generation, source_dir, sock),
                self.settings.functions_dir / spec.name,
                fn.log,
                self._lifeline_r,
                sock.fileno() if sock is not None else None,
                on_change=lambda: self._on_workers_changed(fn),
                on_restart=lambda code: self._on_restart(fn),
            )
            (self.settings.functions_dir / spec.name).mkdir(parents=True, exist_ok=True)
            await workers.start()
        except Exception as exc:  # DeployError, OSError, or anything unforeseen: never stuck
            if new_sock is not None:
                new_sock.close()
            metrics.DEPLOYS.labels("failed").inc()
            message = f"generation {generation} failed to start: {exc}"
            if not isinstance(exc, DeployError | OSError):
                message = f"generation {generation} failed: {type(exc).__name__}: {exc}"
            fn.log.event("error", message, generation=generation)
            if previous is not None:
                self._move(fn, FunctionState.READY, message)
            else:
                fn.spec, fn.generation = spec, generation
                self._move(fn, FunctionState.ERROR, message)
                self._save(fn)
            raise DeployError(f"function {spec.name!r}: {message}") from None
        old_sock = fn.sock if new_sock is not None else None
        fn.spec, fn.generation, fn.workers = spec, generation, workers
        if new_sock is not None:
            fn.sock = new_sock
        elapsed = time.monotonic() - started
        self._move(fn, FunctionState.READY, "")
        fn.log.event("info", f"generation {generation} ready in {elapsed:.2f}s",
                     generation=generation)
        metrics.DEPLOYS.labels("succeeded").inc()
        self._save(fn)
        self._schedule(fn)
        if previous is not None:
            self._in_background(self._retire(previous, old_sock))
        return self._status(fn)

    def _schedule(self, fn: Deployed) -> None:
        """(Re)start the function's cron schedules; fires go to one worker over its port."""
        if self._scheduler is None:
            return
        if not fn.spec.cron_triggers:
            self._scheduler.remove(fn.spec.name)
            return
        client = self._client
        assert client is not None

        async def deliver(method: str, path: str, headers: dict[str, str], body: bytes,
                          timeout: float) -> int:
            status = self._status(fn)
            if status.endpoint is None:
                raise PlatformError("the function has no HTTP endpoint")
            headers = {**headers, "X-Sluice-Trigger-Token": self._trigger_token}
            response = await client.request(method, status.endpoint + path, headers=headers,
                                            content=body, timeout=timeout)
            return response.status_code

        self._scheduler.set(fn.spec.name, fn.spec.cron_triggers, deliver, fn.log,
                            fn.spec.timeout + 5)

    def _listen(self, host: str, port: int | None, fixed: bool) -> socket.socket:
        try:
            return listen(host, port)
        except OSError as exc:
            if fixed or port is None:
                raise DeployError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            return listen(host, None)  # the remembered port is taken now: take another

    def _kafka_settings(self, spec: FunctionSpec) -> list[dict[str, Any]]:
        from sluice.triggers.kafka.settings import KafkaSettings

        out = []
        for name, trigger in spec.kafka_triggers.items():
            data = trigger.model_dump(mode="json")
            if not data.get("bootstrap_servers") and not data.get("security"):
                data["security"] = self.kafka_security  # the platform's cluster, its security
            try:
                settings = KafkaSettings.from_trigger(spec.name, name, data, self.kafka_bootstrap)
            except ValueError as exc:
                raise SpecError(str(exc)) from None
            out.append(asdict(settings))
        return out

    def _worker_configs(
        self, spec: FunctionSpec, generation: int, source_dir: Path | None,
        sock: socket.socket | None,
    ) -> list[WorkerConfig]:
        trigger = spec.http_trigger
        metrics_dir = self.settings.metrics_dir / spec.name
        metrics_dir.mkdir(parents=True, exist_ok=True)
        count = max(1, spec.replicas.min) * spec.workers
        kafka = self._kafka_settings(spec)
        configs = []
        for worker_id in range(count):
            configs.append(WorkerConfig(
                function=spec.name,
                handler=spec.handler,
                source_dir=str(source_dir) if source_dir else None,
                worker_id=worker_id,
                generation=generation,
                timeout=spec.timeout,
                env=dict(spec.env),
                http_trigger=next(n for n, t in spec.triggers.items() if t is trigger)
                if trigger else None,
                host=trigger.host if trigger else "127.0.0.1",
                port=sock.getsockname()[1] if sock is not None else None,
                max_request_body_size=trigger.max_request_body_size if trigger else 0,
                max_inflight=trigger.max_inflight if trigger else 1,
                max_connections=trigger.max_connections if trigger else 1,
                batch_size=trigger.batching.batch_size
                if trigger and trigger.batching and trigger.batching.enabled else 0,
                batch_timeout=trigger.batching.timeout_ms / 1000
                if trigger and trigger.batching else 0.01,
                platform_url=self.api_url,
                metrics_dir=str(metrics_dir),
                kafka=kafka,
                # in-flight handlers may take their whole timeout: drain that long (at most 5 min)
                drain_timeout=min(max(spec.timeout + 1.0, 5.0), 300.0),
                trigger_token=self._trigger_token,
            ))
        return configs

    async def _retire(self, workers: WorkerSet, sock: socket.socket | None) -> None:
        await workers.stop()
        if sock is not None:
            sock.close()

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- state ---------------------------------------------------------------------------------
    def _move(self, fn: Deployed, state: FunctionState, message: str) -> None:
        if not can_move(fn.state, state):
            return
        fn.state, fn.message, fn.updated = state, message, time.time()
        if self._store is not None and self.store.get(fn.spec.name) is not None:
            self.store.set_state(fn.spec.name, state, message)

    def _save(self, fn: Deployed) -> None:
        self.store.put(FunctionRecord(
            name=fn.spec.name,
            spec=fn.spec.model_dump(mode="json", exclude_none=True),
            generation=fn.generation,
            port=fn.port,
            state=fn.state,
            message=fn.message,
            created=fn.created,
            updated=fn.updated,
        ))

    def _on_workers_changed(self, fn: Deployed) -> None:
        workers = fn.workers
        if workers is None or workers.stopping or fn.state == FunctionState.DEPLOYING:
            return
        if len(workers.ready) < len(workers.configs):
            self._move(fn, FunctionState.DEGRADED,
                       f"{len(workers.configs) - len(workers.ready)} worker(s) restarting")
        elif workers.unhealthy:
            self._move(fn, FunctionState.DEGRADED, next(iter(workers.unhealthy.values())))
        else:
            self._move(fn, FunctionState.READY, "")

    def _on_restart(self, fn: Deployed) -> None:
        fn.restarts += 1
        metrics.WORKER_RESTARTS.labels(fn.spec.name).inc()

    def _status(self, fn: Deployed) -> FunctionStatus:
        spec = fn.spec
        workers = fn.workers
        port = fn.port
        return FunctionStatus(
            name=spec.name,
            kind=str(spec.kind),
            state=fn.state,
            generation=fn.generation,
            version=spec.version,
            replicas=max(1, spec.replicas.min),
            workers=spec.workers,
            workers_ready=len(workers.ready) if workers else 0,
            triggers=[f"{t.kind}:{name}" for name, t in spec.triggers.items()],
            endpoint=f"http://{spec.http_trigger.host}:{port}"
            if spec.http_trigger and port else None,
            message=fn.message,
            restarts=fn.restarts,
            created=fn.created,
            updated=fn.updated,
            spec=spec.model_dump(mode="json", exclude_none=True),
            pids=sorted(w.process.pid for w in workers.workers.values()
                        if w.process is not None and w.process.returncode is None)
            if workers else [],
        )

    def _find(self, name: str) -> Deployed:
        fn = self.functions.get(name)
        if fn is None:
            raise NotFoundError(f"no function named {name!r} (see `sluice get`)")
        return fn

    # -- the rest of the Platform interface --------------------------------------------------
    async def get(self, name: str) -> FunctionStatus:
        fn = self._find(name)
        status = self._status(fn)
        if fn.spec.kafka_triggers:
            status = replace(status, lag=await self._lag(fn.spec))
        return status

    async def _lag(self, spec: FunctionSpec) -> dict[str, int]:
        from .lag import consumer_lag

        lag: dict[str, int] = {}
        workers = self.functions[spec.name].workers
        broker_down = workers is not None and bool(workers.unhealthy)
        for settings in self._kafka_settings(spec):
            if broker_down:  # known unreachable: answer at once rather than wait for a timeout
                lag[",".join(settings["topics"])] = -1
                continue
            try:
                lag.update(await asyncio.wait_for(asyncio.to_thread(consumer_lag, settings), 3))
            except Exception as exc:  # the broker may be down: the status still answers
                lag[f"{','.join(settings['topics'])}"] = -1
                self.functions[spec.name].log.event(
                    "warn", f"cannot read consumer lag: {type(exc).__name__}: {exc}")
        return lag

    async def list(self) -> list[FunctionStatus]:
        statuses = [self._status(fn) for _, fn in sorted(self.functions.items())]
        for state in FunctionState:
            metrics.FUNCTIONS.labels(str(state)).set(sum(s.state == state for s in statuses))
        return statuses

    async def delete(self, name: str) -> None:
        fn = self._find(name)
        async with fn.lock:
            await self._teardown(fn)
            self.functions.pop(name, None)
            self.store.delete(name)
            fn.log.close()
            with contextlib.suppress(FileNotFoundError):
                fn.log.path.unlink()
            shutil.rmtree(self.settings.functions_dir / name, ignore_errors=True)
            shutil.rmtree(self.settings.metrics_dir / name, ignore_errors=True)

    async def _teardown(self, fn: Deployed, persist: bool = True) -> None:
        if self._scheduler is not None:
            self._scheduler.remove(fn.spec.name)
        if persist:
            self._move(fn, FunctionState.DRAINING, "stopping")
        elif fn.workers is not None:
            fn.workers.stopping = True
        if fn.workers is not None:
            await fn.workers.stop()
        if fn.sock is not None:
            fn.sock.close()
            fn.sock = None

    async def scale(
        self, name: str, replicas: int | None = None, workers: int | None = None
    ) -> FunctionStatus:
        fn = self._find(name)
        changes: dict[str, object] = {}
        if replicas is not None:
            changes["replicas"] = {**fn.spec.replicas.model_dump(exclude_none=True),
                                   "min": replicas}
        if workers is not None:
            changes["workers"] = workers
        if not changes:
            raise SpecError("scale: give replicas, workers or both")
        spec = fn.spec.with_changes(**changes)
        source_dir = self._source_dir(name, fn.generation)
        generation = self._reserve_generation(name)
        if source_dir.exists():
            shutil.copytree(source_dir, self._source_dir(name, generation), dirs_exist_ok=True)
            source_dir = self._source_dir(name, generation)
        return await self._deploy(spec, source_dir if source_dir.exists() else None,
                                  generation=generation)

    async def invoke(self, name: str, request: InvokeRequest) -> InvokeResponse:
        fn = self._find(name)
        status = self._status(fn)
        if status.endpoint is None:
            raise PlatformError(f"function {name!r} has no HTTP trigger to invoke")
        assert self._client is not None
        try:
            response = await self._client.request(
                request.method, status.endpoint + request.path, headers=request.headers,
                content=request.body, timeout=fn.spec.timeout + 5,
            )
        except httpx.HTTPError as exc:
            raise PlatformError(f"function {name!r} did not answer: {exc}") from exc
        return InvokeResponse(response.status_code, dict(response.headers), response.content)

    def logs(self, name: str, tail: int = 100, follow: bool = False) -> AsyncIterator[bytes]:
        """The function's log lines; raises NotFoundError at once for an unknown name."""
        return self._find(name).log.read(tail, follow)
