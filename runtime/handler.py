"""Loading a Nuclio-style handler: ``module:function`` from the function's source folder.

A handler is ``handler(context, event)`` (or ``async def``); a module may also define
``init_context(context)``, run once per worker before the first event. Everything that can go wrong
here is the user's code, so each failure is a :class:`~sluice.errors.HandlerError` that says which
file and what happened.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import HandlerError


@dataclass(frozen=True, slots=True)
class LoadedHandler:
    """The user's entry points, ready to call."""

    function: Callable[..., Any]
    is_async: bool
    init_context: Callable[[Any], Any] | None
    module_file: str


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        where = f"{Path(exc.filename or '?').name} line {exc.lineno}"
        return f"SyntaxError: {exc.msg} ({where})"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    where = f" ({Path(user[-1].filename).name} line {user[-1].lineno})" if user else ""
    return f"{type(exc).__name__}: {exc}{where}"


def load_handler(handler: str, source_dir: Path | None) -> LoadedHandler:
    """Import ``module:function``, looking in ``source_dir`` first."""
    module_name, _, function_name = handler.partition(":")
    if not module_name or not function_name:
        raise HandlerError(f"handler {handler!r} must look like 'module:function'")
    module = import_handler_module(handler, source_dir)
    function = getattr(module, function_name, None)
    if not callable(function):
        found = sorted(
            n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
        )
        raise HandlerError(
            f"module {module_name!r} has no function {function_name!r}"
            + (f" (functions found: {', '.join(found)})" if found else "")
        )
    init = getattr(module, "init_context", None)
    return LoadedHandler(
        function=function,
        is_async=inspect.iscoroutinefunction(function),
        init_context=init if callable(init) else None,
        module_file=str(getattr(module, "__file__", "")),
    )


def import_handler_module(handler: str, source_dir: Path | None) -> ModuleType:
    """The module of ``module:name``, looking in ``source_dir`` first; HandlerError says why
    it cannot be imported."""
    module_name = handler.partition(":")[0]
    if source_dir is not None and str(source_dir) not in sys.path:
        sys.path.insert(0, str(source_dir))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise HandlerError(
                f"cannot find module {module_name!r} for handler {handler!r}"
                + (f" in {source_dir}" if source_dir else "")
            ) from None
        raise HandlerError(f"importing {module_name!r} failed: {_describe(exc)}") from None
    except BaseException as exc:  # user code: any failure is reported, none kills the platform
        raise HandlerError(f"importing {module_name!r} failed: {_describe(exc)}") from None


async def run_init_context(loaded: LoadedHandler, context: Any) -> None:
    """Run ``init_context`` (sync or async); its failure is the deploy's failure."""
    if loaded.init_context is None:
        return
    try:
        result = loaded.init_context(context)
        if inspect.isawaitable(result):
            await result
    except BaseException as exc:
        raise HandlerError(f"init_context failed: {_describe(exc)}") from None
