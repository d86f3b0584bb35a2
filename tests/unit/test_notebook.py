"""Notebook plumbing without a platform: nuclio-jupyter's trigger objects as sluice triggers,
and a notebook job's params from its parameters cell."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nuclio.triggers import CronTrigger, HttpTrigger, KafkaTrigger

from sluice.errors import SpecError
from sluice.notebook import notebook_spec, nuclio_triggers
from sluice.spec import parse_spec
from sluice.worker.notebook_job import declared_params, notebook_of
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples" / "notebooks"


def test_nuclio_trigger_objects_become_sluice_triggers():
    spec = notebook_spec(EXAMPLES / "scorer.ipynb", name="scorer", triggers=[
        HttpTrigger(workers=3, port=8123),
        CronTrigger(schedule="*/5 * * * *", body={"kind": "tick"}),
        KafkaTrigger(brokers=["127.0.0.1:9092"], topics=["events"], consumer_group="scorers"),
    ])
    parsed = parse_spec(spec)
    http, cron, kafka = (parsed.triggers[name] for name in ("http", "cron", "kafka"))
    assert http.kind == "http" and http.port == 8123
    assert parsed.workers == 3  # nuclio's maxWorkers is the worker count
    assert cron.kind == "cron" and cron.schedule == "*/5 * * * *"
    assert kafka.kind == "kafka" and kafka.topics == ["events"] and kafka.group == "scorers"
    assert parsed.handler == "scorer-nuclio:handler"
    assert parsed.env == {"THRESHOLD": "0.5"}  # the notebook's own %nuclio env stays


def test_triggers_named_by_a_mapping_and_sluice_triggers_pass_through():
    from sluice.spec import HttpTrigger as SluiceHttp

    triggers = nuclio_triggers({"web": SluiceHttp(port=9000), "also": {"kind": "http"}})
    assert triggers["web"]["port"] == 9000 and triggers["also"] == {"kind": "http"}
    repeated = nuclio_triggers([CronTrigger(interval="10s"), CronTrigger(interval="20s")])
    assert list(repeated) == ["cron", "cron-2"]
    with pytest.raises(SpecError, match="is not a trigger"):
        nuclio_triggers([42])


def test_a_file_that_is_not_a_notebook_is_refused(tmp_path: Path):
    with pytest.raises(SpecError, match="not a notebook file"):
        notebook_spec(tmp_path / "handler.py")


def test_a_notebook_jobs_params_are_its_parameters_cell(tmp_path: Path):
    assert declared_params(EXAMPLES / "report.ipynb") == {"alpha": 0.1, "rows": 10,
                                                          "label": "demo"}
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell("import datetime\nwhen = datetime.date.today()\n"
                                            "days = 3")]
    book.cells[0].metadata["tags"] = ["parameters"]
    path = tmp_path / "dated.ipynb"
    nbformat.write(book, path)
    assert declared_params(path) == {"days": 3}  # a default that is code is the notebook's


def test_a_notebook_job_is_recognised_by_its_source(tmp_path: Path):
    (tmp_path / "report.ipynb").write_text("{}")
    (tmp_path / "train.py").write_text("def handler(c, e): ...\n")
    assert notebook_of("report:notebook", str(tmp_path)) == tmp_path / "report.ipynb"
    assert notebook_of("train:handler", str(tmp_path)) is None
    assert notebook_of("report:notebook", None) is None


def test_a_notebook_source_is_only_for_jobs():
    source = {"filename": "report.ipynb", "code": "e30="}
    parse_spec({"name": "report", "kind": "job", "handler": "report:notebook",
                "source": source})
    with pytest.raises(SpecError, match="runs as a job"):
        parse_spec({"name": "report", "handler": "report:notebook", "source": source})
