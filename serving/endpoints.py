"""The Open Inference Protocol's REST routes for the models one server holds, as one async
function from (method, path, headers, body) to (status, headers, body): no web framework, so
the function's own HTTP trigger (or a test) calls it directly.

    >>> import asyncio, numpy as np
    >>> async def double(inputs):
    ...     return {"y": inputs["x"] * 2}
    >>> served = ServedModel("double", "1", [Tensor("x", "FP32", (2,))],
    ...                      [Tensor("y", "FP32", (2,))], Batcher(double, latency=1.0))
    >>> endpoints = Endpoints([served])
    >>> body = b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
    >>> status, _, out = asyncio.run(endpoints.handle("POST", "/v2/models/double/infer", {},
    ...                                               body))
    >>> status, orjson.loads(out)["outputs"][0]["data"]
    (200, [2.0, 4.0])

Routes: ``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``,
``GET /v2/models/{m}[/versions/{v}]`` (model metadata), ``.../ready``, ``POST .../infer``.
Errors are ``{"error": "..."}``: 400 for a malformed request or tensors that do not fit the
model's signature, 404 for an unknown model or version, 503 when the request cannot be served
in time, 500 when the model itself fails.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import numpy as np
import orjson

from sluice.errors import InferenceError, InvalidTensorError, NotFoundError, SluiceError

from .batcher import Batcher, Tensors
from .protocol import InferInput, InferRequest, decode_request, dtype_of, encode_response
from .triton_config import Tensor

log = logging.getLogger("sluice.serving")

Reply = tuple[int, dict[str, str], bytes]
_ROUTE = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
                    r"(?P<action>/ready|/infer)?/?$")


@dataclass
class ServedModel:
    """One model version being served: its signature (shapes without the batch axis) and
    the batcher in front of it."""

    name: str
    version: str
    inputs: Sequence[Tensor]
    outputs: Sequence[Tensor]
    batcher: Batcher
    platform: str = "pytorch"
    ready: bool = True
    count: Callable[[int], None] | None = None  # each infer's status, for metrics
    # (name, datatype, shape after the batch axis) of inputs that passed the check
    _fits: set[tuple[tuple[str, str, tuple[int, ...]], ...]] = field(default_factory=set,
                                                                     repr=False)

    def metadata(self) -> dict[str, Any]:
        def describe(tensor: Tensor) -> dict[str, Any]:
            return {"name": tensor.name, "datatype": tensor.datatype,
                    "shape": [-1, *tensor.dims]}

        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": [describe(t) for t in self.inputs],
                "outputs": [describe(t) for t in self.outputs]}

    def check(self, request: InferRequest) -> None:
        """The request's inputs against the signature; InvalidTensorError says what differs."""
        inputs = request.inputs
        if len(inputs) == 1:  # the common case, without the generator
            key: tuple[tuple[str, str, tuple[int, ...]], ...] = (
                (inputs[0].name, inputs[0].datatype, inputs[0].shape[1:]),)
        else:
            key = tuple((t.name, t.datatype, t.shape[1:]) for t in inputs)
        if key in self._fits:  # a signature already checked: nearly every request
            return
        self._check(request)
        if len(self._fits) < 64:
            self._fits.add(key)

    def _check(self, request: InferRequest) -> None:
        given = {tensor.name: tensor for tensor in request.inputs}
        wanted = {tensor.name: tensor for tensor in self.inputs}
        unknown = sorted(set(given) - set(wanted))
        if unknown:
            raise InvalidTensorError(f"input {unknown[0]!r} is not an input of model "
                                     f"{self.name!r} (its inputs: {', '.join(wanted)})")
        missing = sorted(set(wanted) - set(given))
        if missing:
            raise InvalidTensorError(f"input {missing[0]!r} is missing (model {self.name!r} "
                                     f"takes: {', '.join(wanted)})")
        for name, spec in wanted.items():
            tensor = given[name]
            if tensor.datatype != spec.datatype:
                raise InvalidTensorError(f"input {name!r}: datatype {tensor.datatype}, but "
                                         f"model {self.name!r} takes {spec.datatype}")
            shape = list(tensor.shape)
            fits = len(shape) == len(spec.dims) + 1 and all(
                want in (-1, got) for want, got in zip(spec.dims, shape[1:], strict=True))
            if not fits:
                raise InvalidTensorError(
                    f"input {name!r}: shape {shape}, but model {self.name!r} takes "
                    f"{[-1, *spec.dims]} (the first axis is the batch)")


