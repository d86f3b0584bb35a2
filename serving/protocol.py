"""The Open Inference Protocol (KServe V2, Triton HTTP/REST) codec: bytes in, typed values out.

Pure: no sockets, no web framework. The HTTP layer hands :func:`decode_request` the body and
headers and sends back what :func:`encode_response` returns:

    >>> body = (b'{"id": "7", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",'
    ...         b' "data": [[1, 2], [3, 4]]}]}')
    >>> request = decode_request(body, {"Content-Type": "application/json"})
    >>> request.tensors["x"]
    array([[1., 2.],
           [3., 4.]], dtype=float32)
    >>> outputs, binary = request.select_outputs({"y": request.tensors["x"] * 2})
    >>> body, headers = encode_response("double", "1", request.id, outputs, binary)
    >>> headers
    {'Content-Type': 'application/json'}
    >>> orjson.loads(body)["outputs"]
    [{'name': 'y', 'datatype': 'FP32', 'shape': [2, 2], 'data': [2.0, 4.0, 6.0, 8.0]}]

Triton's binary tensor data extension, which ``tritonclient.http`` uses by default, is read
and written too: ``Inference-Header-Content-Length: N`` says the body's first N bytes are the
JSON header, and each input with ``"parameters": {"binary_data_size": K}`` takes the next K
bytes (little-endian, row-major; a BYTES element is a 4-byte little-endian length, then bytes):

    >>> header = (b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT32",'
    ...           b'"parameters":{"binary_data_size":8}}]}')
    >>> request = decode_request(header + np.array([5, 6], "<i4").tobytes(),
    ...                          {"Inference-Header-Content-Length": str(len(header))})
    >>> request.tensors["x"]
    array([5, 6], dtype=int32)

Every malformed request raises :class:`~sluice.errors.InvalidTensorError` (HTTP 400) naming
the input, what is wrong and what was expected. Decoded arrays are read-only (binary ones are
views of the body, never copied); copy one to modify it. JSON cannot carry NaN or infinity:
float outputs holding them are written as ``null``, and ``null`` in float input data reads
as NaN.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, cast, get_args

import numpy as np
import orjson
from numpy.typing import DTypeLike

from sluice.errors import InferenceError, InvalidTensorError

__all__ = ["DATATYPES", "HEADER_LENGTH", "Datatype", "InferInput", "InferRequest", "Parameter",
           "RequestedOutput", "datatype_of", "decode_request", "dtype_of", "encode_response"]

Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                   "INT64", "FP16", "FP32", "FP64", "BYTES"]
Parameter = bool | int | float | str
DATATYPES: tuple[Datatype, ...] = get_args(Datatype)
HEADER_LENGTH = "Inference-Header-Content-Length"

# Explicit little-endian: the byte order of binary tensor data on the wire.
_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_KIND: dict[tuple[str, int], Datatype] = {
    (dtype.kind, dtype.itemsize): cast(Datatype, name)
    for name, dtype in _DTYPES.items() if name != "BYTES"}
# The kinds of array numpy infers from JSON values that each kind of datatype takes as is.
_INFERRED_OK = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_U32 = struct.Struct("<I")


def dtype_of(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype (BYTES: object arrays of ``bytes``)."""
    try:
        return _DTYPES[datatype]
    except KeyError:
        raise InvalidTensorError(f"unknown datatype {datatype!r}; expected one of "
                                 f"{', '.join(DATATYPES)}") from None


