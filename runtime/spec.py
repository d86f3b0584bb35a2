"""FunctionSpec: what a function is, validated once at the boundary.

A spec is immutable and rejects unknown fields. ``parse_spec`` turns pydantic's errors into
one :class:`~sluice.errors.SpecError` whose message names each bad field (``triggers.web.port``)
and what is allowed there, so the CLI and the API can show it as it is.
"""

from __future__ import annotations

import base64
import binascii
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import SpecError
from .settings import KAFKA_SECURITY_KEYS

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# module names may hold '-': nuclio-jupyter exports handlers like 'scorer-nuclio:handler'
HANDLER_PATTERN = r"^[A-Za-z_][\w.-]*:[A-Za-z_]\w*$"
SOURCE_FILENAME_PATTERN = r"^[A-Za-z_][\w.-]*\.(py|ipynb)$"  # a notebook: a job
MAX_SOURCE_BYTES = 8 * 1024 * 1024
MAX_BUILD_COMMANDS = 64
MAX_COMMAND_CHARS = 8192


class Kind(StrEnum):
    """What a function does with its events."""

    HTTP = "http"  # request/response handler
    JOB = "job"  # run to completion
    SERVING = "serving"  # model server (V2 inference protocol)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpBatching(_Frozen):
    """Nuclio's HTTP batching mode: the handler receives a list of events."""

    enabled: bool = True
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 10
    timeout_ms: Annotated[float, Field(gt=0, le=60_000)] = 10.0


class HttpTrigger(_Frozen):
    """The function's own HTTP port, shared by all its workers."""

    kind: Literal["http"] = "http"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    host: str = "127.0.0.1"
    max_request_body_size: Annotated[int, Field(ge=1)] = 4 * 1024 * 1024
    # requests admitted to one worker and not yet answered; past it: 503 + Retry-After
    max_inflight: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    batching: HttpBatching | None = None


class KafkaTrigger(_Frozen):
    """Consume topics through a consumer group (all the function's workers join it)."""

    kind: Literal["kafka", "kafka-cluster"] = "kafka"
    topics: Annotated[list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]],
                      Field(min_length=1)]
    group: Annotated[str, Field(min_length=1, max_length=255)] | None = None  # default: the name
    bootstrap_servers: list[str] | None = None  # default: the platform's broker
    initial_offset: Literal["earliest", "latest"] = "earliest"
    # small session/heartbeat values make a group form in ~3 s instead of ~20 s (ENV.md);
    # a batch must be handled within max_poll_interval_ms or the worker leaves the group
    session_timeout_ms: Annotated[int, Field(ge=1000, le=3_600_000)] = 6_000
    heartbeat_interval_ms: Annotated[int, Field(ge=100, le=600_000)] = 1_000
    max_poll_interval_ms: Annotated[int, Field(ge=1000, le=86_400_000)] = 60_000
    max_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 100
    max_wait_ms: Annotated[int, Field(ge=0, le=60_000)] = 100
    batch: bool = False  # handler(context, events) receives a list
    content_type: str | None = None  # "application/json": bodies are decoded (bad JSON: DLQ)
    output: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")] | None = None
    dead_letter: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")] | None = None
    retries: Annotated[int, Field(ge=0, le=100)] = 3
    retry_backoff_ms: Annotated[int, Field(ge=0, le=600_000)] = 100
    explicit_ack: bool = False
    security: dict[Literal[KAFKA_SECURITY_KEYS], str | bool] = {}  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> KafkaTrigger:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                             f"session_timeout_ms ({self.session_timeout_ms})")
        return self


class CronEvent(_Frozen):
    """What a cron fire hands the handler (Nuclio's cron ``event``)."""

    body: Any = None
    headers: dict[str, str] = {}
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str = "/"


