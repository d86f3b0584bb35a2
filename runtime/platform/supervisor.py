"""Worker processes of one function: start them, watch them, restart them, drain them.

All workers of a function share one listening socket that the platform owns, so a new version's
workers start accepting on the same port before the old ones drain (no failed request during a
redeploy), and a crashed worker's connections are simply taken by the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sluice.errors import DeployError
from sluice.worker.config import EXIT_OK, EXIT_RECYCLED, WorkerConfig

from .build_env import BuildEnv, environ_for, python_for
from .logs import FunctionLog, pump

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


def listen(host: str, port: int | None) -> socket.socket:
    """The function's port, owned by the platform and inherited by every worker."""
    sock = socket.create_server((host, port or 0), backlog=2048)
    sock.set_inheritable(True)
    return sock


class WorkerProcess:
    """One worker process and its pipes."""

    def __init__(self, config: WorkerConfig, config_path: Path, log: FunctionLog,
                 on_health: Callable[[int, bool, str], None] | None = None,
                 build_env: BuildEnv | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.log = log
        self.on_health = on_health
        self.build_env = build_env  # the function's build commands' venv: its python runs it
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.stopping = False
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pumps: list[asyncio.Task[None]] = []

    @property
    def worker_id(self) -> int:
        return self.config.worker_id

    async def start(self, lifeline_fd: int, listen_fd: int | None) -> None:
        control_r, control_w = os.pipe()
        config = replace(self.config, control_fd=control_w, parent_fd=lifeline_fd,
                         listen_fd=listen_fd)
        self.config_path.write_text(config.to_json())
        env = environ_for(self.build_env, os.environ)
        env.update(self.config.env)
        env["PYTHONUNBUFFERED"] = "1"
        fds = [control_w, lifeline_fd] + ([listen_fd] if listen_fd is not None else [])
        try:
            self.process = await asyncio.create_subprocess_exec(
                python_for(self.build_env), "-m", "sluice.worker", "--config",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=fds,
                env=env,
                start_new_session=True,  # its own process group: stop() signals all it started
            )
        except BaseException:
            os.close(control_r)
            raise
        finally:
            os.close(control_w)
        self.started_at = time.monotonic()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(self.process.stdout, "stdout")),
            asyncio.create_task(self._pump(self.process.stderr, "stderr")),
            asyncio.create_task(self._control(control_r)),
        ]

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        await pump(stream, lambda line: self.log.worker_output(line, self.worker_id, name))

    async def _control(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                message = json.loads(line)
                if message.get("event") == "ready" and not self._ready.done():
                    self._ready.set_result(None)
                elif message.get("event") == "failed" and not self._ready.done():
                    self._ready.set_exception(DeployError(str(message.get("error"))))
                elif message.get("event") == "health" and self.on_health is not None:
                    self.on_health(self.worker_id, bool(message.get("ok")),
                                   str(message.get("reason", "")))
        finally:
            transport.close()

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
        if exited in done:
            await asyncio.sleep(0.05)  # let the control pipe deliver the reason, if any
            if self._ready.done():
                self._ready.result()
            raise DeployError(f"worker {self.worker_id} {describe_exit(self.process.returncode)}"
                              " before it was ready (see `sluice logs`)")
        raise DeployError(f"worker {self.worker_id} was not ready within {timeout:g}s")

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        return code

    async def stop(self, timeout: float = STOP_TIMEOUT, final: bool = True) -> None:
        """SIGTERM (the worker drains), then SIGKILL to its whole group after ``timeout``.
        ``final=False``: a failed restart being cleared away; its keeper goes on restarting."""
        self.stopping = final
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            self.log.event("warn", f"worker {self.worker_id} did not stop within {timeout:g}s;"
                           " killing it", worker=self.worker_id)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


OnChange = Callable[[], None]


class WorkerSet:
    """The workers of one generation of a function, kept alive until stopped."""

    def __init__(
        self,
        configs: list[WorkerConfig],
        state_dir: Path,
        log: FunctionLog,
        lifeline_fd: int,
        listen_fd: int | None,
        on_change: OnChange,
        on_restart: Callable[[int], None],
        build_env: BuildEnv | None = None,
    ) -> None:
        self.configs = configs
        self.build_env = build_env
        self.state_dir = state_dir
        self.log = log
        self.lifeline_fd = lifeline_fd
        self.listen_fd = listen_fd
        self.on_change = on_change
        self.on_restart = on_restart
        self.workers: dict[int, WorkerProcess] = {}
        self.ready: set[int] = set()
        self.unhealthy: dict[int, str] = {}  # worker -> why (e.g. its Kafka broker is down)
        self.restarts = 0
        self.stopping = False
        self._keepers: list[asyncio.Task[None]] = []

    def _new(self, config: WorkerConfig) -> WorkerProcess:
        path = self.state_dir / f"worker-{config.generation}-{config.worker_id}.json"
        worker = WorkerProcess(config, path, self.log, self._health, self.build_env)
        self.workers[config.worker_id] = worker
        return worker

    def _health(self, worker_id: int, ok: bool, reason: str) -> None:
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
            for worker in workers:
                await worker.start(self.lifeline_fd, self.listen_fd)
            await asyncio.gather(*(w.wait_ready(timeout) for w in workers))
        except BaseException:
            await self.stop(timeout=5.0)
            raise
        self.ready = {w.worker_id for w in workers}
        self._keepers = [asyncio.create_task(self._keep(w.config)) for w in workers]

    async def _keep(self, config: WorkerConfig) -> None:
        """Restart this worker whenever it dies, with back-off while it keeps failing."""
        failures = 0
        while not self.stopping:
            worker = self.workers[config.worker_id]
            code = await worker.wait()
            if self.stopping or worker.stopping:
                return
            self.ready.discard(config.worker_id)
            self.unhealthy.pop(config.worker_id, None)
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
                           f"worker {config.worker_id} {describe_exit(code)}; restarting"
                           + (f" in {delay:.1f}s" if delay else ""), worker=config.worker_id)
            self.restarts += 1
            self.on_restart(code)
            if delay:
                await asyncio.sleep(delay)
            if self.stopping:
                return
            fresh = self._new(config)
            try:
                await fresh.start(self.lifeline_fd, self.listen_fd)
                await fresh.wait_ready()
            except Exception as exc:  # keep trying with back-off, whatever went wrong
                self.log.event("error", f"worker {config.worker_id} failed to restart: {exc}",
                               worker=config.worker_id)
                await fresh.stop(5.0, final=False)  # e.g. stuck in init_context: not left running
                if fresh.process is None:  # it never started: there is nothing to wait for
                    failures += 1
                    await asyncio.sleep(restart_delay(failures))
                    self.workers[config.worker_id] = worker
                continue
            self.ready.add(config.worker_id)
            self.on_change()

    async def stop(self, timeout: float | None = None) -> None:
        """Drain every worker: HTTP then Kafka, each up to its drain timeout, then SIGKILL."""
        if timeout is None:
            timeout = 2 * max((c.drain_timeout for c in self.configs), default=30.0) + 5
        self.stopping = True
        for task in self._keepers:
            task.cancel()
        await asyncio.gather(*(w.stop(timeout) for w in list(self.workers.values())),
                             return_exceptions=True)
        self.ready.clear()
