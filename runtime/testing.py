"""Unit-test your handlers without a platform: the same event building and reply rules as a
worker, in process.

    >>> from sluice.testing import Harness
    >>> harness = Harness.from_file("examples/hello.py")
    >>> response = harness.call(body={"name": "Ada"})
    >>> response.status, response.json()
    (200, {'message': 'Hello, Ada!'})
    >>> harness.logs[-1]["message"]
    'greeting'

A job handler runs once per call, with params, and reports what a run would record:

    >>> from sluice.testing import JobHarness
    >>> job = JobHarness.from_file("examples/jobs/report.py")
    >>> result = job.run({"days": 3})
    >>> result.succeeded, result.outputs["result"], result.progress[-1]["step"]
    (True, {'days': 3, 'rows': 72}, 3)
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from nuclio_sdk import TriggerInfo

from .handler import LoadedHandler, load_handler, run_init_context
from .outputs import Reply, encode_body
from .worker.context import make_logger
from .worker.runner import Runner


@dataclass(frozen=True)
class TestResponse:
    """What the handler answered, as a client would see it."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return orjson.loads(self.body)


class Harness:
    """A handler loaded once (``init_context`` run), called with synthetic HTTP events."""

    __test__ = False  # not a pytest test class

    def __init__(self, loaded: LoadedHandler, name: str = "test", timeout: float = 60.0) -> None:
        import nuclio_sdk

        from .worker.context import SluicePlatform

        self._stream = io.StringIO()
        self.context = nuclio_sdk.Context(logger=make_logger(name, 0, self._stream),
                                          platform=SluicePlatform(None), worker_id=0,
                                          trigger=TriggerInfo("http", "http"))
        self._loaded = loaded
        self._runner = Runner(loaded, self.context, timeout, self._log)
        asyncio.run(run_init_context(loaded, self.context))

    @classmethod
    def from_file(cls, path: str | Path, function: str = "handler") -> Harness:
        file = Path(path).resolve()
        return cls(load_handler(f"{file.stem}:{function}", file.parent), name=file.stem)

    def _log(self, level: str, message: str, **fields: Any) -> None:
        getattr(self.context.logger, f"{level}_with")(message, **fields)

    @property
    def logs(self) -> list[dict[str, Any]]:
        """Everything the handler (and the runner) logged, one dict per line."""
        return [json.loads(line) for line in self._stream.getvalue().splitlines() if line]

    def call(
        self,
        body: Any = b"",
        method: str = "POST",
        path: str = "/",
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        """Call the handler as an HTTP request would; dict/list bodies are sent as JSON."""
        from sluice.triggers.http.events import Headers, make_event

        raw_headers = Headers()
        for key, value in (headers or {}).items():
            dict.__setitem__(raw_headers, key.title(), value)
        raw, implied = encode_body(body)
        if implied:
            dict.setdefault(raw_headers, "Content-Type", implied)
        event = make_event(TriggerInfo("http", "http"), method, path, raw_headers, raw)
        if self._loaded.is_async:
            reply = asyncio.run(self._runner.run_async(event))
        else:
            reply = self._runner.run(event)
        return _response(reply)


def _response(reply: Reply) -> TestResponse:
    return TestResponse(reply.status, reply.content_type, reply.body, dict(reply.headers))


@dataclass(frozen=True)
class JobResult:
    """What one run of a job handler produced (the platform stores the same in its run)."""

    outputs: dict[str, Any] | None  # result, metrics, artifacts; None when the run failed
    error: str  # why it failed ("" when it succeeded)
    progress: list[dict[str, Any]]  # each context.progress(...) call: step, total, message
    logs: list[dict[str, Any]]

    @property
    def succeeded(self) -> bool:
        return self.outputs is not None


class JobHarness:
    """A job handler called in process, as one attempt of a run would call it."""

    __test__ = False

    def __init__(self, loaded: LoadedHandler, name: str = "test") -> None:
        self._loaded = loaded
        self._name = name

    @classmethod
    def from_file(cls, path: str | Path, function: str = "handler") -> JobHarness:
        file = Path(path).resolve()
        return cls(load_handler(f"{file.stem}:{function}", file.parent), name=file.stem)

    def run(self, params: dict[str, Any] | None = None, declared: dict[str, Any] | None = None,
            attempt: int = 1) -> JobResult:
        """Run once with ``params`` (checked against ``declared`` defaults, as a deploy's spec
        would); ``init_context`` runs first, as in a fresh run process."""
        from .params import check_params
        from .worker.job import Control, JobConfig, JobContext, call_job, make_job_event

        stream = io.StringIO()
        messages: list[dict[str, Any]] = []
        config = JobConfig(function=self._name, handler="test:handler", source_dir=None,
                           run_id=f"{self._name}-test", attempt=attempt,
                           params=check_params(declared or {}, params))
        from .worker.context import SluicePlatform

        context = JobContext(Control(None, messages.append), config.run_id, attempt,
                             logger=make_logger(self._name, 0, stream, run=config.run_id),
                             platform=SluicePlatform(None), worker_id=0,
                             trigger=TriggerInfo("manual", "manual"))
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(run_init_context(self._loaded, context))
            outputs, error = call_job(self._loaded.function, context, make_job_event(config),
                                      loop)
        finally:
            loop.close()
        return JobResult(outputs, error,
                         [m for m in messages if m.get("event") == "progress"],
                         [json.loads(line) for line in stream.getvalue().splitlines() if line])
