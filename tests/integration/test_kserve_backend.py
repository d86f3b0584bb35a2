"""A kserve.Model subclass served by sluice: real kserve, handler modules written to disk,
weights read from the registry artifact the model is given."""

from __future__ import annotations

import asyncio
import doctest
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import sluice.serving.kserve_backend
from sluice.errors import ArtifactError, HandlerError, InferenceError
from sluice.serving.kserve_backend import (
    MODEL_PATH_ENV,
    KServeModel,
    find_model_class,
    import_kserve,
)
from sluice.serving.registry import ModelRegistry, open_store
from tests.conftest import submit_concurrently

import_kserve()  # before any handler module's own `import kserve`

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(7)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
X = RNG.standard_normal((5, 4)).astype(np.float32)  # a batch of several rows


@pytest.fixture(autouse=True)
def _keep_environment():
    saved = os.environ.get(MODEL_PATH_ENV)
    yield
    if saved is None:
        os.environ.pop(MODEL_PATH_ENV, None)
    else:
        os.environ[MODEL_PATH_ENV] = saved


def handler_module(tmp_path: Path, source: str, name: str = "serve") -> ModuleType:
    """Write ``source`` as ``name.py`` and import it, as the worker imports a handler."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def weights(tmp_path) -> Path:
    """The artifact as the runner hands it over: pushed to the registry, then fetched."""
    source = tmp_path / "linear.npz"
    np.savez(source, w=W, b=B)
    registry = ModelRegistry(open_store(str(tmp_path / "store")))
    record = registry.push("fraud", source)
    return registry.fetch(record, tmp_path / "cache")


def linear_source(pre: str = "", predict: str = "", post: str = "",
                  returns: str = "array") -> str:
    """A Fraud model: preprocess doubles x, predict computes x @ w + b, postprocess passes it
    on; each ``async `` or not; each records the thread it ran on."""
    value = {"array": "y", "list": "y.tolist()", "dict": "{'y': y}",
             "response": "InferResponse('r', self.name, [output])"}[returns]
    return f"""
        import threading

        import kserve
        import numpy as np
        from kserve.protocol.infer_type import InferOutput, InferResponse

        class Fraud(kserve.Model):
            def __init__(self, name):
                super().__init__(name)
                self.ready = False
                self.threads = {{}}

            def load(self):
                with np.load(self.model_path) as saved:
                    self.w, self.b = saved["w"], saved["b"]
                self.ready = True

            {pre}def preprocess(self, payload, headers=None):
                self.threads["pre"] = threading.current_thread().name
                return payload.inputs[0].as_numpy() * 2

            {predict}def predict(self, payload, headers=None):
                self.threads["predict"] = threading.current_thread().name
                y = payload @ self.w + self.b
                output = InferOutput("y", list(y.shape), "FP32")
                output.set_data_from_numpy(y)
                return {value}

            {post}def postprocess(self, result, headers=None):
                self.threads["post"] = threading.current_thread().name
                return result
        """


def call(model: KServeModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return asyncio.run(model(inputs))


def test_doctest():
    result = doctest.testmod(sluice.serving.kserve_backend)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("pre", ["", "async "])
@pytest.mark.parametrize("predict", ["", "async "])
@pytest.mark.parametrize("post", ["", "async "])
def test_sync_and_async_methods_answer_every_row_with_the_artifact_weights(
        tmp_path, weights, pre, predict, post):
    module = handler_module(tmp_path, linear_source(pre, predict, post))
    model = KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])
    got = call(model, {"x": X})
    np.testing.assert_allclose(got["y"], (X * 2) @ W + B, rtol=1e-5)
    assert got["y"].shape == (5, 3)
    # sync methods on the model's own thread, async ones on the event loop's
    for step, prefix in (("pre", pre), ("predict", predict), ("post", post)):
        ran_on = model.model.threads[step]
        assert ran_on.startswith("sluice-kserve") != bool(prefix), (step, ran_on)
    model.close()


@pytest.mark.parametrize("returns", ["array", "list", "dict", "response"])
def test_predict_may_return_an_infer_response_a_dict_an_array_or_a_list(tmp_path, weights,
                                                                          returns):
    module = handler_module(tmp_path, linear_source(returns=returns))
    model = KServeModel.load(find_model_class(module), weights, name="fraud",
                             outputs=["y", "unused"])
    got = call(model, {"x": X})
    assert list(got) == ["y"]
    np.testing.assert_allclose(got["y"], (X * 2) @ W + B, rtol=1e-5)
    model.close()


def test_the_request_is_a_real_kserve_infer_request_holding_the_batch(tmp_path, weights):
    module = handler_module(tmp_path, """
        import kserve
        from kserve.protocol.infer_type import InferRequest

        class Echo(kserve.Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                assert isinstance(payload, InferRequest) and headers == {}
                self.seen = [(i.name, i.datatype, i.shape) for i in payload.inputs]
                return {i.name: i.as_numpy() for i in payload.inputs}
        """)
    model = KServeModel.load(find_model_class(module), weights, name="echo", outputs=["x"])
    ids = np.arange(5, dtype=np.int64).reshape(5, 1)
    # not UTF-8: BYTES that JSON cannot carry reach predict as binary data, bytes intact
    words = np.array([[b"a"], [b"bc"], [b""], [b"\xff"], [b"e"]], dtype=object)
    got = call(model, {"x": X, "ids": ids, "words": words})
    assert model.model.seen == [("x", "FP32", [5, 4]), ("ids", "INT64", [5, 1]),
                                ("words", "BYTES", [5, 1])]
    np.testing.assert_array_equal(got["x"], X)
    np.testing.assert_array_equal(got["ids"], ids)
    assert got["words"].tolist() == words.tolist()
    model.close()


def test_utf8_bytes_inputs_arrive_as_kserves_rest_server_gives_them(tmp_path, weights):
    module = handler_module(tmp_path, """
        import kserve
        import numpy as np
        from kserve.utils.utils import get_predict_input

        class Lengths(kserve.Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                texts = get_predict_input(payload)  # kserve's idiom: a list of str
                self.seen = texts
                return np.array([[len(text)] for text in texts], np.int32)
        """)
    model = KServeModel.load(find_model_class(module), weights, name="lengths",
                             outputs=["n"])
    texts = np.array([t.encode() for t in ["hello", "", "héllo"]], dtype=object)
    got = call(model, {"text": texts})
    assert model.model.seen == ["hello", "", "héllo"]
    np.testing.assert_array_equal(got["n"], [[5], [0], [5]])
    model.close()


def test_a_model_without_predict_is_a_handler_error(tmp_path, weights):
    module = handler_module(tmp_path, """
        import kserve

        class Fraud(kserve.Model):
            def load(self):
                self.ready = True
        """)
    with pytest.raises(HandlerError, match=r"Fraud does not define predict\(self, payload"):
        KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])


def test_a_saved_torch_module_loaded_from_model_path_answers_like_its_forward(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 2).eval()
    path = tmp_path / "linear.pt"
    torch.save(linear, path)
    module = handler_module(tmp_path, """
        import kserve
        import torch

        class Scorer(kserve.Model):
            def load(self):
                self.net = torch.load(self.model_path, weights_only=False).eval()
                self.ready = True

            def predict(self, payload, headers=None):
                with torch.inference_mode():
                    x = torch.from_numpy(payload.inputs[0].as_numpy().copy())
                    return self.net(x).numpy()
        """)
    model = KServeModel.load(find_model_class(module), path, name="scorer", outputs=["score"])
    got = call(model, {"x": X})
    with torch.inference_mode():
        want = linear(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(got["score"], want, rtol=1e-5, atol=1e-6)
    model.close()


def test_model_path_is_set_before_load_and_exported_before_the_class_is_built(tmp_path,
                                                                              weights):
    module = handler_module(tmp_path, """
        import os
        import kserve

        class Fraud(kserve.Model):
            def __init__(self, name):
                super().__init__(name)
                self.env_at_init = os.environ.get("SLUICE_MODEL_PATH")

            def load(self):
                self.path_at_load = self.model_path
                self.ready = True

            def predict(self, payload, headers=None):
                return payload.inputs[0].as_numpy()
        """)
    model = KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])
    assert model.model.name == "fraud"
    assert model.model.path_at_load == weights and isinstance(model.model.path_at_load, Path)
    assert model.model.env_at_init == str(weights) == os.environ[MODEL_PATH_ENV]
    model.close()


def test_an_async_load_runs_to_completion(tmp_path, weights):
    module = handler_module(tmp_path, """
        import asyncio
        import kserve
        import numpy as np

        class Fraud(kserve.Model):
            async def load(self):
                await asyncio.sleep(0)
                self.w = np.load(self.model_path)["w"]
                self.ready = True

            async def predict(self, payload, headers=None):
                return payload.inputs[0].as_numpy() @ self.w
        """)
    model = KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])
    np.testing.assert_allclose(call(model, {"x": X})["y"], X @ W, rtol=1e-5)
    model.close()


def test_a_load_that_raises_is_an_artifact_error_with_the_reason(tmp_path, weights):
    module = handler_module(tmp_path, """
        import kserve

        class Fraud(kserve.Model):
            def load(self):
                raise KeyError("layer 3 missing from the checkpoint")

            def predict(self, payload, headers=None):
                return payload.inputs[0].as_numpy()
        """)
    with pytest.raises(ArtifactError, match=r"Fraud.load\(\) failed on .*linear.npz: "
                                            r"KeyError: 'layer 3 missing"):
        KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])


def test_a_load_that_leaves_ready_false_is_an_artifact_error(tmp_path, weights):
    module = handler_module(tmp_path, """
        import kserve

        class Fraud(kserve.Model):
            def load(self):
                self.weights = self.model_path.read_bytes()

            def predict(self, payload, headers=None):
                return payload.inputs[0].as_numpy()
        """)
    with pytest.raises(ArtifactError, match=r"Fraud.load\(\) returned but the model is not "
                                            r"ready: set self.ready = True"):
        KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])


def test_a_constructor_that_raises_is_a_handler_error(tmp_path, weights):
    module = handler_module(tmp_path, """
        import kserve

        class Fraud(kserve.Model):
            def __init__(self, name, threshold):
                super().__init__(name)

            def predict(self, payload, headers=None):
                return payload.inputs[0].as_numpy()
        """)
    with pytest.raises(HandlerError, match=r"Fraud\('fraud'\) failed: TypeError"):
        KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])


@pytest.mark.parametrize("prefix", ["", "async "])
def test_a_predict_that_raises_reaches_the_caller_and_the_next_call_is_served(
        tmp_path, weights, prefix):
    module = handler_module(tmp_path, f"""
        import kserve

        class Fraud(kserve.Model):
            def load(self):
                self.ready = True

            {prefix}def predict(self, payload, headers=None):
                x = payload.inputs[0].as_numpy()
                if (x < 0).any():
                    raise ValueError("negative amounts are not scored")
                return x + 1
        """)
    model = KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])

    async def main():
        with pytest.raises(ValueError, match="negative amounts"):
            await model({"x": -np.ones((2, 4), np.float32)})
        return await model({"x": np.ones((2, 4), np.float32)})

    np.testing.assert_array_equal(asyncio.run(main())["y"], np.full((2, 4), 2, np.float32))
    model.close()


@pytest.mark.parametrize(("returned", "message"), [
    ("None", r"Fraud returned NoneType; expected a kserve.InferResponse, a dict .* or an "
             r"array or list \(which becomes output 'y'\)"),
    ("'fraud'", r"Fraud returned str; expected"),
    ("(x, x)", r"Fraud returned tuple; expected"),
    ("{'y': 0.5}", r"output 'y' as float; an array or list is expected"),
    ("{'y': np.float32(0.5)}", r"output 'y' as float32; an array or list is expected"),
    ("{0: x}", r"dict with key 0; its keys must be output names"),
    ("{}", r"empty dict"),
    ("[[1, 2], [3]]", r"output 'y' as a list that is not a regular array"),
])
def test_a_wrong_return_value_is_an_inference_error_saying_what_is_expected(
        tmp_path, weights, returned, message):
    module = handler_module(tmp_path, f"""
        import kserve
        import numpy as np

        class Fraud(kserve.Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                x = payload.inputs[0].as_numpy()
                return {returned}
        """)
    model = KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])
    with pytest.raises(InferenceError, match=message):
        call(model, {"x": X})
    model.close()


def test_the_event_loop_keeps_serving_while_a_sync_predict_runs(tmp_path, weights):
    module = handler_module(tmp_path, """
        import threading
        import kserve

        class Fraud(kserve.Model):
            def load(self):
                self.gate = threading.Event()
                self.ready = True

            def predict(self, payload, headers=None):
                # only the event loop opens the gate: a predict run on the loop never returns
                if not self.gate.wait(10):
                    raise TimeoutError("the event loop was blocked")
                return payload.inputs[0].as_numpy()
        """)
    model = KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])

    async def main():
        asyncio.get_running_loop().call_soon(model.model.gate.set)
        return await model({"x": X})

    np.testing.assert_array_equal(asyncio.run(main())["y"], X)
    model.close()


def test_through_the_batcher_each_concurrent_caller_gets_its_own_rows(tmp_path, weights):
    module = handler_module(tmp_path, """
        import kserve
        import numpy as np

        class Fraud(kserve.Model):
            def load(self):
                with np.load(self.model_path) as saved:
                    self.w, self.b = saved["w"], saved["b"]
                self.batches = []
                self.ready = True

            def predict(self, payload, headers=None):
                x = payload.inputs[0].as_numpy()
                self.batches.append(len(x))
                return {"y": x @ self.w + self.b, "row_sum": x.sum(axis=1)}
        """)
    model = KServeModel.load(find_model_class(module), weights, name="fraud",
                             outputs=["y", "row_sum"])
    requests = [RNG.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(24)]

    results = submit_concurrently(model, requests)
    for x, got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got["y"], x @ W + B, rtol=1e-5)
        np.testing.assert_allclose(got["row_sum"], x.sum(axis=1), rtol=1e-5)
    assert sum(model.model.batches) == sum(len(x) for x in requests)
    assert len(model.model.batches) < len(requests)  # predict saw several requests at once
    model.close()


def test_models_asking_for_response_headers_get_kserves_third_argument(tmp_path, weights):
    module = handler_module(tmp_path, """
        import kserve

        class Fraud(kserve.Model):
            def __init__(self, name):
                super().__init__(name, return_response_headers=True)

            def load(self):
                self.ready = True

            def predict(self, payload, headers, response_headers):
                response_headers["x-scored"] = "1"
                return payload.inputs[0].as_numpy()

            async def postprocess(self, result, headers, response_headers):
                assert response_headers == {"x-scored": "1"}
                return {"y": result}
        """)
    model = KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])
    np.testing.assert_array_equal(call(model, {"x": X})["y"], X)
    model.close()


def test_close_runs_the_models_stop_hook(tmp_path, weights):
    module = handler_module(tmp_path, """
        import kserve

        STOPPED = []

        class Fraud(kserve.Model):
            def load(self):
                self.ready = True

            def stop(self):
                STOPPED.append(self.name)

            def predict(self, payload, headers=None):
                return payload.inputs[0].as_numpy()
        """)
    model = KServeModel.load(find_model_class(module), weights, name="fraud", outputs=["y"])
    model.close()
    assert module.STOPPED == ["fraud"]


# -- finding the model class -------------------------------------------------------------------
def test_the_one_model_class_defined_in_the_module_is_found_and_imported_ones_ignored(
        tmp_path):
    handler_module(tmp_path, """
        import kserve

        class Base(kserve.Model):
            pass
        """, name="shared")
    sys.path.insert(0, str(tmp_path))
    try:
        module = handler_module(tmp_path, """
            import kserve
            from kserve import Model
            from shared import Base

            class Fraud(Base):
                pass
            """)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shared", None)
    assert find_model_class(module).__name__ == "Fraud"
    assert find_model_class(module, "Base").__name__ == "Base"  # named: imported ones too


def test_a_module_without_a_model_class_is_a_handler_error(tmp_path):
    module = handler_module(tmp_path, """
        import kserve
        from kserve import Model

        def handler(context, event):
            return "not a model"
        """)
    with pytest.raises(HandlerError, match=r"serve defines no kserve.Model subclass: write one"
                                           r".* with the handler 'serve:ClassName'"):
        find_model_class(module)


def test_a_module_with_two_model_classes_names_them_and_how_to_choose(tmp_path):
    module = handler_module(tmp_path, """
        import kserve

        class Base(kserve.Model):
            pass

        class Fraud(Base):
            pass
        """)
    with pytest.raises(HandlerError, match=r"serve defines 2 kserve.Model subclasses "
                                           r"\(Base, Fraud\): choose one with the handler "
                                           r"'serve:Fraud'"):
        find_model_class(module)
    assert find_model_class(module, "Fraud") is module.Fraud


@pytest.mark.parametrize(("name", "message"), [
    ("Missing", r"serve:Missing is not defined; the handler must name a kserve.Model subclass"),
    ("helper", r"serve:helper is a function; the handler must name"),
    ("Plain", r"serve:Plain is a type; the handler must name"),
])
def test_a_named_class_that_is_not_a_model_is_a_handler_error(tmp_path, name, message):
    module = handler_module(tmp_path, """
        import kserve

        class Plain:
            pass

        def helper():
            pass
        """)
    with pytest.raises(HandlerError, match=message):
        find_model_class(module, name)


# -- kserve beside the rest of sluice, in fresh processes ------------------------------------------
def run_python(code: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "error", "-c", textwrap.dedent(code), *argv],
                          capture_output=True, text=True, timeout=90, cwd=ROOT)


def test_kserve_triton_model_config_and_tritonclient_http_share_one_process(tmp_path):
    done = run_python("""
        import kserve
        from sluice.serving.triton_config import (Tensor, TritonModel, model_config,
                                                  parse_model_config)
        import tritonclient.http

        spec = TritonModel("fraud", inputs=[Tensor("x", "FP32", (64,))],
                           outputs=[Tensor("y", "FP32", (8,))], max_batch=32)
        config = parse_model_config(model_config(spec))
        assert (config.name, config.max_batch_size) == ("fraud", 32), config
        assert tritonclient.http.InferenceServerClient is not None
        print("ok")
        """)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_import_kserve_keeps_the_worker_command_line_away_from_kserve():
    # a worker's command line: kserve reads --config as its --configure_logging and exits
    worker_argv = ("--config", "/tmp/worker.json", "--timeout", "60.0")
    plain = run_python("import kserve", *worker_argv)
    assert plain.returncode == 2 and "--configure_logging" in plain.stderr
    guarded = run_python("""
        import sys
        from sluice.serving.kserve_backend import import_kserve

        argv = list(sys.argv)
        import_kserve()
        import kserve  # the handler module's own import
        assert sys.argv == argv, sys.argv
        print("ok")
        """, *worker_argv)
    assert guarded.returncode == 0 and guarded.stdout == "ok\n", guarded.stderr
