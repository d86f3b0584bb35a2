"""Handlers for the Kafka trigger tests."""

import os

import nuclio_sdk


def score(context, event):
    body = event.body
    if body.get("poison"):
        raise RuntimeError(f"cannot score message {body['seq']}")
    return {"key": event.key, "seq": body["seq"], "partition": event.shard_id,
            "offset": event.offset, "topic": event.topic, "path": event.path,
            "trigger": event.trigger.kind, "pid": os.getpid()}


def score_batch(context, events):
    return [nuclio_sdk.Response(body={"seq": e.body["seq"], "batch": len(events), "key": e.key},
                                event_id=e.id, content_type="application/json")
            for e in events]


def rekey(context, event):
    return nuclio_sdk.Response(body={"seq": event.body["seq"]}, headers={"X-Sluice-Key": "fixed"},
                               content_type="application/json")


async def ack_some(context, event):
    # Nuclio's explicit-ack mode: leave the offset open, acknowledge it later (here: at once
    # for seq < 3, never for the rest)
    response = context.Response(body={"seq": event.body["seq"]}, content_type="application/json")
    response.ensure_no_ack()
    if event.body["seq"] < 3:
        await context.platform.explicit_ack(nuclio_sdk.QualifiedOffset.from_event(event))
    return response
