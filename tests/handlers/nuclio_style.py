"""Handlers written the way Nuclio's Python documentation writes them (used by the tests)."""

import asyncio
import json
import os
import time

import nuclio_sdk


def init_context(context):
    # Nuclio's documented pattern: expensive set-up once per worker, kept in user_data
    context.user_data.calls = 0
    context.user_data.greeting = os.environ.get("GREETING", "hello")
    context.logger.info_with("initialised", worker=context.worker_id)


def echo(context, event):
    return event.body


def greet(context, event):
    context.user_data.calls += 1
    context.logger.info_with("greeting", name=event.body.get("name"), calls=context.user_data.calls)
    return {"greeting": f"{context.user_data.greeting}, {event.body['name']}",
            "calls": context.user_data.calls, "worker": context.worker_id}


def describe(context, event):
    body = event.body
    return {
        "method": event.method,
        "path": event.path,
        "url": event.url,
        "fields": event.fields,
        "content_type": event.content_type,
        "body": body.decode() if isinstance(body, bytes) else body,
        "header_lower": event.headers.get("x-custom-header"),
        "header_title": event.headers.get("X-Custom-Header"),
        "get_header": event.get_header("X-CUSTOM-HEADER"),
        "trigger_kind": event.trigger.kind,
        "has_id": bool(event.id),
        "size": event.size,
    }


def created(context, event):
    return context.Response(body={"created": True}, headers={"X-Resource": "42"},
                            content_type="application/json", status_code=201)


def teapot(context, event):
    return 418, {"short": "and stout"}


def text_tuple(context, event):
    return 202, "accepted"


def raw_bytes(context, event):
    return b"\x00\x01binary"


def deliberate(context, event):
    raise nuclio_sdk.ExceptionWithResponse(409, "already exists")


def crash(context, event):
    raise ValueError("boom: the handler failed")


def exits(context, event):
    raise SystemExit(3)


def sleepy(context, event):
    time.sleep(float(event.body.get("seconds", 10)) if isinstance(event.body, dict) else 10)
    return "woke up"


async def async_echo(context, event):
    await asyncio.sleep(0.01)
    return {"async": True, "body": event.body}


async def async_sleepy(context, event):
    await asyncio.sleep(float(event.fields.get("seconds", "10")))
    return "woke up"


def batch_echo(context, events):
    # Nuclio's HTTP batching mode: a list in, a list of Responses matched by event_id out
    return [
        context.Response(body={"batch_size": len(events), "body": e.body}, event_id=e.id,
                         content_type="application/json", status_code=200)
        for e in events
    ]


def pid(context, event):
    return {"pid": os.getpid(), "worker": context.worker_id}


def json_text(context, event):
    return json.dumps({"n": 1})


def unserialisable(context, event):
    return {"value": object()}


def register_callbacks(context, event):
    marker = event.body.get("marker")

    def on_termination():
        with open(marker, "w") as out:
            out.write("terminated")

    context.platform.set_termination_callback(on_termination)
    return "registered"


def call_other(context, event):
    response = context.platform.call_function(
        event.body["target"], nuclio_sdk.Event(body={"from": "caller"}, method="POST", path="/"))
    return {"status": response.status_code, "answer": response.body}


async def blocks_loop(context, event):
    time.sleep(30)  # a sync sleep inside async def: the event loop itself is stuck
    return "never"


def slow_then_answer(context, event):
    time.sleep(1.0)
    return "finished"


def register_drain(context, event):
    marker = event.body.get("marker")

    def on_drain():
        with open(marker, "a") as out:
            out.write("drained")

    context.platform.set_drain_callback(on_drain)
    return "registered"
