"""The Ray Serve baseline: the MLP behind ``@serve.batch(max_batch_size=64,
batch_wait_timeout_s=0.01)``, one replica, reached through Serve's HTTP proxy at the V2 path.

    taskset -c 0 python bench/apps/serving_ray.py --model mlp.pt --port 8000

Runs until SIGTERM or SIGINT, then shuts Serve and Ray down. Start it under ``taskset``: the
GCS, raylet, proxy and replica processes that ``ray.init`` starts inherit the core. Ray binds
its internal services to the host address whatever it is asked (ENV.md); the proxy listens on
--host. The dashboard is off. ``max_ongoing_requests`` is raised from Ray's default of 5 to
twice the batch size: with 5 a replica never sees more than 5 requests, so a batch of 64 could
never form (Ray's batching guide gives the same advice).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from serving_model import arguments

MAX_BATCH, WAIT_S = 64, 0.01


def main() -> None:
    args = arguments((__doc__ or "").splitlines()[0])
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network here (and no need)
    # the replica imports serving_model too: Ray's processes inherit this environment
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))

    import orjson
    import ray
    from ray import serve
    from serving_model import load_mlp, response_dict, scores
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(num_replicas=1, max_ongoing_requests=2 * MAX_BATCH,
                      ray_actor_options={"num_cpus": 0.5})
    class MLP:
        def __init__(self, path: str) -> None:
            self.model = load_mlp(path)

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=WAIT_S)
        async def forward(self, rows: list[list[float]]) -> list[list[float]]:
            return scores(self.model, rows)

        async def __call__(self, request: Request) -> Response:
            row = orjson.loads(await request.body())["inputs"][0]["data"]
            out: Any = await self.forward(row)  # one row in, its scores out (batched)
            return Response(orjson.dumps(response_dict(out)), media_type="application/json")

    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=256 * 2**20,
             log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    stopping = threading.Event()  # handlers set after ray.init, which installs its own
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        app = MLP.bind(os.path.abspath(args.model))  # type: ignore[attr-defined]
        serve.run(app, name="mlp", route_prefix="/v2/models/mlp/infer")
        print(f"ray serve ready on http://{args.host}:{args.port}", flush=True)
        stopping.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
