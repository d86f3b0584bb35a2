"""Workers of http and Kafka functions on `sluice up --platform ray`: each worker a Ray actor on
a real local Ray with 2 CPUs, serving its port itself; a killed actor is a crashed worker; and
the same scenarios (deploy/invoke/scale/delete, a Kafka consumer group, cron, a job run) give
the same results on both platforms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from sluice.platform.broker import free_port
from tests.conftest import HANDLERS, Daemon, ray_daemon_in, running
from tests.e2e.test_cron import deploy_cron, fires
from tests.e2e.test_jobs import alive, deploy_job, runs, wait_for
from tests.e2e.test_kafka import FAST_GROUP, broker_of, create_topic, produce, read_all

pytestmark = pytest.mark.slow

H = HANDLERS / "ray_worker_handlers.py"
KILL = """
import sys, ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False,
         configure_logging=False)
[name] = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
          if a["namespace"] == "sluice" and a["name"].startswith(sys.argv[2] + ".")]
ray.kill(ray.get_actor(name, namespace="sluice"))
print(name)
"""


@pytest.fixture(scope="module")
def ray_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running(ray_daemon_in(tmp_path_factory.mktemp("ray-workers"))) as instance:
        yield instance


@pytest.fixture(scope="module")
def local_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running(Daemon(home=tmp_path_factory.mktemp("local-workers") / "home",
                        port=free_port())) as instance:
        yield instance


def status(daemon: Daemon, name: str) -> dict:
    return json.loads(daemon.cli("get", name, "-o", "json").stdout)["status"]


def parent_of(pid: int) -> str:
    ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    return Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


# what starts a worker's process on each platform: the daemon itself, or a Ray actor
WORKER_PARENT = {"local": "-m sluice.cli up", "ray": "ray::WorkerActor"}
JOB_PARENT = {"local": "-m sluice.cli up", "ray": "ray::AttemptActor"}


def started_by(parent: str, platform: str, parents: dict[str, str]) -> bool:
    return parent.startswith(parents[platform]) if platform == "ray" else (
        parents[platform] in parent)


def test_an_http_function_runs_in_a_ray_actor_and_serves_its_own_port(ray_daemon):
    assert "every worker a Ray actor" in ray_daemon.cli("info").stdout
    deployed = ray_daemon.deploy(H, "where", "--handler", "where")["status"]
    assert deployed["state"] == "ready" and deployed["workers_ready"] == 1
    [pid] = deployed["pids"]
    assert parent_of(pid).startswith("ray::WorkerActor"), parent_of(pid)
    # at the platform's own priority, not at the niceness Ray gives its worker processes (15)
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0)
    answer = httpx.post(deployed["endpoint"] + "/", json={"x": 1}).json()  # straight to it
    assert answer["body"] == {"x": 1} and answer["pid"] == pid
    assert answer["parent"].startswith("ray::WorkerActor")
    assert answer["resources"] == {"CPU": 0.5}  # no resources.cpu: half a CPU per replica
    assert json.loads(ray_daemon.cli("invoke", "where", "--body", '{"y": 2}').stdout)["body"] \
        == {"y": 2}
    ray_daemon.cli("delete", "where")
    wait_for(lambda: not alive(pid), what="the worker to stop with its function")


def test_a_function_asking_for_more_than_the_ray_cluster_has_fails_at_once(ray_daemon,
                                                                           tmp_path):
    spec = {"name": "huge", "handler": "ray_worker_handlers:where", "resources": {"cpu": 4},
            "triggers": {"http": {"kind": "http"}}}
    (tmp_path / "ray_worker_handlers.py").write_text(H.read_text())
    (tmp_path / "huge.yaml").write_text(yaml.safe_dump(spec))
    started = time.monotonic()
    result = ray_daemon.cli("deploy", str(tmp_path / "huge.yaml"), check=False)
    assert result.returncode == 1 and time.monotonic() - started < 30
    assert ("Ray cannot place the function's 1 worker(s): it asks for 4 CPU(s) but the whole "
            "Ray cluster has 2" in result.stderr)
    ray_daemon.cli("delete", "huge")
    # half a CPU per replica: scaling to 5 replicas is refused, the replica serving stays
    deployed = ray_daemon.deploy(H, "roomy", "--handler", "where")["status"]
    started = time.monotonic()
    result = ray_daemon.cli("scale", "roomy", "--replicas", "5", check=False)
    assert result.returncode == 1 and time.monotonic() - started < 30
    assert ("Ray cannot place the function's 5 worker(s): together they ask for 2.5 CPU(s) "
            "but the whole Ray cluster has 2" in result.stderr)
    now = status(ray_daemon, "roomy")
    assert (now["state"], now["replicas"], now["pids"]) == ("ready", 1, deployed["pids"])
    assert httpx.post(deployed["endpoint"] + "/", json={}).json()["pid"] == now["pids"][0]
    ray_daemon.cli("delete", "roomy")


def test_a_killed_worker_actor_is_restarted_and_the_function_serves_again(ray_daemon):
    deployed = ray_daemon.deploy(H, "phoenix", "--handler", "where")["status"]
    [old] = deployed["pids"]
    ray_at = httpx.get(ray_daemon.api + "/api/info").json()["ray"]
    killed = subprocess.run([sys.executable, "-c", KILL, ray_at, "phoenix"], check=True,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "RAY_AUTH_MODE": "token"}).stdout.strip()
    assert killed.startswith("phoenix.g1.w0.")
    now = wait_for(lambda: (s := status(ray_daemon, "phoenix"))["state"] == "ready"
                   and s["pids"] and s["pids"] != [old] and s, timeout=60,
                   what="a new worker to take over")
    assert now["restarts"] == 1
    [new] = now["pids"]
    answer = httpx.post(deployed["endpoint"] + "/", json={"again": True}).json()
    assert answer["pid"] == new and answer["body"] == {"again": True}
    assert parent_of(new).startswith("ray::WorkerActor")
    log = ray_daemon.cli("logs", "phoenix").stdout
    assert "worker 0 lost its Ray actor (it was killed by `ray.kill`); restarting" in log
    wait_for(lambda: not alive(old), what="the old worker to leave with its actor's lifeline")
    ray_daemon.cli("delete", "phoenix")


@pytest.mark.parametrize("platform", ["local", "ray"])
def test_a_kafka_function_consumes_as_one_consumer_group_on_both_platforms(platform, request):
    daemon: Daemon = request.getfixturevalue(f"{platform}_daemon")
    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "ray-events", 2)
    deployed = daemon.deploy(
        H, "ray-scorer", "--handler", "score", "--replicas", "2", "--trigger",
        f"kafka:topic=ray-events,group=ray-scorers,output=ray-scores,"
        f"content_type=application/json,{FAST_GROUP}")["status"]
    pids = set(deployed["pids"])
    assert len(pids) == 2 and all(started_by(parent_of(p), platform, WORKER_PARENT)
                                  for p in pids)
    sent: list[int] = []
    seen: set[int] = set()

    def both_members_consume() -> bool:  # until the group has settled on both replicas
        batch = list(range(len(sent), len(sent) + 20))
        produce(bootstrap, "ray-events", [(f"k{seq}", {"seq": seq}) for seq in batch])
        sent.extend(batch)
        time.sleep(0.5)
        try:
            records = read_all(bootstrap, "ray-scores", 1, timeout=10)
        except AssertionError:  # no output topic yet: nothing consumed so far
            return False
        seen.update(json.loads(r.value)["pid"] for r in records)
        return seen == pids

    wait_for(both_members_consume, timeout=60, what="both replicas to consume")
    results = [json.loads(r.value) for r in read_all(bootstrap, "ray-scores", len(sent))]
    assert {r["seq"] for r in results} == set(sent)  # every message, at least once
    assert {r["pid"] for r in results} == pids
    assert all(started_by(r["parent"], platform, WORKER_PARENT) for r in results)
    by_pid: dict[int, set[int]] = {}
    for r in results:
        by_pid.setdefault(r["pid"], set()).add(r["partition"])
    assert len(by_pid) == 2  # the replicas split the topic's partitions between them
    daemon.cli("delete", "ray-scorer")


def test_a_serving_function_on_ray_answers_v2_from_its_actors_worker(ray_daemon, tmp_path):
    import numpy as np
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()
    torch.save(model, tmp_path / "tiny.pt")
    ray_daemon.cli("models", "push", "tiny", str(tmp_path / "tiny.pt"))
    spec = {"name": "tiny", "kind": "serving",
            "serving": {"model": "tiny", "inputs": [{"name": "x", "dims": [4]}],
                        "outputs": [{"name": "y", "dims": [2]}]}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec))
    deployed = json.loads(ray_daemon.cli("deploy", str(tmp_path / "tiny.yaml"), "-o",
                                         "json").stdout)["status"]
    [pid] = deployed["pids"]
    assert parent_of(pid).startswith("ray::WorkerActor")
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    answer = httpx.post(deployed["endpoint"] + "/v2/models/tiny/infer", timeout=30, json={
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                    "data": rows.ravel().tolist()}]}).json()
    with torch.inference_mode():
        expected = model(torch.from_numpy(rows)).numpy().ravel()
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-5)
    ray_daemon.cli("delete", "tiny")


@pytest.mark.parametrize("platform", ["local", "ray"])
def test_cron_fires_once_per_tick_to_the_workers_on_both_platforms(platform, request, tmp_path):
    daemon: Daemon = request.getfixturevalue(f"{platform}_daemon")
    fires_file = deploy_cron(daemon, tmp_path, "ray-ticker", {"interval": "1s"}, workers=2)
    assert all(started_by(parent_of(p), platform, WORKER_PARENT)
               for p in status(daemon, "ray-ticker")["pids"])
    seen = wait_for(lambda: len(fires(fires_file)) >= 3 and fires(fires_file), timeout=30,
                    what="three cron fires")
    scheduled = [f["scheduled"] for f in seen]
    assert len(scheduled) == len(set(scheduled))  # fired by the platform: once, not per worker
    daemon.cli("delete", "ray-ticker")


@pytest.mark.parametrize("platform", ["local", "ray"])
def test_a_job_run_gives_the_same_record_on_both_platforms(platform, request, tmp_path):
    daemon: Daemon = request.getfixturevalue(f"{platform}_daemon")
    deploy_job(daemon, tmp_path, "where-job", "where", module="ray_job_handlers",
               params={"steps": 5})
    result = daemon.cli("run", "where-job", "--param", "steps=2")
    assert "2/2  100%  step 2" in result.stderr and "printed on ray" in result.stdout
    [run] = runs(daemon, "where-job")
    assert (run["status"], run["exit_code"], run["attempt"], run["params"]) == (
        "succeeded", 0, 1, {"steps": 2})
    assert run["outputs"]["metrics"] == {"steps": 2}
    assert run["outputs"]["result"]["steps"] == 2
    assert started_by(run["outputs"]["result"]["parent"], platform, JOB_PARENT)
    daemon.cli("delete", "where-job")


@pytest.mark.parametrize("platform", ["local", "ray"])
def test_deploy_invoke_scale_delete_give_the_same_results_on_both_platforms(
        platform, request):
    daemon: Daemon = request.getfixturevalue(f"{platform}_daemon")
    name = f"parity-{platform}"
    deployed = daemon.deploy(H, name, "--handler", "where")["status"]
    assert (deployed["state"], deployed["replicas"], deployed["workers_ready"]) == \
        ("ready", 1, 1)
    endpoint = deployed["endpoint"]
    assert httpx.post(endpoint + "/", json={"n": 1}).json()["body"] == {"n": 1}
    invoked = json.loads(daemon.cli("invoke", name, "--body", '{"n": 2}').stdout)
    assert invoked["body"] == {"n": 2}

    scaled = daemon.cli("scale", name, "--replicas", "2").stdout
    assert f"{name}: 2 replica(s) x 1 worker(s), ready" in scaled
    now = status(daemon, name)
    assert (now["state"], now["replicas"], now["workers_ready"], now["generation"]) == \
        ("ready", 2, 2, 2)
    assert now["endpoint"] == endpoint  # the same port through the redeploy
    answered = set()
    for n in range(200):  # a new connection each: spread over both workers
        answered.add(httpx.post(endpoint + "/", json={"n": n}).json()["pid"])
        if len(answered) == 2:
            break
    assert answered == set(now["pids"])

    daemon.cli("delete", name)
    assert name not in daemon.cli("get").stdout
    with pytest.raises(httpx.ConnectError):
        httpx.post(endpoint + "/", json={})
    wait_for(lambda: not any(alive(p) for p in now["pids"]), what="the workers to stop")
