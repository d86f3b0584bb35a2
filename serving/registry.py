"""The model registry: versioned model artifacts with metadata and aliases, in an artifact store.

Layout in the store (one JSON document per version, one for the aliases)::

    models/<name>/<version>/meta.json       version, file, sha256, size, created, metrics,
                                            params, data fingerprint
    models/<name>/<version>/<file>          the artifact itself
    models/<name>/aliases.json              {"production": 3, "candidate": 4}

A reference is ``name`` (the latest version), ``name:3`` or ``name@production``. What is
fetched is checked against the sha256 recorded at push: a corrupt or swapped file is refused.

    >>> import tempfile, pathlib
    >>> registry = ModelRegistry(open_store(tempfile.mkdtemp()))
    >>> model = pathlib.Path(tempfile.mkdtemp()) / "model.pt"
    >>> _ = model.write_bytes(b"weights")
    >>> registry.push("fraud", model, metrics={"auc": 0.93}).version
    1
    >>> registry.set_alias("fraud", "production", 1)
    >>> registry.resolve("fraud@production").metrics
    {'auc': 0.93}
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sluice.errors import ArtifactError, NotFoundError, SpecError

from .artifacts import ArtifactStore, check_key, open_store

__all__ = ["ModelRegistry", "ModelVersion", "open_store", "parse_ref"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ALIAS = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class ModelVersion:
    """One pushed version of a model, as recorded at push."""

    name: str
    version: int
    file: str
    sha256: str
    size: int
    created: float
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    # {"inputs": [...], "outputs": [...]}, each {"name", "datatype", "dims"} after the batch
    # axis: what a serving function serves when its spec names no tensors
    signature: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"models/{self.name}/{self.version}/{self.file}"


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """``name``, ``name:3`` or ``name@alias`` -> (name, version, alias)."""
    name, alias, version = ref, None, None
    if "@" in ref:
        name, _, alias = ref.partition("@")
        if not _ALIAS.match(alias):
            raise SpecError(f"model {ref!r}: alias {alias!r} must be lowercase letters, digits "
                            "and '-', e.g. 'fraud@production'")
    elif ":" in ref:
        name, _, number = ref.partition(":")
        if not number.isdigit() or int(number) < 1:
            raise SpecError(f"model {ref!r}: the version must be a whole number from 1, e.g. "
                            "'fraud:3'")
        version = int(number)
    _check_name(name)
    return name, version, alias


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise SpecError(f"model name {name!r}: must be a DNS label (lowercase letters, digits "
                        "and '-'), e.g. 'fraud'")
    return name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelRegistry:
    """Push, alias, resolve and fetch model versions in one artifact store."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def push(self, name: str, path: str | Path, *, metrics: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None, data_fingerprint: str | None = None,
             signature: dict[str, list[dict[str, Any]]] | None = None) -> ModelVersion:
        """Store ``path`` as the next version of ``name``; returns its record."""
        _check_name(name)
        source = Path(path)
        if not source.is_file():
            raise ArtifactError(f"{source}: no such model file")
        check_key(source.name)
        version = max(self._numbers(name), default=0) + 1
        record = ModelVersion(name, version, source.name, _sha256(source),
                              source.stat().st_size, time.time(), dict(metrics or {}),
                              dict(params or {}), data_fingerprint, dict(signature or {}))
        self.store.put_file(record.key, source)
        # the metadata last: a version without it is an interrupted push, never listed
        self.store.put_bytes(f"models/{name}/{version}/meta.json",
                             json.dumps(asdict(record), sort_keys=True).encode())
        return record

    def _numbers(self, name: str) -> list[int]:
        numbers = []
        for key in self.store.list(f"models/{name}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == "meta.json" and parts[2].isdigit():
                numbers.append(int(parts[2]))
        return sorted(numbers)

    def versions(self, name: str) -> list[ModelVersion]:
        return [self.get(name, n) for n in self._numbers(_check_name(name))]

    def get(self, name: str, version: int) -> ModelVersion:
        try:
            raw = self.store.get_bytes(f"models/{_check_name(name)}/{version}/meta.json")
        except NotFoundError:
            known = self._numbers(name)
            raise NotFoundError(f"model {name!r} has no version {version}"
                                + (f" (versions: {', '.join(map(str, known))})" if known
                                   else " (it has none: push one first)")) from None
        return ModelVersion(**json.loads(raw))

    def aliases(self, name: str) -> dict[str, int]:
        try:
            return dict(json.loads(self.store.get_bytes(f"models/{_check_name(name)}/"
                                                        "aliases.json")))
        except NotFoundError:
            return {}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version`` (which must exist)."""
        if not _ALIAS.match(alias):
            raise SpecError(f"alias {alias!r}: lowercase letters, digits and '-', e.g. "
                            "'production'")
        self.get(name, version)
        aliases = self.aliases(name)
        aliases[alias] = version
        self.store.put_bytes(f"models/{name}/aliases.json",
                             json.dumps(aliases, sort_keys=True).encode())

    def resolve(self, ref: str) -> ModelVersion:
        """The version a reference names now."""
        name, version, alias = parse_ref(ref)
        if alias is not None:
            aliases = self.aliases(name)
            if not aliases and not self._numbers(name):
                raise NotFoundError(f"no model named {name!r} (push one: sluice models push "
                                    f"{name} FILE)")
            if alias not in aliases:
                raise NotFoundError(f"model {name!r} has no alias {alias!r}"
                                    + (f" (aliases: {', '.join(sorted(aliases))})" if aliases
                                       else "; set one: sluice models alias NAME ALIAS VERSION"))
            version = aliases[alias]
        if version is None:
            numbers = self._numbers(name)
            if not numbers:
                raise NotFoundError(f"no model named {name!r} (push one: sluice models push "
                                    f"{name} FILE)")
            version = numbers[-1]
        return self.get(name, version)

    def fetch(self, record: ModelVersion, dest_dir: str | Path) -> Path:
        """Copy the artifact into ``dest_dir`` and check it against its recorded sha256."""
        dest = Path(dest_dir) / f"{record.name}-{record.version}-{record.file}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.store.get_file(record.key, dest)
        actual = _sha256(dest)
        if actual != record.sha256:
            dest.unlink(missing_ok=True)
            raise ArtifactError(f"model {record.name}:{record.version} ({record.key} in "
                                f"{self.store.uri}) fails its integrity check: sha256 "
                                f"{actual[:12]}... but {record.sha256[:12]}... was pushed")
        return dest
