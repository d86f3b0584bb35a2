"""LocalPlatform: the embedded control plane (one machine, worker processes, SQLite state)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from sluice.errors import DeployError, NotFoundError, PlatformError, SpecError
from sluice.settings import Settings
from sluice.spec import FunctionSpec, Kind, parse_spec

from . import metrics
from .autoscale import initial_replicas, scaled_replicas, start_autoscaler
from .base import FunctionStatus, InvokeRequest, InvokeResponse
from .build_env import BuildEnv, EnvBuilder, keys_in_use
from .cron_targets import Deliver, HttpCronTarget, JobCronTarget
from .deployed import Deployed, status_of, with_default_trigger
from .jobs import AttemptRunner, Jobs, JobTarget
from .lag import function_lag
from .local_workers import LocalWorkers
from .logs import FunctionLog
from .scheduler import CronTarget, ScheduleInfo, Scheduler
from .states import FunctionState, RunState, can_move
from .store import FunctionRecord, RunRecord, Store
from .supervisor import WorkerLauncher, WorkerSet
from .worker_configs import WorkerDefaults, kafka_settings, worker_configs


class LocalPlatform:
    """Implements :class:`sluice.platform.base.Platform` with local worker processes."""

    def __init__(self, settings: Settings, api_url: str | None = None,
                 kafka_bootstrap: str | None = None,
                 kafka_security: dict[str, Any] | None = None,
                 job_runner: AttemptRunner | None = None,
                 worker_launcher: WorkerLauncher | None = None) -> None:
        self.settings = settings
        self.job_runner = job_runner  # where job attempts run (None: processes here)
        self.worker_launcher = worker_launcher  # where workers run (None: processes here)
        self._launcher: WorkerLauncher | None = None
        self.api_url = api_url
        self.defaults = WorkerDefaults(api_url, secrets.token_hex(16), kafka_bootstrap,
                                       kafka_security or {}, settings.artifacts_uri(),
                                       str(settings.home))
        self.functions: dict[str, Deployed] = {}
        self.envs = EnvBuilder(settings.envs_dir)  # the venvs of functions' build commands
        self._store: Store | None = None
        self._lifeline_r = self._lifeline_w = -1
        self._client: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._scheduler: Scheduler | None = None
        self._jobs: Jobs | None = None
        self._reserved: dict[str, int] = {}  # highest generation handed out per function
        self.recovered: list[RunRecord] = []  # runs the last platform left unfinished

    @property
    def store(self) -> Store:
        if self._store is None:
            raise PlatformError("the platform is not started")
        return self._store

    @property
    def launcher(self) -> WorkerLauncher:
        if self._launcher is None:
            raise PlatformError("the platform is not started")
        return self._launcher

    @property
    def jobs(self) -> Jobs:
        if self._jobs is None:
            raise PlatformError("the platform is not started")
        return self._jobs

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise PlatformError("the platform is not started")
        return self._scheduler

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.settings.ensure_dirs()
        self._store = Store(self.settings.db_path)
        # workers read this pipe; it closes when the platform dies, and they stop
        self._lifeline_r, self._lifeline_w = os.pipe()
        self._launcher = self.worker_launcher or LocalWorkers(self._lifeline_r)
        self._client = httpx.AsyncClient(timeout=None)
        self._scheduler = Scheduler(self._store)
        self._jobs = Jobs(self._store, self.settings.logs_dir / "runs",
                          self.settings.functions_dir, self._lifeline_r, self.api_url,
                          self.defaults.env(), self.job_runner)
        self.recovered = self._jobs.recover()
        # build environments that no stored function uses any more go now
        await asyncio.to_thread(self.envs.prune, keys_in_use(r.spec for r in self.store.all()))
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
        if self._jobs is not None:
            await self._jobs.stop()
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
        kafka_settings(spec, self.defaults)  # refuse now what the workers could not start with
        if spec.cron_triggers and spec.http_trigger is None and spec.kind != Kind.JOB:
            name = next(iter(spec.cron_triggers))
            raise SpecError(f"triggers.{name}: a cron trigger of an {spec.kind} function is "
                            "delivered over its HTTP port; add an http trigger, or make it a "
                            "job (kind: job) to start a run on each fire")
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
        serving = fn.state in (FunctionState.READY, FunctionState.DEGRADED)
        self._move(fn, FunctionState.DEPLOYING, f"deploying generation {generation}")
        fn.log.event("info", f"deploying generation {generation}", generation=generation)
        try:
            build_env = await self.envs.for_spec(
                spec, fn.log, source_dir or self.settings.functions_dir / spec.name,
                lambda step: self._move(fn, FunctionState.DEPLOYING, f"deploying generation "
                                        f"{generation}: building its environment, {step}"),
                generation=generation)
        except DeployError as exc:
            raise self._failed(fn, spec, generation, f"generation {generation} failed to "
                               f"build: {exc}", serving) from None
        if spec.kind == Kind.JOB:
            return await self._roll_out_job(fn, spec, source_dir, generation, started, serving,
                                            build_env)
        trigger = spec.http_trigger
        new_sock = None
        try:
            if trigger is not None:
                wanted = trigger.port or port or fn.port
                if fn.sock is None or wanted != fn.port:
                    new_sock = self._listen(trigger.host, wanted, trigger.port is not None)
            sock = new_sock or fn.sock
            # every worker's config when the generation runs n replicas (the autoscaler adds)
            make_configs = partial(
                worker_configs, spec, generation, source_dir,
                sock.getsockname()[1] if sock is not None else None,
                self.settings.metrics_dir / spec.name, self.defaults,
                self.settings.functions_dir / spec.name)
            workers = WorkerSet(
                make_configs(initial_replicas(spec, fn.running_replicas)),
                self.settings.functions_dir / spec.name,
                fn.log,
                self.launcher.launch_for(spec, sock, build_env),
                on_change=lambda: self._on_workers_changed(fn),
                on_restart=lambda code: self._on_restart(fn),
            )
            (self.settings.functions_dir / spec.name).mkdir(parents=True, exist_ok=True)
            await workers.start()
        except Exception as exc:  # DeployError, OSError, or anything unforeseen: never stuck
            if new_sock is not None:
                new_sock.close()
            message = f"generation {generation} failed to start: {exc}"
            if not isinstance(exc, DeployError | OSError):
                message = f"generation {generation} failed: {type(exc).__name__}: {exc}"
            raise self._failed(fn, spec, generation, message, previous is not None) from None
        old_sock = fn.sock if new_sock is not None else None
        await self._stop_autoscaler(fn)
        fn.autoscaler = start_autoscaler(spec, workers, make_configs, fn.log)
        fn.spec, fn.generation, fn.workers = spec, generation, workers
        fn.source_dir, fn.build_env = source_dir, build_env
        if new_sock is not None:
            fn.sock = new_sock
        return self._rolled_out(fn, previous, old_sock, started, "")

    def _failed(self, fn: Deployed, spec: FunctionSpec, generation: int, message: str,
                serving: bool) -> DeployError:
        """A generation that did not make it: the previous one stays if one is serving, else
        the function is in error. Returns the error for the deploy to raise."""
        metrics.DEPLOYS.labels("failed").inc()
        fn.log.event("error", message, generation=generation)
        if serving:
            self._move(fn, FunctionState.READY, message)
        else:
            fn.spec, fn.generation = spec, generation
            self._move(fn, FunctionState.ERROR, message)
            self._save(fn)
        return DeployError(f"function {spec.name!r}: {message}")

    def _rolled_out(self, fn: Deployed, previous: WorkerSet | None,
                    old_sock: socket.socket | None, started: float, note: str
                    ) -> FunctionStatus:
        """The new generation is in place: record it, schedule it, retire the old workers."""
        self._move(fn, FunctionState.READY, "")
        fn.log.event("info", f"generation {fn.generation} ready in "
                     f"{time.monotonic() - started:.2f}s{note}", generation=fn.generation)
        metrics.DEPLOYS.labels("succeeded").inc()
        self._save(fn)
        self._schedule(fn)
        if previous is not None:
            self._in_background(self._retire(previous, old_sock))
        return self._status_of(fn)

    async def _roll_out_job(self, fn: Deployed, spec: FunctionSpec, source_dir: Path | None,
                            generation: int, started: float, serving: bool,
                            build_env: BuildEnv | None) -> FunctionStatus:
        """A job has no workers: the deploy checks that its handler imports; each run then
        starts its own process. Runs already going finish on the version they started with."""
        previous = fn.workers
        try:
            await self.jobs.check(JobTarget(spec, generation, source_dir, fn.log, build_env))
        except DeployError as exc:
            raise self._failed(fn, spec, generation,
                               f"generation {generation} failed to start: {exc}",
                               serving) from None
        await self._stop_autoscaler(fn)
        old_sock, fn.sock = fn.sock, None  # a function that was http before
        fn.spec, fn.generation, fn.workers, fn.source_dir = spec, generation, None, source_dir
        fn.build_env = build_env
        return self._rolled_out(fn, previous, old_sock, started,
                                " (a job: each run is a process)")

    def _job_target(self, fn: Deployed) -> JobTarget:
        return JobTarget(fn.spec, fn.generation, fn.source_dir, fn.log, fn.build_env)

    def _schedule(self, fn: Deployed) -> None:
        """(Re)start the function's cron schedules: a job's fires start runs; any other
        function's go to one worker over its port."""
        if self._scheduler is None:
            return
        if not fn.spec.cron_triggers:
            self._scheduler.remove(fn.spec.name)
            return
        target: CronTarget
        if fn.spec.kind == Kind.JOB:
            target = JobCronTarget(self.jobs, self._job_target(fn))
        else:
            target = HttpCronTarget(fn.spec.name, self._deliver_to(fn), fn.log,
                                    fn.spec.timeout + 5)
        self._scheduler.set(fn.spec.name, fn.spec.cron_triggers, target, fn.log)

    def _deliver_to(self, fn: Deployed) -> Deliver:
        client = self._client
        assert client is not None

        async def deliver(method: str, path: str, headers: dict[str, str], body: bytes,
                          timeout: float) -> int:
            status = self._status_of(fn)
            if status.endpoint is None:
                raise PlatformError("the function has no HTTP endpoint")
            headers = {**headers, "X-Sluice-Trigger-Token": self.defaults.trigger_token}
            response = await client.request(method, status.endpoint + path, headers=headers,
                                            content=body, timeout=timeout)
            return response.status_code

        return deliver

    def _listen(self, host: str, port: int | None, fixed: bool) -> socket.socket:
        try:
            return self.launcher.hold_port(host, port)
        except OSError as exc:
            if fixed or port is None:
                raise DeployError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            return self.launcher.hold_port(host, None)  # the remembered port is taken now

    async def _stop_autoscaler(self, fn: Deployed) -> None:
        autoscaler, fn.autoscaler = fn.autoscaler, None
        if autoscaler is not None:
            await autoscaler.stop()

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

    def _status_of(self, fn: Deployed) -> FunctionStatus:
        return status_of(fn, len(self._jobs.active(fn.spec.name)) if self._jobs else 0)

    def _find(self, name: str) -> Deployed:
        fn = self.functions.get(name)
        if fn is None:
            raise NotFoundError(f"no function named {name!r} (see `sluice get`)")
        return fn

    # -- the rest of the Platform interface --------------------------------------------------
    async def get(self, name: str) -> FunctionStatus:
        fn = self._find(name)
        status = self._status_of(fn)
        if fn.spec.kafka_triggers:
            workers = fn.workers
            status = replace(status, lag=await function_lag(
                kafka_settings(fn.spec, self.defaults), fn.log,
                broker_down=workers is not None and bool(workers.unhealthy)))
        return status

    async def list(self) -> list[FunctionStatus]:
        statuses = [self._status_of(fn) for _, fn in sorted(self.functions.items())]
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
        if persist and self._jobs is not None:
            for run_id in self._jobs.active(fn.spec.name):
                with contextlib.suppress(PlatformError):
                    await self._jobs.cancel(run_id, "the function was deleted")
        if persist:
            self._move(fn, FunctionState.DRAINING, "stopping")
        elif fn.workers is not None:
            fn.workers.stopping = True
        await self._stop_autoscaler(fn)
        if fn.workers is not None:
            await fn.workers.stop()
        if fn.sock is not None:
            fn.sock.close()
            fn.sock = None

    async def scale(
        self, name: str, replicas: int | None = None, workers: int | None = None,
        max_replicas: int | None = None,
    ) -> FunctionStatus:
        """A rolling redeploy with a new replica count (the minimum, when the function
        autoscales: its maximum is raised to it if below), a new maximum, or new workers."""
        fn = self._find(name)
        changes: dict[str, object] = {}
        if replicas is not None or max_replicas is not None:
            changes["replicas"] = scaled_replicas(fn.spec, replicas, max_replicas)
        if workers is not None:
            changes["workers"] = workers
        if not changes:
            raise SpecError("scale: give replicas, max_replicas, workers or some of them")
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
        status = self._status_of(fn)
        if fn.spec.kind == Kind.JOB:
            raise SpecError(f"function {name!r} is a job: start a run with `sluice run {name}` "
                            f"(POST /api/functions/{name}/runs)")
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

    # -- runs of job functions and schedules ---------------------------------------------------
    def run(self, name: str, params: Any, trigger: str = "api") -> RunRecord:
        """Start a run of a job function now; bad params raise SpecError."""
        fn = self._find(name)
        if fn.spec.kind != Kind.JOB:
            raise SpecError(f"function {name!r} is a {fn.spec.kind} function; only job functions "
                            f"have runs (call it with `sluice invoke {name}`)")
        if fn.state not in (FunctionState.READY, FunctionState.DEGRADED):
            raise PlatformError(f"function {name!r} is {fn.state}: {fn.message or 'not ready'}")
        return self.jobs.submit(self._job_target(fn), params, trigger)

    def runs(self, name: str | None = None, status: RunState | None = None,
             limit: int = 50) -> builtins.list[RunRecord]:
        if name is not None and name not in self.functions and not self.store.runs(name, limit=1):
            raise NotFoundError(f"no function named {name!r} and no runs of one (see `sluice get`)")
        return self.store.runs(name, status, limit)

    def get_run(self, run_id: str) -> RunRecord:
        return self.jobs.get(run_id)

    async def cancel_run(self, run_id: str) -> RunRecord:
        return await self.jobs.cancel(run_id)

    def run_logs(self, run_id: str, tail: int = 0, follow: bool = False) -> AsyncIterator[bytes]:
        """A run's lines; following ends when the run does."""
        return self.jobs.logs(run_id, tail, follow)

    def schedules(self) -> builtins.list[ScheduleInfo]:
        return self.scheduler.list()

    def pause(self, name: str, trigger: str | None = None) -> builtins.list[str]:
        self._find(name)
        return self.scheduler.pause(name, trigger)

    def resume(self, name: str, trigger: str | None = None) -> builtins.list[str]:
        self._find(name)
        return self.scheduler.resume(name, trigger)
