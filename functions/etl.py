"""The ``etl`` job: raw transaction exports -> validated, cleaned, day-partitioned Parquet,
and the offline feature table built from it.

Every line of every raw file (``raw/transactions/*.jsonl`` in the artifact store) either
becomes a clean row or is written aside with the reason, never dropped silently:

- cleaning: country codes upper-cased, categories lower-cased (an unknown one becomes
  ``other``), amounts rounded to cents;
- rejected: lines that are not JSON objects, records missing a field or with a wrong value
  (:class:`~sluice.functions.transactions.InvalidTransaction` names it), and exact repeats of
  an id already seen (a re-sent export).

Run it on demand (``sluice run etl``) or on its cron trigger; each run rebuilds the dataset and
the features from all raw files, so it is safe to repeat. It also backfills the online
feature store with the cards' states after the history (param ``materialize``, default true).
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.serving.artifacts import ArtifactStore

from . import layout, offline
from .feature_sqlite import SqliteFeatureStore, default_path
from .feature_store import materialize
from .features import CardState
from .transactions import CATEGORIES, InvalidTransaction, Txn

_LETTERS = frozenset(string.ascii_uppercase)


def clean(line: bytes) -> Txn:
    """One raw line as a clean transaction, or InvalidTransaction saying what is wrong."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidTransaction(f"not valid JSON ({exc})") from None
    if isinstance(raw, dict):
        raw = dict(raw)
        if isinstance(raw.get("country"), str):
            raw["country"] = raw["country"].strip().upper()
            if len(raw["country"]) != 2 or not set(raw["country"]) <= _LETTERS:
                raise InvalidTransaction(f"field 'country' must be a two-letter code, got "
                                         f"{raw['country']!r}")
        if isinstance(raw.get("category"), str):
            category = raw["category"].strip().lower()
            raw["category"] = category if category in CATEGORIES else "other"
        if type(raw.get("amount")) in (int, float):
            raw["amount"] = round(raw["amount"], 2)
    return Txn.from_json(raw)


@dataclass
class EtlReport:
    files: int = 0
    lines: int = 0
    clean: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> lines
    days: list[str] = field(default_factory=list)
    fraud: int = 0
    states: dict[str, CardState] = field(default_factory=dict, repr=False)  # after the history

    def metrics(self) -> dict[str, Any]:
        return {"files": self.files, "lines": self.lines, "clean_rows": self.clean,
                "rejected_rows": sum(self.rejected.values()), "days": len(self.days),
                "fraud_share": round(self.fraud / self.clean, 5) if self.clean else 0.0}


def _reason(exc: InvalidTransaction) -> str:
    """A short category for counting: the message up to its first comma or parenthesis."""
    text = str(exc)
    for mark in (", got", " (", ":"):
        text = text.split(mark, 1)[0]
    return text


def run(store: ArtifactStore, progress: Any = None) -> EtlReport:
    """The whole job against ``store``; ``progress(step, total, message)`` per file."""
    report = EtlReport()
    files = sorted(key for key in store.list(layout.RAW) if key.endswith(".jsonl"))
    if not files:
        raise InvalidTransaction(f"no raw files under {layout.RAW!r} in {store.uri}: put "
                                 "JSON-lines exports there (sluice pipeline data writes some)")
    seen: set[str] = set()
    good: list[Txn] = []
    for number, key in enumerate(files, 1):
        rejects = []
        for index, line in enumerate(store.get_bytes(key).splitlines(), 1):
            if not line.strip():
                continue
            report.lines += 1
            try:
                txn = clean(line)
                if txn.id in seen:
                    raise InvalidTransaction(f"duplicate id: {txn.id!r} was seen before")
            except InvalidTransaction as exc:
                report.rejected[_reason(exc)] += 1
                rejects.append(orjson.dumps({"file": key, "line": index, "reason": str(exc),
                                             "raw": line.decode("utf-8", "replace")}))
                continue
            seen.add(txn.id)
            good.append(txn)
        name = key.rsplit("/", 1)[-1]
        if rejects:
            store.put_bytes(layout.REJECTED + name, b"\n".join(rejects) + b"\n")
        report.files += 1
        if progress is not None:
            progress(number, len(files), f"{name}: {len(rejects)} bad rows")
    good.sort(key=lambda txn: (txn.ts, txn.seq))
    report.clean = len(good)
    report.fraud = sum(txn.fraud for txn in good)
    keys = offline.write_days(store, layout.DATASET, offline.transactions_table(good))
    report.days = [layout.day_of(key) or "" for key in keys]
    table, report.states = offline.replay(good)
    offline.write_days(store, layout.FEATURES, table)
    return report


def handler(context: Any, event: Any) -> dict[str, Any]:
    """The job's entry point (``sluice.functions.etl:handler``). With ``materialize`` (the
    default) the cards' states after the history go to the online store too, where they are
    newer than what it holds: the stream's features then start from the same history the
    model was trained on."""
    params = event.body if isinstance(event.body, dict) else {}
    report = run(layout.store_from_env(), getattr(context, "progress", None))
    metrics = report.metrics()
    if params.get("materialize", True):
        online = SqliteFeatureStore(default_path())
        try:
            metrics["online_updated"] = materialize(online, report.states)
        finally:
            online.close()
    if hasattr(context, "log_metrics"):
        context.log_metrics(metrics)
    context.logger.info_with("etl done", **metrics,
                             rejected_by_reason=dict(report.rejected))
    return {**metrics, "rejected_by_reason": dict(report.rejected), "first_day": report.days[0],
            "last_day": report.days[-1]}
