"""From CLI arguments and files to spec dicts."""

from __future__ import annotations

import base64

import pytest

from sluice.errors import SpecError
from sluice.packaging import parse_trigger_option, spec_from_path


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
