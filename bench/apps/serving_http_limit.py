"""The HTTP limit: the unbatched server without the model. It parses each body as the others do
and answers a response computed once at start (the model's scores for the benchmark's row), so
the bytes on the wire are the same size as the unbatched server's.

    python bench/apps/serving_http_limit.py --model mlp.pt --port 8080
"""

from __future__ import annotations

import orjson
from serving_asgi import serve, v2_app
from serving_model import arguments, load_mlp, response_dict, sample, scores


def main() -> None:
    args = arguments((__doc__ or "").splitlines()[0])
    (row,) = scores(load_mlp(args.model), [sample()])
    response = orjson.dumps(response_dict(row))

    def answer(body: bytes) -> bytes:
        orjson.loads(body)
        return response

    serve(v2_app(answer), args.host, args.port)


if __name__ == "__main__":
    main()
