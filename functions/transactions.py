"""The pipeline's data: card transactions, generated deterministically, with fraud that only a
card's history gives away.

Each card has a home country, a typical amount (cards differ tenfold, so an amount is only
large or small for its card) and a few usual merchant categories. Fraud comes in bursts: a
compromised card makes several purchases within minutes, several times its usual amount,
often abroad and at risky merchants. A model that sees only the transaction itself does
little better than chance on the amount; one that sees per-card aggregates (the enrichment
features) finds the bursts.

    >>> days = list(generate(events=2_000, days=2, seed=7))
    >>> [len(day) for day in days], days[0][0].id, days[0][0].card
    ([1000, 1000], 't00000000000', 'c00189')
    >>> list(generate(events=2_000, days=2, seed=7)) == days  # the same seed, the same data
    True
    >>> later = next(generate(events=500, days=1, seed=7, first_day=2))  # the days after
    >>> later[0].seq > days[-1][-1].seq, later[0].card in {txn.card for txn in days[0]}
    (True, True)

Events reach the pipeline two ways: as raw JSON-lines batch files (one per day, with a few
malformed rows, as real exports have; :func:`raw_lines`) for the ``etl`` job, and as
Kafka messages (:meth:`Txn.to_json`) for the ``enrich`` function.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from sluice.errors import SluiceError

CATEGORIES = ("grocery", "restaurant", "fuel", "transport", "pharmacy", "clothing", "travel",
              "entertainment", "electronics", "gift_cards", "jewelry", "other")
RISKY = frozenset({"electronics", "gift_cards", "jewelry"})
COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BR", "MX", "IN", "JP", "NG",
             "RU")
_HOMES = COUNTRIES[:9]  # cards are issued in these; fraud also comes from the rest
START = datetime(2026, 1, 1, tzinfo=UTC)
DAY_SEQ = 10_000_000  # sequence numbers of day d start at d * DAY_SEQ


class InvalidTransaction(SluiceError, ValueError):
    """A transaction record that is malformed; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Txn:
    """One card transaction. ``ts`` is in Unix seconds; ``fraud`` is the label (known later, as
    chargebacks are; the generator knows it at once)."""

    id: str
    seq: int  # position in the whole stream: orders events, and tells a redelivery apart
    card: str
    ts: float
    amount: float
    merchant: str
    category: str
    country: str
    fraud: int = 0

    def to_json(self) -> dict[str, Any]:
        """The wire form (Kafka messages, raw files): the time as ISO 8601 in UTC."""
        return {"id": self.id, "seq": self.seq, "card": self.card, "ts": iso(self.ts),
                "amount": self.amount, "merchant": self.merchant, "category": self.category,
                "country": self.country, "fraud": self.fraud}

    @classmethod
    def from_json(cls, raw: object) -> Txn:
        """A wire record checked field by field (InvalidTransaction names the first wrong
        one). Values are taken as they are: cleaning is the ``etl`` job's work."""
        if not isinstance(raw, dict):
            raise InvalidTransaction(f"a transaction must be a JSON object, got "
                                     f"{type(raw).__name__}")
        missing = [name for name in _FIELDS if name not in raw]
        if missing:
            raise InvalidTransaction(f"missing field(s): {', '.join(missing)}")
        for name in ("id", "card", "merchant", "category", "country", "ts"):
            if not isinstance(raw[name], str) or not raw[name]:
                raise InvalidTransaction(f"field {name!r} must be a non-empty string, got "
                                         f"{raw[name]!r}")
        seq, amount, fraud = raw["seq"], raw["amount"], raw.get("fraud", 0)
        if type(seq) is not int or seq < 0:
            raise InvalidTransaction(f"field 'seq' must be a whole number >= 0, got {seq!r}")
        if type(amount) not in (int, float) or not math.isfinite(amount) or amount <= 0:
            raise InvalidTransaction(f"field 'amount' must be a number above 0, got {amount!r}")
        if fraud not in (0, 1) or type(fraud) is bool:
            raise InvalidTransaction(f"field 'fraud' must be 0 or 1, got {fraud!r}")
        return cls(raw["id"], seq, raw["card"], parse_time(raw["ts"]), float(amount),
                   raw["merchant"], raw["category"], raw["country"], fraud)