class Endpoints:
    """The V2 routes over a set of served models (keyed by name)."""

    # a stream message's deadline, in seconds: a backlog is worked through, not shed, and
    # HTTP requests (deadlines of latency_ms) go first
    stream_timeout = 60.0

    def __init__(self, models: Sequence[ServedModel], server: str = "sluice",
                 version: str = "0") -> None:
        self.models = {model.name: model for model in models}
        self.server = server
        self.version = version
        # infer paths already routed: path -> (model name, version in the path or None)
        self._infers: dict[str, tuple[str, str | None]] = {}

    async def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes
                     ) -> Reply:
        """Answer one request; never raises."""
        model = None
        try:
            target = self._route(method, path)
            if not isinstance(target, ServedModel):
                return target
            model = target
            reply = await self._infer(model, headers, body)
        except Exception as exc:
            reply = _failure(exc)
        if model is not None:
            self._count(model, reply[0])
        return reply

    def answer(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
               respond: Callable[[Reply], None]) -> None:
        """:meth:`handle` with a callback instead of a coroutine: ``respond`` gets the reply
        once, now or when the request's batch is done. The HTTP trigger's path: no task and
        no future per request."""
        model = None
        try:
            target = self._route(method, path)
            if isinstance(target, ServedModel):
                model = target
                request = _checked(model, headers, body)
                model.batcher.submit_nowait(request.tensors,
                                            partial(self._answered, model, request, respond))
                return
            reply = target
        except Exception as exc:
            reply = _failure(exc)
            if model is not None:
                self._count(model, reply[0])
        respond(reply)  # outside the try: a respond that raises must not be called twice

    def _answered(self, model: ServedModel, request: InferRequest,
                  respond: Callable[[Reply], None], result: Tensors | BaseException) -> None:
        try:
            if isinstance(result, BaseException):
                raise result
            reply = _encode(model, request, result)
        except Exception as exc:
            reply = _failure(exc)
        respond(reply)  # then the count: the caller need not wait for it
        self._count(model, reply[0])

    def _route(self, method: str, path: str) -> Reply | ServedModel:
        """The reply of a route that needs no model run, or the model an infer goes to."""
        method, path = method.upper(), path.split("?", 1)[0]
        known = self._infers.get(path) if method == "POST" else None
        if known is not None:  # nearly every request: an infer on a path seen before
            model = self.models.get(known[0])
            if model is not None and known[1] in (None, model.version):
                return model
        if path in ("/v2", "/v2/"):
            _expect(method, "GET", path)
            return _json(200, {"name": self.server, "version": self.version,
                               "extensions": ["binary_tensor_data"]})
        if path in ("/v2/health/live", "/v2/health/ready"):
            _expect(method, "GET", path)
            ready = path.endswith("live") or all(m.ready for m in self.models.values())
            return _json(200 if ready else 503,
                         {"live" if path.endswith("live") else "ready": ready})
        match = _ROUTE.match(path)
        if match is None:
            raise NotFoundError(f"no route {path!r}: the V2 routes are /v2, /v2/health/live, "
                                "/v2/health/ready and /v2/models/NAME[/versions/V][/ready|"
                                "/infer]")
        model = self._model(match["model"], match["version"])
        action = match["action"]
        if action is None:
            _expect(method, "GET", path)
            return _json(200, model.metadata())
        if action == "/ready":
            _expect(method, "GET", path)
            return _json(200 if model.ready else 503, {"name": model.name, "ready": model.ready})
        _expect(method, "POST", path)
        if len(self._infers) < 64:
            self._infers[path] = (model.name, match["version"])
        return model

    async def _infer(self, model: ServedModel, headers: Mapping[str, str], body: bytes,
                     timeout: float | None = None) -> Reply:
        request = _checked(model, headers, body)
        return _encode(model, request, await model.batcher.submit(request.tensors, timeout))

    async def score(self, payload: bytes | Mapping[str, Any], headers: Mapping[str, str]
                    ) -> Reply:
        """One stream message (a Kafka event) for the model this server holds, through the
        same batcher as HTTP requests; never raises. A V2 infer request (``{"inputs": [...]}``)
        is answered with a V2 response; a record of the inputs by name, one row
        (``{"x": [0.1, ...]}``) or several, with the outputs by name, in the same form, and
        the record's other fields as they came (``{"id": "t1", "x": ...}`` gives
        ``{"id": "t1", "scores": ...}``)."""
        try:
            if len(self.models) != 1:
                raise InvalidTensorError(f"a stream message needs one model to go to, and "
                                         f"this server holds {len(self.models)}")
            model = next(iter(self.models.values()))
            if isinstance(payload, bytes | bytearray):
                payload = orjson.loads(payload) if payload.lstrip()[:1] == b"{" else payload
            if isinstance(payload, Mapping) and "inputs" not in payload:
                reply = await self._score_record(model, payload)
            else:  # a V2 request, as JSON or Triton's binary form (bytes)
                body = payload if isinstance(payload, bytes | bytearray) else \
                    orjson.dumps(payload)
                reply = await self._infer(model, headers, bytes(body), self.stream_timeout)
        except Exception as exc:
            reply = _error(400, f"the message is not JSON: {exc}") if isinstance(
                exc, orjson.JSONDecodeError) else _failure(exc)
            if len(self.models) == 1:
                self._count(next(iter(self.models.values())), reply[0])
            return reply
        self._count(model, 200)
        return reply

    async def score_many(self, payloads: Sequence[Any],
                         message_headers: Sequence[Mapping[str, str]] | None = None
                         ) -> list[Reply]:
        """A micro-batch of stream messages, replies in order. The one-row records among them
        (``{"x": [...], ...}``) are stacked into one request per ``max_batch`` rows, so 500
        messages cost a few submissions, not 500; anything else (a V2 request, a record of
        several rows, records whose values do not stack) goes through :meth:`score`, with its
        message's headers (``message_headers``: a binary V2 request's header length is one)."""
        model = next(iter(self.models.values())) if len(self.models) == 1 else None
        picked: list[int] = []
        records: list[Mapping[str, Any]] = []
        if model is not None:
            for index, payload in enumerate(payloads):
                if isinstance(payload, Mapping) and "inputs" not in payload and all(
                        spec.name in payload for spec in model.inputs):
                    picked.append(index)
                    records.append(payload)
        stacked = _stacked(model, records) if model is not None and records else None
        replies: list[Reply | None] = [None] * len(payloads)
        if model is not None and stacked is not None:
            step = model.batcher.policy.max_batch
            try:
                parts = await asyncio.gather(*(
                    model.batcher.submit({name: array[start:start + step]
                                          for name, array in stacked.items()},
                                         timeout=self.stream_timeout)
                    for start in range(0, len(records), step)))
            except Exception as exc:  # the model failed: every stacked record says so
                status, headers, body = _failure(exc)
                for index in picked:
                    replies[index] = (status, dict(headers), body)
                    self._count(model, status)
            else:
                rows = {name: [row for part in parts for row in part[name].tolist()]
                        for name in parts[0]}
                for n, (index, record) in enumerate(zip(picked, records, strict=True)):
                    out = {key: value for key, value in record.items() if key not in stacked}
                    out.update((name, values[n]) for name, values in rows.items())
                    replies[index] = _json(200, out)
                    self._count(model, 200)
        rest = [index for index, reply in enumerate(replies) if reply is None]
        for index, reply in zip(rest, await asyncio.gather(
                *(self.score(payloads[index], message_headers[index] if message_headers else {})
                  for index in rest)), strict=True):
            replies[index] = reply
        return cast(list[Reply], replies)

    async def _score_record(self, model: ServedModel, record: Mapping[str, Any]) -> Reply:
        tensors, single = {}, False
        for spec in model.inputs:
            if spec.name not in record:
                raise InvalidTensorError(f"the message has no {spec.name!r} (model "
                                         f"{model.name!r} takes: "
                                         f"{', '.join(t.name for t in model.inputs)})")
            try:
                array = np.asarray(record[spec.name], dtype=dtype_of(spec.datatype))
            except (TypeError, ValueError) as exc:
                raise InvalidTensorError(f"{spec.name!r}: not {spec.datatype} values "
                                         f"({exc})") from None
            single = array.ndim == len(spec.dims)  # one row, without the batch axis
            tensors[spec.name] = array[None] if single else array
        model.check(InferRequest(None, tuple(InferInput(spec.name, cast(Any, spec.datatype),
                                                        a.shape, a)
                                             for spec, a in zip(model.inputs, tensors.values(),
                                                                strict=True)), (), {}))
        produced = await model.batcher.submit(tensors, timeout=self.stream_timeout)
        # the record's other fields (an id, a key, a label) pass through beside the outputs
        out = {key: value for key, value in record.items() if key not in tensors}
        out.update((name, (array[0] if single else array).tolist())
                   for name, array in produced.items())
        return _json(200, out)

    @staticmethod
    def _count(model: ServedModel, status: int) -> None:
        if model.count is not None:
            model.count(status)

    def _model(self, name: str, version: str | None) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise NotFoundError(f"model {name!r} is not served here (models: "
                                f"{', '.join(sorted(self.models)) or 'none'})")
        if version is not None and version != model.version:
            raise NotFoundError(f"model {name!r} has no version {version!r} here (serving "
                                f"version {model.version})")
        return model


