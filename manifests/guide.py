"""The README written beside the manifests: the steps between ``sluice render`` and a running
cluster, with this render's own names (images to build, Secrets to create, topics, Triton
repositories to upload, setup runs), and what each file is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.spec import FunctionSpec

from .kserve import MODEL_FILE, TRITON_MODEL_VERSION, triton_storage_uri, uses_triton_runtime
from .options import RenderOptions
from .platform import TOKEN_SECRET
from .secrets import SecretRef

if TYPE_CHECKING:
    from sluice.pipeline import PipelineSpec

    from .render import Bundle


def _secret_refs(specs: dict[str, FunctionSpec]) -> dict[str, set[str]]:
    refs: dict[str, set[str]] = {}
    for spec in specs.values():
        for value in spec.env.values():
            ref = SecretRef.parse(value)
            if ref is not None:
                refs.setdefault(ref.name, set()).add(ref.key)
    return refs


def readme(bundle: Bundle, specs: dict[str, FunctionSpec], options: RenderOptions,
           pipeline: PipelineSpec | None = None) -> str:
    what = f"the pipeline `{pipeline.name}`" if pipeline is not None else ", ".join(
        f"`{name}`" for name in specs)
    lines = [f"# Kubernetes manifests for {what}", "",
             "Rendered by `sluice render`; render again rather than edit. "
             "`kubectl apply -f .` applies the YAML files of this folder (not its "
             "subfolders).", "", "## 1. Build and push the images", "",
             "sluice itself, from the root of its source tree:", "", "```sh",
             f"docker build -f path/to/this/folder/images/sluice/Dockerfile -t "
             f"{options.base_image} .", f"docker push {options.base_image}", "```", "",
             "then each function, from this folder:", "", "```sh"]
    for name in specs:
        if f"images/{name}/Dockerfile" not in bundle.files:
            continue  # served by Triton's own image
        lines.append(f"docker build -t {options.image(name)} images/{name} && "
                     f"docker push {options.image(name)}")
    lines += ["```", "", "## 2. Secrets (referenced by name; no value is written here)", "",
              "```sh"]
    if options.platform:
        lines.append(f"kubectl create secret generic {TOKEN_SECRET} "
                     "--from-literal=token=\"$(openssl rand -hex 32)\"   # the platform's API "
                     "token")
    lines.append(f"kubectl create secret generic {options.secret} --from-literal=NAME=VALUE ..."
                 "   # optional: env for every sluice pod (S3 credentials...)")
    for name, keys in sorted(_secret_refs(specs).items()):
        literals = " ".join(f"--from-literal={key}=..." for key in sorted(keys))
        lines.append(f"kubectl create secret generic {name} {literals}")
    lines += ["```", ""]
    step = 3
    if pipeline is not None and pipeline.topics:
        lines += [f"## {step}. Kafka topics (at {options.kafka_bootstrap})", ""]
        lines += [f"- `{topic}`: {topic_spec.partitions} partitions"
                  for topic, topic_spec in pipeline.topics.items()]
        lines.append("")
        step += 1
    triton = [spec for spec in specs.values() if uses_triton_runtime(spec)]
    if triton:
        lines += [f"## {step}. Triton model repositories", "",
                  "Put the model file from the registry in each version folder, then upload "
                  "the repository where the InferenceService reads it. `model.py` runs in "
                  "Triton's Python backend and imports torch, which the runtime's image must "
                  "hold (NGC's Triton images do not ship it).", "", "```sh"]
        for spec in triton:
            assert spec.serving is not None
            model = spec.serving.model.split("@")[0].split(":")[0]
            lines += [f"cp MODEL_FILE triton/{spec.name}/{model}/{TRITON_MODEL_VERSION}/"
                      f"{MODEL_FILE}   # `sluice models show {spec.serving.model}` names it",
                      f"aws s3 sync triton/{spec.name} "
                      f"{triton_storage_uri(spec, options)}"]
        lines += ["```", ""]
        step += 1
    lines += [f"## {step}. Apply", "", "```sh", "kubectl apply -f .   # or: sluice render ... "
              "--apply", "```", ""]
    step += 1
    if pipeline is not None and pipeline.setup and options.jobs == "cronjob":
        lines += [f"## {step}. Setup runs, in order, each after the previous one succeeded", "",
                  "```sh"]
        for run in pipeline.setup:
            if run.params:
                lines.append(f"# {run.run}'s setup params {run.params} are not its defaults: "
                             "set them in the Job (jobs/run.json) or run it with `sluice run`")
            lines.append(f"kubectl create job --from=cronjob/{run.run} {run.run}-setup && "
                         f"kubectl wait --for=condition=complete --timeout=2h job/"
                         f"{run.run}-setup")
        lines += ["```", ""]
    lines += ["## Files", "", "| file | resource |", "|---|---|"]
    lines += [f"| `{r.filename}` | {r.document['kind']} `{r.document['metadata']['name']}` |"
              for r in bundle.resources]
    lines += ["| `images/<function>/` | a function's build context: Dockerfile, "
              "requirements.txt, spec.yaml, its configs and source |",
              "| `images/sluice/` | sluice's own image |"]
    if triton:
        lines.append("| `triton/<function>/` | a Triton model repository (config.pbtxt, "
                     "model.py) |")
    if bundle.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in bundle.warnings]
    return "\n".join(lines) + "\n"
