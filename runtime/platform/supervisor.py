"""Worker processes of one function: start them, watch them, restart them, drain them.

Where a worker runs is the :class:`Launch` the platform hands a :class:`WorkerSet`: a process of
this machine (:mod:`sluice.platform.local_workers`, the default) or one in a Ray actor
(:mod:`sluice.platform.ray_workers`). Either runs ``python -m sluice.worker --config ...`` and
hands every line the worker writes (stdout, stderr, control messages) back as it comes; the
supervision here (readiness, health, restarts with back-off, drains) is the same for both.

Locally all workers of a function share one listening socket that the platform owns, so a new
version's workers start accepting on the same port before the old ones drain (no failed request
during a redeploy), and a crashed worker's connections are simply taken by the others.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from sluice.errors import DeployError
from sluice.spec import FunctionSpec
from sluice.worker.config import EXIT_OK, EXIT_RECYCLED, WorkerConfig

from .build_env import BuildEnv
from .logs import FunctionLog

READY_TIMEOUT = 60.0
# a lone worker's stop; a WorkerSet gives each worker twice its drain timeout (HTTP, then Kafka)
STOP_TIMEOUT = 65.0
STABLE_AFTER = 30.0  # a worker up this long has its failure count reset


def restart_delay(failures: int) -> float:
    """Back-off before restarting a crashed worker: 0.1 s, doubling, at most 10 s."""
    if failures <= 0:
        return 0.0
    return min(0.1 * 2 ** (failures - 1), 10.0)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == EXIT_RECYCLED:
        return "was recycled after a handler timeout"
    return f"exited with code {code}"


OnLine = Callable[[str, bytes], None]  # (stream: "stdout" | "stderr" | "control", line)


class Launched(Protocol):
    """A started worker process, wherever it runs."""

    @property
    def pid(self) -> int:
        """Its pid (on the machine it runs on)."""

    @property
    def returncode(self) -> int | None:
        """Its exit code once it exited; None while it runs."""

    async def wait(self) -> int:
        """Its exit code, once it exited and every line it wrote was handed on."""

    async def stop(self, timeout: float) -> bool:
        """SIGTERM (it drains), SIGKILL to its process group after ``timeout`` seconds; True
        when it took the SIGKILL. Returns once it exited."""

    def describe_exit(self) -> str:
        """How it ended, for the function's log (``was killed by SIGKILL``)."""


# starts one worker with this config (its file written at the path, if it runs here), its lines
# to the callback; returns once the process started (DeployError when it cannot be)
Launch = Callable[[WorkerConfig, Path, OnLine], Awaitable[Launched]]


class WorkerLauncher(Protocol):
    """Where a platform runs its functions' workers: processes of this machine
    (:class:`~sluice.platform.local_workers.LocalWorkers`) or Ray actors
    (:class:`~sluice.platform.ray_workers.RayWorkers`)."""

    def hold_port(self, host: str, port: int | None) -> socket.socket:
        """The function's HTTP port (a free one when None), held by the platform for as long
        as the function has it; OSError when it cannot be had."""

    def launch_for(self, spec: FunctionSpec, sock: socket.socket | None,
                   build_env: BuildEnv | None) -> Launch:
        """How each worker of one generation of a function starts: on ``sock`` (the
        function's port, if it has one), with its build environment's python."""


