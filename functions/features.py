"""The enrichment features, defined once for both stores.

A card's history is a small :class:`CardState` (counts, sums, decayed rates, its home
country). :func:`features` reads the state as it was *before* a transaction, together with
the transaction, into a vector; :func:`update` folds the transaction in. The ``enrich``
function does this per event against the online store (``feature_store``); the ``offline``
module replays the same two functions over the ``etl`` job's history into the Parquet table
that training reads. Same code, same order of float operations: an entity's online value
equals the offline aggregate over the same events, exactly.

    >>> from sluice.functions.transactions import Txn
    >>> first = Txn("t1", 1, "c1", 50_000.0, 20.0, "m1", "grocery", "US")
    >>> second = Txn("t2", 2, "c1", 50_060.0, 180.0, "m2", "electronics", "NG")
    >>> state = update(None, first)
    >>> state.count, state.amount_sum, state.home
    (1, 20.0, 'US')
    >>> vector = features(state, second)
    >>> [name for name, value in zip(FEATURES, vector) if value == 1.0]
    ['foreign', 'country_changed', 'risky_category']
    >>> round(vector[FEATURES.index("amount_vs_card")], 2)  # log(181 / 21): 8.6 times usual
    2.15
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .transactions import RISKY, Txn

HALF_LIFE = 3600.0  # seconds: the rates are "about the last hour"
NO_GAP = 7 * 86_400.0  # the gap a card's first transaction is given (a week)

FEATURES = (
    "log_amount",  # log(1 + amount)
    "amount_vs_card",  # log((1 + amount) / (1 + the card's mean amount so far)); 0 at first
    "log_count",  # log(1 + transactions seen on the card)
    "log_gap",  # log(1 + seconds since the card's last transaction)
    "rate_1h",  # log(1 + the card's transactions, decayed with a one-hour half-life)
    "spend_1h_vs_card",  # log(1 + decayed spend / (1 + mean amount))
    "foreign",  # 1 if not the card's home country (its first seen)
    "country_changed",  # 1 if not the country of the card's last transaction
    "risky_category",  # 1 for electronics, gift cards, jewelry
    "night",  # 1 between 00:00 and 06:00 UTC
)


@dataclass(frozen=True, slots=True)
class CardState:
    """What the features need to remember about one card."""

    count: int = 0
    amount_sum: float = 0.0
    last_ts: float = 0.0
    rate: float = 0.0  # decayed transaction count at last_ts
    spend: float = 0.0  # decayed amount at last_ts
    home: str = ""
    last_country: str = ""
    last_seq: int = -1  # the newest event folded in: a redelivered one is not counted twice

    def to_dict(self) -> dict[str, Any]:
        # (by hand: dataclasses.asdict deep-copies, and cost enrich a third of its time)
        return {"count": self.count, "amount_sum": self.amount_sum, "last_ts": self.last_ts,
                "rate": self.rate, "spend": self.spend, "home": self.home,
                "last_country": self.last_country, "last_seq": self.last_seq}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CardState:
        return cls(**raw)


def _decay(state: CardState, ts: float) -> float:
    return 0.5 ** (max(0.0, ts - state.last_ts) / HALF_LIFE)


def features(state: CardState | None, txn: Txn) -> list[float]:
    """The vector for ``txn``, given the card's state before it (None: a new card)."""
    log_amount = math.log1p(txn.amount)
    night = 1.0 if (txn.ts % 86_400.0) < 6 * 3600.0 else 0.0
    risky = 1.0 if txn.category in RISKY else 0.0
    if state is None or state.count == 0:
        return [log_amount, 0.0, 0.0, math.log1p(NO_GAP), 0.0, 0.0, 0.0, 0.0, risky, night]
    mean = state.amount_sum / state.count
    decay = _decay(state, txn.ts)
    return [
        log_amount,
        log_amount - math.log1p(mean),
        math.log1p(state.count),
        math.log1p(max(0.0, txn.ts - state.last_ts)),
        math.log1p(state.rate * decay),
        math.log1p(state.spend * decay / (1.0 + mean)),
        1.0 if txn.country != state.home else 0.0,
        1.0 if txn.country != state.last_country else 0.0,
        risky,
        night,
    ]


def update(state: CardState | None, txn: Txn) -> CardState:
    """The card's state with ``txn`` folded in."""
    if state is None or state.count == 0:
        return CardState(1, txn.amount, txn.ts, 1.0, txn.amount, txn.country, txn.country,
                         txn.seq)
    decay = _decay(state, txn.ts)
    return CardState(state.count + 1, state.amount_sum + txn.amount, max(state.last_ts, txn.ts),
                     state.rate * decay + 1.0, state.spend * decay + txn.amount, state.home,
                     txn.country, txn.seq)


def enrich(states: dict[str, CardState], txns: list[Txn]) -> list[list[float]]:
    """Vectors for ``txns`` in order, updating ``states`` (card -> state) as it goes. An event
    already folded in (its ``seq`` at or below the card's ``last_seq``: a redelivery after a
    crash) is not counted again; its vector is computed from the card's current state."""
    vectors = []
    for txn in txns:
        state = states.get(txn.card)
        vectors.append(features(state, txn))
        if state is None or txn.seq > state.last_seq:
            states[txn.card] = update(state, txn)
    return vectors
