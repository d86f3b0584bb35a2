"""A platform process on a Ray worker: the actor that runs it, and the platform's long poll.

Job attempts (:mod:`sluice.platform.ray_jobs`) and function workers
(:mod:`sluice.platform.ray_workers`) run on Ray the same way: an actor (a subclass of
:class:`ProcessActor`, made remote under its own name) starts the very command the local
platform would, ``python -m MODULE --config FILE.json``, with a control pipe and a lifeline of
its own: the process watches the lifeline, so the actor dying (killed, its node lost) ends it.
The actor keeps the process's stdout, stderr and control lines until the platform asks
(:func:`follow` long-polls it), and its exit code once every line was handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import ray

from .build_env import BuildEnv, environ_for, python_for
from .local_workers import read_pipe, terminate
from .logs import pump
from .supervisor import OnLine

POLL_SECONDS = 5.0  # the longest one poll of the actor waits for a line


class ProcessActor:
    """On a Ray worker: one process and its lines, kept until the platform asks. Subclasses
    are the remote actors (their names show in ``ps`` as ``ray::NAME``)."""

    def __init__(self) -> None:
        self._lines: list[tuple[str, bytes]] = []
        self._more = asyncio.Event()
        self._code: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._lifeline = -1
        self._finishing: asyncio.Task[None] | None = None

    def node(self) -> str:
        """The id of the Ray node this actor runs on."""
        return str(ray.get_runtime_context().get_node_id())

    async def start(self, module: str, config_json: str, build_env: BuildEnv | None,
                    cwd: str | None = None) -> int:
        """Start ``python -m MODULE --config ...`` with the config's ``control_fd`` and
        ``parent_fd`` (the lifeline) filled in; returns its pid (on this Ray node). ``cwd``:
        where it runs, when that folder exists here (the platform's own, on its node)."""
        folder = Path(tempfile.mkdtemp(prefix="sluice-ray-"))
        control_r, control_w = os.pipe()
        lifeline_r, self._lifeline = os.pipe()  # held by this actor: it dies, the process stops
        config = {**json.loads(config_json), "control_fd": control_w, "parent_fd": lifeline_r}
        path = folder / "config.json"
        path.write_text(json.dumps(config))
        # a process that uses Ray itself (tune) joins this cluster rather than starting its own;
        # SLUICE_RAY_RESOURCES: what Ray reserved for this actor ({"CPU": 2.0, ...})
        runtime = ray.get_runtime_context()
        env = {"RAY_ADDRESS": runtime.gcs_address,
               **environ_for(build_env, os.environ), **config.get("env", {}),
               "PYTHONUNBUFFERED": "1",
               "SLUICE_RAY_RESOURCES": json.dumps(runtime.get_assigned_resources())}
        try:
            process = self._process = await asyncio.create_subprocess_exec(
                python_for(build_env), "-m", module, "--config", str(path),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=(control_w, lifeline_r), env=env,
                cwd=cwd if cwd is not None and os.path.isdir(cwd) else None,
                start_new_session=True)
        except BaseException:
            os.close(control_r)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            os.close(control_w)
            os.close(lifeline_r)
        assert process.stdout is not None and process.stderr is not None
        control = await read_pipe(control_r)
        # read as they come (a process blocked on a full pipe would never exit)
        pumps = [asyncio.create_task(pump(process.stdout, lambda line: self._add("stdout", line))),
                 asyncio.create_task(pump(process.stderr, lambda line: self._add("stderr", line))),
                 asyncio.create_task(pump(control, lambda line: self._add("control", line)))]

        async def finish() -> None:
            try:
                await process.wait()
                # what it left running goes with it, as on the local platform (and no
                # leftover child keeps its output open)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.gather(*pumps)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
                self._code = process.returncode if process.returncode is not None else -1
                self._more.set()

        self._finishing = asyncio.create_task(finish())
        return process.pid

    def _add(self, stream: str, line: bytes) -> None:
        self._lines.append((stream, line))
        self._more.set()

    async def lines(self, wait: float) -> tuple[list[tuple[str, bytes]], int | None]:
        """The lines since the last call (waiting up to ``wait`` seconds for one), and the
        process's exit code once it has exited and every line was handed over."""
        if not self._lines and self._code is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._more.wait(), wait)
        self._more.clear()
        lines, self._lines = self._lines, []
        return lines, self._code

    async def terminate(self, grace: float, group: bool = True) -> bool:
        """SIGTERM (to the process group, or with ``group=False`` to the process alone: a
        worker drains, then stops what it started itself), SIGKILL to the group after
        ``grace`` seconds; True when it took the SIGKILL. Returns once its last lines are in."""
        process = self._process
        if process is None or process.returncode is not None:
            return False
        stubborn = await terminate(process, grace, group)
        if self._finishing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._finishing), 5)
        return stubborn


async def follow(actor: Any, on_line: OnLine, wait: float = POLL_SECONDS) -> int:
    """Hand each line of the actor's process to ``on_line`` as it comes; its exit code once
    it exited and every line is in. Raises :class:`ray.exceptions.RayActorError` when the
    actor dies first."""
    while True:
        lines, code = await actor.lines.remote(wait)
        for stream, line in lines:
            on_line(stream, line)
        if code is not None:
            return int(code)
