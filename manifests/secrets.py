"""Secrets in rendered manifests: taken by reference, never written inline.

A spec's env value ``secret:NAME/KEY`` is a reference to key ``KEY`` of the Kubernetes Secret
``NAME``; it renders as ``valueFrom.secretKeyRef`` (``secret:`` mirrors how the value reads in
a spec: it is not a value, it says where the value is)::

    env:
      AWS_SECRET_ACCESS_KEY: secret:s3-credentials/secret-key
      LOG_LEVEL: info

An env var whose name says it holds a secret (``*_PASSWORD``, ``*_TOKEN``, ``*_SECRET*``,
``*_ACCESS_KEY*``, ``*_API_KEY``, ``*_CREDENTIALS``) with a plain value is refused, naming the
field, rather than written into a manifest; so are Kafka trigger credentials, which a manifest
could only carry inline (Nuclio's trigger attributes and the worker's baked config have no
Secret reference). Every sluice pod also takes env from one optional Secret
(``RenderOptions.secret``, ``envFrom``), where cluster-wide credentials (S3, a registry) go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sluice.errors import SpecError
from sluice.spec import FunctionSpec

SECRET_PREFIX = "secret:"
_REFERENCE = re.compile(r"^secret:([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)/([-._A-Za-z0-9]{1,253})$")
_SECRET_NAME = re.compile(r"(^|_)(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY|"
                          r"CREDENTIALS?)(_|$)")
_KAFKA_CREDENTIALS = ("sasl_plain_password", "ssl_password")


@dataclass(frozen=True)
class SecretRef:
    """Key ``key`` of the Kubernetes Secret ``name``."""

    name: str
    key: str

    @classmethod
    def parse(cls, value: str) -> SecretRef | None:
        """The reference ``value`` spells, or None for a plain value; a value that starts like
        a reference but is malformed raises SpecError."""
        if not value.startswith(SECRET_PREFIX):
            return None
        match = _REFERENCE.match(value)
        if not match:
            raise SpecError(f"{value!r}: a secret reference is secret:NAME/KEY, e.g. "
                            "secret:s3-credentials/secret-key")
        return cls(match.group(1), match.group(3))

    def text(self) -> str:
        return f"{SECRET_PREFIX}{self.name}/{self.key}"


def looks_secret(name: str) -> bool:
    """Whether an env var's name says it holds a credential."""
    return _SECRET_NAME.search(name.upper()) is not None


def env_vars(env: dict[str, str], where: str = "env") -> list[dict[str, Any]]:
    """A spec's env as Kubernetes EnvVars: references as ``secretKeyRef``, the rest as values."""
    out: list[dict[str, Any]] = []
    for name, value in env.items():
        try:
            ref = SecretRef.parse(value)
        except SpecError as exc:
            raise SpecError(f"{where}.{name}: {exc}") from None
        if ref is not None:
            out.append({"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name,
                                                                     "key": ref.key}}})
        elif value and looks_secret(name):
            raise SpecError(f"{where}.{name}: looks like a secret, and a manifest would hold "
                            "it in plain text; store it in a Kubernetes Secret and give "
                            f"{SECRET_PREFIX}NAME/KEY instead")
        else:
            out.append({"name": name, "value": value})
    return out


def env_from_vars(items: list[dict[str, Any]]) -> dict[str, str]:
    """The inverse of :func:`env_vars` (what a rendered manifest's env says, as a spec's)."""
    env: dict[str, str] = {}
    for item in items:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        env[item["name"]] = (SecretRef(ref["name"], ref["key"]).text() if ref
                             else str(item.get("value", "")))
    return env


def env_from(secret: str) -> list[dict[str, Any]]:
    """The platform-wide Secret every sluice container takes env from; optional, so a
    cluster without one still starts the pods."""
    return [{"secretRef": {"name": secret, "optional": True}}]


def check_spec(spec: FunctionSpec) -> None:
    """Refuse what would put a credential into a manifest (SpecError naming the field)."""
    env_vars(spec.env)
    for name, trigger in spec.kafka_triggers.items():
        for key in _KAFKA_CREDENTIALS:
            if trigger.security.get(key):
                raise SpecError(f"triggers.{name}.security.{key}: a Kafka credential would be "
                                "written into the manifest (Nuclio's trigger attributes and "
                                "the worker's config take no Secret reference); render "
                                "without it and configure the cluster's Kafka access there")
