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

The actor and the long poll are :mod:`sluice.platform.ray_process`'s, shared with the
workers of http, serving and Kafka functions (:mod:`sluice.platform.ray_workers`). The handler's
source folder and build environment are paths of the platform's machine, so a multi-node
cluster needs them on a shared filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from sluice.worker.job import JobConfig

from .job_process import Attempt, OnMessage, attempt_outcome, reported_outputs, take_control
from .jobs import JobTarget
from .logs import FunctionLog
from .ray_cluster import first_line, memory_bytes, ray_resources, unplaceable
from .ray_process import ProcessActor, follow
from .states import RunState

# memory_bytes, ray_resources and unplaceable are ray_cluster's, named here as they were first
__all__ = ["AttemptActor", "RayAttempt", "RayAttempts", "memory_bytes", "ray_resources",
           "unplaceable"]

PLACEMENT_NOTE_SECONDS = 5.0  # an attempt not started by then gets a note in the run's log


@ray.remote(max_restarts=0)
class AttemptActor(ProcessActor):
    """On a Ray worker: one attempt's job process (``python -m sluice.worker.job``)."""


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
                               f"reported a result: {first_line(exc)}",
                               reported_outputs(self._messages))
        except asyncio.CancelledError:
            await self._terminate(actor)
            raise
        finally:
            with contextlib.suppress(Exception):
                ray.kill(actor)

    async def _follow(self, actor: Any) -> Attempt:
        config = replace(self.config, control_fd=None, parent_fd=None)
        starting = asyncio.ensure_future(actor.start.remote(
            "sluice.worker.job", config.to_json(), self.target.build_env))
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
        return attempt_outcome(self._messages, await follow(actor, self._take))

    async def _terminate(self, actor: Any) -> int | None:
        """Stop the job process through its actor; its exit code, if the actor says."""
        grace = self.target.spec.termination_grace
        with contextlib.suppress(RayActorError, TimeoutError):
            if await asyncio.wait_for(actor.terminate.remote(grace), grace + 10):
                self._event("warn", f"the run's process did not exit within {grace:g}s of "
                            "SIGTERM; killing its process group")
            lines, code = await asyncio.wait_for(actor.lines.remote(0), 10)
            for stream, line in lines:
                self._take(stream, line)
            return code  # type: ignore[no-any-return]
        return None

    def _take(self, stream: str, line: bytes) -> None:
        if stream == "control":
            take_control(line, self._messages, self.on_message)
            return
        for log in self.logs:
            log.worker_output(line, None, stream, run=self.config.run_id)

    def _event(self, level: str, message: str) -> None:
        for log in self.logs:
            log.event(level, message, run=self.config.run_id, attempt=self.config.attempt)


@dataclass(frozen=True)
class RayAttempts:
    """The :class:`~sluice.platform.jobs.AttemptRunner` of ``sluice up --platform ray``."""

    async def __call__(self, target: JobTarget, config: JobConfig, config_path: Path,
                       logs: tuple[FunctionLog, ...], on_message: OnMessage) -> Attempt:
        return await RayAttempt(target, config, logs, on_message).run()

