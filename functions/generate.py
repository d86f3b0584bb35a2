"""The ``generate`` job: stands in for the upstream system that exports transactions, writing
one raw JSON-lines file per day to ``raw/transactions/`` in the artifact store (with the
malformed rows real exports have). Deterministic: the same params write the same files.

Params: ``events`` (20000), ``days`` (10), ``seed`` (42), ``fraud_rate`` (0.01),
``bad_rate`` (0.005), ``cards`` (500), ``first_day`` (0: the days after :data:`START`; a later
export continues the same cards' history).
"""

from __future__ import annotations

from typing import Any

from sluice.errors import SpecError
from sluice.serving.artifacts import ArtifactStore

from . import layout
from .transactions import day_name, generate, raw_lines


def write_raw_files(store: ArtifactStore, events: int = 20_000, days: int = 10, seed: int = 42,
                    fraud_rate: float = 0.01, bad_rate: float = 0.005, cards: int = 500,
                    first_day: int = 0, progress: Any = None) -> dict[str, int]:
    """Write the files; counts of events, bad lines and files."""
    if not 1 <= days <= 366 or events < days:
        raise SpecError("generate params: days must be 1 to 366 and events at least days")
    if not 0 <= fraud_rate < 0.5 or not 0 <= bad_rate < 0.5:
        raise SpecError("generate params: fraud_rate and bad_rate must be 0 to 0.5")
    totals = {"events": 0, "bad_lines": 0, "files": 0, "fraud": 0}
    if not 1 <= cards <= 10_000_000 or first_day < 0:
        raise SpecError("generate params: cards must be at least 1 and first_day 0 or more")
    days_made = generate(events, days, seed, fraud_rate, cards, first_day)
    for number, batch in enumerate(days_made, 1):
        data, bad = raw_lines(batch, seed * 1_000 + number, bad_rate)
        store.put_bytes(f"{layout.RAW}{day_name(batch)}.jsonl", data)
        totals["events"] += len(batch)
        totals["fraud"] += sum(txn.fraud for txn in batch)
        totals["bad_lines"] += bad
        totals["files"] += 1
        if progress is not None:
            progress(number, days, f"{day_name(batch)}: {len(batch):,} events")
    return totals


def handler(context: Any, event: Any) -> dict[str, int]:
    """The job's entry point (``sluice.functions.generate:handler``)."""
    params = event.body if isinstance(event.body, dict) else {}
    known = {"events", "days", "seed", "fraud_rate", "bad_rate", "cards", "first_day"}
    if set(params) - known:
        raise SpecError(f"generate params: unknown {', '.join(sorted(set(params) - known))} "
                        f"(known: {', '.join(sorted(known))})")
    totals = write_raw_files(layout.store_from_env(), progress=getattr(context, "progress", None),
                             **params)
    context.logger.info_with("raw files written", **totals)
    return totals
