"""The objects a handler sees: nuclio_sdk's Context, Logger and Platform, wired to sluice."""

from __future__ import annotations

import http.client
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import nuclio_sdk
import orjson


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, the ``*_with`` fields, function, worker."""

    def __init__(self, function: str, worker: int, run: str | None = None) -> None:
        super().__init__()
        self.function = function
        self.worker = worker
        self.run = run  # a job run's id: its lines can be told apart from other runs'

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower().replace("warning", "warn"),
            "function": self.function,
            "worker": self.worker,
            "message": record.getMessage(),
        }
        if self.run is not None:
            entry["run"] = self.run
        fields = getattr(record, "with", None)
        if fields:
            entry["with"] = fields
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=repr).decode()


def make_logger(function: str, worker: int, stream: TextIO | None = None,
                run: str | None = None) -> nuclio_sdk.Logger:
    logger = nuclio_sdk.Logger(logging.DEBUG, name=f"sluice.{function}.{worker}")
    logger.set_handler("sluice", stream or sys.stdout, JsonLinesFormatter(function, worker, run))
    logger._logger.propagate = False  # nuclio_sdk keeps the stdlib logger here
    return logger


class SluicePlatform(nuclio_sdk.Platform):
    """``context.platform``: ``call_function`` reaches functions deployed on the same platform."""

    def __init__(self, platform_url: str | None, namespace: str = "default") -> None:
        super().__init__("local", namespace=namespace)
        self._platform_url = platform_url
        self._endpoints: dict[str, tuple[float, str]] = {}

    def _get_function_url(self, function_name: str, service_name_override: Any = None) -> str:
        if service_name_override:
            return str(service_name_override)
        cached = self._endpoints.get(function_name)
        if cached and time.monotonic() - cached[0] < 5.0:
            return cached[1]
        address = self._resolve(function_name)
        self._endpoints[function_name] = (time.monotonic(), address)
        return address

    def _resolve(self, function_name: str) -> str:
        if not self._platform_url:
            raise RuntimeError("call_function needs the sluice platform (none is configured)")
        host = self._platform_url.split("://", 1)[-1].rstrip("/")
        conn = http.client.HTTPConnection(host, timeout=10)
        try:
            conn.request("GET", f"/api/functions/{function_name}")
            response = conn.getresponse()
            payload = json.loads(response.read() or b"{}")
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(
                f"call_function: cannot reach {function_name!r}: "
                f"{payload.get('error', response.status)}"
            )
        endpoint = payload.get("status", {}).get("endpoint")
        if not endpoint:
            raise RuntimeError(f"call_function: function {function_name!r} has no HTTP endpoint")
        return str(endpoint).split("://", 1)[-1].rstrip("/")


def make_context(
    function: str, worker: int, trigger: str, platform_url: str | None
) -> nuclio_sdk.Context:
    return nuclio_sdk.Context(
        logger=make_logger(function, worker),
        platform=SluicePlatform(platform_url),
        worker_id=worker,
        trigger=nuclio_sdk.TriggerInfo("http", trigger),
    )
