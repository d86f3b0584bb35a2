"""Nuclio function.yaml in and out: what nuctl, the dashboard and nuclio-jupyter write."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from sluice.errors import SpecError
from sluice.nuclio_config import from_nuclio, parse_duration, to_nuclio
from sluice.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]


def nuclio_function(**spec: object) -> dict[str, object]:
    return {"apiVersion": "nuclio.io/v1beta1", "kind": "NuclioFunction",
            "metadata": {"name": "fn"}, "spec": {"handler": "main:handler", **spec}}


def test_example_function_yaml_becomes_a_valid_spec():
    config = yaml.safe_load((ROOT / "examples/nuclio/function.yaml").read_text())
    spec = parse_spec(from_nuclio(config))
    assert spec.name == "risk" and spec.handler == "main:handler"
    assert spec.env == {"THRESHOLD": "1000"}
    assert spec.resources.cpu == 0.5 and spec.resources.memory == "256Mi"
    assert (spec.replicas.min, spec.replicas.max) == (1, 2)
    assert spec.timeout == 10.0
    assert spec.workers == 2
    assert spec.triggers["web"].max_request_body_size == 1048576
    assert spec.labels == {"team": "fraud"}


def test_nuclio_jupyter_shape_with_source_code_and_gpu():
    code = base64.b64encode(b"def handler(context, event):\n    return 'hi'\n").decode()
    config = {
        "apiVersion": "nuclio.io/v1", "kind": "Function",
        "metadata": {"name": "notebook", "namespace": "default-tenant", "annotations": {}},
        "spec": {"runtime": "python:3.9", "handler": "notebook:handler",
                 "env": [], "volumes": [],
                 "build": {"commands": [], "noBaseImagesPull": True,
                           "functionSourceCode": code},
                 "resources": {"limits": {"nvidia.com/gpu": 1}},
                 "triggers": {"h": {"kind": "http", "maxWorkers": 3}}},
    }
    spec = parse_spec(from_nuclio(config))
    assert spec.source is not None and spec.source.filename == "notebook.py"
    assert spec.source.text().startswith(b"def handler")
    assert spec.resources.gpu == 1
    assert spec.workers == 3  # the deprecated maxWorkers still counts


def test_fixed_replicas_sets_min_and_max():
    spec = parse_spec(from_nuclio(nuclio_function(replicas=3)))
    assert (spec.replicas.min, spec.replicas.max) == (3, 3)


def test_http_batching_attributes():
    config = nuclio_function(triggers={"h": {"kind": "http", "batch": {
        "mode": "enable", "batchSize": 8, "timeout": "50ms"}}})
    batching = parse_spec(from_nuclio(config)).triggers["h"].batching
    assert batching is not None and batching.batch_size == 8
    assert batching.timeout_ms == pytest.approx(50.0)


@pytest.mark.parametrize(("config", "message"), [
    ({"apiVersion": "v1", "metadata": {"name": "x"}}, "apiVersion: must be one of"),
    ({**nuclio_function(), "kind": "Deployment"}, "kind: must be NuclioFunction or Function"),
    ({"apiVersion": "nuclio.io/v1", "spec": {}}, "metadata.name: required"),
    (nuclio_function(handlr="x"), "spec.handlr: unknown Nuclio field (sluice understands:"),
    (nuclio_function(runtime="golang"), "spec.runtime: sluice runs Python functions"),
    (nuclio_function(eventTimeout="soon"), "spec.eventTimeout: must be a duration"),
    (nuclio_function(resources={"limits": {"cpu": "lots"}}), "spec.resources.limits.cpu"),
    (nuclio_function(resources={"limits": {"tpu": 1}}), "spec.resources.limits.tpu: unknown"),
    (nuclio_function(env=[{"name": "A", "valueFrom": {}}]), "spec.env[0].valueFrom"),
    (nuclio_function(triggers={"t": {"kind": "rabbit-mq"}}),
     "spec.triggers.t.kind: 'rabbit-mq' triggers are not supported yet"),
    (nuclio_function(triggers={"t": {"kind": "http", "attributes": {"prt": 1}}}),
     "spec.triggers.t.attributes.prt: unknown Nuclio field"),
    (nuclio_function(triggers={"t": {"kind": "http", "numWorkers": 0}}),
     "spec.triggers.t.numWorkers: must be a whole number >= 1"),
    (nuclio_function(build={"commands": ["pip install x", 1]}), "spec.build.commands[1]: must"),
])
def test_bad_nuclio_configs_name_the_field(config, message):
    with pytest.raises(SpecError) as info:
        from_nuclio(config)
    assert message in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), (15, 15.0)])
def test_go_durations(text, seconds):
    assert parse_duration(text, "x") == pytest.approx(seconds)


def test_round_trip_through_nuclio_keeps_the_spec():
    original = parse_spec({
        "name": "rt", "handler": "m:h", "env": {"A": "1"}, "workers": 4, "timeout": 12.5,
        "resources": {"cpu": 0.25, "memory": "1Gi", "gpu": 2},
        "replicas": {"min": 2, "max": 5}, "labels": {"tier": "gold"},
        "triggers": {"web": {"kind": "http", "port": 9001,
                             "batching": {"batch_size": 16, "timeout_ms": 5}}},
        "source": {"filename": "m.py", "code": base64.b64encode(b"x = 1\n").decode()},
    })
    rendered = to_nuclio(original.model_dump(mode="json", exclude_none=True))
    assert rendered["apiVersion"] == "nuclio.io/v1beta1" and rendered["kind"] == "NuclioFunction"
    assert rendered["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert rendered["spec"]["eventTimeout"] == "12.5s"
    back = parse_spec(from_nuclio(yaml.safe_load(yaml.safe_dump(rendered))))
    assert back == original


def test_kafka_cluster_trigger_with_nuclio_attribute_names():
    config = nuclio_function(triggers={"events": {
        "kind": "kafka-cluster", "numWorkers": 2, "explicitAckMode": "enable",
        "attributes": {
            "brokers": "127.0.0.1:9092", "topics": ["events"], "consumerGroup": "scorers",
            "initialOffset": "Latest", "sessionTimeout": "6s", "heartbeatInterval": "1s",
            "rebalanceTimeout": "10s", "workerAllocationMode": "pool", "ackWindowSize": 10,
            "sasl": {"enable": True, "user": "u", "password": "p", "mechanism": "PLAIN"},
            "output": "scores", "retries": 5,  # sluice's own names beside Nuclio's
        }}})
    spec = parse_spec(from_nuclio(config))
    kafka = spec.kafka_triggers["events"]
    assert kafka.bootstrap_servers == ["127.0.0.1:9092"] and kafka.topics == ["events"]
    assert kafka.group == "scorers" and kafka.initial_offset == "latest"
    assert (kafka.session_timeout_ms, kafka.heartbeat_interval_ms,
            kafka.max_poll_interval_ms) == (6000, 1000, 10000)
    assert kafka.security["sasl_plain_username"] == "u"
    assert kafka.security["security_protocol"] == "SASL_PLAINTEXT"
    assert kafka.explicit_ack and kafka.output == "scores" and kafka.retries == 5
    assert spec.workers == 2


def test_kafka_trigger_round_trips_through_nuclio():
    original = parse_spec({"name": "k", "triggers": {"t": {
        "kind": "kafka", "topics": ["a", "b"], "group": "g", "output": "out",
        "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "batch": True,
        "max_batch_size": 50, "dead_letter": "dlq"}}})
    rendered = to_nuclio(original.model_dump(mode="json", exclude_none=True))
    trigger = rendered["spec"]["triggers"]["t"]
    assert trigger["kind"] == "kafka-cluster"
    assert trigger["attributes"]["consumerGroup"] == "g"
    assert trigger["attributes"]["sessionTimeout"] == "6000ms"
    assert parse_spec(from_nuclio(yaml.safe_load(yaml.safe_dump(rendered)))) == original


def test_nuclio_cron_trigger_with_event_and_round_trip():
    config = nuclio_function(triggers={"nightly": {"kind": "cron", "attributes": {
        "schedule": "0 2 * * *", "concurrencyPolicy": "Forbid",
        "event": {"body": "{\"retrain\": true}", "headers": {"X-Reason": "nightly"}}}}})
    spec = parse_spec(from_nuclio(config))
    cron = spec.cron_triggers["nightly"]
    assert cron.schedule == "0 2 * * *" and cron.concurrency_policy == "forbid"
    assert cron.event.headers == {"X-Reason": "nightly"}
    rendered = to_nuclio(spec.model_dump(mode="json", exclude_none=True))
    assert rendered["spec"]["triggers"]["nightly"]["attributes"]["concurrencyPolicy"] == "Forbid"
    assert parse_spec(from_nuclio(yaml.safe_load(yaml.safe_dump(rendered)))) == spec


def test_nuclio_cron_interval():
    config = nuclio_function(triggers={"tick": {"kind": "cron",
                                                "attributes": {"interval": "30s"}}})
    assert parse_spec(from_nuclio(config)).cron_triggers["tick"].interval == "30s"


@pytest.mark.parametrize(("fields", "expected"), [
    ({"minReplicas": 2}, (2, None)),   # Nuclio copies the one given to the other; sluice's
                                       # unset max already means "the same as min"
    ({"maxReplicas": 3}, (3, 3)),
    ({"minReplicas": 1, "maxReplicas": 4}, (1, 4)),
])
def test_replica_rules_follow_nuclio(fields, expected):
    spec = parse_spec(from_nuclio(nuclio_function(**fields)))
    assert (spec.replicas.min, spec.replicas.max) == expected


def test_hyphenated_handler_module_from_nuclio_jupyter():
    spec = parse_spec(from_nuclio(nuclio_function(handler="scorer-nuclio:handler")))
    assert spec.handler_module == "scorer-nuclio"


def test_batching_without_timeout_takes_nuclios_default():
    config = nuclio_function(triggers={"h": {"kind": "http", "batch": {"mode": "enable"}}})
    batching = parse_spec(from_nuclio(config)).triggers["h"].batching
    assert batching is not None and batching.timeout_ms == 1000.0 and batching.batch_size == 10


def test_a_job_survives_the_round_trip_through_a_nuclio_function_yaml():
    job = parse_spec({"name": "report", "kind": "job", "handler": "report:handler",
                      "params": {"days": 7}, "retries": 2, "retry_backoff": 5,
                      "triggers": {"nightly": {"kind": "cron", "schedule": "0 2 * * *",
                                               "params": {"days": 1}}}})
    config = to_nuclio(job.model_dump(mode="json", exclude_none=True))
    assert config["metadata"]["annotations"]["sluice.io/kind"] == "job"  # Nuclio has no jobs
    back = parse_spec(from_nuclio(config))
    assert (back.kind, back.params, back.retries, back.retry_backoff) == (
        "job", {"days": 7}, 2, 5.0)
    assert back.cron_triggers["nightly"].params == {"days": 1}
    assert back.timeout == job.timeout == 3600.0


def test_autoscaler_settings_survive_the_round_trip_beside_min_and_max_replicas():
    spec = parse_spec({"name": "f", "handler": "h:handler",
                       "replicas": {"min": 1, "max": 4, "target": 0.5, "scale_down_after": 10}})
    config = to_nuclio(spec.model_dump(mode="json", exclude_none=True))
    assert (config["spec"]["minReplicas"], config["spec"]["maxReplicas"]) == (1, 4)
    # Nuclio scales on its own metrics: sluice's settings, and only those not at their
    # defaults, travel as an annotation
    assert json.loads(config["metadata"]["annotations"]["sluice.io/autoscale"]) == {
        "target": 0.5, "scale_down_after": 10.0}
    assert parse_spec(from_nuclio(config)).replicas == spec.replicas
    plain = to_nuclio(parse_spec({"name": "f", "handler": "h:handler"}).model_dump(
        mode="json", exclude_none=True))
    assert "annotations" not in plain["metadata"]
    config["metadata"]["annotations"]["sluice.io/autoscale"] = '{"target": 2}'
    with pytest.raises(SpecError, match="target"):
        parse_spec(from_nuclio(config))


def test_unknown_sluice_annotations_are_named_and_others_ignored():
    config = nuclio_function()
    config["metadata"]["annotations"] = {"sluice.io/knd": "job", "example.com/owner": "me"}
    with pytest.raises(SpecError, match="metadata.annotations.sluice.io/knd: unknown sluice "
                                        "annotation"):
        from_nuclio(config)
    del config["metadata"]["annotations"]["sluice.io/knd"]
    assert parse_spec(from_nuclio(config)).kind == "http"
