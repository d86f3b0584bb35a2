"""Finding Triton's environment, and the spec's remote-Triton settings."""

from __future__ import annotations

import sys

import pytest

from sluice.errors import PlatformError, SpecError
from sluice.serving.triton_server import TritonEnv
from sluice.spec import parse_spec


def test_a_missing_triton_environment_says_how_to_make_one(tmp_path):
    with pytest.raises(PlatformError, match="run `make triton-env` to create it"):
        TritonEnv.find(tmp_path / "nowhere")


def test_an_environment_without_pytriton_is_refused(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    with pytest.raises(PlatformError, match="has no nvidia-pytriton"):
        TritonEnv.find(tmp_path)


def serving(**fields: object) -> dict:
    return {"name": "fraud", "kind": "serving",
            "serving": {"model": "fraud:2", "inputs": [{"name": "x", "dims": [4]}],
                        "outputs": [{"name": "y", "dims": [1]}], **fields}}


def test_a_remote_triton_model_is_named_without_an_alias():
    with pytest.raises(SpecError, match="names a registry alias"):
        parse_spec(serving(model="fraud@production", triton_url="http://gpu-box:8000"))
    with pytest.raises(SpecError, match="a remote Triton server is the triton backend"):
        parse_spec(serving(triton_url="http://gpu-box:8000", backend="torch"))
    with pytest.raises(SpecError, match="triton_url"):
        parse_spec(serving(triton_url="gpu-box:8000"))
    spec = parse_spec(serving(triton_url="http://gpu-box:8000"))
    assert spec.serving is not None and spec.serving.backend is None
