"""One attempt of a job run, in its own process: ``python -m sluice.worker.job --config RUN.json``.

The handler is Nuclio's ``handler(context, event)``; ``event.body`` holds the run's params (a
dict). It reports through ``context`` (a :class:`JobContext`)::

    def handler(context, event):
        for epoch in range(event.body["epochs"]):
            ...
            context.progress(epoch + 1, event.body["epochs"], f"loss {loss:.3f}")
            context.log_metrics(loss=loss)
        context.log_artifact("model", "file:///models/fraud/3/model.pt")
        return {"rows": 1000}          # stored as the run's outputs["result"]

What the platform must know goes over the control pipe as JSON lines (progress, metrics, the
result); what the handler prints and logs goes to stdout, into the run's log. When the platform
dies (EOF on the lifeline), the process kills its whole group: no run outlives its supervisor.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import math
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nuclio_sdk
import orjson

from .config import EXIT_OK, EXIT_STARTUP_FAILED
from .notebook_job import check_notebook, notebook_of, run_notebook

EXIT_FAILED = 1
MAX_OUTPUT_BYTES = 1024 * 1024  # outputs hold metrics and URIs; data goes to the artifact store


@dataclass(frozen=True)
class JobConfig:
    """What the platform tells one attempt's process (plain JSON: no pydantic here)."""

    function: str
    handler: str
    source_dir: str | None
    run_id: str
    attempt: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    trigger: str = "manual"
    trigger_name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    platform_url: str | None = None
    scheduled: float | None = None  # the cron fire's instant (epoch seconds)
    control_fd: int | None = None
    parent_fd: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_file(cls, path: str | Path) -> JobConfig:
        return cls(**json.loads(Path(path).read_text()))


class Control:
    """JSON lines to the platform; without a pipe (run by hand) they go to stderr; with a
    ``sink`` (sluice.testing) they are handed over as dicts."""

    def __init__(self, fd: int | None, sink: Callable[[dict[str, Any]], None] | None = None
                 ) -> None:
        self.fd = fd
        self.sink = sink
        self._lock = threading.Lock()  # a handler may report from its own threads

    def send(self, **message: Any) -> None:
        if self.sink is not None:
            self.sink(orjson.loads(orjson.dumps(message, default=repr)))
            return
        data = orjson.dumps(message, default=repr) + b"\n"
        with self._lock:
            if self.fd is None:
                sys.stderr.buffer.write(data)
                sys.stderr.flush()
                return
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]


class JobContext(nuclio_sdk.Context):
    """Nuclio's context plus what a run reports: progress, metrics and artifacts."""

    def __init__(self, control: Control, run_id: str, attempt: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.attempt = attempt
        self.metrics: dict[str, Any] = {}
        self.artifacts: dict[str, str] = {}
        self._control = control

    def progress(self, step: float, total: float | None = None, message: str = "") -> None:
        """Shown by ``sluice run`` as a progress bar (``total`` unknown: a counter)."""
        if total is not None and total <= 0:
            raise ValueError(f"progress total must be above 0 (got {total})")
        self._control.send(event="progress", step=step, total=total, message=str(message))

    def log_metrics(self, values: dict[str, Any] | None = None, **more: Any) -> None:
        """Record metrics (the latest value of each name is the run's); kept even if the run
        later fails."""
        values = {**(values or {}), **more}
        for name, value in values.items():
            if not isinstance(value, int | float | str | bool) or (
                    isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f"metric {name!r}: must be a finite number, text or bool "
                                 f"(got {value!r})")
        self.metrics.update(values)
        self._control.send(event="metrics", metrics=values)

    def log_metric(self, name: str, value: Any) -> None:
        self.log_metrics({name: value})

    def log_artifact(self, name: str, uri: str) -> None:
        """Record where the run stored something (a model, a Parquet file)."""
        self.artifacts[name] = str(uri)
        self._control.send(event="artifacts", artifacts={name: str(uri)})


def _watch_lifeline(fd: int) -> None:
    """EOF on the lifeline means the platform is gone: take the whole process group down."""
    def watch() -> None:
        while True:
            # the pipe is shared with the function workers, whose event loops make it
            # non-blocking for everyone: wait until it is readable, then read
            select.select([fd], [], [])
            try:
                if not os.read(fd, 1):
                    break
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                break
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="sluice-lifeline", daemon=True).start()


def make_job_context(config: JobConfig, control: Control) -> JobContext:
    from .context import SluicePlatform, make_logger

    return JobContext(
        control, config.run_id, config.attempt,
        logger=make_logger(config.function, 0, run=config.run_id),
        platform=SluicePlatform(config.platform_url),
        worker_id=0,
        trigger=nuclio_sdk.TriggerInfo(config.trigger, config.trigger_name or config.trigger),
    )


