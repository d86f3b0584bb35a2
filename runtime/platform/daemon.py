"""``sluice up``: the control-plane daemon in the foreground (API + supervisor + state)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

from sluice.errors import PlatformError, SluiceError
from sluice.settings import Settings

from .broker import EmbeddedBroker
from .local import LocalPlatform


def _lock(settings: Settings) -> int:
    """One daemon per state directory."""
    settings.ensure_dirs()
    fd = os.open(settings.home / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PlatformError(
            f"another sluice daemon is already running with state directory {settings.home} "
            "(see `sluice info`; set SLUICE_HOME to run a second one)") from None
    return fd


def _api_socket(settings: Settings) -> socket.socket:
    try:
        return socket.create_server((settings.api_host, settings.api_port), backlog=1024)
    except OSError as exc:
        raise PlatformError(
            f"cannot listen on {settings.api_host}:{settings.api_port} for the API: "
            f"{exc.strerror} (is another sluice running? pick a port with --port or "
            "SLUICE_API_PORT)") from None


async def run_daemon(settings: Settings, deploy: list[Path], out: TextIO = sys.stdout,
                     embedded_broker: bool = True, ray: bool = False,
                     ray_address: str | None = None, ray_cpus: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT. ``ray``: functions run on a Ray cluster (the one at
    ``ray_address``, else a local Ray with ``ray_cpus`` CPUs): each job attempt and each worker
    of an http, serving or Kafka function is a Ray actor with the spec's resources."""
    import uvicorn

    from sluice.packaging import FUNCTION_FILE_SUFFIXES, spec_from_path
    from sluice.spec import parse_spec

    from .api import create_app

    started = time.monotonic()
    lock_fd = _lock(settings)
    token = settings.token(create=True)
    assert token is not None
    sock = _api_socket(settings)
    api_url = f"http://{settings.connect_host}:{sock.getsockname()[1]}"
    broker = None
    cluster = settings.kafka_cluster()
    bootstrap = cluster.bootstrap
    if bootstrap is None and embedded_broker:
        broker = EmbeddedBroker(log_path=settings.logs_dir / "broker.log").start()
        bootstrap = broker.bootstrap
    ray_at = None
    job_runner = worker_launcher = None
    try:
        if ray:
            from . import ray_cluster, ray_jobs, ray_workers

            ray_at = ray_cluster.connect(ray_address, ray_cpus)
            job_runner = ray_jobs.RayAttempts()
            worker_launcher = ray_workers.RayWorkers()
        platform = LocalPlatform(settings, api_url=api_url, kafka_bootstrap=bootstrap,
                                 kafka_security=cluster.security, job_runner=job_runner,
                                 worker_launcher=worker_launcher)
        await platform.start()
    except BaseException:
        if broker is not None:
            broker.stop()
        _leave_ray(ray_at)
        raise
    info = {"api_url": api_url, "home": str(settings.home), "pid": os.getpid(),
            "broker": bootstrap, "broker_embedded": broker is not None, "version": _version(),
            "platform": "ray" if ray else "local", "ray": ray_at}
    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            yield  # the daemon handles signals itself, so that it can drain its functions

    server = Server(uvicorn.Config(
        create_app(platform, token, info, open_reads=settings.loopback_only),
        log_level="warning", lifespan="off",
        access_log=False, timeout_graceful_shutdown=5,
    ))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    settings.daemon_path.write_text(json.dumps(info))
    print(f"sluice is up in {time.monotonic() - started:.2f}s", file=out)
    print(f"  API          {api_url}   (token: {settings.token_path})", file=out)
    print(f"  state        {settings.home}", file=out)
    print(f"  nuclio       {api_url}/nuclio   (the dashboard URL for nuclio-jupyter; "
          "sluice.nuclio_dashboard_url() adds the token)", file=out)
    if ray_at is not None:
        print(f"  platform     ray at {ray_at}: every job run and every worker a Ray actor, "
              "with its resources; HTTP goes straight to the workers", file=out)
    if bootstrap:
        kind = "embedded Tansu, in memory" if broker is not None else "your cluster"
        print(f"  kafka        {bootstrap}   ({kind})", file=out)
    restored = len(platform.functions)
    if restored:
        print(f"  restored     {restored} function(s)", file=out)
    if platform.recovered:
        print(f"  runs         {len(platform.recovered)} run(s) the last platform left unfinished "
              "are marked failed (sluice runs --status failed)", file=out)

    files = [f for p in deploy for f in (sorted(p.iterdir()) if p.is_dir() else [p])
             if f.suffix in FUNCTION_FILE_SUFFIXES and not f.name.startswith("_")]
    for path in files:
        try:
            status = await platform.deploy(parse_spec(spec_from_path(path)))
            where = status.endpoint or f"a job: sluice run {status.name}"
            print(f"  deployed     {status.name:<12} {where}   ({path})", file=out)
        except SluiceError as exc:
            print(f"  failed       {path}: {exc}", file=out)
    if files and platform.functions:
        callable_ = [(n, f) for n, f in platform.functions.items() if f.spec.kind != "job"]
        name, fn = callable_[0] if callable_ else next(iter(platform.functions.items()))
        cli = "sluice" if os.environ.get("VIRTUAL_ENV") else ".venv/bin/sluice"
        print("\nTry, in another terminal:", file=out)
        if callable_:
            print(f"  {cli} invoke {name} --body '{{\"x\": 1}}'", file=out)
        if fn.port:
            print(f"  curl -X POST http://127.0.0.1:{fn.port}/ -H 'content-type: application/json'"
                  " -d '{\"x\": 1}'", file=out)
        print(f"  {cli} get            # every function, its state and endpoint", file=out)
        print(f"  {cli} logs {name}", file=out)
        jobs = [n for n, f in platform.functions.items() if f.spec.kind == "job"]
        if jobs:
            print(f"  {cli} run {jobs[0]}   # a job: one process per run, with progress",
                  file=out)
            print(f"  {cli} runs         # every run: status, duration, attempt", file=out)
        print(f"  {cli} deploy FILE.py --name NAME   # your own handler(context, event)", file=out)
    print("Press Ctrl-C to stop.", file=out, flush=True)
    try:
        await serving
    finally:
        print("sluice: stopping (draining functions)...", file=out, flush=True)
        await platform.stop()
        if broker is not None:
            broker.stop()
        _leave_ray(ray_at)
        settings.daemon_path.unlink(missing_ok=True)
        os.close(lock_fd)


def _leave_ray(ray_at: str | None) -> None:
    if ray_at is not None:
        from . import ray_cluster

        ray_cluster.disconnect()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sluice")
    except PackageNotFoundError:
        return "dev"
