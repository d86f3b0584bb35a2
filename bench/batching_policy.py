"""The batching policy against fixed-timer batching, on a simulated model, in one process.

Not issue 5's serving benchmark (that one runs a real MLP behind HTTP against Ray Serve and
Triton); this isolates the policy. The model is an awaitable whose service time is
``fixed + per_row * rows`` (a GPU-like shape: the fixed cost dominates, so batching pays).
Open-loop Poisson arrivals at several rates, each request one row, in the same run:

- unbatched: one request per model call, calls one at a time;
- fixed timer: Ray Serve's @serve.batch rule (max 64, wait up to 10 ms after the first);
- sluice: the deadline-aware Batcher (max 64, latency objective 50 ms).

Reports per rate and system: p50 / p99 latency, errors (rejected or late), mean batch size.

    python bench/batching_policy.py [--seconds 3] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import numpy as np
from recording import record  # noqa: E402 - bench/ is on sys.path when run as a script

from sluice.errors import OverloadedError
from sluice.serving import Batcher, BatchPolicy

FIXED, PER_ROW = 0.001, 0.00002  # 1 ms a call + 20 us a row: 64 rows in 2.3 ms
OBJECTIVE = 0.050
RATES = (100, 500, 2000, 8000, 16000)


class Model:
    def __init__(self) -> None:
        self.batches: list[int] = []

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(inputs["x"])
        self.batches.append(rows)
        await asyncio.sleep(FIXED + PER_ROW * rows)
        return {"y": inputs["x"]}


Submit = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


def unbatched(model: Model) -> Submit:
    lock = asyncio.Lock()

    async def submit(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        async with lock:
            return await model(inputs)

    return submit


def fixed_timer(model: Model, max_batch: int = 64, wait: float = 0.010) -> Submit:
    """Collect until max_batch or ``wait`` after the first request, then run (one at a time)."""
    queue: list[tuple[dict[str, np.ndarray], asyncio.Future[dict[str, np.ndarray]]]] = []
    lock = asyncio.Lock()
    timer: list[asyncio.Task[None]] = []

    async def flush() -> None:
        async with lock:
            batch, queue[:] = queue[:max_batch], queue[max_batch:]
            if not batch:
                return
            out = await model({"x": np.concatenate([b[0]["x"] for b in batch])})
            for i, (_, future) in enumerate(batch):
                future.set_result({"y": out["y"][i:i + 1]})
        if queue:
            timer.append(asyncio.create_task(later()))

    async def later() -> None:
        await asyncio.sleep(wait)
        await flush()

    async def submit(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        queue.append((inputs, future))
        if len(queue) == 1:
            timer.append(asyncio.create_task(later()))
        elif len(queue) >= max_batch:
            timer.append(asyncio.create_task(flush()))
        return await future

    return submit


async def drive(submit: Submit, rate: float, seconds: float, seed: int
                ) -> tuple[list[float], int]:
    """Open loop: requests start on a Poisson schedule whatever the answers do."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            await submit({"x": np.zeros((1, 16), dtype=np.float32)})
        except OverloadedError:
            errors += 1
            return
        latency = time.perf_counter() - started
        if latency > OBJECTIVE * 2:
            errors += 1  # far past the objective: as good as failed for a caller
        latencies.append(latency)

    tasks = []
    start = time.perf_counter()
    due = start
    while due - start < seconds:
        due += rng.expovariate(rate)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, errors


async def run_all(seconds: float) -> list[list[str]]:
    rows = []
    for rate in RATES:
        for name in ("unbatched", "fixed timer 10 ms", "sluice"):
            model = Model()
            batcher = None
            if name == "unbatched":
                submit = unbatched(model)
            elif name.startswith("fixed"):
                submit = fixed_timer(model)
            else:
                batcher = Batcher(model, BatchPolicy(max_batch=64), latency=OBJECTIVE)
                submit = batcher.submit
            latencies, errors = await drive(submit, rate, seconds, seed=rate)
            if batcher is not None:
                await batcher.close()
            total = len(latencies) + errors - sum(1 for x in latencies if x > OBJECTIVE * 2)
            ordered = sorted(latencies) or [float("nan")]
            rows.append([f"{rate:,}", name,
                         f"{statistics.median(ordered) * 1000:.1f}",
                         f"{ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000:.1f}",
                         f"{100 * errors / max(1, total):.1f}%",
                         f"{statistics.mean(model.batches):.1f}" if model.batches else "-"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(run_all(args.seconds))
    table = ["| offered req/s | system | p50 ms | p99 ms | errors | mean batch |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    print("\n".join(table))
    summary = ("Errors: rejected at once, or answered after twice the 50 ms objective. The "
               "simulated model is an asyncio sleep, so the event loop's own cost is included "
               "and the same for all three.")
    print(summary)
    if args.record:
        record("Batching policy on a simulated model",
               f"one process; model time {FIXED * 1000:g} ms + {PER_ROW * 1e6:g} us/row; "
               f"{args.seconds:g} s of Poisson arrivals per rate and system.",
               f"python bench/batching_policy.py --seconds {args.seconds:g} --record",
               table, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
