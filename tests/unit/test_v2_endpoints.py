"""The V2 REST routes over served models, called as the HTTP trigger will call them."""

from __future__ import annotations

import asyncio
import doctest

import numpy as np
import orjson
import pytest

import sluice.serving.endpoints
from sluice.serving import Batcher, ServiceTimes
from sluice.serving.endpoints import Endpoints, ServedModel
from sluice.serving.triton_config import Tensor
from sluice.tally import SHARED


def test_doctest():
    assert doctest.testmod(sluice.serving.endpoints).failed == 0


class Affine:
    """y = 2x + 1 on rows of 4 floats; records batch sizes; can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.fail = False

    async def __call__(self, inputs):
        self.batches.append(len(inputs["x"]))
        if self.fail:
            raise RuntimeError("device lost")
        return {"y": inputs["x"] * 2 + 1, "norm": np.linalg.norm(inputs["x"], axis=1)}


def served(model=None, times=None) -> tuple[Endpoints, Affine]:
    model = model or Affine()
    batcher = Batcher(model, latency=2.0, times=times)
    endpoint = ServedModel("affine", "3", [Tensor("x", "FP32", (4,))],
                           [Tensor("y", "FP32", (4,)), Tensor("norm", "FP32", (1,))], batcher)
    return Endpoints([endpoint], version="1.2"), model


def infer_body(rows: list[list[float]], datatype: str = "FP32", name: str = "x",
               outputs: list[str] | None = None) -> bytes:
    body: dict = {"id": "r1", "inputs": [{"name": name, "shape": [len(rows), len(rows[0])],
                                          "datatype": datatype, "data": rows}]}
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return orjson.dumps(body)


# Each test runs twice: through Endpoints.handle (a coroutine: Kafka messages, tests) and
# through Endpoints.answer (a callback: the HTTP trigger's path), which must agree.
ENTRY = "handle"


@pytest.fixture(autouse=True, params=["handle", "answer"])
def entry(request):
    global ENTRY
    ENTRY = request.param
    yield request.param
    ENTRY = "handle"


async def request(endpoints: Endpoints, method: str, path: str, headers: dict, body: bytes):
    """One request through the entry point under test; answer's callback must come once."""
    if ENTRY == "handle":
        return await endpoints.handle(method, path, headers, body)
    replies: list = []
    done = asyncio.Event()

    def respond(reply):
        replies.append(reply)
        done.set()

    endpoints.answer(method, path, headers, body, respond)
    await done.wait()
    for _ in range(3):  # a second answer would come in the next steps
        await asyncio.sleep(0)
    assert len(replies) == 1, replies
    return replies[0]


def call(endpoints: Endpoints, method: str, path: str, body: bytes = b"",
         headers: dict | None = None):
    status, out_headers, out = asyncio.run(request(endpoints, method, path, headers or {}, body))
    return status, out_headers, orjson.loads(out) if out_headers.get(
        "Content-Type") == "application/json" else out


def test_health_and_metadata():
    endpoints, _ = served()
    assert call(endpoints, "GET", "/v2/health/live")[2] == {"live": True}
    assert call(endpoints, "GET", "/v2/health/ready")[:3:2] == (200, {"ready": True})
    assert call(endpoints, "GET", "/v2")[2]["extensions"] == ["binary_tensor_data"]
    status, _, meta = call(endpoints, "GET", "/v2/models/affine")
    assert status == 200 and meta["versions"] == ["3"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert call(endpoints, "GET", "/v2/models/affine/versions/3/ready")[2] == {
        "name": "affine", "ready": True}


def test_infer_answers_with_the_requested_outputs():
    endpoints, _ = served()
    status, _, out = call(endpoints, "POST", "/v2/models/affine/infer",
                          infer_body([[1, 2, 3, 4]], outputs=["y"]))
    assert status == 200 and out["id"] == "r1" and out["model_version"] == "3"
    assert [(o["name"], o["shape"], o["data"]) for o in out["outputs"]] == [
        ("y", [1, 4], [3.0, 5.0, 7.0, 9.0])]


def test_binary_tensors_in_and_out_as_tritonclient_sends_them():
    endpoints, _ = served()
    x = np.arange(8, dtype="<f4").reshape(2, 4)
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 32}}],
                           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    status, headers, out = asyncio.run(request(
        endpoints, "POST", "/v2/models/affine/versions/3/infer",
        {"Inference-Header-Content-Length": str(len(header))}, header + x.tobytes()))
    assert status == 200
    size = int(headers["Inference-Header-Content-Length"])
    meta = orjson.loads(out[:size])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 32
    np.testing.assert_array_equal(np.frombuffer(out[size:], "<f4").reshape(2, 4), x * 2 + 1)


