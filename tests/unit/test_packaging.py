"""From CLI arguments and files to spec dicts."""

from __future__ import annotations

import base64

import pytest

from sluice.errors import SpecError
from sluice.packaging import parse_trigger_option, serving_options, spec_from_path


@pytest.mark.parametrize(("text", "expected"), [
    ("http", ("http", {"kind": "http"})),
    ("http:port=8081", ("http", {"kind": "http", "port": 8081})),
    ("http:name=web,max-inflight=64,host=0.0.0.0",
     ("web", {"kind": "http", "max_inflight": 64, "host": "0.0.0.0"})),
])
def test_trigger_options(text, expected):
    assert parse_trigger_option(text) == expected


@pytest.mark.parametrize("text", ["", ":port=1", "http:port"])
def test_bad_trigger_options_say_what_is_wrong(text):
    with pytest.raises(SpecError, match="--trigger"):
        parse_trigger_option(text)


def test_python_file_becomes_spec_with_source(tmp_path):
    path = tmp_path / "My_Scorer.py"
    path.write_text("def handler(context, event):\n    return 1\n")
    spec = spec_from_path(path, env=["A=1"], workers=2, triggers=["http:port=9000"])
    assert spec["name"] == "my-scorer"
    assert spec["handler"] == "My_Scorer:handler"
    assert base64.b64decode(spec["source"]["code"]).startswith(b"def handler")
    assert spec["env"] == {"A": "1"} and spec["workers"] == 2
    assert spec["triggers"] == {"http": {"kind": "http", "port": 9000}}


def test_handler_option_accepts_bare_function_name(tmp_path):
    path = tmp_path / "fn.py"
    path.write_text("def run(c, e): pass\n")
    assert spec_from_path(path, handler="run")["handler"] == "fn:run"


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        spec_from_path(tmp_path / "nope.py")
    other = tmp_path / "x.txt"
    other.write_text("")
    with pytest.raises(SpecError, match="deploy a handler file"):
        spec_from_path(other)


def test_sluice_yaml_spec_picks_up_its_handler_file(tmp_path):
    (tmp_path / "main.py").write_text("def handler(c, e): return 1\n")
    (tmp_path / "fn.yaml").write_text("name: scorer\nhandler: main:handler\nworkers: 2\n")
    spec = spec_from_path(tmp_path / "fn.yaml")
    assert spec["name"] == "scorer" and spec["workers"] == 2
    assert spec["source"]["filename"] == "main.py"


def test_model_flags_make_a_serving_spec(tmp_path):
    (tmp_path / "serve.py").write_text("class Fraud: pass\n")
    serving = serving_options("fraud@production", "max_batch=64,latency-ms=20", "triton",
                              ["x:FP32:64", "image:uint8:3,224,224"], ["scores:8"])
    spec = spec_from_path(tmp_path / "serve.py", name="fraud", serving=serving)
    assert spec["kind"] == "serving"
    assert spec["serving"] == {
        "model": "fraud@production", "backend": "triton", "max_batch": 64, "latency_ms": 20.0,
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [64]},
                   {"name": "image", "datatype": "UINT8", "dims": [3, 224, 224]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "dims": [8]}]}
    # an explicit --kind is kept, so that a mismatch is the spec's error, not a silent change
    assert spec_from_path(tmp_path / "serve.py", kind="http", serving=serving)["kind"] == "http"


@pytest.mark.parametrize("batching, inputs, message", [
    ("max_batch", None, "'max_batch' must be key=value"),
    ("batch=4", None, "key one of max_batch, latency_ms"),
    ("max_batch=lots", None, "max_batch must be a number, got 'lots'"),
    (None, ["x"], "give NAME:DATATYPE:DIMS"),
    (None, ["x:FP32:64x2"], "the dims are integers separated by ','"),
])
def test_bad_model_flags_say_what_is_wrong(batching, inputs, message):
    with pytest.raises(SpecError, match=message):
        serving_options("fraud", batching, inputs=inputs)
