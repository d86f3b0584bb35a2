"""The commit point never passes an unfinished message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.triggers.kafka.offsets import OffsetTracker


def test_commit_point_is_first_unfinished_offset():
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started("p0", offset)
    assert tracker.commit_point("p0") == 10
    tracker.finished("p0", 11)  # out of order: 10 still pending
    assert tracker.commit_point("p0") == 10
    tracker.finished("p0", 10)
    assert tracker.commit_point("p0") == 12
    tracker.finished("p0", 12)
    assert tracker.commit_point("p0") == 13


def test_committable_reports_only_moves_and_forgets_revoked():
    tracker = OffsetTracker()
    tracker.started("a", 0)
    tracker.started("b", 5)
    tracker.finished("a", 0)
    assert tracker.committable() == {"a": 1, "b": 5}
    tracker.committed({"a": 1, "b": 5})
    assert tracker.committable() == {}
    tracker.forget(["b"])
    assert tracker.commit_point("b") is None


def test_unknown_partition_has_no_commit_point():
    assert OffsetTracker().commit_point("nope") is None


@given(st.lists(st.integers(0, 50), min_size=1, max_size=50, unique=True), st.data())
def test_commit_never_passes_an_unfinished_offset(offsets, data):
    tracker = OffsetTracker()
    for offset in sorted(offsets):
        tracker.started("p", offset)
    finished = data.draw(st.sets(st.sampled_from(offsets)))
    for offset in finished:
        tracker.finished("p", offset)
    point = tracker.commit_point("p")
    unfinished = [o for o in offsets if o not in finished]
    assert point is not None
    if unfinished:
        assert point == min(unfinished)
    else:
        assert point == max(offsets) + 1
    assert all(o >= point for o in unfinished)


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_any_finish_order_ends_at_the_same_point(order):
    tracker = OffsetTracker()
    for offset in range(3):
        tracker.started("p", offset)
    for offset in order:
        tracker.finished("p", offset)
    assert tracker.commit_point("p") == 3
