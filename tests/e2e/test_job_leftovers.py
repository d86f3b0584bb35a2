"""A local job that returns while a child it started still runs: the run ends, the child goes."""

from __future__ import annotations

import pytest

from tests.conftest import Daemon
from tests.e2e.test_jobs import alive, deploy_job, runs, wait_for

pytestmark = pytest.mark.slow


def test_a_child_left_running_by_a_local_job_neither_outlives_nor_holds_the_run(
        daemon: Daemon, tmp_path):
    pids_file = tmp_path / "pids"
    deploy_job(daemon, tmp_path, "parent", "leaves_child", module="ray_job_handlers",
               env={"PIDS_FILE": str(pids_file)})
    daemon.cli("run", "parent")
    [run] = runs(daemon, "parent")
    assert run["status"] == "succeeded" and run["outputs"]["result"] == "left a child"
    wait_for(lambda: not alive(int(pids_file.read_text())), what="the child to be stopped")
