"""Per-function JSON-lines logs: workers' output goes in, ``sluice logs`` reads it out."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


MAX_LOG_BYTES = 64 * 1024 * 1024  # past this the file is rotated to <name>.jsonl.1


class FunctionLog:
    """Appends lines to ``logs/<function>.jsonl`` and wakes followers (no polling)."""

    def __init__(self, path: Path, function: str, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.path = path
        self.function = function
        self.max_bytes = max_bytes
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the function
        self._size = self._file.tell()
        self._written = asyncio.Event()  # set and replaced on every write that has followers
        self._followers = 0

    def close(self) -> None:
        self._file.close()
        self._written.set()

    def write_line(self, line: bytes) -> None:
        data = line.rstrip(b"\n") + b"\n"
        if self._size + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._size += len(data)
        if self._followers:
            self._written.set()
            self._written = asyncio.Event()

    def _rotate(self) -> None:
        self._file.close()
        self.path.replace(self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._size = 0

    def worker_output(self, raw: bytes, worker: int | None, stream: str, **fields: Any) -> None:
        """A line a worker (or a job run) printed: JSON lines pass through, anything else is
        wrapped with where it came from."""
        text = raw.rstrip(b"\r\n")
        if not text:
            return
        if text.startswith(b"{"):
            try:
                orjson.loads(text)
                self.write_line(text)
                return
            except orjson.JSONDecodeError:
                pass
        where = {"worker": worker} if worker is not None else {}
        self.event("error" if stream == "stderr" else "info", text.decode("utf-8", "replace"),
                   **where, stream=stream, **fields)

    def event(self, level: str, message: str, **fields: Any) -> None:
        """A line from the platform itself about this function."""
        entry: dict[str, Any] = {"time": now_iso(), "level": level, "function": self.function}
        entry.update(fields)
        entry["message"] = message
        self.write_line(orjson.dumps(entry))

    async def read(self, tail: int, follow: bool) -> AsyncIterator[bytes]:
        """The last ``tail`` lines (0: all); with ``follow``, then every new line until closed."""
        source = open(self.path, "rb")  # noqa: SIM115 - reopened after a rotation
        try:
            lines = source.readlines()
            for line in lines[-tail:] if tail > 0 else lines:
                yield line
            if not follow:
                return
            self._followers += 1
            try:
                while not self._file.closed:
                    await self._written.wait()
                    for line in source.readlines():
                        yield line
                    if self._file.closed:
                        break
                    if os.fstat(source.fileno()).st_ino != os.fstat(self._file.fileno()).st_ino:
                        source.close()  # rotated: the rest is in the new file
                        source = open(self.path, "rb")  # noqa: SIM115
                        for line in source.readlines():
                            yield line
            finally:
                self._followers -= 1
        finally:
            source.close()


async def pump(stream: asyncio.StreamReader, write: Callable[[bytes], None]) -> None:
    """Every line of a child's output stream to ``write``, until it closes; a line over the
    stream's limit is passed on in pieces."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            line = await stream.read(65536)
        if not line:
            return
        write(line)
