"""sluice: a serverless function runtime for machine-learning pipelines.

Heavy names (the pydantic spec) load on first use, so a worker process that imports
``sluice.worker`` pays only for what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "ApiError",
    "Client",
    "Function",
    "FunctionSpec",
    "HandlerError",
    "HttpTrigger",
    "NotFoundError",
    "PlatformError",
    "SluiceError",
    "SpecError",
    "deploy_notebook",
    "from_nuclio",
    "nuclio_dashboard_url",
    "parse_spec",
    "to_nuclio",
]

_LAZY = {
    "Client": "sluice.client",
    "Function": "sluice.function",
    "FunctionSpec": "sluice.spec",
    "HttpTrigger": "sluice.spec",
    "parse_spec": "sluice.spec",
    "from_nuclio": "sluice.nuclio_config",
    "to_nuclio": "sluice.nuclio_config",
    "deploy_notebook": "sluice.notebook",
    "nuclio_dashboard_url": "sluice.notebook",
    "ApiError": "sluice.errors",
    "HandlerError": "sluice.errors",
    "NotFoundError": "sluice.errors",
    "PlatformError": "sluice.errors",
    "SluiceError": "sluice.errors",
    "SpecError": "sluice.errors",
}

if TYPE_CHECKING:
    from .client import Client
    from .errors import (
        ApiError,
        HandlerError,
        NotFoundError,
        PlatformError,
        SluiceError,
        SpecError,
    )
    from .function import Function
    from .notebook import deploy_notebook, nuclio_dashboard_url
    from .nuclio_config import from_nuclio, to_nuclio
    from .spec import FunctionSpec, HttpTrigger, parse_spec


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sluice' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
