"""Which offsets are safe to commit (the pure core of at-least-once delivery).

A partition's committed offset is the first offset whose message is not finished yet: every
earlier message was handled (or dead-lettered, or acknowledged). A message that finishes early
(an explicit ack that arrives out of order) never lets the commit pass an unfinished one.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field


@dataclass
class _Partition:
    pending: set[int] = field(default_factory=set)
    next: int = -1  # one past the highest offset seen
    committed: int = -1


class OffsetTracker:
    """Per partition: offsets started, finished, and the commit point they allow."""

    def __init__(self) -> None:
        self._partitions: dict[Hashable, _Partition] = {}

    def started(self, partition: Hashable, offset: int) -> None:
        state = self._partitions.setdefault(partition, _Partition())
        state.pending.add(offset)
        state.next = max(state.next, offset + 1)

    def finished(self, partition: Hashable, offset: int) -> None:
        state = self._partitions.get(partition)
        if state is not None:
            state.pending.discard(offset)

    def commit_point(self, partition: Hashable) -> int | None:
        """The offset to commit for this partition (the next message to read), or None."""
        state = self._partitions.get(partition)
        if state is None or state.next < 0:
            return None
        return min(state.pending) if state.pending else state.next

    def committable(self) -> dict[Hashable, int]:
        """Commit points that moved since the last :meth:`committed`."""
        out = {}
        for partition, state in self._partitions.items():
            point = self.commit_point(partition)
            if point is not None and point > state.committed:
                out[partition] = point
        return out

    def committed(self, offsets: dict[Hashable, int]) -> None:
        for partition, offset in offsets.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.committed = max(state.committed, offset)

    def pending(self, partition: Hashable) -> int:
        state = self._partitions.get(partition)
        return len(state.pending) if state else 0

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Partitions revoked in a rebalance: their new owner starts from the last commit."""
        for partition in partitions:
            self._partitions.pop(partition, None)
