"""Cron triggers fired by the platform's scheduler (real daemon, real workers)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import HANDLERS, Daemon

pytestmark = pytest.mark.slow


def fires(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def deploy_cron(daemon: Daemon, tmp_path: Path, name: str, cron: dict, workers: int = 1) -> Path:
    fires_file = tmp_path / f"{name}.jsonl"
    spec = {"name": name, "handler": "cron_handlers:record", "workers": workers,
            "env": {"FIRES_FILE": str(fires_file)},
            "triggers": {"web": {"kind": "http"}, "tick": {"kind": "cron", **cron}}}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "cron_handlers.py").write_text((HANDLERS / "cron_handlers.py").read_text())
    daemon.cli("deploy", str(tmp_path / f"{name}.yaml"))
    return fires_file


def test_interval_fires_once_per_tick_with_three_workers(daemon: Daemon, tmp_path):
    fires_file = deploy_cron(daemon, tmp_path, "ticker",
                             {"interval": "1s", "event": {"body": {"job": "refresh"}}}, workers=3)
    time.sleep(4.5)
    seen = fires(fires_file)
    assert 3 <= len(seen) <= 6, seen
    scheduled = [f["scheduled"] for f in seen]
    assert len(scheduled) == len(set(scheduled))  # each tick once, not once per worker
    assert all(f["kind"] == "cron" and f["name"] == "tick" for f in seen)
    assert all(f["trigger_header"] is None for f in seen)  # routing header not shown to handler
    assert seen[0]["body"] == {"job": "refresh"}
    for fire in seen:  # each fire near its scheduled second
        scheduled_at = time.mktime(time.strptime(fire["scheduled"][:19], "%Y-%m-%dT%H:%M:%S"))
        scheduled_at -= time.timezone
        assert fire["at"] - scheduled_at < 1.0
    page = httpx.get(daemon.api + "/metrics").text
    assert 'sluice_cron_fires_total{function="ticker",outcome="fired",trigger="tick"}' in page


def test_forbid_skips_a_fire_while_the_last_one_runs(daemon: Daemon, tmp_path):
    fires_file = deploy_cron(daemon, tmp_path, "slowpoke", {
        "interval": "1s", "concurrency_policy": "forbid", "event": {"body": {"sleep": 2.5}}},
        workers=2)
    time.sleep(5)
    logs = daemon.cli("logs", "slowpoke", "--tail", "0").stdout
    assert "skipped the fire" in logs and "concurrency_policy=forbid" in logs
    seen = fires(fires_file)
    starts = sorted(f["at"] for f in seen)
    assert all(b - a >= 2.0 for a, b in zip(starts, starts[1:], strict=False))  # never overlap


def test_catch_up_once_after_the_platform_was_down(daemon: Daemon, tmp_path):
    fires_file = deploy_cron(daemon, tmp_path, "catcher",
                             {"interval": "1s", "catch_up": "once"})
    time.sleep(1.5)
    daemon.stop()
    before = len(fires(fires_file))
    time.sleep(3)
    daemon.start()
    time.sleep(0.5)
    logs = daemon.cli("logs", "catcher", "--tail", "0").stdout
    assert "catching up the fire of" in logs
    assert len(fires(fires_file)) > before, logs


def test_invalid_cron_is_refused_at_deploy_with_an_example(daemon: Daemon, tmp_path):
    spec = {"name": "bad-cron", "handler": "x:y",
            "triggers": {"web": {"kind": "http"}, "t": {"kind": "cron", "schedule": "every day"}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    result = daemon.cli("deploy", str(tmp_path / "bad.yaml"), check=False)
    assert result.returncode == 1
    assert "cron schedule 'every day' is not valid" in result.stderr
    assert "e.g. '0 */6 * * *'" in result.stderr
