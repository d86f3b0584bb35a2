"""The unbatched baseline: each request's one row through the MLP inline, batch 1, no queue.

    python bench/apps/serving_unbatched.py --model mlp.pt --port 8080
"""

from __future__ import annotations

import orjson
from serving_asgi import serve, v2_app
from serving_model import arguments, load_mlp, response_dict, scores


def main() -> None:
    args = arguments((__doc__ or "").splitlines()[0])
    model = load_mlp(args.model)

    def answer(body: bytes) -> bytes:
        row = orjson.loads(body)["inputs"][0]["data"]
        (out,) = scores(model, [row])  # in the event loop: one core, nothing else to run
        return orjson.dumps(response_dict(out))

    serve(v2_app(answer), args.host, args.port)


if __name__ == "__main__":
    main()