def test_concurrent_requests_are_batched_and_each_gets_its_rows():
    endpoints, model = served()

    async def main():
        bodies = [infer_body([[float(i)] * 4]) for i in range(20)]
        return await asyncio.gather(*(request(endpoints, "POST", "/v2/models/affine/infer",
                                              {}, b) for b in bodies))

    replies = asyncio.run(main())
    for i, (status, _, out) in enumerate(replies):
        assert status == 200
        y = next(o for o in orjson.loads(out)["outputs"] if o["name"] == "y")
        assert y["data"] == [2.0 * i + 1] * 4
    assert len(model.batches) < 20  # some requests shared a batch


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), [
    ("GET", "/v2/models/nope", b"", 404, "model 'nope' is not served here (models: affine)"),
    ("GET", "/v2/models/affine/versions/9", b"", 404, "has no version '9' here (serving "
                                                        "version 3)"),
    ("GET", "/v3/whatever", b"", 404, "no route '/v3/whatever'"),
    ("GET", "/v2/models/affine/infer", b"", 405, "GET /v2/models/affine/infer: use POST"),
    ("POST", "/v2/models/affine/infer", b"{not json", 400, "not valid JSON"),
    ("POST", "/v2/models/affine/infer", infer_body([[1, 2, 3, 4]], name="z"), 400,
     "input 'z' is not an input of model 'affine' (its inputs: x)"),
    ("POST", "/v2/models/affine/infer", infer_body([[1, 2, 3, 4]], datatype="FP64"), 400,
     "input 'x': datatype FP64, but model 'affine' takes FP32"),
    ("POST", "/v2/models/affine/infer", infer_body([[1, 2, 3]]), 400,
     "input 'x': shape [1, 3], but model 'affine' takes [-1, 4]"),
    ("POST", "/v2/models/affine/infer", infer_body([[1, 2, 3, 4]], outputs=["logits"]), 400,
     "logits"),
])
def test_errors_are_json_with_the_right_status(method, path, body, status, message):
    endpoints, _ = served()
    got_status, headers, out = call(endpoints, method, path, body)
    assert got_status == status and headers["Content-Type"] == "application/json"
    assert message in out["error"], out


def test_an_overloaded_model_answers_503_and_a_failing_one_500():
    slow = ServiceTimes()
    slow.observe(1, 10.0)  # ten seconds a batch against a 2 s objective
    endpoints, _ = served(times=slow)
    status, _, out = call(endpoints, "POST", "/v2/models/affine/infer", infer_body([[1] * 4]))
    assert status == 503 and "cannot be served within its deadline" in out["error"]

    endpoints, model = served()
    model.fail = True
    status, _, out = call(endpoints, "POST", "/v2/models/affine/infer", infer_body([[1] * 4]))
    assert status == 500 and out["error"] == "the model failed: RuntimeError: device lost"


