"""Artifact stores: where model files and their metadata live. A local directory by default;
S3 (or any S3-compatible server) through boto3 for ``s3://bucket/prefix``.

Keys are relative paths of plain segments (letters, digits, ``.``, ``_``, ``-``): a key can
never name anything outside its store, whatever the store is.

    >>> import tempfile
    >>> store = open_store(tempfile.mkdtemp())
    >>> store.put_bytes("models/fraud/notes.txt", b"v1")
    >>> store.get_bytes("models/fraud/notes.txt"), store.list("models/fraud/")
    (b'v1', ['models/fraud/notes.txt'])
    >>> store.put_bytes("../escape", b"x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sluice.errors.ArtifactError: artifact key '../escape': segment '..' is not allowed; ...
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from sluice.errors import ArtifactError, NotFoundError, PlatformError

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=-]{0,254}$")  # "=": Hive partitions, date=...
_EXAMPLE = "keys are plain names joined by '/', e.g. 'models/fraud/3/model.pt'"


def check_key(key: str) -> str:
    """The key, if every segment is a plain name; else ArtifactError saying which is not."""
    if not key or key.startswith("/"):
        raise ArtifactError(f"artifact key {key!r}: must be a relative path; {_EXAMPLE}")
    for segment in key.split("/"):
        if not _SEGMENT.match(segment) or segment in (".", ".."):
            raise ArtifactError(f"artifact key {key!r}: segment {segment!r} is not allowed; "
                                f"{_EXAMPLE}")
    return key


class ArtifactStore(Protocol):
    """Bytes and files under keys."""

    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, dest: Path) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...


class LocalStore:
    """A directory; writes are atomic (a temporary file renamed into place)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:  # a symlink inside the store pointing out of it
            raise ArtifactError(f"artifact key {key!r} resolves outside the store {self.root}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no artifact {key!r} in {self.uri}") from None

    def get_file(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError:
            raise NotFoundError(f"no artifact {key!r} in {self.uri}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.rstrip("/") if prefix.strip("/") else self.root
        if prefix.strip("/"):
            check_key(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(".tmp-"))


class S3Store:
    """A bucket and prefix on S3 (or an S3-compatible server at ``endpoint_url``)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None,
                 endpoint_url: str | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint_url)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, what)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFoundError(f"no artifact {key!r} in {self.uri}") from None
            raise PlatformError(f"S3 {what} of {key!r} in {self.uri} failed: {code}: "
                                f"{exc.response.get('Error', {}).get('Message', exc)}") from exc
        except BotoCoreError as exc:
            raise PlatformError(f"S3 {what} of {key!r} in {self.uri} failed: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as body:
            self._call("put_object", key, Key=self._key(key), Body=body)

    def get_bytes(self, key: str) -> bytes:
        return bytes(self._call("get_object", key, Key=self._key(key))["Body"].read())

    def get_file(self, key: str, dest: Path) -> None:
        body = self._call("get_object", key, Key=self._key(key))["Body"]
        with open(dest, "wb") as out:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                out.write(chunk)

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key, Key=self._key(key))
        except NotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/")) + "/" if prefix.strip("/") else (
            f"{self.prefix}/" if self.prefix else "")
        keys: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list_objects_v2", prefix, Prefix=full, **extra)
            skip = len(self.prefix) + 1 if self.prefix else 0
            keys.extend(item["Key"][skip:] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page.get("NextContinuationToken")


def open_store(uri: str | Path, **s3: Any) -> ArtifactStore:
    """``s3://bucket/prefix`` (``s3`` keyword arguments go to S3Store), ``file:///dir``, or a
    directory path."""
    text = str(uri)
    if text.startswith("s3://"):
        parts = urlsplit(text)
        if not parts.netloc:
            raise ArtifactError(f"artifact store {text!r}: name a bucket, e.g. "
                                "s3://models/sluice")
        return S3Store(parts.netloc, parts.path, **s3)
    if text.startswith("file://"):
        text = urlsplit(text).path
    if "://" in text:
        raise ArtifactError(f"artifact store {text!r}: use a directory, file:///dir or "
                            "s3://bucket/prefix")
    return LocalStore(text)
