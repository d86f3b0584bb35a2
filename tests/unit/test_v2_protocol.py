"""The V2 (Open Inference Protocol) codec: round trips, tritonclient's byte layout, and every
malformed request named back to the client."""

from __future__ import annotations

import doctest
import json
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sluice.serving.protocol
from sluice.errors import InferenceError, InvalidTensorError
from sluice.serving.protocol import (
    DATATYPES,
    HEADER_LENGTH,
    InferInput,
    InferRequest,
    RequestedOutput,
    datatype_of,
    decode_request,
    dtype_of,
    encode_response,
)

# One sample per datatype, including each type's extremes.
SAMPLES = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], np.uint8),
    "UINT16": np.array([[0, 7, 65535]], np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1]], np.uint64),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1]], np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], np.int64),
    "FP16": np.array([[-65504.0, 0.1, 65504.0]], np.float16),
    "FP32": np.array([[-3.4e38, 0.1, 1e-30]], np.float32),
    "FP64": np.array([[-1.7e308, 0.1, 5e-324]], np.float64),
    "BYTES": np.array([[b"", b"caf\xc3\xa9", b"a b"]], dtype=object),
}


# -- what a client sends: the layout tritonclient.http builds (_get_inference_request) ---------

def triton_body(arrays: dict[str, np.ndarray], *, binary: bool = True,
                outputs: dict[str, bool] | None = None, request_id: str = ""
                ) -> tuple[bytes, dict[str, str]]:
    """A request body and headers laid out byte for byte as tritonclient.http lays them out:
    compact JSON with keys id, inputs, outputs, parameters in that order; each binary input
    carries binary_data_size and its raw bytes follow the JSON in input order; with no
    requested outputs it asks for all outputs as binary (binary_data_output)."""
    request: dict[str, object] = {}
    if request_id:
        request["id"] = request_id
    tensors, raws = [], []
    for name, array in arrays.items():
        tensor: dict[str, object] = {"name": name, "shape": list(array.shape),
                                     "datatype": datatype_of(array.dtype)}
        if binary:
            raws.append(raw_bytes(array))
            tensor["parameters"] = {"binary_data_size": len(raws[-1])}
        else:
            tensor["data"] = [item.decode() if isinstance(item, bytes) else item
                              for item in array.reshape(-1).tolist()]
        tensors.append(tensor)
    request["inputs"] = tensors
    if outputs:
        request["outputs"] = [{"name": name, "parameters": {"binary_data": flag}}
                              for name, flag in outputs.items()]
    else:
        request["parameters"] = {"binary_data_output": True}
    header = orjson.dumps(request)
    if not raws:
        return header, {}
    return header + b"".join(raws), {HEADER_LENGTH: str(len(header))}


def raw_bytes(array: np.ndarray) -> bytes:
    """tritonclient's serialize_byte_tensor for BYTES, tobytes() (little-endian) otherwise."""
    if array.dtype != object:
        return array.astype(array.dtype.newbyteorder("<")).tobytes()
    return b"".join(struct.pack("<I", len(item)) + item for item in array.reshape(-1).tolist())


# -- what a client reads back: tritonclient's InferResult.as_numpy -----------------------------

def read_response(body: bytes, headers: dict[str, str]) -> dict[str, np.ndarray]:
    length = int(headers.get(HEADER_LENGTH, len(body)))
    doc = orjson.loads(body[:length])
    buffer, offset, arrays = body[length:], 0, {}
    for output in doc["outputs"]:
        dtype = dtype_of(output["datatype"])
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            data = output["data"]
            if output["datatype"] == "BYTES":
                data = [item.encode() for item in data]
            array = np.array(data, dtype=dtype)
        elif output["datatype"] == "BYTES":
            array = np.array(split_bytes(buffer[offset:offset + size]), dtype=object)
        else:
            array = np.frombuffer(buffer[offset:offset + size], dtype=dtype)
        offset += size or 0
        arrays[output["name"]] = array.reshape(output["shape"])
    assert offset == len(buffer)
    return arrays


