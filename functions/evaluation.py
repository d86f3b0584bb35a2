"""Scoring a fraud model on held-out data, and the promotion decision.

:func:`auc` is the area under the ROC curve (the chance that a random fraud scores above a
random legitimate transaction; ties count half). :func:`decide` is pure: a candidate replaces
the production model only when it scores better on the same held-out window.

    >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> decide(0.91, 0.93).reason
    'the candidate (AUC 0.9100) is not better than production (AUC 0.9300)'
    >>> decide(0.95, None).promote
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """ROC AUC from ranks (average ranks for ties); ValueError without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both classes among the labels")
    order = np.argsort(s, kind="mergesort")
    ordered = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for start, end in zip(starts, ends, strict=True):  # ties share their mean rank
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@dataclass(frozen=True)
class Promotion:
    promote: bool
    candidate: float
    production: float | None
    reason: str


def decide(candidate: float, production: float | None, min_gain: float = 0.0) -> Promotion:
    """Promote when there is no production model, or when the candidate's held-out AUC beats
    production's (evaluated on the same rows) by more than ``min_gain``."""
    if production is None:
        return Promotion(True, candidate, None, "there is no production model yet")
    if candidate > production + min_gain:
        return Promotion(True, candidate, production,
                         f"the candidate (AUC {candidate:.4f}) beats production "
                         f"(AUC {production:.4f})" + (f" by more than {min_gain}"
                                                      if min_gain else ""))
    return Promotion(False, candidate, production,
                     f"the candidate (AUC {candidate:.4f}) is not better than production "
                     f"(AUC {production:.4f})" + (f" by more than {min_gain}"
                                                  if min_gain else ""))
