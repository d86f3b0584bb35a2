"""A notebook as a job: each run executes it top to bottom with papermill, the run's params
injected after its cell tagged ``parameters``, and keeps the executed notebook (outputs,
errors and all) in the artifact store as the run's ``notebook`` artifact.

A job is a notebook job when its source is a notebook: ``sluice deploy report.ipynb --kind
job`` ships ``report.ipynb`` with the handler ``report:notebook``, and the params it declares
are the ``parameters`` cell's values (so ``sluice run report --param alpha=0.2`` is checked
against them). The kernel is ``python3`` in the job's own interpreter (the function's build
environment when it has one). Each finished cell is reported as progress; the cells' printed
output goes to the run's log.
"""

from __future__ import annotations

import ast
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from sluice.errors import HandlerError

HANDLER = "notebook"  # the function part of a notebook job's handler: report:notebook
KERNEL = "python3"


def notebook_of(handler: str, source_dir: str | None) -> Path | None:
    """The notebook a job runs, when its source is one (``report:notebook`` and
    ``report.ipynb`` in the source folder); None for a Python handler."""
    if source_dir is None:
        return None
    path = Path(source_dir) / f"{handler.partition(':')[0]}.ipynb"
    return path if path.is_file() else None


def check_notebook(path: Path) -> int:
    """Read and validate the notebook (a deploy's check); HandlerError says what is wrong.
    The number of code cells."""
    import nbformat

    try:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
    except Exception as exc:  # JSON errors, schema errors, unreadable files: all the user's
        raise HandlerError(f"{path.name} is not a valid notebook: {type(exc).__name__}: "
                           f"{_first_line(exc)}") from None
    return sum(cell.cell_type == "code" for cell in book.cells)


def declared_params(path: Path) -> dict[str, Any]:
    """The notebook's ``parameters`` cell as a job's params: names and literal defaults
    (a default that is not a literal, like ``datetime.now()``, is left to the notebook)."""
    import nbformat
    from papermill.translators import papermill_translators

    book = nbformat.read(path, as_version=4)
    cell = next((c for c in book.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return {}
    # papermill's own reading of the cell, as Python (the kernel every notebook job runs on)
    params = {}
    for param in papermill_translators.find_translator(KERNEL, "python").inspect(cell):
        try:
            params[param.name] = ast.literal_eval(str(param.default))
        except (ValueError, SyntaxError):
            continue
    return params


def run_notebook(path: Path, context: Any, params: dict[str, Any], function: str,
                 run_id: str) -> dict[str, Any]:
    """Execute the notebook once (the job process checked it with :func:`check_notebook`
    first); the run's outputs. A cell that raises fails the run, with the cell and the error in
    the message; the executed notebook is stored either way."""
    import papermill
    from jupyter_client.manager import KernelManager
    from papermill.exceptions import PapermillExecutionError

    scratch = Path(tempfile.mkdtemp(prefix="sluice-notebook-"))
    output = scratch / path.name
    executed = [0]
    papermill.engines.papermill_engines.register("sluice", _engine(context, executed))
    # over unix sockets in the scratch folder: local TCP would be open to every local user
    kernel = KernelManager(kernel_name=KERNEL, transport="ipc", ip=str(scratch / "kernel"))
    try:
        papermill.execute_notebook(
            str(path), str(output), parameters=params, engine_name="sluice", km=kernel,
            kernel_name=KERNEL, language="python", progress_bar=False, stdout_file=sys.stdout,
            stderr_file=sys.stderr, cwd=str(path.parent))
    except PapermillExecutionError as exc:
        where = _store(output, context, function, run_id)
        raise RuntimeError(f"cell {exc.exec_count or exc.cell_index + 1} raised {exc.ename}: "
                           f"{exc.evalue} (the executed notebook: {where})") from None
    finally:
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
    return {"notebook": _store(output, context, function, run_id), "cells": executed[0]}


def _engine(context: Any, executed: list[int]) -> Any:
    """papermill's nbclient engine, reporting each finished code cell as the run's progress
    (and counting them in ``executed``)."""
    from papermill.engines import NBClientEngine

    class Progress(NBClientEngine):  # type: ignore[misc]
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            finished = nb_man.cell_complete
            # the code cells as run: the notebook's own plus papermill's injected parameters
            total = max(1, sum(cell.cell_type == "code" for cell in nb_man.nb.cells))

            def cell_complete(cell: Any, cell_index: Any = None, **more: Any) -> Any:
                result = finished(cell, cell_index=cell_index, **more)
                if cell.cell_type == "code":
                    executed[0] += 1
                    context.progress(executed[0], total, f"cell {executed[0]} of {total}")
                return result

            nb_man.cell_complete = cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return Progress


def _store(output: Path, context: Any, function: str, run_id: str) -> str:
    """The executed notebook into the artifact store, recorded as the run's artifact."""
    from sluice.serving.artifacts import open_store

    root = os.environ.get("SLUICE_ARTIFACTS")
    if not root or not output.is_file():
        return str(output) if output.is_file() else "(not written)"
    key = f"runs/{function}/{run_id}/{output.name}"
    open_store(root).put_file(key, output)
    uri = f"{root.rstrip('/')}/{key}"
    context.log_artifact("notebook", uri)
    return uri


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