def split_bytes(raw: bytes) -> list[bytes]:
    items, pos = [], 0
    while pos < len(raw):
        (length,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4:pos + 4 + length])
        pos += 4 + length
    return items


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.shape == b.shape and a.dtype == b.dtype
            and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


# -- the tests ---------------------------------------------------------------------------------

def test_doctest():
    assert doctest.testmod(sluice.serving.protocol).failed == 0


def test_samples_cover_every_datatype():
    assert set(SAMPLES) == set(DATATYPES)


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_survives_a_request(datatype, binary):
    sample = SAMPLES[datatype]
    request = decode_request(*triton_body({"x": sample}, binary=binary))
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, (1, 3))
    assert same(tensor.array, sample.astype(dtype_of(datatype)))


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_survives_a_response(datatype, binary):
    sample = SAMPLES[datatype]
    body, headers = encode_response("m", None, None, {"y": sample}, binary=binary)
    assert same(read_response(body, headers)["y"], sample.astype(dtype_of(datatype)))


@pytest.mark.parametrize(("dtype", "datatype"), [
    (bool, "BOOL"), (np.uint8, "UINT8"), (np.uint16, "UINT16"), (np.uint32, "UINT32"),
    (np.uint64, "UINT64"), (np.int8, "INT8"), (np.int16, "INT16"), (np.int32, "INT32"),
    (np.int64, "INT64"), (np.float16, "FP16"), (np.float32, "FP32"), (np.float64, "FP64"),
    (object, "BYTES"), ("S4", "BYTES"), ("U4", "BYTES"), (">f4", "FP32"), (">i8", "INT64"),
])
def test_datatype_of_and_dtype_of_agree(dtype, datatype):
    assert datatype_of(dtype) == datatype
    assert datatype_of(dtype_of(datatype)) == datatype


@pytest.mark.parametrize("dtype", [np.complex64, "datetime64[s]", "V8", np.float128])
def test_datatype_of_a_dtype_without_one_is_an_inference_error(dtype):
    with pytest.raises(InferenceError, match="has no V2 datatype"):
        datatype_of(dtype)


def test_dtype_of_an_unknown_datatype_lists_the_valid_ones():
    with pytest.raises(InvalidTensorError, match="'BF16'; expected one of BOOL, UINT8, .* BYTES"):
        dtype_of("BF16")


