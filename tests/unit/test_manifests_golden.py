"""The pipeline's manifests against golden files, reviewed by eye once and compared since.

A change to the renderer (or to functions/pipeline.yaml) that changes what is rendered fails
here until the golden files are regenerated and the diff reviewed::

    SLUICE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/unit/test_manifests_golden.py
    git diff tests/unit/golden/
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from sluice.manifests import RenderOptions, render_specs
from sluice.pipeline import load_pipeline
from sluice.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden" / "pipeline"


def rendered() -> dict[str, bytes]:
    pipeline = load_pipeline(ROOT / "functions" / "pipeline.yaml")
    return render_specs(pipeline.specs(), RenderOptions(), pipeline).outputs()


def golden_files() -> dict[str, bytes]:
    return {str(p.relative_to(GOLDEN)): p.read_bytes()
            for p in sorted(GOLDEN.rglob("*")) if p.is_file()}


def test_pipeline_manifests_match_the_golden_files():
    files = rendered()
    if os.environ.get("SLUICE_UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for path, data in files.items():
            (GOLDEN / path).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / path).write_bytes(data)
    golden = golden_files()
    assert sorted(files) == sorted(golden), "files added or gone: regenerate (module docstring)"
    changed = [path for path in files if files[path] != golden[path]]
    assert not changed, f"rendered differently: {changed}; regenerate and review the diff"


def test_the_pipeline_renders_each_function_to_its_kind_of_resource():
    resources = {(d["kind"], d["metadata"]["name"])
                 for d in (yaml.safe_load(data) for path, data in golden_files().items()
                           if "/" not in path and path.endswith(".yaml"))}
    assert resources == {
        ("ConfigMap", "sluice-config"), ("Deployment", "sluice-platform"),
        ("PersistentVolumeClaim", "sluice-state"),
        ("Service", "sluice-platform"),
        ("CronJob", "generate"), ("CronJob", "etl"), ("CronJob", "etl-nightly"),
        ("CronJob", "train"), ("CronJob", "train-retrain"), ("CronJob", "tune"),
        ("NuclioFunction", "enrich"), ("InferenceService", "serve")}


def test_each_build_context_spec_reads_back_as_a_valid_spec():
    pipeline = load_pipeline(ROOT / "functions" / "pipeline.yaml")
    for name, spec in pipeline.specs().items():
        back = parse_spec(yaml.safe_load((GOLDEN / "images" / name / "spec.yaml").read_text()))
        assert (back.name, back.kind, back.handler, back.timeout) == (
            spec.name, spec.kind, spec.handler, spec.timeout)
        assert back.labels["app.kubernetes.io/part-of"] == "fraud"
