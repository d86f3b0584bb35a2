"""Runs of job functions: an attempt per process (or Ray task), retries, timeouts, cancel.

Every run is a :class:`~sluice.platform.store.RunRecord` in the platform's SQLite state, moved
through :data:`~sluice.platform.states.RUN_ALLOWED`. A run's lines (its handler's logs and
prints, the platform's notes about it) go to its own log, ``logs/runs/<run id>.jsonl``, and to
the function's log. A run that was pending or running when the platform died is marked failed
when the platform starts again (:meth:`Jobs.recover`): nothing is left "running" forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from sluice.errors import DeployError, NotFoundError, PlatformError, SpecError
from sluice.params import check_params
from sluice.spec import FunctionSpec
from sluice.worker.job import JobConfig

from . import metrics
from .build_env import BuildEnv, environ_for, python_for
from .job_process import Attempt, AttemptProcess, OnMessage
from .logs import FunctionLog
from .states import RunState, can_move_run
from .store import RunRecord, Store

MAX_BACKOFF = 600.0


@dataclass(frozen=True)
class JobTarget:
    """The deployed version of a job function that a run executes."""

    spec: FunctionSpec
    generation: int
    source_dir: Path | None
    log: FunctionLog
    build_env: BuildEnv | None = None  # its build commands' venv (None: the platform's python)


@dataclass
class _Live:
    """A run not finished yet, as this platform holds it."""

    function: str
    trigger: str | None  # the cron trigger's name
    log: FunctionLog  # the run's own log; followers end when it closes
    task: asyncio.Task[None] | None = None
    # how a cancel ends it: cancelled by a user or a newer fire, failed when the platform stops
    stopping: tuple[RunState, str] = (RunState.CANCELLED, "cancelled")


def job_config(target: JobTarget, run_id: str, base_env: dict[str, str] | None = None,
               **run: Any) -> JobConfig:
    """What a job process is told about the function (and, for a run, about the run).
    ``base_env``: the platform's own settings for every job (the artifact store); the spec's
    env comes after it. ``SLUICE_GPUS`` is the spec's GPU count (a training job picks its
    device by it)."""
    env = {**(base_env or {}), "SLUICE_GPUS": str(target.spec.resources.gpu),
           **target.spec.env}
    return JobConfig(function=target.spec.name, handler=target.spec.handler,
                     source_dir=str(target.source_dir) if target.source_dir else None,
                     run_id=run_id, env=env, **run)


class AttemptRunner(Protocol):
    """Runs one attempt of a run somewhere (a process here, a task on Ray) and says how it
    ended; cancelling the task that awaits it stops the attempt."""

    async def __call__(self, target: JobTarget, config: JobConfig, config_path: Path,
                       logs: tuple[FunctionLog, ...], on_message: OnMessage) -> Attempt: ...


@dataclass(frozen=True)
class LocalAttempts:
    """Each attempt a process of this machine (:class:`AttemptProcess`), on the platform's
    lifeline."""

    lifeline_fd: int

    async def __call__(self, target: JobTarget, config: JobConfig, config_path: Path,
                       logs: tuple[FunctionLog, ...], on_message: OnMessage) -> Attempt:
        return await AttemptProcess(config, config_path, logs, self.lifeline_fd,
                                    target.spec.timeout, target.spec.termination_grace,
                                    on_message, target.build_env).run()


class _Retry(Exception):
    """An attempt failed and may be tried again (tenacity's signal)."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.reason)
        self.attempt = attempt


def backoff(spec: FunctionSpec) -> wait_exponential:
    """``retry_backoff`` seconds before the second attempt, doubling, at most 10 minutes."""
    return wait_exponential(multiplier=spec.retry_backoff, min=0, max=MAX_BACKOFF)


class Jobs:
    """Starts, tracks and stops the runs of every job function on this platform."""

    def __init__(self, store: Store, logs_dir: Path, work_dir: Path, lifeline_fd: int,
                 platform_url: str | None, base_env: dict[str, str] | None = None,
                 runner: AttemptRunner | None = None) -> None:
        self.store = store
        self.runner = runner or LocalAttempts(lifeline_fd)  # where each attempt runs
        self.base_env = dict(base_env or {})  # given to every run (see job_config)
        self.logs_dir = logs_dir  # run logs: <logs_dir>/<run id>.jsonl
        self.work_dir = work_dir  # attempt configs: <work_dir>/<function>/runs/
        self.lifeline_fd = lifeline_fd
        self.platform_url = platform_url
        self._live: dict[str, _Live] = {}  # runs not finished yet

    # -- queries -------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run with id {run_id!r} (see `sluice runs`)")
        return run

    def active(self, function: str, trigger_name: str | None = None) -> list[str]:
        """Ids of the function's runs not finished yet (those from one cron trigger, if given)."""
        return [run_id for run_id, live in self._live.items()
                if live.function == function and trigger_name in (None, live.trigger)]

    def log_path(self, run_id: str) -> Path:
        return self.logs_dir / f"{run_id}.jsonl"

    def logs(self, run_id: str, tail: int = 0, follow: bool = False) -> AsyncIterator[bytes]:
        """A run's lines (the last ``tail``; 0: all). Following a run still going wakes on
        each new line and ends when the run does. Raises NotFoundError at once."""
        self.get(run_id)
        live = self._live.get(run_id)
        if live is not None:
            return live.log.read(tail, follow)
        return _read_lines(self.log_path(run_id), tail)

    # -- lifecycle -----------------------------------------------------------------------------
    def recover(self) -> list[RunRecord]:
        """Runs the platform was running when it died: marked failed, with the reason."""
        recovered = []
        for run in self.store.unfinished_runs():
            where = f" (pid {run.pid})" if run.pid else ""
            failed = replace(run, status=RunState.FAILED, ended=time.time(),
                             reason=f"the platform stopped while this run was {run.status}"
                             f"{where}; it did not finish")
            self.store.put_run(failed)
            metrics.RUNS.labels(run.function, run.trigger, str(RunState.FAILED)).inc()
            recovered.append(failed)
        return recovered

    async def stop(self) -> None:
        """The platform is stopping: every run is stopped and recorded as failed."""
        for live in self._live.values():
            live.stopping = (RunState.FAILED, "the platform was stopped during the run")
            if live.task is not None:
                live.task.cancel()
        await asyncio.gather(*(live.task for live in self._live.values() if live.task),
                             return_exceptions=True)
        for run_id in list(self._live):
            self._settle(run_id)

    async def check(self, target: JobTarget, timeout: float = 120.0) -> None:
        """A deploy's check: the handler imports in a fresh process, or DeployError says why."""
        folder = self.work_dir / target.spec.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"check-{target.generation}.json"
        path.write_text(job_config(target, "check").to_json())
        process = await asyncio.create_subprocess_exec(
            python_for(target.build_env), "-m", "sluice.worker.job", "--check", "--config",
            str(path), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**environ_for(target.build_env, os.environ), **target.spec.env},
            start_new_session=True)
        try:
            _, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise DeployError(f"importing the handler took over {timeout:g}s") from None
        finally:
            path.unlink(missing_ok=True)
        if process.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            raise DeployError(lines[-1] if lines else f"the handler check exited with "
                              f"{process.returncode}")

    # -- runs ----------------------------------------------------------------------------------
    def submit(self, target: JobTarget, params: Any, trigger: str,
               trigger_name: str | None = None, scheduled: float | None = None) -> RunRecord:
        """Record a run and start it; returns it pending. Bad params raise SpecError."""
        try:
            merged = check_params(target.spec.params, params)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        run = RunRecord(id=self._new_id(target.spec.name), function=target.spec.name,
                        generation=target.generation, version=target.spec.version,
                        trigger=trigger, trigger_name=trigger_name, params=merged,
                        status=RunState.PENDING, created=time.time(),
                        max_attempts=target.spec.retries + 1, scheduled=scheduled)
        self.store.put_run(run)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        live = self._live[run.id] = _Live(run.function, trigger_name,
                                          FunctionLog(self.log_path(run.id), run.function))
        metrics.RUNS_RUNNING.labels(run.function).inc()
        live.task = asyncio.create_task(self._execute(run, target))
        return run

    def skip(self, target: JobTarget, trigger_name: str, reason: str,
             scheduled: float | None = None) -> RunRecord:
        """A cron fire that is not run, recorded so that `sluice runs` shows why."""
        now = time.time()
        run = RunRecord(id=self._new_id(target.spec.name), function=target.spec.name,
                        generation=target.generation, version=target.spec.version,
                        trigger="cron", trigger_name=trigger_name, params={},
                        status=RunState.SKIPPED, created=now, ended=now, reason=reason,
                        scheduled=scheduled)
        self.store.put_run(run)
        metrics.RUNS.labels(run.function, "cron", str(RunState.SKIPPED)).inc()
        return run

    async def cancel(self, run_id: str, reason: str = "cancelled by `sluice runs cancel`",
                     ) -> RunRecord:
        """Stop a run (its process group gets SIGTERM, then SIGKILL after the grace period)."""
        run = self.get(run_id)
        live = self._live.get(run_id)
        if run.status.finished or live is None or live.task is None:
            raise PlatformError(f"run {run_id} has already finished ({run.status})")
        live.stopping = (RunState.CANCELLED, reason)
        live.task.cancel()
        await asyncio.wait({live.task})
        self._settle(run_id)
        return self.get(run_id)

    def _settle(self, run_id: str) -> None:
        """A task cancelled before its first step never ran its own ending: end it here."""
        live = self._live.get(run_id)
        if live is None:
            return
        run = self.get(run_id)
        if not run.status.finished:
            self._finish(run, *live.stopping, {}, lambda *a, **k: None)
        self._cleanup(run)

    def _cleanup(self, run: RunRecord) -> None:
        live = self._live.pop(run.id, None)
        if live is None:
            return
        metrics.RUNS_RUNNING.labels(run.function).dec()
        live.log.close()

    def task(self, run_id: str) -> asyncio.Task[None] | None:
        live = self._live.get(run_id)
        return live.task if live is not None else None

    def _new_id(self, function: str) -> str:
        while True:
            run_id = f"{function}-{secrets.token_hex(4)}"
            if self.store.get_run(run_id) is None:
                return run_id

    def _move(self, run: RunRecord, status: RunState, **changes: Any) -> RunRecord:
        if status != run.status and not can_move_run(run.status, status):
            raise PlatformError(f"run {run.id}: cannot go from {run.status} to {status}")
        run = replace(run, status=status, **changes)
        self.store.put_run(run)
        return run

    async def _execute(self, run: RunRecord, target: JobTarget) -> None:
        live = self._live[run.id]
        logs = (live.log, target.log)
        spec = target.spec
        started = time.time()

        def note(level: str, message: str, **fields: Any) -> None:
            for log in logs:
                log.event(level, message, run=run.id, **fields)

        note("info", f"run {run.id} started by {run.trigger}"
             + (f"/{run.trigger_name}" if run.trigger_name else ""), params=run.params)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(run.max_attempts), wait=backoff(spec),
            retry=retry_if_exception_type(_Retry), reraise=True,
            before_sleep=lambda state: self._waiting(run.id, state, note),
        )
        outcome: Attempt
        try:
            try:
                async for attempt in retrying:
                    with attempt:
                        number = attempt.retry_state.attempt_number
                        outcome = await self._attempt(self.get(run.id), number, target, logs,
                                                      started)
                        if outcome.status != RunState.SUCCEEDED and outcome.retry:
                            raise _Retry(outcome)
            except _Retry as exc:
                outcome = exc.attempt
            final = self.get(run.id)
            reason = outcome.reason
            if final.attempt > 1 and outcome.status != RunState.SUCCEEDED:
                reason += f" (attempt {final.attempt} of {final.max_attempts})"
            self._finish(replace(final, exit_code=outcome.exit_code), outcome.status, reason,
                         outcome.outputs, note)
        except asyncio.CancelledError:
            current = self.get(run.id)
            self._finish(current, *live.stopping, current.outputs, note)
        except Exception as exc:  # a bug of ours must not leave the run "running"
            self._finish(self.get(run.id), RunState.FAILED,
                         f"the platform failed to run it: {type(exc).__name__}: {exc}", {}, note)
        finally:
            self._cleanup(run)

    async def _attempt(self, run: RunRecord, number: int, target: JobTarget,
                       logs: tuple[FunctionLog, ...], started: float) -> Attempt:
        run = self._move(run, RunState.RUNNING, attempt=number, started=run.started or started,
                         pid=None, reason="")
        config = job_config(target, run.id, self.base_env, attempt=number, params=run.params,
                            trigger=run.trigger, trigger_name=run.trigger_name,
                            platform_url=self.platform_url, scheduled=run.scheduled)
        path = self.work_dir / run.function / "runs" / f"{run.id}-{number}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return await self.runner(target, config, path, logs,
                                     lambda message: self._on_message(run.id, message, logs))
        finally:
            path.unlink(missing_ok=True)

    def _on_message(self, run_id: str, message: dict[str, Any],
                    logs: tuple[FunctionLog, ...]) -> None:
        kind = message.get("event")
        if kind == "started":
            self.store.put_run(replace(self.get(run_id), pid=message.get("pid")))
        elif kind == "progress":
            step, total = message.get("step"), message.get("total")
            text = f"progress {step:g}" + (f"/{total:g}" if total else "") if isinstance(
                step, int | float) else "progress"
            if message.get("message"):
                text += f": {message['message']}"
            logs[0].event("info", text, run=run_id, progress={
                "step": step, "total": total, "message": message.get("message", "")})
        elif kind in ("metrics", "artifacts"):
            run = self.get(run_id)
            outputs = dict(run.outputs)
            outputs[kind] = {**outputs.get(kind, {}), **(message.get(kind) or {})}
            self.store.put_run(replace(run, outputs=outputs))

    def _waiting(self, run_id: str, state: RetryCallState, note: Any) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        failed = state.outcome.exception() if state.outcome else None
        why = str(failed) if failed else "failed"
        run = self.get(run_id)
        self._move(run, RunState.PENDING, pid=None,
                   reason=f"attempt {run.attempt} failed: {why}; retrying in {delay:.1f}s")
        note("warn", f"attempt {run.attempt} of {run.max_attempts} failed: {why}; retrying in "
             f"{delay:.1f}s", attempt=run.attempt)

    def _finish(self, run: RunRecord, status: RunState, reason: str, outputs: dict[str, Any],
                note: Any) -> None:
        ended = time.time()
        merged = dict(run.outputs)
        merged.update(outputs)
        self._move(run, status, ended=ended, reason=reason, outputs=merged, pid=None)
        duration = ended - (run.started or run.created)
        metrics.RUNS.labels(run.function, run.trigger, str(status)).inc()
        metrics.RUN_DURATION.labels(run.function, str(status)).observe(duration)
        note("info" if status == RunState.SUCCEEDED else "error",
             f"run {run.id} {status} after {duration:.2f}s"
             + (f": {reason}" if reason else ""), status=str(status))


async def _read_lines(path: Path, tail: int) -> AsyncIterator[bytes]:
    if not path.exists():
        return
    lines = path.read_bytes().splitlines(keepends=True)
    for line in lines[-tail:] if tail > 0 else lines:
        yield line
