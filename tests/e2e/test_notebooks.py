"""Real notebooks (tests/notebooks/*.ipynb) executed for real on an ipykernel with nbclient,
deploying themselves with ``%nuclio deploy`` (nuclio-jupyter's own code) to a real daemon; and
the same notebooks deployed with ``sluice deploy x.ipynb`` and ``sluice.deploy_notebook``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import nbformat
import pytest
from nbclient import NotebookClient

import sluice
from tests.conftest import ROOT, Daemon
from tests.integration.test_build_env import tiny_wheel

pytestmark = pytest.mark.slow

NOTEBOOKS = ROOT / "tests" / "notebooks"
EXAMPLES = ROOT / "examples" / "notebooks"


def execute(notebook: Path, daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs every cell on a fresh python3 kernel; the text of all its outputs."""
    # the kernel inherits these: %nuclio deploy finds its notebook by the first, and
    # sluice.nuclio_dashboard_url() the test's platform by the others
    monkeypatch.setenv("JUPYTER_NOTEBOOK_FILE_NAME", str(notebook))
    monkeypatch.setenv("SLUICE_HOME", str(daemon.home))
    monkeypatch.setenv("SLUICE_API_PORT", str(daemon.port))
    book = nbformat.read(notebook, as_version=4)
    NotebookClient(book, kernel_name="python3", timeout=180,
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    texts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") or json.dumps(output.get("data", {})))
    return "".join(texts)


def score(endpoint: str, amount: float) -> dict:
    reply = httpx.post(endpoint + "/", json={"amount": amount}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def test_a_notebook_deploys_itself_with_nuclio_magics(daemon: Daemon,
                                                      monkeypatch: pytest.MonkeyPatch):
    output = execute(EXAMPLES / "scorer.ipynb", daemon, monkeypatch)
    assert "done creating nb-scorer" in output, output

    status = httpx.get(f"{daemon.api}/api/functions/nb-scorer").json()
    assert status["status"]["state"] == "ready"
    assert status["spec"]["env"] == {"THRESHOLD": "0.5"}  # from %nuclio env
    assert status["spec"]["workers"] == 1  # %nuclio config ...maxWorkers = 1
    assert status["spec"]["labels"]["nuclio.io/project-name"] == "demo"  # -p demo
    # the handler answers; the '# nuclio: ignore' cell is not part of the function
    assert score(status["status"]["endpoint"], 800) == {"risk": 0.8, "flagged": True,
                                                         "explored": False}


def test_a_notebook_whose_deploy_fails_reports_why(daemon: Daemon,
                                                   monkeypatch: pytest.MonkeyPatch):
    output = execute(NOTEBOOKS / "misnamed_handler.ipynb", daemon, monkeypatch)
    assert "Failed to deploy" in output, output
    assert "%nuclio: error: cannot deploy function 'nb-broken'" in output
    status = httpx.get(f"{daemon.api}/nuclio/api/functions/nb-broken").json()["status"]
    assert status["state"] == "error"
    assert "handler" in status["message"] and "handle" in status["message"]
    assert status["message"] in output  # nuclio-jupyter printed sluice's reason


def test_nuclio_cmd_installs_into_the_functions_own_environment(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch):
    tiny_wheel(daemon.home / "wheels")  # where the notebook's pip command finds it, offline
    output = execute(NOTEBOOKS / "build_commands.ipynb", daemon, monkeypatch)
    assert "done creating nb-built" in output, output
    # the build's own lines were printed by nuclio-jupyter as the deploy went
    assert "command 1/1 started: pip install --no-index" in output
    status = httpx.get(f"{daemon.api}/api/functions/nb-built").json()
    # (nuclio-jupyter's exporter expands $VARS from the notebook's environment)
    assert status["spec"]["build"]["commands"] == [
        f'pip install --no-index --no-deps --find-links "{daemon.home}/wheels" tinypkg']
    reply = httpx.post(status["status"]["endpoint"] + "/", json={}, timeout=30)
    assert reply.json() == {"value": 42}
    with pytest.raises(ModuleNotFoundError):  # installed for the function, not here
        __import__("tinypkg")


def test_sluice_deploy_notebook(daemon: Daemon):
    deployed = json.loads(daemon.cli("deploy", str(EXAMPLES / "scorer.ipynb"), "--name",
                                     "cli-scorer", "-o", "json").stdout)
    assert deployed["status"]["state"] == "ready"
    assert deployed["spec"]["handler"] == "scorer-nuclio:handler"  # nuclio-jupyter's naming
    assert score(deployed["status"]["endpoint"], 100) == {"risk": 0.1, "flagged": False,
                                                          "explored": False}


def test_sluice_deploy_of_a_broken_notebook_file_says_what_is_wrong(daemon: Daemon,
                                                                    tmp_path: Path):
    notebook = tmp_path / "not-json.ipynb"
    notebook.write_text("{ this is not a notebook")
    failed = daemon.cli("deploy", str(notebook), check=False)
    assert failed.returncode != 0
    assert "nuclio-jupyter could not export the notebook" in failed.stderr
    assert str(notebook) in failed.stderr


def test_deploy_notebook_from_python(daemon: Daemon, monkeypatch: pytest.MonkeyPatch):
    from nuclio.triggers import HttpTrigger

    monkeypatch.setenv("SLUICE_HOME", str(daemon.home))  # how Client() finds the platform
    monkeypatch.setenv("SLUICE_API_PORT", str(daemon.port))
    result = sluice.deploy_notebook(EXAMPLES / "scorer.ipynb", name="py-scorer",
                                    triggers=[HttpTrigger(workers=2)], env={"THRESHOLD": "0.05"},
                                    project="demo")
    status = result["status"]
    assert status["state"] == "ready" and status["workers"] == 2
    assert list(result["spec"]["triggers"]) == ["http"]  # replaced the notebook's own
    assert score(status["endpoint"], 100) == {"risk": 0.1, "flagged": True, "explored": False}
    url = sluice.nuclio_dashboard_url()
    assert url == f"http://sluice:{daemon.token}@127.0.0.1:{daemon.port}/nuclio"


# -- notebook jobs: papermill --------------------------------------------------------------------


def test_a_notebook_job_runs_with_params_and_keeps_the_executed_notebook(daemon: Daemon):
    deployed = json.loads(daemon.cli("deploy", str(EXAMPLES / "report.ipynb"), "--kind", "job",
                                     "-o", "json").stdout)
    assert deployed["status"]["state"] == "ready"
    # the parameters cell's values are the job's params, checked on every run
    assert deployed["spec"]["params"] == {"alpha": 0.1, "rows": 10, "label": "demo"}
    refused = daemon.cli("run", "report", "--param", "rows=many", check=False)
    assert refused.returncode == 1 and "params.rows" in refused.stderr

    result = daemon.cli("run", "report", "--param", "rows=20", "--param", "label=nightly")
    assert "nightly: total 19.00 over 20 rows" in result.stdout  # the cell's print, in the log
    assert "4/4" in result.stderr  # progress: a step per code cell, papermill's own included
    [run] = json.loads(daemon.cli("runs", "report", "-o", "json").stdout)
    assert run["status"] == "succeeded"
    assert run["outputs"]["result"]["cells"] == 4
    executed = nbformat.reads(stored(daemon, run["outputs"]["artifacts"]["notebook"]),
                              as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "rows = 20" in injected[0].source
    last = executed.cells[-1].outputs[0]["data"]["text/plain"]
    assert float(last) == pytest.approx(19.0)  # the notebook's result, computed in the run


def test_a_notebook_job_whose_cell_raises_fails_with_the_cell_and_keeps_the_notebook(
        daemon: Daemon):
    daemon.cli("deploy", str(EXAMPLES / "report.ipynb"), "--kind", "job", "--name", "rep")
    failed = daemon.cli("run", "rep", "--param", "rows=-1", check=False)
    assert failed.returncode != 0
    [run] = json.loads(daemon.cli("runs", "rep", "-o", "json").stdout)
    assert run["status"] == "failed"
    assert "ValueError: rows must be >= 0" in run["reason"]
    executed = nbformat.reads(stored(daemon, run["outputs"]["artifacts"]["notebook"]),
                              as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors and errors[0]["evalue"] == "rows must be >= 0"


def test_a_job_from_a_file_that_is_no_notebook_is_refused(daemon: Daemon, tmp_path: Path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": "not a list"}')
    failed = daemon.cli("deploy", str(broken), "--kind", "job", check=False)
    assert failed.returncode != 0 and str(broken) in failed.stderr
    assert "notebook" in failed.stderr


def stored(daemon: Daemon, uri: str) -> str:
    """An artifact of the daemon's local store, by the URI a run recorded."""
    path = Path(uri.removeprefix("file://"))
    assert path.is_relative_to(daemon.home), uri
    return path.read_text()