def test_metrics_count_batches_waits_and_requests_by_status():
    from prometheus_client import CollectorRegistry, generate_latest

    from sluice.serving.metrics import ServingMetrics

    registry = CollectorRegistry()
    metrics = ServingMetrics("affine", "3", registry=registry)
    model = Affine()
    batcher = Batcher(model, latency=2.0, on_batch=lambda stats: metrics.on_batch(stats, 0))
    endpoints = Endpoints([ServedModel("affine", "3", [Tensor("x", "FP32", (4,))],
                                       [Tensor("y", "FP32", (4,))], batcher,
                                       count=metrics.count)])
    assert call(endpoints, "POST", "/v2/models/affine/infer", infer_body([[1] * 4] * 3))[0] == 200
    assert call(endpoints, "POST", "/v2/models/affine/infer", infer_body([[1] * 3]))[0] == 400
    assert 'status="200",version="3"} 1.0' not in generate_latest(registry).decode()
    SHARED.flush()  # counts are held in process until the worker's tally writes them
    page = generate_latest(registry).decode()
    labels = 'model="affine",version="3"'
    assert 'sluice_inference_requests_total{model="affine",status="200",version="3"} 1.0' in page
    assert 'sluice_inference_requests_total{model="affine",status="400",version="3"} 1.0' in page
    assert f'sluice_batch_size_sum{{{labels}}} 3.0' in page
    assert f'sluice_batch_queue_wait_seconds_count{{{labels}}} 1.0' in page
    assert f'sluice_batch_compute_seconds_count{{{labels}}} 1.0' in page


def test_each_answer_has_its_own_headers():
    endpoints, _ = served()
    first = asyncio.run(request(endpoints, "GET", "/v2/health/live", {}, b""))[1]
    first.pop("Content-Type")  # what the serving runner does with them
    assert asyncio.run(request(endpoints, "GET", "/v2/health/live", {}, b""))[1] == {
        "Content-Type": "application/json"}


def test_a_stream_record_is_scored_with_its_other_fields_passed_through():
    async def main():
        endpoints, model = served()
        one = await endpoints.score(orjson.dumps({"id": "t7", "label": 1, "x": [1, 2, 3, 4]}),
                                    {})
        many = await endpoints.score({"x": [[0, 0, 0, 0], [1, 1, 1, 1]], "batch": "b2"}, {})
        missing = await endpoints.score({"id": "t8", "z": [1]}, {})
        return one, many, missing

    one, many, missing = asyncio.run(main())
    assert one[0] == 200 and orjson.loads(one[2]) == {
        "id": "t7", "label": 1, "y": [3.0, 5.0, 7.0, 9.0], "norm": pytest.approx(5.477, abs=1e-3)}
    assert orjson.loads(many[2])["batch"] == "b2" and orjson.loads(many[2])["y"][1] == [3.0] * 4
    assert missing[0] == 400 and b"the message has no 'x'" in missing[2]


def test_a_micro_batch_of_records_is_stacked_into_one_model_batch():
    async def main():
        endpoints, model = served()
        records = [{"id": f"t{i}", "x": [i, i, i, i]} for i in range(5)]
        good = await endpoints.score_many(records)
        batches_for_good = list(model.batches)
        mixed = await endpoints.score_many([
            {"id": "a", "x": [1, 1, 1, 1]},
            {"id": "b", "z": [1]},  # no input: told so, alone
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                         "data": [0, 0, 0, 0]}]},  # a V2 request: answered as one
            {"id": "c", "x": [2, 2, 2, 2]}])
        ragged = await endpoints.score_many([{"x": [1, 1, 1, 1]}, {"x": [1, 1]}])
        return good, batches_for_good, mixed, ragged

    good, batches, mixed, ragged = asyncio.run(main())
    assert batches == [5]  # five messages, one model batch
    bodies = [orjson.loads(body) for _, _, body in good]
    assert [b["id"] for b in bodies] == ["t0", "t1", "t2", "t3", "t4"]
    assert bodies[3]["y"] == [7.0, 7.0, 7.0, 7.0] and "x" not in bodies[3]
    assert [status for status, _, _ in mixed] == [200, 400, 200, 200]
    assert orjson.loads(mixed[0][2])["id"] == "a" and orjson.loads(mixed[3][2])["y"][0] == 5.0
    assert b"the message has no 'x'" in mixed[1][2]
    assert "outputs" in orjson.loads(mixed[2][2])  # the V2 response form
    assert [status for status, _, _ in ragged] == [200, 400]  # scored alone, told why
