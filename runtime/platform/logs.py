"""Per-function JSON-lines logs: workers' output goes in, ``sluice logs`` reads it out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class FunctionLog:
    """Appends lines to ``logs/<function>.jsonl`` and wakes followers (no polling)."""

    def __init__(self, path: Path, function: str) -> None:
        self.path = path
        self.function = function
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the function
        self._changed = asyncio.Condition()

    def close(self) -> None:
        self._file.close()

    def write_line(self, line: bytes) -> None:
        self._file.write(line.rstrip(b"\n") + b"\n")
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def worker_output(self, raw: bytes, worker: int, stream: str) -> None:
        """A line a worker printed: JSON lines pass through, anything else is wrapped."""
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
        self.event("error" if stream == "stderr" else "info", text.decode("utf-8", "replace"),
                   worker=worker, stream=stream)

    def event(self, level: str, message: str, **fields: Any) -> None:
        """A line from the platform itself about this function."""
        entry: dict[str, Any] = {"time": now_iso(), "level": level, "function": self.function}
        entry.update(fields)
        entry["message"] = message
        self.write_line(orjson.dumps(entry))

    async def read(self, tail: int, follow: bool) -> AsyncIterator[bytes]:
        with open(self.path, "rb") as source:
            lines = source.readlines()
            for line in lines[-tail:] if tail > 0 else lines:
                yield line
            if not follow:
                return
            while True:
                async with self._changed:
                    await self._changed.wait()
                for line in source.readlines():
                    yield line