def make_job_event(config: JobConfig) -> nuclio_sdk.Event:
    body = orjson.dumps(config.params)
    headers = {"X-Sluice-Run": config.run_id, "X-Sluice-Attempt": str(config.attempt)}
    if config.scheduled is not None:
        headers["X-Sluice-Scheduled"] = datetime.fromtimestamp(config.scheduled, UTC).isoformat()
    return nuclio_sdk.Event(
        body=dict(config.params),
        content_type="application/json",
        trigger=nuclio_sdk.TriggerInfo(config.trigger, config.trigger_name or config.trigger),
        fields={},
        headers=headers,
        _id=config.run_id,
        method="POST",
        path="/",
        size=len(body),
        timestamp=datetime.now(UTC),
        url="/",
    )


def _call(function: Any, context: JobContext, event: nuclio_sdk.Event,
          loop: asyncio.AbstractEventLoop) -> Any:
    result = function(context, event)
    if inspect.isawaitable(result):
        async def wait() -> Any:
            return await result
        result = loop.run_until_complete(wait())
    return result


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the handler's frame down: sluice's and asyncio's frames are noise."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename != __file__ and "/asyncio/" not in f.filename]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames),
             *traceback.format_exception_only(exc)]
    return "".join(lines)


def call_job(function: Any, context: JobContext, event: nuclio_sdk.Event,
             loop: asyncio.AbstractEventLoop) -> tuple[dict[str, Any] | None, str]:
    """Call the handler once: (outputs, "") when it succeeds, (None, why) when it fails.
    An async handler runs on ``loop``, the one its ``init_context`` ran on, so that what
    init_context opened (a client session, a queue) still works in the handler."""
    try:
        result = _call(function, context, event, loop)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return None, f"the handler called sys.exit({exc.code!r})"
        result = None
    except BaseException as exc:  # the user's code: any failure is the run's, reported
        context.logger.error_with(f"handler raised {type(exc).__name__}: {exc}",
                                  traceback=_user_traceback(exc))
        return None, f"handler raised {type(exc).__name__}: {exc}"
    outputs: dict[str, Any] = {"metrics": context.metrics, "artifacts": context.artifacts}
    if result is not None:
        outputs["result"] = result
    try:
        size = len(orjson.dumps(outputs))
    except TypeError as exc:
        return None, f"the handler returned a value that is not JSON: {exc}"
    if size > MAX_OUTPUT_BYTES:
        return None, (f"the run's outputs are {size} bytes, over the {MAX_OUTPUT_BYTES} "
                      "allowed: keep data in the artifact store and return its URI "
                      "(context.log_artifact)")
    return outputs, ""


def _run_notebook(notebook: Path, config: JobConfig, context: JobContext,
                  event: nuclio_sdk.Event) -> dict[str, Any]:
    return run_notebook(notebook, context, dict(event.body), config.function, config.run_id)


def run(config: JobConfig) -> int:
    from sluice.errors import HandlerError
    from sluice.handler import load_handler, run_init_context

    control = Control(config.control_fd)
    if config.parent_fd is not None:
        _watch_lifeline(config.parent_fd)
    context = make_job_context(config, control)
    loop = asyncio.new_event_loop()  # the process ends with the run: it is never closed
    notebook = notebook_of(config.handler, config.source_dir)
    try:
        if notebook is not None:  # a notebook job: papermill runs it
            check_notebook(notebook)
            function: Callable[..., Any] = functools.partial(_run_notebook, notebook, config)
        else:
            loaded = load_handler(config.handler, Path(config.source_dir) if config.source_dir
                                  else None)
            loop.run_until_complete(run_init_context(loaded, context))
            function = loaded.function
    except HandlerError as exc:
        control.send(event="failed", error=str(exc), retry=False)
        return EXIT_STARTUP_FAILED
    control.send(event="started", pid=os.getpid())
    outputs, error = call_job(function, context, make_job_event(config), loop)
    if outputs is None:
        control.send(event="error", error=error)
        return EXIT_FAILED
    control.send(event="succeeded", outputs=outputs)
    return EXIT_OK


def check(config: JobConfig) -> int:
    """Import the handler as a run would, without running anything; errors go to stderr."""
    from sluice.errors import HandlerError
    from sluice.handler import load_handler

    try:
        notebook = notebook_of(config.handler, config.source_dir)
        if notebook is not None:
            check_notebook(notebook)
        else:
            load_handler(config.handler, Path(config.source_dir) if config.source_dir else None)
    except HandlerError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return EXIT_STARTUP_FAILED
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice.worker.job")
    parser.add_argument("--config", required=True, help="run config JSON written by the platform")
    parser.add_argument("--check", action="store_true",
                        help="only import the handler (a deploy's check), then exit")
    args = parser.parse_args(argv)
    config = JobConfig.from_file(args.config)
    os.environ.update(config.env)
    if os.environ.get("SLUICE_RUN_ID"):  # a Kubernetes CronJob's run: its pod's name
        config = replace(config, run_id=os.environ["SLUICE_RUN_ID"])
    if args.check:
        return check(config)
    code = run(config)
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
