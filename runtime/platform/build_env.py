"""Build environments: where a function's ``build.commands`` (pip installs) run, and what its
workers and job runs then run with.

One venv per distinct command list, ``$SLUICE_HOME/envs/<key>``, the key a hash of the commands
and of the platform's own interpreter. It reuses the platform's packages: a ``.pth`` file adds
the platform's site-packages *after* the venv's own, so a package a command installs wins and
everything the platform has (sluice itself, numpy, ...) stays importable; and a ``pip`` shim in
its ``bin`` runs the venv's ``python -m pip``, so ``pip install x`` lands in the venv, never in
the platform's environment. (``venv --system-site-packages`` would not do: made from inside a
venv, it links the *base* interpreter's site-packages, not the platform's.)

An environment is built once, under a lock (two deploys with the same commands build it once),
in place (pip writes absolute paths into the scripts it installs, so a venv cannot be built
elsewhere and moved), and is complete only once its marker file, written last, exists. A failed,
timed-out or interrupted build is removed, so a retry starts clean. Every later deploy with the
same commands, of any function, reuses it and runs nothing. The commands run with a shell, the
venv's ``bin`` first on ``PATH``, in the function's folder; their output goes line by line to the
function's log, each command's start and end with its duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import site
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.errors import DeployError
from sluice.spec import FunctionSpec

from .logs import FunctionLog, pump

MARKER = "sluice-env.json"  # written last: the environment is complete
PTH_FILE = "_sluice_platform.pth"
TAIL_LINES = 12  # of a failed command's output, in the deploy's error message
LOCK_RETRY = 0.2  # seconds between tries for a lock another process holds


@dataclass(frozen=True)
class BuildEnv:
    """A complete build environment: its interpreter and what its processes are given."""

    key: str
    path: Path

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> str:
        return str(self.bin_dir / "python")

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with the venv activated: ``VIRTUAL_ENV`` and its ``bin`` first on PATH."""
        env = {k: v for k, v in base.items() if k != "PYTHONHOME"}
        env["VIRTUAL_ENV"] = str(self.path)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), base.get("PATH") or os.defpath])
        return env


def python_for(env: BuildEnv | None) -> str:
    """The interpreter a function's worker and job processes run: its environment's, else the
    platform's own."""
    return env.python if env is not None else sys.executable


def environ_for(env: BuildEnv | None, base: Mapping[str, str]) -> dict[str, str]:
    """The process environment of a function's worker or job process."""
    return env.environ(base) if env is not None else dict(base)


def platform_site_packages() -> list[str]:
    """The site-packages folders the platform imports from (its venv's, or the system's)."""
    return [path for path in site.getsitepackages() if os.path.isdir(path)]


def env_key(commands: Sequence[str]) -> str:
    """The environment of a command list on this platform's interpreter."""
    identity = {"commands": list(commands), "python": sys.version, "prefix": sys.prefix,
                "site": platform_site_packages()}
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


OnStep = Callable[[str], None]


class EnvBuilder:
    """Makes, finds and prunes the build environments under one folder."""

    def __init__(self, envs_dir: Path) -> None:
        self.envs_dir = envs_dir
        self._locks: dict[str, asyncio.Lock] = {}

    def path_of(self, key: str) -> Path:
        return self.envs_dir / key

    async def for_spec(self, spec: FunctionSpec, log: FunctionLog, cwd: Path,
                       on_step: OnStep | None = None, **fields: Any) -> BuildEnv | None:
        """The environment of a spec's build commands (None, at no cost: it has none)."""
        commands = commands_of(spec)
        if not commands or spec.build is None:
            return None
        return await self.ensure(commands, log, cwd, spec.build.timeout, on_step, **fields)

    async def ensure(self, commands: Sequence[str], log: FunctionLog, cwd: Path,
                     timeout: float, on_step: OnStep | None = None, **fields: Any) -> BuildEnv:
        """The complete environment of ``commands``, built now if there is none yet.
        Raises DeployError naming the failed command with the tail of its output."""
        key = env_key(commands)
        env = BuildEnv(key, self.path_of(key))
        fields = {**fields, "build": key}
        if (env.path / MARKER).exists():
            log.event("info", f"build env {key}: reused, nothing to run "
                      f"({_count(commands)} already run)", **fields)
            return env
        async with self._locks.setdefault(key, asyncio.Lock()):
            deadline = time.monotonic() + timeout
            async with self._file_lock(key, deadline):
                return await self._build(env, commands, log, cwd, timeout, deadline, on_step,
                                         fields)

    async def _build(self, env: BuildEnv, commands: Sequence[str], log: FunctionLog, cwd: Path,
                     timeout: float, deadline: float, on_step: OnStep | None,
                     fields: dict[str, Any]) -> BuildEnv:
        """Under the environment's locks: reuse it if a concurrent deploy built it, else
        build it (and remove what a failed build left)."""
        key = env.key
        if (env.path / MARKER).exists():
            log.event("info", f"build env {key}: reused, built by a deploy that ran at the "
                      "same time", **fields)
            return env
        if env.path.exists():  # a build that died midway (the platform was killed)
            log.event("warn", f"build env {key}: removing an unfinished build", **fields)
            await asyncio.to_thread(shutil.rmtree, env.path, True)
        started = time.monotonic()
        log.event("info", f"build env {key}: building {_count(commands)} into {env.path}",
                  **fields)
        try:
            await _Build(env, list(commands), log, cwd, timeout, deadline, on_step,
                         fields).run()
        except BaseException:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, env.path, True))
            raise
        seconds = time.monotonic() - started
        _write_marker(env.path, {"commands": list(commands), "built": time.time(),
                                 "seconds": round(seconds, 3)})
        log.event("info", f"build env {key}: ready in {seconds:.2f}s", **fields)
        return env

    @contextlib.asynccontextmanager
    async def _file_lock(self, key: str, deadline: float) -> AsyncIterator[None]:
        """Across processes (two platforms on one state folder): an flock on ``<key>.lock``.
        Within this platform the asyncio lock already serialises, so waiting here is rare and
        a short retry is enough."""
        self.envs_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.envs_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DeployError(f"build env {key}: another process held its lock "
                                          "past the build timeout") from None
                    await asyncio.sleep(LOCK_RETRY)
            yield
        finally:
            os.close(fd)  # releases the flock

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Remove every environment not in ``keep`` (and not being built); their keys."""
        if not self.envs_dir.is_dir():
            return []
        wanted = set(keep)
        removed = []
        for child in sorted(self.envs_dir.iterdir()):
            key = child.name.removesuffix(".lock")
            if key in wanted or key in removed:
                continue
            lock = self.envs_dir / f"{key}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built right now
            else:
                shutil.rmtree(self.path_of(key), ignore_errors=True)
                lock.unlink(missing_ok=True)
                removed.append(key)
            finally:
                os.close(fd)
        return removed


def commands_of(spec: FunctionSpec) -> list[str]:
    """A spec's build commands (no ``build``, or an empty list: none, and no environment)."""
    return list(spec.build.commands) if spec.build is not None else []


