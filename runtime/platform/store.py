"""The platform's durable state: functions (and, later, runs) in SQLite under SLUICE_HOME."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .states import FunctionState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    port       INTEGER,
    state      TEXT NOT NULL,
    message    TEXT NOT NULL DEFAULT '',
    created    REAL NOT NULL,
    updated    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    function   TEXT NOT NULL,
    trigger    TEXT NOT NULL,
    last_fire  REAL NOT NULL,
    PRIMARY KEY (function, trigger)
);
"""


@dataclass(frozen=True)
class FunctionRecord:
    name: str
    spec: dict[str, Any]
    generation: int
    port: int | None
    state: FunctionState
    message: str
    created: float
    updated: float


class Store:
    """Small, synchronous and fast: every call is one statement on a local WAL database."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def put(self, record: FunctionRecord) -> None:
        self._db.execute(
            "INSERT INTO functions (name, spec, generation, port, state, message, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET spec=excluded.spec,"
            " generation=excluded.generation, port=excluded.port, state=excluded.state,"
            " message=excluded.message, updated=excluded.updated",
            (record.name, json.dumps(record.spec), record.generation, record.port,
             str(record.state), record.message, record.created, record.updated),
        )

    def set_state(self, name: str, state: FunctionState, message: str = "") -> None:
        self._db.execute(
            "UPDATE functions SET state=?, message=?, updated=? WHERE name=?",
            (str(state), message, time.time(), name),
        )

    def get(self, name: str) -> FunctionRecord | None:
        row = self._db.execute(
            "SELECT name, spec, generation, port, state, message, created, updated"
            " FROM functions WHERE name=?", (name,)
        ).fetchone()
        return _record(row) if row else None

    def all(self) -> list[FunctionRecord]:
        rows = self._db.execute(
            "SELECT name, spec, generation, port, state, message, created, updated"
            " FROM functions ORDER BY name"
        ).fetchall()
        return [_record(row) for row in rows]

    def delete(self, name: str) -> None:
        self._db.execute("DELETE FROM functions WHERE name=?", (name,))
        self._db.execute("DELETE FROM schedules WHERE function=?", (name,))

    def last_fire(self, function: str, trigger: str) -> float | None:
        row = self._db.execute("SELECT last_fire FROM schedules WHERE function=? AND trigger=?",
                               (function, trigger)).fetchone()
        return float(row[0]) if row else None

    def set_last_fire(self, function: str, trigger: str, when: float) -> None:
        self._db.execute(
            "INSERT INTO schedules (function, trigger, last_fire) VALUES (?, ?, ?) "
            "ON CONFLICT(function, trigger) DO UPDATE SET last_fire=excluded.last_fire",
            (function, trigger, when))


def _record(row: tuple[Any, ...]) -> FunctionRecord:
    name, spec, generation, port, state, message, created, updated = row
    return FunctionRecord(name, json.loads(spec), generation, port, FunctionState(state), message,
                          created, updated)
