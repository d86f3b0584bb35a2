"""Workers as processes of this machine: the embedded platform's :class:`WorkerLauncher`.

Each worker is a child of the platform in its own process group, started with the function's
listening socket (which the platform owns: every worker accepts on it, and it outlives them),
a control pipe, and the platform's lifeline (EOF on it: the platform died, the worker drains
and exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sluice.spec import FunctionSpec
from sluice.worker.config import WorkerConfig

from .build_env import BuildEnv, environ_for, python_for
from .logs import pump
from .supervisor import Launch, OnLine, describe_exit

CONTROL_LIMIT = 4 * 1024 * 1024  # the longest control line (a job run's outputs)


async def read_pipe(fd: int, limit: int = CONTROL_LIMIT) -> asyncio.StreamReader:
    """A stream over the read end of a pipe (the fd is owned by the stream from here on)."""
    reader = asyncio.StreamReader(limit=limit)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    return reader


async def terminate(process: asyncio.subprocess.Process, grace: float, group: bool = False
                    ) -> bool:
    """SIGTERM to the process (``group``: to its whole process group), then SIGKILL to its
    group once it exits or after ``grace`` seconds, so nothing it started is left running;
    True when it had not exited by then."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
        stubborn = False
    except TimeoutError:
        stubborn = True
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return stubborn


def listen(host: str, port: int | None) -> socket.socket:
    """The function's port, owned by the platform and inherited by every worker."""
    sock = socket.create_server((host, port or 0), backlog=2048)
    sock.set_inheritable(True)
    return sock


class LocalProcess:
    """A worker process of this machine, its output pumped to the supervisor."""

    def __init__(self, process: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]]
                 ) -> None:
        self.process = process
        self._pumps = pumps

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        code = await self.process.wait()
        if self._pumps:  # asyncio.wait: our caller giving up does not cancel the pumps
            await asyncio.wait(self._pumps)
        return code

    async def stop(self, timeout: float) -> bool:
        if self.process.returncode is not None:
            return False
        stubborn = await terminate(self.process, timeout)  # the worker drains, then its group
        await self.process.wait()
        return stubborn

    def describe_exit(self) -> str:
        return describe_exit(self.process.returncode)


@dataclass(frozen=True)
class LocalLaunch:
    """Starts one generation's workers here, on the function's socket and the lifeline."""

    lifeline_fd: int
    listen_fd: int | None
    build_env: BuildEnv | None  # the function's build commands' venv: its python runs them

    async def __call__(self, config: WorkerConfig, config_path: Path, on_line: OnLine
                       ) -> LocalProcess:
        control_r, control_w = os.pipe()
        config = replace(config, control_fd=control_w, parent_fd=self.lifeline_fd,
                         listen_fd=self.listen_fd)
        config_path.write_text(config.to_json())
        env = environ_for(self.build_env, os.environ)
        env.update(config.env)
        env["PYTHONUNBUFFERED"] = "1"
        fds = [control_w, self.lifeline_fd] + ([self.listen_fd] if self.listen_fd is not None
                                               else [])
        try:
            process = await asyncio.create_subprocess_exec(
                python_for(self.build_env), "-m", "sluice.worker", "--config", str(config_path),
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
        assert process.stdout is not None and process.stderr is not None
        try:
            control = await read_pipe(control_r)
        except BaseException:  # cancelled (a scale-down, a stop) before it was handed back:
            with contextlib.suppress(ProcessLookupError):  # nothing else would ever stop it
                os.killpg(process.pid, signal.SIGKILL)
            raise  # (the pipe's fd is the half-made stream's now: not closed twice here)
        pumps = [asyncio.create_task(pump(stream, _to(on_line, name)))
                 for name, stream in (("stdout", process.stdout), ("stderr", process.stderr),
                                      ("control", control))]
        return LocalProcess(process, pumps)


def _to(on_line: OnLine, stream: str) -> Callable[[bytes], None]:
    return lambda line: on_line(stream, line)


@dataclass(frozen=True)
class LocalWorkers:
    """Every worker a process of this machine, on the platform's lifeline."""

    lifeline_fd: int

    def hold_port(self, host: str, port: int | None) -> socket.socket:
        return listen(host, port)

    def launch_for(self, spec: FunctionSpec, sock: socket.socket | None,
                   build_env: BuildEnv | None) -> Launch:
        return LocalLaunch(self.lifeline_fd, sock.fileno() if sock is not None else None,
                           build_env)