def status_of(exc: BaseException) -> int:
    """The HTTP status an error answers with: its own for inference and lookup errors, 400
    for any other sluice error (a bad request), 500 for anything else."""
    if isinstance(exc, InferenceError | NotFoundError):
        return exc.http_status
    return 400 if isinstance(exc, SluiceError) else 500


def _checked(model: ServedModel, headers: Mapping[str, str], body: bytes) -> InferRequest:
    """The request decoded and checked against the model's signature."""
    request = decode_request(body, headers)
    model.check(request)
    return request


def _encode(model: ServedModel, request: InferRequest, produced: Tensors) -> Reply:
    outputs, binary = request.select_outputs(produced)
    out, headers = encode_response(model.name, model.version, request.id, outputs, binary)
    return 200, headers, out


def _stacked(model: ServedModel, records: Sequence[Mapping[str, Any]]) -> Tensors | None:
    """The records' inputs as one array each, one row per record, if they stack into the
    model's signature; None otherwise (each record is then scored alone, and told what is
    wrong with it)."""
    tensors = {}
    try:
        for spec in model.inputs:
            array = np.asarray([record[spec.name] for record in records],
                               dtype=dtype_of(spec.datatype))
            if array.ndim != len(spec.dims) + 1:
                return None
            tensors[spec.name] = array
        model.check(InferRequest(None, tuple(
            InferInput(name, cast(Any, spec.datatype), array.shape, array)
            for spec, (name, array) in zip(model.inputs, tensors.items(), strict=True)), (), {}))
    except (TypeError, ValueError, InferenceError):
        return None
    return tensors


def _failure(exc: BaseException) -> Reply:
    """The error reply for what went wrong: its own status, or a 500 that says what the model
    raised (logged with its traceback, which the client does not get)."""
    status = status_of(exc)
    if status == 500 and not isinstance(exc, SluiceError):
        log.error("inference failed", exc_info=exc)
        return _error(500, f"the model failed: {type(exc).__name__}: {exc}")
    return _error(status, str(exc))


def _expect(method: str, allowed: str, path: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise _MethodNotAllowed(f"{method} {path}: use {allowed}")


class _MethodNotAllowed(InferenceError):
    http_status = 405


def _json(status: int, payload: Any) -> Reply:
    # fresh headers each time: the caller may take the content type out of them
    return status, {"Content-Type": "application/json"}, orjson.dumps(payload)


def _error(status: int, message: str) -> Reply:
    return _json(status, {"error": message})
