"""FunctionSpec validation: good specs pass, bad ones name the field and what is allowed."""

from __future__ import annotations

import pytest

from sluice.errors import SpecError
from sluice.spec import FunctionSpec, HttpTrigger, Kind, Source, parse_spec


def test_minimal_spec_gets_sensible_defaults():
    spec = parse_spec({"name": "echo"})
    assert spec.kind is Kind.HTTP
    assert spec.handler == "main:handler"
    assert spec.workers == 1 and spec.replicas.min == 1
    assert spec.timeout == 60.0


def test_spec_is_immutable():
    spec = parse_spec({"name": "echo"})
    with pytest.raises(Exception, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "Echo"}, "name: must be a DNS label"),
        ({"name": "../x"}, "name: must be a DNS label"),
        ({"name": "a" * 64}, "name: must be a DNS label"),
        ({"name": "ok", "handler": "nocolon"}, "handler: must be 'module:function'"),
        ({"name": "ok", "kind": "batch"}, "kind: Input should be 'http', 'job' or 'serving'"),
        ({"name": "ok", "workers": 0}, "workers: Input should be greater than or equal to 1"),
        ({"name": "ok", "colour": "red"}, "colour: unknown field (allowed: name, kind, handler"),
        ({"name": "ok", "triggers": {"web": {"kind": "http", "port": 70000}}},
         "triggers.web.port: Input should be less than or equal to 65535 (got 70000)"),
        ({"name": "ok", "triggers": {"web": {"kind": "smoke"}}},
         "triggers.web.kind: unknown trigger kind 'smoke' (allowed: http, kafka, kafka-cluster, "
         "cron)"),
        ({"name": "ok", "triggers": {"nightly": {"kind": "cron", "schedule": "0 25 * * *"}}},
         "triggers.nightly: cron schedule '0 25 * * *' is not valid; it takes 5"),
        ({"name": "ok", "triggers": {"c": {"kind": "cron", "interval": "1s",
                                           "timezone": "Nowhere/City"}}},
         "time zone 'Nowhere/City' is not known; examples: 'UTC'"),
        ({"name": "ok", "triggers": {"c": {"kind": "cron", "interval": "1s",
                                           "concurrency_policy": "queue"}}},
         "triggers.c.concurrency_policy: must be 'allow', 'forbid' or 'replace'"),
        ({"name": "ok", "triggers": {"web": {"port": 1}}},
         "triggers.web.kind: required: one of http, kafka"),
        ({"name": "ok", "triggers": {"k": {"kind": "kafka", "topics": ["a"], "grp": 1}}},
         "triggers.k.grp: unknown field (allowed: kind, topics, group"),
        ({"name": "ok", "triggers": {"k": {"kind": "kafka", "topics": []}}},
         "triggers.k.topics: List should have at least 1 item"),
        ({"name": "ok", "triggers": {"k": {"kind": "kafka", "topics": ["a"],
                                           "initial_offset": "middle"}}},
         "triggers.k.initial_offset: must be 'earliest' or 'latest' (got 'middle')"),
        ({"name": "ok", "triggers": {"k": {"kind": "kafka", "topics": ["a"],
                                           "heartbeat_interval_ms": 20000}}},
         "must be below session_timeout_ms"),
        ({"name": "ok", "triggers": {"web": {"kind": "http", "prot": 1}}},
         "triggers.web.prot: unknown field (allowed: kind, port, host"),
        ({"name": "ok", "replicas": {"min": 3, "max": 2}}, "max (2) must be at least min (3)"),
        ({"name": "ok", "resources": {"memory": "lots"}}, "resources.memory"),
        ({"name": "ok", "env": {"1BAD": "x"}}, "env.1BAD"),
        ({"name": "ok", "source": {"filename": "../evil.py", "code": "eA=="}},
         "source.filename: must be a Python file name"),
        ({"name": "ok", "source": {"filename": "a.py", "code": "***"}},
         "source.code: must be base64-encoded source code"),
        ({}, "name: Field required"),
    ],
)
def test_invalid_specs_name_the_field(data, expected):
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert expected in str(info.value)


def test_prefix_is_prepended_to_field_paths():
    with pytest.raises(SpecError, match=r"^spec\.workers"):
        parse_spec({"name": "ok", "workers": 0}, prefix="spec.")


def test_non_mapping_is_refused():
    with pytest.raises(SpecError, match="must be a mapping, got list"):
        parse_spec([1, 2])


def test_only_one_http_trigger():
    with pytest.raises(SpecError, match="at most one http trigger"):
        parse_spec({"name": "x", "triggers": {"a": {"kind": "http"}, "b": {"kind": "http"}}})


def test_http_trigger_property_and_handler_parts():
    spec = parse_spec({"name": "x", "handler": "pkg.mod:run",
                       "triggers": {"web": {"kind": "http", "port": 8081}}})
    assert spec.http_trigger == HttpTrigger(port=8081)
    assert (spec.handler_module, spec.handler_function) == ("pkg.mod", "run")


def test_source_round_trips_bytes():
    source = Source.from_bytes("main.py", b"def handler(c, e):\n    return 1\n")
    assert source.text() == b"def handler(c, e):\n    return 1\n"


def test_with_changes_validates_again():
    spec = parse_spec({"name": "x"})
    assert spec.with_changes(workers=4).workers == 4
    with pytest.raises(SpecError, match="workers"):
        spec.with_changes(workers=-1)


def test_json_round_trip_is_lossless():
    spec = parse_spec({"name": "x", "env": {"A": "1"}, "resources": {"gpu": 1, "memory": "2Gi"},
                       "triggers": {"web": {"kind": "http", "port": 9000}}})
    assert FunctionSpec.model_validate(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize(("spec", "message"), [
    ({"kind": "serving"}, "serving: a serving function names its model and tensors"),
    ({"kind": "serving", "serving": {"model": "Fraud!", "inputs": [{"name": "x", "dims": [4]}],
                                     "outputs": [{"name": "y", "dims": [1]}]}},
     "serving.model: must be a registry model: NAME, NAME:VERSION or NAME@ALIAS"),
    ({"kind": "serving", "serving": {"model": "fraud", "inputs": [{"name": "x", "dims": [0]}],
                                     "outputs": [{"name": "y", "dims": [1]}]}},
     "serving.inputs.0.dims: a dimension is a positive size or -1"),
    ({"kind": "serving", "serving": {"model": "fraud", "inputs": [{"name": "x", "dims": [4],
                                                                   "datatype": "FLOAT"}],
                                     "outputs": [{"name": "y", "dims": [1]}]}},
     "serving.inputs.0.datatype: must be 'BOOL'"),
    ({"serving": {"model": "fraud", "inputs": [{"name": "x", "dims": [4]}],
                  "outputs": [{"name": "y", "dims": [1]}]}},
     "serving: only a serving function (kind: serving) serves a model"),
    ({"kind": "serving", "triggers": {"k": {"kind": "cron", "interval": "1m"}},
      "serving": {"model": "fraud", "inputs": [{"name": "x", "dims": [4]}],
                  "outputs": [{"name": "y", "dims": [1]}]}},
     "triggers.k: a serving function answers V2 requests on its HTTP trigger and scores Kafka "
     "messages; a cron trigger has nothing to score"),
])
def test_serving_spec_errors_name_the_field(spec, message):
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "f", **spec})
    assert message in str(info.value)