def datatype_of(dtype: DTypeLike) -> Datatype:
    """The V2 datatype of a numpy dtype; object, bytes and str arrays are BYTES."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_KIND[dtype.kind, dtype.itemsize]
    except KeyError:
        raise InferenceError(f"numpy dtype {dtype} has no V2 datatype; use bool, (u)int8-64, "
                             "float16-64, or object arrays of bytes") from None


@dataclass(frozen=True, eq=False)  # arrays have no single truth value; compare by identity
class InferInput:
    """One input tensor: ``array`` has exactly ``shape`` and the datatype's dtype."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    array: np.ndarray

    def __post_init__(self) -> None:
        if self.array.shape != self.shape or self.array.dtype != dtype_of(self.datatype):
            raise InvalidTensorError(
                f"input {self.name!r}: array is {self.array.dtype} {list(self.array.shape)} "
                f"but {self.datatype} {list(self.shape)} needs {dtype_of(self.datatype)}")


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True, eq=False)
class InferRequest:
    """A decoded inference request. ``outputs`` is empty when the client asked for all."""

    id: str | None
    inputs: tuple[InferInput, ...]
    outputs: tuple[RequestedOutput, ...]
    parameters: Mapping[str, Parameter]

    @property
    def tensors(self) -> dict[str, np.ndarray]:
        """The inputs by name, as the batcher and models take them."""
        return {tensor.name: tensor.array for tensor in self.inputs}

    def select_outputs(self, produced: Mapping[str, np.ndarray]
                       ) -> tuple[dict[str, np.ndarray], set[str]]:
        """The outputs to send and which of them go as binary data, from what the model
        produced: the requested ones in request order, or all when none were named."""
        if not self.outputs:
            everything = self.parameters.get("binary_data_output") is True
            return dict(produced), set(produced) if everything else set()
        for output in self.outputs:
            if output.name not in produced:
                raise InvalidTensorError(f"output {output.name!r} was requested but the model "
                                         f"produces only {sorted(produced)}")
        return ({output.name: produced[output.name] for output in self.outputs},
                {output.name for output in self.outputs if output.binary})


def decode_request(body: bytes, headers: Mapping[str, str]) -> InferRequest:
    """Parse a V2 inference request, JSON or JSON plus binary tensor data."""
    start = _header_length(headers, len(body))
    try:
        doc = orjson.loads(body if start == len(body) else memoryview(body)[:start])
    except orjson.JSONDecodeError as exc:
        raise InvalidTensorError(f"the request is not valid JSON: {exc}") from exc
    if start == len(body):
        fast = _plain_request(doc)
        if fast is not None:
            return fast
    if not isinstance(doc, dict):
        raise InvalidTensorError(f"the request must be a JSON object, got {_kind(doc)}")
    view = memoryview(body)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidTensorError(f"the request id must be a string, got {_kind(request_id)}")
    parameters = _parameters(doc.get("parameters"), "the request")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InvalidTensorError("the request parameter binary_data_output must be true or false")
    raw_inputs = _list(doc, "inputs", "the request", required=True)
    inputs: dict[str, InferInput] = {}
    pos = start
    for index, raw in enumerate(raw_inputs):
        tensor, pos = _input(raw, index, view, pos)
        if tensor.name in inputs:
            raise InvalidTensorError(f"input {tensor.name!r} appears twice; names must be unique")
        inputs[tensor.name] = tensor
    if pos != len(view):
        raise InvalidTensorError(f"the body has {len(view) - pos} bytes of binary data that no "
                                 "input's binary_data_size accounts for")
    outputs: dict[str, RequestedOutput] = {}
    for index, raw in enumerate(_list(doc, "outputs", "the request", required=False)):
        name, fields = _named(raw, f"outputs[{index}]")
        binary = _parameters(fields.get("parameters"), f"output {name!r}").get(
            "binary_data", binary_default)
        if not isinstance(binary, bool):
            raise InvalidTensorError(f"output {name!r}: binary_data must be true or false")
        if name in outputs:
            raise InvalidTensorError(f"output {name!r} is requested twice; names must be unique")
        outputs[name] = RequestedOutput(name, binary)
    return InferRequest(request_id, tuple(inputs.values()), tuple(outputs.values()), parameters)


