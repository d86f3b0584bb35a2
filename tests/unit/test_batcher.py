"""The batcher on a real event loop: each caller gets exactly its rows, whatever the mix."""

from __future__ import annotations

import asyncio
import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sluice.serving.batcher
from sluice.errors import InferenceError, InvalidTensorError, OverloadedError
from sluice.serving import Batcher, BatchPolicy, ServiceTimes


def test_doctest():
    result = doctest.testmod(sluice.serving.batcher)
    assert result.attempted > 0 and result.failed == 0


class Model:
    """y = 2x + 1 and the per-row sum; records every batch; optionally held at a gate."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.gate = gate
        self.batches: list[dict[str, tuple]] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, inputs):
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            self.batches.append({k: v.shape for k, v in inputs.items()})
            if self.gate is not None:
                await self.gate.wait()
            x = inputs["x"]
            return {"y": x * 2 + 1, "s": x.reshape(len(x), -1).sum(axis=1)}
        finally:
            self.running -= 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


requests = st.lists(st.tuples(st.integers(1, 4), st.sampled_from([(3,), (2, 2), (5,)]),
                              st.sampled_from([np.float32, np.int64])),
                    min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(requests, st.integers(1, 3), st.integers(1, 16))
def test_every_caller_gets_exactly_its_own_rows(specs, inflight, max_batch):
    async def main():
        model = Model()
        batcher = Batcher(model, BatchPolicy(max_batch=max(max_batch, 4)), latency=10.0,
                          max_inflight=inflight)
        rng = np.random.default_rng(len(specs))
        inputs = [{"x": rng.integers(-50, 50, size=(rows, *shape)).astype(dtype)}
                  for rows, shape, dtype in specs]
        results = await asyncio.gather(*(batcher.submit(i) for i in inputs))
        await batcher.close()
        for given_in, got in zip(inputs, results, strict=True):
            x = given_in["x"]
            np.testing.assert_array_equal(got["y"], x * 2 + 1)
            np.testing.assert_array_equal(got["s"], x.reshape(len(x), -1).sum(axis=1))
        assert model.most_running <= inflight
        return model

    model = asyncio.run(main())
    assert sum(shape["x"][0] for shape in model.batches) == sum(r for r, _, _ in specs)


def test_requests_queued_while_the_model_is_busy_form_one_batch():
    async def main():
        gate = asyncio.Event()
        model = Model(gate)
        batcher = Batcher(model, BatchPolicy(max_batch=64), latency=10.0)
        first = asyncio.create_task(batcher.submit({"x": np.zeros((1, 3))}))
        await settle()
        assert len(model.batches) == 1  # dispatched at once: no timer while idle
        rest = [asyncio.create_task(batcher.submit({"x": np.ones((1, 3))})) for _ in range(10)]
        await settle()
        gate.set()
        await asyncio.gather(first, *rest)
        await batcher.close()
        return model

    model = asyncio.run(main())
    assert [b["x"][0] for b in model.batches] == [1, 10]


def test_at_most_max_inflight_batches_run_at_once():
    async def main():
        gate = asyncio.Event()
        model = Model(gate)
        batcher = Batcher(model, BatchPolicy(max_batch=2), latency=10.0, max_inflight=2)
        tasks = [asyncio.create_task(batcher.submit({"x": np.ones((1, 3))})) for _ in range(8)]
        await settle()
        running_while_blocked = model.running
        gate.set()
        await asyncio.gather(*tasks)
        await batcher.close()
        return running_while_blocked, model

    running, model = asyncio.run(main())
    assert running == 2 and model.most_running == 2


def test_a_caller_that_gives_up_is_not_computed():
    async def main():
        gate = asyncio.Event()
        model = Model(gate)
        batcher = Batcher(model, BatchPolicy(max_batch=64), latency=10.0)
        busy = asyncio.create_task(batcher.submit({"x": np.zeros((1, 3))}))
        await settle()
        quitter = asyncio.create_task(batcher.submit({"x": np.ones((5, 3))}))
        stayer = asyncio.create_task(batcher.submit({"x": np.ones((2, 3))}))
        await settle()
        quitter.cancel()
        gate.set()
        await asyncio.gather(busy, stayer)
        await batcher.close()
        return model

    model = asyncio.run(main())
    assert [b["x"][0] for b in model.batches] == [1, 2]  # the 5 rows never reached the model


def test_shapes_that_differ_are_never_mixed():
    async def main():
        gate = asyncio.Event()
        model = Model(gate)
        batcher = Batcher(model, BatchPolicy(max_batch=64), latency=10.0)
        busy = asyncio.create_task(batcher.submit({"x": np.zeros((1, 3))}))
        await settle()
        tasks = [asyncio.create_task(batcher.submit({"x": np.ones((1, 3 if i % 2 else 4))}))
                 for i in range(6)]
        await settle()
        gate.set()
        await asyncio.gather(busy, *tasks)
        await batcher.close()
        return model

    model = asyncio.run(main())
    assert sorted(b["x"] for b in model.batches[1:]) == [(3, 3), (3, 4)]


def test_a_model_error_reaches_every_caller_of_that_batch_and_no_other():
    async def main():
        calls = 0

        async def flaky(inputs):
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("CUDA out of memory")
            return {"y": inputs["x"]}

        batcher = Batcher(flaky, latency=10.0)
        with pytest.raises(RuntimeError, match="CUDA out of memory"):
            await batcher.submit({"x": np.ones((1, 2))})
        ok = await batcher.submit({"x": np.ones((1, 2))})
        await batcher.close()
        return ok

    assert asyncio.run(main())["y"].shape == (1, 2)


def test_outputs_that_lose_the_batch_axis_are_an_error_not_a_wrong_answer():
    async def main():
        async def broken(inputs):
            return {"y": inputs["x"][:1]}

        batcher = Batcher(broken, latency=10.0)
        with pytest.raises(InferenceError, match="returned 1 rows of output 'y' for a batch of 3"):
            await batcher.submit({"x": np.ones((3, 2))})
        await batcher.close()

    asyncio.run(main())


def test_hopeless_requests_are_rejected_at_once():
    async def main():
        slow = ServiceTimes()
        slow.observe(1, 1.0)  # a batch takes a second; the objective is 50 ms
        batcher = Batcher(Model(), latency=0.05, times=slow)
        with pytest.raises(OverloadedError, match="cannot be served within its deadline"):
            await batcher.submit({"x": np.ones((1, 3))})
        assert batcher.queued == 0
        await batcher.close()

    asyncio.run(main())


def test_a_model_once_too_slow_is_tried_again_instead_of_refused_forever():
    async def main():
        delays = [0.08]  # the first batch is slow (a warm-up, a noisy neighbour), then fast

        async def model(inputs):
            await asyncio.sleep(delays.pop() if delays else 0.001)
            return {"y": inputs["x"]}

        batcher = Batcher(model, latency=0.05, times=ServiceTimes(stale_after=0.1))
        await batcher.submit({"x": np.ones((1, 3))})  # answered late: 80 ms for a 50 ms goal
        with pytest.raises(OverloadedError, match="cannot be served within its deadline"):
            await batcher.submit({"x": np.ones((1, 3))})
        await asyncio.sleep(0.15)  # no sample since: the estimate is stale
        out = await batcher.submit({"x": np.ones((1, 3))})  # a probe, and it is fast
        assert out["y"].shape == (1, 3)
        for _ in range(5):
            await batcher.submit({"x": np.ones((1, 3))})  # served from here on
        await batcher.close()

    asyncio.run(main())


@pytest.mark.parametrize(("inputs", "message"), [
    ({}, "no inputs"),
    ({"x": np.float32(1.0)}, "is a scalar"),
    ({"x": np.ones((2, 3)), "z": np.ones((3, 3))}, "'z' has 3 rows along the batch axis"),
    ({"x": np.ones((0, 3))}, "0 rows"),
    ({"x": np.ones((100, 3))}, "at most 64 per batch"),
])
def test_malformed_requests_say_what_is_wrong(inputs, message):
    async def main():
        batcher = Batcher(Model(), latency=10.0)
        with pytest.raises(InvalidTensorError, match=message):
            await batcher.submit(inputs)
        await batcher.close()

    asyncio.run(main())


def test_close_fails_what_is_still_queued():
    async def main():
        gate = asyncio.Event()
        batcher = Batcher(Model(gate), BatchPolicy(max_batch=1), latency=10.0)
        first = asyncio.create_task(batcher.submit({"x": np.ones((1, 3))}))
        second = asyncio.create_task(batcher.submit({"x": np.ones((1, 3))}))
        await settle()
        closing = asyncio.create_task(batcher.close())
        await settle()
        gate.set()
        await closing
        assert (await first)["y"].shape == (1, 3)
        with pytest.raises(OverloadedError, match="shutting down"):
            await second

    asyncio.run(main())


class InlineModel:
    """A CPU-style model run on the loop's thread: adds 1 to its batch in place, refuses a
    negative input, and records each batch's rows."""

    runs_inline = True

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run_inline(self, inputs):
        self.batches.append(len(inputs["x"]))
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        inputs["x"] += 1  # a model may write to its batch: the callers' arrays are apart
        return {"y": inputs["x"]}, 0.001

    async def __call__(self, inputs):  # the batcher must not use it
        raise AssertionError("an inline model is called through run_inline")


