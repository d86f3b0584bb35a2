"""Kubernetes rendering: functions and pipelines as NuclioFunctions, KServe InferenceServices
(with Triton model repositories), CronJobs and the platform's own resources, each function
with a build context whose image runs the same worker command as the local platform.

    >>> from sluice.manifests import RenderOptions, render_specs
    >>> from sluice.spec import parse_spec
    >>> spec = parse_spec({"name": "echo", "triggers": {"web": {"kind": "http"}}})
    >>> bundle = render_specs({"echo": spec}, RenderOptions(platform=False))
    >>> [r.filename for r in bundle.resources]
    ['nucliofunction-echo.yaml']
    >>> sorted(p[len("images/echo/"):] for p in bundle.files if p.startswith("images/echo/"))
    ['Dockerfile', 'requirements.txt', 'spec.yaml', 'worker.json']

``sluice render`` (:mod:`.command`) is the command line; :func:`render_specs` validates
everything it returns (:mod:`.validate`), and :func:`write_bundle` writes it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .options import RenderOptions
    from .render import Bundle, Resource, render_specs
    from .validate import validate_resource, validate_triton_config
    from .writer import write_bundle

__all__ = ["Bundle", "RenderOptions", "Resource", "render_specs", "validate_resource",
           "validate_triton_config", "write_bundle"]
# loaded on first use: the CLI imports sluice.manifests.command for every command it parses
_WHERE = {"Bundle": "render", "Resource": "render", "render_specs": "render",
          "RenderOptions": "options", "validate_resource": "validate",
          "validate_triton_config": "validate", "write_bundle": "writer"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
