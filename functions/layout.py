"""Where the pipeline keeps its data in the artifact store (a local folder or S3), and how a
function running on the platform finds that store.

    raw/transactions/2026-01-01.jsonl                         raw exports (the etl job's input)
    datasets/transactions/date=2026-01-01/part-0.parquet      validated, cleaned rows
    datasets/transactions/_rejected/2026-01-01.jsonl          bad rows, each with its reason
    features/transactions/date=2026-01-01/part-0.parquet      offline features (training's input)
    models/fraud/...                                          the model registry's own keys
"""

from __future__ import annotations

import os

from sluice.errors import SpecError
from sluice.serving.artifacts import ArtifactStore, open_store

RAW = "raw/transactions/"
DATASET = "datasets/transactions/"
REJECTED = DATASET + "_rejected/"
FEATURES = "features/transactions/"


def partition(prefix: str, day: str) -> str:
    """The key of one day's Parquet file under ``prefix``."""
    return f"{prefix}date={day}/part-0.parquet"


def day_of(key: str) -> str | None:
    """The day a partition key names (``.../date=2026-01-01/part-0.parquet``), if it is one."""
    for part in key.split("/"):
        if part.startswith("date="):
            return part[5:]
    return None


def store_from_env() -> ArtifactStore:
    """The platform's artifact store, as it tells its functions (``SLUICE_ARTIFACTS``)."""
    uri = os.environ.get("SLUICE_ARTIFACTS")
    if not uri:
        raise SpecError("SLUICE_ARTIFACTS is not set: run this function on the platform "
                        "(sluice up), or set it to a folder or s3://bucket/prefix")
    return open_store(uri)
