"""The model registry on a local directory and on S3 (boto3 against moto's S3 server)."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import sluice.serving.artifacts
import sluice.serving.registry
from sluice.errors import ArtifactError, NotFoundError, SpecError
from sluice.serving.artifacts import LocalStore, S3Store, open_store
from sluice.serving.registry import ModelRegistry, parse_ref
from tests.integration.conftest import s3_client


def model_file(tmp_path: Path, content: bytes, name: str = "model.pt") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("module", [sluice.serving.artifacts, sluice.serving.registry])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_push_versions_aliases_and_resolve(store, tmp_path):
    registry = ModelRegistry(store)
    first = registry.push("fraud", model_file(tmp_path, b"v1"), metrics={"auc": 0.90},
                          params={"lr": 0.01}, data_fingerprint="sha256:abc")
    second = registry.push("fraud", model_file(tmp_path, b"v2"), metrics={"auc": 0.93})
    assert (first.version, second.version) == (1, 2)
    assert [v.version for v in registry.versions("fraud")] == [1, 2]
    assert registry.get("fraud", 1).params == {"lr": 0.01}
    assert registry.get("fraud", 1).data_fingerprint == "sha256:abc"
    assert registry.resolve("fraud").version == 2  # latest
    assert registry.resolve("fraud:1").metrics == {"auc": 0.90}
    registry.set_alias("fraud", "production", 1)
    registry.set_alias("fraud", "candidate", 2)
    assert registry.aliases("fraud") == {"candidate": 2, "production": 1}
    assert registry.resolve("fraud@production").version == 1
    registry.set_alias("fraud", "production", 2)  # promotion moves the alias
    assert registry.resolve("fraud@production").version == 2
    fetched = registry.fetch(registry.resolve("fraud@production"), tmp_path / "cache")
    assert fetched.read_bytes() == b"v2"


def test_a_tampered_artifact_fails_its_integrity_check(store, tmp_path):
    registry = ModelRegistry(store)
    record = registry.push("fraud", model_file(tmp_path, b"good weights"))
    store.put_bytes(record.key, b"evil weights")  # swapped behind the registry's back
    with pytest.raises(ArtifactError, match="fails its integrity check"):
        registry.fetch(record, tmp_path / "cache")
    assert not (tmp_path / "cache" / "fraud-1-model.pt").exists()


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda r: r.resolve("nobody"), NotFoundError, "no model named 'nobody'"),
    (lambda r: r.resolve("fraud@production"), NotFoundError, "has no alias 'production'"),
    (lambda r: r.get("fraud", 7), NotFoundError, "has no version 7 (versions: 1)"),
    (lambda r: r.set_alias("fraud", "production", 9), NotFoundError, "has no version 9"),
    (lambda r: r.resolve("../etc"), SpecError, "must be a DNS label"),
    (lambda r: r.resolve("fraud:zero"), SpecError, "whole number"),
    (lambda r: r.set_alias("fraud", "Prod!", 1), SpecError, "alias 'Prod!'"),
])
def test_bad_references_say_what_is_wrong(store, tmp_path, call, error, message):
    registry = ModelRegistry(store)
    registry.push("fraud", model_file(tmp_path, b"v1"))
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(registry)


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "a//b", "a/./b", ""])
def test_keys_cannot_escape_the_store(store, key):
    with pytest.raises(ArtifactError):
        store.put_bytes(key, b"x")


def test_a_symlink_out_of_a_local_store_is_refused(tmp_path):
    store = LocalStore(tmp_path / "store")
    (tmp_path / "store").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "store" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ArtifactError, match="resolves outside the store"):
        store.put_bytes("link/file", b"x")


def test_open_store_picks_the_kind_from_the_uri(tmp_path, s3_endpoint):
    assert isinstance(open_store(tmp_path), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    s3 = open_store("s3://bucket/prefix/x", client=s3_client(s3_endpoint))
    assert isinstance(s3, S3Store) and s3.uri == "s3://bucket/prefix/x"
    with pytest.raises(ArtifactError, match="name a bucket"):
        open_store("s3:///nobucket")
    with pytest.raises(ArtifactError, match="use a directory"):
        open_store("gs://bucket")


def test_s3_listing_pages_past_a_thousand_keys(s3_endpoint):
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="many")
    store = S3Store("many", "p", client=client)
    for i in range(1005):
        client.put_object(Bucket="many", Key=f"p/k/{i:04d}", Body=b"")
    keys = store.list("k/")
    assert len(keys) == 1005 and keys[0] == "k/0000"


def test_parse_ref():
    assert parse_ref("fraud") == ("fraud", None, None)
    assert parse_ref("fraud:3") == ("fraud", 3, None)
    assert parse_ref("fraud@production") == ("fraud", None, "production")
