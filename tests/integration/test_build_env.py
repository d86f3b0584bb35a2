"""Build environments for real: venvs made, pip run (offline, from wheels written here), output
logged, failures and timeouts cleaned up, concurrent builds of one command list built once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.errors import DeployError
from sluice.platform.build_env import (
    MARKER,
    BuildEnv,
    EnvBuilder,
    env_key,
    platform_site_packages,
)
from sluice.platform.logs import FunctionLog


def tiny_wheel(folder: Path, name: str = "tinypkg", version: str = "1.0",
               code: str = "VALUE = 42\n") -> Path:
    """A pure-Python wheel holding package ``name`` (its ``__init__.py`` is ``code``),
    written by hand, for pip to install with no index."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: sluice-tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        raw = hashlib.sha256(data).digest()
        return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    record = "".join(f"{path},{digest(data)},{len(data)}\n" for path, data in files.items())
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist}/RECORD", record + f"{dist}/RECORD,,\n")
    return wheel


def pip_install(wheel: Path) -> str:
    return f"pip install --no-index --no-deps {wheel}"


def messages(log: FunctionLog) -> list[str]:
    return [json.loads(line)["message"] for line in log.path.read_text().splitlines()]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[FunctionLog]:
    log = FunctionLog(tmp_path / "fn.jsonl", "fn")
    yield log
    log.close()


def build(builder: EnvBuilder, commands: list[str], log: FunctionLog, cwd: Path,
          timeout: float = 120.0) -> BuildEnv:
    return asyncio.run(builder.ensure(commands, log, cwd, timeout, generation=1))


def site_listing() -> set[str]:
    return {p.name for folder in platform_site_packages() for p in Path(folder).iterdir()}


