"""The batching policy as a table of cases on a fake clock (no sleeps)."""

from __future__ import annotations

import doctest
import math
import random

import pytest

import sluice.serving.policy
from sluice.serving.policy import (
    ArrivalRate,
    BatchPolicy,
    Dispatch,
    Pending,
    Reject,
    ServiceTimes,
    Wait,
)


def test_doctest():
    result = doctest.testmod(sluice.serving.policy)
    assert result.attempted > 0 and result.failed == 0


def times(**points: float) -> ServiceTimes:
    """ServiceTimes from rows=seconds pairs, e.g. times(r1=0.001, r64=0.004)."""
    est = ServiceTimes()
    for name, seconds in points.items():
        est.observe(int(name[1:]), seconds)
    return est


MLP = times(r1=0.001, r8=0.0012, r64=0.004)  # a fixed cost that dominates: batching pays


def p(i: int, deadline: float, rows: int = 1, key: str = "x") -> Pending:
    return Pending(i, rows, deadline, key)


def test_empty_queue_decides_nothing():
    assert BatchPolicy().decide(0.0, [], MLP, gap=math.inf) is None


def test_idle_model_at_low_load_dispatches_at_once():
    # one request, the next expected in 10 ms: waiting would only add latency
    decision = BatchPolicy().decide(0.0, [p(0, 0.05)], MLP, gap=0.010)
    assert decision == Dispatch((0,), 1)


def test_waits_for_one_more_only_when_it_lowers_mean_latency():
    # next arrival in 0.1 ms, a batch's fixed cost 1 ms: bundling it beats a batch of its own
    assert BatchPolicy().decide(0.0, [p(0, 0.05)], MLP, gap=0.0001) == Wait(0.0001)
    # ... but not when the wait would break the earliest deadline
    assert BatchPolicy().decide(0.0, [p(0, 0.0011)], MLP, gap=0.0001) == Dispatch((0,), 1)
    # ... and not at all past max_wait, whatever the estimate says
    assert isinstance(BatchPolicy(max_wait=0.00005).decide(0.0, [p(0, 0.05)], MLP, gap=0.0001),
                      Dispatch)


def test_never_waits_when_the_batch_is_full():
    queue = [p(i, 0.05) for i in range(4)]
    assert BatchPolicy(max_batch=4).decide(0.0, queue, MLP, gap=0.0) == Dispatch((0, 1, 2, 3), 4)


def test_a_requests_own_rows_count_toward_the_cap():
    queue = [p(0, 0.05, rows=3), p(1, 0.05, rows=2), p(2, 0.05, rows=1)]
    assert BatchPolicy(max_batch=4).decide(0.0, queue, MLP, gap=math.inf) == Dispatch((0,), 3)


def test_largest_batch_that_meets_the_earliest_deadline():
    slow = times(r1=0.001, r2=0.002, r4=0.004, r8=0.008)
    queue = [p(i, 0.0045) for i in range(8)]
    # 4 rows take 4 ms and fit the 4.5 ms deadline; 5 would not
    assert BatchPolicy().decide(0.0, queue, slow, gap=math.inf) == Dispatch((0, 1, 2, 3), 4)


def test_most_urgent_group_first_and_groups_never_mix():
    queue = [p(1, 0.02, key="b"), p(3, 0.03, key="b"), p(0, 0.05, key="a"), p(2, 0.05, key="a")]
    assert BatchPolicy().decide(0.0, queue, MLP, gap=math.inf) == Dispatch((1, 3), 2)
    mixed = [p(0, 0.02, key="a"), p(1, 0.03, key="b"), p(2, 0.04, key="a")]
    assert BatchPolicy().decide(0.0, mixed, MLP, gap=math.inf) == Dispatch((0, 2), 2)


def test_expired_requests_are_dropped_before_compute():
    queue = [p(0, 0.010), p(1, 0.050)]
    decision = BatchPolicy().decide(0.011, queue, MLP, gap=math.inf)
    assert isinstance(decision, Reject) and decision.ids == (0,)
    assert "deadline passed" in decision.reason


def test_a_request_that_cannot_finish_even_alone_is_rejected_not_computed():
    decision = BatchPolicy().decide(0.0, [p(0, 0.0005)], MLP, gap=math.inf)
    assert isinstance(decision, Reject) and decision.ids == (0,)
    assert "even alone" in decision.reason


