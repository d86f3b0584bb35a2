"""Nuclio events from HTTP requests, built cheaply (this is the hot path)."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from nuclio_sdk import Event, TriggerInfo

from sluice.outputs import is_json


class Headers(dict[str, str]):
    """Request headers keyed the way Nuclio's processor hands them over (``Content-Type``),
    looked up without regard to case, as HTTP requires."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.title())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, key.title(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.title())


class BadRequest(ValueError):
    """The request cannot become an event (the message is sent back as a 400)."""


_ids = itertools.count(1)
_id_prefix = os.urandom(4).hex()


def next_event_id() -> str:
    """Unique per worker and cheap (a uuid4 costs more than the rest of the event)."""
    return f"{_id_prefix}-{next(_ids)}"


def make_event(
    trigger: TriggerInfo,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    decode: bool = True,
) -> Event:
    """A nuclio_sdk.Event as Nuclio's HTTP trigger fills it; JSON bodies arrive decoded
    (unless ``decode`` is false: a model server reads the bytes itself)."""
    path, _, query = url.partition("?")
    content_type = headers.get("Content-Type", "")
    decoded: Any = body
    if decode and body and content_type and is_json(content_type):
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON ({exc})") from None
    return Event(
        body=decoded,
        content_type=content_type,
        trigger=trigger,
        fields=dict(parse_qsl(query, keep_blank_values=True)) if query else {},
        headers=headers,
        _id=next_event_id(),
        method=method,
        path=path,
        size=len(body),
        timestamp=datetime.now(UTC),
        url=url,
    )
