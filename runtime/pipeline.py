"""A pipeline: functions, the topics that wire them and the runs that set them up, in one file.

``functions/pipeline.yaml`` is the card-fraud pipeline; any pipeline has this shape::

    name: fraud
    topics:                      # created if missing (partitions as given)
      transactions: {partitions: 4}
    functions:                   # each a function spec (as for `sluice deploy`), by name
      etl: {kind: job, handler: sluice.functions.etl:handler}
      enrich: {handler: ..., triggers: {events: {kind: kafka, topics: [transactions], ...}}}
    setup:                       # runs started by `pipeline deploy` while their job has never
      - run: etl                 # succeeded, in this order, each awaited
        params: {}

``sluice pipeline deploy`` is idempotent: a function whose spec is unchanged and that is
running is left alone, topics that exist are kept, and setup runs already done are skipped.
Jobs are deployed first, then the setup runs, then the other functions in the file's order
(a serving function may need the model a setup run trains).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import SpecError
from .packaging import yaml_mapping
from .spec import NAME_PATTERN, FunctionSpec, Kind, format_validation_error, parse_spec

TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSpec(_Strict):
    partitions: Annotated[int, Field(ge=1, le=10_000)] = 1


class SetupRun(_Strict):
    run: Annotated[str, Field(pattern=NAME_PATTERN)]
    params: dict[str, Any] = {}


class PipelineSpec(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    topics: dict[Annotated[str, Field(pattern=TOPIC_PATTERN)], TopicSpec] = {}
    functions: Annotated[dict[str, dict[str, Any]], Field(min_length=1)]
    setup: list[SetupRun] = []

    @model_validator(mode="after")
    def _setup_runs_jobs(self) -> PipelineSpec:
        for index, step in enumerate(self.setup):
            target = self.functions.get(step.run)
            if target is None:
                raise ValueError(f"setup[{index}].run: no function {step.run!r} in this "
                                 f"pipeline (functions: {', '.join(self.functions)})")
            if target.get("kind") != Kind.JOB.value:
                raise ValueError(f"setup[{index}].run: {step.run!r} is not a job (kind: job)")
        return self

    def specs(self) -> dict[str, FunctionSpec]:
        """Each function's validated spec (its name from its key); SpecError names the
        function and the field."""
        out = {}
        for name, raw in self.functions.items():
            if not isinstance(raw, dict):
                raise SpecError(f"functions.{name}: must be a mapping (a function spec)")
            if raw.get("name", name) != name:
                raise SpecError(f"functions.{name}.name: {raw['name']!r} differs from its key; "
                                "leave it out")
            out[name] = parse_spec({**raw, "name": name}, prefix=f"functions.{name}")
        return out

    def order(self) -> tuple[list[str], list[str]]:
        """Functions to deploy before the setup runs (the jobs) and after them (the rest)."""
        jobs = [name for name, raw in self.functions.items() if raw.get("kind") == Kind.JOB]
        return jobs, [name for name in self.functions if name not in jobs]

    def topics_used(self) -> set[str]:
        """Every topic a function's Kafka trigger reads or writes."""
        used: set[str] = set()
        for spec in self.specs().values():
            for trigger in spec.triggers.values():
                if getattr(trigger, "kind", "") in ("kafka", "kafka-cluster"):
                    used.update(trigger.topics)  # type: ignore[union-attr]
                    used.update(t for t in (trigger.output,) if t)  # type: ignore[union-attr]
        return used


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Read and validate a pipeline file; SpecError names the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such pipeline file")
    data = yaml_mapping(path, "name:, topics:, functions:, setup:")
    try:
        pipeline = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{path}: {format_validation_error(exc)}") from None
    try:
        pipeline.specs()
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    return pipeline
