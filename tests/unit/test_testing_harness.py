"""sluice.testing calls handlers in process with the worker's own rules."""

from __future__ import annotations

import doctest
from pathlib import Path

import sluice.testing
from sluice.testing import Harness

HANDLERS = Path(__file__).resolve().parents[1] / "handlers" / "nuclio_style.py"
ROOT = Path(__file__).resolve().parents[2]


def test_docstring_example_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = doctest.testmod(sluice.testing)
    assert result.attempted > 0 and result.failed == 0


def test_harness_runs_init_context_and_keeps_user_data():
    harness = Harness.from_file(HANDLERS, "greet")
    assert harness.call(body={"name": "a"}).json()["calls"] == 1
    assert harness.call(body={"name": "b"}).json()["calls"] == 2
    assert any(entry["message"] == "initialised" for entry in harness.logs)


def test_harness_reports_exceptions_like_a_worker():
    response = Harness.from_file(HANDLERS, "crash").call()
    assert response.status == 500
    assert "ValueError: boom" in response.json()["error"]


def test_harness_runs_async_handlers_and_passes_query_fields():
    response = Harness.from_file(HANDLERS, "describe").call(
        body="plain", method="GET", path="/x?a=1", headers={"x-custom-header": "v"})
    seen = response.json()
    assert seen["fields"] == {"a": "1"} and seen["header_title"] == "v"
    assert Harness.from_file(HANDLERS, "async_echo").call(body=[1]).json() == {
        "async": True, "body": [1]}


def test_job_harness_reports_outputs_progress_and_failures():
    from sluice.testing import JobHarness

    jobs = Path(__file__).resolve().parents[1] / "handlers" / "job_handlers.py"
    result = JobHarness.from_file(jobs, "train").run({"epochs": 2},
                                                     declared={"epochs": 10, "lr": 0.5})
    assert result.succeeded and result.error == ""
    assert result.outputs is not None
    assert result.outputs["result"] == {"epochs": 2, "lr": 0.5, "attempt": 1}
    assert result.outputs["metrics"] == {"loss": 0.5, "epoch": 2}
    assert [p["step"] for p in result.progress] == [1, 2]
    assert result.logs[0]["message"] == "training" and result.logs[0]["run"] == "job_handlers-test"

    failed = JobHarness.from_file(jobs, "flaky").run()
    assert not failed.succeeded and failed.error == "handler raised RuntimeError: attempt 1 broke"
    assert "Traceback" in failed.logs[-1]["with"]["traceback"]


def test_an_async_job_runs_on_the_loop_its_init_context_ran_on():
    from sluice.testing import JobHarness

    job = Path(__file__).resolve().parents[1] / "handlers" / "async_job.py"
    result = JobHarness.from_file(job, "same_loop").run()
    assert result.outputs is not None and result.outputs["result"] == {"same_loop": True}
