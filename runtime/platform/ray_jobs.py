"""Job attempts on Ray: each attempt a Ray actor holding the spec's resources.

``sluice up --platform ray`` hands every attempt of a job run to :class:`RayAttempts` instead of
a local process. The attempt's actor (:class:`AttemptActor`) is placed by Ray with ``num_cpus``
from ``resources.cpu`` (1 when unset), ``num_gpus`` from ``resources.gpu`` and ``memory`` from
``resources.memory`` (the job reads them in ``SLUICE_RAY_RESOURCES``). On its Ray worker it
runs the very command a local attempt runs, ``python -m sluice.worker.job --config RUN.json``,
with a control pipe and a lifeline of its own (the actor dying ends the job's process group).
The platform long-polls the actor for the process's output and control lines and writes them to
the run's log exactly as a local attempt does, so retries, timeouts, cancel, progress, metrics
and artifacts are the machinery of :mod:`sluice.platform.jobs`, unchanged.

A job asking for more CPUs, GPUs or memory than the whole Ray cluster has fails at once, not
retried, saying so (Ray would leave it pending forever). An actor that dies mid-run (killed,
its node lost) fails the attempt with the reason, and the spec's retries follow, as after a
local crash.

Only jobs run on Ray so far: http, serving and Kafka functions are still local worker
processes. The handler's source folder and build environment are paths of the platform's
machine, so a multi-node cluster needs them on a shared filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError

from sluice.errors import PlatformError
from sluice.spec import Resources
from sluice.worker.job import JobConfig

from .build_env import BuildEnv, environ_for, python_for
from .job_process import Attempt, OnMessage, attempt_outcome, reported_outputs, take_control
from .jobs import JobTarget
from .logs import FunctionLog, pump
from .states import RunState

POLL_SECONDS = 5.0  # the longest one poll of the actor waits for a line
PLACEMENT_NOTE_SECONDS = 5.0  # an attempt not started by then gets a note in the run's log
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``2G``, ``1000``) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?", quantity)
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(match[1]) * _UNITS[match[2] or ""])


def ray_resources(resources: Resources) -> dict[str, Any]:
    """The actor options that reserve what a spec's resources ask for (one CPU when unset, as
    a Ray task)."""
    options: dict[str, Any] = {"num_cpus": resources.cpu if resources.cpu is not None else 1,
                               "num_gpus": resources.gpu}
    if resources.memory is not None:
        options["memory"] = memory_bytes(resources.memory)
    return options


def unplaceable(options: dict[str, Any], cluster: dict[str, float]) -> str | None:
    """Why a cluster with these total resources (all its nodes together) could never run the
    attempt; None when it could. A request no single node can hold is not caught here."""
    for option, name, unit, scale in (("num_cpus", "CPU", "CPU(s)", 1),
                                      ("num_gpus", "GPU", "GPU(s)", 1),
                                      ("memory", "memory", "MiB of memory", 2**20)):
        wanted = options.get(option) or 0
        have = cluster.get(name, 0)
        if wanted > have:
            return (f"it asks for {wanted / scale:g} {unit} but the whole Ray cluster has "
                    f"{have / scale:g}; lower the function's resources or add nodes")
    return None


@ray.remote(max_restarts=0)
class AttemptActor:
    """On a Ray worker: one attempt's job process, its lines kept until the platform asks."""

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

    async def start(self, config_json: str, build_env: BuildEnv | None) -> int:
        """Start the job process; returns its pid (on this Ray node)."""
        folder = Path(tempfile.mkdtemp(prefix="sluice-ray-attempt-"))
        control_r, control_w = os.pipe()
        lifeline_r, self._lifeline = os.pipe()  # held by this actor: it dies, the job stops
        config = JobConfig(**{**json.loads(config_json), "control_fd": control_w,
                              "parent_fd": lifeline_r})
        path = folder / "run.json"
        path.write_text(config.to_json())
        # a job that uses Ray itself (tune) joins this cluster rather than starting its own;
        # SLUICE_RAY_RESOURCES: what Ray reserved for the attempt ({"CPU": 2.0, ...})
        runtime = ray.get_runtime_context()
        env = {"RAY_ADDRESS": runtime.gcs_address,
               **environ_for(build_env, os.environ), **config.env, "PYTHONUNBUFFERED": "1",
               "SLUICE_RAY_RESOURCES": json.dumps(runtime.get_assigned_resources())}
        try:
            process = self._process = await asyncio.create_subprocess_exec(
                python_for(build_env), "-m", "sluice.worker.job", "--config", str(path),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=(control_w, lifeline_r), env=env,
                start_new_session=True)
        except BaseException:
            os.close(control_r)
            raise
        finally:
            os.close(control_w)
            os.close(lifeline_r)
        assert process.stdout is not None and process.stderr is not None
        control = asyncio.StreamReader(limit=4 * 1024 * 1024)
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control),
                                     os.fdopen(control_r, "rb", buffering=0))
        pumps = [pump(process.stdout, lambda line: self._add("stdout", line)),
                 pump(process.stderr, lambda line: self._add("stderr", line)),
                 pump(control, lambda line: self._add("control", line))]

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

    async def terminate(self, grace: float) -> bool:
        """SIGTERM to the job's process group, SIGKILL after ``grace`` seconds; True when it
        took the SIGKILL. Returns once the process's last lines are in."""
        process = self._process
        if process is None or process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
            stubborn = False
        except TimeoutError:
            stubborn = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._finishing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._finishing), 5)
        return stubborn


