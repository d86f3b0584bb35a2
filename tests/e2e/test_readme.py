"""The README's examples run as written (the tour against a real daemon)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from tests.conftest import ROOT, Daemon

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_two_commands():
    first = code_blocks("sh")[0]
    assert [line.split("#")[0].strip() for line in first.strip().splitlines()] == [
        "make run", "make test"]


def test_tour_commands_work_as_written(daemon: Daemon):
    tour = code_blocks("sh")[2]
    ran = 0
    for raw in tour.strip().splitlines():
        command = raw.split("  #")[0].strip()
        if command.startswith("sluice "):
            result = daemon.cli(*shlex.split(command)[1:])
            if command.startswith("sluice invoke echo"):
                assert result.stdout.strip() == '{"x":1}'
            if command.startswith("sluice invoke risk"):
                assert '"suspicious":true' in result.stdout
        elif command.startswith("curl ") and shutil.which("curl"):
            port = daemon.endpoint("echo").rsplit(":", 1)[1]
            out = subprocess.run(shlex.split(command.replace("PORT", port)), capture_output=True,
                                 text=True, check=True, timeout=30).stdout
            assert out.strip() == '{"x":1}'
        else:
            continue
        ran += 1
    assert ran >= 10


def test_kafka_tour_works_as_written(daemon: Daemon):
    import json
    import time

    tour = code_blocks("sh")[3]
    for raw in tour.strip().splitlines():
        command = raw.split("  #")[0].strip()
        args = shlex.split(command)[1:]
        if args[0] == "consume":
            deadline = time.monotonic() + 60
            while True:
                lines = daemon.cli(*args, check=False).stdout.splitlines()
                if len(lines) == 3:
                    break
                assert time.monotonic() < deadline, lines
            assert all(json.loads(line)["card"].startswith("card-") for line in lines)
        elif args[0] == "get":
            assert "lag:       events/" in daemon.cli(*args).stdout
        else:
            daemon.cli(*args)


def test_cron_example_is_a_valid_spec_and_kafka_config_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv("SLUICE_KAFKA_BOOTSTRAP", raising=False)
    import yaml

    from sluice.spec import parse_spec

    config, example = code_blocks("yaml")
    assert set(yaml.safe_load(config)["kafka"]) == {"bootstrap_servers", "security"}
    spec = parse_spec(yaml.safe_load(example))
    cron = spec.cron_triggers["nightly"]
    assert cron.timezone == "Europe/Paris" and cron.concurrency_policy == "forbid"
    assert cron.event.body == {"job": "refresh"}
    from sluice.settings import Settings

    settings = Settings(home=tmp_path)
    settings.config_path.write_text(config)
    cluster = settings.kafka_cluster()
    assert cluster.bootstrap == "broker1:9092,broker2:9092"
    assert cluster.security["sasl_mechanism"] == "PLAIN"


def test_jobs_tour_works_as_written(daemon: Daemon):
    import json

    tour = code_blocks("sh")[4]
    run_id = ""
    ran = 0
    for raw in tour.strip().splitlines():
        command = raw.split("  #")[0].strip()
        args = [run_id if arg == "RUN_ID" else arg for arg in shlex.split(command)[1:]]
        result = daemon.cli(*args)
        ran += 1
        if args[:2] == ["run", "report"] and "--detach" not in args:
            assert "status     succeeded" in result.stdout and "metric     rows = 72" in \
                result.stdout
            assert "3/3  100%  day 3 of 3" in result.stderr  # the progress bar
            run_id = re.search(r"^run +(\S+)$", result.stdout, flags=re.M).group(1)
        elif "--detach" in args:
            run_id = result.stdout.strip()
        elif args[:2] == ["runs", "report"]:
            assert run_id in result.stdout and "succeeded" in result.stdout
        elif args[:2] == ["runs", "show"]:
            assert "result     {\"days\": 3, \"rows\": 72}" in result.stdout
            assert "report ready" in result.stdout  # the run's own log lines
        elif args[:2] == ["schedule", "list"]:
            assert re.search(r"report +nightly +0 2 \* \* \* +UTC +forbid +active +- ",
                             result.stdout)
        elif args[:2] == ["runs", "cancel"]:
            assert "cancelled: cancelled by `sluice runs cancel`" in result.stdout
    assert ran == 8
    runs = json.loads(daemon.cli("runs", "report", "-o", "json").stdout)
    assert [r["status"] for r in runs] == ["cancelled", "succeeded"]


def test_job_handler_snippet_matches_the_example():
    snippet = code_blocks("python")[1]
    example = (ROOT / "examples/jobs/report.py").read_text()
    for call in ("context.progress(day + 1, event.body[\"days\"]", "context.log_metrics(rows=",
                 "return {"):
        assert call.split("(")[0] in snippet and call.split("(")[0] in example


def test_python_examples_run(daemon: Daemon, tmp_path, monkeypatch):
    deploy_block, _, handler_block, harness_block = code_blocks("python")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SLUICE_HOME", str(daemon.home))
    monkeypatch.setenv("SLUICE_API_PORT", str(daemon.port))
    scope: dict[str, object] = {}
    exec(deploy_block, scope)  # noqa: S102 - running the README is the point
    assert scope["status"] == 200 and scope["body"] == b'{"x":1}'

    (tmp_path / "scorer.py").write_text(handler_block)
    monkeypatch.chdir(tmp_path)
    exec(harness_block, {})  # noqa: S102 - its assert is the check


def test_notebooks_tour_works_as_written(daemon: Daemon):
    tour = code_blocks("sh")[5]
    ran = 0
    for raw in tour.strip().splitlines():
        result = daemon.cli(*shlex.split(raw.split("  #")[0].strip())[1:])
        ran += 1
        if "--kind" in raw:
            assert "report is ready" in result.stdout
        elif raw.startswith("sluice run"):
            assert "demo: total 19.00 over 20 rows" in result.stdout
    assert ran == 3
    assert daemon.cli("invoke", "scorer", "--body", '{"amount": 900}').stdout.startswith(
        '{"risk":0.9,"flagged":true')


def test_models_tour_works_as_written(daemon: Daemon):
    tour = code_blocks("sh")[6]
    ran = 0
    for raw in tour.strip().splitlines():
        args = shlex.split(raw.split("  #")[0].strip())[1:]
        result = daemon.cli(*args)
        ran += 1
        if args[:2] == ["models", "push"]:
            assert result.stdout.startswith("fraud version 1 ")
        elif args[:2] == ["models", "show"]:
            assert "fraud version 1 (production)" in result.stdout
            assert '"auc": 0.93' in result.stdout
    assert ran == 4


def test_serving_tour_works_as_written(daemon: Daemon, tmp_path, monkeypatch):
    import json
    import sys

    tour = code_blocks("sh")[7]
    ran = 0
    for raw in tour.strip().splitlines():
        args = shlex.split(raw.split("  #")[0].strip())
        if args[0] == "python":  # the example's script, writing into the test's folder
            subprocess.run([sys.executable, str(ROOT / args[1]), str(tmp_path / args[2])],
                           check=True, capture_output=True, timeout=120)
        else:
            args = [str(tmp_path / a) if a == "mlp.pt" else a for a in args[1:]]
            result = daemon.cli(*args)
            if "/v2/models/mlp/infer" in args:
                [out] = json.loads(result.stdout)["outputs"]
                assert out["name"] == "scores" and out["shape"] == [1, 8]
            elif "GET" in args:
                assert json.loads(result.stdout)["inputs"][0]["shape"] == [-1, 64]
        ran += 1
    assert ran == 6

    # the next block: a pushed signature instead of a spec, and the kserve.Model example
    for raw in code_blocks("sh")[8].strip().splitlines():
        args = shlex.split(raw.split("  #")[0].strip())
        daemon.cli(*[str(tmp_path / a) if a == "mlp.pt" else a for a in args[1:]])
    body = str(ROOT / "examples/serving/request.json")
    for name in ("scorer", "mlp-kserve"):
        result = daemon.cli("invoke", name, "--path", "/v2/models/mlp/infer", "--body",
                            f"@{body}")
        [out] = json.loads(result.stdout)["outputs"]
        assert out["shape"] == [1, 8]
        if name == "mlp-kserve":  # the example's predict answers probabilities
            assert abs(sum(out["data"]) - 1) < 1e-5 and min(out["data"]) >= 0
