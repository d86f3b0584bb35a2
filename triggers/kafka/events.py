"""Nuclio events from Kafka records (as Nuclio's kafka-cluster trigger fills them, plus the key)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from nuclio_sdk import Event, TriggerInfo

from sluice.outputs import is_json


class Undecodable(ValueError):
    """The record's value is not what the trigger declares (e.g. bad JSON): it is dead-lettered."""


def _text(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def record_event(record: Any, trigger: TriggerInfo, content_type: str | None, last: bool) -> Event:
    """``path`` and ``topic`` are the topic, ``shard_id`` the partition (Nuclio's mapping);
    ``event.key`` is the record key (str when it is UTF-8, else bytes)."""
    value: bytes = record.value if record.value is not None else b""
    body: Any = value
    if is_json(content_type):
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise Undecodable(f"value is not valid JSON ({exc})") from None
    headers = {key: _text(raw) for key, raw in (record.headers or [])}
    event = Event(
        body=body,
        content_type=content_type or "",
        trigger=trigger,
        headers=headers,
        _id=f"{record.topic}/{record.partition}/{record.offset}",
        method="POST",
        path=record.topic,
        size=len(value),
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC)
        if record.timestamp and record.timestamp > 0 else datetime.now(UTC),
        url=record.topic,
        shard_id=record.partition,
        offset=record.offset,
        topic=record.topic,
        last_in_batch=last,
    )
    event.key = _text(record.key)
    return event