@dataclass
class RayAttempt:
    """The platform's side of one attempt on Ray: start with :meth:`run`; cancelling the task
    that runs it stops the job process through the actor, then kills the actor."""

    target: JobTarget
    config: JobConfig
    logs: tuple[FunctionLog, ...]
    on_message: OnMessage
    _messages: list[dict[str, Any]] = field(default_factory=list)

    async def run(self) -> Attempt:
        spec = self.target.spec
        options = ray_resources(self.target.spec.resources)
        why = unplaceable(options, await asyncio.to_thread(ray.cluster_resources))
        if why is not None:
            return Attempt(RunState.FAILED, f"Ray cannot place this run: {why}", retry=False)
        actor = AttemptActor.options(**options).remote()  # type: ignore[attr-defined]
        try:
            try:
                return await asyncio.wait_for(self._follow(actor), spec.timeout)
            except TimeoutError:
                self._event("error", f"attempt {self.config.attempt} ran past the function's "
                            f"timeout of {spec.timeout:g}s; stopping it")
                code = await self._terminate(actor)
                return Attempt(RunState.TIMED_OUT, f"ran past its timeout of {spec.timeout:g}s "
                               "and was stopped", reported_outputs(self._messages),
                               exit_code=code)
            except RayActorError as exc:
                return Attempt(RunState.FAILED, "the Ray actor running it died before the run "
                               f"reported a result: {_first_line(exc)}",
                               reported_outputs(self._messages))
        except asyncio.CancelledError:
            await self._terminate(actor)
            raise
        finally:
            with contextlib.suppress(Exception):
                ray.kill(actor)

    async def _follow(self, actor: Any) -> Attempt:
        config = replace(self.config, control_fd=None, parent_fd=None)
        starting = asyncio.ensure_future(actor.start.remote(config.to_json(),
                                                            self.target.build_env))
        try:
            done, _ = await asyncio.wait({starting}, timeout=PLACEMENT_NOTE_SECONDS)
            if not done:  # a busy cluster: say what it waits for, rather than look stuck
                options = ray_resources(self.target.spec.resources)
                wanted = ", ".join(f"{k}={v:g}" for k, v in options.items())
                self._event("info", f"attempt {self.config.attempt} is waiting for Ray to "
                            f"place it ({wanted}); the wait counts against its timeout")
            pid = await starting
        finally:
            starting.cancel()  # when we were cancelled first: nobody else awaits it
        self._event("info", f"attempt {self.config.attempt} runs on Ray (pid {pid} on node "
                    f"{await actor.node.remote()})")
        while True:
            lines, code = await actor.lines.remote(POLL_SECONDS)
            self._take(lines)
            if code is not None:
                return attempt_outcome(self._messages, code)

    async def _terminate(self, actor: Any) -> int | None:
        """Stop the job process through its actor; its exit code, if the actor says."""
        grace = self.target.spec.termination_grace
        with contextlib.suppress(RayActorError, TimeoutError):
            if await asyncio.wait_for(actor.terminate.remote(grace), grace + 10):
                self._event("warn", f"the run's process did not exit within {grace:g}s of "
                            "SIGTERM; killing its process group")
            lines, code = await asyncio.wait_for(actor.lines.remote(0), 10)
            self._take(lines)
            return code  # type: ignore[no-any-return]
        return None

    def _take(self, lines: list[tuple[str, bytes]]) -> None:
        for stream, line in lines:
            if stream != "control":
                for log in self.logs:
                    log.worker_output(line, None, stream, run=self.config.run_id)
                continue
            take_control(line, self._messages, self.on_message)

    def _event(self, level: str, message: str) -> None:
        for log in self.logs:
            log.event(level, message, run=self.config.run_id, attempt=self.config.attempt)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True)
class RayAttempts:
    """The :class:`~sluice.platform.jobs.AttemptRunner` of ``sluice up --platform ray``."""

    async def __call__(self, target: JobTarget, config: JobConfig, config_path: Path,
                       logs: tuple[FunctionLog, ...], on_message: OnMessage) -> Attempt:
        return await RayAttempt(target, config, logs, on_message).run()


def connect(address: str | None, num_cpus: int | None = None) -> str:
    """Join the Ray cluster at ``address`` (``auto``: the one ``ray start`` started here), or
    start a local one with ``num_cpus`` CPUs (all of this machine's when None). Returns where
    Ray is, for the startup banner and ``sluice info``. Ray's own services listen on the host's
    address, not only the loopback (Ray does not let us bind them); its dashboard stays off."""
    try:
        # "local": a Ray of our own, even where RAY_ADDRESS is set or `ray start` left its
        # address in /tmp/ray (a bare ray.init() would join that cluster instead)
        ray.init(address=address or "local", num_cpus=None if address else num_cpus,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        hint = "start one with `ray start --head`, or leave out --ray-address"
        if address not in (None, "auto") and os.environ.get("RAY_AUTH_MODE") != "token":
            # Ray sends its token (~/.ray/auth_token) to an explicit address only when asked
            hint = ("if the cluster uses Ray's token authentication, as `ray start` does by "
                    "default, set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN when "
                    "~/.ray/auth_token is not the cluster's), or use --ray-address auto on its "
                    "head node")
        raise PlatformError(f"cannot start or join {where}: {_first_line(exc)} ({hint})"
                            ) from None
    return str(ray.get_runtime_context().gcs_address)


def disconnect() -> None:
    """Leave the cluster (a local Ray started by :func:`connect` stops with it)."""
    ray.shutdown()
