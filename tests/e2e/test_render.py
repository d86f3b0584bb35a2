"""`sluice render` through the CLI, and the rendered worker and run configs run by the very
commands the images' entrypoints run (no cluster here: nothing is applied)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from sluice.platform.broker import free_port
from tests.conftest import ROOT, SLUICE, stop, wait_http

EXAMPLES = ROOT / "examples"


def render(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(SLUICE + ["render", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def entrypoint(dockerfile: Path) -> list[str]:
    line = next(x for x in dockerfile.read_text().splitlines() if x.startswith("ENTRYPOINT "))
    return json.loads(line[len("ENTRYPOINT "):])


def test_render_the_pipeline_writes_validated_manifests_and_a_readme(tmp_path):
    out = tmp_path / "out"
    result = render("functions/pipeline.yaml", "--target", "kubernetes", "-o", str(out),
                    "--image-registry", "registry.example.com/ml", "--tag", "v1")
    assert result.returncode == 0, result.stderr
    assert "Rendered 12 resource(s) for 6 function(s)" in result.stdout
    assert "enrich: triggers.events: output" in result.stderr  # the Nuclio caveat, as warning
    isvc = yaml.safe_load((out / "inferenceservice-serve.yaml").read_text())
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == (
        "registry.example.com/ml/serve:v1")
    assert "kubectl create job --from=cronjob/generate" in (out / "README.md").read_text()
    assert entrypoint(out / "images" / "serve" / "Dockerfile") == [
        "python", "-m", "sluice.worker", "--config", "/function/worker.json"]


def test_rendered_worker_config_serves_the_function_with_the_worker_command(tmp_path):
    out = tmp_path / "out"
    result = render("examples/echo.py", "--name", "echo", "--trigger", "http", "-o", str(out),
                    "--no-platform")
    assert result.returncode == 0, result.stderr
    context = out / "images" / "echo"
    command = entrypoint(context / "Dockerfile")
    config = json.loads((context / "worker.json").read_text())
    assert (config["source_dir"], config["host"], config["port"]) == ("/function", "0.0.0.0",
                                                                      8080)
    # what the image holds at /function is the context itself: point the config at it here
    port = free_port()
    config.update(source_dir=str(context), host="127.0.0.1", port=port,
                  metrics_dir=str(tmp_path / "metrics"))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "worker.json").write_text(json.dumps(config))
    assert command[:3] == ["python", "-m", "sluice.worker"]
    process = subprocess.Popen([sys.executable, *command[1:-1], str(tmp_path / "worker.json")])
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", process=process)
        answer = httpx.post(f"http://127.0.0.1:{port}/", json={"x": 1}, timeout=10)
        assert answer.status_code == 200 and answer.json() == {"x": 1}
    finally:
        stop(process)


def test_rendered_cron_run_config_runs_the_job_with_the_job_command(tmp_path):
    out = tmp_path / "out"
    result = render("examples/jobs/report.yaml", "-o", str(out), "--no-platform")
    assert result.returncode == 0, result.stderr
    context = out / "images" / "report"
    cronjob = yaml.safe_load((out / "cronjob-report-nightly.yaml").read_text())
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    command = entrypoint(context / "Dockerfile") + container["args"]
    assert command[:4] == ["python", "-m", "sluice.worker.job", "--config"]
    run_config = context / Path(command[4]).relative_to("/function")
    config = json.loads(run_config.read_text())
    config["source_dir"] = str(context)
    (tmp_path / "run.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, *command[1:4], str(tmp_path / "run.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    succeeded = [e for e in events if e.get("event") == "succeeded"]
    assert succeeded and succeeded[0]["outputs"]["result"] == {"days": 1, "rows": 24}
    # every run of a CronJob is its own run: the pod's name is its id
    [run_id] = [e for e in container["env"] if e["name"] == "SLUICE_RUN_ID"]
    assert run_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_a_job_run_takes_its_id_from_sluice_run_id(tmp_path):
    (tmp_path / "whoami.py").write_text("def handler(context, event):\n"
                                        "    return {'run': context.run_id, 'event': event.id}\n")
    config = {"function": "whoami", "handler": "whoami:handler", "source_dir": str(tmp_path),
              "run_id": "whoami-run"}
    (tmp_path / "run.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "-m", "sluice.worker.job", "--config",
                           str(tmp_path / "run.json")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SLUICE_RUN_ID": "whoami-28912345-x7k2p"})
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    [succeeded] = [e for e in events if e.get("event") == "succeeded"]
    assert succeeded["outputs"]["result"] == {"run": "whoami-28912345-x7k2p",
                                              "event": "whoami-28912345-x7k2p"}


def test_apply_without_a_kubeconfig_says_so_exits_1_and_keeps_the_manifests(tmp_path):
    env = {"HOME": str(tmp_path), "KUBECONFIG": ""}
    out = tmp_path / "out"
    result = render("examples/echo.py", "--name", "echo", "-o", str(out), "--apply", env=env)
    assert result.returncode == 1
    assert "--apply: no kubeconfig (KUBECONFIG is not set and ~/.kube/config does not exist)" in (
        result.stderr)
    assert f"kubectl apply -f {out}" in result.stderr
    assert (out / "nucliofunction-echo.yaml").is_file()


def test_apply_with_a_kubeconfig_but_no_kubectl_says_so(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    empty = tmp_path / "bin"
    empty.mkdir()
    out = tmp_path / "out"
    result = render("examples/echo.py", "--name", "echo", "-o", str(out), "--apply",
                    env={"KUBECONFIG": str(kubeconfig), "PATH": str(empty)})
    assert result.returncode == 1
    assert "--apply: kubectl is not on PATH" in result.stderr


def test_an_inline_secret_is_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    result = render("examples/echo.py", "--name", "echo", "--env", "DB_PASSWORD=hunter2",
                    "-o", str(out))
    assert result.returncode == 1
    assert "sluice: echo: env.DB_PASSWORD: looks like a secret" in result.stderr
    assert not out.exists()


def test_function_options_with_a_pipeline_file_are_refused(tmp_path):
    result = render("functions/pipeline.yaml", "--name", "x", "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "--name: these name one function" in result.stderr
