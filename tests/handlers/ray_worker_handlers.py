"""Handlers for the tests of workers on Ray: each says which process answered and what started
that process (a Ray actor's worker on Ray, the platform locally)."""

import json
import os
from pathlib import Path


def _parent() -> str:
    return Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def where(context, event):
    """The body back, with the answering process, its parent and what Ray reserved for it."""
    return {"body": event.body, "pid": os.getpid(), "parent": _parent(),
            "resources": json.loads(os.environ.get("SLUICE_RAY_RESOURCES", "null"))}


def score(context, event):
    """A Kafka message's seq, with the worker process that consumed it."""
    return {"seq": event.body["seq"], "partition": event.shard_id, "pid": os.getpid(),
            "parent": _parent()}