def test_an_inline_model_is_run_from_the_dispatcher_and_still_batches():
    async def main():
        model = InlineModel()
        batcher = Batcher(model, latency=1.0)
        arrays = [np.full((1, 2), float(i)) for i in range(5)]
        outs = await asyncio.gather(*(batcher.submit({"x": a}) for a in arrays))
        assert [o["y"][0, 0] for o in outs] == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert [a[0, 0] for a in arrays] == [0.0, 1.0, 2.0, 3.0, 4.0]
        # the first finds the model idle and runs at once; the other four, submitted in the
        # same loop turn, batch together
        assert model.batches == [1, 4]
        with pytest.raises(ValueError, match="negative input"):
            await batcher.submit({"x": np.full((1, 2), -1.0)})
        assert (await batcher.submit({"x": np.zeros((1, 2))}))["y"][0, 0] == 1.0
        await batcher.close()

    asyncio.run(main())


def test_an_idle_inline_model_answers_at_once_and_batches_what_comes_in_its_wake():
    """No loop turn for a request that finds an inline model idle: it is answered before
    submit_nowait returns. Requests that come in the same turn as a batch ended (they waited
    in the socket buffers behind it) are queued and batched together; once the loop has gone
    around, the next request runs at once again."""
    async def main():
        model = InlineModel()
        batcher = Batcher(model, latency=1.0)
        got: list[float] = []

        def answer(result):
            got.append(float(result["y"][0, 0]))

        batcher.submit_nowait({"x": np.full((1, 2), 1.0)}, answer)
        assert got == [2.0] and model.batches == [1]  # answered within the call
        for value in (2.0, 3.0, 4.0):  # the same turn: they wait for the dispatcher
            batcher.submit_nowait({"x": np.full((1, 2), value)}, answer)
        assert got == [2.0]
        for _ in range(3):
            await asyncio.sleep(0)
        assert got == [2.0, 3.0, 4.0, 5.0] and model.batches == [1, 3]
        for _ in range(3):  # the loop goes around with nothing to do
            await asyncio.sleep(0)
        batcher.submit_nowait({"x": np.full((1, 2), 5.0)}, answer)
        assert got[-1] == 6.0 and model.batches == [1, 3, 1]
        await batcher.close()

    asyncio.run(main())


