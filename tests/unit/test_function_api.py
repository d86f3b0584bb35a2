"""The Python API builds the same specs the CLI does."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import sluice.function
from sluice import Function, HttpTrigger, SpecError

ROOT = Path(__file__).resolve().parents[2]


def test_docstring_example_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = doctest.testmod(sluice.function)
    assert result.attempted > 0 and result.failed == 0


def test_function_from_file_carries_source_and_settings():
    fn = Function("echo", ROOT / "examples/echo.py", env={"A": "1"}, replicas=2, timeout=5,
                  triggers={"web": HttpTrigger(port=9100)})
    spec = fn.spec()
    assert spec.source is not None and spec.source.filename == "echo.py"
    assert spec.env == {"A": "1"} and spec.replicas.min == 2 and spec.timeout == 5
    assert spec.triggers["web"].port == 9100


def test_function_from_nuclio_yaml():
    spec = Function.from_yaml(ROOT / "examples/nuclio/function.yaml").spec()
    assert spec.name == "risk" and spec.source is not None


def test_invalid_function_fails_before_deploying():
    with pytest.raises(SpecError, match="workers"):
        Function("echo", ROOT / "examples/echo.py", workers=0).deploy()