class CronTrigger(_Frozen):
    """Fired by the platform's scheduler: once per schedule, however many workers run."""

    kind: Literal["cron"] = "cron"
    schedule: str | None = None  # 5-field cron, '@hourly', or '@every 30s'
    interval: str | None = None  # '30s', '1m30s' (Nuclio's interval attribute)
    timezone: str = "UTC"
    # as a Kubernetes CronJob: run beside a previous fire still running (allow), skip this fire
    # (forbid), or cancel the previous run and start this one (replace: job functions only)
    concurrency_policy: Literal["allow", "forbid", "replace"] = "allow"
    catch_up: Literal["skip", "once"] = "skip"
    starting_deadline: Annotated[float, Field(gt=0)] | None = None  # seconds
    event: CronEvent = CronEvent()
    params: dict[str, Any] | None = None  # a job's run params (default: event.body if a mapping)

    @model_validator(mode="after")
    def _valid_schedule(self) -> CronTrigger:
        from .schedule import CronSchedule

        CronSchedule.parse(self.schedule, self.interval, self.timezone)  # ValueError names it
        return self


Trigger = Annotated[HttpTrigger | KafkaTrigger | CronTrigger, Field(discriminator="kind")]

V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                "INT64", "FP16", "FP32", "FP64", "BYTES")


