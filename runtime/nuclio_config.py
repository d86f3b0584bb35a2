"""Nuclio's function.yaml, both ways: read a NuclioFunction into a sluice spec, render one back.

Accepted: ``apiVersion: nuclio.io/v1beta1`` / ``kind: NuclioFunction`` (what nuctl and the
dashboard use) and ``apiVersion: nuclio.io/v1`` / ``kind: Function`` (what nuclio-jupyter writes).
Fields that only matter to Nuclio's image builder or to Kubernetes (image, volumes, node
selection...) are accepted and have no local effect; fields sluice cannot honour yet are refused
with a message naming them, never silently dropped. ``spec.build.commands`` (pip installs) run
into an environment of the function's own (sluice.platform.build_env). This runs in the CLI:
plain dicts only; the platform validates the result as a FunctionSpec.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from .errors import SpecError

API_VERSIONS = {"nuclio.io/v1beta1": "NuclioFunction", "nuclio.io/v1": "Function"}

_METADATA_FIELDS = {"name", "namespace", "labels", "annotations", "resourceVersion", "uid",
                    "creationTimestamp", "generation"}
# Nuclio fields with no local meaning (the image build, Kubernetes placement, dashboard state)
_SPEC_IGNORED = {
    "image", "imageHash", "imagePullPolicy", "imagePullSecrets", "volumes", "platform",
    "serviceType", "securityContext", "loggerSinks", "targetCPU", "nodeSelector", "nodeName",
    "affinity", "tolerations", "priorityClassName", "preemptionMode", "serviceAccount",
    "runRegistry", "readinessTimeoutSeconds", "waitReadinessTimeoutBeforeFailure", "alias",
    "version", "avatar", "dataBindings", "runtimeAttributes", "podSecurityContext",
    "disableDefaultHTTPTrigger", "publish", "customScalingMetricSpecs", "scaleToZero",
    "autoScaleMetrics", "sidecars", "initContainers",
}
_SPEC_FIELDS = {"description", "handler", "runtime", "env", "resources", "minReplicas",
                "maxReplicas", "replicas", "triggers", "eventTimeout", "build", "labels",
                "timeoutSeconds"} | _SPEC_IGNORED
_BUILD_IGNORED = {"noBaseImagesPull", "baseImage", "path", "registry", "image", "offline",
                  "noCache", "noCleanup", "onbuildImage", "dependencies", "timestamp",
                  "codeEntryType", "codeEntryAttributes", "mode", "builderKind", "flags",
                  "functionConfigPath", "runtimeAttributes", "Directives", "directives",
                  "addedObjectPaths"}
_TRIGGER_FIELDS = {"kind", "name", "class", "url", "numWorkers", "maxWorkers", "attributes",
                   "annotations", "workerAvailabilityTimeoutMilliseconds", "disabled",
                   "workerAllocatorName", "explicitAckMode", "batch", "mode", "username",
                   "password", "secret", "workerTerminationTimeout"}
_HTTP_ATTRIBUTES = {"port", "maxRequestBodySize", "ingresses", "serviceType", "readBufferSize",
                    "reduceMemoryUsage", "cors", "host"}
_KAFKA_NUCLIO = {  # Nuclio's kafka-cluster attribute -> sluice's KafkaTrigger field
    "brokers": "bootstrap_servers", "topics": "topics", "consumerGroup": "group",
    "initialOffset": "initial_offset", "sessionTimeout": "session_timeout_ms",
    "heartbeatInterval": "heartbeat_interval_ms", "rebalanceTimeout": "max_poll_interval_ms",
}
_KAFKA_NO_EFFECT = {"workerAllocationMode", "ackWindowSize", "maxWaitHandlerDuringRebalance",
                    "fetchMin", "fetchDefault", "fetchMax", "channelBufferSize", "maxWaitTime",
                    "retryBackoff", "maxProcessingTime", "logLevel", "caCert", "accessKey",
                    "accessCertificate", "tls", "version", "partitions"}
_KAFKA_SLUICE = {"topics", "group", "bootstrap_servers", "initial_offset", "session_timeout_ms",
                 "heartbeat_interval_ms", "max_poll_interval_ms", "max_batch_size", "max_wait_ms",
                 "batch", "content_type", "output", "dead_letter", "retries", "retry_backoff_ms",
                 "explicit_ack", "security"}
_CRON_ATTRIBUTES = {"schedule", "interval", "event", "timezone", "concurrencyPolicy",
                    "jobBackoffLimit", "startingDeadlineSeconds",
                    # sluice's own names beside Nuclio's
                    "concurrency_policy", "catch_up", "starting_deadline", "params"}
_SUPPORTED_TRIGGERS = ("http", "kafka-cluster", "kafka", "cron")


def _fail(where: str, message: str) -> SpecError:
    return SpecError(f"{where}: {message}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, f"must be a mapping, got {type(value).__name__}")
    return value


def _check_fields(data: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise _fail(f"{where}.{key}", "unknown Nuclio field (sluice understands: "
                        + ", ".join(sorted(allowed - _SPEC_IGNORED - _BUILD_IGNORED)) + ")")


def parse_duration(text: Any, where: str) -> float:
    """Go durations as Nuclio writes them: ``30s``, ``1m30s``, ``500ms``, ``2h``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text).strip():
        raise _fail(where, f"must be a duration such as '30s', '1m' or '500ms' (got {text!r})")
    return sum(float(n) * units[u] for n, u in parts)


