"""A `sluice up` daemon for a benchmark: its own state directory and port, the CLI beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sluice.platform.broker import free_port


class Platform:
    """Started on construction (returns once the API answers); ``stop()`` drains it."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, "SLUICE_HOME": str(home), "SLUICE_API_PORT": str(self.port),
                    **(env or {})}
        self.cli = [sys.executable, "-m", "sluice.cli"]
        self.process = subprocess.Popen(self.cli + ["up", *args], env=self.env,
                                        stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/health", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.05)

    def run(self, *args: str) -> bytes:
        """A CLI command against this platform; its stdout."""
        return subprocess.run(self.cli + list(args), env=self.env, check=True,
                              capture_output=True).stdout

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
