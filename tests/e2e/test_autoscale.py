"""Autoscaling through the real daemon: a function with replicas min 1, max 2 whose sync handler
sleeps gets a second replica under sustained concurrent HTTP load and gives it back once the
load is gone, on the local platform and on Ray. Short windows come from the spec; the only
timings asserted are generous deadlines for the state changes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Daemon, ray_daemon_in, running
from tests.e2e.test_jobs import wait_for

pytestmark = pytest.mark.slow

SLOW = """
import os, time

def handler(context, event):
    time.sleep(0.05)        # a sync handler: the worker is busy while it sleeps
    return {"pid": os.getpid()}
"""


WAITS = """
import asyncio, os

async def handler(context, event):
    await asyncio.sleep(0.1)    # async: the worker holds many such requests at once
    return {"pid": os.getpid()}
"""


def deploy_slow(daemon: Daemon, tmp_path: Path, name: str, code: str = SLOW,
                **replicas: object) -> dict:
    (tmp_path / "slow.py").write_text(code)
    spec = {"name": name, "handler": "slow:handler", "triggers": {"web": {"kind": "http"}},
            "replicas": {"min": 1, "max": 2, "target": 0.5, "scale_up_after": 1,
                         "scale_down_after": 3, **replicas}}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    out = daemon.cli("deploy", str(tmp_path / f"{name}.yaml"), "-o", "json").stdout
    return json.loads(out)["status"]  # type: ignore[no-any-return]


def status(daemon: Daemon, name: str) -> dict:
    return json.loads(daemon.cli("get", name, "-o", "json").stdout)["status"]  # type: ignore


class Clients:
    """Closed-loop HTTP clients, a new connection per request (so that a new worker gets its
    share), each pausing ``think`` seconds between requests; what each request got."""

    def __init__(self, endpoint: str, count: int, think: float = 0.0) -> None:
        self.endpoint, self.think = endpoint, think
        self.pids: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        client = httpx.Client(timeout=30, headers={"Connection": "close"})
        while not self._stop.is_set():
            try:
                response = client.post(self.endpoint + "/", json={})
                if response.status_code == 200:
                    self.pids.append(response.json()["pid"])
                else:
                    self.failures.append(f"HTTP {response.status_code}: {response.text}")
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
            self._stop.wait(self.think)
        client.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def scales_up_under_load(daemon: Daemon, tmp_path: Path, name: str) -> dict:
    deployed = deploy_slow(daemon, tmp_path, name)
    assert (deployed["replicas"], deployed["desired_replicas"]) == (1, 1)
    assert deployed["autoscale"] == {"min": 1, "max": 2, "target": 0.5, "load": 0.0}
    [first] = deployed["pids"]
    load = Clients(deployed["endpoint"], 3)
    try:
        scaled = wait_for(lambda: (s := status(daemon, name))["replicas"] == 2
                          and s["workers_ready"] == 2 and s, timeout=45,
                          what="a second replica under load")
        assert scaled["state"] == "ready"
        assert len(scaled["pids"]) == 2 and first in scaled["pids"]
        answered = len(load.pids)
        wait_for(lambda: set(load.pids[answered:]) == set(scaled["pids"]), timeout=30,
                 what="both replicas to answer")
    finally:
        load.stop()
    assert not load.failures, load.failures[:5]
    log = daemon.cli("logs", name).stdout
    assert f"scaling {name} 1 -> 2: load " in log and " workers over the last " in log
    return scaled


def test_an_http_function_scales_up_under_load_and_back_down_when_it_is_gone(daemon,
                                                                              tmp_path):
    scaled = scales_up_under_load(daemon, tmp_path, "elastic")
    trickle = Clients(scaled["endpoint"], 1, think=0.2)  # well under one worker's worth
    try:
        back = wait_for(lambda: (s := status(daemon, "elastic"))["replicas"] == 1 and s,
                        timeout=45, what="the second replica to go")
        assert back["desired_replicas"] == 1 and back["state"] == "ready"
        wait_for(lambda: len(status(daemon, "elastic")["pids"]) == 1, timeout=30,
                 what="the removed worker to exit")
        seen = len(trickle.pids)
        wait_for(lambda: len(trickle.pids) > seen + 2, what="requests after the scale-down")
    finally:
        trickle.stop()
    assert not trickle.failures, trickle.failures[:5]  # drained: in-flight requests finished
    assert set(trickle.pids[-2:]) == set(status(daemon, "elastic")["pids"])
    log = daemon.cli("logs", "elastic").stdout
    assert "scaling elastic 2 -> 1: load " in log and "drained and stopped" in log


def test_an_async_function_scales_on_its_requests_in_flight(daemon, tmp_path):
    deployed = deploy_slow(daemon, tmp_path, "waiter", WAITS, target_inflight=2)
    load = Clients(deployed["endpoint"], 4)  # about 4 in flight: 2 workers' worth
    try:
        scaled = wait_for(lambda: (s := status(daemon, "waiter"))["replicas"] == 2 and s,
                          timeout=45, what="a second replica for the requests in flight")
        assert scaled["autoscale"]["load"] > 0.5
    finally:
        load.stop()
    assert not load.failures, load.failures[:5]
    assert "scaling waiter 1 -> 2: load " in daemon.cli("logs", "waiter").stdout


def test_scale_sets_the_minimum_and_autoscaling_goes_on_above_it(daemon, tmp_path):
    deploy_slow(daemon, tmp_path, "floor")
    scaled = json.loads(daemon.cli("scale", "floor", "--replicas", "2", "-o", "json").stdout)
    now = scaled["status"]
    assert (now["replicas"], now["workers_ready"]) == (2, 2)
    assert now["autoscale"] is None  # min 2, max 2: nothing left to scale
    assert scaled["spec"]["replicas"]["min"] == scaled["spec"]["replicas"]["max"] == 2
    said = daemon.cli("scale", "floor", "--replicas", "1", "--max-replicas", "3").stdout
    assert "autoscaling 1 to 3" in said, said
    raised = status(daemon, "floor")
    # the new generation starts with the replicas that ran, within the new bounds
    assert raised["replicas"] == 2 and raised["autoscale"]["max"] == 3
    assert "autoscale: 1 to 3 replicas" in daemon.cli("get", "floor").stdout
    back = wait_for(lambda: (s := status(daemon, "floor"))["replicas"] == 1 and s, timeout=45,
                    what="idle replicas to go down to the new minimum")
    assert back["autoscale"]["min"] == 1


@pytest.fixture(scope="module")
def ray_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running(ray_daemon_in(tmp_path_factory.mktemp("ray-autoscale"))) as instance:
        yield instance


def test_the_same_function_scales_up_under_load_on_ray(ray_daemon, tmp_path):
    from tests.e2e.test_ray_workers import parent_of

    scaled = scales_up_under_load(ray_daemon, tmp_path, "ray-elastic")
    assert all(parent_of(pid).startswith("ray::WorkerActor") for pid in scaled["pids"])
    wait_for(lambda: status(ray_daemon, "ray-elastic")["replicas"] == 1, timeout=45,
             what="the second replica to go once idle")
    ray_daemon.cli("delete", "ray-elastic")