class TensorSpec(_Frozen):
    """A model input or output: its V2 datatype and its shape after the batch axis (-1: any)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")]
    datatype: Literal[V2_DATATYPES] = "FP32"  # type: ignore[valid-type]
    dims: Annotated[list[Annotated[int, Field(ge=-1)]], Field(min_length=1)]

    @field_validator("dims")
    @classmethod
    def _no_zero(cls, dims: list[int]) -> list[int]:
        if 0 in dims:
            raise ValueError("a dimension is a positive size or -1 (any), e.g. [64]")
        return dims


class Serving(_Frozen):
    """What a serving function serves: a registry model over the Open Inference Protocol,
    through the adaptive batcher."""

    model: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?([:@][\w-]+)?$")]
    # the signature (shapes after the batch axis); unset: the one pushed with the model (or,
    # with triton_url, the one the Triton server reports)
    inputs: Annotated[list[TensorSpec], Field(min_length=1)] | None = None
    outputs: Annotated[list[TensorSpec], Field(min_length=1)] | None = None
    # torch: in process; triton: a local Triton server sluice starts (or triton_url's);
    # kserve: the handler's kserve.Model subclass. Unset: kserve when the function has handler
    # code, torch otherwise.
    backend: Literal["torch", "triton", "kserve"] | None = None
    triton_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+/?$")] | None = None
    max_batch: Annotated[int, Field(ge=1, le=65_536)] = 64
    latency_ms: Annotated[float, Field(gt=0, le=600_000)] = 50.0  # the latency objective
    # batches running at once (default 1; 4 with Triton, whose own batcher merges them)
    max_inflight: Annotated[int, Field(ge=1, le=64)] | None = None
    # how often to check whether the model reference (an alias) moved; 0: never
    reload_interval: Annotated[float, Field(ge=0, le=86_400)] = 5.0

    @model_validator(mode="after")
    def _remote_triton(self) -> Serving:
        if self.triton_url is None:
            return self
        if self.backend not in (None, "triton"):
            raise ValueError(f"serving.triton_url: a remote Triton server is the triton "
                             f"backend, not {self.backend}")
        if "@" in self.model:
            raise ValueError(f"serving.model: {self.model!r} names a registry alias, but the "
                             "model lives on the Triton server at triton_url: give its name "
                             "there, with an optional :version")
        return self


class Resources(_Frozen):
    """What one replica needs; cpu in cores, memory as a Kubernetes quantity, gpu as a count."""

    cpu: Annotated[float, Field(gt=0)] | None = None
    memory: Annotated[str, Field(pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")] | None = None
    gpu: Annotated[int, Field(ge=0)] = 0


class Replicas(_Frozen):
    """How many replicas run; ``max`` bounds scaling (Nuclio's minReplicas/maxReplicas); unset,
    it is the same as ``min``.

    With ``max`` above ``min``, an http or serving function autoscales between them on its
    workers' load (:mod:`sluice.platform.autoscale`): it runs as many replicas as keep each
    worker's load near ``target`` (a share of one worker: busy time, or in-flight requests over
    ``target_inflight``), adding one after ``scale_up_after`` seconds of load above that and
    removing one after ``scale_down_after`` seconds below it (Ray Serve's upscale and downscale
    delays)."""

    min: Annotated[int, Field(ge=0, le=64)] = 1
    max: Annotated[int, Field(ge=1, le=64)] | None = None
    # a worker's load tops out at 1 (a saturated worker cannot see the work queued behind it),
    # so a target of 1 would never ask for more: at most 0.9
    target: Annotated[float, Field(gt=0, le=0.9)] = 0.7
    # requests in flight that make one worker's worth of async work (default: the HTTP
    # trigger's max_inflight, its admission limit)
    target_inflight: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    scale_up_after: Annotated[float, Field(ge=0, le=3600)] = 3.0  # seconds
    scale_down_after: Annotated[float, Field(ge=0, le=86_400)] = 30.0

    @model_validator(mode="after")
    def _max_not_below_min(self) -> Replicas:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be at least min ({self.min})")
        return self


class Source(_Frozen):
    """The handler's code, shipped with the spec (Nuclio's spec.build.functionSourceCode)."""

    filename: Annotated[str, Field(pattern=SOURCE_FILENAME_PATTERN)]
    code: str  # base64

    @field_validator("code")
    @classmethod
    def _code_is_base64(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("must be base64-encoded source code") from exc
        if len(raw) > MAX_SOURCE_BYTES:
            raise ValueError(f"source is {len(raw)} bytes; at most {MAX_SOURCE_BYTES} allowed")
        return value

    def text(self) -> bytes:
        return base64.b64decode(self.code)

    @classmethod
    def from_bytes(cls, filename: str, code: bytes) -> Source:
        return cls(filename=filename, code=base64.b64encode(code).decode("ascii"))


def _command(value: str) -> str:
    if not value.strip():
        raise ValueError("a build command is a shell command line, e.g. 'pip install pandas'")
    if "\x00" in value:
        raise ValueError("a build command cannot hold a NUL character")
    return value


class Build(_Frozen):
    """Nuclio's spec.build.commands: shell commands (pip installs) run once, in order, into an
    environment of the function's own before its workers start; functions with the same
    commands share that environment (see sluice.platform.build_env)."""

    commands: Annotated[list[Annotated[str, Field(max_length=MAX_COMMAND_CHARS),
                                       AfterValidator(_command)]],
                        Field(max_length=MAX_BUILD_COMMANDS)] = []
    timeout: Annotated[float, Field(gt=0, le=86_400)] = 600.0  # the whole build, in seconds


class FunctionSpec(_Frozen):
    """A packaged function: a Python handler plus how it runs and what triggers it."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    kind: Kind = Kind.HTTP
    handler: Annotated[str, Field(pattern=HANDLER_PATTERN)] = "main:handler"
    version: Annotated[str, Field(max_length=64)] | None = None
    description: str = ""
    runtime: Annotated[str, Field(pattern=r"^python(:3(\.\d+)?)?$")] = "python:3.11"
    resources: Resources = Resources()
    replicas: Replicas = Replicas()
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    triggers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]{0,62}$")], Trigger] = {}
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    # a handler call (http, serving) or one attempt of a run (job; default one hour)
    timeout: Annotated[float, Field(gt=0, le=7 * 86_400)] = 60.0
    # job runs: attempts after the first failed one, the first back-off (doubling, at most
    # 10 minutes), and how long a stopped run may take to exit after SIGTERM before SIGKILL
    retries: Annotated[int, Field(ge=0, le=100)] = 0
    retry_backoff: Annotated[float, Field(ge=0, le=600)] = 1.0
    termination_grace: Annotated[float, Field(ge=0, le=3600)] = 10.0
    # job params and their defaults: a run may set only these, with values of the same type
    params: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][\w.-]{0,62}$")], Any] = {}
    labels: dict[str, str] = {}
    source: Source | None = None
    build: Build | None = None  # pip installs into the function's own environment
    serving: Serving | None = None  # kind: serving

    @model_validator(mode="before")
    @classmethod
    def _job_timeout_default(cls, data: Any) -> Any:
        # a run-to-completion job (training, ETL) gets an hour, not a request's minute
        if isinstance(data, dict) and data.get("kind") == "job" and "timeout" not in data:
            return {**data, "timeout": 3600.0}
        return data

    @model_validator(mode="after")
    def _notebooks_are_jobs(self) -> FunctionSpec:
        if self.source is not None and self.source.filename.endswith(".ipynb") and (
                self.kind != Kind.JOB):
            raise ValueError(f"source.filename: a notebook ({self.source.filename}) runs as a "
                             "job (kind: job), executed whole; for a handler in a notebook, "
                             "deploy the .ipynb itself and it is exported to Python")
        return self

    @model_validator(mode="after")
    def _triggers_fit_the_kind(self) -> FunctionSpec:
        http = [t for t in self.triggers.values() if t.kind == "http"]
        if len(http) > 1:
            raise ValueError("a function has at most one http trigger (all workers share its port)")
        for name, trigger in self.triggers.items():
            if self.kind == Kind.SERVING and isinstance(trigger, CronTrigger):
                raise ValueError(f"triggers.{name}: a serving function answers V2 requests on "
                                 "its HTTP trigger and scores Kafka messages; a cron trigger "
                                 "has nothing to score (retrain with a job on cron)")
            if self.kind == Kind.JOB and not isinstance(trigger, CronTrigger):
                raise ValueError(f"triggers.{name}: a job function runs on demand (`sluice run`) "
                                 f"or on a cron trigger; a {trigger.kind} trigger needs kind "
                                 "http or serving")
            if isinstance(trigger, CronTrigger) and self.kind != Kind.JOB:
                if trigger.concurrency_policy == "replace":
                    raise ValueError(f"triggers.{name}.concurrency_policy: 'replace' stops the "
                                     "running fire, which only a job function can do (an HTTP "
                                     "handler call cannot be stopped midway); use allow or "
                                     "forbid, or kind: job")
                if trigger.params is not None:
                    raise ValueError(f"triggers.{name}.params: params are for job functions; "
                                     "an http function gets the cron event's body")
        if self.kind == Kind.SERVING and self.serving is None:
            raise ValueError("serving: a serving function names its model and tensors, e.g. "
                             "serving: {model: fraud@production, inputs: [{name: x, dims: [64]}],"
                             " outputs: [{name: y, dims: [8]}]}")
        if self.serving is not None and self.kind != Kind.SERVING:
            raise ValueError("serving: only a serving function (kind: serving) serves a model")
        if self.kind == Kind.JOB:
            from .params import check_params

            for name, trigger in self.cron_triggers.items():
                check_params(self.params, cron_params(trigger), f"triggers.{name}.params")
        return self

    @property
    def http_trigger(self) -> HttpTrigger | None:
        for trigger in self.triggers.values():
            if isinstance(trigger, HttpTrigger):
                return trigger
        return None

    @property
    def kafka_triggers(self) -> dict[str, KafkaTrigger]:
        return {n: t for n, t in self.triggers.items() if isinstance(t, KafkaTrigger)}

    @property
    def cron_triggers(self) -> dict[str, CronTrigger]:
        return {n: t for n, t in self.triggers.items() if isinstance(t, CronTrigger)}

    @property
    def handler_module(self) -> str:
        return self.handler.split(":", 1)[0]

    @property
    def handler_function(self) -> str:
        return self.handler.split(":", 1)[1]

    def with_changes(self, **changes: Any) -> FunctionSpec:
        """A copy with some fields replaced, validated again."""
        data = self.model_dump(mode="json", exclude_none=True)
        data.update(changes)
        return parse_spec(data)