def test_callers_called_back_get_their_own_rows_once_and_errors_in_place():
    """submit_nowait (the HTTP trigger's path): a refusal at arrival raises at once; every
    other outcome, rows or the model's exception, reaches the callback exactly once, and a
    callback that raises does not keep the rest of its batch from their answers."""
    async def main():
        answers: dict[int, list] = {i: [] for i in range(6)}

        def answer(i):
            def got(result):
                answers[i].append(result)
                if i == 1:
                    raise RuntimeError("a broken callback")
            return got

        model = Model()
        batcher = Batcher(model, BatchPolicy(max_batch=8), latency=10.0)
        for i in range(4):
            batcher.submit_nowait({"x": np.full((1, 3), float(i))}, answer(i))
        with pytest.raises(InvalidTensorError, match="at most 8 per batch"):
            batcher.submit_nowait({"x": np.ones((9, 3))}, answer(5))
        await settle()
        assert [len(a) for a in answers.values()] == [1, 1, 1, 1, 0, 0]
        assert len(model.batches) == 1  # queued in one loop iteration: one batch
        for i in range(4):
            assert answers[i][0]["y"].tolist() == [[2.0 * i + 1] * 3]

        async def failing(inputs):
            raise RuntimeError("device lost")

        broken = Batcher(failing, latency=10.0)
        broken.submit_nowait({"x": np.ones((1, 3))}, answer(4))
        await settle()
        assert len(answers[4]) == 1 and isinstance(answers[4][0], RuntimeError)
        await batcher.close()
        await broken.close()

    asyncio.run(main())
