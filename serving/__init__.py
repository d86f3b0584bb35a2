"""Model serving: the Open Inference Protocol (V2), the adaptive batcher, model backends.

Imported as ``sluice.serving``; nothing here is loaded unless a serving function (or a test)
asks for it.
"""

from .batcher import Batcher, BatchStats
from .policy import BatchPolicy, ServiceTimes

__all__ = ["BatchPolicy", "BatchStats", "Batcher", "ServiceTimes"]
