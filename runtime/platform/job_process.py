"""One attempt of a job run: its process, its output, its deadline.

The process runs in its own process group (its own session), so that a timeout or a cancel
stops everything it started: SIGTERM to the group, ``termination_grace`` seconds to exit, then
SIGKILL to the group. A process that exits on its own has the rest of its group killed too: a
run leaves nothing running behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sluice.worker.config import EXIT_STARTUP_FAILED
from sluice.worker.job import JobConfig

from .build_env import BuildEnv, environ_for, python_for
from .local_workers import terminate
from .logs import FunctionLog, pump
from .states import RunState
from .supervisor import describe_exit

OnMessage = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Attempt:
    """How one attempt ended."""

    status: RunState  # SUCCEEDED, FAILED or TIMED_OUT
    reason: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    retry: bool = True  # False: another attempt cannot help (the handler does not load)
    exit_code: int | None = None


def attempt_outcome(messages: list[dict[str, Any]], code: int) -> Attempt:
    """How an attempt ended, from its process's control messages and exit code."""
    final = next((m for m in reversed(messages)
                  if m.get("event") in ("succeeded", "error", "failed")), None)
    if final is not None and final["event"] == "succeeded" and code == 0:
        return Attempt(RunState.SUCCEEDED, "", dict(final.get("outputs") or {}), exit_code=0)
    if final is not None and final["event"] in ("error", "failed"):
        return Attempt(RunState.FAILED, str(final.get("error")), reported_outputs(messages),
                       retry=bool(final.get("retry", True)) and code != EXIT_STARTUP_FAILED,
                       exit_code=code)
    why = f"the run's process {describe_exit(code)}"
    if code == -signal.SIGKILL:
        why += " (out of memory?)"
    return Attempt(RunState.FAILED, why + " before it reported a result",
                   reported_outputs(messages), exit_code=code)


def reported_outputs(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics and artifacts reported before the attempt ended without a result."""
    metrics: dict[str, Any] = {}
    artifacts: dict[str, Any] = {}
    for message in messages:
        metrics.update(message.get("metrics") or {})
        artifacts.update(message.get("artifacts") or {})
    return {"metrics": metrics, "artifacts": artifacts}


@dataclass
class AttemptProcess:
    """Start with :meth:`run`; cancelling the task that runs it stops the process group."""

    config: JobConfig
    config_path: Path
    logs: tuple[FunctionLog, ...]  # the run's own log, then the function's
    lifeline_fd: int
    timeout: float
    grace: float
    on_message: OnMessage
    build_env: BuildEnv | None = None  # the function's build commands' venv: its python runs it
    process: asyncio.subprocess.Process | None = None
    _messages: list[dict[str, Any]] = field(default_factory=list)

    async def run(self) -> Attempt:
        control_r, control_w = os.pipe()
        config = replace(self.config, control_fd=control_w, parent_fd=self.lifeline_fd)
        self.config_path.write_text(config.to_json())
        env = {**environ_for(self.build_env, os.environ), **self.config.env,
               "PYTHONUNBUFFERED": "1"}
        try:
            self.process = await asyncio.create_subprocess_exec(
                python_for(self.build_env), "-m", "sluice.worker.job", "--config",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=(control_w, self.lifeline_fd), env=env,
                start_new_session=True,
            )
        except BaseException:
            os.close(control_r)
            raise
        finally:
            os.close(control_w)
        process = self.process
        assert process.stdout is not None and process.stderr is not None
        pumps = [asyncio.create_task(self._pump(process.stdout, "stdout")),
                 asyncio.create_task(self._pump(process.stderr, "stderr")),
                 asyncio.create_task(self._control(control_r))]
        try:
            try:
                code = await asyncio.wait_for(process.wait(), self.timeout)
            except TimeoutError:
                self._event("error", f"attempt {self.config.attempt} ran past the function's "
                            f"timeout of {self.timeout:g}s; stopping it")
                await self._terminate()
                await asyncio.gather(*pumps, return_exceptions=True)
                return Attempt(RunState.TIMED_OUT, f"ran past its timeout of {self.timeout:g}s "
                               "and was stopped", self._outputs(), exit_code=process.returncode)
            self._kill_group()  # before the pumps: a leftover child may hold its output open
            await asyncio.gather(*pumps, return_exceptions=True)
            return self._outcome(code)
        except asyncio.CancelledError:
            await self._terminate()
            raise
        finally:
            self._kill_group()  # whatever it left behind (or all of it, if we were interrupted)
            for pump in pumps:
                pump.cancel()

    async def _terminate(self) -> None:
        """SIGTERM to the group, then SIGKILL after the grace period."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        if await terminate(process, self.grace, group=True):
            self._event("warn", f"the run's process did not exit within {self.grace:g}s of "
                        "SIGTERM; its process group was killed")
        await process.wait()

    def _kill_group(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def _outcome(self, code: int) -> Attempt:
        return attempt_outcome(self._messages, code)

    def _outputs(self) -> dict[str, Any]:
        return reported_outputs(self._messages)

    def _event(self, level: str, message: str) -> None:
        for log in self.logs:
            log.event(level, message, run=self.config.run_id, attempt=self.config.attempt)

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        def write(line: bytes) -> None:
            for log in self.logs:
                log.worker_output(line, None, name, run=self.config.run_id)

        await pump(stream, write)

    async def _control(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=4 * 1024 * 1024)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
        try:
            while line := await reader.readline():
                take_control(line, self._messages, self.on_message)
        finally:
            transport.close()


def take_control(line: bytes, messages: list[dict[str, Any]], on_message: OnMessage) -> None:
    """One line from an attempt's control channel: a JSON message is kept (progress, which can
    be many, is not) and handed to ``on_message``; anything else is skipped."""
    try:
        message = json.loads(line)
    except ValueError:
        return
    if isinstance(message, dict):
        if message.get("event") != "progress":
            messages.append(message)
        on_message(message)