def cron_params(trigger: CronTrigger) -> dict[str, Any]:
    """What a cron fire passes to a job run: its params, else its event body if a mapping."""
    if trigger.params is not None:
        return dict(trigger.params)
    body = trigger.event.body
    return dict(body) if isinstance(body, dict) else {}


_FIELD_HINTS = {
    "name": "a DNS label: lowercase letters, digits and '-', e.g. 'fraud-score'",
    "handler": "'module:function', e.g. 'main:handler'",
    "runtime": "'python' or 'python:3.11'",
    "filename": "a Python file name such as 'main.py'",
    "model": "a registry model: NAME, NAME:VERSION or NAME@ALIAS, e.g. 'fraud@production'",
}


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``field.path: what is wrong (got ...)``."""
    lines = []
    for err in exc.errors(include_url=False):
        parts = list(err["loc"])
        if len(parts) > 2 and parts[0] == "triggers" and parts[2] in _TRIGGER_KINDS:
            del parts[2]  # pydantic's discriminator tag: not a field the user wrote
        if err["type"] == "union_tag_invalid":
            parts.append("kind")
            tag = (err.get("ctx") or {}).get("tag")
            err = {**err, "msg": f"unknown trigger kind {tag!r} (allowed: "
                   f"{', '.join(_TRIGGER_KINDS)})", "type": "custom", "input": None}
        elif err["type"] == "union_tag_not_found":
            parts.append("kind")
            err = {**err, "msg": f"required: one of {', '.join(_TRIGGER_KINDS)}",
                   "type": "missing"}
        message = err["msg"]
        if err["type"] == "value_error":  # our own validators' words, without pydantic's prefix
            message = str((err.get("ctx") or {}).get("error", message))
            field_path = re.match(r"^((?:triggers|params|replicas|serving)[\w.-]*): (.*)$",
                                  message)
            if not parts and field_path:  # a whole-spec rule that names the field it is about
                parts, message = [field_path.group(1)], field_path.group(2)
        loc = ".".join(str(part) for part in parts)
        where = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "spec")
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent else ""
            message = "unknown field" + (f" (allowed: {allowed})" if allowed else "")
        elif err["type"] == "string_pattern_mismatch":
            hint = _FIELD_HINTS.get(str(err["loc"][-1]) if err["loc"] else "")
            message = f"must be {hint}" if hint else message
        elif err["type"] == "literal_error":
            message = message.replace("Input should be", "must be")
        got = err.get("input")
        if err["type"] not in ("missing", "extra_forbidden") and got is not None and not isinstance(
            got, dict | list
        ):
            message += f" (got {got!r})"
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


_TRIGGER_KINDS = ("http", "kafka", "kafka-cluster", "cron")


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class at a location inside FunctionSpec (for 'allowed fields' hints)."""
    model: type[BaseModel] | None = FunctionSpec
    i = 0
    while model is not None and i < len(loc):
        field = model.model_fields.get(str(loc[i]))
        if field is None:
            return None
        annotation = field.annotation
        if str(loc[i]) == "triggers":
            # pydantic puts the discriminator value after the trigger's name
            kind = str(loc[i + 2]) if len(loc) > i + 2 else "http"
            model = (KafkaTrigger if kind.startswith("kafka")
                     else CronTrigger if kind == "cron" else HttpTrigger)
            i += 3
            continue
        model = _first_model(annotation)
        i += 1
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _first_model(arg)
        if found:
            return found
    return None


def parse_spec(data: Any, prefix: str = "") -> FunctionSpec:
    """Validate a plain dict (from JSON or YAML) into a FunctionSpec, or raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError(f"{prefix or 'spec'}: must be a mapping, got {type(data).__name__}")
    try:
        return FunctionSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, prefix)) from None


def valid_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None