def parse_cpu(value: Any, where: str) -> float:
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", text)
    if not match:
        raise _fail(where, f"must be cores like '2', '0.5' or '500m' (got {value!r})")
    cores = float(match.group(1))
    return cores / 1000 if match.group(2) else cores


# what Nuclio has no field for (a job's kind, params, retries) travels as annotations
ANNOTATION = "sluice.io/"
_ANNOTATED = ("kind", "params", "retries", "retry_backoff", "termination_grace", "version",
              "autoscale")
_DEFAULTS: dict[str, Any] = {"kind": "http", "params": {}, "retries": 0, "retry_backoff": 1.0,
                             "termination_grace": 10.0, "autoscale": {}}
# sluice's autoscaler settings (spec.replicas beside min and max): Nuclio scales on its own
# metrics, so they travel in the sluice.io/autoscale annotation
_AUTOSCALE = ("target", "target_inflight", "scale_up_after", "scale_down_after")


def _sluice_annotations(annotations: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in annotations.items():
        if not str(key).startswith(ANNOTATION):
            continue  # other tools' annotations: not ours to read
        field = str(key)[len(ANNOTATION):].replace("-", "_")
        if field not in _ANNOTATED:
            known = ", ".join(ANNOTATION + name.replace("_", "-") for name in _ANNOTATED)
            raise _fail(f"metadata.annotations.{key}",
                        f"unknown sluice annotation (sluice understands: {known})")
        try:
            out[field] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            out[field] = value  # a bare word, e.g. sluice.io/kind: job
    return out


def from_nuclio(config: dict[str, Any], source: str = "function.yaml") -> dict[str, Any]:
    """A Nuclio function config -> a sluice spec dict (validated later as a FunctionSpec)."""
    api_version = config.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise _fail("apiVersion", f"must be one of {', '.join(API_VERSIONS)} (got {api_version!r})")
    kind = config.get("kind", API_VERSIONS[api_version])
    if kind not in API_VERSIONS.values():
        raise _fail("kind", f"must be NuclioFunction or Function (got {kind!r})")
    _check_fields(config, {"apiVersion", "kind", "metadata", "spec", "status"}, source)
    metadata = _mapping(config.get("metadata"), "metadata")
    _check_fields(metadata, _METADATA_FIELDS, "metadata")
    spec = _mapping(config.get("spec"), "spec")
    _check_fields(spec, _SPEC_FIELDS, "spec")

    out: dict[str, Any] = {}
    if "name" not in metadata:
        raise _fail("metadata.name", "required: the function's name")
    out["name"] = metadata["name"]
    out.update(_sluice_annotations(_mapping(metadata.get("annotations"),
                                            "metadata.annotations")))
    labels = {**_mapping(metadata.get("labels"), "metadata.labels"),
              **_mapping(spec.get("labels"), "spec.labels")}
    if labels:
        out["labels"] = {str(k): str(v) for k, v in labels.items()}
    if spec.get("description"):
        out["description"] = str(spec["description"])
    if spec.get("handler"):
        out["handler"] = str(spec["handler"])
    runtime = str(spec.get("runtime") or "python")
    if not runtime.startswith("python"):
        raise _fail("spec.runtime", f"sluice runs Python functions (got {runtime!r})")
    out["runtime"] = runtime
    env = _env(spec.get("env"))
    if env:
        out["env"] = env
    resources = _resources(_mapping(spec.get("resources"), "spec.resources"))
    if resources:
        out["resources"] = resources
    replicas = {**_replicas(spec), **_mapping(out.pop("autoscale", None),
                                              f"metadata.annotations.{ANNOTATION}autoscale")}
    if replicas:
        out["replicas"] = replicas
    if "eventTimeout" in spec and spec["eventTimeout"] not in ("", None):
        out["timeout"] = parse_duration(spec["eventTimeout"], "spec.eventTimeout")
    triggers, workers = _triggers(_mapping(spec.get("triggers"), "spec.triggers"))
    if triggers:
        out["triggers"] = triggers
    if workers:
        out["workers"] = workers
    build = _mapping(spec.get("build"), "spec.build")
    _check_fields(build, _BUILD_IGNORED | {"functionSourceCode", "commands",
                                           "buildTimeoutSeconds"}, "spec.build")
    commands = _commands(build.get("commands"))
    if commands:  # run into the function's own environment (sluice.platform.build_env)
        out["build"] = {"commands": commands}
        if build.get("buildTimeoutSeconds"):
            out["build"]["timeout"] = build["buildTimeoutSeconds"]
    code = build.get("functionSourceCode")
    if code:
        module = str(out.get("handler", "main:handler")).split(":")[0]
        out["source"] = {"filename": f"{module.split('.')[-1]}.py", "code": _base64(code)}
    return out


def _commands(value: Any) -> list[str]:
    """Nuclio's commands list; nuclio-jupyter's ``%nuclio config spec.build.commands = "..."``
    sets a single string, which is one command."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _fail("spec.build.commands", "must be a list of shell commands, e.g. "
                    "['pip install pandas']")
    for i, command in enumerate(value):
        if not isinstance(command, str):
            raise _fail(f"spec.build.commands[{i}]", "must be a shell command line (a string), "
                        f"got {type(command).__name__}")
    return list(value)


def _base64(code: Any) -> str:
    text = str(code)
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        raise _fail("spec.build.functionSourceCode", "must be base64-encoded source") from None
    return text


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise _fail("spec.env", "must be a list of {name, value}")
    env: dict[str, str] = {}
    for i, item in enumerate(value):
        where = f"spec.env[{i}]"
        item = _mapping(item, where)
        if "valueFrom" in item:
            raise _fail(f"{where}.valueFrom", "secret and config-map references are not "
                        "supported yet; give a value")
        if "name" not in item:
            raise _fail(f"{where}.name", "required")
        env[str(item["name"])] = "" if item.get("value") is None else str(item["value"])
    return env


def _resources(resources: dict[str, Any]) -> dict[str, Any]:
    _check_fields(resources, {"limits", "requests"}, "spec.resources")
    out: dict[str, Any] = {}
    for section in ("requests", "limits"):  # limits win
        values = _mapping(resources.get(section), f"spec.resources.{section}")
        for key, value in values.items():
            where = f"spec.resources.{section}.{key}"
            if key == "cpu":
                out["cpu"] = parse_cpu(value, where)
            elif key == "memory":
                out["memory"] = str(value)
            elif key == "nvidia.com/gpu":
                if not str(value).isdigit():
                    raise _fail(where, f"must be a whole number of GPUs (got {value!r})")
                out["gpu"] = int(value)
            elif key != "ephemeral-storage":
                raise _fail(where, "unknown resource (allowed: cpu, memory, nvidia.com/gpu)")
    return out


def _replicas(spec: dict[str, Any]) -> dict[str, Any]:
    """Nuclio's rules: a fixed ``replicas`` sets both; one of min/max alone copies to the other
    (a sluice ``max`` left unset already means "the same as min")."""
    out: dict[str, Any] = {}
    if spec.get("replicas") is not None:
        out["min"] = out["max"] = spec["replicas"]
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    if low is not None:
        out["min"] = low
    if high is not None:
        out["max"] = high
    if high is not None and low is None and "min" not in out:
        out["min"] = high
    return out


def _triggers(triggers: dict[str, Any]) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    workers = 0
    for name, raw in triggers.items():
        where = f"spec.triggers.{name}"
        trigger = _mapping(raw, where)
        _check_fields(trigger, _TRIGGER_FIELDS, where)
        kind = trigger.get("kind")
        if kind not in _SUPPORTED_TRIGGERS:
            raise _fail(f"{where}.kind", f"{kind!r} triggers are not supported yet "
                        f"(supported: {', '.join(_SUPPORTED_TRIGGERS)})")
        count = trigger.get("numWorkers", trigger.get("maxWorkers"))
        if count is not None:
            if not isinstance(count, int) or count < 1:
                raise _fail(f"{where}.numWorkers", f"must be a whole number >= 1 (got {count!r})")
            workers = max(workers, count)
        if kind in ("kafka-cluster", "kafka"):
            out[name] = _kafka_trigger(trigger, where)
            continue
        if kind == "cron":
            out[name] = _cron_trigger(trigger, where)
            continue
        attributes = _mapping(trigger.get("attributes"), f"{where}.attributes")
        _check_fields(attributes, _HTTP_ATTRIBUTES, f"{where}.attributes")
        http: dict[str, Any] = {"kind": "http"}
        if attributes.get("port"):
            http["port"] = attributes["port"]
        if attributes.get("maxRequestBodySize"):
            http["max_request_body_size"] = attributes["maxRequestBodySize"]
        batch = _mapping(trigger.get("batch"), f"{where}.batch")
        if batch.get("mode") == "enable":
            http["batching"] = {"enabled": True, "timeout_ms": 1000.0}  # Nuclio's default: 1s
            if batch.get("batchSize"):
                http["batching"]["batch_size"] = batch["batchSize"]
            if batch.get("timeout"):
                seconds = parse_duration(batch["timeout"], f"{where}.batch.timeout")
                http["batching"]["timeout_ms"] = seconds * 1000
        out[name] = http
    return out, workers


def _kafka_trigger(trigger: dict[str, Any], where: str) -> dict[str, Any]:
    attributes = _mapping(trigger.get("attributes"), f"{where}.attributes")
    _check_fields(attributes, set(_KAFKA_NUCLIO) | _KAFKA_NO_EFFECT | _KAFKA_SLUICE | {"sasl"},
                  f"{where}.attributes")
    kafka: dict[str, Any] = {"kind": "kafka"}
    for key, value in attributes.items():
        field = _KAFKA_NUCLIO.get(key, key if key in _KAFKA_SLUICE else None)
        if field is None:
            continue
        if field in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms") and (
            isinstance(value, str)
        ):
            value = int(parse_duration(value, f"{where}.attributes.{key}") * 1000)
        if field in ("topics", "bootstrap_servers") and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if field == "initial_offset" and isinstance(value, str):
            value = value.lower()
        kafka[field] = value
    sasl = _mapping(attributes.get("sasl"), f"{where}.attributes.sasl")
    if sasl.get("enable"):
        kafka["security"] = {
            **kafka.get("security", {}),
            "security_protocol": "SASL_SSL" if attributes.get("tls") else "SASL_PLAINTEXT",
            "sasl_mechanism": str(sasl.get("mechanism") or "PLAIN"),
            "sasl_plain_username": str(sasl.get("user", "")),
            "sasl_plain_password": str(sasl.get("password", "")),
        }
    if str(trigger.get("explicitAckMode", "disable")) in ("enable", "explicitOnly"):
        kafka["explicit_ack"] = True
    batch = _mapping(trigger.get("batch"), f"{where}.batch")
    if batch.get("mode") == "enable":
        kafka["batch"] = True
        if batch.get("batchSize"):
            kafka["max_batch_size"] = batch["batchSize"]
        if batch.get("timeout"):
            kafka["max_wait_ms"] = int(parse_duration(batch["timeout"], f"{where}.batch.timeout")
                                       * 1000)
    return kafka


def _cron_trigger(trigger: dict[str, Any], where: str) -> dict[str, Any]:
    attributes = _mapping(trigger.get("attributes"), f"{where}.attributes")
    _check_fields(attributes, _CRON_ATTRIBUTES, f"{where}.attributes")
    cron: dict[str, Any] = {"kind": "cron"}
    for key in ("schedule", "interval", "timezone", "catch_up", "starting_deadline", "params"):
        if attributes.get(key) is not None:
            cron[key] = attributes[key]
    policy = attributes.get("concurrencyPolicy", attributes.get("concurrency_policy"))
    if policy:
        cron["concurrency_policy"] = str(policy).lower()
    if attributes.get("startingDeadlineSeconds") is not None:
        cron["starting_deadline"] = attributes["startingDeadlineSeconds"]
    event = _mapping(attributes.get("event"), f"{where}.attributes.event")
    _check_fields(event, {"body", "headers", "method", "path"}, f"{where}.attributes.event")
    if event:
        cron["event"] = {k: v for k, v in event.items() if v is not None}
    return cron


def _cron_to_nuclio(trigger: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key, value in trigger.items():
        if key == "kind" or value is None:
            continue
        if key == "concurrency_policy":
            attributes["concurrencyPolicy"] = str(value).capitalize()
        elif key == "starting_deadline":
            attributes["startingDeadlineSeconds"] = value
        else:
            attributes[key] = value
    return {"kind": "cron", "attributes": attributes}


def _kafka_to_nuclio(trigger: dict[str, Any], workers: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    reverse = {v: k for k, v in _KAFKA_NUCLIO.items()}
    for field, value in trigger.items():
        if field in ("kind", "batch", "explicit_ack"):
            continue
        if field in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms"):
            value = f"{value}ms"
        attributes[reverse.get(field, field)] = value
    rendered: dict[str, Any] = {"kind": "kafka-cluster", "numWorkers": workers,
                                "attributes": attributes}
    if trigger.get("explicit_ack"):
        rendered["explicitAckMode"] = "enable"
    if trigger.get("batch"):
        rendered["batch"] = {"mode": "enable"}
    return rendered


def to_nuclio(spec: dict[str, Any], api_version: str = "nuclio.io/v1beta1") -> dict[str, Any]:
    """A sluice spec dict (``FunctionSpec.model_dump(mode='json')``) -> a Nuclio function config."""
    nspec: dict[str, Any] = {
        "handler": spec.get("handler", "main:handler"),
        "runtime": spec.get("runtime", "python:3.11"),
    }
    if spec.get("description"):
        nspec["description"] = spec["description"]
    if spec.get("env"):
        nspec["env"] = [{"name": k, "value": v} for k, v in spec["env"].items()]
    resources = spec.get("resources") or {}
    limits: dict[str, Any] = {}
    if resources.get("cpu"):
        limits["cpu"] = f"{int(resources['cpu'] * 1000)}m"
    if resources.get("memory"):
        limits["memory"] = resources["memory"]
    if resources.get("gpu"):
        limits["nvidia.com/gpu"] = resources["gpu"]
    if limits:
        nspec["resources"] = {"limits": limits}
    replicas = spec.get("replicas") or {}
    nspec["minReplicas"] = replicas.get("min", 1)
    if replicas.get("max") is not None:
        nspec["maxReplicas"] = replicas["max"]
    nspec["eventTimeout"] = f"{spec.get('timeout', 60.0):g}s"
    triggers: dict[str, Any] = {}
    for name, trigger in (spec.get("triggers") or {}).items():
        if trigger["kind"] in ("kafka", "kafka-cluster"):
            triggers[name] = _kafka_to_nuclio(trigger, spec.get("workers", 1))
            continue
        if trigger["kind"] == "cron":
            triggers[name] = _cron_to_nuclio(trigger)
            continue
        attributes: dict[str, Any] = {}
        if trigger.get("port"):
            attributes["port"] = trigger["port"]
        if trigger.get("max_request_body_size"):
            attributes["maxRequestBodySize"] = trigger["max_request_body_size"]
        rendered: dict[str, Any] = {"kind": trigger["kind"], "numWorkers": spec.get("workers", 1)}
        if attributes:
            rendered["attributes"] = attributes
        batching = trigger.get("batching")
        if batching and batching.get("enabled", True):
            rendered["batch"] = {"mode": "enable", "batchSize": batching.get("batch_size", 10),
                                 "timeout": f"{batching.get('timeout_ms', 10.0):g}ms"}
        triggers[name] = rendered
    if triggers:
        nspec["triggers"] = triggers
    build: dict[str, Any] = {}
    if spec.get("source"):
        build["functionSourceCode"] = spec["source"]["code"]
    commands = (spec.get("build") or {}).get("commands")
    if commands:
        build["commands"] = list(commands)
        timeout = float(spec["build"].get("timeout", 600.0))
        build["buildTimeoutSeconds"] = int(timeout) if timeout.is_integer() else timeout
    if build:
        nspec["build"] = build
    metadata: dict[str, Any] = {"name": spec["name"]}
    if spec.get("labels"):
        metadata["labels"] = spec["labels"]
    from .spec import Replicas  # (not at the top: spec imports nothing of this module's)

    defaults = Replicas().model_dump()
    spec = {**spec, "autoscale": {key: replicas[key] for key in _AUTOSCALE
                                  if replicas.get(key, defaults[key]) != defaults[key]}}
    annotations = {f"{ANNOTATION}{key.replace('_', '-')}":
                   spec[key] if isinstance(spec[key], str) else json.dumps(spec[key])
                   for key in _ANNOTATED if key in spec and spec[key] != _DEFAULTS.get(key)}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": api_version, "kind": API_VERSIONS[api_version], "metadata": metadata,
            "spec": nspec}
