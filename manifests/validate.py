"""Checks every rendered resource before anything is written, with the schemas the clients
of each system carry:

- core resources (ConfigMap, Service, Deployment, CronJob, Job): against the ``kubernetes``
  client's models: every field must be one the model knows (its ``openapi_types``), then the
  client deserializes the resource (``ApiClient.deserialize``) and serializes it back
  (``sanitize_for_serialization``), and the result must equal the input, so nothing was
  dropped or coerced;
- InferenceServices: the same against the kserve SDK's ``V1beta1InferenceService`` (whose
  nested Kubernetes types, such as its containers, are the ``kubernetes`` client's models);
- NuclioFunctions: read back through sluice's own function.yaml loader, they must give the
  spec they were rendered from (no Python schema of Nuclio's CRD exists to check against);
- Triton ``config.pbtxt`` files: parsed as Triton's ``ModelConfig`` protobuf.

A failure is a SpecError naming the resource and the field:
``InferenceService serve: spec.predictor.containers[0].portz: unknown field``.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from sluice.errors import SpecError
from sluice.spec import FunctionSpec

CORE_MODELS = {("v1", "ConfigMap"): "V1ConfigMap", ("v1", "Service"): "V1Service",
               ("v1", "Secret"): "V1Secret", ("apps/v1", "Deployment"): "V1Deployment",
               ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
               ("batch/v1", "CronJob"): "V1CronJob", ("batch/v1", "Job"): "V1Job"}
KSERVE_MODELS = {("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService"}
NUCLIO = ("nuclio.io/v1beta1", "NuclioFunction")
_PRIMITIVES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                            "bool": (bool,), "datetime": (str,),
                                            "date": (str,)}


def label(resource: dict[str, Any]) -> str:
    """``Kind name``, as messages name a resource."""
    name = (resource.get("metadata") or {}).get("name", "?")
    return f"{resource.get('kind', '?')} {name}"


def validate_resource(resource: dict[str, Any], spec: FunctionSpec | None = None) -> None:
    """Raise SpecError if ``resource`` is not valid (``spec``: what a NuclioFunction must read
    back as)."""
    key = (resource.get("apiVersion"), resource.get("kind"))
    if key in CORE_MODELS:
        _check_model(resource, CORE_MODELS[key], _kubernetes_object)
    elif key in KSERVE_MODELS:
        _check_model(resource, KSERVE_MODELS[key], _kserve_object)
    elif key == NUCLIO:
        _check_nuclio(resource, spec)
    else:
        raise SpecError(f"{label(resource)}: apiVersion {key[0]!r} kind {key[1]!r} is not a "
                        "resource sluice renders")


def validate_triton_config(path: str, text: str) -> None:
    """A generated ``config.pbtxt`` must parse as Triton's ModelConfig and name its folder."""
    from sluice.serving.triton_config import parse_model_config

    try:
        config = parse_model_config(text)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    folder = path.rstrip("/").split("/")[-2]
    if config.name != folder:
        raise SpecError(f"{path}: name {config.name!r} must be its folder's, {folder!r}")


# -- the kubernetes and kserve models ---------------------------------------------------------
def _check_model(resource: dict[str, Any], model: str, build: Any) -> None:
    where = label(resource)
    _check_fields(resource, model, "", where)
    try:
        obj = build(resource, model)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise SpecError(f"{where}: the {model} model refuses it: {_one_line(exc)}") from None
    back = _serialize(obj)
    path = _difference(resource, back, "")
    if path is not None:
        raise SpecError(f"{where}: {path.lstrip('.')}: not kept by the {model} model (an "
                        "unknown or mistyped field)")


