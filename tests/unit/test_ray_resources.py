"""What a job's resources ask of Ray, and when a cluster can never run it (no Ray started)."""

from __future__ import annotations

import pytest

from sluice.platform.ray_jobs import memory_bytes, ray_resources, unplaceable
from sluice.spec import Resources


@pytest.mark.parametrize(("quantity", "expected"), [
    ("1000", 1000), ("64Mi", 64 * 2**20), ("1.5Gi", 3 * 2**29), ("2G", 2 * 10**9),
    ("512Ki", 512 * 1024), ("1Ti", 2**40),
])
def test_memory_quantities_become_bytes(quantity, expected):
    assert memory_bytes(quantity) == expected


def test_memory_that_is_not_a_quantity_is_refused():
    with pytest.raises(ValueError, match="not a memory quantity: '2GB'"):
        memory_bytes("2GB")


def test_a_spec_without_resources_takes_one_cpu_as_a_ray_task_does():
    assert ray_resources(Resources()) == {"num_cpus": 1, "num_gpus": 0}


def test_cpu_gpu_and_memory_reach_the_actor_options():
    assert ray_resources(Resources(cpu=0.5, gpu=2, memory="1Gi")) == {
        "num_cpus": 0.5, "num_gpus": 2, "memory": 2**30}


CLUSTER = {"CPU": 2.0, "memory": 8 * 2**30, "object_store_memory": 2**30}


@pytest.mark.parametrize(("resources", "why"), [
    (Resources(cpu=4), "it asks for 4 CPU(s) but the whole Ray cluster has 2"),
    (Resources(gpu=1), "it asks for 1 GPU(s) but the whole Ray cluster has 0"),
    (Resources(memory="16Gi"), "it asks for 16384 MiB of memory but the whole Ray cluster has "
                               "8192"),
])
def test_more_than_the_whole_cluster_has_is_unplaceable(resources, why):
    assert why in (unplaceable(ray_resources(resources), CLUSTER) or "")


def test_what_fits_the_cluster_is_placeable():
    assert unplaceable(ray_resources(Resources(cpu=2, memory="1Gi")), CLUSTER) is None
