"""Pipeline files: the shipped one loads; a wrong one says which field of which function."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sluice.errors import SpecError
from sluice.pipeline import load_pipeline
from tests.conftest import ROOT

PIPELINE = ROOT / "functions" / "pipeline.yaml"


def test_the_shipped_pipeline_loads_and_wires_its_topics():
    pipeline = load_pipeline(PIPELINE)
    assert pipeline.name == "fraud"
    assert pipeline.order() == (["generate", "etl", "train", "tune"], ["enrich", "serve"])
    assert [step.run for step in pipeline.setup] == ["generate", "etl", "train"]
    assert pipeline.topics_used() == set(pipeline.topics)  # every topic used is declared
    specs = pipeline.specs()
    assert specs["serve"].serving is not None and specs["serve"].serving.model == \
        "fraud@production"
    assert set(specs["train"].cron_triggers) == {"retrain"}


def write(tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(PIPELINE.read_text())
    change(data)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["setup"].append({"run": "nope"}), "setup[3].run: no function 'nope'"),
    (lambda d: d["setup"].append({"run": "enrich"}), "'enrich' is not a job"),
    (lambda d: d["functions"]["enrich"]["triggers"]["events"].update(max_batch_size=0),
     "functions.enrich"),
    (lambda d: d["functions"]["train"].update(name="other"), "differs from its key"),
    (lambda d: d["topics"].update({"bad topic": {}}), "topics"),
    (lambda d: d.update(functions={}), "functions"),
])
def test_a_wrong_pipeline_names_the_field(tmp_path, change, message):
    with pytest.raises(SpecError, match="pipeline.yaml") as caught:
        load_pipeline(write(tmp_path, change))
    assert message in str(caught.value)


def test_a_missing_or_unreadable_file_says_so(tmp_path):
    with pytest.raises(SpecError, match="no such pipeline file"):
        load_pipeline(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("name: [")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_pipeline(tmp_path / "bad.yaml")
