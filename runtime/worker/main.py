"""Worker process entry point: ``python -m sluice.worker --config worker.json``.

Also runs one function stand-alone, without a platform (benchmarks, debugging)::

    python -m sluice.worker --handler examples/echo.py:handler --port 8080

Imports are kept lean (no pydantic, no framework): they are most of a cold start.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from .config import EXIT_OK, EXIT_STARTUP_FAILED, WorkerConfig


def _parse_args(argv: list[str] | None) -> WorkerConfig:
    parser = argparse.ArgumentParser(prog="python -m sluice.worker")
    parser.add_argument("--config", help="worker config JSON written by the platform")
    parser.add_argument("--handler", help="FILE.py:function, to run stand-alone")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--metrics-dir", help="Prometheus multiprocess directory (enables metrics)")
    parser.add_argument("--max-inflight", type=int, default=256)
    parser.add_argument("--max-body", type=int, default=4 * 1024 * 1024, help="bytes")
    parser.add_argument("--batch-size", type=int, default=0, help="Nuclio HTTP batching mode")
    parser.add_argument("--batch-timeout-ms", type=float, default=10.0)
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="seconds before an idle connection is closed")
    args = parser.parse_args(argv)
    if args.config:
        return WorkerConfig.from_file(args.config)
    if not args.handler or ":" not in args.handler:
        parser.error("give --config, or --handler FILE.py:function")
    path, _, function = args.handler.rpartition(":")
    file = Path(path).resolve()
    return WorkerConfig(
        function=file.stem.replace("_", "-"),
        handler=f"{file.stem}:{function}",
        source_dir=str(file.parent),
        host=args.host,
        port=args.port,
        timeout=args.timeout,
        metrics_dir=args.metrics_dir,
        max_inflight=args.max_inflight,
        max_request_body_size=args.max_body,
        batch_size=args.batch_size,
        batch_timeout=args.batch_timeout_ms / 1000,
        idle_timeout=args.idle_timeout,
    )


def _control(config: WorkerConfig, **message: Any) -> None:
    if config.control_fd is None:
        if message.get("event") == "failed":
            print(f"worker failed to start: {message.get('error')}", file=sys.stderr)
        return
    os.write(config.control_fd, (json.dumps(message) + "\n").encode())


def _listening_socket(config: WorkerConfig) -> socket.socket:
    if config.listen_fd is not None:
        return socket.socket(fileno=config.listen_fd)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if config.reuse_port:  # the kernel spreads the port's connections over its listeners
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((config.host, config.port or 0))
    sock.listen(2048)
    return sock


async def serve(config: WorkerConfig) -> int:
    from sluice.errors import HandlerError
    from sluice.handler import load_handler, run_init_context
    from sluice.tally import SHARED

    from .context import make_context
    from .runner import Runner
    from .watchdog import LoopHeartbeat, start_watchdog

    loop = asyncio.get_running_loop()
    context = make_context(config.function, config.worker_id, config.http_trigger or "http",
                           config.platform_url)

    def log(level: str, message: str, **fields: Any) -> None:
        getattr(context.logger, f"{level}_with")(message, **fields)

    runner: Any
    if config.serving is not None:  # a model server: the registry's model, not a handler
        runner = _serving_runner(config, log)
        if runner is None:
            return EXIT_STARTUP_FAILED
        is_async = True
    else:
        try:
            source_dir = Path(config.source_dir) if config.source_dir else None
            loaded = load_handler(config.handler, source_dir)
            await run_init_context(loaded, context)
        except HandlerError as exc:
            _control(config, event="failed", error=str(exc))
            return EXIT_STARTUP_FAILED
        runner = Runner(loaded, context, config.timeout, log)
        is_async = loaded.is_async
    server = None
    if config.http_trigger is not None:
        server = await _start_http(config, runner, log)
        if server is None:
            return EXIT_STARTUP_FAILED
    kafka_loops = _kafka_loops(config, runner, log, context,
                               lambda ok, why: _control(config, event="health", ok=ok, reason=why))
    kafka_tasks = [asyncio.create_task(k.run()) for k in kafka_loops]
    if is_async:
        # asyncio.wait_for answers 504 for slow coroutines; this catches one that blocks the loop
        heartbeat = LoopHeartbeat(loop, max(0.05, min(1.0, config.timeout / 4)))
        start_watchdog(heartbeat, config.timeout + heartbeat.period, config.function,
                       config.worker_id)
    else:
        start_watchdog(runner, config.timeout, config.function, config.worker_id)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config.parent_fd is not None:
        parent_fd = config.parent_fd

        def parent_gone() -> None:
            try:
                if os.read(parent_fd, 1):
                    return
            except OSError:
                pass
            loop.remove_reader(parent_fd)
            stop.set()

        loop.add_reader(parent_fd, parent_gone)

    # what start-up made (modules, the handler's state, a model) lives as long as the worker:
    # out of the collector's sight, a full collection stays a few ms instead of tens (seen:
    # 55 ms pauses with torch loaded, each one dropping a batch's worth of deadlines)
    gc.freeze()
    SHARED.every(0.5)  # metrics gathered in process, written out (sluice.tally)
    _control(config, event="ready", pid=os.getpid(), worker=config.worker_id)
    if config.load_every > 0 and config.control_fd is not None:  # the function autoscales
        _report_load(config, runner, server)
    await stop.wait()

    _callback(context, "drain", log)
    for kafka_loop in kafka_loops:
        kafka_loop.stop()
    if server is not None:
        await server.drain(config.drain_timeout)
    if kafka_tasks:  # each finishes its batch, commits and leaves the group
        await asyncio.wait(kafka_tasks, timeout=config.drain_timeout)
    if config.serving is not None:  # close the models (and a Triton server the worker started)
        await runner.aclose()
    _callback(context, "termination", log)
    SHARED.stop()
    return EXIT_OK


async def _start_http(config: WorkerConfig, runner: Any, log: Any) -> Any:
    from sluice.triggers.http import HttpLimits, HttpServer

    metrics = metrics_page = None
    if config.metrics_dir:
        from .metrics import WorkerMetrics

        worker_metrics = WorkerMetrics(config.function, config.http_trigger or "http")
        metrics, metrics_page = worker_metrics.requests, worker_metrics.page
    server = HttpServer(
        runner,
        HttpLimits(
            max_request_body_size=config.max_request_body_size,
            max_inflight=config.max_inflight,
            max_connections=config.max_connections,
            batch_size=config.batch_size,
            batch_timeout=config.batch_timeout,
            idle_timeout=config.idle_timeout,
        ),
        trigger_name=config.http_trigger or "http",
        metrics=metrics,
        metrics_page=metrics_page,
        log=log,
        trigger_token=config.trigger_token,
        raw_body=config.serving is not None,
    )
    try:
        sock = _listening_socket(config)
    except OSError as exc:
        _control(config, event="failed", error=f"cannot listen on port {config.port}: {exc}")
        return None
    await server.start(sock)
    if config.control_fd is None:
        print(f"serving {config.handler} on http://{config.host}:{sock.getsockname()[1]}",
              file=sys.stderr, flush=True)
    return server


def _report_load(config: WorkerConfig, runner: Any, server: Any) -> None:
    from .load import LoadMeter, report_load
    from .runner import Runner

    meter = LoadMeter(
        (lambda: runner.busy_seconds) if isinstance(runner, Runner) else (lambda: 0.0),
        server.inflight_time if server is not None else (lambda: 0.0))
    report_load(config.load_every, meter, lambda busy, inflight: _control(
        config, event="load", busy=busy, inflight=inflight))


def _serving_runner(config: WorkerConfig, log: Any) -> Any:
    """The model server's runner, or None (the reason sent to the platform) if the model cannot
    be loaded."""
    from sluice.errors import SluiceError
    from sluice.serving.runner import load_serving

    assert config.serving is not None
    if not config.artifacts or not config.model_cache:
        _control(config, event="failed", error="a serving worker needs the platform's model "
                 "registry (artifacts) and a model cache folder")
        return None
    try:
        return load_serving(config.serving, config.artifacts, Path(config.model_cache),
                            config.gpus, metrics=config.metrics_dir is not None, log=log,
                            handler=config.handler,
                            source_dir=Path(config.source_dir) if config.source_dir else None)
    except (SluiceError, OSError, RuntimeError) as exc:
        _control(config, event="failed", error=f"model {config.serving.get('model')!r} could "
                 f"not be served: {exc}")
        return None


def _kafka_loops(config: WorkerConfig, runner: Any, log: Any, context: Any,
                 on_health: Any) -> list[Any]:
    if not config.kafka:
        return []
    from sluice.triggers.kafka.consumer import KafkaMetrics, KafkaTriggerLoop
    from sluice.triggers.kafka.settings import KafkaSettings

    loops = []
    for data in config.kafka:
        # a model server takes each poll's messages at once: its batcher merges them
        settings = KafkaSettings(**{**data, "batch": True} if config.serving else data)
        metrics = KafkaMetrics(config.function, settings.trigger) if config.metrics_dir else None
        loops.append(KafkaTriggerLoop(settings, runner, log, metrics, context.platform,
                                      on_health))
    return loops


def _callback(context: Any, kind: str, log: Any) -> None:
    """Nuclio's drain/termination callbacks: a failing one is logged, never fatal."""
    try:
        context.platform._on_signal(callback_type=kind)
    except Exception as exc:
        log("error", f"{kind} callback raised {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    config = _parse_args(argv)
    os.environ.update(config.env)
    if config.metrics_dir:
        # must be set before prometheus_client is imported
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = config.metrics_dir
    import uvloop

    return uvloop.run(serve(config))
