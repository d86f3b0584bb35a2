"""The platform through its CLI and API: real daemon, real worker processes, real sockets."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import HANDLERS, ROOT, Daemon, free_port

pytestmark = pytest.mark.slow

ECHO = ROOT / "examples" / "echo.py"
H = HANDLERS / "nuclio_style.py"


def test_deploy_invoke_get_logs_delete_through_the_cli(daemon: Daemon):
    deployed = daemon.deploy(ECHO, "echo")
    assert deployed["status"]["state"] == "ready"
    endpoint = deployed["status"]["endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")

    invoked = daemon.cli("invoke", "echo", "--body", '{"x": 1}')
    assert json.loads(invoked.stdout) == {"x": 1}
    assert httpx.post(endpoint + "/", json={"x": 1}).json() == {"x": 1}  # its own port

    table = daemon.cli("get").stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "STATE", "REPLICAS", "WORKERS", "TRIGGERS",
                                "ENDPOINT", "VERSION"]
    assert table[1].split()[:3] == ["echo", "http", "ready"] and endpoint in table[1]
    assert endpoint in daemon.cli("get", "echo").stdout

    logs = [json.loads(line) for line in daemon.cli("logs", "echo").stdout.splitlines()]
    assert any("ready" in entry["message"] for entry in logs)

    daemon.cli("delete", "echo")
    assert "No functions deployed" in daemon.cli("get").stdout
    gone = daemon.cli("invoke", "echo", check=False)
    assert gone.returncode == 1 and "no function named 'echo'" in gone.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.post(endpoint + "/", json={})


def test_info_shows_api_and_state_directory(daemon: Daemon):
    out = daemon.cli("info").stdout
    assert daemon.api in out and str(daemon.home) in out


def test_handler_logs_reach_sluice_logs(daemon: Daemon):
    daemon.deploy(H, "greeter", "--handler", "greet")
    daemon.cli("invoke", "greeter", "--body", '{"name": "ada"}')
    entries = [json.loads(line) for line in daemon.cli("logs", "greeter").stdout.splitlines()]
    greeting = [e for e in entries if e["message"] == "greeting"]
    assert greeting and greeting[0]["with"] == {"name": "ada", "calls": 1}
    assert greeting[0]["function"] == "greeter" and greeting[0]["level"] == "info"


def test_mutations_without_token_get_401(daemon: Daemon):
    spec = {"spec": {"name": "x", "handler": "echo:handler"}}
    response = httpx.post(daemon.api + "/api/functions", json=spec)
    assert response.status_code == 401
    assert "token" in response.json()["error"]
    wrong = httpx.post(daemon.api + "/api/functions", json=spec,
                       headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert httpx.get(daemon.api + "/api/functions").status_code == 200  # reads stay open
    assert httpx.delete(daemon.api + "/api/functions/x").status_code == 401


def test_invalid_spec_is_rejected_with_the_field_named(daemon: Daemon):
    bad = {"spec": {"name": "Bad_Name", "handler": "echo:handler", "workers": 0, "colour": 1}}
    response = httpx.post(daemon.api + "/api/functions", json=bad, headers=daemon.headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "spec.name: must be a DNS label" in error
    assert "spec.workers" in error
    assert "spec.colour: unknown field (allowed: name, kind, handler" in error


def test_path_traversal_in_names_is_refused(daemon: Daemon):
    spec = {"spec": {"name": "../../etc", "handler": "x:handler",
                     "source": {"filename": "../evil.py", "code": "eA=="}}}
    response = httpx.post(daemon.api + "/api/functions", json=spec, headers=daemon.headers)
    assert response.status_code == 400
    assert "spec.name" in response.json()["error"] and "spec.source.filename" in response.json()[
        "error"]


def test_broken_handler_fails_the_deploy_with_its_error(daemon: Daemon, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def handler(context, event)\n    return 1\n")
    result = daemon.cli("deploy", str(broken), check=False)
    assert result.returncode == 1
    assert "SyntaxError" in result.stderr and "broken.py line 1" in result.stderr
    missing = daemon.cli("deploy", str(ECHO), "--name", "nohandler", "--handler", "nope",
                         check=False)
    assert "has no function 'nope' (functions found: handler)" in missing.stderr


def test_failed_redeploy_keeps_the_previous_version_serving(daemon: Daemon, tmp_path):
    daemon.deploy(ECHO, "svc")
    broken = tmp_path / "echo.py"
    broken.write_text("raise RuntimeError('bad release')\n")
    result = daemon.cli("deploy", str(broken), "--name", "svc", check=False)
    assert result.returncode == 1 and "bad release" in result.stderr
    assert daemon.cli("invoke", "svc", "--body", "still here").stdout.strip() == "still here"


def test_killed_worker_is_restarted_and_requests_keep_succeeding(daemon: Daemon):
    endpoint = daemon.deploy(H, "pids", "--handler", "pid")["status"]["endpoint"]
    first = httpx.post(endpoint).json()["pid"]
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:  # the next requests wait in the shared socket's backlog, never hang
        response = httpx.post(endpoint, timeout=10)
        if response.status_code == 200 and response.json()["pid"] != first:
            break
        assert time.monotonic() < deadline
    status = httpx.get(f"{daemon.api}/api/functions/pids").json()["status"]
    assert status["restarts"] >= 1
    logs = daemon.cli("logs", "pids").stdout
    assert "was killed by SIGKILL; restarting" in logs


def test_hung_handler_gets_504_and_its_worker_is_recycled(daemon: Daemon):
    endpoint = daemon.deploy(H, "sleepy", "--handler", "sleepy", "--timeout", "0.5")[
        "status"]["endpoint"]
    started = time.monotonic()
    response = httpx.post(endpoint, json={"seconds": 30}, timeout=20)
    assert response.status_code == 504
    assert "did not finish within 0.5s" in response.json()["error"]
    assert time.monotonic() - started < 5
    ok = httpx.post(endpoint, json={"seconds": 0}, timeout=20)
    assert ok.status_code == 200 and ok.text == "woke up"
    assert "recycled after a handler timeout" in daemon.cli("logs", "sleepy").stdout


def test_daemon_restart_brings_functions_back_on_the_same_port(daemon: Daemon):
    endpoint = daemon.deploy(ECHO, "durable")["status"]["endpoint"]
    daemon.stop()
    daemon.start()
    status = httpx.get(f"{daemon.api}/api/functions/durable").json()["status"]
    assert status["state"] == "ready"
    assert status["endpoint"] == endpoint
    assert httpx.post(endpoint, content=b"back").content == b"back"


def test_redeploy_under_continuous_traffic_fails_no_request(daemon: Daemon, tmp_path):
    endpoint = daemon.deploy(ECHO, "live", "--workers", "2")["status"]["endpoint"]
    v2 = tmp_path / "echo.py"
    v2.write_text("def handler(context, event):\n    return 'v2'\n")
    stop = threading.Event()
    outcomes: list[str] = []

    def hammer(keep_alive: bool) -> None:
        client = httpx.Client(timeout=10) if keep_alive else None
        try:
            while not stop.is_set():
                try:
                    r = (client.post(endpoint, content=b"v1") if client
                         else httpx.post(endpoint, content=b"v1", timeout=10))
                    outcomes.append(r.text if r.status_code == 200 else f"HTTP {r.status_code}")
                except httpx.HTTPError as exc:
                    outcomes.append(f"error {exc!r}")
        finally:
            if client is not None:
                client.close()

    threads = [threading.Thread(target=hammer, args=(k,)) for k in (True, True, False)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    daemon.cli("deploy", str(v2), "--name", "live", "--workers", "2")
    time.sleep(2.0)  # old workers drain while traffic goes on
    stop.set()
    for t in threads:
        t.join()
    failures = [o for o in outcomes if o not in ("v1", "v2")]
    assert not failures, failures[:5]
    assert "v1" in outcomes and outcomes[-1] == "v2"


def test_two_platforms_run_side_by_side(tmp_path):
    a = Daemon(home=tmp_path / "a", port=free_port()).start()
    b = Daemon(home=tmp_path / "b", port=free_port()).start()
    try:
        a.deploy(ECHO, "only-in-a")
        assert "only-in-a" in a.cli("get").stdout
        assert "No functions deployed" in b.cli("get").stdout
    finally:
        a.stop()
        b.stop()


def test_second_daemon_on_same_home_is_refused(daemon: Daemon):
    other = daemon.cli("up", "--port", str(free_port()), check=False)
    assert other.returncode == 1
    assert "another sluice daemon is already running" in other.stderr


def test_scale_changes_workers_without_downtime(daemon: Daemon):
    daemon.deploy(H, "scaled", "--handler", "pid")
    result = daemon.cli("scale", "scaled", "--workers", "3", "-o", "json")
    status = json.loads(result.stdout)["status"]
    assert status["workers"] == 3 and status["workers_ready"] == 3
    endpoint = status["endpoint"]
    pids = {httpx.post(endpoint).json()["pid"] for _ in range(60)}
    assert len(pids) >= 2


def test_call_function_reaches_another_function(daemon: Daemon):
    daemon.deploy(ECHO, "callee")
    daemon.deploy(H, "caller", "--handler", "call_other")
    out = daemon.cli("invoke", "caller", "--body", '{"target": "callee"}').stdout
    assert json.loads(out) == {"status": 200, "answer": {"from": "caller"}}


def test_function_and_platform_metrics_move(daemon: Daemon):
    endpoint = daemon.deploy(ECHO, "counted")["status"]["endpoint"]
    for _ in range(5):
        httpx.post(endpoint, content=b"x")
    page = httpx.get(endpoint + "/metrics").text
    line = next(row for row in page.splitlines()
                if row.startswith("sluice_function_invocations_total") and 'status="200"' in row)
    assert float(line.rsplit(" ", 1)[1]) == 5
    platform_page = httpx.get(daemon.api + "/metrics").text
    assert 'sluice_deploys_total{outcome="succeeded"} 1.0' in platform_page
    assert 'sluice_functions{state="ready"} 1.0' in platform_page


def test_nuclio_function_yaml_deploys_unchanged_and_exports_back(daemon: Daemon):
    import yaml

    result = daemon.cli("deploy", str(ROOT / "examples/nuclio/function.yaml"), "-o", "json")
    status = json.loads(result.stdout)["status"]
    assert status["name"] == "risk" and status["workers"] == 2
    answer = httpx.get(status["endpoint"] + "/?amount=2500").json()
    assert answer == {"amount": 2500.0, "suspicious": True}
    exported = yaml.safe_load(daemon.cli("export", "risk").stdout)
    assert exported["apiVersion"] == "nuclio.io/v1beta1" and exported["kind"] == "NuclioFunction"
    assert exported["spec"]["triggers"]["web"]["numWorkers"] == 2
    assert exported["spec"]["env"] == [{"name": "THRESHOLD", "value": "1000"}]


def test_nuclio_style_example_handler(daemon: Daemon):
    daemon.deploy(ROOT / "examples/hello.py", "hello")
    ok = daemon.cli("invoke", "hello", "--body", '{"name": "Ada"}', "-i").stdout
    assert "HTTP 200" in ok and "x-greeter: sluice" in ok and '{"message":"Hello, Ada!"}' in ok
    bad = daemon.cli("invoke", "hello", "--body", "{}", check=False)
    assert bad.returncode == 1 and "answered HTTP 400" in bad.stderr


def test_python_api_deploys_invokes_and_deletes(daemon: Daemon):
    from sluice import Client, Function

    client = Client(api_url=daemon.api, token=daemon.token)
    fn = Function("py-echo", ROOT / "examples/echo.py", workers=2)
    status = fn.deploy(client)["status"]
    assert status["state"] == "ready" and status["workers_ready"] == 2
    code, headers, body = fn.invoke({"x": 1}, client=client)
    assert (code, headers["content-type"], body) == (200, "application/json", b'{"x":1}')
    fn.delete(client)
    assert client.list() == []


def test_logs_follow_streams_new_lines_as_they_happen(daemon: Daemon):
    import subprocess
    import sys

    daemon.deploy(H, "followed", "--handler", "greet")
    follower = subprocess.Popen([sys.executable, "-m", "sluice.cli", "logs", "followed", "-f",
                                 "--tail", "1"], env=daemon.env, stdout=subprocess.PIPE)
    try:
        assert follower.stdout is not None
        follower.stdout.readline()  # the one tail line
        daemon.cli("invoke", "followed", "--body", '{"name": "live"}')
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            entry = json.loads(follower.stdout.readline())
            if entry["message"] == "greeting":
                assert entry["with"]["name"] == "live"
                break
        else:
            raise AssertionError("the greeting never arrived")
    finally:
        follower.kill()
        follower.wait()
        assert follower.stdout is not None
        follower.stdout.close()


def test_invoking_through_the_api_needs_the_token_even_with_get(daemon: Daemon):
    daemon.deploy(ECHO, "guarded")
    assert httpx.get(f"{daemon.api}/api/functions/guarded/invoke").status_code == 401
    ok = httpx.get(f"{daemon.api}/api/functions/guarded/invoke", headers=daemon.headers)
    assert ok.status_code == 200


def test_an_api_listening_beyond_the_loopback_needs_the_token_for_reads(tmp_path):
    daemon = Daemon(home=tmp_path / "home", port=free_port())
    os.environ["SLUICE_API_HOST"] = "0.0.0.0"
    try:
        daemon.start()
    finally:
        del os.environ["SLUICE_API_HOST"]
    try:
        refused = httpx.get(f"{daemon.api}/api/functions")
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        assert httpx.get(f"{daemon.api}/api/health").status_code == 200  # for probes
        assert httpx.get(f"{daemon.api}/api/functions", headers=daemon.headers).json() == []
        assert "No functions deployed" in daemon.cli("get").stdout  # the CLI sends the token
    finally:
        daemon.stop()