@pytest.mark.parametrize(("rows", "backlog", "deadline", "admitted"), [
    (1, 0.0, 0.05, True),
    (1, 0.0495, 0.05, False),       # 49.5 ms queued ahead + 1 ms of its own: too late
    (65, 0.0, 1.0, False),          # larger than a whole batch
])
def test_admission(rows, backlog, deadline, admitted):
    why = BatchPolicy(max_batch=64).admit(0.0, rows, deadline, backlog, MLP)
    assert (why is None) == admitted
    if not admitted:
        assert "deadline" in why or "at most 64" in why


def test_service_times_interpolate_and_never_shrink_with_size():
    est = times(r1=0.001, r16=0.004, r64=0.002)  # a noisy bigger bucket reads as no faster
    assert est.estimate(1) == 0.001
    assert est.estimate(16) == 0.004
    assert est.estimate(64) == 0.004
    assert 0.001 < est.estimate(8) < 0.004
    assert est.estimate(128) == pytest.approx(0.008)  # beyond what was seen: proportional
    assert times(r256=0.032).estimate(1) == pytest.approx(0.000125)  # below it too


def test_a_single_request_is_not_refused_on_what_only_big_batches_took():
    # a model that has only scored big (Kafka) batches, slower than the objective: a request of
    # one row is still admitted and tried, not refused until the estimate goes stale
    big_only = times(r256=0.030)
    assert BatchPolicy(max_batch=256).admit(0.0, 1, 0.020, 0.0, big_only) is None
    decision = BatchPolicy(max_batch=256).decide(0.0, [p(0, 0.020)], big_only, gap=math.inf)
    assert decision == Dispatch((0,), 1)
    assert ServiceTimes(default=0.0).estimate(10) == 0.0  # nothing seen: optimistic


def test_service_times_use_an_upper_quantile_of_recent_samples():
    est = ServiceTimes(quantile=0.9, window=10)
    for seconds in [0.001] * 9 + [0.100]:
        est.observe(4, seconds)
    assert est.estimate(4) == 0.100  # the p90 of ten samples is the slowest one here
    for _ in range(10):
        est.observe(4, 0.002)
    assert est.estimate(4) == 0.002  # the old outlier left the window


def test_the_quantile_matches_a_sort_of_the_window_after_every_sample():
    rng = random.Random(7)
    est = ServiceTimes(quantile=0.9, window=16)
    recent: list[float] = []
    for _ in range(500):  # repeats included: eviction must remove one copy, not all
        seconds = rng.choice([0.001, 0.002, 0.003]) if rng.random() < 0.5 else rng.random()
        est.observe(3, seconds)
        recent = (recent + [seconds])[-16:]
        ordered = sorted(recent)
        assert est.estimate(3) == ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def test_a_stale_estimate_lets_a_probe_through_and_its_sample_replaces_the_old_ones():
    est = ServiceTimes(stale_after=0.25)
    for _ in range(10):
        est.observe(1, 0.030, at=1.0)  # once too slow for a 20 ms objective
    policy = BatchPolicy()
    assert policy.admit(1.1, 1, 1.12, 0.0, est) is not None  # fresh: rejected
    assert isinstance(policy.decide(1.1, [Pending(0, 1, 1.12, "x")], est, math.inf), Reject)
    # a quarter second with no sample (everything was rejected): the next one is a probe
    assert est.stale(1.3)
    assert policy.admit(1.3, 1, 1.32, 0.0, est) is None
    assert policy.admit(1.3, 1, 1.32, 0.005, est) is not None  # not with work queued ahead
    assert isinstance(policy.decide(1.3, [Pending(0, 1, 1.32, "x")], est, math.inf), Dispatch)
    est.observe(1, 0.001, at=1.301)  # the probe was fast: that is the estimate now
    assert est.estimate(1) == 0.001 and not est.stale(1.31)


def test_arrival_rate_tracks_gaps_and_forgets_a_quiet_spell():
    rate = ArrivalRate(alpha=0.5)
    assert rate.expected_gap(0.0) == math.inf
    for t in (0.0, 0.001, 0.002, 0.003):
        rate.arrived(t)
    assert rate.expected_gap(0.003) == pytest.approx(0.001)
    assert rate.expected_gap(1.0) == math.inf  # nobody for a long while: do not wait


def test_the_first_batch_of_each_size_is_a_warm_up_and_not_learned():
    est = ServiceTimes(skip_first=True)
    est.observe(1, 0.730, at=0.0)  # a cold first call
    assert est.estimate(1) == 0.0 and not est.stale(0.1)  # not learned, but it counts as news
    est.observe(1, 0.001, at=0.1)
    est.observe(64, 0.500, at=0.2)  # the first of its size too
    assert est.estimate(1) == 0.001 and est.estimate(64) == 0.001 * 64
