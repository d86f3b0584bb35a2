"""Job functions through the CLI against a real daemon: runs, retries, timeouts, cancel, cron
policies, pause/resume and recovery after the platform dies."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import HANDLERS, Daemon

pytestmark = pytest.mark.slow


def deploy_job(daemon: Daemon, tmp_path: Path, name: str, handler: str,
               module: str = "job_handlers", **spec: object) -> None:
    (tmp_path / f"{module}.py").write_text((HANDLERS / f"{module}.py").read_text())
    data = {"name": name, "kind": "job", "handler": f"{module}:{handler}", **spec}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
    daemon.cli("deploy", str(tmp_path / f"{name}.yaml"))


def runs(daemon: Daemon, name: str) -> list[dict]:
    return json.loads(daemon.cli("runs", name, "--limit", "100", "-o", "json").stdout)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_run_follows_logs_and_records_params_outputs(daemon: Daemon, tmp_path):
    deploy_job(daemon, tmp_path, "train", "train", params={"epochs": 10, "lr": 0.1})
    result = daemon.cli("run", "train", "--param", "epochs=3")
    assert "started; following its logs" in result.stderr
    assert "[" in result.stderr and "3/3  100%  epoch 3" in result.stderr  # the progress bar
    assert "printed by the handler" in result.stdout and "training" in result.stdout
    assert "status     succeeded" in result.stdout
    assert "metric     loss = 0.333" in result.stdout

    [run] = runs(daemon, "train")
    assert run["status"] == "succeeded" and run["trigger"] == "manual" and run["exit_code"] == 0
    assert run["params"] == {"epochs": 3, "lr": 0.1}  # the default filled in
    assert run["outputs"]["result"] == {"epochs": 3, "lr": 0.1, "attempt": 1}
    assert run["outputs"]["metrics"] == {"loss": pytest.approx(1 / 3), "epoch": 3}
    assert run["outputs"]["artifacts"] == {"model": f"file:///models/{run['id']}.pt"}
    assert run["ended"] >= run["started"] >= run["created"]

    show = daemon.cli("runs", "show", run["id"]).stdout
    assert "printed by the handler" in show and "artifact   model:" in show
    table = daemon.cli("runs").stdout
    assert run["id"] in table and "succeeded" in table and "1/1" in table


def test_bad_params_are_refused_with_the_field_named(daemon: Daemon, tmp_path):
    deploy_job(daemon, tmp_path, "train", "train", params={"epochs": 10, "lr": 0.1})
    result = daemon.cli("run", "train", "--param", "epochs=many", check=False)
    assert result.returncode == 1
    assert "params.epochs: must be a whole number such as 5 like its default 10" in result.stderr
    result = daemon.cli("run", "train", "--param", "epoch=3", check=False)
    assert "params.epoch: not a param of this job (its params: epochs, lr)" in result.stderr
    assert runs(daemon, "train") == []  # nothing was started


def test_a_job_that_raises_is_retried_with_backoff_then_failed(daemon: Daemon, tmp_path):
    deploy_job(daemon, tmp_path, "flaky", "flaky", retries=2, retry_backoff=0.2)
    result = daemon.cli("run", "flaky", check=False)
    assert result.returncode == 1
    [run] = runs(daemon, "flaky")
    assert run["status"] == "failed" and run["attempt"] == 3 and run["max_attempts"] == 3
    assert run["exit_code"] == 1
    assert "handler raised RuntimeError: attempt 3 broke (attempt 3 of 3)" in run["reason"]
    assert "retrying in 0.2s" in result.stdout and "retrying in 0.4s" in result.stdout
    page = httpx.get(daemon.api + "/metrics").text
    assert 'sluice_runs_total{function="flaky",status="failed",trigger="manual"} 1.0' in page
    assert 'sluice_run_duration_seconds_count{function="flaky",status="failed"} 1.0' in page


def test_a_retry_that_succeeds_ends_the_run_succeeded(daemon: Daemon, tmp_path):
    deploy_job(daemon, tmp_path, "flaky", "flaky", retries=3, retry_backoff=0,
               env={"FAIL_TIMES": "1"})
    daemon.cli("run", "flaky")
    [run] = runs(daemon, "flaky")
    assert run["status"] == "succeeded" and run["attempt"] == 2
    assert run["outputs"]["result"] == {"ok_on": 2}


def test_timeout_kills_the_whole_process_group_even_when_it_ignores_sigterm(daemon, tmp_path):
    pids_file = tmp_path / "pids"
    deploy_job(daemon, tmp_path, "stubborn", "stubborn", timeout=2, termination_grace=1,
               env={"PIDS_FILE": str(pids_file)})
    started = time.monotonic()
    result = daemon.cli("run", "stubborn", check=False)
    assert result.returncode == 1
    assert time.monotonic() - started < 10
    [run] = runs(daemon, "stubborn")
    assert run["status"] == "timed_out" and run["exit_code"] == -signal.SIGKILL
    assert "ran past its timeout of 2s" in run["reason"]
    assert "did not exit within 1s of SIGTERM" in result.stdout
    job_pid, child_pid = map(int, pids_file.read_text().split())
    assert not alive(job_pid) and not alive(child_pid)


def test_cancel_stops_a_running_run(daemon: Daemon, tmp_path):
    runs_file = tmp_path / "runs.txt"
    deploy_job(daemon, tmp_path, "sleeper", "sleeper", termination_grace=2,
               env={"RUNS_FILE": str(runs_file)})
    run_id = daemon.cli("run", "sleeper", "--params", '{"seconds": 60}', "-d").stdout.strip()
    wait_for(runs_file.exists, what="the run to start")
    pid = int(runs_file.read_text().split()[1])
    result = daemon.cli("runs", "cancel", run_id)
    assert f"{run_id} cancelled: cancelled by `sluice runs cancel`" in result.stdout
    assert not alive(pid)
    again = daemon.cli("runs", "cancel", run_id, check=False)
    assert again.returncode == 1 and "has already finished (cancelled)" in again.stderr
    missing = daemon.cli("runs", "show", "sleeper-nope", check=False)
    assert missing.returncode == 1 and "no run with id 'sleeper-nope'" in missing.stderr


def test_cron_forbid_skips_overlapping_fires_and_records_them(daemon: Daemon, tmp_path):
    runs_file = tmp_path / "runs.txt"
    deploy_job(daemon, tmp_path, "nightly", "sleeper", env={"RUNS_FILE": str(runs_file)},
               triggers={"tick": {"kind": "cron", "interval": "1s",
                                  "concurrency_policy": "forbid", "params": {"seconds": 2.2}}})
    time.sleep(5.5)
    daemon.cli("schedule", "pause", "nightly")
    history = runs(daemon, "nightly")
    skipped = [r for r in history if r["status"] == "skipped"]
    ran = [r for r in history if r["status"] != "skipped"]
    assert skipped and ran, history
    assert all("concurrency_policy=forbid" in r["reason"] for r in skipped)
    assert all(r["trigger"] == "cron" and r["trigger_name"] == "tick" for r in history)
    starts = sorted(float(line.split()[2]) for line in runs_file.read_text().splitlines())
    assert all(b - a >= 2.2 for a, b in zip(starts, starts[1:], strict=False))  # no overlap


def test_cron_replace_cancels_the_running_run(daemon: Daemon, tmp_path):
    runs_file = tmp_path / "runs.txt"
    deploy_job(daemon, tmp_path, "latest", "sleeper", termination_grace=1,
               env={"RUNS_FILE": str(runs_file)},
               triggers={"tick": {"kind": "cron", "interval": "1s",
                                  "concurrency_policy": "replace", "params": {"seconds": 30}}})
    wait_for(lambda: len([r for r in runs(daemon, "latest") if r["status"] == "cancelled"]) >= 2,
             what="two replaced runs")
    daemon.cli("schedule", "pause", "latest")
    history = runs(daemon, "latest")
    cancelled = [r for r in history if r["status"] == "cancelled"]
    assert all("replaced by the fire of" in r["reason"] for r in cancelled)
    active = [r for r in history if r["status"] in ("running", "pending")]
    assert len(active) <= 1  # never two at once
    pids = [int(line.split()[1]) for line in runs_file.read_text().splitlines()]
    assert not any(alive(pid) for pid in pids[:-1])


def test_pause_and_resume_survive_a_restart(daemon: Daemon, tmp_path):
    runs_file = tmp_path / "runs.txt"
    deploy_job(daemon, tmp_path, "ticker", "sleeper", env={"RUNS_FILE": str(runs_file)},
               triggers={"tick": {"kind": "cron", "interval": "1s"}})
    wait_for(runs_file.exists, what="a first fire")
    assert "ticker: tick paused" in daemon.cli("schedule", "pause", "ticker").stdout
    listing = json.loads(daemon.cli("schedule", "list", "-o", "json").stdout)
    assert [(s["function"], s["trigger"], s["paused"]) for s in listing] == [
        ("ticker", "tick", True)]
    daemon.stop()
    daemon.start()
    count = len(runs(daemon, "ticker"))
    time.sleep(2.5)
    assert len(runs(daemon, "ticker")) == count  # still paused after the restart
    assert "paused" in daemon.cli("schedule", "list").stdout
    daemon.cli("schedule", "resume", "ticker")
    wait_for(lambda: len(runs(daemon, "ticker")) > count, what="a fire after resume")
    bad = daemon.cli("schedule", "pause", "ticker", "--trigger", "nope", check=False)
    assert bad.returncode == 1 and "no cron trigger 'nope' (its cron triggers: tick)" in bad.stderr


def test_runs_left_running_by_a_dead_platform_are_marked_failed(daemon: Daemon, tmp_path):
    runs_file = tmp_path / "runs.txt"
    deploy_job(daemon, tmp_path, "long", "sleeper", env={"RUNS_FILE": str(runs_file)})
    run_id = daemon.cli("run", "long", "--params", '{"seconds": 120}', "-d").stdout.strip()
    wait_for(runs_file.exists, what="the run to start")
    pid = int(runs_file.read_text().split()[1])
    assert daemon.process is not None
    os.kill(daemon.process.pid, signal.SIGKILL)  # no draining, no goodbye
    daemon.process.wait()
    daemon.process = None
    wait_for(lambda: not alive(pid), what="the orphaned run's process to exit")
    daemon.start()
    run = json.loads(daemon.cli("runs", "show", run_id, "-o", "json").stdout)
    assert run["status"] == "failed"
    assert "the platform stopped while this run was running" in run["reason"]
    assert f"pid {pid}" in run["reason"]


def test_job_deploy_checks_the_handler_and_the_spec(daemon: Daemon, tmp_path):
    (tmp_path / "broken.py").write_text("def handler(context, event):\n    return (\n")
    result = daemon.cli("deploy", str(tmp_path / "broken.py"), "--kind", "job", check=False)
    assert result.returncode == 1 and "SyntaxError" in result.stderr
    spec = {"name": "bad-params", "kind": "job", "handler": "job_handlers:train",
            "params": {"epochs": 10},
            "triggers": {"nightly": {"kind": "cron", "schedule": "0 2 * * *",
                                     "params": {"epochs": "ten"}}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    result = daemon.cli("deploy", str(tmp_path / "bad.yaml"), check=False)
    assert result.returncode == 1
    assert "triggers.nightly.params.epochs: must be a whole number" in result.stderr
    result = daemon.cli("deploy", str(tmp_path / "broken.py"), "--kind", "job", "--trigger",
                        "cron:schedule=0 6,18 * * *,timezone=Mars/Base", check=False)
    assert "time zone 'Mars/Base' is not known; examples: 'UTC'" in result.stderr
    deploy_job(daemon, tmp_path, "train", "train")
    result = daemon.cli("invoke", "train", check=False)
    assert result.returncode == 1
    assert "is a job: start a run with `sluice run train`" in result.stderr


def test_deploy_a_handler_file_as_a_cron_job_from_the_command_line(daemon: Daemon, tmp_path):
    (tmp_path / "train.py").write_text(
        "def handler(context, event):\n"
        "    context.logger.info(f\"epochs={event.body.get('epochs')}\")\n"
        "    return event.body\n")
    out = daemon.cli("deploy", str(tmp_path / "train.py"), "--name", "train", "--kind", "job",
                     "--trigger", "cron:schedule=0 */6 * * *").stdout
    assert "start a run with `sluice run train`" in out
    assert "epochs=5" in daemon.cli("run", "train", "--param", "epochs=5").stdout
    [run] = runs(daemon, "train")
    assert run["outputs"]["result"] == {"epochs": 5}
    listing = json.loads(daemon.cli("schedule", "list", "-o", "json").stdout)
    assert listing[0]["schedule"] == "0 */6 * * *" and not listing[0]["paused"]
    assert listing[0]["next_fire"] > time.time()
    daemon.cli("schedule", "pause", "train")
    assert json.loads(daemon.cli("schedule", "list", "-o", "json").stdout)[0]["paused"]
    daemon.cli("schedule", "resume", "train")
    assert not json.loads(daemon.cli("schedule", "list", "-o", "json").stdout)[0]["paused"]
    get = daemon.cli("get").stdout
    assert "job" in get and "0 running" in get and "sluice run train" in get


def test_forbid_still_sees_a_run_started_before_a_redeploy(daemon: Daemon, tmp_path):
    runs_file = tmp_path / "runs.txt"
    spec = {"env": {"RUNS_FILE": str(runs_file)},
            "triggers": {"tick": {"kind": "cron", "interval": "1s",
                                  "concurrency_policy": "forbid", "params": {"seconds": 30}}}}
    deploy_job(daemon, tmp_path, "single", "sleeper", **spec)
    wait_for(runs_file.exists, what="the first run")
    deploy_job(daemon, tmp_path, "single", "sleeper", description="v2", **spec)
    wait_for(lambda: any(r["status"] == "skipped" for r in runs(daemon, "single")),
             what="a skipped fire after the redeploy")
    daemon.cli("schedule", "pause", "single")
    assert len(runs_file.read_text().splitlines()) == 1  # the first run, still the only one


def test_job_runs_beside_http_workers_that_share_the_lifeline(daemon: Daemon, tmp_path):
    # the workers' event loops make the shared lifeline pipe non-blocking; a run must not take
    # that for the platform's death
    daemon.deploy(HANDLERS.parent.parent / "examples" / "echo.py", "echo")
    deploy_job(daemon, tmp_path, "train", "train", params={"epochs": 2, "lr": 0.1})
    daemon.cli("run", "train")
    [run] = runs(daemon, "train")
    assert run["status"] == "succeeded", run


def test_sluice_up_deploys_a_job_and_says_how_to_run_it(tmp_path):
    import subprocess

    from sluice.platform.broker import free_port
    from tests.conftest import ROOT, SLUICE, stop

    env = {**os.environ, "SLUICE_HOME": str(tmp_path / "home"),
           "SLUICE_API_PORT": str(free_port())}
    process = subprocess.Popen(
        SLUICE + ["up", "--no-broker", "--deploy", "examples/jobs/report.yaml", "--deploy",
                  "examples/echo.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
    finally:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()
    text = "".join(lines)
    assert "report       a job: sluice run report" in text
    assert "sluice invoke echo" in text and "sluice invoke report" not in text
    assert "sluice run report" in text


def test_an_async_job_keeps_what_its_init_context_opened(daemon: Daemon, tmp_path):
    deploy_job(daemon, tmp_path, "loopy", "same_loop", module="async_job")
    daemon.cli("run", "loopy")
    [run] = runs(daemon, "loopy")
    assert run["outputs"]["result"] == {"same_loop": True}
