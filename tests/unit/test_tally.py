"""The in-process tally writes what prometheus_client itself would have."""

from __future__ import annotations

import doctest

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

import sluice.tally
from sluice.tally import Tally


def test_doctest():
    assert doctest.testmod(sluice.tally).failed == 0


def test_flushed_observations_equal_direct_ones_on_every_bucket_edge():
    values = [0.0, 0.001, 0.0015, 0.005, 0.0051, 1.0, 7.5, 1e9]
    pages = []
    for batched in (False, True):
        registry = CollectorRegistry()
        histogram = Histogram("h", "H.", buckets=(0.001, 0.005, 1.0, 10.0), registry=registry)
        gauge = Gauge("g", "G.", registry=registry)
        tally = Tally()
        for value in values:
            if batched:
                tally.observe(histogram, value)
                tally.inc(gauge, 1)
            else:
                histogram.observe(value)
                gauge.inc(1)
        tally.inc(gauge, -3) if batched else gauge.dec(3)
        tally.flush()
        pages.append(b"\n".join(line for line in generate_latest(registry).splitlines()
                                 if b"_created" not in line))  # a timestamp
    assert pages[0] == pages[1]
    assert b'h_bucket{le="0.001"} 2.0' in pages[1] and b"g 5.0" in pages[1]


def test_a_gauge_set_through_the_tally_takes_the_latest_value_at_flush():
    registry = CollectorRegistry()
    gauge = Gauge("queued", "Q.", registry=registry)
    tally = Tally()
    tally.set(gauge, 5)
    tally.set(gauge, 2)
    assert registry.get_sample_value("queued") == 0.0
    tally.flush()
    assert registry.get_sample_value("queued") == 2.0
    tally.flush()  # nothing new: the value stays
    assert registry.get_sample_value("queued") == 2.0