@pytest.mark.parametrize("data", [
    [1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]], [[[1, 2, 3]], [[4, 5, 6]]],
    [[1, 2], [3, 4], [5, 6]],
], ids=["flat", "nested-as-shape", "nested-deeper", "nested-other-shape"])
def test_json_data_flat_or_nested_is_read_row_major(data):
    body = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT32",
                                     "data": data}]})
    assert decode_request(body, {}).tensors["x"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_nested_bytes_data_is_read_row_major():
    body = orjson.dumps({"inputs": [{"name": "s", "shape": [2, 2], "datatype": "BYTES",
                                     "data": [["a", "b"], ["c", "é"]]}]})
    array = decode_request(body, {}).tensors["s"]
    assert array.tolist() == [[b"a", b"b"], [b"c", "é".encode()]]


def test_a_request_exactly_as_tritonclient_http_sends_it():
    # tritonclient.http: InferInput.set_data_from_numpy(binary_data=True is the default),
    # InferRequestedOutput("probs") (binary_data=True) and request_id="42"; the body is
    # json + raw bytes and Inference-Header-Content-Length is the JSON's length.
    pixels = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    mask = np.array([[True, False, True]])
    words = np.array([[b"hello", b""]], dtype=object)
    header = (b'{"id":"42","inputs":['
              b'{"name":"pixels","shape":[1,3,4],"datatype":"FP32",'
              b'"parameters":{"binary_data_size":48}},'
              b'{"name":"mask","shape":[1,3],"datatype":"BOOL",'
              b'"parameters":{"binary_data_size":3}},'
              b'{"name":"words","shape":[1,2],"datatype":"BYTES",'
              b'"parameters":{"binary_data_size":13}}],'
              b'"outputs":[{"name":"probs","parameters":{"binary_data":true}}]}')
    body = (header + pixels.tobytes() + b"\x01\x00\x01"
            + b"\x05\x00\x00\x00hello" + b"\x00\x00\x00\x00")
    assert (body, {HEADER_LENGTH: str(len(header))}) == triton_body(
        {"pixels": pixels, "mask": mask, "words": words}, outputs={"probs": True},
        request_id="42")

    request = decode_request(body, {"Content-Type": "application/octet-stream",
                                    HEADER_LENGTH.lower(): str(len(header))})
    assert request.id == "42"
    assert [tensor.name for tensor in request.inputs] == ["pixels", "mask", "words"]
    assert same(request.tensors["pixels"], pixels)
    assert same(request.tensors["mask"], mask)
    assert request.tensors["words"].tolist() == [[b"hello", b""]]
    assert request.outputs == (RequestedOutput("probs", True),)
    assert request.parameters == {}


def test_without_requested_outputs_tritonclient_gets_every_output_as_binary():
    request = decode_request(*triton_body({"x": SAMPLES["FP32"]}))
    assert request.outputs == ()
    assert request.parameters == {"binary_data_output": True}
    produced: dict[str, np.ndarray] = {"a": np.zeros(2, np.float32), "b": np.ones(1, np.int64)}
    outputs, binary = request.select_outputs(produced)
    assert outputs.keys() == produced.keys() and binary == {"a", "b"}
    body, headers = encode_response("m", "3", None, outputs, binary)
    assert headers["Content-Type"] == "application/octet-stream"
    assert int(headers[HEADER_LENGTH]) == body.index(b"}]}") + 3
    assert all(same(read_response(body, headers)[name], produced[name]) for name in produced)


def test_requested_outputs_are_selected_in_request_order_each_with_its_own_binary_flag():
    body, headers = triton_body({"x": SAMPLES["INT8"]}, outputs={"b": False, "a": True})
    request = decode_request(body, headers)
    produced = {"a": np.zeros(1), "b": np.ones(1), "c": np.ones(1)}
    outputs, binary = request.select_outputs(produced)
    assert list(outputs) == ["b", "a"]
    assert binary == {"a"}


def test_an_output_binary_flag_overrides_the_request_wide_one():
    body = orjson.dumps({"parameters": {"binary_data_output": True}, "inputs": [],
                         "outputs": [{"name": "a"}, {"name": "b",
                                                     "parameters": {"binary_data": False}}]})
    assert decode_request(body, {}).outputs == (RequestedOutput("a", True),
                                                RequestedOutput("b", False))


def test_asking_for_an_output_the_model_does_not_produce_names_it():
    request = decode_request(b'{"inputs": [], "outputs": [{"name": "z"}]}', {})
    with pytest.raises(InvalidTensorError, match=r"output 'z' was requested .* \['y'\]"):
        request.select_outputs({"y": np.zeros(1)})


def test_a_json_response_is_the_v2_response_object():
    body, headers = encode_response("resnet", "2", "abc", {
        "probs": np.array([[0.5, 0.25]], np.float32), "label": np.array([b"cat"], object)})
    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "resnet", "model_version": "2", "id": "abc", "outputs": [
            {"name": "probs", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.25]},
            {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["cat"]}]}


def test_a_mixed_response_puts_binary_outputs_after_the_json_in_order():
    first, second = np.arange(4, dtype=np.int16).reshape(2, 2), np.array([1.5], np.float64)
    body, headers = encode_response("m", None, None, {"j": np.array([1]), "first": first,
                                                      "second": second}, {"second", "first"})
    length = int(headers[HEADER_LENGTH])
    doc = orjson.loads(body[:length])
    assert "model_version" not in doc and "id" not in doc
    assert [output.get("parameters") for output in doc["outputs"]] == [
        None, {"binary_data_size": 8}, {"binary_data_size": 8}]
    assert "data" not in doc["outputs"][1]
    assert body[length:] == first.tobytes() + second.tobytes()