_FIELDS = ("id", "seq", "card", "ts", "amount", "merchant", "category", "country")


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds, e.g. 2026-01-01T00:00:03.120Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_time(text: str) -> float:
    """ISO 8601 with a zone (Z or +hh:mm) to Unix seconds; InvalidTransaction otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidTransaction(f"field 'ts' is not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise InvalidTransaction(f"field 'ts' has no time zone: {text!r} (add Z for UTC)")
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class _Card:
    id: str
    home: str
    log_mean: float  # of its amounts
    usual: tuple[str, ...]  # the categories it mostly buys in


def _cards(rng: random.Random, count: int) -> list[_Card]:
    cards = []
    for i in range(count):
        usual = tuple(rng.sample([c for c in CATEGORIES if c not in RISKY], 3))
        cards.append(_Card(f"c{i:05d}", rng.choice(_HOMES), rng.gauss(3.4, 1.1), usual))
    return cards


def generate(events: int = 100_000, days: int = 10, seed: int = 42, fraud_rate: float = 0.01,
             cards: int = 500, first_day: int = 0) -> Iterator[list[Txn]]:
    """``events`` transactions over ``days`` days, from day ``first_day`` after :data:`START`,
    one list per day in time order, about ``fraud_rate`` of them fraudulent, made by ``cards``
    cards. The cards depend on ``seed`` alone and each day on ``seed`` and its number, so
    later days continue earlier ones (the stream after the history), and sequence numbers
    (``day * 10**7 + index``) keep rising across them."""
    if events < days or days < 1 or first_day < 0 or cards < 1:
        raise ValueError("need at least one day, one event per day and one card")
    rng = random.Random(seed)
    deck = _cards(rng, cards)
    weights = [rng.paretovariate(2.0) for _ in deck]  # a few busy cards, many quiet ones
    per_day = events // days
    for day in range(first_day, first_day + days):
        rng = random.Random(f"{seed}/{day}")
        start = (START + timedelta(days=day)).timestamp()
        end = start + 86_399.999
        todays = per_day if day < first_day + days - 1 else events - per_day * (days - 1)
        bursts: list[tuple[float, _Card, int]] = []
        frauds = 0
        while frauds < round(todays * fraud_rate):  # compromised cards, each a burst
            size = min(rng.randint(2, 8), round(todays * fraud_rate) - frauds)
            bursts.append((start + rng.uniform(0, 86_400 - 1_800), rng.choices(deck, weights)[0],
                           size))
            frauds += size
        drawn: list[tuple[float, _Card, bool]] = []
        for when, card, size in bursts:
            for _ in range(size):
                when = min(when + rng.expovariate(1 / 60), end)  # about a minute apart
                drawn.append((when, card, True))
        normal = todays - frauds
        while normal > 0:
            card, when = rng.choices(deck, weights)[0], start + _daytime(rng)
            # honest sprees too (a few purchases in a row): speed alone is not fraud
            for _ in range(min(normal, rng.choice((1,) * 19 + (2, 3)))):
                drawn.append((when, card, False))
                normal -= 1
                when += rng.expovariate(1 / 150)
                if when >= end:  # the day is over
                    break
        drawn.sort(key=lambda item: item[0])
        yield [_transaction(rng, day * DAY_SEQ + index, when, card, fraud)
               for index, (when, card, fraud) in enumerate(drawn)]


def _daytime(rng: random.Random) -> float:
    """Seconds into a day: people shop by day, rarely at night."""
    hour = rng.choices(range(24), _HOURLY)[0]
    return hour * 3600 + rng.uniform(0, 3600)


_HOURLY = [1, 1, 1, 1, 1, 2, 4, 6, 8, 9, 10, 10, 11, 10, 9, 9, 10, 11, 12, 11, 9, 6, 4, 2]


def _transaction(rng: random.Random, seq: int, when: float, card: _Card, fraud: bool) -> Txn:
    if fraud:
        amount = math.exp(card.log_mean) * rng.uniform(1.5, 5.0)
        country = rng.choice([c for c in COUNTRIES if c != card.home]) if rng.random() < 0.45 \
            else card.home
        category = rng.choice(sorted(RISKY)) if rng.random() < 0.5 else rng.choice(CATEGORIES)
    else:
        amount = math.exp(rng.gauss(card.log_mean, 0.7))
        if rng.random() < 0.01:  # the odd big purchase
            amount *= rng.uniform(2.0, 6.0)
        country = card.home if rng.random() < 0.97 else rng.choice(COUNTRIES)  # travel
        category = rng.choice(card.usual) if rng.random() < 0.85 else rng.choice(CATEGORIES)
    return Txn(f"t{seq:011d}", seq, card.id, round(when, 3), round(max(amount, 0.5), 2),
               f"m{rng.randrange(5_000):04d}", category, country, int(fraud))


# -- raw batch files (the etl job's input) ------------------------------------------------------

def corrupt(rng: random.Random, record: dict[str, Any]) -> tuple[dict[str, Any] | str, str]:
    """A malformed version of a record, as real exports have them, and what is wrong with it."""
    broken: dict[str, Any] = dict(record)
    kind = rng.randrange(6)
    if kind == 0:
        del broken["amount"]
        return broken, "missing amount"
    if kind == 1:
        broken["amount"] = -broken["amount"]
        return broken, "negative amount"
    if kind == 2:
        broken["amount"] = "n/a"
        return broken, "amount is text"
    if kind == 3:
        broken["ts"] = broken["ts"][:10] + " nonsense"
        return broken, "bad time"
    if kind == 4:
        broken["card"] = ""
        return broken, "empty card"
    return orjson.dumps(record).decode()[:-9], "truncated line"


def raw_lines(batch: list[Txn], seed: int, bad_rate: float = 0.005) -> tuple[bytes, int]:
    """One day's raw file (JSON lines): the records, with about ``bad_rate`` of them
    malformed and a few exact duplicates (a re-sent export). Returns the bytes and how many
    lines are bad."""
    rng = random.Random(seed)
    lines, bad = [], 0
    for txn in batch:
        record = txn.to_json()
        if rng.random() < 0.2:  # exports write countries and categories as they please
            record["country"] = record["country"].lower()
            record["category"] = record["category"].upper()
        if rng.random() < bad_rate:
            broken, _ = corrupt(rng, record)
            lines.append(broken if isinstance(broken, str) else orjson.dumps(broken).decode())
            bad += 1
            continue
        lines.append(orjson.dumps(record).decode())
        if rng.random() < bad_rate / 2:
            lines.append(lines[-1])
            bad += 1
    return ("\n".join(lines) + "\n").encode(), bad


def day_name(batch: list[Txn]) -> str:
    """The date a day's batch belongs to, as YYYY-MM-DD."""
    return datetime.fromtimestamp(batch[0].ts, UTC).date().isoformat()
