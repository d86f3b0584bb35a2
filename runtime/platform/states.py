"""Function lifecycle: the states and the transitions allowed between them, in one place."""

from __future__ import annotations

from enum import StrEnum


class FunctionState(StrEnum):
    DEPLOYING = "deploying"  # workers of a version are starting
    READY = "ready"  # every worker is serving
    DEGRADED = "degraded"  # some workers are down and being restarted
    ERROR = "error"  # no version could start; the message says why
    DRAINING = "draining"  # being deleted: finishing in-flight work


ALLOWED: dict[FunctionState, frozenset[FunctionState]] = {
    FunctionState.DEPLOYING: frozenset(
        {FunctionState.READY, FunctionState.ERROR, FunctionState.DRAINING, FunctionState.DEGRADED}
    ),
    FunctionState.READY: frozenset(
        {FunctionState.DEPLOYING, FunctionState.DEGRADED, FunctionState.DRAINING}
    ),
    FunctionState.DEGRADED: frozenset(
        {FunctionState.READY, FunctionState.DEPLOYING, FunctionState.ERROR, FunctionState.DRAINING}
    ),
    FunctionState.ERROR: frozenset({FunctionState.DEPLOYING, FunctionState.DRAINING}),
    FunctionState.DRAINING: frozenset(),
}


def can_move(current: FunctionState, new: FunctionState) -> bool:
    return new == current or new in ALLOWED[current]


class RunState(StrEnum):
    """Where one run of a job function is."""

    PENDING = "pending"  # recorded, its process not started yet (or waiting to retry)
    RUNNING = "running"  # an attempt's process is running
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the handler raised, could not load, or the platform died under it
    TIMED_OUT = "timed_out"  # the last attempt ran past the function's timeout and was killed
    CANCELLED = "cancelled"  # `sluice runs cancel`, or replaced by a newer cron fire
    SKIPPED = "skipped"  # a cron fire not run: the previous one still ran (forbid)

    @property
    def finished(self) -> bool:
        return not RUN_ALLOWED[self]


RUN_ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    # back to pending: the attempt failed and another one is due after a back-off
    RunState.RUNNING: frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT,
                                 RunState.CANCELLED, RunState.PENDING}),
    RunState.SUCCEEDED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.TIMED_OUT: frozenset(),
    RunState.CANCELLED: frozenset(),
    RunState.SKIPPED: frozenset(),
}


def can_move_run(current: RunState, new: RunState) -> bool:
    return new in RUN_ALLOWED[current]