def test_response_arrays_in_any_layout_or_byte_order_are_written_row_major_little_endian():
    base = np.arange(6, dtype=">i4").reshape(2, 3)
    odd: dict[str, np.ndarray] = {"transposed": base.T, "strided": base[:, ::2],
                                  "fortran": np.asfortranarray(base)}
    for binary in (False, True):
        body, headers = encode_response("m", None, None, odd, binary)
        for name, array in read_response(body, headers).items():
            assert array.tolist() == odd[name].tolist()


def test_str_outputs_are_bytes_on_the_wire():
    body, headers = encode_response("m", None, None, {"s": np.array(["é", "b"])}, True)
    assert read_response(body, headers)["s"].tolist() == ["é".encode(), b"b"]


def test_nan_and_infinity_are_null_in_json_and_null_reads_back_as_nan():
    body, _ = encode_response("m", None, None, {"y": np.array([np.nan, np.inf, 1.0])})
    assert orjson.loads(body)["outputs"][0]["data"] == [None, None, 1.0]
    request = decode_request(b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",'
                             b' "data": [null, 1]}]}', {})
    assert np.isnan(request.tensors["x"][0]) and request.tensors["x"][1] == 1


@pytest.mark.parametrize(("outputs", "binary", "message"), [
    ({"y": np.zeros(1, np.complex64)}, False, "output 'y': numpy dtype complex64 has no V2"),
    ({"y": np.array([b"\xff"], object)}, False, "output 'y' holds bytes that are not UTF-8"),
    ({"y": np.array([1, b"a"], object)}, True, "output 'y': BYTES elements must be bytes or"),
    ({"y": np.zeros(1)}, {"z"}, r"binary names outputs the model did not produce: \['z'\]"),
])
def test_unencodable_outputs_are_inference_errors(outputs, binary, message):
    with pytest.raises(InferenceError, match=message):
        encode_response("m", None, None, outputs, binary)


def test_decoded_arrays_are_read_only_and_binary_ones_are_views_of_the_body():
    body, headers = triton_body({"x": np.arange(4, dtype=np.float32)})
    for request in (decode_request(body, headers),
                    decode_request(*triton_body({"x": np.arange(4.0)}, binary=False))):
        with pytest.raises(ValueError, match="read-only"):
            request.tensors["x"][0] = 9
    assert np.shares_memory(decode_request(body, headers).tensors["x"],
                            np.frombuffer(body, np.uint8))


def test_records_are_immutable_and_validated_when_built():
    tensor = InferInput("x", "FP32", (2,), np.zeros(2, np.float32))
    request = InferRequest(None, (tensor,), (), {})
    with pytest.raises(AttributeError):
        request.id = "other"  # type: ignore[misc]
    with pytest.raises(InvalidTensorError, match=r"input 'x': array is float64 \[2\] but FP32"):
        InferInput("x", "FP32", (2,), np.zeros(2))
    with pytest.raises(InvalidTensorError, match=r"array is float32 \[3\] but FP32 \[2\]"):
        InferInput("x", "FP32", (2,), np.zeros(3, np.float32))


def test_header_length_equal_to_the_body_means_no_binary_data():
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [3]}]}'
    assert decode_request(body, {HEADER_LENGTH: str(len(body))}).tensors["x"].tolist() == [3]


def test_empty_tensors_decode_in_json_and_binary():
    for datatype in DATATYPES:
        empty = np.zeros((0, 2), dtype_of(datatype))
        for binary in (False, True):
            tensor = decode_request(*triton_body({"e": empty}, binary=binary)).tensors["e"]
            assert tensor.shape == (0, 2) and tensor.dtype == dtype_of(datatype)


def x_input(**fields: object) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                                     "data": [1, 2]} | fields]})


def binary_x(size: object, raw: bytes, datatype: str = "FP32", shape: object = (1, 2)
             ) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                       "parameters": {"binary_data_size": size}}]})
    return header + raw, {HEADER_LENGTH: str(len(header))}


