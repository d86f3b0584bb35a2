"""A function's spec as it runs in the cluster: what only makes sense on this machine is
dropped, what the cluster supplies is filled in, and the result is what every renderer reads.

- an HTTP trigger's ``port`` and ``host`` are local listening addresses (in Nuclio a ``port``
  would ask for a NodePort): dropped; in the cluster the worker listens on 8080;
- a Kafka trigger with no ``bootstrap_servers`` gets the cluster's (``--kafka-bootstrap``), and
  its consumer group is written out (the function's name, as the local platform defaults it);
- ``SLUICE_ARTIFACTS`` (the model registry, as the local platform tells its workers) is the
  cluster's store (``--artifacts``) unless the spec's env sets it;
- the standard labels (``app.kubernetes.io/name``, ``managed-by``, ``part-of``) join the spec's.

A rendered NuclioFunction must read back, through sluice's own loader, as this spec.
"""

from __future__ import annotations

from typing import Any

from sluice.spec import FunctionSpec, parse_spec

from .options import RenderOptions

MANAGED_BY = "sluice"


def standard_labels(function: str, pipeline: str | None) -> dict[str, str]:
    """Labels every resource of a function carries (and selectors match on ``name``)."""
    labels = {"app.kubernetes.io/name": function, "app.kubernetes.io/managed-by": MANAGED_BY}
    if pipeline:
        labels["app.kubernetes.io/part-of"] = pipeline
    return labels


def cluster_spec(spec: FunctionSpec, options: RenderOptions,
                 pipeline: str | None = None) -> FunctionSpec:
    """``spec`` adjusted for the cluster (see the module docstring); validated again."""
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True)
    triggers: dict[str, Any] = {}
    for name, trigger in data.get("triggers", {}).items():
        if trigger["kind"] == "http":
            trigger = {k: v for k, v in trigger.items() if k not in ("port", "host")}
        elif trigger["kind"] in ("kafka", "kafka-cluster"):
            trigger = {**trigger,
                       "bootstrap_servers": trigger.get("bootstrap_servers")
                       or options.bootstrap_servers,
                       "group": trigger.get("group") or spec.name}
        triggers[name] = trigger
    if triggers:
        data["triggers"] = triggers
    data["env"] = {"SLUICE_ARTIFACTS": options.artifacts, **spec.env}
    data["labels"] = {**spec.labels, **standard_labels(spec.name, pipeline)}
    return parse_spec(data)