def keys_in_use(specs: Iterable[Mapping[str, Any]]) -> set[str]:
    """The environments of these spec dicts (as the platform stores them)."""
    builds = (spec.get("build") or {} for spec in specs)
    return {env_key(build["commands"]) for build in builds if build.get("commands")}


def _count(commands: Sequence[str]) -> str:
    return f"{len(commands)} command" + ("" if len(commands) == 1 else "s")


def _write_marker(path: Path, data: dict[str, Any]) -> None:
    partial = path / (MARKER + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    partial.replace(path / MARKER)


@dataclass
class _Build:
    """One build of one environment: make the venv, then run each command in it."""

    env: BuildEnv
    commands: list[str]
    log: FunctionLog
    cwd: Path
    timeout: float
    deadline: float
    on_step: OnStep | None
    fields: dict[str, Any]

    async def run(self) -> None:
        has_pip = importlib.util.find_spec("pip") is not None
        self.cwd.mkdir(parents=True, exist_ok=True)
        # without pip it takes ~0.1 s; the shim below runs the platform's pip
        await self._step("create the venv", [sys.executable, "-m", "venv"]
                         + (["--without-pip"] if has_pip else []) + [str(self.env.path)],
                         os.environ)
        self._link_platform(has_pip)
        environ = self.env.environ(os.environ) | {
            "PYTHONUNBUFFERED": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
            "PIP_USER": "0"}
        shell = shutil.which("bash") or "/bin/sh"
        total = len(self.commands)
        for number, command in enumerate(self.commands, 1):
            what = f"command {number}/{total}"
            if self.on_step is not None:
                self.on_step(f"{what}: {command}")
            self.log.event("info", f"build env {self.env.key}: {what} started: {command}",
                           **self.fields)
            started = time.monotonic()
            await self._step(f"{what} `{command}`", [shell, "-c", command], environ)
            self.log.event("info", f"build env {self.env.key}: {what} finished in "
                           f"{time.monotonic() - started:.2f}s", **self.fields)

    def _link_platform(self, has_pip: bool) -> None:
        """The platform's packages after the venv's own; ``pip`` that installs into the venv."""
        lib = self.env.path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        lines = [f"import site; site.addsitedir({path!r})\n" for path in platform_site_packages()]
        (lib / "site-packages" / PTH_FILE).write_text("".join(lines))
        if not has_pip:
            return  # the venv has its own pip
        for name in ("pip", "pip3", f"pip3.{sys.version_info.minor}"):
            shim = self.env.bin_dir / name
            shim.write_text(f"#!/bin/sh\nexec {shlex.quote(self.env.python)} -m pip \"$@\"\n")
            shim.chmod(0o755)

    async def _step(self, what: str, argv: list[str], environ: Mapping[str, str]) -> None:
        """Run one process to its end, its output to the log; DeployError if it fails."""
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=self.cwd, env=dict(environ), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)  # its own group: a timeout stops all it started
        assert process.stdout is not None and process.stderr is not None

        def writer(stream: str) -> Callable[[bytes], None]:
            def write(raw: bytes) -> None:
                text = raw.decode("utf-8", "replace").rstrip()
                if text:
                    tail.append(text)
                    self.log.event("info" if stream == "stdout" else "warn", text,
                                   stream=stream, **self.fields)
            return write

        pumps = asyncio.gather(pump(process.stdout, writer("stdout")),
                               pump(process.stderr, writer("stderr")))
        try:
            code = await asyncio.wait_for(process.wait(),
                                          max(self.deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise DeployError(f"build {what} ran past the build timeout of {self.timeout:g}s "
                              "(spec.build.timeout)" + _tail(tail)) from None
        finally:
            if process.returncode is None:  # timed out or cancelled: stop it all
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever it left running
            with contextlib.suppress(TimeoutError):  # a pipe held open by an escaped daemon
                await asyncio.wait_for(pumps, 5.0)
        if code != 0:
            raise DeployError(f"build {what} exited with code {code}" + _tail(tail))


def _tail(lines: deque[str]) -> str:
    return (":\n" + "\n".join(lines)) if lines else ""
