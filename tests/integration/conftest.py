"""Fixtures shared by the integration tests: moto's S3 server, which boto3 talks to over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sluice.platform.broker import free_port


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(params=["local", "s3"])
def store(request: Any, tmp_path: Any, s3_endpoint: str) -> Any:
    """An artifact store: a local folder, and (the second run) a bucket with a prefix on
    moto's S3 server."""
    from sluice.serving.artifacts import LocalStore, S3Store

    if request.param == "local":
        return LocalStore(tmp_path / "store")
    client = s3_client(s3_endpoint)
    bucket = f"store-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    client.create_bucket(Bucket=bucket)
    return S3Store(bucket, "team/sluice", client=client)

