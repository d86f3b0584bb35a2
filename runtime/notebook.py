"""Notebooks as functions: a notebook written for Nuclio becomes a sluice spec through
nuclio-jupyter's own exporter (cells marked ``# nuclio: ignore`` dropped, ``%nuclio`` magics
turned into the spec), and deploys in one call::

    import sluice
    sluice.deploy_notebook("scorer.ipynb", name="scorer", triggers=[HttpTrigger(workers=2)])

or ``sluice deploy scorer.ipynb`` from a shell. Triggers may be nuclio-jupyter's trigger objects
(``nuclio.triggers.HttpTrigger``, ``CronTrigger``, ``KafkaTrigger``), sluice's own trigger
specs, or Nuclio-shaped dicts; a list names them by kind, a dict by its keys.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import SpecError


def spec_from_notebook(path: Path, name: str | None = None) -> dict[str, Any]:
    """The spec dict of a notebook, exported the way ``nuclio deploy`` exports it."""
    from nuclio import build_file  # IPython and nbconvert: only when a notebook is deployed
    from nuclio.utils import BuildError

    from .nuclio_config import from_nuclio

    printed = io.StringIO()
    try:
        # nbconvert's own complaints are printed; keep them for the message instead
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            _, config, _ = build_file(str(path), name=name or "")
    except (BuildError, ValueError, OSError) as exc:
        detail = "\n".join(printed.getvalue().strip().splitlines()[-8:])
        raise SpecError(f"{path}: nuclio-jupyter could not export the notebook ({exc})"
                        + (f":\n{detail}" if detail else "")) from None
    return from_nuclio(config, source=str(path))


def nuclio_triggers(triggers: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """Triggers given to :func:`deploy_notebook` as Nuclio's ``spec.triggers`` mapping."""
    named = dict(triggers) if isinstance(triggers, Mapping) else {}
    if not isinstance(triggers, Mapping):
        for trigger in triggers:
            kind = _as_dict(trigger).get("kind", "trigger")
            base = "kafka" if kind == "kafka-cluster" else str(kind)
            key, n = base, 2
            while key in named:
                key, n = f"{base}-{n}", n + 1
            named[key] = trigger
    return {name: _as_dict(trigger) for name, trigger in named.items()}


def _sluice_triggers(rendered: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """Nuclio-shaped triggers converted as a function.yaml's are (with the worker count they
    ask for); sluice-shaped ones kept."""
    from .nuclio_config import from_nuclio

    nuclio = {key: t for key, t in rendered.items()
              if t.get("kind") == "kafka-cluster" or _NUCLIO_KEYS & t.keys()}
    triggers = {key: t for key, t in rendered.items() if key not in nuclio}
    if not nuclio:
        return triggers, 0
    converted = from_nuclio({"apiVersion": "nuclio.io/v1", "metadata": {"name": "triggers"},
                             "spec": {"triggers": nuclio}}, source="triggers")
    triggers.update(converted.get("triggers", {}))
    return triggers, int(converted.get("workers", 0))


_NUCLIO_KEYS = {"attributes", "maxWorkers", "numWorkers", "workerTerminationTimeout"}


def _as_dict(trigger: Any) -> dict[str, Any]:
    if hasattr(trigger, "to_dict"):  # nuclio-jupyter's trigger objects
        return dict(trigger.to_dict())
    if hasattr(trigger, "model_dump"):  # sluice's own trigger specs
        return dict(trigger.model_dump(mode="json", exclude_none=True))
    if isinstance(trigger, Mapping):
        return dict(trigger)
    raise SpecError(f"triggers: {trigger!r} is not a trigger (give nuclio's HttpTrigger, "
                    "CronTrigger or KafkaTrigger, sluice's HttpTrigger, or a dict with a kind)")


def notebook_spec(path: str | Path, name: str | None = None,
                  triggers: Sequence[Any] | Mapping[str, Any] | None = None,
                  env: Mapping[str, str] | None = None, project: str | None = None,
                  **fields: Any) -> dict[str, Any]:
    """The spec dict :func:`deploy_notebook` sends; ``fields`` are other spec fields
    (``workers``, ``kind``, ``timeout``...)."""
    source = Path(path)
    if source.suffix != ".ipynb" or not source.is_file():
        raise SpecError(f"{source}: not a notebook file (.ipynb)")
    spec = spec_from_notebook(source, name)
    if name:
        spec["name"] = name
    if triggers is not None:
        spec["triggers"], workers = _sluice_triggers(nuclio_triggers(triggers))
        if workers and "workers" not in fields:
            spec["workers"] = workers
    if env:
        spec["env"] = {**spec.get("env", {}), **{str(k): str(v) for k, v in env.items()}}
    if project:
        spec["labels"] = {**spec.get("labels", {}), "nuclio.io/project-name": project}
    spec.update(fields)
    return spec


def deploy_notebook(path: str | Path, name: str | None = None,
                    triggers: Sequence[Any] | Mapping[str, Any] | None = None,
                    env: Mapping[str, str] | None = None, project: str | None = None,
                    client: Any = None, **fields: Any) -> dict[str, Any]:
    """Export the notebook and deploy it to the running platform; the function's status
    (``["status"]["endpoint"]`` is where an HTTP function answers)."""
    from .client import Client

    spec = notebook_spec(path, name, triggers, env, project, **fields)
    result: dict[str, Any] = (client or Client()).deploy(spec)
    return result


def nuclio_dashboard_url() -> str:
    """The running platform's Nuclio dashboard URL, token included, for nuclio-jupyter::

        url = sluice.nuclio_dashboard_url()
        %nuclio deploy -n scorer -p demo -d $url
    """
    from .client import Client

    return Client().nuclio_dashboard_url()
