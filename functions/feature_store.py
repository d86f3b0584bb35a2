"""The online feature store's interface: per-entity state, read and written in batches.

The ``enrich`` function reads the states of a micro-batch's cards at once, computes, and
writes the changed ones back in one atomic step (:meth:`FeatureStore.put`), before its Kafka
offsets are committed: a crash between the two redelivers events whose updates are already
stored, which :func:`sluice.functions.features.enrich` recognises by sequence number.

The embedded implementation is SQLite (:class:`sluice.functions.feature_sqlite.SqliteFeatureStore`);
a shared key-value store (Redis, DynamoDB through boto3) implements the same three methods with
the states' JSON form (``CardState.to_dict``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from .features import CardState


class FeatureStore(Protocol):
    def get(self, keys: Iterable[str]) -> dict[str, CardState]:
        """The stored states of those keys that have one."""
        ...

    def put(self, states: Mapping[str, CardState]) -> None:
        """Store these states, all or none."""
        ...

    def close(self) -> None: ...


class MemoryFeatureStore:
    """A dict: for tests and for one-process replays."""

    def __init__(self) -> None:
        self.states: dict[str, CardState] = {}

    def get(self, keys: Iterable[str]) -> dict[str, CardState]:
        return {key: self.states[key] for key in keys if key in self.states}

    def put(self, states: Mapping[str, CardState]) -> None:
        self.states.update(states)

    def close(self) -> None:
        pass


def materialize(store: FeatureStore, states: Mapping[str, CardState]) -> int:
    """Backfill the online store from an offline replay: each state is written where it is
    newer (a higher ``last_seq``) than the stored one, so a backfill never undoes events the
    stream already folded in. Returns how many were written."""
    current = store.get(states)
    newer = {key: state for key, state in states.items()
             if key not in current or current[key].last_seq < state.last_seq}
    store.put(newer)
    return len(newer)
