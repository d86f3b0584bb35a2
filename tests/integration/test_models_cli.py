"""`sluice models` through the CLI, on the default local store and on S3 (moto's server)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.platform.broker import free_port
from tests.conftest import ROOT, SLUICE


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket="models")
    try:
        yield env
    finally:
        server.stop()


def cli(home: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(SLUICE + list(args), cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SLUICE_HOME": str(home),
                                             **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"sluice {' '.join(args)}: {result.stderr}")
    return result


@pytest.mark.parametrize("where", ["local", "s3"])
def test_push_alias_list_show(tmp_path, s3_env, where):
    env = {**s3_env, "SLUICE_ARTIFACTS": "s3://models/team"} if where == "s3" else {}
    home = tmp_path / "home"
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    out = cli(home, "models", "push", "fraud", str(model), "--metrics", "auc=0.93,loss=0.2",
              "--param", "lr=0.01", "--fingerprint", "sha256:data", env=env).stdout
    store = "s3://models/team" if where == "s3" else f"file://{home.resolve()}/artifacts"
    assert out.strip().startswith("fraud version 1 (7 bytes") and out.strip().endswith(store)
    cli(home, "models", "push", "fraud", str(model), "--metrics", "auc=0.95", env=env)
    assert "fraud@production -> version 2" in cli(
        home, "models", "alias", "fraud", "production", "2", env=env).stdout
    listing = json.loads(cli(home, "models", "list", "-o", "json", env=env).stdout)
    assert [(v["version"], v["aliases"], v["metrics"]) for v in listing] == [
        (1, [], {"auc": 0.93, "loss": 0.2}), (2, ["production"], {"auc": 0.95})]
    shown = json.loads(cli(home, "models", "show", "fraud:1", "-o", "json", env=env).stdout)
    assert shown["params"] == {"lr": 0.01} and shown["data_fingerprint"] == "sha256:data"
    assert shown["uri"] == f"{store}/models/fraud/1/model.pt"
    table = cli(home, "models", "list", env=env).stdout
    assert "production" in table and "auc=0.95" in table


@pytest.mark.parametrize(("args", "message"), [
    (("models", "show", "fraud@nope"), "has no alias 'nope'"),
    (("models", "show", "ghost"), "no model named 'ghost'"),
    (("models", "alias", "fraud", "production", "5"), "has no version 5 (versions: 1)"),
    (("models", "push", "Fraud", "MODEL"), "must be a DNS label"),
    (("models", "push", "fraud", "/no/such/file"), "no such model file"),
    (("models", "push", "fraud", "MODEL", "--metrics", "auc"), "--metrics 'auc': must be"),
])
def test_mistakes_are_one_clear_line(tmp_path, args, message):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    cli(tmp_path / "home", "models", "push", "fraud", str(model))
    result = cli(tmp_path / "home", *[str(model) if a == "MODEL" else a for a in args],
                 check=False)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
