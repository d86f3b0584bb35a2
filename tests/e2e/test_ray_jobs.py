"""Job runs on `sluice up --platform ray`: each attempt a Ray actor on a real local Ray with 2
CPUs, recorded, retried, timed out and cancelled as on the local platform."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Daemon, ray_daemon_in, running
from tests.e2e.test_jobs import alive, deploy_job, runs, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running(ray_daemon_in(tmp_path_factory.mktemp("ray"), "--no-broker")) as instance:
        yield instance


def test_a_job_runs_inside_a_ray_actor_with_params_progress_and_outputs(ray_daemon, tmp_path):
    info = ray_daemon.cli("info").stdout
    assert "platform         ray at" in info
    assert "every job run and every worker a Ray actor" in info
    deploy_job(ray_daemon, tmp_path, "where", "where", module="ray_job_handlers",
               params={"steps": 5})
    result = ray_daemon.cli("run", "where", "--param", "steps=3")
    assert "3/3  100%  step 3" in result.stderr and "printed on ray" in result.stdout
    assert "runs on Ray (pid" in result.stdout
    [run] = runs(ray_daemon, "where")
    assert run["status"] == "succeeded" and run["exit_code"] == 0 and run["attempt"] == 1
    assert run["params"] == {"steps": 3}
    assert run["outputs"]["metrics"] == {"steps": 3}
    result_ = run["outputs"]["result"]
    assert result_["steps"] == 3
    # started by a Ray worker running the attempt's actor, not by the daemon
    assert result_["parent"].startswith("ray::AttemptActor"), result_["parent"]
    assert result_["ray_address"]  # a job that uses Ray (tune) joins this cluster
    assert result_["resources"] == {"CPU": 1.0}  # no resources.cpu: one CPU, as Ray tasks
    assert "platform     ray at" in ray_daemon.log_path.read_text()


def test_a_job_that_uses_ray_joins_the_cluster_it_runs_on(ray_daemon, tmp_path):
    deploy_job(ray_daemon, tmp_path, "tuner", "uses_ray", module="ray_job_handlers")
    ray_daemon.cli("run", "tuner")
    [run] = runs(ray_daemon, "tuner")
    assert run["status"] == "succeeded", run["reason"]
    assert run["outputs"]["result"] == {"cpus": 2.0, "task": "ran"}  # not a Ray of its own


def test_what_a_finished_job_left_running_on_its_ray_worker_is_stopped(ray_daemon, tmp_path):
    pids_file = tmp_path / "pids"
    deploy_job(ray_daemon, tmp_path, "parent", "leaves_child", module="ray_job_handlers",
               env={"PIDS_FILE": str(pids_file)})
    ray_daemon.cli("run", "parent")
    wait_for(lambda: not alive(int(pids_file.read_text())), what="the child to be stopped")


def test_a_handler_that_raises_is_retried_per_the_spec_then_fails(ray_daemon, tmp_path):
    deploy_job(ray_daemon, tmp_path, "flaky", "flaky", retries=1, retry_backoff=0.1)
    result = ray_daemon.cli("run", "flaky", check=False)
    assert result.returncode == 1 and "retrying in 0.1s" in result.stdout
    [run] = runs(ray_daemon, "flaky")
    assert run["status"] == "failed" and run["attempt"] == 2 and run["exit_code"] == 1
    assert "handler raised RuntimeError: attempt 2 broke (attempt 2 of 2)" in run["reason"]


def test_a_killed_ray_actor_fails_the_attempt_and_the_retry_runs(ray_daemon, tmp_path):
    pids_file = tmp_path / "pids"
    deploy_job(ray_daemon, tmp_path, "dies", "dies_first", module="ray_job_handlers",
               retries=1, retry_backoff=0, env={"PIDS_FILE": str(pids_file)})
    run_id = ray_daemon.cli("run", "dies", "-d").stdout.strip()
    wait_for(pids_file.exists, timeout=30, what="the first attempt to start")
    _, job_pid, actor_pid = map(int, pids_file.read_text().split())
    os.kill(actor_pid, signal.SIGKILL)
    run = wait_for(lambda: next((r for r in runs(ray_daemon, "dies")
                                 if r["id"] == run_id and r["status"] == "succeeded"), None),
                   timeout=60, what="the retry to succeed")
    assert run["attempt"] == 2 and run["outputs"]["result"] == {"attempt": 2}
    log = ray_daemon.cli("runs", "show", run_id).stdout + ray_daemon.cli("logs", "dies").stdout
    assert "the Ray actor running it died before the run reported a result" in log
    wait_for(lambda: not alive(job_pid), what="the first job process to die with its actor")


def test_timeout_and_cancel_stop_the_job_process_on_its_ray_worker(ray_daemon, tmp_path):
    runs_file = tmp_path / "runs.txt"
    deploy_job(ray_daemon, tmp_path, "slow", "sleeper", timeout=3, termination_grace=1,
               env={"RUNS_FILE": str(runs_file)})
    started = time.monotonic()
    result = ray_daemon.cli("run", "slow", "--params", '{"seconds": 60}', check=False)
    assert result.returncode == 1 and time.monotonic() - started < 30
    [timed_out] = runs(ray_daemon, "slow")
    assert timed_out["status"] == "timed_out" and "ran past its timeout of 3s" in \
        timed_out["reason"]
    assert timed_out["exit_code"] == -signal.SIGTERM

    deploy_job(ray_daemon, tmp_path, "slow", "sleeper", termination_grace=1,
               env={"RUNS_FILE": str(runs_file)})
    run_id = ray_daemon.cli("run", "slow", "--params", '{"seconds": 60}', "-d").stdout.strip()
    wait_for(lambda: run_id in runs_file.read_text(), timeout=30, what="the run to start")
    pid = int(runs_file.read_text().splitlines()[-1].split()[1])
    result = ray_daemon.cli("runs", "cancel", run_id)
    assert f"{run_id} cancelled: cancelled by `sluice runs cancel`" in result.stdout
    assert not alive(pid)


def test_a_job_asking_for_more_cpus_than_the_cluster_has_fails_at_once(ray_daemon, tmp_path):
    deploy_job(ray_daemon, tmp_path, "big", "train", params={"epochs": 1, "lr": 0.1},
               retries=2, resources={"cpu": 4})
    result = ray_daemon.cli("run", "big", check=False)
    assert result.returncode == 1
    [run] = runs(ray_daemon, "big")
    assert run["status"] == "failed" and run["attempt"] == 1  # not retried: it cannot help
    assert ("Ray cannot place this run: it asks for 4 CPU(s) but the whole Ray cluster has 2"
            in run["reason"])
    # what fits is placed with the spec's resources
    deploy_job(ray_daemon, tmp_path, "fits", "where", module="ray_job_handlers",
               params={"steps": 1}, resources={"cpu": 2, "memory": "64Mi"})
    ray_daemon.cli("run", "fits")
    [run] = runs(ray_daemon, "fits")
    assert run["status"] == "succeeded"
    assert run["outputs"]["result"]["resources"] == {"CPU": 2.0, "memory": 64 * 2**20}


def test_a_job_waiting_for_cpus_on_a_busy_cluster_says_so(ray_daemon, tmp_path):
    runs_file = tmp_path / "runs.txt"
    deploy_job(ray_daemon, tmp_path, "wide", "sleeper", termination_grace=1,
               resources={"cpu": 2}, env={"RUNS_FILE": str(runs_file)})
    first = ray_daemon.cli("run", "wide", "--params", '{"seconds": 60}', "-d").stdout.strip()
    wait_for(runs_file.exists, timeout=30, what="the first run to start")
    second = ray_daemon.cli("run", "wide", "--params", '{"seconds": 60}', "-d").stdout.strip()
    wait_for(lambda: "waiting for Ray to place it (num_cpus=2, num_gpus=0)" in
             ray_daemon.cli("runs", "logs", second).stdout, timeout=30,
             what="the second run's note")
    for run_id in (second, first):
        ray_daemon.cli("runs", "cancel", run_id)
    assert len(runs_file.read_text().splitlines()) == 1  # the second never started


def test_stopping_the_platform_fails_a_ray_run_and_leaves_no_job_process(ray_daemon, tmp_path):
    runs_file = tmp_path / "runs.txt"
    deploy_job(ray_daemon, tmp_path, "held", "sleeper", termination_grace=1,
               env={"RUNS_FILE": str(runs_file)})
    run_id = ray_daemon.cli("run", "held", "--params", '{"seconds": 60}', "-d").stdout.strip()
    wait_for(runs_file.exists, timeout=30, what="the run to start")
    pid = int(runs_file.read_text().split()[1])
    ray_daemon.stop()
    assert not alive(pid)
    ray_daemon.start()  # the same state directory, a new local Ray
    [run] = runs(ray_daemon, "held")
    assert run["id"] == run_id and run["status"] == "failed"
    assert "the platform was stopped during the run" in run["reason"]
