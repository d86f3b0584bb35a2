"""Fixtures that start real processes on free loopback ports and always stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sluice.platform.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = Path(__file__).resolve().parent / "handlers"
SLUICE = [sys.executable, "-m", "sluice.cli"]


def wait_http(url: str, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None
              ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Worker:
    """A stand-alone worker process serving one handler (no platform)."""

    url: str
    process: subprocess.Popen[bytes]
    metrics_dir: Path

    def post(self, path: str = "/", **kwargs: object) -> httpx.Response:
        kwargs.setdefault("timeout", 30)
        return httpx.post(self.url + path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(handler: str, *extra: str, env: dict[str, str] | None = None) -> Worker:
        port = free_port()
        metrics_dir = tmp_path / f"metrics-{port}"
        metrics_dir.mkdir()
        process = subprocess.Popen(
            [sys.executable, "-m", "sluice.worker", "--handler", f"{HANDLERS}/{handler}",
             "--port", str(port), "--metrics-dir", str(metrics_dir), *extra],
            env={**os.environ, **(env or {})},
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/metrics", process=process)
        return Worker(url, process, metrics_dir)

    yield start
    for process in started:
        stop(process)


@dataclass
class Daemon:
    """A `sluice up` daemon with its own state directory and API port (``up_args``: more of
    `sluice up`'s options)."""

    home: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    up_args: tuple[str, ...] = ()
    ready_timeout: float = 20.0
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.home.parent / f"daemon-{self.port}.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLUICE_HOME": str(self.home), "SLUICE_API_PORT": str(self.port)}

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> Daemon:
        out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(SLUICE + ["up", *self.up_args], env=self.env,
                                        stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        out.close()
        wait_http(self.api + "/api/health", timeout=self.ready_timeout, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=40)
            self.process = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(SLUICE + list(args), env=self.env, cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"sluice {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def deploy(self, handler_file: Path, name: str, *args: str) -> dict[str, object]:
        import json

        result = self.cli("deploy", str(handler_file), "--name", name, "-o", "json", *args)
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def endpoint(self, name: str) -> str:
        status = httpx.get(f"{self.api}/api/functions/{name}").json()["status"]
        return str(status["endpoint"])


def ray_daemon_in(folder: Path, *up_args: str) -> Daemon:
    """`sluice up --platform ray` with a local Ray of 2 CPUs (slower to start), not started."""
    return Daemon(home=folder / "home", port=free_port(),
                  up_args=("--platform", "ray", "--ray-cpus", "2", *up_args), ready_timeout=90)


@contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    """The daemon, started, and stopped after the block."""
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running(Daemon(home=tmp_path / "home", port=free_port())) as instance:
        yield instance


def submit_concurrently(model: object, requests: list) -> list:
    """Every request submitted at once to a Batcher over ``model`` (max batch 64, a 5 s
    objective); their outputs, in order."""
    import asyncio

    from sluice.serving import Batcher, BatchPolicy

    async def main() -> list:
        batcher = Batcher(model, BatchPolicy(max_batch=64), latency=5.0)  # type: ignore[arg-type]
        results = await asyncio.gather(*(batcher.submit({"x": x}) for x in requests))
        await batcher.close()
        return list(results)

    return asyncio.run(main())
