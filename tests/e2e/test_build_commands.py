"""spec.build.commands against a real daemon: pip installs (offline, from a wheel written by the
test) into a function's own environment, reused by later deploys and after a restart; a failing
command fails the deploy with pip's error; job runs use the environment too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Daemon
from tests.integration.test_build_env import tiny_wheel

pytestmark = pytest.mark.slow

USES_TINYPKG = """\
import sys

import tinypkg


def handler(context, event):
    return {"value": tinypkg.VALUE, "prefix": sys.prefix}
"""


def log_messages(daemon: Daemon, name: str) -> list[str]:
    out = daemon.cli("logs", name, "--tail", "0").stdout
    return [json.loads(line)["message"] for line in out.splitlines()]


def write_function(folder: Path, name: str, spec: dict[str, object], code: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(code)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def nuclio_yaml(folder: Path, name: str, commands: list[str]) -> Path:
    return write_function(folder, name, {
        "apiVersion": "nuclio.io/v1beta1", "kind": "NuclioFunction", "metadata": {"name": name},
        "spec": {"handler": "main:handler", "runtime": "python:3.11",
                 "build": {"commands": commands, "noBaseImagesPull": True}}}, USES_TINYPKG)


def test_function_yaml_with_pip_install_serves_and_later_deploys_reuse_its_env(
        daemon: Daemon, tmp_path):
    commands = [f"pip install --no-index --no-deps {tiny_wheel(tmp_path / 'wheels')}"]
    deployed = daemon.cli("deploy", str(nuclio_yaml(tmp_path / "a", "scorer", commands)),
                          "-o", "json")
    status = json.loads(deployed.stdout)["status"]
    assert status["state"] == "ready"
    answer = httpx.post(status["endpoint"] + "/", json={}).json()
    envs = daemon.home / "envs"
    assert answer["value"] == 42 and Path(answer["prefix"]).parent == envs
    assert subprocess.run([sys.executable, "-c", "import tinypkg"]).returncode != 0

    lines = log_messages(daemon, "scorer")
    started = [m for m in lines if " command 1/1 started: pip install" in m]
    assert len(started) == 1 and any("Successfully installed tinypkg-1.0" in m for m in lines)
    assert any(" command 1/1 finished in " in m for m in lines)
    exported = yaml.safe_load(daemon.cli("export", "scorer").stdout)
    assert exported["spec"]["build"]["commands"] == commands

    # another function, same commands: the environment is there, nothing runs again
    other = nuclio_yaml(tmp_path / "b", "ranker", commands)
    assert json.loads(daemon.cli("deploy", str(other), "-o", "json").stdout)["status"][
        "state"] == "ready"
    ranker = log_messages(daemon, "ranker")
    assert any("reused, nothing to run" in m for m in ranker)
    assert not any("started: pip install" in m for m in ranker)
    assert len(list(envs.glob("*/sluice-env.json"))) == 1

    # a restarted platform finds the environment again
    daemon.stop()
    daemon.start()
    for name in ("scorer", "ranker"):
        assert httpx.post(daemon.endpoint(name) + "/", json={}).json()["value"] == 42
    assert len([m for m in log_messages(daemon, "scorer") if "started: pip install" in m]) == 1


def test_failing_pip_install_fails_the_deploy_with_pips_error(daemon: Daemon, tmp_path):
    failing = ["pip install --no-index no-such-package-xyz"]
    result = daemon.cli("deploy", str(nuclio_yaml(tmp_path / "a", "broken", failing)),
                        check=False)
    assert result.returncode == 1
    assert "build command 1/1 `pip install --no-index no-such-package-xyz` exited with code 1" \
        in result.stderr
    assert "No matching distribution found for no-such-package-xyz" in result.stderr
    status = httpx.get(f"{daemon.api}/api/functions/broken").json()["status"]
    assert status["state"] == "error" and "no-such-package-xyz" in status["message"]
    assert any("No matching distribution found" in m for m in log_messages(daemon, "broken"))
    assert not [p for p in (daemon.home / "envs").iterdir() if p.is_dir()]  # nothing half-built

    # a serving function whose new build fails keeps its previous version serving
    good = write_function(tmp_path / "b", "svc", {"name": "svc", "handler": "main:handler"},
                          "def handler(context, event):\n    return 'v1'\n")
    daemon.cli("deploy", str(good))
    spec = yaml.safe_load(good.read_text()) | {"build": {"commands": failing}}
    good.write_text(yaml.safe_dump(spec))
    assert daemon.cli("deploy", str(good), check=False).returncode == 1
    assert daemon.cli("invoke", "svc").stdout.strip() == "v1"


def test_job_runs_in_its_build_environment(daemon: Daemon, tmp_path):
    commands = [f"pip install --no-index --no-deps {tiny_wheel(tmp_path / 'wheels')}"]
    job = write_function(tmp_path / "job", "report", {
        "name": "report", "kind": "job", "handler": "main:handler",
        "build": {"commands": commands}},
        USES_TINYPKG.replace("    return", "    print('tinypkg says', tinypkg.VALUE)\n    return"))
    daemon.cli("deploy", str(job))
    result = daemon.cli("run", "report")
    assert "tinypkg says 42" in result.stdout and "status     succeeded" in result.stdout
