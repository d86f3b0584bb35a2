"""The offline feature table: the same feature definitions replayed over history, as Parquet.

:func:`replay` runs :func:`sluice.functions.features.enrich` over events in time order and
returns one row per event (its features and label) plus each card's final state, which is
what the online store holds after the same events. :func:`write_days` and :func:`read_days`
move tables to and from the artifact store as one Parquet file per day.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sluice.errors import NotFoundError
from sluice.serving.artifacts import ArtifactStore

from . import layout
from .features import FEATURES, CardState, enrich
from .transactions import Txn


def transactions_table(txns: list[Txn]) -> pa.Table:
    """Transactions as columns (the cleaned dataset's schema)."""
    return pa.table({name: [getattr(txn, name) for txn in txns] for name in _TXN_SCHEMA.names},
                    schema=_TXN_SCHEMA)


_TXN_SCHEMA = pa.schema([("id", pa.string()), ("seq", pa.int64()), ("card", pa.string()),
                         ("ts", pa.float64()), ("amount", pa.float64()),
                         ("merchant", pa.string()), ("category", pa.string()),
                         ("country", pa.string()), ("fraud", pa.int8())])


def replay(txns: Iterable[Txn], states: dict[str, CardState] | None = None
           ) -> tuple[pa.Table, dict[str, CardState]]:
    """Features for ``txns`` (in the order given: time order) and the cards' states after
    them; ``states``: the history before them (empty: none)."""
    states = {} if states is None else states
    ordered = list(txns)
    vectors = enrich(states, ordered)
    columns: dict[str, list[object]] = {
        "id": [t.id for t in ordered], "seq": [t.seq for t in ordered],
        "card": [t.card for t in ordered], "ts": [t.ts for t in ordered],
        "fraud": [t.fraud for t in ordered]}
    for index, name in enumerate(FEATURES):
        columns[name] = [vector[index] for vector in vectors]
    return pa.table(columns, schema=FEATURE_SCHEMA), states


FEATURE_SCHEMA = pa.schema([("id", pa.string()), ("seq", pa.int64()), ("card", pa.string()),
                            ("ts", pa.float64()), ("fraud", pa.int8())]
                           + [(name, pa.float64()) for name in FEATURES])


def day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def write_days(store: ArtifactStore, prefix: str, table: pa.Table) -> list[str]:
    """One Parquet file per UTC day of ``table`` (by its ``ts``) under ``prefix``; the keys."""
    if table.num_rows == 0:
        return []
    days = pc.cast(pc.floor(pc.divide(table["ts"], 86_400.0)), pa.int64())  # UTC day numbers
    keys = []
    for number in sorted(set(days.to_pylist())):
        part = table.filter(pc.equal(days, number))
        sink = io.BytesIO()
        pq.write_table(part, sink, compression="zstd")
        key = layout.partition(prefix, day(number * 86_400.0))
        store.put_bytes(key, sink.getvalue())
        keys.append(key)
    return keys


def partition_keys(store: ArtifactStore, prefix: str) -> list[str]:
    """The day partitions under ``prefix``, oldest first."""
    return sorted(key for key in store.list(prefix)
                  if key.endswith(".parquet") and layout.day_of(key) is not None)


def read_days(store: ArtifactStore, prefix: str) -> pa.Table:
    """The day partitions under ``prefix`` as one table, in time order."""
    tables = [pq.read_table(io.BytesIO(store.get_bytes(key)))
              for key in partition_keys(store, prefix)]
    if not tables:
        raise NotFoundError(f"no Parquet partitions under {prefix!r} in {store.uri}: run "
                            "the etl job first")
    table = pa.concat_tables(tables)
    return table.sort_by([("ts", "ascending"), ("seq", "ascending")])


def fingerprint(store: ArtifactStore, prefix: str) -> str:
    """A digest of the partitions' contents: what a model was trained on."""
    digest = hashlib.sha256()
    for key in partition_keys(store, prefix):
        digest.update(key.encode())
        digest.update(hashlib.sha256(store.get_bytes(key)).digest())
    return "sha256:" + digest.hexdigest()