class WorkerProcess:
    """One worker process: its readiness, its health, its output into the function's log."""

    def __init__(self, config: WorkerConfig, config_path: Path, log: FunctionLog,
                 launch: Launch,
                 on_health: Callable[[WorkerProcess, bool, str], None] | None = None,
                 on_load: Callable[[WorkerProcess, float, float], None] | None = None
                 ) -> None:
        self.config = config
        self.config_path = config_path
        self.log = log
        self.launch = launch
        self.on_health = on_health
        self.on_load = on_load  # its load reports: (this worker, busy, inflight)
        self.process: Launched | None = None
        self.started_at = 0.0
        self.stopping = False
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def worker_id(self) -> int:
        return self.config.worker_id

    async def start(self) -> None:
        self.process = await self.launch(self.config, self.config_path, self._line)
        self.started_at = time.monotonic()

    def _line(self, stream: str, line: bytes) -> None:
        if stream != "control":
            self.log.worker_output(line, self.worker_id, stream)
            return
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("event") == "ready" and not self._ready.done():
            self._ready.set_result(None)
        elif message.get("event") == "failed" and not self._ready.done():
            self._ready.set_exception(DeployError(str(message.get("error"))))
        elif message.get("event") == "health" and self.on_health is not None:
            self.on_health(self, bool(message.get("ok")), str(message.get("reason", "")))
        elif message.get("event") == "load" and self.on_load is not None:
            busy, inflight = message.get("busy"), message.get("inflight")
            if isinstance(busy, int | float) and isinstance(inflight, int | float):
                self.on_load(self, float(busy), float(inflight))

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once the worker serves; raise DeployError if it fails or exits first."""
        assert self.process is not None
        exited: asyncio.Future[Any] = asyncio.ensure_future(self.process.wait())
        ready: asyncio.Future[Any] = self._ready
        try:
            done, _ = await asyncio.wait({ready, exited}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not exited.done():
                exited.cancel()
        if self._ready in done or self._ready.done():
            self._ready.result()  # raises the worker's own startup error
            return
        if exited in done:  # every line is in: a startup error has been read by now
            if self._ready.done():
                self._ready.result()
            raise DeployError(f"worker {self.worker_id} {self.process.describe_exit()}"
                              " before it was ready (see `sluice logs`)")
        raise DeployError(f"worker {self.worker_id} was not ready within {timeout:g}s")

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, timeout: float = STOP_TIMEOUT, final: bool = True) -> None:
        """SIGTERM (the worker drains), then SIGKILL to its whole group after ``timeout``.
        ``final=False``: a failed restart being cleared away; its keeper goes on restarting."""
        self.stopping = final
        process = self.process
        if process is None or process.returncode is not None:
            return
        if await process.stop(timeout):
            self.log.event("warn", f"worker {self.worker_id} did not stop within {timeout:g}s;"
                           " it was killed", worker=self.worker_id)


async def _start_all(workers: list[WorkerProcess], timeout: float) -> None:
    """Start these workers all at once (a Ray actor takes a moment to place) and wait until
    every one is ready; every start settles before a failure is raised, so that the caller
    stopping them leaves none starting behind its back."""
    started = await asyncio.gather(*(w.start() for w in workers), return_exceptions=True)
    for result in started:
        if isinstance(result, BaseException):
            raise result
    await asyncio.gather(*(w.wait_ready(timeout) for w in workers))


OnChange = Callable[[], None]


class WorkerSet:
    """The workers of one generation of a function, kept alive until stopped. Workers may be
    added to it and removed from it while it runs (the autoscaler's replicas)."""

    def __init__(
        self,
        configs: list[WorkerConfig],
        state_dir: Path,
        log: FunctionLog,
        launch: Launch,
        on_change: OnChange,
        on_restart: Callable[[int], None],
    ) -> None:
        self.configs = configs  # its members: started, and kept alive until removed
        self.state_dir = state_dir
        self.log = log
        self.launch = launch  # where each worker runs (a local process, a Ray actor)
        self.on_change = on_change
        self.on_restart = on_restart
        self.workers: dict[int, WorkerProcess] = {}
        self.ready: set[int] = set()
        self.unhealthy: dict[int, str] = {}  # worker -> why (e.g. its Kafka broker is down)
        self.restarts = 0
        self.stopping = False
        self.loads: dict[int, tuple[float, float]] = {}  # worker -> its last (busy, inflight)
        self._keepers: dict[int, asyncio.Task[None]] = {}
        self._joining: list[WorkerProcess] = []  # being added: not members until all ready
        self._leaving: list[WorkerProcess] = []  # removed, draining
        self._drains: set[asyncio.Task[None]] = set()

    def _new(self, config: WorkerConfig, member: bool = True) -> WorkerProcess:
        path = self.state_dir / f"worker-{config.generation}-{config.worker_id}.json"
        worker = WorkerProcess(config, path, self.log, self.launch, self._health, self._load)
        if member:
            self.workers[config.worker_id] = worker
        return worker

    def _load(self, worker: WorkerProcess, busy: float, inflight: float) -> None:
        if self.workers.get(worker.worker_id) is worker:  # not one that was removed
            self.loads[worker.worker_id] = (busy, inflight)

    def _health(self, worker: WorkerProcess, ok: bool, reason: str) -> None:
        if self.workers.get(worker.worker_id) is not worker and worker not in self._joining:
            return  # one that was removed and drains: its id may be a new member's already
        worker_id = worker.worker_id
        if ok:
            self.unhealthy.pop(worker_id, None)
        else:
            self.unhealthy[worker_id] = reason
        self.log.event("info" if ok else "warn", f"worker {worker_id}: {reason}",
                       worker=worker_id)
        self.on_change()

    async def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start every worker and wait until all are ready; on failure stop them and raise."""
        workers = [self._new(config) for config in self.configs]
        try:
            await _start_all(workers, timeout)
        except BaseException:
            await self.stop(timeout=5.0)
            raise
        self.ready = {w.worker_id for w in workers}
        self._keepers = {w.worker_id: asyncio.create_task(self._keep(w.config)) for w in workers}

    async def add(self, configs: list[WorkerConfig], timeout: float = READY_TIMEOUT) -> None:
        """Start more workers (new ids) and make them members once every one serves; on
        failure they are stopped and DeployError (or the launcher's error) is raised."""
        workers = [self._new(config, member=False) for config in configs]
        self._joining.extend(workers)
        try:
            await _start_all(workers, timeout)
        except BaseException:
            await asyncio.gather(*(w.stop(5.0) for w in workers), return_exceptions=True)
            raise
        finally:
            self._joining = [w for w in self._joining if w not in workers]
        if self.stopping:  # stopped while they started: not members of a stopped set
            await asyncio.gather(*(w.stop(5.0) for w in workers), return_exceptions=True)
            return
        for worker in workers:
            self.workers[worker.worker_id] = worker
            self.ready.add(worker.worker_id)
            self._keepers[worker.worker_id] = asyncio.create_task(self._keep(worker.config))
        self.configs = self.configs + configs
        self.on_change()

    def remove(self, worker_ids: set[int], timeout: float | None = None) -> asyncio.Task[None]:
        """Take these workers out now (no longer counted, never restarted) and drain them as
        a stop does, in-flight requests finishing: the task returned ends once they exited."""
        leaving = []
        for worker_id in worker_ids:
            keeper = self._keepers.pop(worker_id, None)
            if keeper is not None:
                keeper.cancel()
            worker = self.workers.pop(worker_id, None)
            if worker is not None:
                leaving.append(worker)
            self.ready.discard(worker_id)
            self.unhealthy.pop(worker_id, None)
            self.loads.pop(worker_id, None)
        timeout = self._drain_timeout(timeout)
        self.configs = [c for c in self.configs if c.worker_id not in worker_ids]
        self.on_change()
        self._leaving.extend(leaving)
        drain = asyncio.create_task(self._drain(leaving, timeout))
        self._drains.add(drain)
        drain.add_done_callback(self._drains.discard)
        return drain

    async def _drain(self, leaving: list[WorkerProcess], timeout: float) -> None:
        try:
            await asyncio.gather(*(w.stop(timeout) for w in leaving), return_exceptions=True)
        finally:
            self._leaving = [w for w in self._leaving if w not in leaving]
        if leaving:
            ids = ", ".join(str(w.worker_id) for w in leaving)
            self.log.event("info", f"worker(s) {ids} drained and stopped")

    def _drain_timeout(self, timeout: float | None) -> float:
        if timeout is not None:
            return timeout
        return 2 * max((c.drain_timeout for c in self.configs), default=30.0) + 5

    async def _keep(self, config: WorkerConfig) -> None:
        """Restart this worker whenever it dies, with back-off while it keeps failing."""
        failures = 0
        start_failed = False  # the last restart never got a process: the old one stands in
        while not self.stopping:
            worker = self.workers[config.worker_id]
            code = await worker.wait()
            if self.stopping or worker.stopping:
                return
            assert worker.process is not None
            if start_failed:  # (the old worker's exit was counted and told already)
                start_failed = False
                failures += 1
                delay = restart_delay(failures)
                self.log.event("warn", f"worker {config.worker_id}: trying to start it again "
                               f"in {delay:.1f}s", worker=config.worker_id)
                await asyncio.sleep(delay)
            else:
                self.ready.discard(config.worker_id)
                self.unhealthy.pop(config.worker_id, None)
                self.loads.pop(config.worker_id, None)
                self.on_change()
                lived = time.monotonic() - worker.started_at
                if code == EXIT_RECYCLED:
                    failures = 0
                elif lived > STABLE_AFTER:
                    failures = 1
                else:
                    failures += 1
                delay = restart_delay(failures)
                self.log.event("warn" if code in (EXIT_OK, EXIT_RECYCLED) else "error",
                               f"worker {config.worker_id} {worker.process.describe_exit()}; "
                               "restarting"
                               + (f" in {delay:.1f}s" if delay else ""), worker=config.worker_id)
                self.restarts += 1
                self.on_restart(code)
                if delay:
                    await asyncio.sleep(delay)
            if self.stopping:
                return
            fresh = self._new(config)
            try:
                await fresh.start()
                await fresh.wait_ready()
            except Exception as exc:  # keep trying with back-off, whatever went wrong
                self.log.event("error", f"worker {config.worker_id} failed to restart: {exc}",
                               worker=config.worker_id)
                await fresh.stop(5.0, final=False)  # e.g. stuck in init_context: not left running
                if fresh.process is None:  # it never started: there is nothing to wait for
                    # (e.g. Ray could not place it): the back-off goes on growing from here
                    start_failed = True
                    self.workers[config.worker_id] = worker
                continue
            self.ready.add(config.worker_id)
            self.on_change()

    async def stop(self, timeout: float | None = None) -> None:
        """Drain every worker: HTTP then Kafka, each up to its drain timeout, then SIGKILL.
        Workers being added or removed are stopped too."""
        timeout = self._drain_timeout(timeout)
        self.stopping = True
        for task in self._keepers.values():
            task.cancel()
        workers = [*self.workers.values(), *self._joining, *self._leaving]
        await asyncio.gather(*(w.stop(timeout) for w in workers), return_exceptions=True)
        self.ready.clear()
