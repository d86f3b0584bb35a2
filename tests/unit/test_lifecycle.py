"""Pure pieces of the platform: restart back-off, exit descriptions, state transitions."""

from __future__ import annotations

import pytest

from sluice.platform.states import ALLOWED, FunctionState, can_move
from sluice.platform.supervisor import describe_exit, restart_delay
from sluice.worker.config import EXIT_RECYCLED


@pytest.mark.parametrize(("failures", "delay"),
                         [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.4), (8, 10.0), (50, 10.0)])
def test_restart_backoff_doubles_and_is_capped(failures, delay):
    assert restart_delay(failures) == pytest.approx(delay)


@pytest.mark.parametrize(("code", "text"), [
    (-9, "was killed by SIGKILL"), (-15, "was killed by SIGTERM"), (1, "exited with code 1"),
    (EXIT_RECYCLED, "was recycled after a handler timeout"), (None, "is still running"),
])
def test_exit_descriptions_read_well(code, text):
    assert describe_exit(code) == text


def test_draining_is_final_and_every_state_is_covered():
    assert set(ALLOWED) == set(FunctionState)
    assert not any(can_move(FunctionState.DRAINING, s) for s in FunctionState
                   if s != FunctionState.DRAINING)
    assert can_move(FunctionState.ERROR, FunctionState.DEPLOYING)
    assert not can_move(FunctionState.ERROR, FunctionState.READY)
