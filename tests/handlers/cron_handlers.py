"""Handlers for the cron trigger tests: each fire appends a line to a file."""

import json
import os
import time


def record(context, event):
    body = event.body.decode() if isinstance(event.body, bytes) else event.body
    with open(os.environ["FIRES_FILE"], "a") as out:
        out.write(json.dumps({
            "pid": os.getpid(), "kind": event.trigger.kind, "name": event.trigger.name,
            "scheduled": event.headers.get("X-Sluice-Scheduled"), "body": body,
            "trigger_header": event.headers.get("X-Sluice-Trigger"), "at": time.time(),
        }) + "\n")
    if isinstance(event.body, dict) and event.body.get("sleep"):
        time.sleep(event.body["sleep"])
    return "ok"
