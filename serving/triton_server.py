"""A local Triton Inference Server, started and stopped by sluice.

The ``tritonserver`` binary comes from nvidia-pytriton, which needs numpy<2 while sluice runs
on numpy 2 (ENV.md), so Triton lives in an environment of its own (``make triton-env`` makes
``.venv-triton``; ``SLUICE_TRITON_ENV`` names another) and sluice talks to it only over HTTP.

    server = LocalTriton(repository, workdir, TritonEnv.find())
    url = server.start()      # waits until the server and its models are ready
    ...
    server.stop()

Two details of that binary are handled here: its Python backend needs the stub built for the
environment's Python version beside it, and the stub must load the running interpreter's
``libpython`` (``LD_LIBRARY_PATH``), not the system's older one.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sluice.errors import PlatformError

ENV_VARIABLE = "SLUICE_TRITON_ENV"
_PROBE = """
import importlib.util, json, site, sys, sysconfig
spec = importlib.util.find_spec("pytriton")
print(json.dumps({
    "version": f"{sys.version_info[0]}.{sys.version_info[1]}",
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "site": site.getsitepackages()[0],
    "pytriton": list(spec.submodule_search_locations)[0] if spec else None,
}))
"""


@dataclass(frozen=True)
class TritonEnv:
    """Where Triton's environment keeps what the server needs."""

    python: Path
    version: str  # the environment's Python, e.g. "3.11": picks the backend stub
    libdir: Path  # that Python's libpython
    site: Path  # its site-packages, for the Python backend's imports (numpy, torch)
    dist: Path  # pytriton/tritonserver: bin/tritonserver, backends/, python_backend_stubs/

    @classmethod
    def find(cls, env: str | Path | None = None) -> TritonEnv:
        """The environment named by ``env``, else $SLUICE_TRITON_ENV, else ``.venv-triton``
        beside the running environment (the layout ``make`` creates)."""
        root = Path(env or os.environ.get(ENV_VARIABLE) or Path(sys.prefix).parent
                    / ".venv-triton")
        python = root / "bin" / "python"
        how = ("run `make triton-env` to create it, or set SLUICE_TRITON_ENV to an environment "
               "with nvidia-pytriton and torch installed")
        if not python.exists():
            raise PlatformError(f"the Triton backend needs Triton's environment, and {root} is "
                                f"not one: {how}")
        probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True,
                               timeout=60)
        facts = json.loads(probe.stdout) if probe.returncode == 0 else {}
        if not facts.get("pytriton"):
            raise PlatformError(f"{root} has no nvidia-pytriton (the tritonserver binary): {how}")
        dist = Path(facts["pytriton"]) / "tritonserver"
        return cls(python, facts["version"], Path(facts["libdir"]), Path(facts["site"]), dist)

    def libraries(self) -> Path:
        """The shared libraries nvidia-pytriton ships beside its package."""
        return self.dist.parent.parent / "nvidia_pytriton.libs"


class LocalTriton:
    """One ``tritonserver`` process serving ``repository`` on a free loopback port. Its output
    goes to ``workdir/tritonserver.log``; it dies with this process (PDEATHSIG)."""

    def __init__(self, repository: Path, workdir: Path, env: TritonEnv,
                 startup_timeout: float = 120.0) -> None:
        self.repository = repository
        self.workdir = workdir
        self.env = env
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

    def start(self) -> str:
        """Start the server; return its HTTP URL once it and its models are ready."""
        backends = self._backends()
        port = _free_port()
        command = [str(self.env.dist / "bin" / "tritonserver"),
                   f"--model-repository={self.repository}",
                   f"--backend-directory={backends}",
                   f"--cache-directory={self.env.dist / 'caches'}",
                   "--http-address=127.0.0.1", f"--http-port={port}",
                   "--allow-grpc=false", "--allow-metrics=false", "--allow-sagemaker=false",
                   "--allow-vertex-ai=false", "--strict-readiness=true",
                   "--exit-on-error=true", "--model-control-mode=none",
                   # a region name of our own, so several servers can share /dev/shm
                   f"--backend-config=python,shm-region-prefix-name=sluice{os.getpid()}-{port}_"]
        environment = dict(os.environ)
        libraries = [str(self.env.libdir), str(self.env.libraries())]
        if environment.get("LD_LIBRARY_PATH"):
            libraries.append(environment["LD_LIBRARY_PATH"])
        environment["LD_LIBRARY_PATH"] = ":".join(libraries)
        environment["PYTHONPATH"] = str(self.env.site)
        environment["PATH"] = f"{self.env.python.parent}:{environment.get('PATH', '')}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env=environment, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        self.url = f"http://127.0.0.1:{port}"
        self._wait_ready()
        return self.url

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the server (it unloads its models), then SIGKILL after ``grace``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _backends(self) -> Path:
        """Triton's backend folder with the Python backend's stub for this environment."""
        folder = self.workdir / "backends" / "python"
        folder.mkdir(parents=True, exist_ok=True)
        source = self.env.dist / "backends" / "python"
        links = {item.name: item for item in source.iterdir() if item.is_file()}
        links["triton_python_backend_stub"] = (self.env.dist / "python_backend_stubs"
                                               / self.env.version / "triton_python_backend_stub")
        for name, target in links.items():
            link = folder / name
            if not link.exists():
                link.symlink_to(target)
        return folder.parent

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PlatformError(f"tritonserver exited with code {self.process.returncode} "
                                    f"while starting:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise PlatformError(f"tritonserver was not ready after {self.startup_timeout:.0f} s:\n"
                            f"{self._log_tail()}")

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, so a crashed
    worker leaves no Triton server behind."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