def _plain_request(doc: object) -> InferRequest | None:
    """The common request, decoded with as few numpy calls as possible (each one costs more
    than checking a row in Python, and most on an idle server, whose caches are cold): JSON
    only, FP32, FP64 or INT64 inputs given as flat lists of numbers in the datatype's range, no
    parameters, no outputs named. None for anything else, which the general path decodes (and,
    when it is wrong, explains)."""
    if type(doc) is not dict or not doc.keys() <= _PLAIN_KEYS:
        return None
    raw_inputs = doc.get("inputs")
    request_id = doc.get("id")
    if type(raw_inputs) is not list or not raw_inputs or (
            request_id is not None and type(request_id) is not str):
        return None
    inputs = []
    for raw in raw_inputs:
        if type(raw) is not dict or raw.keys() != _PLAIN_INPUT:
            return None
        name, shape, data, datatype = raw["name"], raw["shape"], raw["data"], raw["datatype"]
        plain = _PLAIN_DTYPES.get(datatype)
        if plain is None or type(name) is not str or not name or type(shape) is not list or \
                type(data) is not list:
            return None
        count = 1
        for n in shape:
            if type(n) is not int or n < 0:
                return None
            count *= n
        if len(data) != count or not count:
            return None
        dtype, types, low, high = plain
        # numbers only (JSON true/false are bools, not ints here), all within the range
        if not set(map(type, data)) <= types or not (low <= min(data) and max(data) <= high):
            return None
        array = np.array(data, dtype=dtype)
        if len(shape) != 1:
            array = array.reshape(shape)
        array.flags.writeable = False
        inputs.append(InferInput(name, datatype, tuple(shape), array))
    if len(inputs) > 1 and len({tensor.name for tensor in inputs}) != len(inputs):
        return None
    return InferRequest(request_id, tuple(inputs), (), _NO_PARAMETERS)


_PLAIN_KEYS = {"inputs", "id"}
_PLAIN_INPUT = {"name", "shape", "datatype", "data"}
_FP32_MAX = float(np.finfo(np.float32).max)
_FP64_MAX = float(np.finfo(np.float64).max)
# the fast path's datatypes: dtype, the Python types its data may hold, and their range (a
# value beyond it, or another type, takes the general path, which names it). Others (INT32,
# BOOL, BYTES, ...) take the general path too.
_PLAIN_DTYPES = {
    "FP32": (_DTYPES["FP32"], frozenset((float, int)), -_FP32_MAX, _FP32_MAX),
    "FP64": (_DTYPES["FP64"], frozenset((float, int)), -_FP64_MAX, _FP64_MAX),
    "INT64": (_DTYPES["INT64"], frozenset((int,)), -(2**63), 2**63 - 1)}
_NO_PARAMETERS: Mapping[str, Parameter] = MappingProxyType({})


