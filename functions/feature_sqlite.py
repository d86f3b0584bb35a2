"""The embedded online feature store: one SQLite table of entity -> state (JSON).

WAL mode, so readers (``sluice pipeline status``, a test) never block the writer; one
transaction per :meth:`SqliteFeatureStore.put`, so a micro-batch's updates land together.
Floats go through JSON unchanged (shortest round-trip form), which keeps online values
bit-equal to the offline replay's.

    >>> import tempfile, pathlib
    >>> from sluice.functions.features import CardState
    >>> store = SqliteFeatureStore(pathlib.Path(tempfile.mkdtemp()) / "features.db")
    >>> store.put({"c1": CardState(count=2, amount_sum=0.1 + 0.2)})
    >>> store.get(["c1", "c2"])["c1"].amount_sum == 0.1 + 0.2
    True
    >>> store.close()
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson

from .features import CardState

_SCHEMA = """CREATE TABLE IF NOT EXISTS card_features (
    entity TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated REAL NOT NULL
)"""


def default_path() -> Path:
    """``$SLUICE_FEATURE_STORE``, else ``$SLUICE_HOME/features/cards.db``."""
    from sluice.settings import Settings

    configured = os.environ.get("SLUICE_FEATURE_STORE")
    return Path(configured) if configured else Settings.from_env().home / "features" / "cards.db"


class SqliteFeatureStore:
    """The online store in one SQLite file (made, with its folder, when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # (a timeout: the workers of one function share the file, one writer at a time)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it whole
        self._db.execute(_SCHEMA)

    def get(self, keys: Iterable[str]) -> dict[str, CardState]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CardState] = {}
        for start in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for entity, state in self._db.execute(
                    f"SELECT entity, state FROM card_features WHERE entity IN ({marks})", chunk):
                found[entity] = CardState.from_dict(orjson.loads(state))
        return found

    def put(self, states: Mapping[str, CardState]) -> None:
        if not states:
            return
        now = time.time()
        rows = [(key, orjson.dumps(state.to_dict()).decode(), now)
                for key, state in states.items()]
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO card_features (entity, state, updated) VALUES (?, ?, ?) ON CONFLICT"
                "(entity) DO UPDATE SET state = excluded.state, updated = excluded.updated", rows)

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM card_features").fetchone()[0])

    def close(self) -> None:
        self._db.close()
