"""The deadline-aware batching policy: which queued requests form the next batch, and when.

Pure: every decision is a function of the values given (the queue, the clock reading, the
service-time estimates), so it is tested as a table with a fake clock.

The rules, for one free model slot:

1. A request whose deadline has passed is dropped (it would be computed for nobody).
2. Requests are taken in deadline order, within the group (same non-batch shape and
   datatypes) of the most urgent one; a request's own batch dimension counts toward the cap.
3. The batch is the longest such prefix that still finishes before its earliest deadline by
   the service-time estimate. A request that cannot finish in time even alone is rejected at
   once: the queue never fills with work that is already late. (Unless the estimate is
   stale, see :class:`ServiceTimes`: then it runs, as a probe that refreshes the estimate.)
4. With every request of the group taken and room left, the policy waits for one more
   arrival only when that lowers the mean latency (one step of look-ahead, below) and the
   deadline still holds; an idle model at low load never waits.

Waiting for one more request, expected in ``gap`` seconds, instead of dispatching ``n`` rows
now, lowers the summed latency exactly when ``gap < S(1) / (n + 1) - (S(n + 1) - S(n))``: the
newcomer saves its own batch's fixed cost, the ``n`` waiting rows pay ``gap`` each.

    >>> est = ServiceTimes(default=0.0)
    >>> for rows, seconds in [(1, 0.002), (8, 0.003), (64, 0.010)]:
    ...     est.observe(rows, seconds)
    >>> policy = BatchPolicy(max_batch=64)
    >>> queue = [Pending(0, rows=1, deadline=0.020, key="x"), Pending(1, 1, 0.021, "x")]
    >>> policy.decide(now=0.0, queue=queue, times=est, gap=1.0)
    Dispatch(ids=(0, 1), rows=2)
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol


class Queued(Protocol):
    """What the policy reads of a queued request (the batcher's own records have these)."""

    @property
    def id(self) -> int: ...

    @property
    def rows(self) -> int: ...

    @property
    def deadline(self) -> float: ...

    @property
    def key(self) -> Hashable: ...


@dataclass(frozen=True, slots=True)
class Pending:
    """A queued request as plain values (for tests and callers without records of their own)."""

    id: int
    rows: int  # its size along the batch axis
    deadline: float  # clock reading by which its result is due (math.inf: none)
    key: Hashable  # requests batch together only with the same key (non-batch shapes, dtypes)


@dataclass(frozen=True, slots=True)
class Dispatch:
    ids: tuple[int, ...]
    rows: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to start now; decide again at ``until`` (or at the next arrival, if sooner)."""

    until: float


@dataclass(frozen=True, slots=True)
class Reject:
    """Requests to answer at once with an error (expired, or hopeless even alone)."""

    ids: tuple[int, ...]
    reason: str


Decision = Dispatch | Wait | Reject | None  # None: the queue is empty


class ServiceTimes:
    """Online upper-quantile estimates of how long a batch of ``rows`` takes.

    Sizes are kept in power-of-two buckets, each a window of the latest ``window`` samples;
    the estimate for a size interpolates between the nearest observed buckets and never
    decreases with size (a larger batch is never assumed faster). Beyond the observed sizes it
    is proportional to the rows: above them a pessimistic guess, below them an optimistic one.

    Estimates can go stale: a model that looked too slow gets no work, so no sample would ever
    correct it. After ``stale_after`` seconds without a sample, :meth:`stale` is true (the
    policy then lets a request through as a probe instead of rejecting it), and a bucket's
    next sample replaces the old ones instead of joining them."""

    def __init__(self, quantile: float = 0.9, window: int = 64, default: float = 0.0,
                 stale_after: float = 0.25, skip_first: bool = False) -> None:
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        self.quantile = quantile
        self.window = window
        self.default = default  # before any sample: 0 dispatches at once and learns
        self.stale_after = stale_after
        # the first batch of each size is a warm-up (lazy initialisation, cold caches; a
        # Triton Python backend's first call took 730 ms for a 1 ms model): not learned
        self._warmed: set[int] | None = set() if skip_first else None  # buckets seen once
        self.last_sample: float | None = None  # the clock reading of the latest sample
        self._bucket_last: dict[int, float] = {}
        self._samples: dict[int, deque[float]] = {}  # per bucket, in arrival order
        self._sorted: dict[int, list[float]] = {}  # the same, in order of value
        # the monotone curve (sizes, seconds) and the estimates read from it, rebuilt on the
        # first estimate after a sample: estimates are asked for several times per arrival,
        # samples come once per batch
        self._curve: tuple[list[int], list[float]] | None = None
        self._memo: dict[int, float] = {}

    @staticmethod
    def bucket(rows: int) -> int:
        return 1 << max(0, math.ceil(math.log2(max(1, rows))))

    def observe(self, rows: int, seconds: float, at: float | None = None) -> None:
        """A batch of ``rows`` took ``seconds``; ``at``: the clock reading (for staleness)."""
        bucket = self.bucket(rows)
        if self._warmed is not None and bucket not in self._warmed:
            self._warmed.add(bucket)
            if at is not None:
                self.last_sample = at
            return
        samples = self._samples.get(bucket)
        if samples is None:
            samples = self._samples[bucket] = deque(maxlen=self.window)
            self._sorted[bucket] = []
        ordered = self._sorted[bucket]
        if at is not None:
            if at - self._bucket_last.get(bucket, at) > self.stale_after:
                samples.clear()  # what it says now, not what it said before a quiet spell
                ordered.clear()
            self._bucket_last[bucket] = at
            self.last_sample = at
        if len(samples) == self.window:  # the oldest leaves the window (kept sorted as it goes:
            del ordered[bisect.bisect_left(ordered, samples[0])]  # no sort per batch)
        seconds = max(0.0, seconds)
        samples.append(seconds)
        bisect.insort(ordered, seconds)
        # rebuilt now, not at the next estimate: a batch's sample is taken after its callers
        # were answered, while the next arrival's estimate is on its way to the model
        self._curve = self._build()

    def stale(self, now: float) -> bool:
        """No sample for ``stale_after`` seconds (never, if none was timed with a clock)."""
        return self.last_sample is not None and now - self.last_sample > self.stale_after

    def _at(self, bucket: int) -> float:
        ordered = self._sorted[bucket]
        return ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]

    def _build(self) -> tuple[list[int], list[float]]:
        self._memo.clear()
        sizes = sorted(self._samples)
        seconds = [self._at(b) for b in sizes]
        for i in range(1, len(seconds)):  # monotone: a bigger batch is never faster
            seconds[i] = max(seconds[i], seconds[i - 1])
        return sizes, seconds

    def estimate(self, rows: int) -> float:
        if self._curve is None:
            if not self._samples:
                return self.default
            self._curve = self._build()
        known = self._memo.get(rows)
        if known is None:
            known = self._memo[rows] = self._interpolate(rows)
        return known

    def _interpolate(self, rows: int) -> float:
        assert self._curve is not None
        sizes, seconds = self._curve
        i = bisect.bisect_left(sizes, rows)
        if i < len(sizes) and sizes[i] == rows:
            return seconds[i]
        if i == 0 and self.bucket(rows) == sizes[0]:  # in the smallest bucket seen
            return seconds[0]
        if i == 0:  # smaller than anything seen: in proportion, as if no fixed cost (an
            # optimistic guess, so a small request is tried and learned, never refused on what
            # a batch of 256 took: a model that has only scored Kafka batches would otherwise
            # refuse every single HTTP request until its estimate went stale)
            return seconds[0] * rows / sizes[0]
        if i == len(sizes):  # larger than anything seen: grow in proportion to the rows
            return seconds[-1] * rows / sizes[-1]
        low, high = sizes[i - 1], sizes[i]
        return seconds[i - 1] + (seconds[i] - seconds[i - 1]) * (rows - low) / (high - low)


@dataclass(frozen=True)
class BatchPolicy:
    """The rules above, for batches of at most ``max_batch`` rows."""

    max_batch: int = 64
    # never wait longer than this for one more arrival (a guard on a bad rate estimate)
    max_wait: float = 0.005

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")

    def admit(self, now: float, rows: int, deadline: float, backlog: float,
              times: ServiceTimes) -> str | None:
        """At arrival: None to queue the request, else why it cannot meet its deadline even
        if served alone after ``backlog`` seconds of work already ahead of it."""
        if rows > self.max_batch:
            return (f"the request has {rows} rows along the batch axis; this model takes at "
                    f"most {self.max_batch} per batch")
        needed = times.estimate(rows)
        if now + backlog + needed > deadline and not (backlog == 0 and times.stale(now)):
            # (with nothing ahead and no recent sample, it goes through as a probe)
            return (f"it cannot be served within its deadline: about {backlog * 1000:.1f} ms "
                    f"of work is queued ahead and it takes about {needed * 1000:.1f} ms itself")
        return None

    def decide(self, now: float, queue: Sequence[Queued], times: ServiceTimes,
               gap: float) -> Decision:
        """The next step for one free slot. ``queue`` is in deadline order (the batcher keeps
        it so); ``gap`` is the expected seconds until the next arrival (math.inf: none
        expected). The work is proportional to the batch, not to the queue, up to the scan
        for the group's members."""
        if not queue:
            return None
        if queue[0].deadline <= now:
            expired = tuple(itertools.takewhile(lambda p: p.deadline <= now, queue))
            return Reject(tuple(p.id for p in expired),
                          "its deadline passed while it waited in the queue")
        urgent = queue[0]
        if now + times.estimate(urgent.rows) > urgent.deadline and not times.stale(now):
            return Reject((urgent.id,), "it can no longer finish within its deadline, even "
                          "alone")
        taken: list[int] = []
        rows = 0
        complete = True  # every queued member of the group is in the batch
        for pending in queue:
            if pending.key != urgent.key:
                continue
            # (the urgent one itself always goes: it passed the check above, or is a probe)
            if rows + pending.rows > self.max_batch or taken and \
                    now + times.estimate(rows + pending.rows) > urgent.deadline:
                complete = False
                break
            taken.append(pending.id)
            rows += pending.rows
        if complete and rows < self.max_batch and self._worth_waiting(
                now, rows, urgent.deadline, times, gap):
            return Wait(now + gap)
        return Dispatch(tuple(taken), rows)

    def _worth_waiting(self, now: float, rows: int, deadline: float, times: ServiceTimes,
                       gap: float) -> bool:
        if not math.isfinite(gap) or gap > self.max_wait:
            return False
        if now + gap + times.estimate(rows + 1) > deadline:
            return False
        marginal = times.estimate(rows + 1) - times.estimate(rows)
        return gap < times.estimate(1) / (rows + 1) - marginal


class ArrivalRate:
    """Expected seconds to the next arrival, from an exponentially weighted mean of the gaps."""

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self._mean_gap = math.inf
        self._last: float | None = None

    def arrived(self, now: float) -> None:
        if self._last is not None:
            gap = max(0.0, now - self._last)
            self._mean_gap = gap if math.isinf(self._mean_gap) else (
                self.alpha * gap + (1 - self.alpha) * self._mean_gap)
        self._last = now

    def expected_gap(self, now: float) -> float:
        if self._last is None or math.isinf(self._mean_gap):
            return math.inf
        # a quiet spell longer than the mean says the rate dropped: expect no one soon
        return self._mean_gap if now - self._last <= 2 * self._mean_gap else math.inf
