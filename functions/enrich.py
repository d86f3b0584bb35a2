"""The ``enrich`` function (Kafka, batch mode): raw transactions -> the same transactions with
their feature vector ``x``, from the online feature store, which each event then updates.

Per micro-batch: the cards' states are read at once, the features computed in order
(:func:`sluice.functions.features.enrich`), and the new states written in one transaction,
before the trigger commits the batch's offsets. A crash in between redelivers events whose
updates are already stored; their sequence numbers show it and they are not counted twice.
The topic is keyed by card, so one card's events reach one worker, in order.

A malformed event is answered with a 400 naming the field, which the Kafka trigger sends to
the dead-letter topic with that reason; the rest of the batch goes on.

The store is SQLite at ``$SLUICE_FEATURE_STORE`` (default ``$SLUICE_HOME/features/cards.db``).
The output record (the ``score`` function's input, and what a trainer could log) is::

    {"id": ..., "card": ..., "ts": ..., "amount": ..., "fraud": 0, "x": [10 floats]}
"""

from __future__ import annotations

from typing import Any

import nuclio_sdk
import orjson

from .feature_sqlite import SqliteFeatureStore, default_path
from .features import enrich
from .transactions import InvalidTransaction, Txn


def init_context(context: Any) -> None:
    context.user_data.store = SqliteFeatureStore(default_path())


def handler(context: Any, events: list[Any]) -> list[Any]:
    """The replies in the events' order: the enriched record (a dict, sent as JSON) or, for a
    malformed event, a 400 saying what is wrong."""
    store: SqliteFeatureStore = context.user_data.store
    replies: list[Any] = []
    valid: list[tuple[int, Txn]] = []
    for event in events:
        try:
            body = event.body
            if isinstance(body, bytes | str):
                body = orjson.loads(body)
            valid.append((len(replies), Txn.from_json(body)))
            replies.append(None)
        except (InvalidTransaction, orjson.JSONDecodeError) as exc:
            replies.append(nuclio_sdk.Response(body=f"not a transaction: {exc}",
                                               status_code=400, content_type="text/plain"))
    txns = [txn for _, txn in valid]
    states = store.get(txn.card for txn in txns)
    vectors = enrich(states, txns)
    store.put(states)
    for (index, txn), vector in zip(valid, vectors, strict=True):
        replies[index] = {"id": txn.id, "seq": txn.seq, "card": txn.card, "ts": txn.ts,
                          "amount": txn.amount, "fraud": txn.fraud, "x": vector}
    return replies
