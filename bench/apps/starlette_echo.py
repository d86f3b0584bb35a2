"""A minimal Starlette app doing the same JSON echo."""

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def echo(request: Request) -> Response:
    return Response(orjson.dumps(orjson.loads(await request.body())),
                    media_type="application/json")


app = Starlette(routes=[Route("/", echo, methods=["POST"])])