def _check_fields(data: Any, type_name: str, path: str, where: str) -> None:
    """Every field a model knows, every value of its declared type; SpecError names the path."""
    type_name = type_name.strip()
    inner = re.fullmatch(r"(?:List|list)\[(.+)\]", type_name)
    if inner:
        if not isinstance(data, list):
            raise SpecError(f"{where}: {path.lstrip('.')}: must be a list")
        for index, item in enumerate(data):
            _check_fields(item, inner.group(1), f"{path}[{index}]", where)
        return
    inner = re.fullmatch(r"(?:Dict\[str, (.+)\]|dict\(str, (.+)\))", type_name)
    if inner:
        if not isinstance(data, dict):
            raise SpecError(f"{where}: {path.lstrip('.')}: must be a mapping")
        for key, value in data.items():
            _check_fields(value, inner.group(1) or inner.group(2), f"{path}.{key}", where)
        return
    if type_name in _PRIMITIVES:
        wanted = _PRIMITIVES[type_name]
        if not isinstance(data, wanted) or (isinstance(data, bool) and bool not in wanted):
            raise SpecError(f"{where}: {path.lstrip('.')}: must be {type_name}, got "
                            f"{type(data).__name__} {data!r}")
        return
    cls = _model_class(type_name)
    if cls is None:  # 'object' (int-or-string) and quantities: any scalar
        return
    if not isinstance(data, dict):
        raise SpecError(f"{where}: {path.lstrip('.') or 'resource'}: must be a mapping "
                        f"({type_name})")
    fields = {wire: attr for attr, wire in cls.attribute_map.items()}
    for attr, field in getattr(cls, "model_fields", {}).items():  # the kubernetes models
        if field.is_required() and cls.attribute_map.get(attr, attr) not in data:
            raise SpecError(f"{where}: {f'{path}.{cls.attribute_map.get(attr, attr)}'.lstrip('.')}"
                            f": required ({type_name})")
    for key, value in data.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise SpecError(f"{where}: {f'{path}.{key}'.lstrip('.')}: unknown field (allowed "
                            f"there: {allowed})")
        if value is None:
            raise SpecError(f"{where}: {f'{path}.{key}'.lstrip('.')}: null; leave it out")
        _check_fields(value, cls.openapi_types[fields[key]], f"{path}.{key}", where)


@functools.cache
def _model_class(name: str) -> Any:
    import kserve.models
    import kubernetes.client

    for module in (kserve.models, kubernetes.client):
        cls = getattr(module, name, None)
        if cls is not None and hasattr(cls, "openapi_types"):
            return cls
    return None


def _kubernetes_object(data: Any, model: str) -> Any:
    from kubernetes.client import ApiClient

    return ApiClient().deserialize(json.dumps(data), model, "application/json")


def _kserve_object(data: Any, type_name: str) -> Any:
    """Build a kserve model from wire-form data. The kserve SDK's own deserializer looks every
    nested type up among its own models and so fails on the Kubernetes ones (V1Container...);
    here those go to the kubernetes client's deserializer."""
    import kserve.models

    type_name = type_name.strip()
    inner = re.fullmatch(r"(?:List|list)\[(.+)\]", type_name)
    if inner:
        return [_kserve_object(item, inner.group(1)) for item in data]
    inner = re.fullmatch(r"(?:Dict\[str, (.+)\]|dict\(str, (.+)\))", type_name)
    if inner:
        return {k: _kserve_object(v, inner.group(1) or inner.group(2)) for k, v in data.items()}
    cls = getattr(kserve.models, type_name, None)
    if cls is None:
        return _kubernetes_object(data, type_name) if _model_class(type_name) else data
    fields = {wire: attr for attr, wire in cls.attribute_map.items()}
    return cls(**{fields[key]: _kserve_object(value, cls.openapi_types[fields[key]])
                  for key, value in data.items()})


def _serialize(obj: Any) -> Any:
    # kserve's serializer walks openapi_types/attribute_map, which the kubernetes models also
    # have, so it serializes both kinds (and the kubernetes client's would not know kserve's)
    from kserve import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def _difference(given: Any, back: Any, path: str) -> str | None:
    """The first path where ``back`` differs from ``given`` (None: equal)."""
    if isinstance(given, dict) and isinstance(back, dict):
        for key in given.keys() | back.keys():
            if key not in back or key not in given:
                return f"{path}.{key}"
            found = _difference(given[key], back[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(given, list) and isinstance(back, list):
        if len(given) != len(back):
            return path
        for index, (a, b) in enumerate(zip(given, back, strict=True)):
            found = _difference(a, b, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return None if type(given) is type(back) and given == back else path


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:500]


# -- NuclioFunction: through sluice's own loader ----------------------------------------------
def _check_nuclio(resource: dict[str, Any], spec: FunctionSpec | None) -> None:
    from .nuclio import read_back

    where = label(resource)
    try:
        back = read_back(resource)
    except SpecError as exc:
        raise SpecError(f"{where}: sluice's function.yaml loader refuses it: {exc}") from None
    if spec is None:
        return
    given, read = spec.model_dump(mode="json"), back.model_dump(mode="json")
    path = _difference(given, read, "")
    if path is not None:
        raise SpecError(f"{where}: {path.lstrip('.')}: reads back through sluice's loader as "
                        "a different spec")