def encode_response(model_name: str, model_version: str | None, request_id: str | None,
                    outputs: Mapping[str, np.ndarray], binary: set[str] | bool = False
                    ) -> tuple[bytes, dict[str, str]]:
    """The V2 response body and the headers it needs; ``binary`` names the outputs sent as
    binary tensor data (True: all of them)."""
    doc: dict[str, object] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    if not binary:
        plain = _plain_outputs(outputs)
        if plain is not None:
            doc["outputs"] = plain
            return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), {
                "Content-Type": "application/json"}
    wanted = set(outputs) if binary is True else set(binary or ())
    if not wanted <= outputs.keys():
        raise InferenceError(f"binary names outputs the model did not produce: "
                             f"{sorted(wanted - outputs.keys())}")
    entries: list[dict[str, object]] = []
    chunks: list[bytes] = []
    for name, array in outputs.items():
        array = np.asarray(array)
        try:
            datatype = datatype_of(array.dtype)
        except InferenceError as exc:
            raise InferenceError(f"output {name!r}: {exc}") from None
        entry: dict[str, object] = {"name": name, "datatype": datatype,
                                    "shape": list(array.shape)}
        if name in wanted:
            chunks.append(_to_binary(name, datatype, array))
            entry["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            entry["data"] = _to_json(name, datatype, array)
        entries.append(entry)
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not wanted:
        return header, {"Content-Type": "application/json"}
    return b"".join([header, *chunks]), {"Content-Type": "application/octet-stream",
                                         HEADER_LENGTH: str(len(header))}


def _plain_outputs(outputs: Mapping[str, np.ndarray]) -> list[dict[str, object]] | None:
    """The common response's output entries, with as few calls as possible: JSON only, every
    output a C-contiguous, native-order numeric array (orjson writes those itself). None for
    anything else, which the general path encodes."""
    entries: list[dict[str, object]] = []
    for name, array in outputs.items():
        datatype = _NATIVE.get(array.dtype) if type(array) is np.ndarray else None
        if datatype is None or not array.flags.c_contiguous:
            return None
        entries.append({"name": name, "datatype": datatype, "shape": list(array.shape),
                        "data": array.reshape(-1)})
    return entries


# the dtypes orjson serialises from memory, and their datatypes
_NATIVE: dict[np.dtype, str] = {np.dtype(t): name for t, name in [
    (np.float32, "FP32"), (np.float64, "FP64"), (np.int32, "INT32"), (np.int64, "INT64"),
    (np.int16, "INT16"), (np.int8, "INT8"), (np.uint8, "UINT8"), (np.uint16, "UINT16"),
    (np.uint32, "UINT32"), (np.uint64, "UINT64"), (np.bool_, "BOOL")]}


def _header_length(headers: Mapping[str, str], size: int) -> int:
    value = headers.get(HEADER_LENGTH)
    if value is None and type(headers) is dict:
        # a plain dict (a Kafka message's headers, a test's) is case-sensitive and HTTP
        # header names are not; the HTTP trigger's own headers already ignore case
        value = next((v for k, v in headers.items() if k.lower() == HEADER_LENGTH.lower()), None)
    if value is None:
        return size
    if not (value.isascii() and value.isdigit()):
        raise InvalidTensorError(f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}")
    length = int(value)
    if length > size:
        raise InvalidTensorError(f"{HEADER_LENGTH} is {length} but the body has only "
                                 f"{size} bytes")
    return length


def _input(item: object, index: int, view: memoryview, pos: int) -> tuple[InferInput, int]:
    name, raw = _named(item, f"inputs[{index}]")
    where = f"input {name!r}"
    for field in ("shape", "datatype"):
        if field not in raw:
            raise InvalidTensorError(f"{where} has no {field!r}")
    shape = raw["shape"]
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise InvalidTensorError(f"{where}: shape must be a list of non-negative integers, "
                                 f"got {shape!r}")
    datatype = raw["datatype"]
    if datatype not in _DTYPES:
        raise InvalidTensorError(f"{where}: unknown datatype {datatype!r}; expected one of "
                                 f"{', '.join(DATATYPES)}")
    size = _parameters(raw.get("parameters"), where).get("binary_data_size")
    count = math.prod(shape)
    if size is not None and "data" in raw:
        raise InvalidTensorError(f"{where} has both data and binary_data_size; send one")
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidTensorError(f"{where}: binary_data_size must be a non-negative "
                                     f"integer, got {size!r}")
        if pos + size > len(view):
            raise InvalidTensorError(f"{where}: binary_data_size {size} runs past the end of "
                                     f"the body ({len(view) - pos} bytes of binary data left)")
        array = _from_binary(where, datatype, shape, count, view[pos:pos + size])
        pos += size
    elif "data" in raw:
        array = _from_json(where, datatype, shape, count, raw["data"])
    else:
        raise InvalidTensorError(f"{where} has neither data nor binary_data_size "
                                 "(shared memory inputs are not supported)")
    array.flags.writeable = False
    return InferInput(name, cast(Datatype, datatype), tuple(shape), array), pos


def _from_binary(where: str, datatype: str, shape: list[int], count: int,
                 raw: memoryview) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(where, shape, count, raw)
    dtype = _DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidTensorError(f"{where}: binary_data_size is {len(raw)} bytes but shape "
                                 f"{shape} of {datatype} needs {count * dtype.itemsize}")
    if datatype == "BOOL":
        octets = np.frombuffer(raw, np.uint8)
        if count and octets.max() > 1:
            raise InvalidTensorError(f"{where}: BOOL binary data must be bytes 0 or 1")
        return octets.view(dtype).reshape(shape)
    return np.frombuffer(raw, dtype).reshape(shape)


def _bytes_elements(where: str, shape: list[int], count: int, raw: memoryview) -> np.ndarray:
    if count * _U32.size > len(raw):  # before the loop: shape may claim billions of elements
        raise InvalidTensorError(f"{where}: binary_data_size is {len(raw)} bytes, too few for "
                                 f"the {count} BYTES elements of shape {shape}")
    items: list[bytes] = []
    pos = 0
    for index in range(count):
        if pos + _U32.size > len(raw):
            raise InvalidTensorError(f"{where}: BYTES element {index} has no 4-byte length "
                                     f"prefix; binary data ends at byte {len(raw)}")
        (length,) = _U32.unpack_from(raw, pos)
        pos += _U32.size
        if pos + length > len(raw):
            raise InvalidTensorError(f"{where}: BYTES element {index} is {length} bytes long "
                                     f"but only {len(raw) - pos} bytes of binary data are left")
        items.append(bytes(raw[pos:pos + length]))
        pos += length
    if pos != len(raw):
        raise InvalidTensorError(f"{where}: binary_data_size is {len(raw)} bytes but the "
                                 f"{count} BYTES elements of shape {shape} take {pos}")
    return _object_array(items, shape)


def _from_json(where: str, datatype: str, shape: list[int], count: int,
               data: object) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidTensorError(f"{where}: data must be a JSON array, got {_kind(data)}")
    if datatype == "BYTES":
        leaves = _leaves(data)
        _check_count(where, shape, count, len(leaves))
        strings = [leaf for leaf in leaves if isinstance(leaf, str)]
        if len(strings) != len(leaves):
            raise _wrong_value(where, datatype, leaves)
        return _object_array([string.encode() for string in strings], shape)
    try:
        inferred = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        leaves = _leaves(data)
        if all(_fits(datatype, leaf) for leaf in leaves):
            raise InvalidTensorError(f"{where}: data is not a rectangular nested list; send it "
                                     "flat, in row-major order") from None
        raise _wrong_value(where, datatype, leaves) from None
    _check_count(where, shape, count, inferred.size)
    dtype = _DTYPES[datatype]
    accepted = inferred.size == 0 or inferred.dtype.kind in _INFERRED_OK[dtype.kind]
    if not accepted:  # numpy infers object for a null (NaN in float data), float for 2**64-1
        leaves = _leaves(data)
        if not all(_fits(datatype, leaf) for leaf in leaves):
            raise _wrong_value(where, datatype, leaves)
        try:  # floats via float64, so that the range check below sees a value beyond FP32
            inferred = np.asarray(data, np.float64 if dtype.kind == "f" else dtype)
        except OverflowError:  # an integer beyond even float64
            raise _beyond(where, datatype) from None
    if dtype.kind in "iu" and inferred.size:
        info = np.iinfo(dtype)
        low, high = int(inferred.min()), int(inferred.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InvalidTensorError(f"{where}: {datatype} data must be integers in "
                                     f"[{info.min}, {info.max}], got {bad}")
    try:
        with np.errstate(over="raise"):
            return inferred.astype(dtype).reshape(shape)
    except FloatingPointError:
        raise _beyond(where, datatype) from None


def _beyond(where: str, datatype: str) -> InvalidTensorError:
    return InvalidTensorError(f"{where}: a value in data is beyond the {datatype} range "
                              f"(±{np.finfo(_DTYPES[datatype]).max})")


def _to_binary(name: str, datatype: str, array: np.ndarray) -> bytes:
    if datatype != "BYTES":
        return array.astype(_DTYPES[datatype], copy=False).tobytes()
    parts: list[bytes] = []
    for item in _byte_items(name, array):
        parts += (_U32.pack(len(item)), item)
    return b"".join(parts)


def _to_json(name: str, datatype: str, array: np.ndarray) -> object:
    if datatype != "BYTES":  # orjson writes native-endian, C-contiguous arrays directly
        return np.ascontiguousarray(array.reshape(-1), array.dtype.newbyteorder("="))
    try:
        return [item.decode() for item in _byte_items(name, array)]
    except UnicodeDecodeError:
        raise InferenceError(f"output {name!r} holds bytes that are not UTF-8, which JSON "
                             "cannot carry; request it with binary_data: true") from None


def _byte_items(name: str, array: np.ndarray) -> list[bytes]:
    items = array.reshape(-1).tolist()
    for index, item in enumerate(items):
        if isinstance(item, str):
            items[index] = item.encode()
        elif not isinstance(item, bytes):
            raise InferenceError(f"output {name!r}: BYTES elements must be bytes or str, got "
                                 f"{type(item).__name__} at flat index {index}")
    return items


def _object_array(items: list[bytes], shape: list[int]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def _leaves(data: list[object]) -> list[object]:
    """Nested lists flattened in row-major order, without recursion (JSON nests deep)."""
    leaves: list[object] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            leaves.append(item)
        else:
            stack.pop()
    return leaves


def _fits(datatype: str, value: object) -> bool:
    if datatype == "BOOL":
        return type(value) is bool
    if datatype == "BYTES":
        return type(value) is str
    if datatype.startswith("FP"):
        return value is None or type(value) in (int, float)
    info = np.iinfo(_DTYPES[datatype])
    return type(value) is int and info.min <= value <= info.max


def _wrong_value(where: str, datatype: str, leaves: list[object]) -> InvalidTensorError:
    expected = ("true or false" if datatype == "BOOL" else "strings" if datatype == "BYTES"
                else "numbers" if datatype.startswith("FP")
                else f"integers in [{np.iinfo(_DTYPES[datatype]).min}, "
                     f"{np.iinfo(_DTYPES[datatype]).max}]")
    bad = next((leaf for leaf in leaves if not _fits(datatype, leaf)), None)
    return InvalidTensorError(f"{where}: {datatype} data must be {expected}, got {bad!r}")


def _check_count(where: str, shape: list[int], count: int, values: int) -> None:
    if values != count:
        raise InvalidTensorError(f"{where}: data has {values} values but shape {shape} "
                                 f"needs {count}")


def _named(raw: object, where: str) -> tuple[str, dict[str, object]]:
    if not isinstance(raw, dict):
        raise InvalidTensorError(f"{where} must be a JSON object, got {_kind(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidTensorError(f"{where} needs a 'name' string, got {name!r}")
    return name, raw


def _list(doc: dict[str, object], field: str, where: str, *, required: bool) -> list[object]:
    value = doc.get(field)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        missing = field not in doc
        raise InvalidTensorError(f"{where} has no {field!r} list" if missing else
                                 f"{where}: {field!r} must be a list, got {_kind(value)}")
    return value


def _parameters(raw: object, where: str) -> Mapping[str, Parameter]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict) or not all(
            isinstance(value, bool | int | float | str) for value in raw.values()):
        raise InvalidTensorError(f"{where}: parameters must be an object of strings, numbers "
                                 f"and booleans, got {raw!r}")
    return MappingProxyType(raw)


def _kind(value: object) -> str:
    """A JSON value's type in JSON's words, for messages."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), "null")