ERRORS = [
    # (what is wrong, body, headers, the message; None if the message must name input 'x')
    ("count", x_input(shape=[1, 64], data=list(range(63))), {},
     "input 'x': data has 63 values but shape [1, 64] needs 64"),
    ("count-nested", x_input(data=[[1], [2], [3]]), {},
     "input 'x': data has 3 values but shape [1, 2] needs 2"),
    ("unknown-datatype", x_input(datatype="FLOAT"), {},
     "input 'x': unknown datatype 'FLOAT'; expected one of BOOL, UINT8, UINT16, UINT32, UINT64, "
     "INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"),
    ("lowercase-datatype", x_input(datatype="fp32"), {}, "input 'x': unknown datatype 'fp32'"),
    ("string-in-fp32", x_input(data=[1.5, "2"]), {},
     "input 'x': FP32 data must be numbers, got '2'"),
    ("bool-in-fp32", x_input(data=[True, False]), {},
     "input 'x': FP32 data must be numbers, got True"),
    ("object-in-fp32", x_input(data=[1, {"a": 1}]), {},
     "input 'x': FP32 data must be numbers, got {'a': 1}"),
    ("float-in-int", x_input(datatype="INT32", data=[1, 2.5]), {},
     "input 'x': INT32 data must be integers in [-2147483648, 2147483647], got 2.5"),
    ("overflow-int8", x_input(datatype="INT8", data=[1, 128]), {},
     "input 'x': INT8 data must be integers in [-128, 127], got 128"),
    ("negative-uint", x_input(datatype="UINT8", data=[-1, 0]), {},
     "input 'x': UINT8 data must be integers in [0, 255], got -1"),
    ("uint64-and-negative", x_input(datatype="UINT64", data=[2**64 - 1, -1]), {},
     "input 'x': UINT64 data must be integers in [0, 18446744073709551615], got -1"),
    ("null-in-int", x_input(datatype="INT64", data=[1, None]), {},
     "input 'x': INT64 data must be integers in [-9223372036854775808, 9223372036854775807], "
     "got None"),
    ("int-in-bool", x_input(datatype="BOOL", data=[1, 0]), {},
     "input 'x': BOOL data must be true or false, got 1"),
    ("number-in-bytes", x_input(datatype="BYTES", data=["a", 1]), {},
     "input 'x': BYTES data must be strings, got 1"),
    ("fp16-overflow", x_input(datatype="FP16", data=[1, 1e5]), {},
     "input 'x': a value in data is beyond the FP16 range"),
    # flat lists of FP32, FP64 and INT64 numbers take a fast path: it must refuse the same
    ("fp32-overflow", x_input(data=[1, 1e39]), {},
     "input 'x': a value in data is beyond the FP32 range"),
    ("fp32-overflow-beside-null", x_input(data=[None, 3.5e38]), {},
     "input 'x': a value in data is beyond the FP32 range"),
    ("int32-overflow", x_input(datatype="INT32", data=[1, 2**40]), {},
     "input 'x': INT32 data must be integers in [-2147483648, 2147483647], got 1099511627776"),
    ("int64-overflow", x_input(datatype="INT64", data=[1, 2**63]), {},
     "input 'x': INT64 data must be integers in [-9223372036854775808, 9223372036854775807], "
     "got 9223372036854775808"),
    ("ragged", x_input(shape=[2, 2], data=[[1, 2], [3]]), {},
     "input 'x': data is not a rectangular nested list"),
    ("data-not-a-list", x_input(data=5), {}, "input 'x': data must be a JSON array, got a number"),
    ("negative-shape", x_input(shape=[-1, 2]), {},
     "input 'x': shape must be a list of non-negative integers, got [-1, 2]"),
    ("float-shape", x_input(shape=[1.0, 2]), {},
     "input 'x': shape must be a list of non-negative integers, got [1.0, 2]"),
    ("bool-shape", x_input(shape=[True, 2]), {},
     "input 'x': shape must be a list of non-negative integers, got [True, 2]"),
    ("shape-not-a-list", x_input(shape="1,2"), {}, "input 'x': shape must be a list"),
    ("no-shape", orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "data": []}]}), {},
     "input 'x' has no 'shape'"),
    ("no-datatype", orjson.dumps({"inputs": [{"name": "x", "shape": [0], "data": []}]}), {},
     "input 'x' has no 'datatype'"),
    ("no-data", orjson.dumps({"inputs": [{"name": "x", "shape": [0], "datatype": "FP32"}]}),
     {}, "input 'x' has neither data nor binary_data_size"),
    ("no-name", orjson.dumps({"inputs": [{"shape": [0], "datatype": "FP32", "data": []}]}), {},
     "inputs[0] needs a 'name' string, got None"),
    ("input-not-object", b'{"inputs": [[1, 2]]}', {},
     "inputs[0] must be a JSON object, got an array"),
    ("no-inputs", b'{"id": "1"}', {}, "the request has no 'inputs' list"),
    ("inputs-not-list", b'{"inputs": {"x": 1}}', {}, "'inputs' must be a list, got an object"),
    ("not-json", b'{"inputs": [', {}, "the request is not valid JSON"),
    ("not-utf8", b'{"inputs": ["\xff"]}', {}, "the request is not valid JSON"),
    ("not-object", b'[1, 2]', {}, "the request must be a JSON object, got an array"),
    ("id-not-string", b'{"id": 5, "inputs": []}', {},
     "the request id must be a string, got a number"),
    ("parameters-not-object", b'{"parameters": [1], "inputs": []}', {},
     "the request: parameters must be an object"),
    ("parameter-value-object", b'{"parameters": {"a": {}}, "inputs": []}', {},
     "parameters must be an object of strings, numbers and booleans"),
    ("binary-output-not-bool", b'{"inputs": [], "outputs": [{"name": "y", '
     b'"parameters": {"binary_data": 1}}]}', {}, "output 'y': binary_data must be true or false"),
    ("binary-data-output-not-bool", b'{"parameters": {"binary_data_output": "yes"}, "inputs": []}',
     {}, "binary_data_output must be true or false"),
    ("duplicate-input", orjson.dumps({"inputs": [orjson.loads(x_input())["inputs"][0]] * 2}), {},
     "input 'x' appears twice; names must be unique"),
    ("duplicate-output", b'{"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]}', {},
     "output 'y' is requested twice"),
    ("data-and-binary", x_input(parameters={"binary_data_size": 8}), {},
     "input 'x' has both data and binary_data_size"),
    ("binary-past-body", *binary_x(8, b"\0" * 4),
     "input 'x': binary_data_size 8 runs past the end of the body (4 bytes of binary data left)"),
    ("binary-without-header", binary_x(8, b"")[0], {}, "input 'x': binary_data_size 8 runs past"),
    ("binary-wrong-size", *binary_x(4, b"\0" * 4),
     "input 'x': binary_data_size is 4 bytes but shape [1, 2] of FP32 needs 8"),
    ("binary-size-negative", *binary_x(-8, b""),
     "input 'x': binary_data_size must be a non-negative integer, got -8"),
    ("binary-size-string", *binary_x("8", b"\0" * 8),
     "input 'x': binary_data_size must be a non-negative integer, got '8'"),
    ("binary-unused", *binary_x(8, b"\0" * 12),
     "the body has 4 bytes of binary data that no input's binary_data_size accounts for"),
    ("binary-bool-not-0-or-1", *binary_x(2, b"\x01\x02", "BOOL"),
     "input 'x': BOOL binary data must be bytes 0 or 1"),
    ("bytes-length-past-end", *binary_x(9, b"\x06\0\0\0abcd\0", "BYTES"),
     "input 'x': BYTES element 0 is 6 bytes long but only 5 bytes of binary data are left"),
    ("bytes-no-prefix", *binary_x(8, b"\x02\0\0\0ab\0\0", "BYTES"),
     "input 'x': BYTES element 1 has no 4-byte length prefix"),
    ("bytes-unused", *binary_x(11, b"\x01\0\0\0a\x01\0\0\0bz", "BYTES"),
     "input 'x': binary_data_size is 11 bytes but the 2 BYTES elements of shape [1, 2] take 10"),
    ("bytes-huge-shape", *binary_x(8, b"\0" * 8, "BYTES", [10**9, 10**9]),
     "input 'x': binary_data_size is 8 bytes, too few for the 1000000000000000000 BYTES"),
    ("header-past-body", b'{"inputs": []}', {HEADER_LENGTH: "99"},
     "Inference-Header-Content-Length is 99 but the body has only 14 bytes"),
    ("header-not-a-number", b'{"inputs": []}', {HEADER_LENGTH: "ten"},
     "Inference-Header-Content-Length must be a non-negative integer, got 'ten'"),
    ("header-negative", b'{"inputs": []}', {HEADER_LENGTH: "-1"}, "non-negative integer"),
]


