"""http and kafka functions (and, with ``--jobs nuclio``, jobs) as NuclioFunction resources.

The resource is sluice's own Nuclio export (:func:`sluice.nuclio_config.to_nuclio`, what
``sluice export`` prints) with what the cluster adds: env with secrets by reference
(``valueFrom.secretKeyRef``), the namespace, and ``spec.build.baseImage``, the function's
image built from its build context, so that Nuclio's processor finds the handler's module and
its requirements there (Nuclio layers its processor on the base image; sluice's handlers are
Nuclio handlers). :func:`read_back` is the other direction, through sluice's own loader:
validation proves that a rendered function reads back as the spec it was rendered from.

Nuclio runs the handler with its own processor, so sluice-only Kafka settings (``output``,
``dead_letter``, ``content_type``, ``retries``) travel as trigger attributes that sluice reads
back but Nuclio does not act on; :func:`nuclio_warnings` names them.
"""

from __future__ import annotations

import copy
from typing import Any

from sluice.nuclio_config import from_nuclio, to_nuclio
from sluice.spec import FunctionSpec, parse_spec

from .options import RenderOptions
from .secrets import env_from_vars, env_vars

# Kafka trigger settings only sluice's worker honours (Nuclio's processor ignores them)
_SLUICE_ONLY_KAFKA = ("output", "dead_letter", "content_type")


def nuclio_function(spec: FunctionSpec, options: RenderOptions) -> dict[str, Any]:
    """The NuclioFunction for ``spec`` (a cluster spec: see :mod:`.cluster_spec`)."""
    resource = to_nuclio(spec.model_dump(mode="json", exclude_none=True))
    nspec = resource["spec"]
    if spec.env:
        nspec["env"] = env_vars(spec.env)
    nspec.setdefault("build", {})["baseImage"] = options.image(spec.name)
    if options.namespace:
        resource["metadata"]["namespace"] = options.namespace
    return resource


def read_back(resource: dict[str, Any]) -> FunctionSpec:
    """A rendered NuclioFunction read as sluice reads a function.yaml (secret references back
    to ``secret:NAME/KEY``, which sluice's loader does not read as valueFrom yet)."""
    config = copy.deepcopy(resource)
    env = config.get("spec", {}).get("env")
    if env:
        config["spec"]["env"] = [{"name": k, "value": v} for k, v in env_from_vars(env).items()]
    return parse_spec(from_nuclio(config, source="NuclioFunction"))


def nuclio_warnings(spec: FunctionSpec) -> list[str]:
    """What a NuclioFunction of ``spec`` keeps for sluice but Nuclio does not carry out."""
    warnings = []
    for name, trigger in spec.kafka_triggers.items():
        given = [key for key in _SLUICE_ONLY_KAFKA if getattr(trigger, key) is not None]
        if given:
            warnings.append(f"{spec.name}: triggers.{name}: {', '.join(given)} are sluice "
                            "worker settings; Nuclio's processor does not act on them (a "
                            "handler that publishes results itself works the same on both)")
    return warnings
