"""The platform's durable state in SQLite under SLUICE_HOME: functions, schedules and runs."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .states import FunctionState, RunState

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
CREATE TABLE IF NOT EXISTS schedule_fires (
    function   TEXT NOT NULL,
    trigger    TEXT NOT NULL,
    fired      REAL NOT NULL,
    PRIMARY KEY (function, trigger)
);
CREATE TABLE IF NOT EXISTS paused_schedules (
    function   TEXT NOT NULL,
    trigger    TEXT NOT NULL,
    PRIMARY KEY (function, trigger)
);
CREATE TABLE IF NOT EXISTS projects (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id           TEXT PRIMARY KEY,
    function     TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    version      TEXT,
    trigger      TEXT NOT NULL,
    trigger_name TEXT,
    params       TEXT NOT NULL,
    status       TEXT NOT NULL,
    created      REAL NOT NULL,
    started      REAL,
    ended        REAL,
    attempt      INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    outputs      TEXT NOT NULL DEFAULT '{}',
    pid          INTEGER,
    scheduled    REAL,
    exit_code    INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_function ON runs (function, created);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
"""

_RUN_COLUMNS = ("id, function, generation, version, trigger, trigger_name, params, status, "
                "created, started, ended, attempt, max_attempts, reason, outputs, pid, scheduled, "
                "exit_code")


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


@dataclass(frozen=True)
class RunRecord:
    """One run of a job function: what it was given, where it is, what it produced."""

    id: str
    function: str
    generation: int
    version: str | None
    trigger: str  # manual (the CLI), api, or cron
    trigger_name: str | None  # the cron trigger's name
    params: dict[str, Any]
    status: RunState
    created: float
    started: float | None = None
    ended: float | None = None
    attempt: int = 0  # 1 while the first attempt runs
    max_attempts: int = 1
    reason: str = ""  # why it ended as it did (or why it waits)
    outputs: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    scheduled: float | None = None  # the cron fire this run is for
    exit_code: int | None = None  # of the last attempt's process (negative: killed by signal)

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["duration"] = self.duration
        return data


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
        """The function and its schedules; its run history stays (`sluice runs` still shows
        it, and a function deployed again under the name continues it)."""
        self._db.execute("DELETE FROM functions WHERE name=?", (name,))
        self._db.execute("DELETE FROM schedules WHERE function=?", (name,))
        self._db.execute("DELETE FROM paused_schedules WHERE function=?", (name,))
        self._db.execute("DELETE FROM schedule_fires WHERE function=?", (name,))

    # -- projects (the Nuclio dashboard API's grouping of functions) ------------------------
    def put_project(self, name: str, description: str = "") -> None:
        self._db.execute(
            "INSERT INTO projects (name, description, created) VALUES (?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET description=excluded.description",
            (name, description, time.time()))

    def projects(self) -> dict[str, tuple[str, float]]:
        """Project name -> (description, created)."""
        rows = self._db.execute("SELECT name, description, created FROM projects ORDER BY name")
        return {name: (description, created) for name, description, created in rows}

    def delete_project(self, name: str) -> None:
        self._db.execute("DELETE FROM projects WHERE name=?", (name,))

    # -- schedules -----------------------------------------------------------------------------
    def last_fired(self, function: str, trigger: str) -> float | None:
        """The scheduled instant of the trigger's last fire that ran (not one skipped)."""
        row = self._db.execute("SELECT fired FROM schedule_fires WHERE function=? AND trigger=?",
                               (function, trigger)).fetchone()
        return float(row[0]) if row else None

    def set_last_fired(self, function: str, trigger: str, when: float) -> None:
        self._db.execute(
            "INSERT INTO schedule_fires (function, trigger, fired) VALUES (?, ?, ?) "
            "ON CONFLICT(function, trigger) DO UPDATE SET fired=excluded.fired",
            (function, trigger, when))

    def paused(self, function: str) -> set[str]:
        rows = self._db.execute("SELECT trigger FROM paused_schedules WHERE function=?",
                                (function,)).fetchall()
        return {row[0] for row in rows}

    def set_paused(self, function: str, trigger: str, paused: bool) -> None:
        if paused:
            self._db.execute("INSERT OR IGNORE INTO paused_schedules (function, trigger) "
                             "VALUES (?, ?)", (function, trigger))
        else:
            self._db.execute("DELETE FROM paused_schedules WHERE function=? AND trigger=?",
                             (function, trigger))

    def last_fire(self, function: str, trigger: str) -> float | None:
        row = self._db.execute("SELECT last_fire FROM schedules WHERE function=? AND trigger=?",
                               (function, trigger)).fetchone()
        return float(row[0]) if row else None

    def set_last_fire(self, function: str, trigger: str, when: float) -> None:
        self._db.execute(
            "INSERT INTO schedules (function, trigger, last_fire) VALUES (?, ?, ?) "
            "ON CONFLICT(function, trigger) DO UPDATE SET last_fire=excluded.last_fire",
            (function, trigger, when))


    # -- runs ----------------------------------------------------------------------------------
    def put_run(self, run: RunRecord) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.id, run.function, run.generation, run.version, run.trigger, run.trigger_name,
             json.dumps(run.params), str(run.status), run.created, run.started, run.ended,
             run.attempt, run.max_attempts, run.reason, json.dumps(run.outputs), run.pid,
             run.scheduled, run.exit_code))

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id=?",
                               (run_id,)).fetchone()
        return _run(row) if row else None

    def runs(self, function: str | None = None, status: RunState | None = None,
             limit: int = 50) -> list[RunRecord]:
        """Newest first."""
        where, args = [], []
        if function is not None:
            where.append("function=?")
            args.append(function)
        if status is not None:
            where.append("status=?")
            args.append(str(status))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs{clause} ORDER BY created DESC, rowid DESC LIMIT ?",
            (*args, limit)).fetchall()
        return [_run(row) for row in rows]

    def unfinished_runs(self) -> list[RunRecord]:
        rows = self._db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN (?, ?)",
            (str(RunState.PENDING), str(RunState.RUNNING))).fetchall()
        return [_run(row) for row in rows]


def _run(row: tuple[Any, ...]) -> RunRecord:
    (run_id, function, generation, version, trigger, trigger_name, params, status, created,
     started, ended, attempt, max_attempts, reason, outputs, pid, scheduled, exit_code) = row
    return RunRecord(run_id, function, generation, version, trigger, trigger_name,
                     json.loads(params), RunState(status), created, started, ended, attempt,
                     max_attempts, reason, json.loads(outputs), pid, scheduled, exit_code)


def _record(row: tuple[Any, ...]) -> FunctionRecord:
    name, spec, generation, port, state, message, created, updated = row
    return FunctionRecord(name, json.loads(spec), generation, port, FunctionState(state), message,
                          created, updated)