@pytest.mark.parametrize(("body", "headers", "message"), [case[1:] for case in ERRORS],
                         ids=[case[0] for case in ERRORS])
def test_malformed_requests_say_what_is_wrong_and_what_was_expected(body, headers, message):
    with pytest.raises(InvalidTensorError) as caught:
        decode_request(body, headers)
    assert message in str(caught.value)
    assert caught.value.http_status == 400


# -- a property: any array of any datatype comes back as it went, both ways --------------------

def arrays_of(datatype: str) -> st.SearchStrategy[np.ndarray]:
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    if datatype == "BYTES":  # JSON carries text; binary data any bytes
        text = st.text(st.characters(codec="utf-8"), max_size=6)
        return hnp.arrays(object, shapes, elements=st.one_of(
            st.binary(max_size=6), text.map(str.encode)))
    dtype = dtype_of(datatype)
    elements = (st.floats(width=8 * dtype.itemsize, allow_nan=False, allow_infinity=False)
                if dtype.kind == "f" else None)
    return hnp.arrays(dtype, shapes, elements=elements)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray, bool]:
    datatype = draw(st.sampled_from(DATATYPES))
    array = draw(arrays_of(datatype))
    binary = draw(st.booleans())
    if datatype == "BYTES" and not binary:  # JSON strings are text: keep the UTF-8 elements
        array = np.vectorize(lambda item: item if _utf8(item) else b"?", otypes=[object])(array)
    return datatype, array, binary


