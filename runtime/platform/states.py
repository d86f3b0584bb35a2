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
