"""From specs to a validated bundle of files: what ``sluice render`` writes.

Which resource each function becomes:

===============================  ===========================================================
http function (any triggers)     NuclioFunction
job function                     CronJob per cron trigger, or one suspended CronJob (on
                                 demand); NuclioFunction with ``--jobs nuclio``
serving function                 InferenceService: sluice's worker as a custom predictor, or
                                 KServe's Triton runtime for ``backend: triton``
every function                   a build context, ``images/<name>/`` (but for Triton's runtime,
                                 which runs Triton's image on ``triton/<name>/``)
the platform                     ConfigMap, Deployment and Service (``--no-platform``: none)
===============================  ===========================================================

Everything is rendered and validated in memory (:mod:`.validate`) before a file is written,
so an invalid resource leaves the output folder as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from sluice.errors import SpecError
from sluice.spec import FunctionSpec, Kind

from . import build_context, cluster_spec, cronjob, kserve, nuclio, platform
from .guide import readme
from .options import RenderOptions
from .secrets import check_spec
from .validate import label, validate_resource, validate_triton_config

if TYPE_CHECKING:
    from sluice.pipeline import PipelineSpec


@dataclass(frozen=True)
class Resource:
    """One rendered resource; ``spec``: the cluster spec a NuclioFunction must read back as."""

    document: dict[str, Any]
    spec: FunctionSpec | None = None

    @property
    def filename(self) -> str:
        return f"{self.document['kind'].lower()}-{self.document['metadata']['name']}.yaml"


@dataclass
class Bundle:
    """What a render produced: resources (applied with kubectl), the other files (build
    contexts, Triton repositories, a README) by relative path, and warnings for the user."""

    resources: list[Resource] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def outputs(self) -> dict[str, bytes]:
        """Every file to write, by path relative to the output folder."""
        out: dict[str, bytes] = {}
        for resource in self.resources:
            if resource.filename in out:
                raise SpecError(f"{label(resource.document)}: rendered twice (two functions "
                                "with one name?)")
            out[resource.filename] = _yaml(resource.document)
        return {**out, **self.files}

    def validate(self) -> None:
        for resource in self.resources:
            validate_resource(resource.document, resource.spec)
        for path, data in self.files.items():
            if path.endswith("/config.pbtxt"):
                validate_triton_config(path, data.decode())


class _Dumper(yaml.SafeDumper):
    """No anchors and aliases (a manifest repeats its labels, as people write them), and
    multi-line strings (a ConfigMap's file) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _yaml(document: dict[str, Any]) -> bytes:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100).encode()


def render_specs(specs: dict[str, FunctionSpec], options: RenderOptions,
                 pipeline: PipelineSpec | None = None) -> Bundle:
    """Render functions (and the platform), validated. ``pipeline``: a PipelineSpec whose
    name labels everything and whose topics and setup runs the README lists."""
    name = pipeline.name if pipeline is not None else None
    bundle = Bundle()
    if options.platform:
        bundle.resources += [Resource(doc) for doc in platform.platform_resources(options, name)]
    bundle.files.update({f"images/sluice/{path}": data
                         for path, data in build_context.sluice_context(options).items()})
    for spec in specs.values():
        _render_function(bundle, spec, options, name)
    bundle.files["README.md"] = readme(bundle, specs, options, pipeline).encode()
    bundle.validate()
    return bundle


def _render_function(bundle: Bundle, given: FunctionSpec, options: RenderOptions,
                     pipeline: str | None) -> None:
    try:
        check_spec(given)
        if given.name == "sluice":
            raise SpecError("name: 'sluice' is the name of sluice's own image; rename it")
        spec = cluster_spec.cluster_spec(given, options, pipeline)
        if spec.kind == Kind.SERVING:
            bundle.resources.append(Resource(kserve.inference_service(spec, options)))
            bundle.warnings += kserve.kserve_warnings(spec)
            if kserve.uses_triton_runtime(spec):  # Triton's image: no build context
                bundle.files.update(kserve.triton_repository(spec))
                return
        elif spec.kind == Kind.JOB and options.jobs == "cronjob":
            bundle.resources += [Resource(doc) for doc in cronjob.cron_jobs(spec, options)]
        else:
            bundle.resources.append(Resource(nuclio.nuclio_function(spec, options), spec))
            bundle.warnings += nuclio.nuclio_warnings(spec)
        bundle.files.update({f"images/{spec.name}/{path}": data for path, data in
                             build_context.function_context(spec, options).items()})
    except SpecError as exc:
        raise SpecError(f"{given.name}: {exc}") from None