def _utf8(item: bytes) -> bool:
    try:
        item.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=200, deadline=None, database=None)
@given(tensors())
def test_any_tensor_round_trips_through_request_and_response(tensor):
    datatype, array, binary = tensor
    request = decode_request(*triton_body({"t": array}, binary=binary))
    assert request.inputs[0].datatype == datatype
    assert same(request.tensors["t"], array)
    body, headers = encode_response("m", None, None, request.tensors, binary)
    assert same(read_response(body, headers)["t"], array)


_ANY_JSON_SCALAR = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.none(), st.text(max_size=3),
    st.sampled_from([2**63 - 1, -(2**63), 2**63, 3.4028234663852886e38, 3.5e38, -3.5e38]))


@settings(max_examples=300)
@given(datatype=st.sampled_from(["FP32", "FP64", "INT64"]),
       data=st.lists(_ANY_JSON_SCALAR, min_size=1, max_size=6))
def test_the_fast_path_decodes_and_refuses_as_the_general_path_does(datatype, data):
    # flat lists of FP32/FP64/INT64 take a shortcut; "parameters" sends the same request the
    # general way: both must give the same array, or the same error
    tensor = {"name": "x", "shape": [1, len(data)], "datatype": datatype, "data": data}
    outcomes = []
    for doc in ({"inputs": [tensor]}, {"inputs": [tensor], "parameters": {}}):
        try:
            array = decode_request(json.dumps(doc).encode(), {}).tensors["x"]
            outcomes.append((array.dtype, array.shape, array.tobytes(), array.flags.writeable))
        except InvalidTensorError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