def test_pip_install_lands_in_the_env_which_keeps_the_platforms_packages(tmp_path, log):
    wheel = tiny_wheel(tmp_path / "wheels")
    before = site_listing()
    # pyyaml is the platform's: pip finds it already satisfied, with no index to look in
    commands = ["pip install --no-index pyyaml", pip_install(wheel)]
    env = build(EnvBuilder(tmp_path / "envs"), commands, log, tmp_path)

    assert env.path == tmp_path / "envs" / env_key(commands)
    probe = subprocess.run(
        [env.python, "-c", "import tinypkg, sluice, yaml, sys; "
         "print(tinypkg.VALUE, tinypkg.__file__.startswith(sys.prefix), sys.prefix)"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["42", "True", str(env.path)]
    platform = subprocess.run([sys.executable, "-c", "import tinypkg"], capture_output=True)
    assert platform.returncode != 0  # the platform's environment never has it
    assert site_listing() == before

    lines = messages(log)
    key = env.key
    assert f"build env {key}: command 1/2 started: pip install --no-index pyyaml" in lines
    assert any(line.startswith("Requirement already satisfied: pyyaml") for line in lines)
    assert any("Successfully installed tinypkg-1.0" in line for line in lines)
    assert any(line.startswith(f"build env {key}: command 2/2 finished in ") for line in lines)
    assert lines[-1].startswith(f"build env {key}: ready in ")
    assert json.loads((env.path / MARKER).read_text())["commands"] == commands


def test_a_package_the_env_installs_wins_over_the_platforms(tmp_path, log):
    wheel = tiny_wheel(tmp_path / "wheels", name="croniter", version="99.0",
                       code="OURS = True\n")
    env = build(EnvBuilder(tmp_path / "envs"), [pip_install(wheel)], log, tmp_path)
    probe = subprocess.run([env.python, "-c", "import croniter; print(croniter.OURS)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "True", probe.stderr
    import croniter

    assert not hasattr(croniter, "OURS")


def test_same_commands_reuse_the_env_and_run_nothing(tmp_path, log):
    commands = [pip_install(tiny_wheel(tmp_path / "wheels"))]
    first = build(EnvBuilder(tmp_path / "envs"), commands, log, tmp_path)
    built = (first.path / MARKER).stat().st_mtime_ns
    count = len(messages(log))

    again = build(EnvBuilder(tmp_path / "envs"), commands, log, tmp_path)  # a fresh platform
    assert again == first and (again.path / MARKER).stat().st_mtime_ns == built
    assert messages(log)[count:] == [f"build env {first.key}: reused, nothing to run "
                                     "(1 command already run)"]


def test_failing_command_raises_the_pip_error_and_leaves_nothing_behind(tmp_path, log):
    command = "pip install --no-index no-such-package-xyz"
    builder = EnvBuilder(tmp_path / "envs")
    with pytest.raises(DeployError) as info:
        build(builder, ["true", command], log, tmp_path)
    message = str(info.value)
    assert f"build command 2/2 `{command}` exited with code 1:" in message
    assert "No matching distribution found for no-such-package-xyz" in message
    assert not builder.path_of(env_key(["true", command])).exists()  # a retry starts clean
    assert any("No matching distribution found" in line for line in messages(log))


def test_timeout_stops_the_command_and_everything_it_started(tmp_path, log):
    builder = EnvBuilder(tmp_path / "envs")
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(DeployError) as info:
        build(builder, [f"sleep 60 & echo $! > {pid_file}; wait"], log, tmp_path, timeout=1.5)
    assert time.monotonic() - started < 10
    assert "ran past the build timeout of 1.5s (spec.build.timeout)" in str(info.value)
    assert not any(builder.envs_dir.glob("*/bin"))
    child = int(pid_file.read_text())
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_unfinished_build_is_removed_before_building_again(tmp_path, log):
    builder = EnvBuilder(tmp_path / "envs")
    path = builder.path_of(env_key(["true"]))
    (path / "junk").mkdir(parents=True)  # what a platform killed midway leaves
    env = build(builder, ["true"], log, tmp_path)
    assert not (env.path / "junk").exists() and (env.path / MARKER).exists()
    assert f"build env {env.key}: removing an unfinished build" in messages(log)


def test_concurrent_builds_of_one_command_list_build_it_once(tmp_path, log):
    counter = tmp_path / "runs.txt"
    commands = [f"sleep 0.5; echo ran >> {counter}"]

    async def both() -> list[BuildEnv]:
        # two builders, as two platforms on one state folder: only the file lock is shared
        return await asyncio.gather(
            EnvBuilder(tmp_path / "envs").ensure(commands, log, tmp_path, 60),
            EnvBuilder(tmp_path / "envs").ensure(commands, log, tmp_path, 60))

    first, second = asyncio.run(both())
    assert first == second and (first.path / MARKER).exists()
    assert counter.read_text() == "ran\n"
    assert any("built by a deploy that ran at the same time" in m for m in messages(log))


def test_commands_run_in_the_given_folder_with_the_env_first_on_path(tmp_path, log):
    out = tmp_path / "where.txt"
    env = build(EnvBuilder(tmp_path / "envs"),
                [f"pwd > {out}; command -v python >> {out}; command -v pip >> {out}; "
                 f"echo $VIRTUAL_ENV >> {out}"], log, tmp_path / "fn")
    assert out.read_text().split() == [str(tmp_path / "fn"), f"{env.path}/bin/python",
                                       f"{env.path}/bin/pip", str(env.path)]


def test_prune_removes_the_envs_no_function_uses(tmp_path, log):
    builder = EnvBuilder(tmp_path / "envs")
    kept = build(builder, ["true"], log, tmp_path)
    gone = build(builder, ["echo other"], log, tmp_path)
    assert builder.prune({kept.key}) == [gone.key]
    assert (kept.path / MARKER).exists() and not gone.path.exists()
    assert sorted(p.name for p in builder.envs_dir.iterdir()) == [kept.key, f"{kept.key}.lock"]
